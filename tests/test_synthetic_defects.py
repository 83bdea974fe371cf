"""Tests for processing.data.synthetic_defects: synthetic defects and their masks."""

from __future__ import annotations

import numpy as np
import pytest

from processing.data.images import RGB_TO_GRAY_WEIGHTS
from processing.data.synthetic_defects import (
    DEFECT_KINDS,
    GRAY_DEFECT_KINDS,
    MIN_CHANGE,
    SHAPES,
    border_margin,
    draw_defect,
    mask_tolerance,
    max_defect_size,
    random_defect,
)
from processing.data.textures import LUMA_WEIGHTS, ProductStyle, colorize, product_texture

STYLE = ProductStyle.sample(np.random.default_rng(0))


def texture(shape, seed=0, color=False, dtype=np.float32):
    rng = np.random.default_rng(seed)
    image = product_texture(shape, STYLE, rng)
    return (colorize(image, STYLE, rng) if color else image).astype(dtype)


def channels_view(image):
    return image if image.ndim == 3 else image[:, :, None]


def change(defective, original):
    """Largest absolute change over the channels: float64 (H, W)."""
    return np.abs(channels_view(defective).astype(np.float64) - channels_view(original)).max(axis=2)


def extent(mask):
    rows, cols = np.nonzero(mask)
    return max(np.ptp(rows), np.ptp(cols)) + 1


# The least share of mask pixels that changed by more than the tolerance (default 0.99).
CHANGED_SHARE_IN_MASK = {"added_material": 0.75, "missing_material": 0.85}


@pytest.fixture(scope="module")
def gray64():
    return texture((64, 64))


@pytest.fixture(scope="module")
def rgb64():
    return texture((64, 64), color=True)


@pytest.fixture(scope="module")
def gray1024():
    return texture((1024, 1024), seed=3)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize(
    "shape, dtype", [((64, 64), np.float32), ((48, 72, 1), np.float64), ((72, 48, 3), np.float32), ((40, 40, 3), np.float16)]
)
def test_shape_dtype_and_range_kept_input_unchanged(kind, shape, dtype):
    image = texture(shape[:2], color=len(shape) == 3 and shape[2] == 3, dtype=dtype).reshape(shape)
    before = image.copy()
    defective, mask = draw_defect(image, kind, np.random.default_rng(1))
    assert defective.shape == image.shape and defective.dtype == image.dtype
    assert mask.shape == shape[:2] and mask.dtype == bool and mask.any()
    assert 0 <= defective.min() and defective.max() <= 1
    np.testing.assert_array_equal(image, before)
    assert defective is not image


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_deterministic_for_a_generator_state(kind, rgb64):
    first = draw_defect(rgb64, kind, np.random.default_rng(7))
    second = draw_defect(rgb64, kind, np.random.default_rng(7))
    other = draw_defect(rgb64, kind, np.random.default_rng(8))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])
    a, b = random_defect(rgb64, np.random.default_rng(3)), random_defect(rgb64, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0]) and np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("color", [False, True])
def test_mask_is_where_the_pixels_changed(kind, soft, color):
    """The documented rule: outside the mask no change exceeds the tolerance, and pixels far
    from the defect are bit-identical; inside it (nearly) every pixel changed by more. A pasted or
    flat patch matches the texture here and there (the mask's alpha >= 0.5 clause): measured
    over 160 draws, at least 81 % (added_material) and 91 % (missing_material) changed."""
    image = texture((96, 96), seed=2, color=color)
    rng = np.random.default_rng(4)
    for _ in range(5):
        defective, mask, params = random_defect(image, rng, kinds=(kind,), size_range=(8, 40), soft=soft)
        changed = change(defective, image)
        tolerance = mask_tolerance(params.contrast)
        assert changed[~mask].max(initial=0) <= tolerance + 1e-6, params
        assert (changed[mask] > tolerance).mean() >= CHANGED_SHARE_IN_MASK.get(kind, 0.99), params
        row, col = params.center
        rows, cols = np.meshgrid(np.arange(96) - row, np.arange(96) - col, indexing="ij")
        far = np.maximum(np.abs(rows), np.abs(cols)) > params.size / 2 + 3  # outside the defect's box
        np.testing.assert_array_equal(defective.reshape(96, 96, -1)[far], image.reshape(96, 96, -1)[far])


