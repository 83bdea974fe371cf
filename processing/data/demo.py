"""A small built-in demo dataset in the MVTec AD layout, made from a texture photo that ships with
scikit-image (brick, grass or gravel: 512x512 8-bit gray; nothing is downloaded).

Defect-free images are random square crops (with random flips and 90° rotations) of the photo:
training crops from its top 60 % of rows, test crops from the bottom 40 %, so no test pixel was
seen in training. Defective test images are further test crops with a synthetic defect drawn in:

- ``scratch``: one to three thin straight line segments, all bright or all dark;
- ``spot``: a filled dark or bright ellipse;
- ``crack``: a dark jagged polyline.

Each defect covers 0.5-5 % of the image and its mask (ground_truth/<type>/<stem>_mask.png, 0/255)
is exactly the set of pixels the defect changed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import skimage
import skimage.data

from processing.data.images import DatasetError, writing_dataset

logger = logging.getLogger(__name__)

TEXTURES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("crack", "scratch", "spot")
TRAIN_ROWS_FRACTION = 0.6  # top 60 % of the photo for training crops, the rest for test crops
MAX_CROP = 128  # larger images are crops of this size, enlarged (the test region is 204 rows)
DEFECT_AREA_RANGE = (0.005, 0.05)  # fraction of the image a defect covers
SETTINGS_FILE = "demo_settings.json"


def texture_image(texture: str) -> np.ndarray:
    """The scikit-image texture photo `texture` (one of TEXTURES): uint8 (512, 512)."""
    if texture not in TEXTURES:
        raise DatasetError(f"--texture {texture!r} not supported: expected one of {', '.join(TEXTURES)}")
    image = getattr(skimage.data, texture)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image, dtype=np.uint8)


def sample_patches(
    texture: np.ndarray, n: int, image_size: int, rows: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """`n` random crops from texture[rows[0]:rows[1]], each randomly flipped and turned by a
    multiple of 90°: uint8 (n, image_size, image_size).

    Crops are image_size pixels, or MAX_CROP pixels enlarged bilinearly when image_size is larger.
    """
    region = texture[rows[0] : rows[1]]
    crop = min(image_size, MAX_CROP)
    if crop > min(region.shape):
        raise DatasetError(f"--image-size {image_size}: crops of {crop} px do not fit a {region.shape} region")
    patches = np.empty((n, image_size, image_size), dtype=np.uint8)
    for i in range(n):
        top = rng.integers(0, region.shape[0] - crop + 1)
        left = rng.integers(0, region.shape[1] - crop + 1)
        patch = region[top : top + crop, left : left + crop]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if crop != image_size:
            patch = cv2.resize(np.ascontiguousarray(patch), (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        patches[i] = patch
    return patches


def _random_point(size: int, margin: float, rng: np.random.Generator) -> np.ndarray:
    low, high = margin * size, (1 - margin) * size
    return rng.uniform(low, high, size=2)


def _draw_shape(defect_type: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Where a random defect of `defect_type` lies: uint8 (size, size), 255 inside, 0 outside."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    thickness = max(1, round(size / 48))
    if defect_type == "scratch":
        for _ in range(rng.integers(1, 4)):
            start = _random_point(size, 0.1, rng)
            angle = rng.uniform(0, np.pi)
            length = rng.uniform(0.2, 0.5) * size
            end = start + length * np.array([np.cos(angle), np.sin(angle)])
            cv2.line(canvas, tuple(np.round(start).astype(int)), tuple(np.round(end).astype(int)), 255, thickness)
    elif defect_type == "spot":
        center = _random_point(size, 0.2, rng)
        axes = rng.uniform(0.04, 0.11, size=2) * size
        cv2.ellipse(
            canvas,
            tuple(np.round(center).astype(int)),
            tuple(np.maximum(1, np.round(axes)).astype(int)),
            rng.uniform(0, 180),
            0,
            360,
            255,
            thickness=-1,
        )
    elif defect_type == "crack":
        # Short segments along a slowly turning main direction, each vertex pushed sideways at
        # random: a zig-zag line.
        point = _random_point(size, 0.25, rng)
        heading = rng.uniform(0, 2 * np.pi)
        points = [point]
        for _ in range(rng.integers(6, 11)):
            heading += rng.uniform(-0.3, 0.3)
            direction = np.array([np.cos(heading), np.sin(heading)])
            sideways = np.array([-direction[1], direction[0]])
            point = point + rng.uniform(0.04, 0.08) * size * direction
            points.append(point + rng.uniform(-0.04, 0.04) * size * sideways)
        polyline = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [polyline], isClosed=False, color=255, thickness=thickness + 1)
    else:
        raise DatasetError(f"defect type {defect_type!r} not supported: expected one of {', '.join(DEFECT_TYPES)}")
    return canvas


def draw_defect(patch: np.ndarray, defect_type: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw a random defect of `defect_type` into a copy of `patch`, uint8 (H, W) with H == W.

    Returns (defective uint8 (H, W), mask bool (H, W)): the mask covers 0.5-5 % of the image and
    is exactly the set of pixels that differ from `patch`.
    """
    size = patch.shape[0]
    # Segmentation drops components touching the image border (as the original toolkit did), so
    # a defect drawn there could never be found: keep every defect a margin away from the border.
    margin = max(1, size // 16)
    for _ in range(1000):  # redraw until the defect's area and position are right
        mask = _draw_shape(defect_type, size, rng) > 0
        inside = not (mask[:margin].any() or mask[-margin:].any() or mask[:, :margin].any() or mask[:, -margin:].any())
        if inside and DEFECT_AREA_RANGE[0] <= mask.mean() <= DEFECT_AREA_RANGE[1]:
            break
    else:
        raise DatasetError(f"cannot draw a {defect_type} covering {DEFECT_AREA_RANGE} of a {size}px image")
    # Cracks are dark; scratches and spots dark or bright. The value stays far from the texture's
    # mid-grey so that the defect is plainly visible.
    bright = defect_type != "crack" and rng.random() < 0.5
    level = rng.uniform(215, 245) if bright else rng.uniform(10, 40)
    values = np.clip(np.round(level + rng.normal(0, 6, size=int(mask.sum()))), 0, 255).astype(np.uint8)
    original = patch[mask]
    # A drawn pixel that happens to keep its value is nudged by one grey level, so that the mask
    # is exactly the changed pixels.
    same = values == original
    values[same] = np.where(original[same] < 128, original[same] + 1, original[same] - 1)
    defective = patch.copy()
    defective[mask] = values
    return defective, mask


@dataclass
class DemoArrays:
    """The images of a demo dataset, in memory (uint8 (N, S, S) images, bool (N, S, S) masks)."""

    train_good: np.ndarray
    test_good: np.ndarray
    clean: dict[str, np.ndarray] = field(default_factory=dict)  # defect type -> patches before drawing
    defective: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def generate_demo_arrays(
    image_size: int = 64,
    n_train: int = 200,
    n_test_good: int = 20,
    n_test_defect: int = 10,
    texture: str = "brick",
    seed: int = 0,
) -> DemoArrays:
    """Generate the demo images in memory; the same arguments give the same arrays."""
    for name, value, minimum in (
        ("--image-size", image_size, 16),
        ("--n-train", n_train, 1),
        ("--n-test-good", n_test_good, 0),
        ("--n-test-defect", n_test_defect, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise DatasetError(f"{name} {value!r} not supported: expected an integer >= {minimum}")
    photo = texture_image(texture)
    split_row = round(TRAIN_ROWS_FRACTION * photo.shape[0])
    rng = np.random.default_rng(seed)
    train_rows, test_rows = (0, split_row), (split_row, photo.shape[0])
    arrays = DemoArrays(
        train_good=sample_patches(photo, n_train, image_size, train_rows, rng),
        test_good=sample_patches(photo, n_test_good, image_size, test_rows, rng),
    )
    for defect_type in DEFECT_TYPES:
        clean = sample_patches(photo, n_test_defect, image_size, test_rows, rng)
        drawn = [draw_defect(patch, defect_type, rng) for patch in clean]
        arrays.clean[defect_type] = clean
        arrays.defective[defect_type] = np.array([d for d, _ in drawn], dtype=np.uint8).reshape(clean.shape)
        arrays.masks[defect_type] = np.array([m for _, m in drawn], dtype=bool).reshape(clean.shape)
    return arrays


def _write_pngs(folder: Path, images: np.ndarray, suffix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        path = folder / f"{index:03d}{suffix}.png"
        if not cv2.imwrite(str(path), image):
            raise DatasetError(f"cannot write {path}")


def make_demo_dataset(
    out_dir: str | os.PathLike,
    image_size: int = 64,
    n_train: int = 200,
    n_test_good: int = 20,
    n_test_defect: int = 10,
    texture: str = "brick",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a demo dataset in the MVTec AD layout into `out_dir` and return its path.

    out_dir/train/good/000.png..., out_dir/test/{good,crack,scratch,spot}/000.png...,
    out_dir/ground_truth/<type>/000_mask.png... (8-bit gray PNGs, masks 0/255), and
    out_dir/demo_settings.json. The files are written into a temporary sibling folder that is
    renamed to `out_dir` once complete. A non-empty `out_dir` is replaced only with
    `overwrite=True`, and only when it is itself a demo dataset.
    """
    out_dir = Path(out_dir)
    arrays = generate_demo_arrays(image_size, n_train, n_test_good, n_test_defect, texture, seed)
    settings = {
        "texture": texture,
        "image_size": image_size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
        "defect_types": list(DEFECT_TYPES),
        "seed": seed,
        "train_rows_fraction": TRAIN_ROWS_FRACTION,
        "crop_size": min(image_size, MAX_CROP),
        "defect_area_range": list(DEFECT_AREA_RANGE),
        "scikit_image_version": skimage.__version__,
    }
    with writing_dataset(out_dir, settings, SETTINGS_FILE, "demo", overwrite) as staging:
        _write_pngs(staging / "train" / "good", arrays.train_good)
        _write_pngs(staging / "test" / "good", arrays.test_good)
        for defect_type in DEFECT_TYPES:
            _write_pngs(staging / "test" / defect_type, arrays.defective[defect_type])
            masks = arrays.masks[defect_type].astype(np.uint8) * 255
            _write_pngs(staging / "ground_truth" / defect_type, masks, suffix="_mask")
    logger.info(
        "demo dataset (%s, %dpx) written to %s: %d train, %d test good, %d x %s",
        texture,
        image_size,
        out_dir,
        n_train,
        n_test_good,
        n_test_defect,
        "/".join(DEFECT_TYPES),
    )
    return out_dir
