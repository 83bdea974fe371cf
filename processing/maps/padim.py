"""PaDiM-style Gaussian density scorers on CNN feature maps (numpy only).

A feature map batch is a float32 array of shape (N, H, W, C): N images, an H x W grid, C
channels. :func:`fit_position_gaussians` fits one Gaussian per grid position (PaDiM, Defard et
al. 2020): mean and covariance of the N training vectors at that position, plus eps * I, stored
as the inverse covariance. :meth:`PositionGaussians.score` gives the Mahalanobis distance of every
query vector to the Gaussian of its position, an (N, H, W) anomaly map.
:func:`fit_global_gaussian` fits a single Gaussian on all positions of all images instead.

Memory is bounded: fitting reads the images once, batch by batch (:class:`PositionMoments`),
accumulating per-position sums and sums of outer products, then inverts the covariances in chunks
of positions; scoring works on chunks of images. Both run with BLAS limited to one thread (threadpoolctl, which scikit-learn
installs): they are thousands of small per-position matrix products and LAPACK calls, which
OpenBLAS threads only slow down, up to 10x on a busy machine (measured on 2 cores).

Files are plain arrays in an .npz (no pickles; processing/maps/feature_arrays.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from autoencoder.errors import UserError
from processing.maps.feature_arrays import check_features, chunk_length, load_arrays, save_arrays

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


@dataclass
class PositionGaussians:
    """One Gaussian per grid position (or a single one for all positions when the grid is 1x1).

    mean: (H, W, D) float32; inv_covariance: (H, W, D, D) float32, the inverse of
    covariance + regularization * I; channel_subset: (D,) indices into the C input channels, or
    None for all (D = C); n_channels: C, the channels of the feature maps it scores.
    """

    mean: np.ndarray
    inv_covariance: np.ndarray
    n_channels: int
    regularization: float
    channel_subset: np.ndarray | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return self.mean.shape[0], self.mean.shape[1]

    def score(self, features) -> np.ndarray:
        """(N, H, W) float32 Mahalanobis distances sqrt((x - mu)^T S^-1 (x - mu)), chunked over images."""
        features = check_features(features, self.n_channels, None if self.grid == (1, 1) else self.grid)
        n, h, w, _ = features.shape
        mean = self.mean.reshape(-1, self.mean.shape[-1])  # (P, D), P = H * W or 1
        inverse = self.inv_covariance.reshape(-1, *self.inv_covariance.shape[-2:])  # (P, D, D)
        depth = mean.shape[1]
        out = np.empty((n, h * w), np.float32)
        step = chunk_length(3 * h * w * depth * 4)
        with threadpool_limits(1, user_api="blas"):  # one small matrix product per position
            for start in range(0, n, step):
                chunk = features[start : start + step].reshape(-1, h * w, features.shape[3])
                if self.channel_subset is not None:
                    chunk = chunk[..., self.channel_subset]
                delta = (chunk - mean).transpose(1, 0, 2)  # (P, n, D)
                squared = np.einsum("pnd,pnd->np", np.matmul(delta, inverse), delta)
                out[start : start + step] = np.sqrt(np.maximum(squared, 0.0))
        return out.reshape(n, h, w)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as plain arrays to `path` (.npz); read it back with :func:`load_position_gaussians`."""
        arrays = {
            "mean": self.mean,
            "inv_covariance": self.inv_covariance,
            "n_channels": np.array(self.n_channels),
            "regularization": np.array(self.regularization),
        }
        if self.channel_subset is not None:
            arrays["channel_subset"] = self.channel_subset
        return save_arrays(path, "position_gaussians", arrays)


def load_position_gaussians(path: str | os.PathLike) -> PositionGaussians:
    """Read a file written by :meth:`PositionGaussians.save`; ValueError naming the file if it is not one."""
    arrays = load_arrays(path, "position_gaussians", ["mean", "inv_covariance", "n_channels", "regularization"])
    mean, inverse = arrays["mean"], arrays["inv_covariance"]
    if mean.ndim != 3 or inverse.shape != mean.shape + mean.shape[-1:]:
        raise UserError(f"{path}: mean {mean.shape} and inverse covariance {inverse.shape} do not fit together")
    subset = arrays.get("channel_subset")
    return PositionGaussians(
        mean=mean.astype(np.float32),
        inv_covariance=inverse.astype(np.float32),
        n_channels=int(arrays["n_channels"]),
        regularization=float(arrays["regularization"]),
        channel_subset=None if subset is None else subset.astype(np.int64),
    )


def _is_channel_subset(subset: np.ndarray, depth: int, n_channels: int) -> bool:
    """Whether `subset` is `depth` distinct channel indices in 0..n_channels - 1."""
    return (np.issubdtype(subset.dtype, np.integer) and subset.shape == (depth,) and len(np.unique(subset)) == depth
            and bool((subset >= 0).all() and (subset < n_channels).all()))


