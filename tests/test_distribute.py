"""train.py --distribute: MirroredStrategy over 2 logical CPU devices agrees with one device,
MultiWorkerMirroredStrategy with 2 local worker processes writes exactly one model folder, and
bad TF_CONFIG / flags answer with one line.

The strategies run in subprocesses: logical devices must be configured (and MultiWorkerMirrored-
Strategy created) before TensorFlow initialises its devices, which the pytest process has done.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from processing.data.demo import make_demo_dataset
from processing.workflow.distribute import check_distribute, is_chief, parse_tf_config

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiles"
    make_demo_dataset(root, image_size=SIZE, n_train=24, n_test_good=4, n_test_defect=2, texture="brick", seed=1)
    return root


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-d", str(dataset), "-a", "mvtecCAE", "-l", "l2", "--image-size", str(SIZE), "--epochs", "1",
            "--lr", "1e-3", "--seed", "3", "--output-dir", str(out), *extra]


def run_python(code: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def model_folders(out: Path) -> list[Path]:
    return sorted(path.parent for path in out.rglob("info.json"))


def test_mirrored_two_cpu_replicas_match_one_device(dataset, tmp_path):
    """Global batch 8 either way: one device with -b 8, two replicas with -b 4 each.

    Without augmentation both runs see the same batches in the same order, and one SGD step from
    the same initial weights gives the same weights on 1 and on 2 replicas (checked by hand); what
    remains is rounding (the gradient is the sum of two half-batch gradients instead of one mean)
    that Adam amplifies: its first steps are about lr * sign(g), so a component whose gradient is at
    rounding level can step either way. Measured: 0.01 % on this dataset (22 images), 0.14 % on 36.
    1 % leaves 7x that margin. Augmentation is off because with it the two runs differed by 1.5 %
    (36 images): the random augmentation is not drawn identically under the strategy (not
    investigated; the images and their order are the same), so that would be above the tolerance.
    """
    runs = {mode: train_args(dataset, tmp_path / mode, "--no-augment", "-b", batch, "--distribute", mode)
            for mode, batch in (("none", "8"), ("mirrored", "4"))}
    code = f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import train
        out = {{}}
        for mode, argv in {runs!r}.items():
            folder = train.main(argv)
            out[mode] = json.loads((folder / "info.json").read_text())["training"]
        print("RESULT " + json.dumps(out))
    """
    result = run_python(code, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no GPU found, training runs on the CPU (2 devices)" in result.stderr
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    one, two = out["none"], out["mirrored"]
    assert "replicas" not in one  # the single-device record is unchanged
    assert (two["replicas"], two["global_batch_size"], two["batch_size"]) == (2, 8, 4)
    loss_one, loss_two = one["best"]["loss"], two["best"]["loss"]
    print(f"first-epoch loss: one device {loss_one:.6g}, 2 replicas {loss_two:.6g}, relative difference "
            f"{abs(loss_two - loss_one) / loss_one:.2%}")
    assert loss_two == pytest.approx(loss_one, rel=0.01)
    assert two["best"]["val_loss"] == pytest.approx(one["best"]["val_loss"], rel=0.01)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_two_workers(dataset, out: Path, scratch: Path):
    """Two train.py --distribute multiworker processes on free ports, their temporary folders in
    `scratch`: [(process, (stdout, stderr))]."""
    scratch.mkdir()
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [sys.executable, "train.py", *train_args(dataset, out, "-b", "4", "--distribute", "multiworker")]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config, "TMPDIR": str(scratch)}
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=150))  # the timeout: a lost worker would hang the other
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return list(zip(processes, outputs))


def test_multiworker_two_processes_write_one_model_folder(dataset, tmp_path):
    out, scratch = tmp_path / "models", tmp_path / "scratch"
    runs = run_two_workers(dataset, out, scratch)
    if any(p.returncode and "heartbeat timeout" in err for p, (_, err) in runs) and not model_folders(out):
        # TensorFlow's coordination service lost a worker starting up on a loaded 2-core machine
        # (seen once in six full runs beside the other test worker): start the pair once more.
        out, scratch = tmp_path / "models_again", tmp_path / "scratch_again"
        runs = run_two_workers(dataset, out, scratch)
    outputs = [output for _, output in runs]
    for process, (_, stderr) in runs:
        assert process.returncode == 0, stderr[-3000:]
    folders = model_folders(out)
    assert len(folders) == 1, folders
    info = json.loads((folders[0] / "info.json").read_text())
    assert (info["training"]["replicas"], info["training"]["workers"], info["training"]["global_batch_size"]) == (2, 2, 8)
    assert info["training"]["epochs_run"] == 1
    assert list((folders[0]).glob("*.keras"))
    # the non-chief worker's temporary folder is gone
    assert not list(scratch.iterdir())
    assert "the chief writes the model folder" in outputs[1][1]


