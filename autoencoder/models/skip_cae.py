"""A convolutional autoencoder with symmetric skip connections, after RED-Net (Mao, Shen & Yang
2016, "Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks with Symmetric Skip
Connections", arXiv:1606.08921).

The encoder is a chain of 3x3 convolutions + ReLU; every second one has stride 2, so the resolution
halves four times, down to H/16 x W/16, where a linear 3x3 convolution gives the "bottleneck". The
decoder mirrors each encoder convolution with a 3x3 transposed convolution (stride 2 where the
encoder's was) that maps back to the encoder layer's input shape. As in RED-Net, every second
encoder feature map is added element-wise to the decoder feature map of the same shape, and the sum
goes through ReLU. The innermost pair (the H/16 feature map right before the bottleneck) gets no skip
connection: it would carry the whole encoder output around the bottleneck.
"""

from __future__ import annotations

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

NAME = "skipCAE"
# Encoder convolutions (filters, stride); a 3x3 kernel each.
ENCODER_LAYERS = (
    (32, 1),
    (32, 2),
    (64, 1),
    (64, 2),
    (128, 1),
    (128, 2),
    (128, 1),
    (128, 2),
)
SKIP_EVERY = 2  # RED-Net passes a skip connection every two layers
BOTTLENECK_CHANNELS = 16  # latent code: (H/16, W/16, 16)
DOWNSAMPLING = 2 ** sum(stride == 2 for _, stride in ENCODER_LAYERS)


@register_architecture(
    NAME,
    default_size=128,
    size_multiple=DOWNSAMPLING,
    description="RED-Net style conv/deconv autoencoder with symmetric additive skip connections every 2 layers",
)
def build_skip_cae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Build the skip-connection autoencoder for images of shape `input_shape` = (H, W, C).

    H and W must be multiples of 16. Input and output are float images in [0, 1] of shape
    (batch, H, W, C); the layer named "bottleneck" outputs (batch, H/16, W/16, 16).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    encoder_features = []  # output of encoder layer i, kept for the skip connections
    x = inputs
    for filters, stride in ENCODER_LAYERS:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
        encoder_features.append(x)
    code = layers.Conv2D(BOTTLENECK_CHANNELS, 3, padding="same", name=BOTTLENECK_LAYER)(x)

    # Undo the bottleneck convolution: back to the shape of the innermost encoder feature map (no
    # skip connection here, see the module docstring).
    x = layers.Conv2DTranspose(ENCODER_LAYERS[-1][0], 3, padding="same", activation="relu")(code)
    for index in range(len(ENCODER_LAYERS) - 1, 0, -1):
        # Mirror encoder layer `index`: map its output shape back to its input shape, which is the
        # shape of encoder feature map `index - 1`.
        _, stride = ENCODER_LAYERS[index]
        previous = index - 1
        x = layers.Conv2DTranspose(ENCODER_LAYERS[previous][0], 3, strides=stride, padding="same")(x)
        if (previous + 1) % SKIP_EVERY == 0:  # the 2nd, 4th, 6th encoder feature maps
            x = layers.Add()([x, encoder_features[previous]])
        x = layers.ReLU()(x)
    _, stride = ENCODER_LAYERS[0]
    outputs = layers.Conv2DTranspose(
        channels, 3, strides=stride, padding="same", activation="sigmoid", name="reconstruction"
    )(x)
    return keras.Model(inputs, outputs, name=NAME)
