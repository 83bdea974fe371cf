"""Post-processing of residual maps before segmentation and scoring.

A residual map of a textured surface is noisy: single pixels where the reconstruction misses a
grain of texture are as bright as pixels of a real defect. A Gaussian smoothing averages that
noise out while a defect, a connected patch of high residuals, keeps most of its level. Finetuning
and test apply the same smoothing (finetuning records its sigma; test reads it from there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.moments import Moments

logger = logging.getLogger(__name__)

#: Kernel radius in sigmas (scipy.ndimage.gaussian_filter's default `truncate`).
TRUNCATE = 4.0


#: The largest smoothing sigma, in pixels (its kernel is 2 * int(4 sigma + 0.5) + 1 pixels wide).
MAX_SIGMA = 100.0


def check_sigma(sigma, flag: str = "--smoothing") -> float:
    """`sigma` as a float in [0, MAX_SIGMA] (0: no smoothing); ValueError naming `flag` otherwise."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {sigma!r}: expected a number of pixels >= 0") from None
    if not np.isfinite(value) or value < 0:
        raise UserError(f"{flag} {sigma!r}: expected a number of pixels >= 0")
    if value > MAX_SIGMA:
        raise UserError(f"{flag} {sigma!r}: expected a number of pixels from 0 to {MAX_SIGMA:g}")
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
        raise UserError(f"resmaps: expected an array of shape (N, H, W), got shape {resmaps.shape}")
    if sigma == 0 or resmaps.size == 0:
        return resmaps
    if resmaps.dtype != np.uint8 and resmaps.dtype.kind != "f":
        raise UserError(f"resmaps: expected float or uint8 maps, got dtype {resmaps.dtype}")
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


def smoothing_taps(sigma: float) -> np.ndarray:
    """The 1-D kernel smooth_resmaps applies: cv2's Gaussian of ksize 2 * int(TRUNCATE sigma + 0.5) + 1, float64."""
    radius = int(TRUNCATE * sigma + 0.5)
    return cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_64F)[:, 0]


def smooth_tensor(maps, sigma: float):
    """:func:`smooth_resmaps` as tensor ops: (N, H, W) float maps, mirrored borders (the map must be
    wider than the kernel's radius: export.py checks)."""
    from autoencoder.ssim import mirrored_separable_filter

    if sigma == 0:
        return maps
    return mirrored_separable_filter(maps[..., None], smoothing_taps(sigma))[..., 0]


def check_smoothing_fits(sigma: float, size) -> None:
    """The graph mirrors the map once at each border: the kernel's radius must be below the map's
    shorter side (`size`: a side or an ImageSize)."""
    shorter = min(ImageSize.of(size))
    if sigma > 0 and int(TRUNCATE * sigma + 0.5) >= shorter:
        raise UserError(f"smoothing sigma {sigma} needs a kernel wider than the {size} px map's shorter side "
                        f"({shorter} px); export.py cannot mirror it")


# --------------------------------------------------------------------------------------------
# Per-pixel standardisation
# --------------------------------------------------------------------------------------------

#: Normalisations of residual maps that finetune.py offers (``--normalize``).
NORMALIZATIONS = ("none", "pixel")
#: File in the finetuning folder with the per-pixel statistics (test.py reads it).
PIXEL_STATISTICS_FILE = "pixel_statistics.npz"
#: The standard deviation is floored at this fraction of its mean over the image, so pixels
#: where every training map happens to agree do not turn tiny differences into huge scores.
STD_FLOOR_FRACTION = 0.01


def check_normalization(name, dtype: str = "float64") -> str:
    """`name` if it is a known normalisation that suits maps of `dtype` (standardised maps are floats)."""
    if name not in NORMALIZATIONS:
        raise UserError(f"--normalize {name!r}: expected one of {', '.join(NORMALIZATIONS)}")
    if name != "none" and dtype != "float64":
        raise UserError(f"--normalize {name} needs float64 maps: use -t float64 (got -t {dtype})")
    return name


