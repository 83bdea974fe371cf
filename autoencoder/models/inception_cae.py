"""A convolutional autoencoder built from inception blocks (Szegedy et al. 2015, "Going Deeper with
Convolutions", with the 5x5 branch factorised into two 3x3 convolutions as in Inception-v3).

Each inception block runs four branches in parallel on the same input and concatenates them:
1x1 conv; 1x1 -> 3x3 conv; 1x1 -> 3x3 -> 3x3 conv (a 5x5 receptive field); 3x3 max-pool -> 1x1
conv. The encoder is a 3x3 stem followed by four (inception block, 2x2 max-pool) stages down to
H/16 x W/16, then a linear 1x1 convolution to a few channels: the "bottleneck". The decoder mirrors
it with four (2x upsampling, inception block) stages and a 3x3 sigmoid convolution to the image
channels.
"""

from __future__ import annotations

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

NAME = "inceptionCAE"
STEM_FILTERS = 16
BRANCH_FILTERS = (8, 16, 32, 32)  # per branch; a block outputs 4x this many channels
BOTTLENECK_CHANNELS = 16  # latent code: (H/16, W/16, 16)
DOWNSAMPLING = 2 ** len(BRANCH_FILTERS)


def _conv(x, filters: int, kernel: int):
    return layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)


def inception_block(x, filters: int):
    """Four parallel branches on `x` (batch, h, w, c), concatenated and batch-normalised.

    Returns a tensor of shape (batch, h, w, 4 * filters).
    """
    reduced = max(filters // 2, 4)  # 1x1 reduction in front of the 3x3 convolutions
    pointwise = _conv(x, filters, 1)
    single_3x3 = _conv(_conv(x, reduced, 1), filters, 3)
    double_3x3 = _conv(_conv(_conv(x, reduced, 1), filters, 3), filters, 3)
    pooled = _conv(layers.MaxPooling2D(3, strides=1, padding="same")(x), filters, 1)
    merged = layers.Concatenate(axis=-1)([pointwise, single_3x3, double_3x3, pooled])
    return layers.BatchNormalization()(merged)


@register_architecture(
    NAME,
    default_size=128,
    size_multiple=DOWNSAMPLING,
    description="inception-block encoder/decoder, 1x1-conv bottleneck of 16 channels at 1/16 resolution",
)
def build_inception_cae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Build the inception autoencoder for images of shape `input_shape` = (H, W, C).

    H and W must be multiples of 16. Input and output are float images in [0, 1] of shape
    (batch, H, W, C); the layer named "bottleneck" outputs (batch, H/16, W/16, 16).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = _conv(inputs, STEM_FILTERS, 3)
    for filters in BRANCH_FILTERS:
        x = layers.MaxPooling2D(2)(inception_block(x, filters))
    code = layers.Conv2D(BOTTLENECK_CHANNELS, 1, name=BOTTLENECK_LAYER)(x)

    x = code
    for filters in reversed(BRANCH_FILTERS):
        x = inception_block(layers.UpSampling2D(2)(x), filters)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=NAME)
