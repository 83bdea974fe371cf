"""Training losses and metrics: SSIM, multi-scale SSIM and L2, written with ``keras.ops``.

Images are NHWC float tensors with values in ``[0, max_val]`` (``[0, 1]`` for this toolkit).
Everything here uses only ``keras.ops`` so it runs under the TensorFlow and JAX backends.

SSIM follows ``tf.image.ssim`` (Wang et al. 2004): local statistics under a Gaussian window
applied as a 'valid' separable convolution per channel, SSIM averaged over the valid region,
then over channels. MS-SSIM follows ``tf.image.ssim_multiscale`` (Wang et al. 2003) but also
works on images too small for all of its scales; see :func:`ms_ssim`.

The loss and metric functions are registered with Keras (package ``"autoencoder"``), so a saved
``.keras`` model compiled with them reloads with plain ``keras.models.load_model(path)``.
"""

from __future__ import annotations

import keras
from keras import ops

from autoencoder import ssim as ssim_window
from autoencoder.loss_rules import available_losses, check_color_mode, check_loss_color, check_loss_name, get_loss_spec

__all__ = [
    "ssim",
    "ms_ssim",
    "ssim_loss",
    "mssim_loss",
    "l2_loss",
    "ssim_metric",
    "mssim_metric",
    "LOSSES",
    "get_loss",
    "get_metrics",
    "check_loss_color",
]

DEFAULT_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _as_float_pair(x, y, func_name: str):
    """Both tensors as float32 (float64 if `x` is); ValueError when their known shapes differ.

    Half precision (mixed-precision outputs) is widened: the variances in SSIM are
    differences of nearly equal numbers.
    """
    x = ops.convert_to_tensor(x)
    y = ops.convert_to_tensor(y)
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        x = ops.cast(x, "float32")
    y = ops.cast(y, x.dtype)
    x_shape, y_shape = tuple(x.shape), tuple(y.shape)
    if len(x_shape) != len(y_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(x_shape, y_shape)
    ):
        raise ValueError(f"{func_name}: image shapes differ: {x_shape} vs {y_shape}")
    return x, y


