"""The loss registry: each training loss's name, the colour mode it needs and the metric it is
monitored with, without TensorFlow.

The scripts take ``--loss``'s choices from here and check ``--loss`` and ``--color`` before
TensorFlow is imported; autoencoder/losses.py registers each loss's function under the same name
(:func:`autoencoder.losses.loss_function`). A new loss is one :func:`register_loss` here and its
function there.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoencoder.errors import UserError
from autoencoder.model_info import COLOR_MODES


@dataclass(frozen=True)
class LossSpec:
    """A training loss as the scripts know it (its function: autoencoder/losses.py)."""

    name: str
    summary: str  # for --help and docs
    color_mode: str | None = None  # the colour mode it needs (None: any)
    # What training monitors beside the loss: "ssim", "mssim", "by_color" (SSIM for grayscale,
    # MS-SSIM for RGB) or None (a feature-space loss: no image similarity to report).
    metric: str | None = "by_color"


_LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    if spec.name in _LOSSES:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    _LOSSES[spec.name] = spec
    return spec


# As in the original toolkit, the SSIM loss is for grayscale images and the MS-SSIM loss for RGB
# images; L2 works with both (and the feature losses with whatever their backbone takes).
register_loss(LossSpec("ssim", "1 - SSIM of input and reconstruction", color_mode="grayscale", metric="ssim"))
register_loss(LossSpec("mssim", "1 - MS-SSIM of input and reconstruction", color_mode="rgb", metric="mssim"))
register_loss(LossSpec("l2", "mean squared error of input and reconstruction"))
register_loss(LossSpec("feature", "the mean of the model's own anomaly map (featureCAE)", metric=None))
register_loss(LossSpec("mined", "the map's mean with the best-reconstructed 90% of positions down-weighted", metric=None))


def available_losses() -> list[str]:
    return list(_LOSSES)


def get_loss_spec(name: str) -> LossSpec:
    return _LOSSES[check_loss_name(name)]


def loss_for_color(color_mode: str) -> str:
    """The SSIM-family loss of a colour mode (ssim for grayscale, mssim for RGB)."""
    return next(spec.name for spec in _LOSSES.values() if spec.color_mode == color_mode)


def check_loss_name(name: str) -> str:
    if name not in _LOSSES:
        raise UserError(f"--loss {name!r}: expected one of {', '.join(_LOSSES)}")
    return name


def check_color_mode(color_mode: str) -> str:
    if color_mode not in COLOR_MODES:
        raise UserError(f"--color {color_mode!r}: expected one of {', '.join(COLOR_MODES)}")
    return color_mode


def check_loss_color(loss_name: str, color_mode: str) -> None:
    """Raise ValueError when `loss_name` does not suit `color_mode` (or either is unknown)."""
    check_loss_name(loss_name)
    check_color_mode(color_mode)
    needed = _LOSSES[loss_name].color_mode
    if needed is not None and color_mode != needed:
        other = loss_for_color(color_mode)
        raise UserError(
            f"--loss {loss_name} needs --color {needed} (got {color_mode}); use --loss {other} for "
            f"{'RGB' if color_mode == 'rgb' else 'grayscale'} images"
        )
