"""autoencoder.losses against tf.image.ssim / ssim_multiscale and skimage; Keras save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage
from skimage.metrics import structural_similarity

from autoencoder import losses
from autoencoder.losses import (
    LOSSES,
    check_loss_color,
    get_loss,
    get_metrics,
    l2_loss,
    ms_ssim,
    mssim_loss,
    mssim_metric,
    ssim,
    ssim_loss,
    ssim_metric,
)

DEFAULT_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def image_pairs(shape, seed=0):
    """Smooth images with noise and reconstruction-like predictions, float32 NHWC in [0, 1]."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 3, 3, 0))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    inputs = np.clip(smooth + 0.05 * rng.standard_normal(shape), 0, 1)
    preds = np.clip(ndimage.gaussian_filter(inputs, sigma=(0, 1, 1, 0)) + 0.03 * rng.standard_normal(shape), 0, 1)
    return inputs.astype(np.float32), preds.astype(np.float32)


def truncated_factors(count):
    factors = np.asarray(DEFAULT_POWER_FACTORS[:count])
    return tuple(factors * sum(DEFAULT_POWER_FACTORS) / factors.sum())


# ---------------------------------------------------------------- ssim


@pytest.mark.parametrize("shape", [(3, 32, 40, 1), (2, 11, 11, 1), (2, 48, 48, 3), (2, 37, 29, 3)])
def test_ssim_matches_tf_image_ssim(shape):
    x, y = image_pairs(shape)
    ours = keras.ops.convert_to_numpy(ssim(x, y))
    assert ours.shape == (shape[0],)
    np.testing.assert_allclose(ours, tf.image.ssim(x, y, max_val=1.0).numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 40, 32, 1), (2, 36, 36, 3)])
def test_ssim_matches_skimage_mean_over_the_valid_region(shape):
    # skimage's mean SSIM crops the 5-pixel border where its window would leave the image:
    # exactly the 'valid' region here.
    x, y = image_pairs(shape, seed=1)
    expected = [
        structural_similarity(
            a.astype(np.float64),
            b.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for a, b in zip(x, y)
    ]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ssim(x, y)), expected, rtol=0, atol=2e-5)


def test_ssim_of_identical_images_is_one():
    x, _ = image_pairs((2, 16, 16, 3), seed=2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ssim(x, x)), 1.0, atol=1e-6)


def test_ssim_computes_half_precision_inputs_in_float32():
    x, y = image_pairs((2, 24, 24, 1), seed=12)
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    values = ssim(x16, y16)
    assert keras.backend.standardize_dtype(values.dtype) == "float32"
    expected = tf.image.ssim(x16.astype(np.float32), y16.astype(np.float32), max_val=1.0).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values), expected, rtol=0, atol=1e-5)


def test_ssim_rejects_small_images_and_mismatched_shapes():
    with pytest.raises(ValueError, match="ssim: images are 10x16, smaller than filter_size 11"):
        ssim(np.zeros((1, 10, 16, 1), np.float32), np.zeros((1, 10, 16, 1), np.float32))
    with pytest.raises(ValueError, match=r"ssim: image shapes differ: \(1, 16, 16, 1\) vs \(1, 16, 16, 3\)"):
        ssim(np.zeros((1, 16, 16, 1), np.float32), np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"ssim: expected NHWC images of rank 4, got shape \(16, 16, 1\)"):
        ssim(np.zeros((16, 16, 1), np.float32), np.zeros((16, 16, 1), np.float32))


def test_losses_take_the_image_size_from_whichever_tensor_knows_it():
    # Targets from a dataset may come with unknown height and width; the model output knows them.
    x, y = image_pairs((2, 32, 32, 3), seed=11)
    dynamic_targets = tf.TensorSpec([None, None, None, 3], tf.float32)
    static_outputs = tf.TensorSpec([None, 32, 32, 3], tf.float32)
    for loss in (ssim_loss, mssim_loss):
        traced = tf.function(loss, input_signature=[dynamic_targets, static_outputs])
        np.testing.assert_allclose(traced(x, y).numpy(), keras.ops.convert_to_numpy(loss(x, y)), atol=1e-6)
    unknown = tf.function(ssim_loss, input_signature=[dynamic_targets, dynamic_targets])
    with pytest.raises(ValueError, match="ssim: image height, width and channels must be known"):
        unknown.get_concrete_function()


