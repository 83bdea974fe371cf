"""Tests for processing.data.synthetic_datasets and its scripts: the generated high-resolution
and hue-only colour datasets in the MVTec AD layout."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from processing.data.images import DatasetError, check_masks, read_image, scan_dataset
from processing.data.synthetic_datasets import (
    COLOR_DEFECT_TYPES,
    COLOR_SETTINGS_FILE,
    DEFECTS_FILE,
    HIGHRES_DEFECT_TYPES,
    HIGHRES_SETTINGS_FILE,
    color_images,
    highres_images,
    make_color_dataset,
    make_highres_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=128, n_train=3, n_test_good=2, n_test_defect=2, defect_size_range=(5, 30), seed=4)
SMALL_COLOR = dict(image_size=96, n_train=2, n_test_good=2, n_test_defect=3, defect_size_range=(8, 40), seed=1)


def read_unchanged(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


@pytest.fixture(scope="module")
def highres_dir(tmp_path_factory):
    return make_highres_dataset(tmp_path_factory.mktemp("highres") / "data", **SMALL)


@pytest.fixture(scope="module")
def color_dir(tmp_path_factory):
    return make_color_dataset(tmp_path_factory.mktemp("color") / "data", **SMALL_COLOR)


def test_highres_layout_is_read_by_scan_dataset(highres_dir):
    layout = scan_dataset(highres_dir, require_test=True)
    assert len(layout.train_good) == 3 and len(layout.test["good"]) == 2
    assert layout.defect_types == sorted(HIGHRES_DEFECT_TYPES)
    assert check_masks(layout) == 2 * len(HIGHRES_DEFECT_TYPES)  # every mask exists, at its image's size
    assert sorted(p.name for p in highres_dir.iterdir()) == [DEFECTS_FILE, "ground_truth", "highres_settings.json", "test", "train"]
    for path in layout.train_good + layout.test["scratch"]:
        image = read_unchanged(path)
        assert image.shape == (128, 128) and image.dtype == np.uint8


def test_highres_files_are_the_generated_images(highres_dir):
    items = list(highres_images(**SMALL))
    assert len(items) == 3 + 2 + 2 * len(HIGHRES_DEFECT_TYPES)
    rows = {row["file"]: row for row in csv.DictReader(open(highres_dir / DEFECTS_FILE))}
    for item in items:
        np.testing.assert_array_equal(read_unchanged(highres_dir / item.folder / item.name), item.image)
        if item.defect is None:
            continue
        mask = read_unchanged(highres_dir / "ground_truth" / item.defect_type / f"{item.index:03d}_mask.png")
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        np.testing.assert_array_equal(mask > 0, item.mask)
        assert item.defect.kind == item.defect_type and 5 <= item.defect.size <= 30
        row = rows[f"{item.folder}/{item.name}"]
        assert row["kind"] == item.defect.kind and int(row["mask_area"]) == item.mask.sum()
        rows_, cols_ = np.nonzero(item.mask)
        assert max(np.ptp(rows_), np.ptp(cols_)) + 1 <= item.defect.size + 2
    settings = json.loads((highres_dir / HIGHRES_SETTINGS_FILE).read_text())
    assert settings["image_size"] == 128 and settings["seed"] == 4 and settings["counts"]["test/crack"] == 2
    assert settings["defect_types"] == list(HIGHRES_DEFECT_TYPES) and "fibre_angle" in settings["product"]


def test_images_are_deterministic_and_independent_per_folder():
    first = list(highres_images(**{**SMALL, "defect_types": ["spot", "crack"]}))
    again = list(highres_images(**{**SMALL, "defect_types": ["crack"], "n_test_defect": 3}))
    np.testing.assert_array_equal(first[0].image, again[0].image)  # train/good/000
    crack_first = [item for item in first if item.folder == "test/crack"]
    crack_again = [item for item in again if item.folder == "test/crack"]
    for a, b in zip(crack_first, crack_again):  # the crack images do not depend on the other types
        np.testing.assert_array_equal(a.image, b.image) and np.testing.assert_array_equal(a.mask, b.mask)
    assert len(crack_again) == 3
    other_seed = next(iter(highres_images(**{**SMALL, "seed": 5})))
    assert not np.array_equal(other_seed.image, first[0].image)
    assert not np.array_equal(first[0].image, first[1].image)  # every image is different


def test_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    small = {**SMALL, "image_size": 64, "n_train": 1, "n_test_good": 1, "n_test_defect": 1, "defect_types": ["spot"]}
    out = make_highres_dataset(tmp_path / "hr", **small)
    before = read_unchanged(out / "train" / "good" / "000.png")
    with pytest.raises(DatasetError, match=r"hr is not empty: pass --overwrite"):
        make_highres_dataset(out, **small)
    make_highres_dataset(out, **{**small, "seed": 9, "n_train": 2}, overwrite=True)
    assert len(list((out / "train" / "good").iterdir())) == 2
    assert not np.array_equal(read_unchanged(out / "train" / "good" / "000.png"), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr"]  # no staging folder left behind

    with pytest.raises(DatasetError, match=r"refusing to replace .*hr: it is not a color synthetic dataset"):
        make_color_dataset(out, **{**SMALL_COLOR, "image_size": 64, "defect_size_range": (8, 20)}, overwrite=True)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"refusing to replace .*precious"):
        make_highres_dataset(precious, **small, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=16), r"--image-size 16 not supported: expected an integer >= 32"),
        (dict(n_train=0), r"--n-train 0 not supported"),
        (dict(n_test_defect=-1), r"--n-test-defect -1 not supported"),
        (dict(defect_size_range=(5, 200)), r"--defect-size-range 5 200 not supported: expected 3 <= MIN <= MAX <= 120 px for --image-size "
                r"128"),
        (dict(defect_size_range=(20, 10)), r"--defect-size-range 20 10 not supported"),
        (dict(defect_types=["dent"]), r"--defect-types \['dent'\] not supported: expected distinct names from scratch"),
        (dict(defect_types=["color"]), r"--defect-types \['color'\] not supported"),
        (dict(seed=-1), r"--seed -1 not supported"),
    ],
)
def test_bad_arguments(kwargs, message, tmp_path):
    with pytest.raises(DatasetError, match=message):
        make_highres_dataset(tmp_path / "out", **{**SMALL, **kwargs})
    assert not (tmp_path / "out").exists()


def test_color_layout(color_dir):
    layout = scan_dataset(color_dir, require_test=True)
    assert layout.defect_types == sorted(COLOR_DEFECT_TYPES)
    assert check_masks(layout) == 3 * len(COLOR_DEFECT_TYPES)
    image = read_unchanged(layout.test["hue_spot"][0])
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert json.loads((color_dir / COLOR_SETTINGS_FILE).read_text())["kind"] == "color"


def test_color_defects_differ_only_by_hue(color_dir, tmp_path):
    """Read as the toolkit reads them, the gray images with and without the defect differ by at
    most 1/255 (the rounding of each channel to 8 bits), the RGB images clearly."""
    for item in color_images(**SMALL_COLOR):
        if item.defect is None:
            continue
        clean_path = tmp_path / "clean.png"
        assert cv2.imwrite(str(clean_path), np.ascontiguousarray(item.clean[:, :, ::-1]))
        defective_path = color_dir / item.folder / item.name
        gray_change = np.abs(read_image(defective_path, "grayscale") - read_image(clean_path, "grayscale"))
        assert gray_change.max() <= 1 / 255 + 1e-5, item.defect
        rounded = lambda path: np.round(read_image(path, "grayscale") * 255)  # noqa: E731
        assert np.abs(rounded(defective_path) - rounded(clean_path)).max() <= 1
        rgb_change = np.abs(read_image(defective_path, "rgb") - read_image(clean_path, "rgb")).max(axis=2)
        assert rgb_change[item.mask].mean() > 0.05 and rgb_change[item.mask].max() > 0.1, item.defect
        assert not rgb_change[~item.mask].max(initial=0) > 0.1


def run_script(script, *args):
    command = [sys.executable, f"scripts/{script}", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "script, size_flags, types",
    [
        ("make_highres_dataset.py", ["--image-size", "64", "--defect-size-range", "5", "12"], ["spot", "crack"]),
        ("make_color_dataset.py", ["--image-size", "64", "--defect-size-range", "8", "20"], ["hue_spot"]),
    ],
)
def test_scripts_write_a_dataset_and_refuse_to_overwrite(script, size_flags, types, tmp_path):
    out = tmp_path / "out"
    args = ["-o", str(out), *size_flags, "--n-train", "2", "--n-test-good", "1", "--n-test-defect", "1", "--seed", "3"]
    args += ["--defect-types", *types]
    result = run_script(script, *args)
    assert result.returncode == 0, result.stderr
    layout = scan_dataset(out, require_test=True)
    assert len(layout.train_good) == 2 and check_masks(layout) == len(types)
    again = run_script(script, *args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert run_script(script, *args, "--overwrite").returncode == 0
    bad = run_script(script, "-o", str(tmp_path / "bad"), "--image-size", "64", "--defect-size-range", "5", "90")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --defect-size-range 5 90")
