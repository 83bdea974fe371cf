"""PatchCore-style nearest-neighbour memory bank on CNN feature maps (numpy only).

Training feature maps (N, H, W, C) are flattened to N * H * W patch vectors; a memory bank keeps
all of them or a subset: a greedy k-center coreset (PatchCore, Roth et al. 2022: farthest-point
selection on a Johnson-Lindenstrauss random projection) or a uniform random subsample. A query
patch scores its Euclidean distance to the nearest bank vector, giving an (N, H, W) anomaly map.

The search is exact brute force: blocks of queries against the whole bank, one matrix product per
block (|b|^2 - 2 a.b, the constant |a|^2 left out), argmin, then the distance to the chosen
neighbour recomputed directly as |a - b| (no cancellation error). Working memory is bounded by
the block size. Files are plain arrays in an .npz (no pickles).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from autoencoder.errors import UserError
from processing.maps.feature_arrays import CHUNK_BYTES, check_features, chunk_length, load_arrays, save_arrays

logger = logging.getLogger(__name__)

METHODS = ("coreset", "random", "all")


def _check_vectors(vectors, size: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise UserError(f"vectors of shape {vectors.shape}: expected a non-empty (M, C) array")
    if not 0 < size <= len(vectors):
        raise UserError(f"subset of {size} vectors: expected 1..{len(vectors)}")
    return vectors


def random_subsample(vectors, size: int, seed: int = 0) -> np.ndarray:
    """Indices (size,) int64 of `size` distinct rows of `vectors` (M, C), drawn uniformly with `seed`, sorted."""
    vectors = _check_vectors(vectors, size)
    return np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False)).astype(np.int64)


class VectorPool:
    """A uniform random sample of at most `size` of the patch vectors of feature batches seen one
    at a time (each vector gets a random key; the `size` smallest keys stay): memory is the pool and
    one batch, whatever the number of images. Deterministic for a seed and a batch order."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.rng, self.seen = int(size), np.random.default_rng(seed), 0
        self.vectors: np.ndarray | None = None
        self.keys = np.zeros(0)

    def update(self, features) -> VectorPool:
        """Add the vectors of (N, H, W, C) features."""
        features = check_features(features, None if self.vectors is None else self.vectors.shape[1])
        vectors = features.reshape(-1, features.shape[3])
        keys = self.rng.random(len(vectors))
        self.seen += len(vectors)
        if self.vectors is not None:
            vectors, keys = np.concatenate([self.vectors, vectors]), np.concatenate([self.keys, keys])
        if len(vectors) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])  # arrival order kept
            vectors, keys = vectors[keep], keys[keep]
        self.vectors, self.keys = np.array(vectors, dtype=np.float32), keys  # a copy: no view of the batch stays alive
        return self


    def to_arrays(self) -> dict[str, np.ndarray]:
        """The pool, its keys, the count seen and the random generator's state: what
        :meth:`from_arrays` continues from (add_good.py), so that more batches give the pool a
        single pass over every batch would."""
        if self.vectors is None:
            raise UserError("no vector was added: there is no pool to keep")
        return {"vectors": self.vectors, "keys": self.keys, "size": np.array(self.size), "seen": np.array(self.seen),
                "rng_state": np.array(json.dumps(self.rng.bit_generator.state))}

    @classmethod
    def from_arrays(cls, arrays: dict, source: str = "the pool") -> VectorPool:
        """The pool :meth:`to_arrays` kept, ready for :meth:`update` with more batches (`source` names the file in errors)."""
        missing = [key for key in ("vectors", "keys", "size", "seen", "rng_state") if key not in arrays]
        if missing:
            raise UserError(f"{source}: a damaged knn pool (no {', '.join(missing)}); rerun finetune.py")
        vectors, keys = np.asarray(arrays["vectors"]), np.asarray(arrays["keys"])
        size, seen = np.asarray(arrays["size"]), np.asarray(arrays["seen"])
        pool = cls(1)
        try:
            fits = (vectors.ndim == 2 and np.issubdtype(vectors.dtype, np.floating) and keys.shape == (len(vectors),)
                    and np.issubdtype(keys.dtype, np.floating) and size.shape == seen.shape == ()
                    and np.issubdtype(size.dtype, np.integer) and np.issubdtype(seen.dtype, np.integer)
                    and 0 < len(vectors) <= int(size) and int(seen) >= len(vectors)
                    and bool(np.isfinite(vectors).all() and np.isfinite(keys).all()))
        except (TypeError, ValueError):
            fits = False
        if not fits:
            raise UserError(f"{source}: a damaged knn pool (vectors {vectors.shape}, keys {keys.shape}); rerun finetune.py")
        try:
            pool.rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
        except (TypeError, ValueError, KeyError):  # not JSON, not a PCG64 state, ...
            raise UserError(f"{source}: a damaged knn pool (its rng_state is not a random generator's state); rerun finetune.py") from None
        pool.size, pool.seen, pool.vectors, pool.keys = int(size), int(seen), vectors.astype(np.float32), keys.astype(np.float64)
        return pool