def random_channel_subset(n_channels: int, size: int, seed: int = 0) -> np.ndarray:
    """`size` distinct channel indices out of `n_channels`, sorted, drawn with `seed` (PaDiM's random dimensionality reduction)."""
    if not 0 < size <= n_channels:
        raise UserError(f"channel subset of {size}: expected 1..{n_channels}")
    return np.sort(np.random.default_rng(seed).choice(n_channels, size, replace=False)).astype(np.int64)


class PositionMoments:
    """The sums a PaDiM fit needs, accumulated batch by batch: the training images are read once and
    never held together, so memory is one batch plus (P, D) sums and (P, D, D) outer products
    (float64), whatever the number of images. Adding more images later continues the same sums:
    the Gaussians then equal a fit on all of them.

    Sums are taken of x - k with k the first image's vector at each position (the shifted-data
    algorithm: it avoids the cancellation of sum(x x^T) - N mu mu^T when |mu| >> the spread).
    """

    def __init__(self, channel_subset: np.ndarray | None = None):
        self.channel_subset = channel_subset
        self.n = 0
        self.grid: tuple[int, int] | None = None
        self.n_channels: int | None = None
        self.shift = self.sums = self.outer = None

    def update(self, features) -> PositionMoments:
        """Add (N, H, W, C) training features."""
        features = check_features(features, self.n_channels, self.grid)
        n, h, w, c = features.shape
        flat = features.reshape(n, h * w, c)
        channels = self.channel_subset
        if self.shift is None:
            self.grid, self.n_channels = (h, w), c
            self.shift = flat[0].astype(np.float64) if channels is None else flat[0][:, channels].astype(np.float64)
            self.sums = np.zeros(self.shift.shape)
            self.outer = np.zeros((*self.shift.shape, self.shift.shape[1]))
        positions, depth = self.shift.shape
        image_step = chunk_length(positions * depth * 8)
        position_step = chunk_length(image_step * depth * 8 + depth * depth * 8)
        with threadpool_limits(1, user_api="blas"):  # one small matrix product per position
            for start in range(0, n, image_step):
                chunk = flat[start : start + image_step]
                chunk = (chunk if channels is None else chunk[..., channels]) - self.shift  # (n, P, D) float64
                self.sums += chunk.sum(axis=0)
                for p in range(0, positions, position_step):
                    block = chunk[:, p : p + position_step].transpose(1, 0, 2)  # (p, n, D)
                    self.outer[p : p + position_step] += np.matmul(block.transpose(0, 2, 1), block)
        self.n += n
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums in the compact form :meth:`from_arrays` continues from (add_good.py): the count,
        the mean (P, D) float64 and the upper triangle of each position's scatter matrix
        sum (x - mean)(x - mean)^T (P, D(D+1)/2) float32, half the size of the fitted Gaussians."""
        if self.n < 1:
            raise UserError("no image was added: there are no sums to keep")
        positions, depth = self.shift.shape
        offset = self.sums / self.n
        rows, cols = np.triu_indices(depth)
        scatter = np.empty((positions, len(rows)), np.float32)
        step = chunk_length(2 * depth * depth * 8)
        for p in range(0, positions, step):
            shift = offset[p : p + step]
            scatter[p : p + step] = (self.outer[p : p + step] - self.n * shift[:, :, None] * shift[:, None, :])[:, rows, cols]
        arrays = {"count": np.array(self.n), "mean": self.shift + offset, "scatter": scatter, "grid": np.array(self.grid),
                  "n_channels": np.array(self.n_channels)}
        if self.channel_subset is not None:
            arrays["channel_subset"] = self.channel_subset
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict, source: str = "the sums") -> PositionMoments:
        """The moments :meth:`to_arrays` kept, ready for :meth:`update` with more images (`source`
        names the file in errors)."""
        missing = [key for key in ("count", "mean", "scatter", "grid", "n_channels") if key not in arrays]
        if missing:
            raise UserError(f"{source}: damaged padim sums (no {', '.join(missing)}); rerun finetune.py")
        mean, scatter = np.asarray(arrays["mean"]), np.asarray(arrays["scatter"])
        count, grid, n_channels = (np.asarray(arrays[key]) for key in ("count", "grid", "n_channels"))
        subset = arrays.get("channel_subset")
        depth = mean.shape[1] if mean.ndim == 2 else 0
        integers = all(np.issubdtype(a.dtype, np.integer) for a in (count, grid, n_channels))
        try:
            fits = (integers and mean.ndim == 2 and all(np.issubdtype(a.dtype, np.floating) for a in (mean, scatter))
                    and scatter.shape == (mean.shape[0], depth * (depth + 1) // 2) and count.shape == () and count >= 1
                    and grid.shape == (2,) and int(np.prod(grid)) == mean.shape[0] and n_channels.shape == ()
                    and bool(np.isfinite(mean).all() and np.isfinite(scatter).all())
                    and (subset is None or _is_channel_subset(np.asarray(subset), depth, int(n_channels)))
                    and (subset is not None or int(n_channels) == depth))
        except (TypeError, ValueError):  # numbers stored as text, ...
            fits = False
        if not fits:
            raise UserError(f"{source}: damaged padim sums (mean {mean.shape}, scatter {scatter.shape}, count {count.shape}); "
                            "rerun finetune.py")
        moments = cls(None if subset is None else np.asarray(subset, np.int64))
        moments.n, moments.grid, moments.n_channels = int(count), (int(grid[0]), int(grid[1])), int(n_channels)
        moments.shift, moments.sums = mean.astype(np.float64), np.zeros(mean.shape)
        rows, cols = np.triu_indices(depth)
        moments.outer = np.empty((mean.shape[0], depth, depth))
        moments.outer[:, rows, cols] = scatter
        moments.outer[:, cols, rows] = scatter
        return moments

    def gaussians(self, regularization: float = 0.01) -> PositionGaussians:
        """The Gaussians of every image added so far: mean, and the inverse of the unbiased sample
        covariance + regularization * I (inverted in chunks of positions; the sums are kept)."""
        if self.n < 2:
            raise UserError(f"need at least 2 images to estimate a covariance, got {self.n}")
        if regularization < 0:
            raise UserError(f"regularization must be >= 0, got {regularization}")
        positions, depth = self.shift.shape
        offset = self.sums / self.n
        inverse = np.empty(self.outer.shape, np.float32)
        step = chunk_length(3 * depth * depth * 8)
        with threadpool_limits(1, user_api="blas"):
            for p in range(0, positions, step):
                shift = offset[p : p + step]
                scatter = self.outer[p : p + step] - self.n * shift[:, :, None] * shift[:, None, :]
                covariance = scatter / (self.n - 1) + regularization * np.eye(depth)
                try:
                    inverse[p : p + step] = np.linalg.inv(covariance)
                except np.linalg.LinAlgError:
                    raise UserError(f"a covariance is singular: use regularization > 0 (got {regularization})") from None
        h, w = self.grid
        logger.info("fit %d Gaussians of %d channels (of %d) on %d images, regularization %g", h * w, depth, self.n_channels, self.n,
                    regularization)
        return PositionGaussians(
            mean=(self.shift + offset).reshape(h, w, depth).astype(np.float32),
            inv_covariance=inverse.reshape(h, w, depth, depth),
            n_channels=self.n_channels,
            regularization=float(regularization),
            channel_subset=self.channel_subset,
        )


def fit_position_gaussians(
    features,
    regularization: float = 0.01,
    channel_subset: int | Sequence[int] | None = None,
    seed: int = 0,
) -> PositionGaussians:
    """One Gaussian per grid position of (N, H, W, C) training features (N >= 2), as in PaDiM.

    covariance = unbiased sample covariance + regularization * I (PaDiM's 0.01), stored inverted.
    channel_subset: None (all C channels), an int D (D random channels drawn with `seed`, PaDiM's
    reduction) or explicit channel indices; kept in the model and applied when scoring.
    (:class:`PositionMoments` fits the same batch by batch.)
    """
    features = check_features(features)
    n, h, w, c = features.shape
    if n < 2:
        raise UserError(f"need at least 2 images to estimate a covariance, got {n}")
    if regularization < 0:
        raise UserError(f"regularization must be >= 0, got {regularization}")
    if isinstance(channel_subset, (int, np.integer)):
        channel_subset = random_channel_subset(c, int(channel_subset), seed)
    elif channel_subset is not None:
        channel_subset = np.asarray(channel_subset, dtype=np.int64)
        if channel_subset.ndim != 1 or channel_subset.size == 0 or channel_subset.min() < 0 or channel_subset.max() >= c:
            raise UserError(f"channel_subset must be 1-D indices in 0..{c - 1}, got {channel_subset}")
    return PositionMoments(channel_subset).update(features).gaussians(regularization)


def fit_global_gaussian(
    features,
    regularization: float = 0.01,
    channel_subset: int | Sequence[int] | None = None,
    seed: int = 0,
) -> PositionGaussians:
    """One Gaussian for all N * H * W training vectors: a 1x1-grid :class:`PositionGaussians`, which scores any grid."""
    features = check_features(features)
    flat = features.reshape(-1, 1, 1, features.shape[3])  # every vector an "image" of one position
    return fit_position_gaussians(flat, regularization, channel_subset, seed)
