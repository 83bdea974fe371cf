"""A region of interest (issue 29): read and checked in one line, stored with the model, applied to
every map before any decision (test.py, predict.py, the export graph), metrics inside it."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

import finetune
import predict as predict_script
import test as test_script
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.data.images import DatasetError, load_image
from processing.data.roi import below_outside, check_roi_fits, read_roi, restrict_maps, roi_at

SIZE = 32
BAND = 8  # the right-most columns: outside the region


def write_mask(path, mask) -> None:
    cv2.imwrite(str(path), mask.astype(np.uint8) * 255)


def test_a_mask_is_read_scaled_and_checked(tmp_path):
    region = np.zeros((40, 60), bool)
    region[10:30, 20:50] = True
    write_mask(tmp_path / "roi.png", region)
    np.testing.assert_array_equal(read_roi(tmp_path / "roi.png"), region)
    half = roi_at(region, (20, 30))
    assert half.shape == (20, 30) and half[5:15, 10:25].all() and half.sum() == region.sum() // 4
    write_mask(tmp_path / "black.png", np.zeros((8, 8)))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    (tmp_path / "folder.png").mkdir()
    for name, message in (("missing.png", "not found: expected a mask image"), ("black.png", "covers nothing"),
                          ("junk.png", "not a readable mask image"), ("folder.png", "a folder; expected a mask image")):
        with pytest.raises(DatasetError, match=f"--roi {tmp_path / name}.*{message}"):
            read_roi(tmp_path / name)
    with pytest.raises(DatasetError, match="cannot be read"):
        read_roi(tmp_path / ("x" * 300 + ".png"))
    # White everywhere, the region drawn by transparency: outside is transparent.
    rgba = np.full((10, 10, 4), 255, np.uint8)
    rgba[:, 5:, 3] = 0
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    assert read_roi(tmp_path / "alpha.png").sum() == 50 and read_roi(tmp_path / "alpha.png")[:, :5].all()
    # One pixel of 1000 x 1000 keeps no pixel of a 32 x 32 map: said when the model is trained, not later.
    thin = np.zeros((1000, 1000), bool)
    thin[500, 500] = True
    with pytest.raises(DatasetError, match="keeps no pixel of a 32x32 map; draw a larger region"):
        check_roi_fits(thin, (SIZE, SIZE))


def test_outside_the_region_a_map_is_never_above_what_is_inside():
    region = np.zeros((4, 4), bool)
    region[:, :2] = True
    maps = np.arange(32, dtype=np.float64).reshape(2, 4, 4)
    restricted = restrict_maps(maps, region)
    np.testing.assert_array_equal(restricted[:, :, :2], maps[:, :, :2])
    assert (restricted[0, :, 2:] == 0).all() and (restricted[1, :, 2:] == 16).all()  # each map's lowest inside
    decided = below_outside(maps, region, threshold=-5.0)  # even when all of the region is above the threshold
    assert (decided[:, :, 2:] < -5.0).all()
    listed = restrict_maps([maps[0], maps[1][:2]], region)  # maps of their own sizes (a tiled model's)
    assert listed[1].shape == (2, 4) and (listed[1][:, 2:] == 16).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A demo set whose roi.png (the right band excluded) train.py picks up, with strong blobs in
    that band of every test image; a 1-epoch l2 model, finetuned."""
    root = tmp_path_factory.mktemp("roi")
    data = make_demo_dataset(root / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=3)
    for path in sorted((data / "test").rglob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image[4:28, SIZE - BAND + 1:SIZE - 1] = 255  # a bright label in the band
        cv2.imwrite(str(path), image)
    region = np.ones((SIZE * 2, SIZE * 2), bool)  # another size than the images: scaled
    region[:, 2 * (SIZE - BAND):] = False
    write_mask(data / "roi.png", region)
    model = train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE), "--epochs", "1",
                        "--lr", "1e-3", "--output-dir", str(root / "models")])
    finetune.main(["-p", str(model), "--results-dir", str(root / "results")])
    return root, data, model


def test_the_region_is_stored_with_the_model_and_applied_everywhere(trained, tmp_path):
    root, data, model = trained
    info = json.loads((model / "info.json").read_text())
    assert info["model"]["roi"]["file"] == "roi.png" and info["model"]["roi"]["coverage"] == pytest.approx(0.75)
    assert read_roi(model / "roi.png").shape == (2 * SIZE, 2 * SIZE)
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", str(root / "results"), "-s"])
    result = json.loads((test_dir / "test_result.json").read_text())
    region = result["region_of_interest"]
    assert region["coverage"] == pytest.approx(0.75) and "inside the region" in region["metrics"]
    masks = list((test_dir / "segmentation").rglob("*_mask.png"))
    assert masks and all(not cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[:, SIZE - BAND:].any() for path in masks)
    out = tmp_path / "predicted"
    predict_script.main(["-p", str(model), "-i", str(data / "test"), "-o", str(out), "--results-dir", str(root / "results"), "--masks"])
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["bbox_x1"] == "" or int(row["bbox_x1"]) < SIZE - BAND for row in rows)
    assert all(not cv2.imread(str(out / row["mask"]), cv2.IMREAD_GRAYSCALE)[:, SIZE - BAND:].any() for row in rows if row["mask"])


def test_the_export_graph_applies_the_region_as_the_toolkit_does(trained):
    from processing.workflow.results import ResultsTree, load_detector

    root, data, model = trained
    loaded = bundle.load_bundle(model)
    _, folder = ResultsTree.of_model(loaded, root / "results").choose(None)
    detector = load_detector(loaded, folder)
    images = np.stack([load_image(path, "grayscale", SIZE) for path in sorted((data / "test").rglob("*.png"))])
    plan = detector.export_plan()
    outputs = plan.outputs(images, "float64")
    np.testing.assert_allclose(np.asarray(outputs["anomaly_map"]), detector.score(images).maps, rtol=1e-5, atol=1e-6)
    above = np.asarray(outputs["above_threshold"])
    assert not above[:, :, SIZE - BAND:].any()


def test_a_bad_region_answers_before_tensorflow(trained, tmp_path, capsys):
    root, data, model = trained
    write_mask(tmp_path / "black.png", np.zeros((4, 4)))
    argv = ["-d", str(data), "--roi", str(tmp_path / "black.png"), "--output-dir", str(tmp_path / "m")]
    assert cli.run(train.main, argv) == 2
    assert capsys.readouterr().err.strip().endswith("covers nothing (no pixel is light): expected white where the images are inspected")
    broken = tmp_path / "broken_model"
    import shutil

    shutil.copytree(model, broken)
    (broken / "roi.png").unlink()
    assert cli.run(finetune.main, ["-p", str(broken), "--results-dir", str(tmp_path / "r")]) == 2
    assert "info.json: model.roi names roi.png, which is not in the folder" in capsys.readouterr().err
