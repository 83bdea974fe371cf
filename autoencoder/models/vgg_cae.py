"""vggCAE: an autoencoder whose encoder is VGG16's convolutional part, with a small latent code.

The encoder is VGG16 without its fully connected layers (five blocks of 3x3 ReLU convolutions,
each ending in 2x2 max pooling, so H/32 x W/32 x 512 after block 5), followed by a linear 1x1
convolution named "bottleneck" down to `code_channels` (7 by default): a 7x7x7 code for the
default 224x224 input. The decoder mirrors it: each block becomes a stride-2 3x3 transposed
convolution and the block's remaining 3x3 convolutions (LeakyReLU, so no unit of the freshly
initialised decoder dies), then a 3x3 convolution with a sigmoid gives the image.

The encoder layers carry the names of ``keras.applications.VGG16`` ("block1_conv1", ...), so a
local VGG16 no-top weights file can initialise them (:func:`load_vgg16_encoder_weights`); the
model is trained from scratch otherwise and nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, check_divisible, register_architecture

logger = logging.getLogger(__name__)

NAME = "vggCAE"
CODE_CHANNELS = 7
DOWNSAMPLING = 32  # five 2x2 max-pooling layers
KERNEL_INIT = "he_normal"
# (block number, filters, convolutions) of VGG16.
VGG16_BLOCKS = ((1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3))
# keras.applications.vgg16.preprocess_input ("caffe" mode): RGB -> BGR, pixels 0..255, minus
# these per-channel ImageNet means (in BGR order).
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])


def vgg16_conv_layer_names() -> list[str]:
    """Names of VGG16's 13 convolutions, in order ("block1_conv1" ... "block5_conv3")."""
    return [f"block{block}_conv{index}" for block, _, n_convs in VGG16_BLOCKS for index in range(1, n_convs + 1)]


@register_architecture(
    NAME,
    default_size=224,
    size_multiple=DOWNSAMPLING,
    description="VGG16 convolutional encoder (optionally initialised from a local weights file), 7x7x7 code at 224 px, mirrored decoder",
)
def build_vgg_cae(input_shape: tuple[int, int, int], code_channels: int = CODE_CHANNELS) -> keras.Model:
    """Build vggCAE for images of shape `input_shape` = (H, W, C), H and W multiples of 32.

    Input and output are float images in [0, 1] of shape (batch, H, W, C); the layer named
    "bottleneck" outputs (batch, H/32, W/32, code_channels).
    """
    height, width, channels = input_shape
    check_divisible(NAME, input_shape, DOWNSAMPLING)
    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    for block, filters, n_convs in VGG16_BLOCKS:
        for index in range(1, n_convs + 1):
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", kernel_initializer=KERNEL_INIT,
                name=f"block{block}_conv{index}",
            )(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    code = layers.Conv2D(code_channels, 1, name=BOTTLENECK_LAYER)(x)

    x = code
    for block, filters, n_convs in reversed(VGG16_BLOCKS):
        x = layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", kernel_initializer=KERNEL_INIT, name=f"decoder_block{block}_up"
        )(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        for index in range(2, n_convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", kernel_initializer=KERNEL_INIT, name=f"decoder_block{block}_conv{index}")(x)
            x = layers.LeakyReLU(negative_slope=0.2)(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=NAME)


def fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite VGG16's first convolution so it takes [0, 1] images instead of caffe-preprocessed ones.

    VGG16 was trained on z = 255 * x[..., ::-1] - mean (BGR order). For a convolution,
    conv(z) = conv'(x) with kernel' = 255 * kernel with its input-channel axis flipped back to
    RGB, and bias' = bias - sum(kernel * mean) (exact away from the zero-padded border). For
    grayscale input (x replicated to the three channels) kernel' is summed over that axis.

    kernel: (3, 3, 3, F) float, bias: (F,) float; returns (3, 3, channels, F), (F,) float32.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    new_bias = bias - np.einsum("hwcf,c->f", kernel, CAFFE_BGR_MEAN)
    rgb_kernel = 255.0 * kernel[:, :, ::-1, :]
    if channels == 1:
        new_kernel = rgb_kernel.sum(axis=2, keepdims=True)
    elif channels == 3:
        new_kernel = rgb_kernel
    else:
        raise UserError(f"VGG16 weights need 1 or 3 input channels, got {channels}")
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def load_vgg16_encoder_weights(model: keras.Model, weights_path: str | Path) -> int:
    """Copy a local Keras VGG16 no-top weights file into the VGG16-named layers of `model`.

    `weights_path`: a file saved from ``keras.applications.VGG16(include_top=False)`` (a Keras 3
    ``.weights.h5`` file, or a legacy ``.h5`` weights file). The first convolution is rewritten by
    :func:`fold_caffe_preprocessing`, so the model keeps taking [0, 1] images. Returns the number
    of layers loaded (13). Raises ValueError naming the file when it is missing or not VGG16.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise UserError(f"--encoder-weights {path} not found: expected a Keras VGG16 no-top weights file (.weights.h5 or .h5)")
    names = vgg16_conv_layer_names()
    missing = [name for name in names if name not in {layer.name for layer in model.layers}]
    if missing:
        raise UserError(f"--encoder-weights: model {model.name} has no VGG16 encoder layer {missing[0]!r} (use -a {NAME})")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    fresh = {name: vgg.get_layer(name).get_weights()[0].copy() for name in names}
    try:
        # Keras only warns about parts of the file it cannot match; the check below catches them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vgg.load_weights(str(path))
    except Exception as error:  # keras/h5py raise many types for a wrong file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--encoder-weights {path}: not a Keras VGG16 no-top weights file ({first_line})") from None
    unchanged = [name for name in names if np.array_equal(vgg.get_layer(name).get_weights()[0], fresh[name])]
    if unchanged:
        raise UserError(f"--encoder-weights {path}: not a Keras VGG16 no-top weights file (no weights for layer {unchanged[0]})")
    channels = model.inputs[0].shape[-1]
    for name in names:
        kernel, bias = vgg.get_layer(name).get_weights()
        if name == names[0]:
            kernel, bias = fold_caffe_preprocessing(kernel, bias, channels)
        model.get_layer(name).set_weights([kernel, bias])
    logger.info("loaded VGG16 encoder weights from %s into %d layers", path, len(names))
    return len(names)


def freeze_vgg16_encoder(model: keras.Model) -> int:
    """Make the VGG16-named convolutions of `model` non-trainable; return how many were frozen.

    The bottleneck and the decoder stay trainable. Call before compiling the model.
    """
    names = set(vgg16_conv_layer_names())
    frozen = 0
    for layer in model.layers:
        if layer.name in names:
            layer.trainable = False
            frozen += 1
    if not frozen:
        raise UserError(f"--freeze-encoder: model {model.name} has no VGG16 encoder layers (use -a {NAME})")
    return frozen
