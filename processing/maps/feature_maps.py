"""The map kinds of models that output their own anomaly map (featureCAE), and of densities on
their pretrained feature grid.

- ``feature``: the model's own output (featureCAE: its feature reconstruction error);
- ``padim``: one Gaussian per grid position, Mahalanobis distance (PaDiM, Defard et al. 2020);
- ``knn``: distance to the nearest training feature vector in a memory bank (PatchCore, Roth et
  al. 2022: a greedy coreset of the training vectors).

The densities score the ``features`` source, the featureCAE's standardised feature grid
(N, h, w, C); their grid maps are upsampled bilinearly to the model's input size. The fitted
scorer is stored as plain arrays (``.npz``, no pickles) in the finetuning folder.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from autoencoder.errors import UserError
from processing.maps.kinds import Fitter, MapKind, MapSource, register_map_kind, register_map_source
from processing.maps.knn import VectorPool, fit_memory_bank, load_memory_bank
from processing.maps.padim import PositionMoments, load_position_gaussians

logger = logging.getLogger(__name__)

MEMORY_BANK_SIZE = 16384
KNN_GRAPH_BLOCK = 2048  # bank vectors per step of the exported knn map
# The greedy coreset costs (pool x bank size) distance updates: it picks from a random pool of at
# most this many training vectors (175k at 128 px, 700k at 256 px would take minutes).
CORESET_POOL = 65536


class PadimFitter(Fitter):
    """padim's Gaussians from per-position sums (processing/maps/padim.py PositionMoments): one batch in memory."""

    def __init__(self, moments: PositionMoments | None = None):
        self.moments = moments or PositionMoments()

    def update(self, source):
        self.moments.update(source)

    def state(self):
        if self.moments.n < 2:
            raise UserError(f"--method padim: the model's training split holds {self.moments.n} image; a Gaussian per position needs "
                            "at least 2 (add images to train/good, or train with a lower --validation-split)")
        return self.moments.gaussians()

    def running_sums(self):
        return self.moments.to_arrays()


class KnnFitter(Fitter):
    """knn's memory bank: a greedy coreset of a uniform random pool of at most CORESET_POOL training
    vectors, the pool kept batch by batch (processing/maps/knn.py VectorPool)."""

    def __init__(self, seed: int, pool: VectorPool | None = None):
        self.seed, self.pool = seed, pool or VectorPool(CORESET_POOL, seed)

    def update(self, source):
        self.pool.update(source)

    def state(self):
        if self.pool.vectors is None:
            raise UserError("--method knn: the model's training split holds no image to fill a memory bank with")
        logger.info("knn: a pool of %d of the %d training vectors", len(self.pool.vectors), self.pool.seen)
        return fit_memory_bank(self.pool.vectors[:, None, None, :], size=MEMORY_BANK_SIZE, method="coreset", seed=self.seed)

    def running_sums(self):
        return self.pool.to_arrays()


def feature_model_of(model):
    """The image -> feature grid model the densities score (featureCAE's standardised features,
    stageCAE's standardised stages); one line when `model`'s architecture has none."""
    from autoencoder.models import available_architectures, get_architecture

    architecture = get_architecture(model.name) if model.name in available_architectures() else None
    if architecture is None or architecture.density_features is None:
        raise UserError(f"--method padim/knn score pretrained features; model {model.name} has none (train with -a featureCAE)")
    return architecture.density_features(model)