def test_tolerance_rule():
    assert mask_tolerance(0.01) == MIN_CHANGE
    assert mask_tolerance(-0.5) == pytest.approx(0.1)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_mask_area_grows_with_size(kind):
    image = texture((160, 160), seed=5)
    areas = []
    for size in (8, 20, 50):
        rng = np.random.default_rng(0)
        areas.append(np.median([draw_defect(image, kind, rng, size=size, soft=False)[1].sum() for _ in range(5)]))
    assert areas[0] < areas[1] < areas[2], areas


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("soft", [False, True])
def test_a_10px_defect_in_a_1024px_image_is_about_10px(kind, soft, gray1024):
    rng = np.random.default_rng(6)
    for _ in range(4):
        defective, mask = draw_defect(gray1024, kind, rng, size=10, soft=soft)
        assert 7 <= extent(mask) <= 11, (kind, soft, extent(mask))
        rows, cols = np.nonzero(change(defective, gray1024) > 0)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 12  # nothing changed beyond the defect's box


def test_scale_is_a_fraction_of_the_shorter_side():
    image = texture((128, 256))
    for kind in ("scratch", "missing_material"):
        _, mask = draw_defect(image, kind, np.random.default_rng(0), scale=0.25, soft=False)
        assert 31 <= extent(mask) <= 33


def test_center_and_default_placement_keep_off_the_border(gray64):
    _, mask = draw_defect(gray64, "spot", np.random.default_rng(0), size=9, center=(20, 40), soft=False)
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - 20) < 1.5 and abs(cols.mean() - 40) < 1.5
    margin = border_margin(gray64.shape)
    rng = np.random.default_rng(1)
    for _ in range(100):
        _, mask, _ = random_defect(gray64, rng)
        rows, cols = np.nonzero(mask)
        assert rows.min() >= margin - 1 and cols.min() >= margin - 1
        assert rows.max() <= 64 - margin and cols.max() <= 64 - margin


@pytest.mark.parametrize("shape", [(32, 32), (32, 200), (32, 32, 3)])
def test_any_image_of_at_least_32px(shape):
    image = texture(shape[:2], color=len(shape) == 3)
    rng = np.random.default_rng(2)
    for _ in range(60):
        defective, mask, params = random_defect(image, rng)
        assert mask.any() and defective.shape == image.shape, params


def test_color_change_keeps_luminance_and_changes_hue(rgb64):
    assert np.allclose(LUMA_WEIGHTS, RGB_TO_GRAY_WEIGHTS)
    rng = np.random.default_rng(3)
    for shape in SHAPES:
        defective, mask = draw_defect(rgb64, "color", rng, size=24, contrast=0.2, shape=shape)
        luminance_change = np.abs(defective.astype(np.float64) @ LUMA_WEIGHTS - rgb64.astype(np.float64) @ LUMA_WEIGHTS)
        assert luminance_change.max() < 1e-6
        assert change(defective, rgb64)[mask].mean() > 0.1


def test_color_in_a_gray_image_is_a_brightness_change(gray64):
    defective, mask = draw_defect(gray64, "color", np.random.default_rng(0), size=20, contrast=0.2, soft=False)
    np.testing.assert_allclose((defective - gray64)[mask], 0.2, atol=1e-6)  # a shift (nothing near 1 here)
    assert set(GRAY_DEFECT_KINDS) == set(DEFECT_KINDS) - {"color"}


def test_contrast_sets_the_change(gray64):
    for kind, sign in (("scratch", 1), ("crack", -1), ("brightness", -1)):
        defective, mask = draw_defect(gray64, kind, np.random.default_rng(0), size=30, contrast=sign * 0.25, soft=False)
        shift = (defective - gray64)[mask]
        assert np.all(np.sign(shift[np.abs(shift) > 1e-6]) == sign)
        assert np.median(np.abs(shift)) == pytest.approx(0.25, abs=0.01)


