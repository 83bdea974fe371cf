"""Architectures by name. Importing this package registers every architecture module (without
importing Keras: the modules use autoencoder/lazy.py until a model is built)."""

# Each import registers the architectures its module defines.
from autoencoder.models import (  # noqa: E402,F401
    baseline_cae,
    feature_cae,
    inception_cae,
    mvtec_cae,
    resnet_cae,
    skip_cae,
    small_aes,
    stage_cae,
    vgg_cae,
)
from autoencoder.models.registry import (
    BOTTLENECK_LAYER,
    Architecture,
    available_architectures,
    build_model,
    channels_for,
    get_architecture,
    import_custom_layers,
    register_architecture,
)

__all__ = [
    "BOTTLENECK_LAYER",
    "Architecture",
    "available_architectures",
    "build_model",
    "channels_for",
    "get_architecture",
    "import_custom_layers",
    "register_architecture",
]
