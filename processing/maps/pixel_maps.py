"""The map kinds of pixel autoencoders: ``ssim`` and ``l2`` residual maps of the reconstruction
(the numpy maps are processing/maps/resmaps.py's; the graphs are the same maps in keras.ops)."""

from __future__ import annotations

import numpy as np

from autoencoder import ssim as ssim_window
from autoencoder.errors import UserError
from processing.maps.kinds import MapKind, register_map_kind
from processing.maps.resmaps import GRAY_WEIGHTS, RESMAP_RANGE, calculate_resmaps


def check_reconstruction(images: np.ndarray, outputs: np.ndarray, method: str) -> None:
    if outputs.shape != images.shape:
        raise UserError(f"--method {method}: the model outputs {outputs.shape[1:]}, not a reconstruction of its input; use --method "
                "feature")


def grayscale_tensor(images, dtype):
    """(N, H, W, C) tensor -> (N, H, W) in `dtype`, as resmaps.to_grayscale."""
    from keras import ops

    images = ops.cast(images, dtype)
    if images.shape[-1] == 1:
        return images[..., 0]
    return ops.sum(images * ops.convert_to_tensor(np.asarray(GRAY_WEIGHTS), dtype=dtype), axis=-1)


class ResidualMap(MapKind):
    """A map comparing the (grayscale) input with its reconstruction, clipped to RESMAP_RANGE."""

    model_output = "reconstruction"
    source = "output"
    dtypes = ("float64", "uint8")
    image_score = "component"
    clear_border = True  # the frame is where reconstruction fails: the original toolkit's rule

    def maps(self, images, source, dtype, state=None):
        check_reconstruction(images, source, self.name)
        return calculate_resmaps(images, source, method=self.name, dtype=dtype)

    def graph(self, images, source, state, dtype):
        from keras import ops

        x, y = grayscale_tensor(images, dtype), grayscale_tensor(source, dtype)
        low, high = RESMAP_RANGE[self.name]
        return ops.clip(self.residual_tensor(x, y), low, high)

    def residual_tensor(self, x, y):
        raise NotImplementedError


@register_map_kind
class SsimMap(ResidualMap):
    name = "ssim"
    value_range = RESMAP_RANGE["ssim"]
    matches_losses = ("ssim", "mssim")
    default_for_losses = ("ssim", "mssim")
    description = "1 - local SSIM of input and reconstruction (11x11 Gaussian window)"

    def residual_tensor(self, x, y):
        return ssim_window.ssim_map(x, y)


@register_map_kind
class L2Map(ResidualMap):
    name = "l2"
    value_range = RESMAP_RANGE["l2"]
    matches_losses = ("l2",)
    default_for_losses = ("l2",)
    description = "squared difference of input and reconstruction"

    def residual_tensor(self, x, y):
        from keras import ops

        return ops.square(x - y)
