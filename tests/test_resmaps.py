"""processing.maps.resmaps against skimage's SSIM map, rgb2gray, img_as_ubyte and naive loops."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
from skimage.util import img_as_ubyte

from processing.maps import resmaps
from processing.maps.resmaps import (
    RESMAP_RANGE,
    calculate_resmaps,
    l2_resmaps,
    resmap_value_range,
    ssim_resmaps,
    to_grayscale,
)


def random_pairs(shape, seed=0):
    """Noise images and noisy copies, float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    inputs = rng.random(shape)
    preds = np.clip(inputs + 0.3 * rng.standard_normal(shape), 0.0, 1.0)
    return inputs, preds


def structured_pairs(shape, seed=0):
    """Smooth images with a flat region and a bright square; predictions are blurred, shifted copies."""
    rng = np.random.default_rng(seed)
    spatial_sigma = (0, 3, 3) + (0,) * (len(shape) - 3)
    inputs = ndimage.gaussian_filter(rng.random(shape), sigma=spatial_sigma)
    inputs = (inputs - inputs.min()) / (inputs.max() - inputs.min())
    inputs[:, : shape[1] // 3, : shape[2] // 4] = 0.25  # flat: local variance exactly 0
    inputs[:, -8:-2, -8:-2] = 1.0
    preds = ndimage.gaussian_filter(np.roll(inputs, 2, axis=2), sigma=(0, 1, 1) + (0,) * (len(shape) - 3))
    return inputs, preds


def skimage_gray(imgs):
    imgs = np.asarray(imgs, dtype=np.float64)
    if imgs.ndim == 4 and imgs.shape[-1] == 3:
        return rgb2gray(imgs)
    return imgs.reshape(imgs.shape[:3])


def skimage_ssim_resmaps(inputs, preds):
    """1 - skimage's full SSIM map, one image at a time, on skimage's grayscale images."""
    gray_inputs, gray_preds = skimage_gray(inputs), skimage_gray(preds)
    return np.stack(
        [
            1.0
            - structural_similarity(
                a,
                b,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                full=True,
            )[1]
            for a, b in zip(gray_inputs, gray_preds)
        ]
    )


# ---------------------------------------------------------------- to_grayscale


def test_to_grayscale_rgb_matches_skimage_rgb2gray():
    imgs = np.random.default_rng(1).random((3, 9, 7, 3))
    gray = to_grayscale(imgs)
    assert gray.shape == (3, 9, 7) and gray.dtype == np.float64
    np.testing.assert_allclose(gray, rgb2gray(imgs), rtol=0, atol=1e-15)


def test_to_grayscale_rgb_float32_is_computed_in_float64():
    imgs = np.random.default_rng(2).random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(to_grayscale(imgs), rgb2gray(imgs.astype(np.float64)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 5, 1)])
def test_to_grayscale_single_channel_keeps_values(shape):
    imgs = np.random.default_rng(3).random(shape).astype(np.float32)
    gray = to_grayscale(imgs)
    assert gray.shape == (2, 6, 5) and gray.dtype == np.float64
    np.testing.assert_array_equal(gray, imgs.reshape(2, 6, 5).astype(np.float64))


@pytest.mark.parametrize("shape", [(6, 5), (2, 6, 5, 4), (2, 6, 5, 2), (1, 2, 6, 5, 3)])
def test_to_grayscale_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W\), \(N, H, W, 1\) or \(N, H, W, 3\), got"):
        to_grayscale(np.zeros(shape))


def test_to_grayscale_rejects_integer_images():
    with pytest.raises(ValueError, match="expected float values in \\[0, 1\\], got dtype uint8"):
        to_grayscale(np.zeros((1, 4, 4), dtype=np.uint8))


# ---------------------------------------------------------------- ssim_resmaps


@pytest.mark.parametrize("make_pairs", [random_pairs, structured_pairs])
@pytest.mark.parametrize(
    "shape",
    [(3, 16, 16), (2, 11, 11), (2, 24, 40), (2, 33, 17, 1), (2, 32, 20, 3), (1, 64, 48)],
)
def test_ssim_resmaps_matches_skimage(make_pairs, shape):
    inputs, preds = make_pairs(shape)
    ours = ssim_resmaps(inputs, preds)
    assert ours.shape == shape[:3] and ours.dtype == np.float64
    np.testing.assert_allclose(ours, skimage_ssim_resmaps(inputs, preds), rtol=0, atol=1e-9)


def test_ssim_resmaps_float32_inputs_match_skimage_on_float64():
    inputs, preds = structured_pairs((2, 20, 24, 3), seed=4)
    inputs32, preds32 = inputs.astype(np.float32), preds.astype(np.float32)
    np.testing.assert_allclose(
        ssim_resmaps(inputs32, preds32),
        skimage_ssim_resmaps(inputs32.astype(np.float64), preds32.astype(np.float64)),
        rtol=0,
        atol=1e-9,
    )


def test_ssim_resmaps_blocks_and_threads_give_the_same_maps(monkeypatch):
    inputs, preds = random_pairs((10, 16, 12), seed=5)
    expected = skimage_ssim_resmaps(inputs, preds)
    # Three images per block: four blocks, the last one partial.
    monkeypatch.setattr(resmaps, "_BLOCK_PIXELS", 3 * 4 * (16 + 10) * 12)
    for workers in (1, 2, 3):
        np.testing.assert_allclose(ssim_resmaps(inputs, preds, workers=workers), expected, rtol=0, atol=1e-9)