def greedy_coreset(vectors, size: int, seed: int = 0, projection_dim: int | None = 128) -> np.ndarray:
    """Indices (size,) int64 of a greedy k-center coreset of the rows of `vectors` (M, C), in selection order.

    As in PatchCore: project the vectors to `projection_dim` dimensions with a Gaussian random
    matrix (Johnson-Lindenstrauss; skipped when C <= projection_dim or projection_dim is None),
    start from a random row (`seed`), then repeatedly add the row farthest from the rows chosen so
    far. O(M * projection_dim) per selected row, with one BLAS thread (the per-row products are
    too small to share: with two threads they took 1.2 to 8 ms each for M = 100k on a busy 2-core
    machine, with one a steady 1.8 ms); memory: the projected vectors plus O(M).
    """
    vectors = _check_vectors(vectors, size)
    rng = np.random.default_rng(seed)
    m, c = vectors.shape
    if projection_dim is not None and c > projection_dim:
        projection = rng.normal(0.0, 1.0 / np.sqrt(projection_dim), (c, projection_dim)).astype(np.float32)
        points = np.concatenate([vectors[i : i + 65536] @ projection for i in range(0, m, 65536)])
    else:
        points = vectors
    norms = np.einsum("ij,ij->i", points, points)
    selected = np.empty(size, np.int64)
    selected[0] = rng.integers(m)
    nearest = np.full(m, np.inf, np.float32)  # squared distance to the nearest selected row
    with threadpool_limits(1, user_api="blas"):  # `size` small products: threads mostly wait on each other
        for k in range(size):
            if k:
                selected[k] = np.argmax(nearest)
            centre = points[selected[k]]
            squared = norms - 2.0 * (points @ centre) + norms[selected[k]]
            np.minimum(nearest, np.maximum(squared, 0.0, out=squared), out=nearest)
            nearest[selected[k]] = -1.0  # never chosen twice, even among duplicate rows
    logger.info("greedy coreset: %d of %d vectors (%d dims searched)", size, m, points.shape[1])
    return selected


@dataclass
class MemoryBank:
    """bank: (M, C) float32 patch vectors; score() = distance of each query patch to its nearest one."""

    bank: np.ndarray
    block_bytes: int = field(default=CHUNK_BYTES, repr=False)  # working memory of one block of queries

    def __post_init__(self):
        self.bank = np.ascontiguousarray(self.bank, dtype=np.float32)
        if self.bank.ndim != 2 or len(self.bank) == 0:
            raise UserError(f"bank of shape {self.bank.shape}: expected a non-empty (M, C) array")
        self._norms = np.einsum("ij,ij->i", self.bank, self.bank)

    @property
    def n_channels(self) -> int:
        return self.bank.shape[1]

    def nearest(self, queries) -> tuple[np.ndarray, np.ndarray]:
        """(distances (Q,) float32, bank indices (Q,) int64) of the nearest bank vector to each row of `queries` (Q, C)."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.n_channels:
            raise UserError(f"queries of shape {queries.shape}: expected (Q, {self.n_channels})")
        distances = np.empty(len(queries), np.float32)
        indices = np.empty(len(queries), np.int64)
        step = chunk_length(len(self.bank) * 4, self.block_bytes)
        for start in range(0, len(queries), step):
            block = queries[start : start + step]
            products = (-2.0 * block) @ self.bank.T  # (block, M); scaling by 2 is exact
            products += self._norms  # |b|^2 - 2 a.b: the same argmin as |a - b|^2
            nearest = np.argmin(products, axis=1)
            differences = block - self.bank[nearest]
            distances[start : start + step] = np.sqrt(np.einsum("ij,ij->i", differences, differences))
            indices[start : start + step] = nearest
        return distances, indices

    def score(self, features) -> np.ndarray:
        """(N, H, W) float32 Euclidean distance of each patch vector of (N, H, W, C) `features` to its nearest bank vector."""
        features = check_features(features, self.n_channels)
        distances, _ = self.nearest(features.reshape(-1, self.n_channels))
        return distances.reshape(features.shape[:3])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank as a plain array to `path` (.npz); read it back with :func:`load_memory_bank`."""
        return save_arrays(path, "memory_bank", {"bank": self.bank})


def load_memory_bank(path: str | os.PathLike) -> MemoryBank:
    """Read a file written by :meth:`MemoryBank.save`; ValueError naming the file if it is not one."""
    bank = load_arrays(path, "memory_bank", ["bank"])["bank"]
    if bank.ndim != 2 or len(bank) == 0 or not np.issubdtype(bank.dtype, np.floating):
        raise UserError(f"{path}: bank of shape {bank.shape} and dtype {bank.dtype}, expected a non-empty (M, C) float array")
    return MemoryBank(bank)


def fit_memory_bank(features, size: int = 16384, method: str = "coreset", seed: int = 0) -> MemoryBank:
    """A memory bank of at most `size` patch vectors of (N, H, W, C) training `features`.

    method: "coreset" (:func:`greedy_coreset`), "random" (:func:`random_subsample`) or "all"
    (every vector; also used when there are no more than `size`).
    """
    if method not in METHODS:
        raise UserError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    features = check_features(features)
    vectors = features.reshape(-1, features.shape[3])
    if method == "all" or size >= len(vectors):
        bank = vectors.copy()
    elif method == "coreset":
        bank = vectors[greedy_coreset(vectors, size, seed)]
    else:
        bank = vectors[random_subsample(vectors, size, seed)]
    logger.info("memory bank: %d of %d patch vectors of %d channels (%s)", len(bank), len(vectors), bank.shape[1], method)
    return MemoryBank(bank)
