"""Pretrained feature backbones: EfficientNet-Lite0 (ImageNet weights read offline from a
PyTorch file, without torch) and keras.applications networks, as multi-stage feature extractors."""

from .backbones import Backbone, available_backbones, build_feature_extractor, get_backbone
from .efficientnet_lite import (
    build_efficientnet_lite0,
    efficientnet_lite0,
    grayscale_to_rgb,
    load_efficientnet_lite0_weights,
    preprocess_efficientnet_lite,
)
from .torch_weights import (
    RestrictedUnpickler,
    WeightsFileError,
    efficientnet_lite0_weights_path,
    load_torch_state_dict,
)

__all__ = [
    "Backbone",
    "RestrictedUnpickler",
    "WeightsFileError",
    "available_backbones",
    "build_efficientnet_lite0",
    "build_feature_extractor",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "get_backbone",
    "grayscale_to_rgb",
    "load_efficientnet_lite0_weights",
    "load_torch_state_dict",
    "preprocess_efficientnet_lite",
]