# ---------------------------------------------------------------- ms_ssim


@pytest.mark.parametrize("shape", [(2, 192, 192, 1), (1, 177, 203, 3)])
def test_ms_ssim_matches_tf_when_all_five_scales_fit(shape):
    x, y = image_pairs(shape, seed=3)
    ours = keras.ops.convert_to_numpy(ms_ssim(x, y))
    assert ours.shape == (shape[0],)
    expected = tf.image.ssim_multiscale(x, y, max_val=1.0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "shape, scales",
    [
        ((2, 32, 32, 3), 2),
        ((2, 64, 64, 3), 3),
        ((1, 100, 120, 1), 4),
        ((1, 160, 160, 1), 4),
        ((2, 22, 22, 1), 2),  # the second scale is exactly 11x11
        ((2, 23, 23, 1), 2),  # odd: the last row and column are repeated before pooling
        ((1, 45, 43, 3), 3),
    ],
)
def test_ms_ssim_uses_the_scales_that_fit_with_rescaled_factors(shape, scales):
    # TensorFlow takes fewer scales when given fewer power factors; ours picks them itself.
    x, y = image_pairs(shape, seed=4)
    expected = tf.image.ssim_multiscale(x, y, max_val=1.0, power_factors=truncated_factors(scales)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ms_ssim(x, y)), expected, rtol=0, atol=1e-4)


def test_ms_ssim_pads_odd_sides_by_repeating_the_last_row_and_column():
    # Inputs equal but for their last row and column, so the padding decides the second scale.
    x, _ = image_pairs((2, 23, 25, 1), seed=10)
    y = x.copy()
    y[:, -1, :] = 1.0 - x[:, -1, :]
    y[:, :, -1] = 1.0 - x[:, :, -1]
    expected = tf.image.ssim_multiscale(x, y, max_val=1.0, power_factors=truncated_factors(2)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ms_ssim(x, y)), expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_on_small_images_lies_in_zero_one(size):
    x, y = image_pairs((3, size, size, 3), seed=5)
    values = keras.ops.convert_to_numpy(ms_ssim(x, y))
    assert np.all(values > 0) and np.all(values <= 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ms_ssim(x, x)), 1.0, atol=1e-6)
    # A worse reconstruction scores lower.
    noisier = np.clip(y + 0.3 * np.random.default_rng(6).standard_normal(y.shape), 0, 1).astype(np.float32)
    assert np.all(keras.ops.convert_to_numpy(ms_ssim(x, noisier)) < values)


def test_ms_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="ms_ssim: images are 8x8, smaller than filter_size 11"):
        ms_ssim(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 3), np.float32))


def test_mssim_loss_gradient_is_finite_where_contrast_structure_is_negative():
    x, _ = image_pairs((2, 32, 32, 3), seed=7)
    inverted = tf.Variable(1.0 - x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(mssim_loss(tf.constant(x), inverted))
    gradient = tape.gradient(loss, inverted).numpy()
    assert float(loss) == pytest.approx(1.0, abs=1e-6)  # negative terms count as 0, as in TF
    assert np.all(np.isfinite(gradient))


# ---------------------------------------------------------------- losses and metrics


def test_losses_and_metrics_are_per_image():
    x, y = image_pairs((3, 32, 32, 3), seed=8)
    expected_ssim = tf.image.ssim(x, y, max_val=1.0).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ssim_loss(x, y)), 1 - expected_ssim, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ssim_metric(x, y)), expected_ssim, atol=1e-5)
    ms = keras.ops.convert_to_numpy(ms_ssim(x, y))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mssim_loss(x, y)), 1 - ms, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(mssim_metric(x, y)), ms, atol=1e-6)
    l2 = keras.ops.convert_to_numpy(l2_loss(x, y))
    assert l2.shape == (3,)
    np.testing.assert_allclose(l2, [np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(x, y)], rtol=1e-5)