def test_added_material_from_another_image(gray64):
    foreign = texture((80, 80), seed=9, color=True)
    defective, mask = draw_defect(gray64, "added_material", np.random.default_rng(0), size=30, contrast=0.0, source=foreign)
    assert defective.shape == gray64.shape and change(defective, gray64)[mask].mean() > 0.02


def test_soft_edges_ramp_inside_the_outline(gray64):
    hard = draw_defect(gray64, "brightness", np.random.default_rng(0), size=40, contrast=0.3, soft=False, center=(32, 32))
    soft = draw_defect(gray64, "brightness", np.random.default_rng(0), size=40, contrast=0.3, soft=True, center=(32, 32))
    assert soft[1].sum() < hard[1].sum()
    assert not (soft[1] & ~hard[1]).any()  # no larger than the hard outline
    shifts = (soft[0] - gray64)[soft[1]]
    assert shifts.min() < 0.15 < 0.29 < shifts.max()  # partial opacity at the rim, full at the core


def test_limits_of_the_size():
    assert max_defect_size((64, 100)) == 64 - 2 * border_margin((64, 100))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="dent"), r"kind 'dent' not supported"),
        (dict(size=2), r"size 2 not supported: expected 3 to \d+ px"),
        (dict(size=100), r"size 100 not supported"),
        (dict(size=10, scale=0.1), r"size 10 and scale 0.1 both given"),
        (dict(scale=1.5), r"scale 1.5 not supported"),
        (dict(contrast=0.0), r"contrast 0.0 not supported for scratch"),
        (dict(contrast=1.5), r"contrast 1.5 not supported"),
        (dict(shape="star"), r"shape 'star' not supported"),
        (dict(size=20, center=(3, 30)), r"center \(3.0, 30.0\) not supported: a 20 px defect there leaves the 64x64 image"),
    ],
)
def test_bad_arguments(kwargs, message, gray64):
    kwargs = {"kind": "scratch", **kwargs}
    with pytest.raises(ValueError, match=message):
        draw_defect(gray64, rng=np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64), np.uint8), r"image of type uint8 not supported: expected a float numpy array"),
        (np.zeros((16, 64)), r"too small: expected both sides >= 32 px"),
        (np.zeros((64, 64, 2)), r"shape \(64, 64, 2\) not supported"),
        (np.full((64, 64), 1.5), r"values in \[1.5, 1.5\] not supported: expected values in \[0, 1\]"),
    ],
)
def test_bad_images(image, message):
    with pytest.raises(ValueError, match=message):
        draw_defect(image, "spot", np.random.default_rng(0))


def test_random_defect_ranges(gray64):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        _, _, params = random_defect(gray64, rng, kinds=("spot", "crack"), size_range=(5, 12), contrast_range=(0.1, 0.2))
        seen.add(params.kind)
        assert 5 <= params.size <= 12 and 0.1 <= abs(params.contrast) <= 0.2
        assert params.contrast < 0 or params.kind != "crack"
    assert seen == {"spot", "crack"}
    _, _, params = random_defect(gray64, rng, scale_range=(0.25, 0.25))
    assert params.size == pytest.approx(16)
    _, mask, params = random_defect(gray64, rng, kinds=("color",), size_range=(30, 30), shape="line")
    assert params.shape == "line" and mask.sum() < 30 * 30 / 3  # a stroke (<= 4 px wide), not a ~700 px blob
    with pytest.raises(ValueError, match=r"kinds entry 'dent' not supported"):
        random_defect(gray64, rng, kinds=("dent",))
    with pytest.raises(ValueError, match=r"kinds 'spot' not supported: expected a non-empty sequence"):
        random_defect(gray64, rng, kinds="spot")
    with pytest.raises(ValueError, match=r"size_range \(5, 80\) not supported: expected 3 <= min <= max <= \d+"):
        random_defect(gray64, rng, size_range=(5, 80))
    with pytest.raises(ValueError, match=r"both given"):
        random_defect(gray64, rng, size_range=(5, 8), scale_range=(0.1, 0.2))
    with pytest.raises(ValueError, match=r"contrast_range \(0.3, 0.1\) not supported"):
        random_defect(gray64, rng, contrast_range=(0.3, 0.1))
