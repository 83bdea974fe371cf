"""Residual maps: where a reconstruction differs from its input image.

All functions take batches of images, float values in [0, 1], shaped (N, H, W), (N, H, W, 1) or
(N, H, W, 3); RGB is converted to grayscale first. They compute in float64, on the whole batch
at once (in blocks of images to bound memory), and return (N, H, W) maps.

- SSIM residual map: ``1 - local SSIM``, the map of ``skimage.metrics.structural_similarity``
  with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``
  (11x11 Gaussian window, 'reflect' borders). It lies in [0, 2]: 0 where the images match,
  1 where they are unrelated, above 1 only where their local structure is anti-correlated.
- L2 residual map: ``(input - prediction) ** 2``, in [0, 1].

:func:`calculate_resmaps` clips both to the fixed range :data:`RESMAP_RANGE` (so [0, 1]: an
anti-correlated patch counts as anomalous as an unrelated one) and can quantise them to uint8,
which is what thresholds and metrics elsewhere work on.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from tqdm import tqdm

from autoencoder import ssim as ssim_window
from autoencoder.errors import UserError
from autoencoder.progress import on_terminal

logger = logging.getLogger(__name__)

__all__ = [
    "GRAY_WEIGHTS",
    "RESMAP_METHODS",
    "RESMAP_DTYPES",
    "RESMAP_RANGE",
    "to_grayscale",
    "ssim_resmaps",
    "l2_resmaps",
    "calculate_resmaps",
    "resmap_value_range",
]

# The weights of skimage.color.rgb2gray (Rec. 709-like luminance), not BT.601's (0.299, 0.587, 0.114).
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)

RESMAP_METHODS = ("ssim", "l2")
RESMAP_DTYPES = ("float64", "uint8")
# Range calculate_resmaps clips float64 maps to; uint8 maps map it linearly onto 0..255.
RESMAP_RANGE = {"ssim": (0.0, 1.0), "l2": (0.0, 1.0)}

# Images per block are chosen so one block's four padded moment planes hold about this many
# pixels: with cv2's output and two scratch arrays, a block's float64 work stays near 5 MB,
# mostly in cache, whatever the batch size.
_BLOCK_PIXELS = 2**18
_PROGRESS_MIN_PIXELS = 2**26  # show a progress bar from about 1000 images of 256x256


_SSIM_TAPS = ssim_window.window_taps()
_SSIM_RADIUS = ssim_window.RADIUS
SSIM_C1, SSIM_C2 = ssim_window.C1, ssim_window.C2


def to_grayscale(imgs: np.ndarray) -> np.ndarray:
    """Grayscale copies of a batch of images.

    Parameters
    ----------
    imgs : array of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), float, values in [0, 1]

    Returns
    -------
    array of shape (N, H, W), float64. RGB is weighted by :data:`GRAY_WEIGHTS`, exactly as
    ``skimage.color.rgb2gray``; one-channel input is only reshaped.
    """
    imgs = np.asarray(imgs)
    if not np.issubdtype(imgs.dtype, np.floating):
        raise UserError(f"images: expected float values in [0, 1], got dtype {imgs.dtype}")
    if imgs.ndim == 3:
        return imgs.astype(np.float64)
    if imgs.ndim == 4 and imgs.shape[-1] == 1:
        return imgs[..., 0].astype(np.float64)
    if imgs.ndim == 4 and imgs.shape[-1] == 3:
        return imgs.astype(np.float64, copy=False) @ np.asarray(GRAY_WEIGHTS, dtype=np.float64)
    raise UserError(
        f"images: expected shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {imgs.shape}"
    )


def _grayscale_pair(imgs_input, imgs_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as (N, H, W) float64; ValueError naming both shapes when they differ."""
    imgs_input = np.asarray(imgs_input)
    imgs_pred = np.asarray(imgs_pred)
    if imgs_input.shape != imgs_pred.shape:
        raise UserError(
            f"inputs and predictions differ in shape: {imgs_input.shape} vs {imgs_pred.shape}"
        )
    return to_grayscale(imgs_input), to_grayscale(imgs_pred)


