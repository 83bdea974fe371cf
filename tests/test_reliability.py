"""Nothing a user made is lost or silently replaced, and every bad input gets one clear line.

- a second finetune.py / test.py stops (exit 2, naming the folder and --overwrite); with
  --overwrite the earlier results are moved aside byte for byte, never deleted, and no test result
  is left beside a finetuning result it was not computed from;
- two trainings of the same second get two folders;
- an info.json that is JSON but not train.py's gets one line naming the file and the key;
- a killed training leaves only a hidden staging folder, reported by later runs (--clean-stale removes it);
- flag errors are reported before TensorFlow is imported, and its start-up noise is hidden;
- --data-dir reaches a dataset moved since training, and only the same dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

import finetune
import test as test_script
import train
from autoencoder import bundle, cli, folders
from autoencoder.model_info import SCHEMA_VERSION
from processing.data.demo import make_demo_dataset

SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def dataset(work) -> Path:
    root = work / "data" / "tiles"
    make_demo_dataset(root, image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=5)
    return root


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-d", str(dataset), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
            "--epochs", "1", "--lr", "1e-3", "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def model(dataset, work) -> Path:
    return train.main(train_args(dataset, work / "models"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def run_cli(script, argv, capsys) -> tuple[int, str]:
    """(exit code, last line of stderr)."""
    code = cli.run(script.main, argv)
    lines = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip()]
    return code, (lines[-1] if lines else "")


def results_of(model: Path, results: Path) -> Path:
    return bundle.results_dir_of(bundle.read_info(model), model, results)


# --------------------------------------------------------------------------------------------
# 1. Versioned results: refuse without --overwrite, move aside with it
# --------------------------------------------------------------------------------------------


def test_second_finetune_and_test_never_replace_a_result(model, work, capsys):
    results = work / "results_versions"
    base = results_of(model, results)
    finetune.main(["-p", str(model), "--results-dir", str(results)])
    (first_test,) = test_script.main(["-p", str(model), "--results-dir", str(results)])
    before = snapshot(base)

    # A second finetuning: one line naming the folder and the flag; nothing changed.
    code, err = run_cli(finetune, ["-p", str(model), "--smoothing", "2", "--results-dir", str(results)], capsys)
    assert code == 2 and err.startswith("error: ")
    assert str(base / "finetuning" / "l2_float64") in err and "--overwrite" in err and str(first_test) in err
    assert snapshot(base) == before

    # With --overwrite: both the finetuning result and the test result computed from it move aside, byte for byte.
    finetune.main(["-p", str(model), "--smoothing", "2", "--overwrite", "--results-dir", str(results)])
    (old_finetuning,) = (base / "finetuning").glob(f"l2_float64{folders.REPLACED}*")
    (old_test,) = (base / "test").glob(f"l2_float64{folders.REPLACED}*")
    assert old_finetuning.name == old_test.name  # moved aside together, with one time stamp
    assert snapshot(old_finetuning) == {k.split("/", 2)[2]: v for k, v in before.items() if k.startswith("finetuning/l2_float64/")}
    assert snapshot(old_test) == {k.split("/", 2)[2]: v for k, v in before.items() if k.startswith("test/l2_float64/")}
    assert not (base / "test" / "l2_float64").exists(), "a test result of the replaced finetuning result stayed in place"

    # test.py scores the current result only (not the moved-aside one) and records which it used.
    (tested,) = test_script.main(["-p", str(model), "--results-dir", str(results)])
    finetuning_file = base / "finetuning" / "l2_float64" / "finetuning_result.json"
    finetuned = json.loads(finetuning_file.read_text())
    result = json.loads((tested / "test_result.json").read_text())
    assert finetuned["smoothing_sigma"] == result["smoothing_sigma"] == 2.0
    assert (result["min_area"], result["threshold"]) == (finetuned["best_min_area"], finetuned["best_threshold"])
    assert result["finetuning_result"]["sha256"] == hashlib.sha256(finetuning_file.read_bytes()).hexdigest()
    assert result["finetuning_result"]["folder"] == str(finetuning_file.parent.resolve())

    # A second test.py: refused without --overwrite, moved aside with it.
    kept_finetuning = snapshot(old_finetuning)
    before = snapshot(base)
    code, err = run_cli(test_script, ["-p", str(model), "--results-dir", str(results)], capsys)
    assert code == 2 and str(tested) in err and "--overwrite" in err and "current finetuning result" in err
    assert snapshot(base) == before
    test_script.main(["-p", str(model), "--overwrite", "--results-dir", str(results)])
    moved = sorted(p for p in (base / "test").glob(f"l2_float64{folders.REPLACED}*") if p != old_test)
    assert len(moved) == 1
    assert snapshot(moved[0]) == {k.split("/", 2)[2]: v for k, v in before.items() if k.startswith("test/l2_float64/")}
    assert snapshot(old_finetuning) == kept_finetuning
    assert not [p for p in base.rglob(".*")], "staging left behind"


def test_a_lone_test_result_blocks_finetuning_without_overwrite(model, work, capsys):
    """A test/<name>/ without its finetuning result (deleted by hand) would be stale beside a new one."""
    results = work / "results_lone"
    base = results_of(model, results)
    finetune.main(["-p", str(model), "--results-dir", str(results)])
    test_script.main(["-p", str(model), "--results-dir", str(results)])
    shutil.rmtree(base / "finetuning" / "l2_float64")
    before = snapshot(base)
    code, err = run_cli(finetune, ["-p", str(model), "--results-dir", str(results)], capsys)
    assert code == 2 and str(base / "test" / "l2_float64") in err and "--overwrite" in err
    assert snapshot(base) == before


# --------------------------------------------------------------------------------------------
# 2. Folders that cannot collide
# --------------------------------------------------------------------------------------------


def test_staging_folders_of_the_same_name_never_replace_each_other(tmp_path):
    final = tmp_path / "models" / "2026-01-01_00-00-00"
    first, second = folders.staging_folder(final, unique=True), folders.staging_folder(final, unique=True)
    with first as a:
        (a / "model.keras").write_text("first")
        with second as b:  # entered while the first is still being written: both see no final folder
            (b / "model.keras").write_text("second")
    assert second.final == final and first.final == final.with_name(final.name + "_2")
    assert (second.final / "model.keras").read_text() == "second"
    assert (first.final / "model.keras").read_text() == "first"
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name, final.name + "_2"]

    # Without unique or replace, the later one stops and leaves the earlier folder as it was.
    other = tmp_path / "result"
    later = folders.staging_folder(other)
    with pytest.raises(folders.FolderExistsError, match="already exists"):
        with folders.staging_folder(other) as a:
            with later as b:
                (b / "f").write_text("later")
            (a / "f").write_text("earlier")
    assert (other / "f").read_text() == "later"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "result"]

    # replace moves the old folder aside, it is never deleted; a failed block leaves nothing.
    with folders.staging_folder(other, replace=True, stamp="T") as c:
        (c / "f").write_text("newest")
    assert (other / "f").read_text() == "newest" and (tmp_path / "result.replaced-T" / "f").read_text() == "later"
    with pytest.raises(RuntimeError):
        with folders.staging_folder(tmp_path / "failed"):
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "result", "result.replaced-T"]


def test_two_trainings_in_the_same_second_get_two_folders(model, dataset, work, monkeypatch):
    before = snapshot(model)
    monkeypatch.setattr(bundle, "timestamp", lambda: model.name)  # the second training starts "in the same second"
    second = train.main(train_args(dataset, work / "models", "--seed", "7"))
    assert second == model.with_name(model.name + "_2")
    assert snapshot(model) == before
    assert json.loads((second / "info.json").read_text())["settings"]["seed"] == 7


# --------------------------------------------------------------------------------------------
# 3. info.json that is JSON but not train.py's
# --------------------------------------------------------------------------------------------


def broken_copies(model: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Model copies with a damaged info.json -> (folder, what the error must name)."""
    info = json.loads((model / "info.json").read_text())
    cases = {}

    def copy(name: str, content, expected: str) -> None:
        folder = tmp_path / name
        shutil.copytree(model, folder)
        (folder / "info.json").write_text(json.dumps(content))
        cases[name] = (folder, expected)

    removed = json.loads(json.dumps(info))
    del removed["model"]["image_size"]
    copy("key_removed", removed, "'model.image_size' missing")
    copy("a_list", [], "holds list")
    wrong = json.loads(json.dumps(info))
    wrong["dataset"]["validation_split"] = "0.1"
    copy("wrong_type", wrong, "'dataset.validation_split' is '0.1' (str)")
    no_section = json.loads(json.dumps(info))
    no_section["training"] = None
    copy("null_section", no_section, "'training' is None")
    adversarial = json.loads(json.dumps(info))
    adversarial["adversarial"] = {"latent_dim": 2}
    copy("adversarial", adversarial, "'adversarial.prior_std' missing")
    newer = dict(info, schema_version=SCHEMA_VERSION + 1)
    copy("newer", newer, f"schema_version {SCHEMA_VERSION + 1}")
    # Names that become folders of the results tree: one folder name each, never a way out of --results-dir.
    for name, (section, key, value) in {
        "escaping_dataset": ("dataset", "name", "../../escaped"),
        "absolute_dataset": ("dataset", "name", "/tmp/escaped"),
        "nested_architecture": ("model", "architecture", "mvtecCAE/../.."),
        "dot_loss": ("training", "loss", ".."),
    }.items():
        edited = json.loads(json.dumps(info))
        edited[section][key] = value
        copy(name, edited, f"'{section}.{key}' is {value!r} (str); expected one folder name")
    return cases