def test_ssim_resmaps_of_identical_images_are_zero_and_anticorrelated_exceed_one():
    inputs, _ = structured_pairs((2, 20, 20), seed=6)
    np.testing.assert_allclose(ssim_resmaps(inputs, inputs), 0.0, atol=1e-12)
    inverted = ssim_resmaps(inputs, 1.0 - inputs)
    assert inverted.max() > 1.0  # local SSIM < 0 where structure is inverted


def test_ssim_resmaps_does_not_modify_its_inputs():
    inputs, preds = random_pairs((2, 12, 12, 1), seed=7)
    inputs_copy, preds_copy = inputs.copy(), preds.copy()
    ssim_resmaps(inputs, preds)
    calculate_resmaps(inputs, preds, "l2", "uint8")
    np.testing.assert_array_equal(inputs, inputs_copy)
    np.testing.assert_array_equal(preds, preds_copy)


def test_ssim_resmaps_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="images are 10x16; the SSIM window needs at least 11x11"):
        ssim_resmaps(np.zeros((1, 10, 16)), np.zeros((1, 10, 16)))


def test_ssim_resmaps_of_an_empty_batch_is_empty():
    assert ssim_resmaps(np.zeros((0, 16, 16)), np.zeros((0, 16, 16))).shape == (0, 16, 16)


# ---------------------------------------------------------------- l2_resmaps


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 7, 1), (2, 5, 7, 3)])
def test_l2_resmaps_matches_a_naive_loop(shape):
    inputs, preds = random_pairs(shape, seed=8)
    weights = (0.2125, 0.7154, 0.0721)
    expected = np.zeros(shape[:3])
    for n in range(shape[0]):
        for i in range(shape[1]):
            for j in range(shape[2]):
                if len(shape) == 4 and shape[3] == 3:
                    a = sum(w * inputs[n, i, j, c] for c, w in enumerate(weights))
                    b = sum(w * preds[n, i, j, c] for c, w in enumerate(weights))
                else:
                    a, b = inputs[n, i, j, ...].item(), preds[n, i, j, ...].item()
                expected[n, i, j] = (a - b) ** 2
    ours = l2_resmaps(inputs, preds)
    assert ours.shape == shape[:3] and ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-15)


# ---------------------------------------------------------------- calculate_resmaps


def test_calculate_resmaps_float64_is_the_map_clipped_to_its_range():
    inputs, _ = structured_pairs((2, 24, 24), seed=9)
    preds = 1.0 - inputs  # SSIM residuals above 1 to clip
    raw = skimage_ssim_resmaps(inputs, preds)
    assert raw.max() > 1.0
    ours = calculate_resmaps(inputs, preds, method="ssim", dtype="float64")
    assert ours.dtype == np.float64 and ours.shape == (2, 24, 24)
    np.testing.assert_allclose(ours, np.clip(raw, *RESMAP_RANGE["ssim"]), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(calculate_resmaps(inputs, preds, "l2"), l2_resmaps(inputs, preds))


@pytest.mark.parametrize("method", ["ssim", "l2"])
def test_calculate_resmaps_uint8_matches_img_as_ubyte_of_the_clipped_map(method):
    inputs, _ = structured_pairs((3, 20, 16, 3), seed=10)
    preds = np.concatenate([inputs[:1], 1.0 - inputs[1:2], np.clip(inputs[2:] + 0.2, 0, 1)])
    clipped = calculate_resmaps(inputs, preds, method=method, dtype="float64")
    ours = calculate_resmaps(inputs, preds, method=method, dtype="uint8")
    assert ours.dtype == np.uint8 and ours.shape == (3, 20, 16)
    np.testing.assert_array_equal(ours, img_as_ubyte(clipped))
    low, high = resmap_value_range(method, "uint8")
    assert ours.min() >= low and ours.max() <= high


def test_calculate_resmaps_uint8_reaches_both_ends_of_its_range():
    inputs, _ = structured_pairs((2, 20, 20), seed=11)
    preds = np.stack([inputs[0], 1.0 - inputs[1]])
    maps = calculate_resmaps(inputs, preds, method="ssim", dtype="uint8")
    assert maps[0].max() == 0  # identical images
    assert maps[1].max() == 255  # inverted structure, clipped at 1


def test_resmap_value_range():
    assert resmap_value_range("ssim") == (0.0, 1.0)
    assert resmap_value_range("l2", "float64") == (0.0, 1.0)
    assert resmap_value_range("ssim", "uint8") == (0, 255)
    with pytest.raises(ValueError, match="resmap method 'mse': expected one of ssim, l2"):
        resmap_value_range("mse", "uint8")


def test_calculate_resmaps_rejects_unknown_method_and_dtype():
    imgs = np.zeros((1, 16, 16))
    with pytest.raises(ValueError, match="resmap method 'mssim': expected one of ssim, l2"):
        calculate_resmaps(imgs, imgs, method="mssim")
    with pytest.raises(ValueError, match="resmap dtype 'float32': expected one of float64, uint8"):
        calculate_resmaps(imgs, imgs, dtype="float32")


@pytest.mark.parametrize("method", ["ssim", "l2"])
def test_calculate_resmaps_rejects_mismatched_shapes(method):
    with pytest.raises(
        ValueError,
        match=r"inputs and predictions differ in shape: \(2, 16, 16, 1\) vs \(2, 16, 16, 3\)",
    ):
        calculate_resmaps(np.zeros((2, 16, 16, 1)), np.zeros((2, 16, 16, 3)), method=method)
