"""Tests for processing.data.demo (the built-in demo dataset) and scripts/make_demo_dataset.py."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from processing.data.demo import (
    DEFECT_TYPES,
    SETTINGS_FILE,
    draw_defect,
    generate_demo_arrays,
    make_demo_dataset,
    sample_patches,
    texture_image,
)
from processing.data.images import DatasetError, check_masks, list_images, scan_dataset

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=32, n_train=6, n_test_good=3, n_test_defect=4, texture="gravel", seed=3)


def read_gray(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 2, path
    return image


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "gravel", **SMALL)


def test_counts_per_folder(demo_dir):
    def count(folder):
        return len(list((demo_dir / folder).glob("*.png")))

    assert count("train/good") == 6 and count("test/good") == 3
    for defect_type in DEFECT_TYPES:
        assert count(f"test/{defect_type}") == 4 and count(f"ground_truth/{defect_type}") == 4
    assert sorted(p.name for p in demo_dir.iterdir()) == ["demo_settings.json", "ground_truth", "test", "train"]
    assert [p.name for p in list_images(demo_dir / "train" / "good")] == [f"{i:03d}.png" for i in range(6)]


def test_dataset_accepted_by_scan_and_check_masks(demo_dir):
    layout = scan_dataset(demo_dir, require_test=True)
    assert layout.defect_types == sorted(DEFECT_TYPES)
    assert check_masks(layout) == 3 * 4


def test_files_equal_the_generated_arrays(demo_dir):
    arrays = generate_demo_arrays(**SMALL)
    stack = lambda folder, suffix="": np.stack(  # noqa: E731
        [read_gray(demo_dir / folder / f"{i:03d}{suffix}.png") for i in range(len(list((demo_dir / folder).iterdir())))]
    )
    np.testing.assert_array_equal(stack("train/good"), arrays.train_good)
    np.testing.assert_array_equal(stack("test/good"), arrays.test_good)
    for defect_type in DEFECT_TYPES:
        np.testing.assert_array_equal(stack(f"test/{defect_type}"), arrays.defective[defect_type])
        masks = stack(f"ground_truth/{defect_type}", "_mask")
        assert set(np.unique(masks)) <= {0, 255}
        np.testing.assert_array_equal(masks > 0, arrays.masks[defect_type])
    settings = json.loads((demo_dir / SETTINGS_FILE).read_text())
    assert {k: settings[k] for k in SMALL} == SMALL


def test_masks_are_exactly_the_changed_pixels_and_sized_right(demo_dir):
    arrays = generate_demo_arrays(**SMALL)
    for defect_type in DEFECT_TYPES:
        clean, defective, masks = arrays.clean[defect_type], arrays.defective[defect_type], arrays.masks[defect_type]
        assert clean.shape == defective.shape == masks.shape == (4, 32, 32)
        np.testing.assert_array_equal(defective != clean, masks)
        coverage = masks.mean(axis=(1, 2))
        assert ((coverage >= 0.005) & (coverage <= 0.10)).all(), (defect_type, coverage)


def test_defects_are_visible():
    texture = texture_image("grass")
    rng = np.random.default_rng(0)
    patches = sample_patches(texture, 30, 64, (300, 512), rng)
    for defect_type in DEFECT_TYPES:
        for patch in patches:
            defective, mask = draw_defect(patch, defect_type, rng)
            # The defect's grey level is far from the texture around it.
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
            contrast = abs(float(defective[mask].mean()) - float(patch[ring].mean()))
            assert contrast > 40, (defect_type, contrast)
            assert 0.005 <= mask.mean() <= 0.05


def best_match(patch, image):
    """Top-left (row, col) of the window of `image` closest to `patch` (sum of squared differences)."""
    scores = cv2.matchTemplate(image, np.ascontiguousarray(patch), cv2.TM_SQDIFF)
    col, row = cv2.minMaxLoc(scores)[2]
    return row, col


def is_crop_of(patch, image):
    row, col = best_match(patch, image)
    return np.array_equal(image[row : row + patch.shape[0], col : col + patch.shape[1]], patch)


def variants(patch):
    """The 8 flips / 90° turns of a patch."""
    return [np.ascontiguousarray(np.rot90(p, k)) for p in (patch, patch[:, ::-1]) for k in range(4)]


def test_patches_come_from_the_texture_region():
    texture = texture_image("brick")
    np.testing.assert_array_equal(texture, skimage.data.brick())
    rows = (307, 512)
    patches = sample_patches(texture, 5, 24, rows, np.random.default_rng(1))
    region = texture[rows[0] : rows[1]]
    for patch in patches:
        # Undo the random flip / 90° turn: one of the 8 variants is a crop of the region.
        assert any(is_crop_of(v, region) for v in variants(patch))


def test_train_and_test_crops_come_from_disjoint_regions():
    arrays = generate_demo_arrays(**SMALL)
    texture = texture_image(SMALL["texture"])
    split = round(0.6 * texture.shape[0])
    train_region, test_region = texture[:split], texture[split:]
    for patch in arrays.train_good:
        assert any(is_crop_of(v, train_region) for v in variants(patch))
        assert not any(is_crop_of(v, test_region) for v in variants(patch))
    for patch in np.concatenate([arrays.test_good, *arrays.clean.values()]):
        assert any(is_crop_of(v, test_region) for v in variants(patch))
        assert not any(is_crop_of(v, train_region) for v in variants(patch))


def test_large_images_are_enlarged_crops():
    arrays = generate_demo_arrays(image_size=160, n_train=2, n_test_good=1, n_test_defect=1, texture="grass", seed=0)
    assert arrays.train_good.shape == (2, 160, 160)
    for defect_type in DEFECT_TYPES:
        assert 0.005 <= arrays.masks[defect_type].mean() <= 0.05


def test_deterministic_for_a_seed():
    first, second = generate_demo_arrays(**SMALL), generate_demo_arrays(**SMALL)
    np.testing.assert_array_equal(first.train_good, second.train_good)
    for defect_type in DEFECT_TYPES:
        np.testing.assert_array_equal(first.defective[defect_type], second.defective[defect_type])
        np.testing.assert_array_equal(first.masks[defect_type], second.masks[defect_type])
    other = generate_demo_arrays(**{**SMALL, "seed": 4})
    assert not np.array_equal(first.train_good, other.train_good)


def test_refuses_to_overwrite(tmp_path):
    out = make_demo_dataset(tmp_path / "demo", **SMALL)
    before = read_gray(out / "train" / "good" / "000.png")
    with pytest.raises(DatasetError, match=r"demo is not empty: pass --overwrite"):
        make_demo_dataset(out, **SMALL)
    make_demo_dataset(out, **{**SMALL, "seed": 9, "n_train": 2}, overwrite=True)
    assert len(list((out / "train" / "good").iterdir())) == 2
    assert not np.array_equal(read_gray(out / "train" / "good" / "000.png"), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no staging folder left behind

    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"refusing to replace .*precious: it is not a demo dataset"):
        make_demo_dataset(other, **SMALL, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"

    empty = tmp_path / "empty"
    empty.mkdir()
    make_demo_dataset(empty, **SMALL)
    assert (empty / SETTINGS_FILE).is_file()


def test_bad_arguments():
    with pytest.raises(DatasetError, match=r"--texture 'wood'"):
        generate_demo_arrays(texture="wood")
    with pytest.raises(DatasetError, match=r"--image-size 8"):
        generate_demo_arrays(image_size=8)
    with pytest.raises(DatasetError, match=r"--n-train 0"):
        generate_demo_arrays(n_train=0)
    with pytest.raises(DatasetError, match=r"defect type 'dent'"):
        draw_defect(np.zeros((32, 32), np.uint8), "dent", np.random.default_rng(0))


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "cli_demo"
    command = [sys.executable, "scripts/make_demo_dataset.py", "-o", str(out), "--texture", "brick"]
    command += ["--image-size", "24", "--n-train", "3", "--n-test-good", "2", "--n-test-defect", "1", "--seed", "5"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    layout = scan_dataset(out, require_test=True)
    assert len(layout.train_good) == 3 and check_masks(layout) == 3
    assert json.loads((out / SETTINGS_FILE).read_text())["texture"] == "brick"
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
