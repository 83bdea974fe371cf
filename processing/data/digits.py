"""A small anomaly-detection dataset in the MVTec AD layout, made from the handwritten digits that
ship with scikit-learn (``sklearn.datasets.load_digits``: 1797 images of 8x8 pixels, values
0..16; nothing is downloaded).

Each digit is scaled to [0, 1], enlarged to 28x28 with bilinear interpolation (``cv2.INTER_LINEAR``,
the same as ``skimage.transform.resize(order=1, mode="edge")``) and stored as 8-bit gray. Every
file is named after its index into ``load_digits`` (``00042.png``), and every index appears in
exactly one split:

- ``train/good``: a fraction ``train_fraction`` of the normal digits, shuffled with ``seed``;
- ``test/good`` and ``test/noise_<sigma>``: the remaining normal digits, dealt evenly into these
  folders; a ``noise_<sigma>`` image is its digit plus Gaussian noise of standard deviation
  ``sigma`` (on the [0, 1] scale), clipped to [0, 1];
- ``test/digit_<k>``: in the one-class setting (``normal_digits`` given), every digit of a class
  not in ``normal_digits``, unchanged.

``dataset_settings.json`` in the dataset folder records the settings and the count per folder.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import sklearn
from sklearn.datasets import load_digits

from processing.data.images import DatasetError, writing_dataset

logger = logging.getLogger(__name__)

IMAGE_SIZE = 28
DIGIT_CLASSES = tuple(range(10))
SOURCE_MAX_VALUE = 16.0  # load_digits pixel values are 0..16
DEFAULT_NOISE_SIGMAS = (0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_TRAIN_FRACTION = 0.5
SETTINGS_FILE = "dataset_settings.json"
TRAIN_FOLDER = "train/good"
TEST_GOOD_FOLDER = "test/good"


def noise_class_name(sigma: float) -> str:
    """Test class of the images with noise `sigma`: ``noise_0.05``, ``noise_0.1``, ``noise_0.5``."""
    return f"noise_{float(sigma):g}"


def digit_class_name(digit: int) -> str:
    """Test class of the anomalous digit `digit` in the one-class setting: ``digit_7``."""
    return f"digit_{int(digit)}"


def upsample_digits(images: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Scale digits from 0..16 to [0, 1] and enlarge them bilinearly.

    images: float (N, h, w) with values in [0, 16] (``load_digits().images``).
    Returns float32 (N, size, size) in [0, 1] (pixel centres aligned as in
    ``skimage.transform.resize(order=1, mode="edge", anti_aliasing=False)``).
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise DatasetError(f"digit images of shape {images.shape} not supported: expected (N, height, width)")
    scaled = images.astype(np.float32) / np.float32(SOURCE_MAX_VALUE)
    out = np.empty((len(scaled), size, size), dtype=np.float32)
    for index, image in enumerate(scaled):
        out[index] = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0, out=out)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (values outside are clipped) -> uint8 0..255, rounded to nearest."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_digit_images(size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All scikit-learn digits, enlarged: (uint8 (1797, size, size) images, int64 (1797,) labels)."""
    digits = load_digits()
    return to_uint8(upsample_digits(digits.images, size)), np.asarray(digits.target, dtype=np.int64)


def add_gaussian_noise(
    images: np.ndarray, sigma: float, rng: np.random.Generator, clip: bool = True
) -> np.ndarray:
    """`images` plus independent Gaussian noise of standard deviation `sigma` per pixel.

    images: float array of any shape with values in [0, 1]. Returns float64 of the same shape,
    clipped to [0, 1] when `clip` (with the same `rng` state, the clipped result is exactly
    ``np.clip`` of the unclipped one).
    """
    if not (isinstance(sigma, (int, float, np.number)) and math.isfinite(sigma) and sigma >= 0):
        raise DatasetError(f"noise sigma {sigma!r} not supported: expected a finite number >= 0")
    noisy = np.asarray(images, dtype=np.float64) + float(sigma) * rng.standard_normal(np.shape(images))
    return np.clip(noisy, 0.0, 1.0, out=noisy) if clip else noisy


