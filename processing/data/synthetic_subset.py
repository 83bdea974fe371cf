"""A finetuning subset without real defects: held-out good images with synthetic defects drawn in.

A line that has just started has good parts and no defective ones yet. finetune.py then chooses its
(min_area, threshold) pair on synthetic defects (processing/data/synthetic_defects.py: scratches,
cracks, spots, stains, missing and added material, brightness and, for colour models, colour
changes, of many sizes) drawn into the model's validation images: images it was not trained on,
whose clean versions fix the thresholds. The kinds are drawn in turn and every parameter at random
from ranges that are fractions of the image side, the same for every dataset: nothing here looks at
a test set.

The images are written at their original size as 16-bit PNG (8-bit values survive exactly), with
their masks and ``defects.csv``, so the toolkit reads them like any other file and a user can look
at what the decision was chosen on.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autoencoder.errors import UserError
from processing.data.images import read_image
from processing.data.synthetic_defects import DEFECT_KINDS, GRAY_DEFECT_KINDS, random_defect

logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
MASKS_DIR = "masks"
TABLE_FILE = "defects.csv"
MIN_IMAGES = 60  # at least this many defective images, whatever the number of validation images
MAX_IMAGES = 400


@dataclass(frozen=True)
class SyntheticImage:
    path: Path
    mask: Path
    source: Path
    kind: str


def synthetic_count(n_sources: int) -> int:
    """How many defective images: two per validation image, at least MIN_IMAGES, at most MAX_IMAGES."""
    return int(min(MAX_IMAGES, max(MIN_IMAGES, 2 * n_sources)))


def draw_synthetic_defects(
    sources: list[Path], out_dir: Path, color_mode: str, seed: int, count: int | None = None
) -> list[SyntheticImage]:
    """Write `count` (default :func:`synthetic_count`) defective copies of the `sources` (in turn)
    into `out_dir`/images, their masks into `out_dir`/masks and a table of what was drawn."""
    if not sources:
        raise UserError("synthetic defects: no held-out good image to draw them into")
    count = synthetic_count(len(sources)) if count is None else int(count)
    kinds = DEFECT_KINDS if color_mode == "rgb" else GRAY_DEFECT_KINDS
    rng = np.random.default_rng(seed)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for index in range(count):
        source, kind = sources[index % len(sources)], kinds[index % len(kinds)]
        image = read_image(source, color_mode)
        defective, mask, params = random_defect(image, rng, kinds=(kind,))
        name = f"{index:04d}_{kind}_{source.stem}"
        path, mask_path = out_dir / IMAGES_DIR / f"{name}.png", out_dir / MASKS_DIR / f"{name}_mask.png"
        write_png16(path, defective)
        if not cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255):
            raise OSError(f"cannot write {mask_path}")
        written.append(SyntheticImage(path, mask_path, source, kind))
        rows.append({"file": f"{IMAGES_DIR}/{path.name}", "source": str(source), **params.as_dict()})
    with open(out_dir / TABLE_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    logger.info("drew %d synthetic defects (%s) into %d held-out good images", count, ", ".join(kinds), len(sources))
    return written


def write_png16(path: Path, image: np.ndarray) -> None:
    """float (H, W, 1 or 3) in [0, 1] -> a 16-bit PNG (RGB written in OpenCV's BGR order)."""
    pixels = np.clip(np.rint(image * 65535.0), 0, 65535).astype(np.uint16)
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels[:, :, ::-1]
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"cannot write {path}")
