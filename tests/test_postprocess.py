"""Gaussian smoothing of residual maps against scipy's reference filter."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from processing.maps.postprocess import check_sigma, smooth_resmaps


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3])
@pytest.mark.parametrize("shape", [(3, 20, 17), (2, 64, 64), (1, 5, 9)])
def test_float_maps_match_scipy_gaussian_filter(sigma, shape):
    maps = np.random.default_rng(0).random(shape)
    expected = ndi.gaussian_filter(maps, (0, sigma, sigma), mode="reflect", truncate=4.0)
    smoothed = smooth_resmaps(maps, sigma)
    assert smoothed.shape == maps.shape and smoothed.dtype == maps.dtype
    np.testing.assert_allclose(smoothed, expected, atol=1e-12)


def test_float32_maps_keep_their_dtype():
    maps = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    smoothed = smooth_resmaps(maps, 1.5)
    assert smoothed.dtype == np.float32
    np.testing.assert_allclose(smoothed, ndi.gaussian_filter(maps.astype(np.float64), (0, 1.5, 1.5)), atol=1e-6)


def test_uint8_maps_are_smoothed_then_rounded():
    maps = np.random.default_rng(2).integers(0, 256, (2, 24, 24), dtype=np.uint8)
    expected = np.rint(ndi.gaussian_filter(maps.astype(np.float64), (0, 2, 2))).astype(np.uint8)
    smoothed = smooth_resmaps(maps, 2.0)
    assert smoothed.dtype == np.uint8
    assert np.abs(smoothed.astype(int) - expected).max() <= 1  # rounding of values at .5 may differ
    assert (smoothed == expected).mean() > 0.99


def test_each_map_is_smoothed_on_its_own():
    maps = np.zeros((3, 16, 16))
    maps[1, 8, 8] = 1.0
    smoothed = smooth_resmaps(maps, 2.0)
    assert not smoothed[0].any() and not smoothed[2].any()
    assert smoothed[1].sum() == pytest.approx(1.0)  # mass is kept away from the borders
    assert smoothed[1].argmax() == 8 * 16 + 8


def test_sigma_zero_returns_the_maps_unchanged():
    maps = np.random.default_rng(3).random((2, 8, 8))
    assert smooth_resmaps(maps, 0) is maps


@pytest.mark.parametrize("sigma", [-1, float("nan"), "wide", None])
def test_bad_sigma_is_a_one_line_error(sigma):
    with pytest.raises(ValueError, match=r"^--smoothing .*expected a number of pixels >= 0$"):
        check_sigma(sigma)


def test_bad_maps_are_rejected():
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        smooth_resmaps(np.zeros((8, 8)), 1.0)
    with pytest.raises(ValueError, match="dtype int64"):
        smooth_resmaps(np.zeros((1, 8, 8), dtype=np.int64), 1.0)


def test_finetune_cli_rejects_a_negative_smoothing_before_loading_anything(tmp_path, capsys):
    import finetune
    from autoencoder import cli

    assert cli.run(finetune.main, ["-p", str(tmp_path / "no_model"), "--smoothing", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: --smoothing -1.0: expected a number of pixels >= 0"
