"""A plain convolutional autoencoder with a dense latent vector: the baseline the others beat.

Encoder: five blocks of Conv(3x3, same) + BatchNorm + LeakyReLU + MaxPool(2), taking H x W down to
H/32 x W/32; the flattened features go through Dense(100), the linear "bottleneck". Decoder: Dense
back to the H/32 x W/32 feature map, then five mirrored blocks of UpSampling2D(2) + Conv + BatchNorm
+ LeakyReLU, and a 3x3 convolution with a sigmoid to the image channels.
"""

from __future__ import annotations

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

NAME = "baselineCAE"
LATENT_DIM = 100
ENCODER_FILTERS = (32, 32, 64, 64, 128)  # one max-pooling per block
DOWNSAMPLING = 2 ** len(ENCODER_FILTERS)


def _conv_block(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.LeakyReLU(negative_slope=0.2)(x)


@register_architecture(
    NAME,
    default_size=128,
    size_multiple=DOWNSAMPLING,
    description="conv+BN+LeakyReLU+maxpool encoder, Dense(100) bottleneck, upsampling+conv decoder",
)
def build_baseline_cae(input_shape: tuple[int, int, int], latent_dim: int = LATENT_DIM) -> keras.Model:
    """Build the baseline autoencoder for images of shape `input_shape` = (H, W, C).

    H and W must be multiples of 32. Input and output are float images in [0, 1] of shape
    (batch, H, W, C); the layer named "bottleneck" outputs (batch, latent_dim).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    for filters in ENCODER_FILTERS:
        x = layers.MaxPooling2D(2)(_conv_block(x, filters))
    feature_shape = (height // DOWNSAMPLING, width // DOWNSAMPLING, ENCODER_FILTERS[-1])
    code = layers.Dense(latent_dim, name=BOTTLENECK_LAYER)(layers.Flatten()(x))

    x = layers.Dense(feature_shape[0] * feature_shape[1] * feature_shape[2])(code)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Reshape(feature_shape)(x)
    for filters in reversed(ENCODER_FILTERS):
        x = _conv_block(layers.UpSampling2D(2)(x), filters)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=NAME)