def feature_grid(features_model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, h, w, C) float32 features of one batch (a short batch is padded: the graph is traced once)."""
    n = len(images)
    if n < batch_size:
        images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
    return np.asarray(features_model.predict_on_batch(images), dtype=np.float32)[:n]


def bind_feature_grid(model):
    features_model = feature_model_of(model)
    return lambda images, batch_size: feature_grid(features_model, images, batch_size)


def feature_grid_tensor(model):
    features_model = feature_model_of(model)
    return lambda images: features_model(images, training=False)


register_map_source(MapSource("features", bind_feature_grid, feature_grid_tensor))


def upsample_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) grid maps -> (N, *shape) float64, bilinear (pixel centres aligned)."""
    height, width = shape
    out = np.empty((len(maps), height, width), dtype=np.float64)
    for index, grid_map in enumerate(maps):
        out[index] = cv2.resize(np.asarray(grid_map, dtype=np.float64), (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def upsample_tensor(maps, shape: tuple[int, int]):
    """:func:`upsample_maps` as tensor ops: (N, h, w) float32 -> (N, *shape) float32, bilinear with
    pixel centres aligned (TensorFlow's half-pixel resize is OpenCV's INTER_LINEAR)."""
    from keras import ops

    return ops.image.resize(maps[..., None], tuple(shape), interpolation="bilinear", antialias=False)[..., 0]


@register_map_kind
class FeatureMap(MapKind):
    name = "feature"
    model_output = "map"
    source = "output"
    matches_losses = ("feature", "mined")
    default_for_losses = ("mined",)  # stageCAE: its own map is what it was trained for
    needs_training = True  # an untrained model's own map (train.py --epochs 0) means nothing
    description = "the model's own anomaly map (featureCAE: its feature reconstruction error; stageCAE: its per-stage cosine distances)"

    def maps(self, images, source, dtype, state=None):
        if source.shape[-1] != 1 or source.shape[:3] != images.shape[:3]:
            raise UserError(
                f"--method {self.name}: the model outputs {source.shape[1:]}, not an anomaly map of its input size; "
                "use ssim or l2 maps for reconstruction models"
            )
        return source[..., 0].astype(np.float64)

    def graph(self, images, source, state, dtype):
        from keras import ops

        return ops.cast(source[..., 0], dtype)


class FeatureDensityMap(MapKind):
    """A density fitted on the training images' feature grids; its map is the grid map upsampled."""

    model_output = "map"
    source = "features"

    def maps(self, images, source, dtype, state=None):
        return upsample_maps(state.score(source), images.shape[1:3])

    def graph(self, images, source, state, dtype):
        from keras import ops

        grid = self.grid_graph(ops.cast(source, "float32"), state)  # float32, as the numpy scorers
        return ops.cast(upsample_tensor(grid, (int(images.shape[1]), int(images.shape[2]))), dtype)

    def grid_graph(self, features, state):
        raise NotImplementedError


@register_map_kind
class PadimMap(FeatureDensityMap):
    name = "padim"
    state_file = "padim.npz"
    sums_file = "padim_sums.npz"
    default_for_losses = ("feature",)  # the best featureCAE map on magnetic_tile's finetuning subset (docs/benchmarks.md)
    description = "Mahalanobis distance to a Gaussian per grid position (PaDiM)"

    def fit(self, source, seed):
        fitter = self.fitter(seed)
        fitter.update(source)
        return fitter.state()

    def fitter(self, seed):
        return PadimFitter()

    def resume(self, sums, seed, source, state):
        moments = PositionMoments.from_arrays(sums, source)
        subsets = (moments.channel_subset, state.channel_subset)
        if (moments.n_channels, moments.grid) != (state.n_channels, state.grid) or moments.shift.shape[1] != state.mean.shape[-1] or (
                (subsets[0] is None) != (subsets[1] is None) or (subsets[0] is not None and not np.array_equal(*subsets))):
            raise UserError(f"{source}: sums of {moments.n_channels} channels on a {moments.grid[0]}x{moments.grid[1]} grid, not those of "
                            f"the Gaussians beside them ({state.n_channels} channels, {state.grid[0]}x{state.grid[1]}); rerun finetune.py")
        return PadimFitter(moments)

    def load_state(self, path):
        return load_position_gaussians(path)

    def lifted(self, state):
        if state.grid == (1, 1):
            return {}
        inverse = state.inv_covariance
        return {"inv_covariance": inverse.reshape(-1, *inverse.shape[-2:])}  # (P, D, D), as grid_graph uses it

    def grid_graph(self, features, state):
        """Mahalanobis distance of every position's vector to its Gaussian: one batched matrix product."""
        from keras import ops

        if state.channel_subset is not None:
            features = ops.take(features, ops.convert_to_tensor(state.channel_subset.astype("int32")), axis=-1)
        mean = ops.convert_to_tensor(state.mean)  # (h, w, D), or (1, 1, D): one Gaussian for every position
        inverse = ops.convert_to_tensor(state.inv_covariance)  # (h, w, D, D)
        delta = features - mean
        if state.grid == (1, 1):
            weighted = ops.einsum("nhwd,de->nhwe", delta, inverse[0, 0])
            return ops.sqrt(ops.maximum(ops.sum(weighted * delta, axis=-1), 0.0))
        # One matrix product per position with the inverses as stored, (P, D, D): no transpose or
        # reshape of them, so that fed in as an input (the ONNX export) they are used as they are.
        h, w = state.grid
        depth = int(state.mean.shape[-1])
        inverse = ops.reshape(inverse, (h * w, depth, depth)) if len(inverse.shape) == 4 else inverse
        by_position = ops.transpose(ops.reshape(delta, (-1, h * w, depth)), (1, 0, 2))  # (P, N, D)
        squared = ops.sum(ops.matmul(by_position, inverse) * by_position, axis=-1)  # (P, N)
        return ops.reshape(ops.transpose(ops.sqrt(ops.maximum(squared, 0.0))), (-1, h, w))


@register_map_kind
class KnnMap(FeatureDensityMap):
    name = "knn"
    state_file = "memory_bank.npz"
    sums_file = "knn_pool.npz"
    description = "distance to the nearest training feature vector of a coreset memory bank (PatchCore)"

    def fit(self, source, seed):
        fitter = self.fitter(seed)
        fitter.update(source)
        return fitter.state()

    def fitter(self, seed):
        return KnnFitter(seed)

    def resume(self, sums, seed, source, state):
        pool = VectorPool.from_arrays(sums, source)
        if pool.vectors.shape[1] != state.n_channels:
            raise UserError(f"{source}: a pool of {pool.vectors.shape[1]}-channel vectors, not those of the memory bank beside it "
                            f"({state.n_channels} channels); rerun finetune.py")
        return KnnFitter(seed, pool)

    def load_state(self, path):
        return load_memory_bank(path)

    def grid_graph(self, features, state):
        """Distance of every position's vector to its nearest bank vector, as MemoryBank.nearest: the
        argmin of |b|^2 - 2 q.b over the bank, in blocks of bank vectors (a fixed number of steps, so
        every format can express it; the products of one block bound the memory), then the exact
        distance to the chosen vector."""
        import tensorflow as tf  # Keras's argmin bitcasts floats (signed zeros), which ONNX has no operator for
        from keras import ops

        shape = ops.shape(features)
        queries = ops.reshape(features, (-1, shape[3]))
        best_value, best_index = None, None
        for start in range(0, len(state.bank), KNN_GRAPH_BLOCK):
            block = state.bank[start : start + KNN_GRAPH_BLOCK]
            norms = ops.convert_to_tensor(np.einsum("ij,ij->i", block, block))
            products = ops.matmul(-2.0 * queries, ops.convert_to_tensor(block.T)) + norms
            value, index = ops.min(products, axis=1), tf.argmin(products, axis=1, output_type=tf.int32) + start
            if best_value is None:
                best_value, best_index = value, index
            else:  # ties keep the earlier vector, as numpy's argmin over the whole bank
                better = value < best_value
                best_value, best_index = ops.where(better, value, best_value), ops.where(better, index, best_index)
        differences = queries - ops.take(ops.convert_to_tensor(state.bank), best_index, axis=0)
        return ops.reshape(ops.sqrt(ops.sum(differences * differences, axis=1)), shape[:3])
