"""Run a trained autoencoder over image files in batches and turn its output into residual maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from processing.data.images import iter_batches
from processing.maps.resmaps import MODEL_MAP_METHODS, calculate_resmaps


@dataclass
class ResmapBatch:
    paths: list[Path]
    images: np.ndarray  # (B, H, W, C) float32 in [0, 1], the model input
    reconstructions: np.ndarray  # (B, H, W, C) float32
    resmaps: np.ndarray  # (B, H, W) float64 or uint8


def iter_resmaps(
    model,
    paths: list[Path],
    color_mode: str,
    size: int,
    method: str,
    dtype: str,
    batch_size: int = 16,
) -> Iterator[ResmapBatch]:
    """Yield residual maps batch by batch, so memory does not grow with the number of images."""
    for batch_paths, images in iter_batches(paths, color_mode, size, batch_size):
        reconstructions = reconstruct(model, images, batch_size)
        yield ResmapBatch(list(batch_paths), images, reconstructions, maps_from_output(images, reconstructions, method, dtype))


def reconstruct(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's output for one batch; a short last batch is padded so the graph is traced once."""
    n = len(images)
    if n < batch_size:
        padding = np.zeros((batch_size - n, *images.shape[1:]), dtype=images.dtype)
        images = np.concatenate([images, padding])
    return np.asarray(model.predict_on_batch(images), dtype=np.float32)[:n]


def maps_from_output(images: np.ndarray, outputs: np.ndarray, method: str, dtype: str) -> np.ndarray:
    """Anomaly maps (N, H, W) from a batch and the model's output for it.

    Pixel methods ('ssim', 'l2') compare the input with its reconstruction; 'feature' takes the
    model's output as the map (models that output their own anomaly map, e.g. featureCAE).
    """
    if method in MODEL_MAP_METHODS:
        if outputs.shape[-1] != 1 or outputs.shape[:3] != images.shape[:3]:
            raise ValueError(
                f"--method {method}: the model outputs {outputs.shape[1:]}, not an anomaly map of its input size; "
                "use ssim or l2 maps for reconstruction models"
            )
        return outputs[..., 0].astype(np.float64)
    if outputs.shape != images.shape:
        raise ValueError(f"--method {method}: the model outputs {outputs.shape[1:]}, not a reconstruction of its input; use --method feature")
    return calculate_resmaps(images, outputs, method=method, dtype=dtype)


def compute_resmaps(model, paths, color_mode, size, method, dtype, batch_size: int = 16) -> np.ndarray:
    """All residual maps of `paths` as one (N, H, W) array (for the few images finetuning needs)."""
    batches = [batch.resmaps for batch in iter_resmaps(model, paths, color_mode, size, method, dtype, batch_size)]
    if not batches:
        return np.zeros((0, size, size), dtype=np.uint8 if dtype == "uint8" else np.float64)
    return np.concatenate(batches)