def test_info_json_not_written_by_train_py_gets_one_line(model, tmp_path, capsys):
    for name, (folder, expected) in broken_copies(model, tmp_path).items():
        before = snapshot(folder)
        for script in (finetune, test_script):
            code, err = run_cli(script, ["-p", str(folder), "--results-dir", str(tmp_path / "r")], capsys)
            assert code == 2, name
            assert err.startswith(f"error: {folder / 'info.json'}: ") and expected in err, (name, err)
            assert "not an info.json written by train.py" in err or "newer" in err
        assert snapshot(folder) == before
    assert not (tmp_path / "r").exists()


def test_info_json_schema_version(model, tmp_path):
    info = json.loads((model / "info.json").read_text())
    assert info["schema_version"] == SCHEMA_VERSION == 2
    old = tmp_path / "old"
    shutil.copytree(model, old)
    del info["schema_version"]  # written before the field existed: read as version 1
    (old / "info.json").write_text(json.dumps(info))
    assert bundle.read_info(old).model.image_size == (SIZE, SIZE)
    assert bundle.load_bundle(old).info.dataset.name == "tiles"


# --------------------------------------------------------------------------------------------
# 4. A killed training
# --------------------------------------------------------------------------------------------


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def test_killed_training_leaves_no_model_and_is_reported(dataset, tmp_path, capsys, caplog):
    out = tmp_path / "models"
    process = subprocess.Popen(
        [sys.executable, "train.py", *train_args(dataset, out, "--epochs", "500", "--patience", "500")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    loss_dir = out / "tiles" / "mvtecCAE" / "l2"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not list(loss_dir.glob(".*/history.csv")):
            assert process.poll() is None, "the training ended before it could be killed"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (staging,) = loss_dir.iterdir()
    assert staging.name.startswith(".") and folders.INCOMPLETE in staging.name, "a killed run left a folder that looks like a model"
    assert (staging / "history.csv").is_file()

    # The next training reports it (here it then stops at a bad architecture name, after the report).
    with caplog.at_level(logging.WARNING):
        code, err = run_cli(train, [*train_args(dataset, out), "-a", "noSuchCAE"], capsys)
    assert code == 2 and "noSuchCAE" in err
    assert f"stale staging folder {staging}" in caplog.text and f"pid {process.pid}" in caplog.text
    assert "--clean-stale" in caplog.text and staging.is_dir()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_cli(train, [*train_args(dataset, out), "-a", "noSuchCAE", "--clean-stale"], capsys)
    assert not staging.exists() and "removed the stale staging folder" in caplog.text


def test_stale_staging_detection(tmp_path):
    results = tmp_path / "results" / "m" / "test"
    running = results / f".l2_float64{folders.INCOMPLETE}{os.getpid()}-abcdef"  # this process: still running
    killed = results / f".l2_uint8{folders.INCOMPLETE}{dead_pid()}-012345"
    legacy = results / f".ssim_float64.tmp-{dead_pid()}"  # the name older versions used
    unrelated = results / ".cache"
    for folder in (running, killed, legacy, unrelated):
        folder.mkdir(parents=True)
    assert sorted(s.path for s in folders.stale_staging(tmp_path / "results")) == sorted([killed, legacy])
    assert sorted(folders.report_stale_staging([tmp_path / "results"], clean=True)) == sorted([killed, legacy])
    assert running.is_dir() and unrelated.is_dir() and not killed.exists() and not legacy.exists()


def test_finetune_and_test_report_stale_staging_among_results(model, work, capsys, caplog):
    results = work / "results_stale"
    stale = results_of(model, results) / "finetuning" / f".l2_float64{folders.INCOMPLETE}{dead_pid()}-aaaaaa"
    stale.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        code, err = run_cli(test_script, ["-p", str(model), "--results-dir", str(results)], capsys)
    assert code == 2 and "finetune.py" in err  # no finetuning result yet: the staging folder is not one
    assert f"stale staging folder {stale}" in caplog.text
    run_cli(finetune, ["-p", str(model), "-b", "0", "--results-dir", str(results), "--clean-stale"], capsys)
    assert stale.is_dir(), "flags are checked before anything is removed"
    with caplog.at_level(logging.WARNING):
        run_cli(test_script, ["-p", str(model), "--results-dir", str(results), "--clean-stale"], capsys)
    assert not stale.exists()


# --------------------------------------------------------------------------------------------
# 5 and 6. Messages, and flags checked before TensorFlow is imported
# --------------------------------------------------------------------------------------------

FLAG_ERRORS = """
import json, sys
sys.path.insert(0, {root!r})
import finetune, test, train, benchmark, demo, predict
from autoencoder import cli
cases = json.loads(sys.argv[1])
out = []
for script, argv in cases:
    module = {{"train": train, "finetune": finetune, "test": test, "benchmark": benchmark, "demo": demo, "predict": predict}}[script]
    try:
        code = cli.run(module.main, argv)
    except SystemExit as exit:  # argparse: --help, unknown flags
        code = exit.code
    out.append([code, "tensorflow" in sys.modules])
print(json.dumps(out))
"""


def test_flag_errors_name_the_flag_before_tensorflow_is_imported(model, dataset, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    garbage_set = tmp_path / "garbage_set"
    (garbage_set / "train" / "good").mkdir(parents=True)
    (garbage_set / "train" / "good" / "a.png").write_bytes(b"not an image")
    cases = {
        "--validation-split 0: expected a fraction in (0, 1)": ("train", train_args(dataset, tmp_path / "m", "--validation-split", "0")),
        "--image-size 0: expected a positive number of pixels": ("train", [*train_args(dataset, tmp_path / "m"), "--image-size", "0"]),
        f"--output-dir {a_file}/x: {a_file} is a file, not a folder": ("train", train_args(dataset, a_file / "x")),
        "--loss ssim needs --color grayscale (got rgb)": ("train", [*train_args(dataset, tmp_path / "m"), "-l", "ssim", "-c", "rgb"]),
        "--epochs 0: expected at least 1 epoch": ("train", [*train_args(dataset, tmp_path / "m"), "--epochs", "0"]),
        "-b/--batch 0: expected an inference batch size": ("finetune", ["-p", str(model), "-b", "0"]),
        "-b/--batch -3: expected an inference batch size": ("test", ["-p", str(model), "-b", "-3"]),
        "--smoothing -1.0: expected a number of pixels >= 0": ("finetune", ["-p", str(model), "--smoothing", "-1"]),
        "--finetune-split 1: expected a fraction in (0, 1)": ("finetune", ["-p", str(model), "--finetune-split", "1"]),
        f"--results-dir {a_file}: {a_file} is a file, not a folder": ("test", ["-p", str(model), "--results-dir", str(a_file)]),
        "not found: expected a model folder": ("finetune", ["-p", str(tmp_path / "missing")]),
        "--data-dir": ("test", ["-p", str(model), "--data-dir", str(tmp_path / "nowhere")]),
        "--image-sizes 0: expected a positive number of pixels": ("benchmark", ["-d", str(dataset), "--image-sizes", "0"]),
        # No model input larger than 1024 px (a 100000 px one asked for 1.31 TiB; issue 30, case 7).
        "--image-size 100000: expected a side of 1 to 1024 pixels; train larger images on tiles": (
            "train", [*train_args(dataset, tmp_path / "m"), "--image-size", "100000"]),
        "--image-sizes 4096: expected a side of 1 to 1024 pixels": ("benchmark", ["-d", str(dataset), "--image-sizes", "4096"]),
        "--min-detection 1.5: expected a fraction of the defective images in (0, 1]": (
            "finetune", ["-p", str(model), "--min-detection", "1.5"]),
        # issue 30, case 17: named before the learning-rate range test and before TensorFlow
        "--patience 0: expected epochs without improvement before training stops": (
            "train", [*train_args(dataset, tmp_path / "m"), "--patience", "0"]),
        "--patience 0: expected epochs without": ("benchmark", ["-d", str(dataset), "--patience", "0"]),
        f"cannot read image {garbage_set}/train/good/a.png: corrupt or not an image": ("train", ["-d", str(garbage_set)]),
    }
    if os.geteuid() != 0:  # root writes anywhere
        cases[f"--output-dir {locked}/m: no permission to write in {locked}"] = ("train", train_args(dataset, locked / "m"))
    argvs = [list(case) for case in cases.values()]
    argvs += [["finetune", ["--help"]], ["finetune", ["-p", "x", "--bad-flag"]], ["train", ["--help"]]]
    process = subprocess.run(
        [sys.executable, "-c", FLAG_ERRORS.format(root=str(ROOT)), json.dumps(argvs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    locked.chmod(0o700)
    assert process.returncode == 0, process.stderr
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    errors = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(cases), process.stderr
    for (expected, _), (code, tensorflow_imported), line in zip(cases.items(), outcome, errors):
        assert code == 2 and expected in line, (expected, line)
        assert not tensorflow_imported, f"TensorFlow imported before reporting {expected!r}"
    assert [code for code, _ in outcome[len(cases) :]] == [0, 2, 0]
    assert not any(imported for _, imported in outcome), "--help or a bad flag imported TensorFlow"
    assert not (tmp_path / "m").exists()


def test_loss_color_early_check_agrees_with_the_losses_module():
    from autoencoder.losses import check_loss_color
    from processing.workflow.options import check_loss_color as early

    for loss in ("ssim", "mssim", "l2"):
        for color in ("grayscale", "rgb"):
            outcomes = []
            for check in (check_loss_color, early):
                try:
                    check(loss, color)
                    outcomes.append(None)
                except ValueError as error:
                    outcomes.append(str(error))
            assert outcomes[0] == outcomes[1], (loss, color, outcomes)


def test_truncated_model_file_and_os_errors_say_what_is_wrong(model, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    keras_file = next(broken.glob("*.keras"))
    keras_file.write_bytes(keras_file.read_bytes()[:1000])
    code, err = run_cli(finetune, ["-p", str(broken), "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and str(keras_file) in err and "truncated or corrupt" in err and "not found" not in err.lower()

    line = cli.error_line(NotADirectoryError(20, "Not a directory", "/data/a_file/x"))
    assert line == "/data/a_file/x: a part of that path is a file, not a folder"
    assert cli.error_line(PermissionError(13, "Permission denied", "/x")) == "/x: permission denied"


def test_tensorflow_start_up_noise_is_hidden_unless_verbose():
    snippet = (
        "import os, sys; sys.path.insert(0, {root!r}); from autoencoder import cli; "
        "cli.import_tensorflow({verbose}); import tensorflow as tf; "
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS')); print(float(tf.reduce_sum(tf.ones((2, 2)))))"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", snippet.format(root=str(ROOT), verbose=False)],
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == ["None", "4.0"]  # oneDNN is left as it is: only its notice is hidden
    assert "absl::InitializeLog" not in quiet.stderr and "oneDNN" not in quiet.stderr, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    assert cli.is_startup_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not cli.is_startup_noise("error: something real")


# --------------------------------------------------------------------------------------------
# 7. --data-dir
# --------------------------------------------------------------------------------------------


def test_data_dir_reaches_a_moved_dataset_and_only_the_same_one(model, dataset, tmp_path, capsys):
    moved = tmp_path / "elsewhere" / "tiles"
    shutil.copytree(dataset, moved)
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    info = json.loads((copy / "info.json").read_text())
    info["dataset"]["path"] = str(tmp_path / "gone" / "tiles")  # where it was at training time
    (copy / "info.json").write_text(json.dumps(info))
    info_bytes = (copy / "info.json").read_bytes()
    results = tmp_path / "results"

    code, err = run_cli(finetune, ["-p", str(copy), "--results-dir", str(results)], capsys)
    assert code == 2 and str(tmp_path / "gone" / "tiles") in err and "--data-dir" in err

    out = finetune.main(["-p", str(copy), "--data-dir", str(moved), "--results-dir", str(results)])
    (tested,) = test_script.main(["-p", str(copy), "--data-dir", str(moved), "--results-dir", str(results)])
    result = json.loads((tested / "test_result.json").read_text())
    assert result["n_images"] + json.loads((out / "finetuning_result.json").read_text())["n_finetune"] == 8 + 3 * 4
    assert (copy / "info.json").read_bytes() == info_bytes, "--data-dir must not rewrite info.json"

    # Not the same dataset: one line naming what differs.
    variants = {}
    for name in ("missing_validation", "extra_class", "fewer_test"):
        variant = tmp_path / name / "tiles"
        shutil.copytree(dataset, variant)
        variants[name] = variant
    (variants["missing_validation"] / info["dataset"]["validation_files"][0]).unlink()
    shutil.copytree(variants["extra_class"] / "test" / "spot", variants["extra_class"] / "test" / "dent")
    next((variants["fewer_test"] / "test" / "good").iterdir()).unlink()
    expected = {
        "missing_validation": f"{info['dataset']['validation_files'][0]} not found",
        "extra_class": "test/ holds the classes crack, dent, good, scratch, spot",
        "fewer_test": "test/good holds 7 images; info.json recorded 8",
    }
    for name, variant in variants.items():
        for script in (finetune, test_script):
            code, err = run_cli(script, ["-p", str(copy), "--data-dir", str(variant), "--overwrite", "--results-dir", str(results)], capsys)
            assert code == 2 and f"--data-dir {variant}" in err and expected[name] in err, (name, err)


def moved_copy(model: Path, tmp_path: Path, name: str = "model") -> Path:
    """A copy of the model folder whose info.json says the dataset was elsewhere at training time."""
    copy = tmp_path / name
    shutil.copytree(model, copy)
    info = json.loads((copy / "info.json").read_text())
    info["dataset"]["path"] = str(tmp_path / "gone" / "tiles")
    (copy / "info.json").write_text(json.dumps(info))
    return copy


def test_data_dir_must_hold_the_same_bytes(model, dataset, tmp_path, capsys, caplog):
    """Same names and counts are not the same dataset: another one of that shape, and a copy with one
    image changed, are refused; earlier results stay byte-identical. An info.json of schema 1 (no
    content hash) falls back to names and counts, with a warning."""
    copy = moved_copy(model, tmp_path)
    results = tmp_path / "results"
    same = tmp_path / "same" / "tiles"
    shutil.copytree(dataset, same)
    finetune.main(["-p", str(copy), "--data-dir", str(same), "--results-dir", str(results)])
    before = snapshot(results)

    other = tmp_path / "other" / "tiles"  # another dataset, the same names and counts
    make_demo_dataset(other, image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=77)
    changed = tmp_path / "changed" / "tiles"
    shutil.copytree(dataset, changed)
    image = next((changed / "test" / "good").iterdir())
    pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    pixels[0, 0] ^= 1
    cv2.imwrite(str(image), pixels)
    for variant in (other, changed):
        for script in (finetune, test_script):
            code, err = run_cli(script, ["-p", str(copy), "--data-dir", str(variant), "--overwrite", "--results-dir", str(results)], capsys)
            assert code == 2 and err.startswith(f"error: --data-dir {variant}: ") and "differ in content" in err, err
            assert "not the dataset the model was trained on" in err
    code, err = run_cli(finetune, ["-p", str(copy), "--data-dir", str(changed), "--overwrite", "--results-dir", str(results)], capsys)
    assert "test/good/" in err  # names the folder that differs
    assert snapshot(results) == before

    legacy = moved_copy(model, tmp_path, "legacy")
    info = json.loads((legacy / "info.json").read_text())
    info["schema_version"] = 1
    del info["dataset"]["content"], info["model"]["sha256"]
    (legacy / "info.json").write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        code, _ = run_cli(finetune, ["-p", str(legacy), "--data-dir", str(changed), "--results-dir", str(results)], capsys)
    assert code == 0 and "records no content hash" in caplog.text


def test_a_replaced_model_file_is_refused_naming_it(model, tmp_path, capsys):
    """A .keras replaced by another model (of the same shape, or of another) is refused in one line
    naming the file, before TensorFlow for finetune.py and test.py; a folder of schema 1 (no hash)
    still notices a model of another input shape."""
    import keras

    from autoencoder.models import get_architecture

    keras_file = next(model.glob("*.keras"))
    same_shape = keras.models.load_model(keras_file, compile=False)
    other_shape = get_architecture("mvtecCAE").build("grayscale", 2 * SIZE)
    for name, replacement in (("same_shape", same_shape), ("other_shape", other_shape)):
        folder = tmp_path / name
        shutil.copytree(model, folder)
        replacement.save(folder / keras_file.name)
        for script in (finetune, test_script):
            code, err = run_cli(script, ["-p", str(folder), "--results-dir", str(tmp_path / "r")], capsys)
            assert code == 2 and err.startswith(f"error: {folder / keras_file.name}: not the model train.py saved"), err
        if name == "other_shape":
            info = json.loads((folder / "info.json").read_text())
            info["schema_version"] = 1
            del info["model"]["sha256"]
            (folder / "info.json").write_text(json.dumps(info))
            match = f"{folder / keras_file.name}: takes inputs of 64x64 px, 1 channel.*model.image_size.*describes 32x32 px, 1 channel"
            with pytest.raises(bundle.ModelPathError, match=match):
                bundle.load_bundle(folder)
    assert not (tmp_path / "r").exists()


def test_a_truncated_training_image_stops_train_py_naming_it(dataset, tmp_path, capsys):
    data = tmp_path / "tiles"
    shutil.copytree(dataset, data)
    image = data / "train" / "good" / "cut.jpg"
    cv2.imwrite(str(image), cv2.imread(str(next((data / "train" / "good").iterdir()))))
    image.write_bytes(image.read_bytes()[:-200])
    code, err = run_cli(train, train_args(data, tmp_path / "models"), capsys)
    assert code == 2 and err == f"error: cannot read image {image}: truncated JPEG (no end-of-image marker)"
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").rglob("*.keras"))


def run_flag_errors(cases: dict, cwd: Path) -> list[tuple[str, bool, str]]:
    """Run (script, argv) cases in one subprocess: [(expected, TensorFlow imported by then, error line)]."""
    process = subprocess.run(
        [sys.executable, "-c", FLAG_ERRORS.format(root=str(ROOT)), json.dumps([list(case) for case in cases.values()])],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    errors = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(cases), process.stderr
    assert all(code == 2 for code, _ in outcome), outcome
    return [(expected, imported, line) for expected, (_, imported), line in zip(cases, outcome, errors)]


def test_slow_errors_answer_before_tensorflow(model, dataset, tmp_path):
    """What answered only after TensorFlow loaded (5-13 s) now answers before it: maps that do not
    suit the model, architecture sizes, flags that do not apply, a missing model, a replaced model
    file, a hand-edited result."""
    feature_like = tmp_path / "feature_like"
    shutil.copytree(model, feature_like)
    info = json.loads((feature_like / "info.json").read_text())
    info["model"]["output"] = "map"
    (feature_like / "info.json").write_text(json.dumps(info))
    replaced = tmp_path / "replaced"
    shutil.copytree(model, replaced)
    info = json.loads((replaced / "info.json").read_text())
    info["model"]["sha256"] = "0" * 64
    (replaced / "info.json").write_text(json.dumps(info))
    results = tmp_path / "results"
    finetuned = results_of(model, results) / "finetuning" / "l2_float64"
    finetuned.mkdir(parents=True)
    (finetuned / "finetuning_result.json").write_text(json.dumps({"model": "m", "method": "l2", "dtype": "float64", "best_min_area": 2.5}))
    weights = tmp_path / "weights.h5"
    weights.write_text("")
    out = str(tmp_path / "out")
    cases = {
        "--method padim: needs a featureCAE model": ("finetune", ["-p", str(model), "-m", "padim"]),
        "--method ssim: the model outputs its anomaly map": ("finetune", ["-p", str(feature_like), "-m", "ssim"]),
        "--image-size 48: architecture featureCAE needs a multiple of 32": ("train", [*train_args(dataset, tmp_path / "m"), "-a",
                                                                                     "featureCAE", "-l", "feature", "--image-size", "48"]),
        "--architecture 'nosuchCAE'": ("train", [*train_args(dataset, tmp_path / "m"), "-a", "nosuchCAE"]),
        "--freeze-encoder needs --encoder-weights": ("train", [*train_args(dataset, tmp_path / "m"), "-a", "vggCAE", "--freeze-encoder"]),
        "--encoder-weights: architecture mvtecCAE has no VGG16 encoder": ("train", [*train_args(dataset, tmp_path / "m"),
                                                                                   "--encoder-weights", str(weights)]),
        "--image-size 30: architecture mvtecCAE needs a multiple of 16": ("train", [*train_args(dataset, tmp_path / "m"), "--image-size",
                                                                                   "30"]),
        "--epochs 0: expected at least 1 epoch": ("demo", ["--epochs", "0", "--data-dir", str(tmp_path / "demo")]),
        "--image-sizes 48: architecture featureCAE needs a multiple of 32": ("benchmark", ["-d", str(dataset), "--image-sizes", "48"]),
        "-m/--methods ssim: no map for architecture featureCAE": ("benchmark", ["-d", str(dataset), "-m", "ssim", "-a", "featureCAE"]),
        "--path /nonexistent not found": ("predict", ["-p", "/nonexistent", "-i", str(dataset), "-o", out]),
        "--reject-fraction applies to --adversarial training only": ("train", [*train_args(dataset, tmp_path / "m"), "--reject-fraction",
                                                                              "0.1"]),
        "--bandwidth applies to --detector kde only": ("finetune", ["-p", str(model), "--bandwidth", "2"]),
        "--smoothing applies to --detector segmentation only": ("finetune", ["-p", str(model), "--detector", "kde", "--smoothing", "2"]),
        "that is the model being finetuned": ("finetune", ["-p", str(model), "--combine-with", str(model)]),
        f"{next(replaced.glob('*.keras'))}: not the model train.py saved": ("finetune", ["-p", str(replaced)]),
        "best_min_area 2.5: expected a whole number >= 1": ("predict", ["-p", str(model), "-i", str(dataset), "-o", out,
                                                                         "--results-dir", str(results)]),
    }
    for expected, imported, line in run_flag_errors(cases, tmp_path):
        assert expected in line, (expected, line)
        assert not imported, f"TensorFlow imported before reporting {expected!r}"
    assert not (tmp_path / "m").exists() and not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()


def edited_result(model: Path, work: Path, results: Path, edits: dict) -> Path:
    """A copy of the model's l2_float64 finetuning result under `results`, with `edits` written into
    its finetuning_result.json by hand; its folder."""
    source = results_of(model, work / "results_versions") / "finetuning" / "l2_float64"
    if not source.is_dir():
        finetune.main(["-p", str(model), "--results-dir", str(work / "results_versions")])
    target = results_of(model, results) / "finetuning" / "l2_float64"
    shutil.copytree(source, target)
    data = json.loads((target / "finetuning_result.json").read_text())
    (target / "finetuning_result.json").write_text(json.dumps(data | edits))
    return target


@pytest.mark.parametrize("key, value, expected", [
    ("best_min_area", 2.5, "best_min_area 2.5: expected a whole number >= 1"),
    ("best_threshold", float("inf"), "best_threshold inf: expected a finite number"),
    ("best_threshold", float("nan"), "best_threshold nan: expected a finite number"),
    ("clear_border", "false", "clear_border 'false': expected true or false"),
    ("smoothing_sigma", 1e9, "smoothing_sigma 1000000000.0: expected a finite number >= 0 and <= 100"),
    ("smoothing_sigma", -1, "smoothing_sigma -1: expected a finite number >= 0 and <= 100"),
    # A method or dtype edited by hand would apply the L2 threshold to another map (issue 30, case 3).
    ("method", "ssim", "its settings name the result ssim_float64, but it is in l2_float64/: edited by hand (method, dtype)? "
                       "rerun finetune.py"),
    ("dtype", "uint8", "its settings name the result l2_uint8, but it is in l2_float64/: edited by hand (method, dtype)? "
                       "rerun finetune.py"),
    # A threshold outside the maps' range flags everything or nothing (case 11).
    ("best_threshold", -0.5, "best_threshold -0.5: outside the range of its l2 maps [0, 1]; rerun finetune.py"),
    ("best_threshold", 1e308, "best_threshold 1e+308: outside the range of its l2 maps [0, 1]; rerun finetune.py"),
    ("rule", "magic", "rule 'magic': expected one of smoothed, original"),
    ("expected", {"tpr": "0.9"}, "expected {'tpr': '0.9'}: tpr: expected a fraction in [0, 1] or null"),
    ("operating_point", {"kind": "false_alarms", "rate": 7}, "operating_point {'kind': 'false_alarms', 'rate': 7}: expected "
     "{\"kind\": ..., \"rate\": ...} (operating point false_alarms: rate 7: expected a fraction in [0, 1])"),
])
def test_a_hand_edited_result_is_refused_by_test_and_predict(model, dataset, work, tmp_path, capsys, key, value, expected):
    """Every field is checked where a result is read (processing/detectors/fields.py): test.py and
    predict.py refuse in one line naming the file and the key, and write nothing."""
    import predict

    results = tmp_path / "results"
    target = edited_result(model, work, results, {key: value})
    before = snapshot(results)
    predict_argv = ["-p", str(model), "-i", str(dataset / "test"), "-o", str(tmp_path / "out"), "--results-dir", str(results)]
    for script, argv in ((test_script, ["-p", str(model), "--results-dir", str(results)]), (predict, predict_argv)):
        code, err = run_cli(script, argv, capsys)
        assert code == 2 and err == f"error: {target / 'finetuning_result.json'}: {expected}", err
    assert snapshot(results) == before and not (tmp_path / "out").exists()


def test_an_info_json_that_contradicts_its_model_file_is_refused(model, tmp_path, capsys):
    """color_mode against channels, and model.architecture against the .keras file (issue 30, case 10)."""
    info = json.loads((model / "info.json").read_text())
    for name, (section, key, value), expected in (
        ("rgb_on_gray", ("model", "color_mode", "rgb"), "'model.channels' is 1 but 'model.color_mode' 'rgb' has 3"),
        ("other_architecture", ("model", "architecture", "resnetCAE"),
         "model.architecture 'resnetCAE', but mvtecCAE_b8_e1.keras holds a mvtecCAE: edited by hand?"),
    ):
        folder = tmp_path / name
        shutil.copytree(model, folder)
        edited = json.loads(json.dumps(info))
        edited[section][key] = value
        (folder / "info.json").write_text(json.dumps(edited))
        code, err = run_cli(finetune, ["-p", str(folder), "--results-dir", str(tmp_path / "r")], capsys)
        assert code == 2 and expected in err, err
    assert not (tmp_path / "r").exists()


def test_a_write_that_fails_without_a_path_names_what_was_being_written(tmp_path):
    """numpy, Keras and OpenCV raise "[Errno 28] No space left on device" without a file name: the
    staging folders of results, models and generated datasets name their destination (issue 30, case 9)."""
    import errno

    from processing.data.images import writing_dataset

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError) as error:
        with bundle.staging_folder(tmp_path / "results" / "ssim_float64"):
            raise full
    assert cli.error_line(error.value) == f"{tmp_path / 'results' / 'ssim_float64'}: no space left on the device"
    with pytest.raises(OSError) as error:
        with writing_dataset(tmp_path / "demo", {}, "settings.json", "demo"):
            raise full
    assert cli.error_line(error.value) == f"{tmp_path / 'demo'}: no space left on the device"
    assert not [p for p in tmp_path.rglob("*") if p.name != "results"]  # no staging folder, no half result
    with pytest.raises(ValueError, match="unchanged"):  # other errors pass as they are
        with bundle.staging_folder(tmp_path / "other"):
            raise ValueError("unchanged")


def test_finetune_on_a_full_disk_names_the_result_folder(model, tmp_path, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        code, err = run_cli(finetune, ["-p", str(model), "--results-dir", str(disk / "r")], capsys)
        assert code == 2 and str(disk / "r") in err and "no space left on the device" in err, err
        assert not [p for p in (disk / "r").rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_an_edited_image_size_or_channels_is_refused_before_tensorflow(model, tmp_path, capsys):
    """info.json's image_size or channels against the input of the .keras file, read from its config
    (issue 30, case 18): one line, before TensorFlow."""
    info = json.loads((model / "info.json").read_text())
    folder = tmp_path / "edited"
    shutil.copytree(model, folder)
    info["model"]["image_size"] = 2 * SIZE
    (folder / "info.json").write_text(json.dumps(info))
    code, err = run_cli(finetune, ["-p", str(folder), "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and (f"takes inputs of {SIZE}x{SIZE} px, 1 channel, but {folder / 'info.json'} (model.image_size, model.channels) "
                           f"describes {2 * SIZE}x{2 * SIZE} px, 1 channel") in err, err


def test_combine_with_a_model_of_another_dataset_is_refused_before_tensorflow(model, tmp_path, capsys):
    partner = tmp_path / "partner"
    shutil.copytree(model, partner)
    info = json.loads((partner / "info.json").read_text())
    info["dataset"]["path"] = str(tmp_path / "another_set")
    (partner / "info.json").write_text(json.dumps(info))
    code, err = run_cli(finetune, ["-p", str(model), "--combine-with", str(partner), "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and f"--combine-with {partner}: that model was trained on {tmp_path / 'another_set'}" in err, err


def test_test_py_refuses_a_hand_edited_result_before_tensorflow(model, work, tmp_path):
    """As predict.py does (issue 30, case 18): test.py reads every selected result before TensorFlow."""
    results = tmp_path / "results"
    edited_result(model, work, results, {"best_min_area": 2.5})
    cases = {"best_min_area 2.5: expected a whole number >= 1": ("test", ["-p", str(model), "--results-dir", str(results)])}
    for expected, imported, line in run_flag_errors(cases, tmp_path):
        assert expected in line and not imported, (expected, line, imported)


def test_a_result_missing_a_file_it_needs_is_refused_before_tensorflow(model, work, tmp_path):
    """normalize: pixel written into a result without its pixel_statistics.npz (issue 30, case 18)."""
    results = tmp_path / "results"
    target = edited_result(model, work, results, {"normalize": "pixel"})
    expected = f"{target / 'pixel_statistics.npz'} not found: the finetuning result l2_float64 needs it; rerun finetune.py"
    cases = {expected: ("test", ["-p", str(model), "--results-dir", str(results)])}
    for expected, imported, line in run_flag_errors(cases, tmp_path):
        assert expected in line and not imported, (expected, line, imported)


def test_resume_of_another_models_predictions_and_a_merge_of_the_same_images_answer_before_tensorflow(model, dataset, work, tmp_path):
    """Issue 30, case 18: --resume on predictions of another model, and --merge of two runs over the
    same images (one by a relative path, one by an absolute one), are refused before TensorFlow."""
    import predict

    results = work / "results_versions"
    if not (results_of(model, results) / "finetuning" / "l2_float64").is_dir():
        finetune.main(["-p", str(model), "--results-dir", str(results)])
    images = dataset / "test" / "good"
    first, second = tmp_path / "first", tmp_path / "second"
    predict.main(["-p", str(model), "-i", str(images), "-o", str(first), "--results-dir", str(results)])
    relative = os.path.relpath(images, tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        predict.main(["-p", str(model), "-i", relative, "-o", str(second), "--results-dir", str(results)])
    finally:
        os.chdir(cwd)
    other = tmp_path / "other_model"
    shutil.copytree(model, other)
    shutil.copytree(results_of(model, results) / "finetuning", results_of(other, results) / "finetuning")
    cases = {
        f"-o {first} holds predictions of model {model.resolve()}": (
            "predict", ["-p", str(other), "-i", str(images), "-o", str(first), "--results-dir", str(results), "--resume"]),
        "is in both": ("predict", ["--merge", str(first), str(second), "-o", str(tmp_path / "merged")]),
    }
    for expected, imported, line in run_flag_errors(cases, tmp_path):
        assert expected in line and not imported, (expected, line, imported)


def test_a_killed_dataset_writers_temporary_folder_is_reported(tmp_path, caplog):
    from processing.data.images import writing_dataset

    (tmp_path / ".demo.x1y2.tmp").mkdir()  # what a killed make_demo_dataset.py / split.py leaves
    caplog.set_level(logging.WARNING)
    with writing_dataset(tmp_path / "demo", {}, "settings.json", "demo"):
        pass
    assert any("temporary folder(s) of earlier runs that did not finish are beside" in r.getMessage() and ".demo.x1y2.tmp" in
               r.getMessage() for r in caplog.records)
    assert (tmp_path / ".demo.x1y2.tmp").is_dir()  # reported, not removed: it may be another run's


def test_predict_on_a_folder_a_live_run_holds_answers_before_tensorflow(model, dataset, work, tmp_path):
    from autoencoder.folders import FolderLock

    results = work / "results_versions"
    if not (results_of(model, results) / "finetuning" / "l2_float64").is_dir():
        finetune.main(["-p", str(model), "--results-dir", str(results)])
    out = tmp_path / "busy"
    out.mkdir()
    argv = ["-p", str(model), "-i", str(dataset / "test" / "good"), "-o", str(out), "--results-dir", str(results), "--resume"]
    with FolderLock(out, "predict.py run"):
        (expected, imported, line), = run_flag_errors({f"{out} is in use by another predict.py run": ("predict", argv)}, tmp_path)
    assert expected in line and not imported, (line, imported)
