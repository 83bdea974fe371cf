"""Generated datasets in the MVTec AD layout: procedural textures of one product
(processing.data.textures) with synthetic defects (processing.data.synthetic_defects) and masks.
Nothing is downloaded.

- **high-resolution** (:func:`make_highres_dataset`): 8-bit gray images of 1536 px (any size >= 32,
  square or WIDTHxHEIGHT: 1024x256 makes elongated parts) with small defects of 5-30 px, one test
  folder per defect kind (scratch, crack, spot, stain, missing_material, added_material, brightness).
- **colour** (:func:`make_color_dataset`): 8-bit RGB images (256 px) whose defects change only the
  hue: every defect pixel keeps the luminance 0.2125 R + 0.7154 G + 0.0721 B of the pixel it
  replaces (to float precision; after rounding to 8 bits the gray images with and without the
  defect differ by at most 1/255), so a model that reads the images in grayscale cannot see them.
  Test folders ``hue_spot``, ``hue_scratch``, ``hue_stain`` (the outline of the change).

Every image has its own random generator, seeded by (seed, folder, index): the same arguments
give the same files, and changing one folder's count leaves the other folders' images as they
were. Layout::

    <out>/train/good/000.png ...
    <out>/test/good/000.png ...
    <out>/test/<type>/000.png ...
    <out>/ground_truth/<type>/000_mask.png ...      0/255, the defect's mask (see synthetic_defects)
    <out>/defects.csv                                what was drawn into each test image
    <out>/<highres|color>_settings.json              the arguments, the product, the counts
"""

from __future__ import annotations

import csv
import logging
import os
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.progress import progress_bar
from processing.data.images import DatasetError, writing_dataset
from processing.data.synthetic_defects import GRAY_DEFECT_KINDS, MIN_IMAGE_SIDE, DefectParams, max_defect_size, random_defect
from processing.data.textures import ProductStyle, colorize, product_texture

logger = logging.getLogger(__name__)

HIGHRES_SETTINGS_FILE = "highres_settings.json"
COLOR_SETTINGS_FILE = "color_settings.json"
DEFECTS_FILE = "defects.csv"
HIGHRES_DEFECT_TYPES = GRAY_DEFECT_KINDS
# Test folder -> how its colour change is drawn (random_defect arguments besides kind="color").
COLOR_DEFECT_TYPES = {
    "hue_spot": {"shape": "blob"},
    "hue_scratch": {"shape": "line"},
    "hue_stain": {"shape": "stain", "soft": True},
}
HIGHRES_DEFAULTS = dict(image_size=1536, n_train=60, n_test_good=20, n_test_defect=10, defect_size_range=(5, 30))
COLOR_DEFAULTS = dict(image_size=256, n_train=60, n_test_good=20, n_test_defect=10, defect_size_range=(12, 64))
TRAIN_FOLDER, TEST_GOOD_FOLDER = "train/good", "test/good"


@dataclass
class GeneratedImage:
    """One image of a generated dataset: uint8 (H, W) gray or (H, W, 3) RGB; for a defective test
    image also the image before the defect, its mask bool (H, W) and what was drawn."""

    folder: str
    index: int
    image: np.ndarray
    clean: np.ndarray | None = None
    mask: np.ndarray | None = None
    defect: DefectParams | None = None

    @property
    def name(self) -> str:
        return f"{self.index:03d}.png"

    @property
    def defect_type(self) -> str | None:
        return self.folder.split("/", 1)[1] if self.defect is not None else None


@dataclass(frozen=True)
class _Spec:
    """What a dataset kind draws: gray or RGB, and the random_defect arguments per test folder."""

    color: bool
    defects: dict[str, dict]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _image_rng(seed: int, folder: str, index: int) -> np.random.Generator:
    # crc32 of the folder name, not its position: adding a defect type changes no other image.
    return np.random.default_rng([seed, zlib.crc32(folder.encode()), index])


def product_style(seed: int) -> ProductStyle:
    """The product every image of a dataset generated with `seed` shows."""
    return ProductStyle.sample(np.random.default_rng([seed, 0]))


def _generate_one(spec: _Spec, style: ProductStyle, size: ImageSize, size_range, seed: int, folder: str, index: int) -> GeneratedImage:
    rng = _image_rng(seed, folder, index)
    clean = product_texture(tuple(size), style, rng)
    if spec.color:
        clean = colorize(clean, style, rng)
    if folder in (TRAIN_FOLDER, TEST_GOOD_FOLDER):
        return GeneratedImage(folder, index, _to_uint8(clean))
    arguments = spec.defects[folder.split("/", 1)[1]]
    defective, mask, params = random_defect(clean, rng, size_range=size_range, **arguments)
    return GeneratedImage(folder, index, _to_uint8(defective), _to_uint8(clean), mask, params)


