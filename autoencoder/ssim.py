"""The one definition of SSIM in the toolkit: its window and constants, and its map in ``keras.ops``.

Wang et al. 2004 with the parameters of the original toolkit, ``tf.image.ssim`` and
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``: an 11-tap Gaussian window of sigma 1.5 (skimage's
radius ``int(3.5 * 1.5 + 0.5) = 5``), c1 = (0.01 L)^2, c2 = (0.03 L)^2 for data range L = 1.

Three places compute SSIM from these, each the way its consumer needs it:

- the training losses (autoencoder/losses.py): 'valid' windows, averaged per image, in keras.ops;
- the residual maps (processing/maps/resmaps.py): ``1 - local SSIM`` with mirrored borders in
  float64 numpy/OpenCV, the fast path of finetune.py, test.py and predict.py;
- the exported graph (processing/workflow/export.py): the same map in keras.ops
  (:func:`ssim_map`), in float64 or float32.

Nothing here imports TensorFlow at module level (the numpy maps need the window without it).
"""

from __future__ import annotations

import numpy as np

SIGMA = 1.5
RADIUS = 5  # int(3.5 * SIGMA + 0.5): skimage's truncate of 3.5 sigmas
WINDOW = 2 * RADIUS + 1
K1, K2 = 0.01, 0.03


def constants(data_range: float = 1.0) -> tuple[float, float]:
    """(c1, c2) = ((K1 L)^2, (K2 L)^2) for data range L."""
    return (K1 * data_range) ** 2, (K2 * data_range) ** 2


def gaussian_taps(sigma: float, size: int) -> np.ndarray:
    """The normalised 1-D Gaussian of `size` taps centred on the middle one, float64 (for an odd
    size, scipy.ndimage.gaussian_filter's kernel of radius size // 2)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def window_taps() -> np.ndarray:
    """The SSIM window's 1-D taps (its 2-D window is their outer product), float64."""
    return gaussian_taps(SIGMA, WINDOW)


C1, C2 = constants(1.0)


def mirrored_separable_filter(planes, taps):
    """Filter (N, H, W, K) planes with the 1-D `taps` along H, then W, each plane on its own
    (depthwise), borders mirrored (d c b a | a b c d: scipy 'reflect', cv2 BORDER_REFLECT)."""
    from keras import ops

    radius = (len(taps) - 1) // 2
    count = int(planes.shape[-1])
    kernel = ops.convert_to_tensor(np.asarray(taps), dtype=planes.dtype)
    vertical = ops.tile(ops.reshape(kernel, (-1, 1, 1, 1)), (1, 1, count, 1))
    horizontal = ops.tile(ops.reshape(kernel, (1, -1, 1, 1)), (1, 1, count, 1))
    x = ops.pad(planes, [[0, 0], [radius, radius], [0, 0], [0, 0]], mode="symmetric")
    x = ops.depthwise_conv(x, vertical, strides=1, padding="valid")
    x = ops.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], mode="symmetric")
    return ops.depthwise_conv(x, horizontal, strides=1, padding="valid")


def ssim_map(x, y):
    """``1 - local SSIM`` of (N, H, W) float batches, mirrored borders: the map of
    processing/maps/resmaps.py ssim_resmaps, as tensor ops (float64 or float32)."""
    from keras import ops

    # (Co)variances do not change when both images are shifted by the same constant; shifted by
    # the input's mean, the second moments are small and E[x^2] - E[x]^2 cancels far less in
    # float32 (TFLite, ONNX). The means themselves are taken unshifted.
    shift = ops.mean(x, axis=(1, 2), keepdims=True)
    xs, ys = x - shift, y - shift
    planes = ops.stack([x, y, xs * ys, xs * xs + ys * ys], axis=-1)
    filtered = mirrored_separable_filter(planes, window_taps())
    mean_x, mean_y, mean_xy_s, mean_sq_sum_s = (filtered[..., index] for index in range(4))
    mean_xs, mean_ys = mean_x - shift, mean_y - shift
    covariance = mean_xy_s - mean_xs * mean_ys
    variances = mean_sq_sum_s - (mean_xs * mean_xs + mean_ys * mean_ys)
    numerator = (2.0 * mean_x * mean_y + C1) * (2.0 * covariance + C2)
    denominator = (mean_x * mean_x + mean_y * mean_y + C1) * (variances + C2)
    return 1.0 - numerator / denominator
