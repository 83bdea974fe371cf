"""The colour mode a dataset's images call for: RGB when they carry colour, grayscale otherwise.

train.py's ``-c auto`` (the default) decodes a sample of the training images: an image carries
colour when its channels differ somewhere by more than what JPEG's chroma noise leaves in a gray
photograph saved as colour. A colour texture with stains of another hue is then trained in RGB; a
gray part saved as RGB stays grayscale (three equal channels would only triple the input).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE = 24  # images decoded, spread over the sorted list
CHANNEL_TOLERANCE = 6 / 255  # a channel difference below this is compression noise, not colour
COLOUR_FRACTION = 0.002  # an image carries colour when this share of its pixels differ by more


def carries_colour(path: Path) -> bool:
    """Whether one image file has pixels whose colour channels differ; an unreadable file is a
    one-line DatasetError naming it (before TensorFlow, not after it)."""
    from processing.data.images import decode_image  # the toolkit's one reader: orientation, truncated JPEG

    raw = decode_image(path)
    if raw.ndim != 3 or raw.shape[2] < 3:
        return False
    scale = 255.0 if raw.dtype == np.uint8 else 65535.0
    bgr = raw[:, :, :3].astype(np.float32) / scale
    spread = bgr.max(axis=2) - bgr.min(axis=2)
    return float(np.mean(spread > CHANNEL_TOLERANCE)) > COLOUR_FRACTION


def detect_color_mode(paths: list[Path], sample: int = SAMPLE) -> str:
    """``"rgb"`` when any of a sample of `paths` carries colour, else ``"grayscale"``."""
    if not paths:
        return "grayscale"
    ordered = sorted(paths)
    picked = [ordered[int(i)] for i in np.unique(np.linspace(0, len(ordered) - 1, min(sample, len(ordered))).round())]
    return "rgb" if any(carries_colour(path) for path in picked) else "grayscale"
