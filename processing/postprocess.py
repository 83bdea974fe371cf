"""Post-processing of residual maps before segmentation and scoring.

A residual map of a textured surface is noisy: single pixels where the reconstruction misses a
grain of texture are as bright as pixels of a real defect. A Gaussian smoothing averages that
noise out while a defect, a connected patch of high residuals, keeps most of its level. Finetuning
and test apply the same smoothing (finetuning records its sigma; test reads it from there).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Kernel radius in sigmas (scipy.ndimage.gaussian_filter's default `truncate`).
TRUNCATE = 4.0


def check_sigma(sigma, flag: str = "--smoothing") -> float:
    """`sigma` as a float >= 0 (0: no smoothing); ValueError naming `flag` otherwise."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} {sigma!r}: expected a number of pixels >= 0") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{flag} {sigma!r}: expected a number of pixels >= 0")
    return value


def smooth_resmaps(resmaps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth every map of a batch in its plane.

    Parameters
    ----------
    resmaps : array of shape (N, H, W), float or uint8
    sigma : float >= 0
        Standard deviation in pixels; 0 returns `resmaps` unchanged (the same object).

    Returns
    -------
    array of the shape and dtype of `resmaps`: for float input,
    ``scipy.ndimage.gaussian_filter(resmaps, (0, sigma, sigma), mode="reflect", truncate=4)``
    up to rounding; uint8 maps are smoothed in float64 and rounded back to the nearest integer.
    Smoothing is an average, so the values stay within the input's range.
    """
    sigma = check_sigma(sigma, "sigma")
    resmaps = np.asarray(resmaps)
    if resmaps.ndim != 3:
        raise ValueError(f"resmaps: expected an array of shape (N, H, W), got shape {resmaps.shape}")
    if sigma == 0 or resmaps.size == 0:
        return resmaps
    if resmaps.dtype != np.uint8 and resmaps.dtype.kind != "f":
        raise ValueError(f"resmaps: expected float or uint8 maps, got dtype {resmaps.dtype}")
    radius = int(TRUNCATE * sigma + 0.5)
    ksize = 2 * radius + 1
    # cv2's BORDER_REFLECT (d c b a | a b c d) is scipy's "reflect"; it needs ksize//2 < H, W, so
    # pad by hand when a map is smaller than the kernel.
    count, height, width = resmaps.shape
    work = resmaps.astype(np.float64)
    pad = max(0, radius - min(height, width) + 1)
    if pad:
        work = np.pad(work, ((0, 0), (radius, radius), (radius, radius)), mode="symmetric")
    out = np.empty_like(work)
    for index in range(count):
        cv2.GaussianBlur(work[index], (ksize, ksize), sigmaX=sigma, sigmaY=sigma, dst=out[index],
                         borderType=cv2.BORDER_REFLECT)
    if pad:
        out = out[:, radius:-radius, radius:-radius]
    if resmaps.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(resmaps.dtype, copy=False)
