"""What the feature-density scorers (padim.py, knn.py) share: checking feature arrays, chunk
sizes, and their files (plain arrays in an .npz with a kind tag and format version, no pickles)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import write_npz

FORMAT_VERSION = 1
CHUNK_BYTES = 64 * 2**20  # working memory per chunk (fitting and scoring), about


def check_features(features, n_channels: int | None = None, grid: tuple[int, int] | None = None) -> np.ndarray:
    """`features` as a float32 (N, H, W, C) array; ValueError (one line) on a wrong shape.

    `n_channels` / `grid`: the C / (H, W) the model was fit on, when it must match.
    """
    features = np.asarray(features, dtype=np.float32)
    expected = f"(N, H, W, {n_channels if n_channels is not None else 'C'})"
    if features.ndim != 4 or features.shape[0] == 0:
        raise UserError(f"features of shape {features.shape}: expected a non-empty {expected} array")
    if n_channels is not None and features.shape[3] != n_channels:
        raise UserError(f"features of shape {features.shape} have {features.shape[3]} channels; the scorer was fit on {n_channels}")
    if grid is not None and features.shape[1:3] != tuple(grid):
        raise UserError(f"features of shape {features.shape} have a {features.shape[1]}x{features.shape[2]} grid; the scorer was fit on "
                f"{grid[0]}x{grid[1]}")
    return features


def save_arrays(path: str | os.PathLike, kind: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` plus a kind tag and format version to `path` (.npz), via a temporary file and a rename."""
    return write_npz(path, {"kind": np.array(kind), "format_version": np.array(FORMAT_VERSION), **arrays})


def load_arrays(path: str | os.PathLike, kind: str, required: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`save_arrays` with this `kind`; ValueError naming the file otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # missing file, not a zip, truncated member, object arrays...
        raise UserError(f"{path}: cannot read a {kind} file ({type(error).__name__}: {error})") from None
    if "kind" not in arrays or "format_version" not in arrays:
        raise UserError(f"{path}: not a {kind} file (no kind and format_version entries)")
    if str(arrays["kind"]) != kind or int(arrays["format_version"]) != FORMAT_VERSION:
        raise UserError(f"{path}: a {arrays['kind']} file of format {int(arrays['format_version'])}, expected {kind} format "
                f"{FORMAT_VERSION}")
    missing = sorted(set(required) - set(arrays))
    if missing:
        raise UserError(f"{path}: a damaged {kind} file (missing {', '.join(missing)})")
    return arrays


def chunk_length(bytes_per_item: int, budget: int | None = None) -> int:
    """How many items of `bytes_per_item` fit in `budget` bytes (default CHUNK_BYTES), at least 1."""
    return max(1, (CHUNK_BYTES if budget is None else budget) // max(1, bytes_per_item))