def _reflect_pad_rows_into(padded: np.ndarray, imgs: np.ndarray, radius: int) -> None:
    """Write `imgs` (B, H, W) into `padded` (B, H + 2r, W), mirrored above and below.

    The mirror repeats the edge row (d c b a | a b c d), scipy.ndimage's 'reflect' mode.
    """
    r = radius
    padded[:, r:-r] = imgs
    padded[:, :r] = imgs[:, r - 1 :: -1]
    padded[:, -r:] = imgs[:, : -r - 1 : -1]


class _SsimWorkspace:
    """Reusable float64 buffers for the SSIM maps of up to `block` images of H x W."""

    def __init__(self, block: int, height: int, width: int):
        r = _SSIM_RADIUS
        self.moments = np.empty((block, 4, height + 2 * r, width))
        self.first = np.empty((block, height, width))
        self.second = np.empty((block, height, width))


def _ssim_resmap_block(x: np.ndarray, y: np.ndarray, out: np.ndarray, work: _SsimWorkspace) -> None:
    """Write 1 - local SSIM of image pairs `x`, `y` (B, H, W) float64 into `out` (B, H, W)."""
    count, height, width = x.shape
    r = _SSIM_RADIUS
    moments = work.moments[:count]
    _reflect_pad_rows_into(moments[:, 0], x, r)
    _reflect_pad_rows_into(moments[:, 1], y, r)
    # Products commute with mirroring, so the padded products are the mirrored products.
    # SSIM needs var_x + var_y only, so E[x^2 + y^2] replaces E[x^2] and E[y^2].
    np.multiply(moments[:, 0], moments[:, 1], out=moments[:, 2])
    np.multiply(moments[:, 0], moments[:, 0], out=moments[:, 3])
    moments[:, 3] += moments[:, 1] * moments[:, 1]

    # All planes of the block stacked into one tall image: a single separable filter call.
    # Each plane carries its own mirrored rows above and below, so the rows kept below never
    # see a neighbouring plane. Left and right, cv2's BORDER_REFLECT is scipy's 'reflect'.
    stacked = moments.reshape(-1, width)
    filtered = cv2.sepFilter2D(
        stacked, cv2.CV_64F, _SSIM_TAPS, _SSIM_TAPS, borderType=cv2.BORDER_REFLECT
    ).reshape(moments.shape)[:, :, r:-r]
    mean_x, mean_y, mean_xy, mean_sq_sum = (filtered[:, i] for i in range(4))

    first, second = work.first[:count], work.second[:count]
    np.multiply(mean_x, mean_y, out=first)
    np.subtract(mean_xy, first, out=second)  # covariance
    second *= 2.0
    second += SSIM_C2
    first *= 2.0
    first += SSIM_C1
    np.multiply(first, second, out=out)  # numerator (2 mx my + C1)(2 cov + C2)
    np.multiply(mean_x, mean_x, out=first)
    np.multiply(mean_y, mean_y, out=second)
    first += second  # mx^2 + my^2
    np.subtract(mean_sq_sum, first, out=second)  # var_x + var_y
    second += SSIM_C2
    first += SSIM_C1
    first *= second  # denominator (mx^2 + my^2 + C1)(var_x + var_y + C2)
    out /= first
    np.subtract(1.0, out, out=out)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ssim_resmaps(imgs_input, imgs_pred, workers: int | None = None) -> np.ndarray:
    """SSIM residual maps, 1 - local SSIM, of a batch of image pairs.

    Parameters
    ----------
    imgs_input, imgs_pred : arrays of the same shape (N, H, W), (N, H, W, 1) or (N, H, W, 3)
        Float values in [0, 1]; RGB is converted with :func:`to_grayscale`. H, W >= 11.
    workers : int, optional
        Threads that share the blocks of images (default: the CPUs this process may use).

    Returns
    -------
    array of shape (N, H, W), float64, values in [0, 2]: per image,
    ``1 - structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0, full=True)[1]`` up to rounding (~1e-12).
    """
    x, y = _grayscale_pair(imgs_input, imgs_pred)
    count, height, width = x.shape
    window = len(_SSIM_TAPS)
    if min(height, width) < window:
        raise UserError(
            f"ssim_resmaps: images are {height}x{width}; the SSIM window needs at least {window}x{window}"
        )
    resmaps = np.empty_like(x)
    if count == 0:
        return resmaps

    padded_pixels = 4 * (height + 2 * _SSIM_RADIUS) * width
    block = int(min(count, max(1, _BLOCK_PIXELS // padded_pixels)))
    starts = list(range(0, count, block))
    workers = _available_cpus() if workers is None else int(workers)
    workers = max(1, min(workers, len(starts)))
    logger.debug("SSIM residual maps of %d images %dx%d: blocks of %d, %d threads",
                 count, height, width, block, workers)
    progress = tqdm(
        total=count,
        desc="SSIM residual maps",
        unit="img",
        leave=False,
        disable=x.size < _PROGRESS_MIN_PIXELS or not on_terminal(),
    )

    def run_blocks(worker_index: int) -> None:
        # Each thread owns a workspace and every `workers`-th block.
        work = _SsimWorkspace(block, height, width)
        for start in starts[worker_index::workers]:
            stop = min(start + block, count)
            _ssim_resmap_block(x[start:stop], y[start:stop], resmaps[start:stop], work)
            progress.update(stop - start)

    with progress:
        if workers == 1:
            run_blocks(0)
        else:
            # cv2 and numpy release the GIL, so threads share the blocks in parallel.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run_blocks, range(workers)))
    return resmaps


def l2_resmaps(imgs_input, imgs_pred) -> np.ndarray:
    """Squared-difference residual maps of a batch of image pairs.

    Parameters
    ----------
    imgs_input, imgs_pred : arrays of the same shape (N, H, W), (N, H, W, 1) or (N, H, W, 3)
        Float values in [0, 1]; RGB is converted with :func:`to_grayscale` first.

    Returns
    -------
    array of shape (N, H, W), float64: ``(gray_input - gray_pred) ** 2``, in [0, 1].
    """
    x, y = _grayscale_pair(imgs_input, imgs_pred)
    difference = np.subtract(x, y, out=x)
    return np.square(difference, out=difference)


_RESMAP_FUNCTIONS = {"ssim": ssim_resmaps, "l2": l2_resmaps}


def _check_method_dtype(method: str, dtype: str) -> None:
    if method not in RESMAP_METHODS:
        raise UserError(f"resmap method {method!r}: expected one of {', '.join(RESMAP_METHODS)}")
    if dtype not in RESMAP_DTYPES:
        raise UserError(f"resmap dtype {dtype!r}: expected one of {', '.join(RESMAP_DTYPES)}")


def resmap_value_range(method: str, dtype: str = "float64") -> tuple[float, float] | tuple[int, int]:
    """The (min, max) values maps from ``calculate_resmaps(..., method, dtype)`` can take.

    (0.0, 1.0) for float64 maps of either method, (0, 255) for uint8 maps.
    """
    _check_method_dtype(method, dtype)
    if dtype == "uint8":
        return (0, 255)
    return RESMAP_RANGE[method]


def calculate_resmaps(imgs_input, imgs_pred, method: str = "ssim", dtype: str = "float64") -> np.ndarray:
    """Residual maps of a batch, clipped to a fixed range and optionally quantised to uint8.

    Parameters
    ----------
    imgs_input, imgs_pred : arrays of the same shape (N, H, W), (N, H, W, 1) or (N, H, W, 3)
        Float values in [0, 1]; RGB is converted to grayscale first.
    method : 'ssim' or 'l2'
        :func:`ssim_resmaps` or :func:`l2_resmaps`.
    dtype : 'float64' or 'uint8'
        float64: the maps clipped to ``RESMAP_RANGE[method]`` = [0, 1]. uint8: those clipped
        maps scaled linearly so the range becomes 0..255, rounded to the nearest integer
        (as skimage's img_as_ubyte does).

    Returns
    -------
    array of shape (N, H, W) and dtype `dtype`, values in ``resmap_value_range(method, dtype)``.
    """
    _check_method_dtype(method, dtype)
    resmaps = _RESMAP_FUNCTIONS[method](imgs_input, imgs_pred)
    low, high = RESMAP_RANGE[method]
    np.clip(resmaps, low, high, out=resmaps)
    if dtype == "float64":
        return resmaps
    resmaps -= low
    resmaps *= 255.0 / (high - low)
    return np.rint(resmaps, out=resmaps).astype(np.uint8)
