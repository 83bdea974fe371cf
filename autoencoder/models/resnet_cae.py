"""A convolutional autoencoder built from residual blocks (He et al. 2016, "Deep Residual Learning
for Image Recognition", the basic two-convolution block).

A residual block computes ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)); the shortcut is
the identity when the shape is unchanged and a 1x1 convolution + BN (strided like the block)
otherwise. The encoder is a 3x3 stem and four stride-2 residual blocks down to H/16 x W/16, then a
linear 1x1 convolution to a few channels: the "bottleneck". The decoder mirrors it with four
(2x upsampling, residual block) stages, each back to the resolution and width of the matching
encoder stage's input, and a 3x3 sigmoid convolution to the image channels.
"""

from __future__ import annotations

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

NAME = "resnetCAE"
STEM_FILTERS = 32
STAGE_FILTERS = (32, 64, 128, 128)  # one stride-2 residual block each
BOTTLENECK_CHANNELS = 16  # latent code: (H/16, W/16, 16)
DOWNSAMPLING = 2 ** len(STAGE_FILTERS)


def _conv_bn(x, filters: int, kernel: int, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    return layers.BatchNormalization()(x)


def residual_block(x, filters: int, strides: int = 1):
    """Basic residual block on `x` (batch, h, w, c) -> (batch, h/strides, w/strides, filters)."""
    residual = layers.ReLU()(_conv_bn(x, filters, 3, strides))
    residual = _conv_bn(residual, filters, 3)
    if strides == 1 and x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = _conv_bn(x, filters, 1, strides)
    return layers.ReLU()(layers.Add()([residual, shortcut]))


@register_architecture(
    NAME,
    default_size=128,
    size_multiple=DOWNSAMPLING,
    description="residual-block encoder (strided) and decoder (upsampling), 16-channel bottleneck at 1/16 resolution",
)
def build_resnet_cae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Build the residual autoencoder for images of shape `input_shape` = (H, W, C).

    H and W must be multiples of 16. Input and output are float images in [0, 1] of shape
    (batch, H, W, C); the layer named "bottleneck" outputs (batch, H/16, W/16, 16).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = layers.ReLU()(_conv_bn(inputs, STEM_FILTERS, 3))
    for filters in STAGE_FILTERS:
        x = residual_block(x, filters, strides=2)
    code = layers.Conv2D(BOTTLENECK_CHANNELS, 1, name=BOTTLENECK_LAYER)(x)

    # Each decoder stage mirrors an encoder stage: back to that stage's input resolution and width.
    x = code
    for filters in reversed((STEM_FILTERS, *STAGE_FILTERS[:-1])):
        x = residual_block(layers.UpSampling2D(2)(x), filters)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=NAME)