def _check_count(value, flag: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"{flag} {value!r} not supported: expected an integer >= {minimum}")
    return int(value)


def _check_arguments(image_size, n_train, n_test_good, n_test_defect, defect_types, known, defect_size_range, seed):
    try:
        image_size = ImageSize.of(image_size, "--image-size")
    except UserError as error:
        raise DatasetError(str(error)) from None
    if min(image_size) < MIN_IMAGE_SIDE:
        raise DatasetError(f"--image-size {image_size} not supported: expected an integer >= {MIN_IMAGE_SIDE} (for each side)")
    counts = (
        _check_count(n_train, "--n-train", 1),
        _check_count(n_test_good, "--n-test-good", 0),
        _check_count(n_test_defect, "--n-test-defect", 0),
    )
    _check_count(seed, "--seed", 0)
    types = tuple(defect_types)
    unknown = [t for t in types if t not in known]
    if not types or unknown or len(set(types)) != len(types):
        raise DatasetError(f"--defect-types {list(types)} not supported: expected distinct names from {', '.join(known)}")
    largest = max_defect_size(tuple(image_size))
    try:
        low, high = (float(v) for v in defect_size_range)
    except (TypeError, ValueError):
        raise DatasetError(f"--defect-size-range {defect_size_range!r} not supported: expected MIN MAX in pixels") from None
    if not 3 <= low <= high <= largest:
        raise DatasetError(
            f"--defect-size-range {low:g} {high:g} not supported: expected 3 <= MIN <= MAX <= {largest:g} px "
            f"for --image-size {image_size}"
        )
    return image_size, counts, types, (low, high)


def _jobs(n_train: int, n_test_good: int, n_test_defect: int, defect_types: Sequence[str]) -> list[tuple[str, int]]:
    folders = [(TRAIN_FOLDER, n_train), (TEST_GOOD_FOLDER, n_test_good)]
    folders += [(f"test/{t}", n_test_defect) for t in defect_types]
    return [(folder, index) for folder, count in folders for index in range(count)]


def _generated(spec: _Spec, kind: str, image_size, n_train, n_test_good, n_test_defect, defect_types, defect_size_range, seed):
    """(checked arguments as settings, the jobs, a function job -> GeneratedImage)."""
    image_size, counts, types, size_range = _check_arguments(
        image_size, n_train, n_test_good, n_test_defect, defect_types, tuple(spec.defects), defect_size_range, seed
    )
    style = product_style(seed)
    settings = {
        "kind": kind,
        "image_size": image_size.to_json(),
        "n_train": counts[0],
        "n_test_good": counts[1],
        "n_test_defect": counts[2],
        "defect_types": list(types),
        "defect_size_range": list(size_range),
        "seed": seed,
        "product": style.as_dict(),
        "numpy_version": np.__version__,
        "opencv_version": cv2.__version__,
    }
    jobs = _jobs(*counts, types)

    def generate(job: tuple[str, int]) -> GeneratedImage:
        return _generate_one(spec, style, image_size, size_range, seed, *job)

    return settings, jobs, generate


HIGHRES_SPEC = _Spec(color=False, defects={kind: {"kinds": (kind,)} for kind in HIGHRES_DEFECT_TYPES})
COLOR_SPEC = _Spec(color=True, defects={name: {"kinds": ("color",), **args} for name, args in COLOR_DEFECT_TYPES.items()})


def highres_images(
    image_size: int = HIGHRES_DEFAULTS["image_size"],
    n_train: int = HIGHRES_DEFAULTS["n_train"],
    n_test_good: int = HIGHRES_DEFAULTS["n_test_good"],
    n_test_defect: int = HIGHRES_DEFAULTS["n_test_defect"],
    defect_types: Sequence[str] = HIGHRES_DEFECT_TYPES,
    defect_size_range: tuple[float, float] = HIGHRES_DEFAULTS["defect_size_range"],
    seed: int = 0,
) -> Iterator[GeneratedImage]:
    """The images of the high-resolution gray dataset, one at a time (train, test good, then
    each defect type): the arguments are checked before the first is made."""
    _, jobs, generate = _generated(
        HIGHRES_SPEC, "highres", image_size, n_train, n_test_good, n_test_defect, defect_types, defect_size_range, seed
    )
    return map(generate, jobs)