def _as_static_image_pair(x, y, func_name: str):
    """(x, y, height, width): float NHWC tensors whose H, W and C are known at trace time.

    A dimension known for only one of them (e.g. for the model output but not for the
    targets of a dataset) is imposed on the other.
    """
    x, y = _as_float_pair(x, y, func_name)
    if len(x.shape) != 4:
        raise ValueError(f"{func_name}: expected NHWC images of rank 4, got shape {tuple(x.shape)}")
    height, width, channels = (
        a if a is not None else b for a, b in zip(tuple(x.shape)[1:], tuple(y.shape)[1:])
    )
    if height is None or width is None or channels is None:
        raise ValueError(
            f"{func_name}: image height, width and channels must be known when the graph is built, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if tuple(x.shape)[1:] != (height, width, channels):
        x = ops.reshape(x, (-1, height, width, channels))
    if tuple(y.shape)[1:] != (height, width, channels):
        y = ops.reshape(y, (-1, height, width, channels))
    return x, y, height, width


def _ssim_and_cs_per_channel(x, y, max_val, filter_size, filter_sigma, k1, k2):
    """Mean SSIM and mean contrast-structure term per image and channel, each shape (N, C).

    `x`, `y`: (N, H, W, C) float tensors of the same shape, H and W >= filter_size.
    """
    channels = x.shape[-1]
    taps = ops.convert_to_tensor(ssim_window.gaussian_taps(filter_sigma, filter_size), dtype=x.dtype)
    # Four moments are enough: SSIM needs var_x + var_y, never var_x and var_y apart.
    moments = ops.concatenate([x, y, x * y, x * x + y * y], axis=-1)
    depth = 4 * channels
    vertical = ops.tile(ops.reshape(taps, (filter_size, 1, 1, 1)), (1, 1, depth, 1))
    horizontal = ops.tile(ops.reshape(taps, (1, filter_size, 1, 1)), (1, 1, depth, 1))
    local = ops.depthwise_conv(moments, vertical, padding="valid")
    local = ops.depthwise_conv(local, horizontal, padding="valid")
    mean_x, mean_y, mean_xy, mean_sq_sum = ops.split(local, 4, axis=-1)

    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    two_mean_product = 2.0 * mean_x * mean_y
    mean_sq = mean_x * mean_x + mean_y * mean_y
    luminance = (two_mean_product + c1) / (mean_sq + c1)
    contrast_structure = (2.0 * mean_xy - two_mean_product + c2) / (mean_sq_sum - mean_sq + c2)
    ssim_per_channel = ops.mean(luminance * contrast_structure, axis=(1, 2))
    cs_per_channel = ops.mean(contrast_structure, axis=(1, 2))
    return ssim_per_channel, cs_per_channel


def ssim(x, y, max_val=1.0, filter_size=ssim_window.WINDOW, filter_sigma=ssim_window.SIGMA, k1=ssim_window.K1, k2=ssim_window.K2):
    """Mean structural similarity of each image pair, like ``tf.image.ssim``.

    Parameters
    ----------
    x, y : tensors of shape (N, H, W, C), float, values in [0, max_val]
        H and W must be static and at least `filter_size`.
    max_val : float
        Dynamic range of the pixel values.
    filter_size, filter_sigma : int, float
        Side and standard deviation of the Gaussian window.
    k1, k2 : float
        Stabilising constants, c1 = (k1 * max_val)**2 and c2 = (k2 * max_val)**2.

    Returns
    -------
    tensor of shape (N,), dtype of `x`: SSIM averaged over the valid region, then over channels.
    """
    x, y, height, width = _as_static_image_pair(x, y, "ssim")
    if min(height, width) < filter_size:
        raise ValueError(
            f"ssim: images are {height}x{width}, smaller than filter_size {filter_size}"
        )
    ssim_per_channel, _ = _ssim_and_cs_per_channel(
        x, y, max_val, filter_size, filter_sigma, k1, k2
    )
    return ops.mean(ssim_per_channel, axis=-1)


def _halve(images):
    """2x2 average pooling; an odd side first gets its last row/column repeated (as TF does)."""
    height, width = images.shape[1], images.shape[2]
    if height % 2 or width % 2:
        images = ops.pad(images, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="symmetric")
    return ops.average_pool(images, pool_size=2, strides=2, padding="valid")


def _number_of_scales(height: int, width: int, filter_size: int, max_scales: int) -> int:
    """How many scales, halving with ceil each time, keep both sides >= filter_size."""
    scales = 0
    while scales < max_scales and min(height, width) >= filter_size:
        scales += 1
        height, width = -(-height // 2), -(-width // 2)
    return scales


def _safe_pow(base, exponent):
    """``max(base, 0) ** exponent`` whose gradient is 0, not NaN, where base <= 0."""
    positive = base > 0
    safe_base = ops.where(positive, base, ops.ones_like(base))
    return ops.where(positive, ops.power(safe_base, exponent), ops.zeros_like(base))


def ms_ssim(
    x,
    y,
    max_val=1.0,
    power_factors=DEFAULT_POWER_FACTORS,
    filter_size=ssim_window.WINDOW,
    filter_sigma=ssim_window.SIGMA,
    k1=ssim_window.K1,
    k2=ssim_window.K2,
):
    """Multi-scale SSIM of each image pair, like ``tf.image.ssim_multiscale``.

    At each scale but the last, the mean contrast-structure term is taken; at the last, the full
    SSIM. Scales are separated by 2x2 average pooling (an odd side is padded by repeating its last
    row/column first). The weighted geometric mean over scales, with negative terms set to 0, is
    computed per channel and then averaged over channels.

    Unlike TensorFlow, which needs sides >= (filter_size - 1) * 2**4 + 1 = 161 for the five default
    scales, this uses as many of the scales as fit: a scale fits when both of its sides are
    >= `filter_size` (so 32x32 images get two scales, 64x64 get three). When scales are dropped,
    the first `S` power factors are rescaled to keep the total of all `power_factors` (1 for
    normalised factors), so values stay comparable across image sizes. With every scale fitting
    the result equals TensorFlow's.

    Parameters
    ----------
    x, y : tensors of shape (N, H, W, C), float, values in [0, max_val]
        H and W must be static and at least `filter_size`.
    power_factors : sequence of float
        Exponent of each scale, finest first; its length is the most scales used.

    Returns
    -------
    tensor of shape (N,), dtype of `x`, values in [0, 1] (1 for identical images).
    """
    x, y, height, width = _as_static_image_pair(x, y, "ms_ssim")
    power_factors = [float(p) for p in power_factors]
    scales = _number_of_scales(height, width, filter_size, len(power_factors))
    if scales == 0:
        raise ValueError(
            f"ms_ssim: images are {height}x{width}, smaller than filter_size {filter_size}"
        )
    used_factors = power_factors[:scales]
    if scales < len(power_factors):
        rescale = sum(power_factors) / sum(used_factors)
        used_factors = [p * rescale for p in used_factors]

    weighted_terms = []
    for scale, factor in enumerate(used_factors):
        if scale > 0:
            x, y = _halve(x), _halve(y)
        ssim_per_channel, cs_per_channel = _ssim_and_cs_per_channel(
            x, y, max_val, filter_size, filter_sigma, k1, k2
        )
        term = ssim_per_channel if scale == scales - 1 else cs_per_channel
        weighted_terms.append(_safe_pow(term, factor))
    ms_ssim_per_channel = weighted_terms[0]
    for term in weighted_terms[1:]:
        ms_ssim_per_channel = ms_ssim_per_channel * term
    return ops.mean(ms_ssim_per_channel, axis=-1)


@keras.saving.register_keras_serializable(package="autoencoder")
def ssim_loss(y_true, y_pred):
    """1 - SSIM per image, shape (N,), for ``model.compile(loss=ssim_loss)``."""
    return 1.0 - ssim(y_true, y_pred)


@keras.saving.register_keras_serializable(package="autoencoder")
def mssim_loss(y_true, y_pred):
    """1 - MS-SSIM per image, shape (N,), for ``model.compile(loss=mssim_loss)``."""
    return 1.0 - ms_ssim(y_true, y_pred)


@keras.saving.register_keras_serializable(package="autoencoder")
def l2_loss(y_true, y_pred):
    """Mean squared error per image (over H, W and C), shape (N,)."""
    y_true, y_pred = _as_float_pair(y_true, y_pred, "l2_loss")
    return ops.mean(ops.square(y_true - y_pred), axis=tuple(range(1, len(y_pred.shape))))


@keras.saving.register_keras_serializable(package="autoencoder")
def ssim_metric(y_true, y_pred):
    """SSIM per image, shape (N,); Keras logs it as ``ssim`` / ``val_ssim``."""
    return ssim(y_true, y_pred)


@keras.saving.register_keras_serializable(package="autoencoder")
def mssim_metric(y_true, y_pred):
    """MS-SSIM per image, shape (N,); Keras logs it as ``mssim`` / ``val_mssim``."""
    return ms_ssim(y_true, y_pred)


# Keras names a function metric after its `name` attribute when it has one.
ssim_metric.name = "ssim"
mssim_metric.name = "mssim"

@keras.saving.register_keras_serializable(package="autoencoder")
def feature_loss(y_true, y_pred):
    """Loss of the models whose output is their own anomaly map (featureCAE): the map's mean.

    The target (the input image) is not used: the model's output already is the squared error of
    its feature reconstruction.
    """
    return ops.mean(y_pred)


HARD_FRACTION = 0.1  # the worst-reconstructed share of positions whose gradient is kept whole
EASY_WEIGHT = 0.1  # the weight of the others


@keras.saving.register_keras_serializable(package="autoencoder")
def mined_loss(y_true, y_pred):
    """The map's mean with hard mining (after Dinomaly, Guo et al. 2025): per image, the positions
    below the map's (1 - HARD_FRACTION) quantile, the ones already reconstructed well, count with
    EASY_WEIGHT, so training spends itself on what it reconstructs worst. Shape (N,)."""
    axes = tuple(range(1, len(y_pred.shape)))
    flat = ops.reshape(ops.stop_gradient(y_pred), (ops.shape(y_pred)[0], -1))
    threshold = ops.quantile(flat, 1.0 - HARD_FRACTION, axis=1)
    threshold = ops.reshape(threshold, (-1,) + (1,) * len(axes))
    weights = ops.where(ops.stop_gradient(y_pred) >= threshold, 1.0, EASY_WEIGHT)
    return ops.sum(weights * y_pred, axis=axes) / ops.sum(weights, axis=axes)


LOSSES = {"ssim": ssim_loss, "mssim": mssim_loss, "l2": l2_loss, "feature": feature_loss, "mined": mined_loss}
missing = set(available_losses()) ^ set(LOSSES)
if missing:  # the registry (loss_rules.py) and the functions name the same losses
    raise ValueError(f"losses registered without a function, or functions without a registration: {sorted(missing)}")


def get_loss(name: str):
    """The loss function registered as `name` (autoencoder/loss_rules.py lists them)."""
    return LOSSES[check_loss_name(name)]


def get_metrics(loss_name: str, color_mode: str) -> list:
    """Metrics to monitor while training with loss `loss_name` on `color_mode` images.

    SSIM for grayscale, MS-SSIM for RGB: ssim -> [ssim_metric], mssim -> [mssim_metric],
    l2 -> [ssim_metric] for 'grayscale' or [mssim_metric] for 'rgb'.
    """
    metric = get_loss_spec(loss_name).metric
    check_color_mode(color_mode)
    if metric == "by_color":
        metric = "ssim" if color_mode == "grayscale" else "mssim"
    return {"ssim": [ssim_metric], "mssim": [mssim_metric], None: []}[metric]
