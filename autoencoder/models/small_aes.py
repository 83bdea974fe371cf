"""Small autoencoders for 28x28 images (MNIST-sized): two fully connected ones and a small CNN.

They take only 28x28 inputs, grayscale or RGB; the fully connected ones flatten the image to
28 * 28 * C values. ReLU follows every layer but the sigmoid output.
"""

from __future__ import annotations

import math

from autoencoder.errors import UserError
from autoencoder.lazy import keras, layers
from autoencoder.models.registry import BOTTLENECK_LAYER, register_architecture

IMAGE_SIZE = 28


def _check_input_shape(name: str, input_shape: tuple[int, int, int]) -> None:
    height, width, _ = input_shape
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"{name}: input must be {IMAGE_SIZE}x{IMAGE_SIZE}, got {height}x{width}")


def _dense_autoencoder(name: str, input_shape: tuple[int, int, int], hidden_units: tuple[int, ...]) -> keras.Model:
    """Flatten -> Dense(hidden_units...) -> bottleneck -> mirrored Dense -> Dense(H*W*C, sigmoid) -> Reshape.

    The last entry of `hidden_units` is the width of the "bottleneck" layer.
    """
    _check_input_shape(name, input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Flatten()(inputs)
    *encoder_units, latent_dim = hidden_units
    for units in encoder_units:
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(latent_dim, activation="relu", name=BOTTLENECK_LAYER)(x)
    for units in reversed(encoder_units):
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dense(math.prod(input_shape), activation="sigmoid")(x)
    outputs = layers.Reshape(tuple(input_shape), name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=name)


@register_architecture(
    "fcnSimpleAE",
    default_size=IMAGE_SIZE,
    fixed_size=IMAGE_SIZE,
    description="fully connected 784-128-64-16-64-128-784 autoencoder for 28x28 images",
)
def build_fcn_simple_ae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Dense autoencoder 28*28*C -> 128 -> 64 -> 16 (bottleneck) -> 64 -> 128 -> 28*28*C.

    Input and output: float images in [0, 1] of shape (batch, 28, 28, C); bottleneck (batch, 16).
    """
    return _dense_autoencoder("fcnSimpleAE", input_shape, (128, 64, 16))


@register_architecture(
    "fcnImprovedAE",
    default_size=IMAGE_SIZE,
    fixed_size=IMAGE_SIZE,
    description="fully connected 784-512-256-128-16-128-256-512-784 autoencoder for 28x28 images",
)
def build_fcn_improved_ae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Dense autoencoder 28*28*C -> 512 -> 256 -> 128 -> 16 (bottleneck) -> 128 -> 256 -> 512 -> 28*28*C.

    Input and output: float images in [0, 1] of shape (batch, 28, 28, C); bottleneck (batch, 16).
    """
    return _dense_autoencoder("fcnImprovedAE", input_shape, (512, 256, 128, 16))


@register_architecture(
    "cnnAE",
    default_size=IMAGE_SIZE,
    fixed_size=IMAGE_SIZE,
    description="small conv autoencoder for 28x28 images: 28->14->7 (bottleneck 7x7x32)->14->28",
)
def build_cnn_ae(input_shape: tuple[int, int, int]) -> keras.Model:
    """Conv autoencoder 28x28xC -> 14x14x16 -> 7x7x32 (bottleneck) -> 14x14x16 -> 28x28xC.

    Input and output: float images in [0, 1] of shape (batch, 28, 28, C); bottleneck (batch, 7, 7, 32).
    """
    _check_input_shape("cnnAE", input_shape)
    channels = input_shape[-1]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    code = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name=BOTTLENECK_LAYER)(x)
    x = layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(code)
    outputs = layers.Conv2DTranspose(
        channels, 3, strides=2, padding="same", activation="sigmoid", name="reconstruction"
    )(x)
    return keras.Model(inputs, outputs, name="cnnAE")