def color_images(
    image_size: int = COLOR_DEFAULTS["image_size"],
    n_train: int = COLOR_DEFAULTS["n_train"],
    n_test_good: int = COLOR_DEFAULTS["n_test_good"],
    n_test_defect: int = COLOR_DEFAULTS["n_test_defect"],
    defect_types: Sequence[str] = tuple(COLOR_DEFECT_TYPES),
    defect_size_range: tuple[float, float] = COLOR_DEFAULTS["defect_size_range"],
    seed: int = 0,
) -> Iterator[GeneratedImage]:
    """The images of the hue-only colour dataset, one at a time (see highres_images)."""
    _, jobs, generate = _generated(
        COLOR_SPEC, "color", image_size, n_train, n_test_good, n_test_defect, defect_types, defect_size_range, seed
    )
    return map(generate, jobs)


def _write_png(path: Path, image: np.ndarray) -> None:
    pixels = image[:, :, ::-1] if image.ndim == 3 else image  # cv2 writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels)):
        raise DatasetError(f"cannot write {path}")


def _write_dataset(out_dir, settings: dict, jobs, generate, settings_file: str, overwrite: bool) -> Path:
    out_dir = Path(out_dir)
    kind = settings["kind"]
    settings = {**settings, "counts": dict(Counter(folder for folder, _ in jobs))}
    with writing_dataset(out_dir, settings, settings_file, f"{kind} synthetic", overwrite) as staging:
        for folder in dict.fromkeys(folder for folder, _ in jobs):
            (staging / folder).mkdir(parents=True, exist_ok=True)
            if folder.startswith("test/") and folder != TEST_GOOD_FOLDER:
                (staging / "ground_truth" / folder.split("/", 1)[1]).mkdir(parents=True, exist_ok=True)
        rows = []
        with progress_bar(total=len(jobs), desc=f"{kind} dataset", unit="img") as progress:
            for item in map(generate, jobs):
                _write_png(staging / item.folder / item.name, item.image)
                if item.defect is not None:
                    mask_name = f"{Path(item.name).stem}_mask.png"
                    _write_png(staging / "ground_truth" / item.defect_type / mask_name, item.mask.astype(np.uint8) * 255)
                    rows.append(_defect_row(item))
                progress.update()
        with open(staging / DEFECTS_FILE, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=DEFECT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    logger.info("%s dataset (%s px) written to %s: %s", kind, ImageSize.of(settings["image_size"]), out_dir, settings["counts"])
    return out_dir


DEFECT_COLUMNS = ["file", "defect_type", "kind", "shape", "size_px", "contrast", "soft", "center_row", "center_col", "mask_area"]


def _defect_row(item: GeneratedImage) -> dict:
    params = item.defect.as_dict()
    return {
        "file": f"{item.folder}/{item.name}",
        "defect_type": item.defect_type,
        "kind": params["kind"],
        "shape": params["shape"],
        "size_px": params["size"],
        "contrast": params["contrast"],
        "soft": params["soft"],
        "center_row": params["center"][0],
        "center_col": params["center"][1],
        "mask_area": int(item.mask.sum()),
    }


def make_highres_dataset(
    out_dir: str | os.PathLike,
    image_size: int = HIGHRES_DEFAULTS["image_size"],
    n_train: int = HIGHRES_DEFAULTS["n_train"],
    n_test_good: int = HIGHRES_DEFAULTS["n_test_good"],
    n_test_defect: int = HIGHRES_DEFAULTS["n_test_defect"],
    defect_types: Sequence[str] = HIGHRES_DEFECT_TYPES,
    defect_size_range: tuple[float, float] = HIGHRES_DEFAULTS["defect_size_range"],
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the high-resolution gray dataset into `out_dir` (through a temporary sibling folder
    renamed when complete) and return its path. A non-empty `out_dir` is replaced only with
    `overwrite`, and only when it is itself a dataset written by this function."""
    settings, jobs, generate = _generated(
        HIGHRES_SPEC, "highres", image_size, n_train, n_test_good, n_test_defect, defect_types, defect_size_range, seed
    )
    return _write_dataset(out_dir, settings, jobs, generate, HIGHRES_SETTINGS_FILE, overwrite)


def make_color_dataset(
    out_dir: str | os.PathLike,
    image_size: int = COLOR_DEFAULTS["image_size"],
    n_train: int = COLOR_DEFAULTS["n_train"],
    n_test_good: int = COLOR_DEFAULTS["n_test_good"],
    n_test_defect: int = COLOR_DEFAULTS["n_test_defect"],
    defect_types: Sequence[str] = tuple(COLOR_DEFECT_TYPES),
    defect_size_range: tuple[float, float] = COLOR_DEFAULTS["defect_size_range"],
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the hue-only colour dataset into `out_dir` (as make_highres_dataset)."""
    settings, jobs, generate = _generated(
        COLOR_SPEC, "color", image_size, n_train, n_test_good, n_test_defect, defect_types, defect_size_range, seed
    )
    return _write_dataset(out_dir, settings, jobs, generate, COLOR_SETTINGS_FILE, overwrite)
