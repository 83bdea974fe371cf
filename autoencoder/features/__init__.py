"""Pretrained feature backbones: EfficientNet-Lite0, Lite1 and Lite2 (ImageNet weights read
offline from PyTorch files, without torch) and keras.applications networks, as multi-stage
feature extractors."""

from .backbones import Backbone, available_backbones, build_feature_extractor, get_backbone
from .efficientnet_lite import (
    LITE_VARIANTS,
    build_efficientnet_lite,
    build_efficientnet_lite0,
    efficientnet_lite,
    efficientnet_lite0,
    get_lite_variant,
    grayscale_to_rgb,
    load_efficientnet_lite0_weights,
    load_efficientnet_lite_weights,
    preprocess_efficientnet_lite,
)
from .torch_weights import (
    RestrictedUnpickler,
    WeightsFileError,
    efficientnet_lite0_weights_path,
    efficientnet_lite_weights_path,
    load_torch_state_dict,
)

__all__ = [
    "LITE_VARIANTS",
    "Backbone",
    "RestrictedUnpickler",
    "WeightsFileError",
    "available_backbones",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "build_feature_extractor",
    "efficientnet_lite",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "efficientnet_lite_weights_path",
    "get_backbone",
    "get_lite_variant",
    "grayscale_to_rgb",
    "load_efficientnet_lite0_weights",
    "load_efficientnet_lite_weights",
    "load_torch_state_dict",
    "preprocess_efficientnet_lite",
]
