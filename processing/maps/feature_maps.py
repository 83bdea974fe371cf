"""Anomaly maps from density scorers on a featureCAE's pretrained feature grid.

Beside the featureCAE's own map (its feature reconstruction error, ``--method feature``), the same
standardised features can be scored by a density fitted on the training images' features:

- ``padim``: one Gaussian per grid position, Mahalanobis distance (PaDiM, Defard et al. 2020);
- ``knn``: distance to the nearest training feature vector in a memory bank (PatchCore, Roth et
  al. 2022: a greedy coreset of the training vectors).

The grid maps (N, h, w) are upsampled bilinearly to the model's input size. The fitted scorer is
stored as plain arrays (``.npz``, no pickles) in the finetuning folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from autoencoder.features.gaussian import fit_position_gaussians, load_position_gaussians
from autoencoder.features.memory_bank import fit_memory_bank, load_memory_bank, random_subsample
from processing.data.images import iter_batches

logger = logging.getLogger(__name__)

MEMORY_BANK_SIZE = 16384
# The greedy coreset costs (pool x bank size) distance updates: it picks from a random pool of at
# most this many training vectors (175k at 128 px, 700k at 256 px would take minutes).
CORESET_POOL = 65536


@dataclass(frozen=True)
class FeatureScorerKind:
    fit: Callable  # (features (N, h, w, C), seed) -> scorer with .score(features) and .save(path)
    load: Callable  # path -> scorer
    file: str


FEATURE_SCORERS = {
    "padim": FeatureScorerKind(lambda features, seed: fit_position_gaussians(features, seed=seed), load_position_gaussians, "padim.npz"),
    "knn": FeatureScorerKind(
        lambda features, seed: fit_memory_bank(coreset_pool(features, seed), size=MEMORY_BANK_SIZE, method="coreset", seed=seed),
        load_memory_bank,
        "memory_bank.npz",
    ),
}


def coreset_pool(features: np.ndarray, seed: int) -> np.ndarray:
    """At most CORESET_POOL of the (N, h, w, C) training vectors, drawn at random, as (M, 1, 1, C)."""
    vectors = features.reshape(-1, features.shape[-1])
    if len(vectors) > CORESET_POOL:
        vectors = vectors[random_subsample(vectors, CORESET_POOL, seed=seed)]
    return vectors[:, None, None, :]


def feature_model_of(model):
    """The featureCAE's image -> standardised feature grid model; one line when `model` is no featureCAE."""
    from autoencoder.models.feature_cae import STANDARDIZED_LAYER, feature_model

    if STANDARDIZED_LAYER not in {layer.name for layer in model.layers}:
        raise ValueError(f"--method padim/knn score a featureCAE's features; model {model.name} has none (train with -a featureCAE)")
    return feature_model(model)


def feature_grid(features_model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, h, w, C) float32 features of one batch (a short batch is padded: the graph is traced once)."""
    n = len(images)
    if n < batch_size:
        images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
    return np.asarray(features_model.predict_on_batch(images), dtype=np.float32)[:n]


def upsample_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) grid maps -> (N, size, size) float64, bilinear (pixel centres aligned)."""
    out = np.empty((len(maps), size, size), dtype=np.float64)
    for index, grid_map in enumerate(maps):
        out[index] = cv2.resize(np.asarray(grid_map, dtype=np.float64), (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def fit_feature_scorer(method: str, model, paths, color_mode: str, size: int, batch_size: int = 16, seed: int = 0):
    """Fit the `method` scorer on the features of the training images `paths`."""
    features_model = feature_model_of(model)
    grids = [feature_grid(features_model, images, batch_size) for _, images in iter_batches(paths, color_mode, size, batch_size)]
    features = np.concatenate(grids)
    logger.info("%s: fitting on %d training images (%d x %d grid, %d channels)", method, *features.shape)
    return FEATURE_SCORERS[method].fit(features, seed)


def load_feature_scorer(method: str, folder: Path):
    path = Path(folder) / FEATURE_SCORERS[method].file
    if not path.is_file():
        raise ValueError(f"{path} not found: the finetuning result needs its {method} scorer; rerun finetune.py")
    return FEATURE_SCORERS[method].load(path)
