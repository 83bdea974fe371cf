"""Overlays and masks at an image's original size: what predict.py and its report draw."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import write_bytes_atomic

PREDICTED_COLOR = (0, 0, 255)  # BGR red, as test.py's overlays


def to_display(image: np.ndarray) -> np.ndarray:
    """float (H, W, 1 or 3) in [0, 1] -> uint8 BGR (H, W, 3) for cv2."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if pixels.shape[2] == 1:
        return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)


def draw_overlay(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image (BGR uint8) with the predicted defect outlined in red."""
    overlay = to_display(image)
    if mask is not None and mask.any():
        thickness = max(1, round(max(mask.shape) / 256))
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(overlay, contours, -1, PREDICTED_COLOR, thickness)
    return overlay


def mask_at_original_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A model-size mask at the image's size, nearest neighbour (as test.py's masks)."""
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG through a temporary file and a rename; an OSError names `path` (a full disk too)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG (an image of shape {image.shape}, {image.dtype})")
    write_bytes_atomic(path, encoded.tobytes())