def test_get_loss_and_its_error():
    assert get_loss("ssim") is ssim_loss and get_loss("mssim") is mssim_loss and get_loss("l2") is l2_loss
    assert set(LOSSES) == {"ssim", "mssim", "l2", "feature", "mined"}
    with pytest.raises(ValueError, match="^--loss 'mse': expected one of ssim, mssim, l2, feature, mined$"):
        get_loss("mse")


def test_feature_loss_is_the_mean_of_the_model_output_map():
    from autoencoder.losses import feature_loss

    maps = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    images = np.zeros((2, 8, 8, 1), np.float32)  # the target is not used
    assert float(feature_loss(images, maps)) == pytest.approx(float(maps.mean()), rel=1e-6)


def test_get_metrics():
    assert get_metrics("ssim", "grayscale") == [ssim_metric]
    assert get_metrics("mssim", "rgb") == [mssim_metric]
    assert get_metrics("l2", "grayscale") == [ssim_metric]
    assert get_metrics("l2", "rgb") == [mssim_metric]
    with pytest.raises(ValueError, match="^--color 'cmyk': expected one of grayscale, rgb$"):
        get_metrics("l2", "cmyk")
    with pytest.raises(ValueError, match="^--loss 'x'"):
        get_metrics("x", "rgb")


def test_check_loss_color():
    check_loss_color("ssim", "grayscale")
    check_loss_color("mssim", "rgb")
    check_loss_color("l2", "grayscale")
    check_loss_color("l2", "rgb")
    with pytest.raises(
        ValueError, match=r"^--loss ssim needs --color grayscale \(got rgb\); use --loss mssim for RGB images$"
    ):
        check_loss_color("ssim", "rgb")
    with pytest.raises(
        ValueError, match=r"^--loss mssim needs --color rgb \(got grayscale\); use --loss ssim for grayscale images$"
    ):
        check_loss_color("mssim", "grayscale")
    with pytest.raises(ValueError, match="^--loss 'ms-ssim'"):
        check_loss_color("ms-ssim", "rgb")


@pytest.mark.parametrize(
    "loss_name, color_mode, metric_name",
    [("ssim", "grayscale", "ssim"), ("mssim", "rgb", "mssim"), ("l2", "grayscale", "ssim"), ("l2", "rgb", "mssim")],
)
def test_compiled_model_saves_and_reloads_without_custom_objects(tmp_path, loss_name, color_mode, metric_name):
    channels = 1 if color_mode == "grayscale" else 3
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, channels))
    outputs = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=get_loss(loss_name), metrics=get_metrics(loss_name, color_mode))
    x, _ = image_pairs((4, 32, 32, channels), seed=9)
    model.fit(x, x, epochs=1, batch_size=4, verbose=0)
    before = model.evaluate(x, x, batch_size=4, verbose=0, return_dict=True)
    assert set(before) == {"loss", metric_name}

    path = tmp_path / f"{loss_name}_{color_mode}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    after = reloaded.evaluate(x, x, batch_size=4, verbose=0, return_dict=True)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == pytest.approx(before[key], abs=1e-6)
    if loss_name != "l2":  # the loss is 1 - the metric
        assert before["loss"] == pytest.approx(1.0 - before[metric_name], abs=1e-5)


def test_functions_are_registered_under_the_autoencoder_package():
    for function in (ssim_loss, mssim_loss, l2_loss, ssim_metric, mssim_metric):
        name = keras.saving.get_registered_name(function)
        assert name == f"autoencoder>{function.__name__}"
        assert keras.saving.get_registered_object(name) is function
    assert losses.ssim_metric.name == "ssim" and losses.mssim_metric.name == "mssim"