@dataclass
class DigitSplits:
    """Indices into ``load_digits`` per dataset folder, each int64 (n,) sorted, pairwise disjoint.

    ``noise`` maps a noise sigma to its digits; ``anomalous`` maps a digit class not in the
    normal ones to all of its images.
    """

    train_good: np.ndarray
    test_good: np.ndarray
    noise: dict[float, np.ndarray] = field(default_factory=dict)
    anomalous: dict[int, np.ndarray] = field(default_factory=dict)

    def folders(self) -> dict[str, np.ndarray]:
        """Relative folder ("train/good", "test/noise_0.1", "test/digit_3", ...) -> indices."""
        out = {TRAIN_FOLDER: self.train_good, TEST_GOOD_FOLDER: self.test_good}
        out.update({f"test/{noise_class_name(s)}": idx for s, idx in self.noise.items()})
        out.update({f"test/{digit_class_name(d)}": idx for d, idx in self.anomalous.items()})
        return out


def _check_normal_digits(normal_digits: Sequence[int] | None) -> tuple[int, ...]:
    if normal_digits is None:
        return DIGIT_CLASSES
    digits = tuple(normal_digits)
    if not digits or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in DIGIT_CLASSES for d in digits
    ):
        raise DatasetError(f"--digits {list(digits)}: expected one or more digits from 0 to 9")
    if len(set(digits)) != len(digits):
        raise DatasetError(f"--digits {list(digits)}: a digit is given twice")
    return tuple(sorted(int(d) for d in digits))


def _check_noise_sigmas(noise_sigmas: Sequence[float]) -> tuple[float, ...]:
    sigmas = tuple(noise_sigmas)
    for sigma in sigmas:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)) or not (
            math.isfinite(sigma) and sigma > 0
        ):
            raise DatasetError(f"--noise-sigmas {list(sigmas)}: expected finite numbers > 0, got {sigma!r}")
    names = [noise_class_name(s) for s in sigmas]
    if len(set(names)) != len(names):
        raise DatasetError(f"--noise-sigmas {list(sigmas)}: two sigmas give the same folder name")
    return tuple(float(s) for s in sigmas)