def tf_config(**changes) -> str:
    config = {"cluster": {"worker": ["127.0.0.1:2000", "127.0.0.1:2001"]}, "task": {"type": "worker", "index": 1}}
    config.update(changes)
    return json.dumps(config)


@pytest.mark.parametrize(
    "text, field",
    [
        (None, "--distribute multiworker needs TF_CONFIG"),
        ("{not json", "TF_CONFIG: not valid JSON"),
        ("[1, 2]", "TF_CONFIG: expected a JSON object"),
        (tf_config(cluster={}), "TF_CONFIG cluster:"),
        (tf_config(cluster={"ps": ["a:1"]}), "TF_CONFIG cluster:"),
        (tf_config(cluster={"worker": ["a:1"], "evaluator": ["b:2"]}), "TF_CONFIG cluster.evaluator"),
        (tf_config(cluster={"worker": []}), "TF_CONFIG cluster.worker"),
        (tf_config(cluster={"worker": ["localhost"]}), "TF_CONFIG cluster.worker: 'localhost'"),
        (tf_config(cluster={"worker": ["a:1", "a:1"]}), "TF_CONFIG cluster: an address is listed twice"),
        (tf_config(task=None), "TF_CONFIG task:"),
        (tf_config(task={"type": "chief", "index": 0}), "TF_CONFIG task.type 'chief'"),
        (tf_config(task={"type": "worker", "index": 2}), "TF_CONFIG task.index 2"),
        (tf_config(task={"type": "worker", "index": "0"}), 'TF_CONFIG task.index the string "0": expected a whole number from 0 to'),
        (tf_config(task={"type": "worker", "index": 1.0}), "TF_CONFIG task.index 1.0: expected a whole number"),
        (tf_config(task={"type": "worker"}), "TF_CONFIG task.index missing: expected a whole number"),
    ],
)
def test_bad_tf_config_names_the_field(text, field):
    environ = {} if text is None else {"TF_CONFIG": text}
    with pytest.raises(ValueError) as error:
        check_distribute("multiworker", environ)
    assert str(error.value).startswith(field) and "\n" not in str(error.value)


def test_good_tf_config_and_the_chief():
    assert check_distribute("none", {}) is None and check_distribute("mirrored", {"TF_CONFIG": "junk"}) is None
    config = check_distribute("multiworker", {"TF_CONFIG": tf_config()})
    assert not is_chief(config)
    assert is_chief(parse_tf_config(tf_config(task={"type": "worker", "index": 0})))
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["w:2"]}, "task": {"type": "worker", "index": 0}}
    assert not is_chief(parse_tf_config(json.dumps(with_chief)))
    assert is_chief(parse_tf_config(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})))


def test_train_bad_distribute_input_answers_before_tensorflow(dataset, tmp_path):
    """One line, exit 2, and TensorFlow never imported."""
    code = f"""
        import os, sys
        import train
        from autoencoder import cli
        os.environ["TF_CONFIG"] = '{{"cluster": {{"worker": ["127.0.0.1:1"]}}, "task": {{"type": "worker", "index": 5}}}}'
        code = cli.run(train.main, {train_args(dataset, tmp_path / "m", "--distribute", "multiworker")!r})
        print("RC", code, "tensorflow" in sys.modules)
        code = cli.run(train.main, {train_args(dataset, tmp_path / "m", "--distribute", "mirrored", "--adversarial")!r})
        print("RC", code, "tensorflow" in sys.modules)
    """
    result = run_python(code, timeout=60)
    assert result.stdout.split("\n")[:2] == ["RC 2 False", "RC 2 False"], result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: TF_CONFIG task.index 5: expected 0 to 0 (cluster.worker has 1 addresses)",
        "error: --distribute mirrored with --adversarial: the adversarial training step runs on one device only; drop one of the two",
    ]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
