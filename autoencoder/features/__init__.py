"""Pretrained feature backbones: EfficientNet-Lite0 (ImageNet weights read offline from a
PyTorch file, without torch) and keras.applications networks, as multi-stage feature extractors."""

from .torch_weights import (
    RestrictedUnpickler,
    WeightsFileError,
    efficientnet_lite0_weights_path,
    load_torch_state_dict,
)
