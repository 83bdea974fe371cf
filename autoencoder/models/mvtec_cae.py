"""The SSIM convolutional autoencoder of Bergmann et al. (2018), Table 1.

P. Bergmann, S. Löwe, M. Fauser, D. Sattlegger, C. Steger, "Improving Unsupervised Defect
Segmentation by Applying Structural Similarity to Autoencoders", arXiv:1807.02011.

The encoder halves the resolution four times (4x4 stride-2 convolutions) down to H/16, then a
'valid' convolution whose kernel covers the whole H/16 x W/16 map gives a 1x1x100 latent code.
The decoder mirrors it: a transposed convolution with the same kernel restores H/16 x W/16, then
the mirrored stack of 3x3 convolutions and 4x4 stride-2 transposed convolutions, and a final 3x3
convolution to the image's channels with a sigmoid. LeakyReLU(0.2) follows every layer except the
linear bottleneck and the sigmoid output.
"""

from __future__ import annotations

from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

NAME = "mvtecCAE"
LATENT_DIM = 100  # d in the paper
DOWNSAMPLING = 16  # four stride-2 layers
# He initialisation suits the LeakyReLU stack: with Keras's default Glorot initialisation the
# signal shrinks through the 18 layers and training sits for many epochs at a constant output.
KERNEL_INIT = "he_normal"

# Encoder of Table 1 up to the bottleneck: (filters, kernel, stride), all with 'same' padding.
ENCODER_LAYERS = (
    (32, 4, 2),
    (32, 4, 2),
    (32, 3, 1),
    (64, 4, 2),
    (64, 3, 1),
    (128, 4, 2),
    (64, 3, 1),
    (32, 3, 1),
)


def _leaky(x):
    return layers.LeakyReLU(negative_slope=0.2)(x)


@register_architecture(
    NAME,
    default_size=128,
    size_multiple=DOWNSAMPLING,
    description="SSIM autoencoder of Bergmann et al. 2018 (Table 1): 1x1x100 bottleneck, LeakyReLU(0.2)",
)
def build_mvtec_cae(input_shape: tuple[int, int, int], latent_dim: int = LATENT_DIM) -> keras.Model:
    """Build the Bergmann et al. SSIM autoencoder for images of shape `input_shape` = (H, W, C).

    H and W must be multiples of 16. Input and output are float images in [0, 1] of shape
    (batch, H, W, C); the layer named "bottleneck" outputs (batch, 1, 1, latent_dim).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)
    code_kernel = (height // DOWNSAMPLING, width // DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    for filters, kernel, stride in ENCODER_LAYERS:
        x = _leaky(layers.Conv2D(filters, kernel, strides=stride, padding="same", kernel_initializer=KERNEL_INIT)(x))
    code = layers.Conv2D(latent_dim, code_kernel, padding="valid", kernel_initializer=KERNEL_INIT, name=BOTTLENECK_LAYER)(x)

    # Decoder: undo the bottleneck, then walk the encoder table backwards. A layer that mapped
    # `filters_in` channels to its own output is mirrored by one that maps back to `filters_in`
    # channels (transposed and strided where the encoder layer was strided).
    x = _leaky(layers.Conv2DTranspose(ENCODER_LAYERS[-1][0], code_kernel, padding="valid", kernel_initializer=KERNEL_INIT)(code))
    for index in range(len(ENCODER_LAYERS) - 1, 0, -1):
        _, kernel, stride = ENCODER_LAYERS[index]
        filters_in = ENCODER_LAYERS[index - 1][0]
        if stride == 1:
            x = layers.Conv2D(filters_in, kernel, padding="same", kernel_initializer=KERNEL_INIT)(x)
        else:
            x = layers.Conv2DTranspose(filters_in, kernel, strides=stride, padding="same", kernel_initializer=KERNEL_INIT)(x)
        x = _leaky(x)
    # The first encoder layer (input -> 32 channels, stride 2): upsample back to H x W, then a
    # 3x3 convolution produces the image channels.
    _, kernel, stride = ENCODER_LAYERS[0]
    x = _leaky(layers.Conv2DTranspose(ENCODER_LAYERS[0][0], kernel, strides=stride, padding="same", kernel_initializer=KERNEL_INIT)(x))
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=NAME)
