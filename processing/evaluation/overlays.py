"""Overlays and masks at an image's original size: what predict.py and its report draw."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import write_bytes_atomic

PREDICTED_COLOR = (0, 0, 255)  # BGR red, as test.py's overlays
THRESHOLD_COLOR = (255, 255, 255)  # BGR white: where the map is above the threshold, on a heat map
HEATMAP_COLORMAP = cv2.COLORMAP_INFERNO  # perceptually uniform, dark to bright (and readable in grey print)


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


def draw_heatmap(image: np.ndarray, anomaly_map: np.ndarray, threshold: float, scale: tuple[float, float]) -> np.ndarray:
    """The image (BGR uint8, its own size) under its anomaly map as a heat map, with the contour of
    where the map is above `threshold` in white.

    The map (any size: the model's, or the image's for a tiled model) is resized bilinearly to the
    image; `scale` (low, high) maps onto the colormap's ends, the same for every image of a result
    (the detector's ``heatmap_scale``: the threshold in the middle), so that two heat maps compare.
    """
    overlay = to_display(image)
    height, width = overlay.shape[:2]
    values = np.asarray(anomaly_map, dtype=np.float64)
    if values.shape != (height, width):
        values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    low, high = scale
    levels = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    colored = cv2.applyColorMap(np.rint(levels * 255).astype(np.uint8), HEATMAP_COLORMAP)
    heat = cv2.addWeighted(overlay, 0.5, colored, 0.5, 0.0)
    above = (values > threshold).astype(np.uint8)
    if above.any():
        contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(heat, contours, -1, THRESHOLD_COLOR, max(1, round(max(height, width) / 256)))
    return heat


def mask_at_original_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A model-size mask at the image's size, nearest neighbour (as test.py's masks)."""
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG through a temporary file and a rename; an OSError names `path` (a full disk too)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"cannot encode {path} as PNG (an image of shape {image.shape}, {image.dtype})")
    write_bytes_atomic(path, encoded.tobytes())