class PixelMoments(Moments):
    """Per pixel, over defect-free maps (N, H, W) added batch by batch (memory: one batch and two
    (H, W) arrays, whatever the number of images)."""

    def update(self, resmaps) -> PixelMoments:
        resmaps = np.asarray(resmaps, dtype=np.float64)
        if resmaps.ndim != 3:
            raise UserError(f"resmaps: expected maps of shape (N, H, W), got shape {resmaps.shape}")
        return super().update(resmaps)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (floored) standard deviation, pixel by pixel (see :func:`fit_pixel_statistics`)."""
        if self.count < 2:
            raise UserError(f"resmaps: expected at least 2 maps of shape (N, H, W), got {self.count}")
        mean, std = self.mean_std()
        floor = STD_FLOOR_FRACTION * float(std.mean())
        if not floor > 0:
            raise UserError("resmaps: the defect-free maps are all identical; per-pixel statistics are undefined")
        return mean, np.maximum(std, floor)


def fit_pixel_statistics(resmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (floored) standard deviation of defect-free residual maps, pixel by pixel.

    Parameters
    ----------
    resmaps : float array of shape (N, H, W), N >= 2
        Maps of defect-free images, post-processed as the maps they will standardise.

    Returns
    -------
    mean, std : float64 arrays of shape (H, W); ``std >= STD_FLOOR_FRACTION * mean(std) > 0``.
    (:class:`PixelMoments` computes the same batch by batch.)
    """
    resmaps = np.asarray(resmaps, dtype=np.float64)
    if resmaps.ndim != 3 or resmaps.shape[0] < 2:
        raise UserError(f"resmaps: expected at least 2 maps of shape (N, H, W), got shape {resmaps.shape}")
    return PixelMoments().update(resmaps).statistics()


def standardize_resmaps(resmaps: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(resmaps - mean) / std`` per pixel: how unusual each residual is *at that position*.

    A reconstruction is systematically worse in some places (edges of the object, the image
    border, strong texture); standardising by the defect-free maps' statistics stops those
    places from looking like defects. resmaps (N, H, W) float; mean, std (H, W). Returns float64.
    """
    resmaps = np.asarray(resmaps)
    if resmaps.ndim != 3 or resmaps.shape[1:] != np.shape(mean) or np.shape(mean) != np.shape(std):
        raise UserError(
            f"resmaps of shape {resmaps.shape} do not match the pixel statistics of shape {np.shape(mean)}"
        )
    return (resmaps.astype(np.float64) - mean) / std


class ResmapPostprocessor:
    """The post-processing finetuning chose, applied identically by test.py: Gaussian smoothing,
    then (optionally) per-pixel standardisation."""

    def __init__(self, sigma: float = 0.0, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.sigma = check_sigma(sigma)
        if (mean is None) != (std is None):
            raise UserError("pixel statistics need both mean and std")
        self.mean, self.std = mean, std

    @property
    def normalization(self) -> str:
        return "none" if self.mean is None else "pixel"

    def __call__(self, resmaps: np.ndarray) -> np.ndarray:
        resmaps = smooth_resmaps(resmaps, self.sigma)
        if self.mean is not None:
            resmaps = standardize_resmaps(resmaps, self.mean, self.std)
        return resmaps

    def save_statistics(self, folder) -> None:
        if self.mean is not None:
            np.savez(Path(folder) / PIXEL_STATISTICS_FILE, mean=self.mean, std=self.std)

    def tensor(self, maps, dtype: str):
        """The same post-processing as tensor ops (maps (N, H, W) in `dtype`)."""
        from keras import ops

        maps = smooth_tensor(maps, self.sigma)
        if self.mean is not None:
            maps = (maps - ops.convert_to_tensor(self.mean, dtype=dtype)) / ops.convert_to_tensor(self.std, dtype=dtype)
        return maps

    @classmethod
    def from_finetuning(cls, folder, sigma: float, normalize: str) -> ResmapPostprocessor:
        """Rebuild the post-processing of a finetuning result saved in `folder`."""
        if normalize == "none":
            return cls(sigma)
        path = Path(folder) / PIXEL_STATISTICS_FILE
        if not path.is_file():
            raise UserError(f"{path} not found: the finetuning result asks for per-pixel normalisation; rerun finetune.py")
        with np.load(path) as stats:
            return cls(sigma, stats["mean"], stats["std"])
