"""Tests for processing.data.textures: the procedural product textures and colour helpers."""

from __future__ import annotations

import numpy as np
import pytest

from processing.data.textures import (
    LUMA_WEIGHTS,
    ProductStyle,
    add_chroma,
    chroma_basis,
    chroma_vector,
    colorize,
    hue_of,
    oriented_noise,
    product_texture,
    smooth_noise,
)


def test_product_texture_shape_range_determinism_and_variation():
    style = ProductStyle.sample(np.random.default_rng(0))
    first = product_texture((48, 80), style, np.random.default_rng(1))
    assert first.shape == (48, 80) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0.03
    np.testing.assert_array_equal(first, product_texture((48, 80), style, np.random.default_rng(1)))
    assert not np.array_equal(first, product_texture((48, 80), style, np.random.default_rng(2)))
    assert ProductStyle.sample(np.random.default_rng(0)) == style
    assert set(style.as_dict()) >= {"level", "fibre_angle", "hue"}


@pytest.mark.parametrize("correlation", [1.5, 12.0])
def test_noise_is_normalized(correlation):
    field = smooth_noise((128, 128), correlation, np.random.default_rng(0))
    assert field.dtype == np.float32
    assert abs(field.mean()) < 0.1 and field.std() == pytest.approx(1, abs=0.1)


def test_oriented_noise_is_longer_along_its_angle():
    field = oriented_noise((128, 128), along_px=40, across_px=2, angle=0.0, rng=np.random.default_rng(0))

    def correlation(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    along = correlation(field[:, :-8], field[:, 8:])  # 8 px along x, the fibre direction
    across = correlation(field[:-8], field[8:])
    assert along > 0.8 and abs(across) < 0.2


def test_chroma_vectors_have_zero_luminance_and_their_hue():
    e1, e2 = chroma_basis()
    assert abs(e1 @ LUMA_WEIGHTS) < 1e-12 and abs(e2 @ LUMA_WEIGHTS) < 1e-12 and abs(e1 @ e2) < 1e-12
    for hue in (0, 75, 200, 330):
        vector = chroma_vector(hue, 0.2)
        assert abs(vector @ LUMA_WEIGHTS) < 1e-12 and np.abs(vector).max() == pytest.approx(0.2)
        assert hue_of(vector) == pytest.approx(hue)


def test_add_chroma_keeps_luminance_and_range():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64, 3))
    shifted = add_chroma(image, chroma_vector(120, 0.8))
    assert 0 <= shifted.min() and shifted.max() <= 1
    np.testing.assert_allclose(shifted @ LUMA_WEIGHTS, image @ LUMA_WEIGHTS, atol=1e-12)
    assert np.abs(shifted - image).max() > 0.5


def test_colorize_has_the_gray_as_luminance():
    rng = np.random.default_rng(3)
    style = ProductStyle.sample(rng)
    gray = product_texture((64, 64), style, rng)
    rgb = colorize(gray, style, rng)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    np.testing.assert_allclose(rgb.astype(np.float64) @ LUMA_WEIGHTS, gray, atol=1e-6)
    mean_chroma = (rgb - gray[..., None]).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean_chroma).max() > 0.03  # coloured, not gray
    assert abs(((hue_of(mean_chroma) - style.hue + 180) % 360) - 180) < 15
