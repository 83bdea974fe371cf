"""The names of the training losses and which colour mode each needs, without TensorFlow.

The scripts check ``--loss`` and ``--color`` against these before TensorFlow is imported;
autoencoder/losses.py (the loss functions themselves) uses the same rules.
"""

from __future__ import annotations

LOSS_NAMES = ("ssim", "mssim", "l2", "feature", "mined")
COLOR_MODES = ("grayscale", "rgb")
# As in the original toolkit, the SSIM loss is for grayscale images and the MS-SSIM loss for RGB
# images; L2 works with both (and the feature loss with whatever its backbone takes).
COLOR_OF_LOSS = {"ssim": "grayscale", "mssim": "rgb"}
LOSS_FOR_COLOR = {"grayscale": "ssim", "rgb": "mssim"}


def check_loss_name(name: str) -> str:
    if name not in LOSS_NAMES:
        raise ValueError(f"--loss {name!r}: expected one of {', '.join(LOSS_NAMES)}")
    return name


def check_color_mode(color_mode: str) -> str:
    if color_mode not in COLOR_MODES:
        raise ValueError(f"--color {color_mode!r}: expected one of {', '.join(COLOR_MODES)}")
    return color_mode


def check_loss_color(loss_name: str, color_mode: str) -> None:
    """Raise ValueError when `loss_name` does not suit `color_mode` (or either is unknown)."""
    check_loss_name(loss_name)
    check_color_mode(color_mode)
    needed = COLOR_OF_LOSS.get(loss_name)
    if needed is not None and color_mode != needed:
        other = LOSS_FOR_COLOR[color_mode]
        raise ValueError(
            f"--loss {loss_name} needs --color {needed} (got {color_mode}); use --loss {other} for "
            f"{'RGB' if color_mode == 'rgb' else 'grayscale'} images"
        )