def split_digit_indices(
    labels: np.ndarray,
    normal_digits: Sequence[int] | None = None,
    noise_sigmas: Sequence[float] = DEFAULT_NOISE_SIGMAS,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
) -> DigitSplits:
    """Split digit indices into the dataset folders (see the module docstring).

    labels: int (N,) digit class of each image. The normal digits (all classes when
    `normal_digits` is None) are shuffled with `seed`; round(train_fraction * n) go to training
    and the rest are dealt into test/good and one folder per noise sigma, as evenly as possible
    (np.array_split). Raises DatasetError when a folder would be empty.
    """
    labels = np.asarray(labels)
    normal = _check_normal_digits(normal_digits)
    sigmas = _check_noise_sigmas(noise_sigmas)
    if not (isinstance(train_fraction, (int, float, np.number)) and 0.0 < train_fraction < 1.0):
        raise DatasetError(f"--train-fraction {train_fraction!r}: expected a fraction strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    normal_indices = rng.permutation(np.flatnonzero(np.isin(labels, normal)))
    n_train = round(train_fraction * len(normal_indices))
    held_out = normal_indices[n_train:]
    groups = np.array_split(held_out, 1 + len(sigmas))
    if n_train == 0 or any(len(group) == 0 for group in groups):
        raise DatasetError(
            f"--train-fraction {train_fraction}: {len(normal_indices)} normal digits give {n_train} training "
            f"and {len(held_out)} test images for {1 + len(sigmas)} test folders; expected at least one each"
        )
    return DigitSplits(
        train_good=np.sort(normal_indices[:n_train]),
        test_good=np.sort(groups[0]),
        noise={sigma: np.sort(group) for sigma, group in zip(sigmas, groups[1:])},
        anomalous={d: np.flatnonzero(labels == d) for d in DIGIT_CLASSES if d not in normal},
    )


@dataclass
class DigitsArrays:
    """A digits dataset in memory. Each dict is keyed by relative folder ("train/good", ...).

    ``indices``: int64 (n,) indices into load_digits (the file names); ``images``: uint8
    (n, 28, 28) as written; ``clean``: uint8 (n, 28, 28), the images before noise was added
    (equal to ``images`` outside the noise folders); ``labels``: int64 (n,) digit classes.
    """

    indices: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    clean: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    settings: dict


def generate_digits_arrays(
    normal_digits: Sequence[int] | None = None,
    noise_sigmas: Sequence[float] = DEFAULT_NOISE_SIGMAS,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
) -> DigitsArrays:
    """Build the dataset in memory; the same arguments give the same arrays."""
    digit_images, labels = load_digit_images()
    splits = split_digit_indices(labels, normal_digits, noise_sigmas, train_fraction, seed)
    folders = splits.folders()
    noise_rng = np.random.default_rng([seed, 1])  # independent of the split's stream
    images, clean = {}, {}
    for folder, indices in folders.items():
        clean[folder] = digit_images[indices]
        images[folder] = clean[folder]
    for sigma, indices in splits.noise.items():
        folder = f"test/{noise_class_name(sigma)}"
        noisy = add_gaussian_noise(digit_images[indices] / 255.0, sigma, noise_rng)
        images[folder] = to_uint8(noisy)
    settings = {
        "source": "sklearn.datasets.load_digits",
        "image_size": IMAGE_SIZE,
        "interpolation": "bilinear (cv2.INTER_LINEAR), values 0..16 scaled to 0..255",
        "normal_digits": list(_check_normal_digits(normal_digits)),
        "anomalous_digits": sorted(splits.anomalous),
        "noise_sigmas": list(splits.noise),
        "noise": "x + sigma * N(0, 1) on the [0, 1] scale, clipped to [0, 1]",
        "train_fraction": float(train_fraction),
        "seed": int(seed),
        "counts": {folder: int(len(indices)) for folder, indices in folders.items()},
        "scikit_learn_version": sklearn.__version__,
        "opencv_version": cv2.__version__,
    }
    return DigitsArrays(
        indices=folders,
        images=images,
        clean=clean,
        labels={folder: labels[indices] for folder, indices in folders.items()},
        settings=settings,
    )


def _write_pngs(folder: Path, indices: np.ndarray, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in zip(indices, images):
        path = folder / f"{int(index):05d}.png"
        if not cv2.imwrite(str(path), image):
            raise DatasetError(f"cannot write {path}")


def make_digits_dataset(
    out_dir: str | os.PathLike,
    normal_digits: Sequence[int] | None = None,
    noise_sigmas: Sequence[float] = DEFAULT_NOISE_SIGMAS,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the digits dataset (see the module docstring) into `out_dir` and return its path.

    Files are written into a temporary sibling folder that is renamed to `out_dir` once complete.
    A non-empty `out_dir` is replaced only with `overwrite=True`, and only when it holds a
    dataset_settings.json (i.e. is itself a digits dataset).
    """
    out_dir = Path(out_dir)
    arrays = generate_digits_arrays(normal_digits, noise_sigmas, train_fraction, seed)
    with writing_dataset(out_dir, arrays.settings, SETTINGS_FILE, "digits", overwrite) as staging:
        for folder, indices in arrays.indices.items():
            _write_pngs(staging / folder, indices, arrays.images[folder])
    logger.info("digits dataset written to %s: %s", out_dir, arrays.settings["counts"])
    return out_dir
