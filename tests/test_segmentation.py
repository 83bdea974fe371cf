import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.measure import label
from skimage.segmentation import clear_border

from processing.decision.segmentation import is_defective, largest_component_areas, non_border_components, segment


def smooth_maps(seed, shape, sigma=2.0, dtype=np.float64):
    """Random maps with blobs: gaussian-filtered noise, optionally quantised to uint8."""
    rng = np.random.default_rng(seed)
    maps = gaussian_filter(rng.random(shape), sigma=(0, sigma, sigma))
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    if dtype == np.uint8:
        return np.round(maps * 255).astype(np.uint8)
    return maps


def reference_masks(resmaps, threshold, min_area):
    """Direct skimage version of the decision rule: clear_border, label, keep large components."""
    masks = np.zeros(resmaps.shape, dtype=bool)
    for index, resmap in enumerate(resmaps):
        labels = label(clear_border(resmap > threshold), connectivity=2)
        for component in range(1, labels.max() + 1):
            pixels = labels == component
            if pixels.sum() >= min_area:
                masks[index] |= pixels
    return masks


def reference_largest(resmaps, threshold):
    largest = []
    for resmap in resmaps:
        labels = label(clear_border(resmap > threshold), connectivity=2)
        largest.append(np.bincount(labels.ravel())[1:].max(initial=0))
    return np.array(largest)


@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
@pytest.mark.parametrize("shape", [(3, 24, 24), (2, 17, 40)])
def test_segment_matches_skimage_reference(dtype, shape):
    resmaps = smooth_maps(0, shape, dtype=dtype)
    for threshold in np.quantile(resmaps, [0.3, 0.6, 0.8, 0.95]):
        for min_area in (1, 5, 20):
            expected = reference_masks(resmaps, threshold, min_area)
            np.testing.assert_array_equal(segment(resmaps, threshold, min_area), expected)
            np.testing.assert_array_equal(is_defective(resmaps, threshold, min_area), expected.any(axis=(1, 2)))
        np.testing.assert_array_equal(largest_component_areas(resmaps, threshold), reference_largest(resmaps, threshold))


def test_hand_made_blobs():
    resmap = np.zeros((1, 12, 12))
    resmap[0, 4:7, 4:7] = 1.0  # central blob, area 9
    resmap[0, 0:4, 8:12] = 2.0  # border blob, area 16, dropped
    assert largest_component_areas(resmap, 0.5).tolist() == [9]
    assert largest_component_areas(resmap, 1.5).tolist() == [0]
    assert is_defective(resmap, 0.5, 9).tolist() == [True]
    assert is_defective(resmap, 0.5, 10).tolist() == [False]
    expected = np.zeros((1, 12, 12), dtype=bool)
    expected[0, 4:7, 4:7] = True
    np.testing.assert_array_equal(segment(resmap, 0.5, 9), expected)
    assert not segment(resmap, 0.5, 10).any()


def test_threshold_is_strict():
    resmap = np.zeros((1, 9, 9), dtype=np.uint8)
    resmap[0, 3:6, 3:6] = 100
    assert largest_component_areas(resmap, 100).tolist() == [0]
    assert largest_component_areas(resmap, 99.5).tolist() == [9]
    assert largest_component_areas(resmap, 99).tolist() == [9]


def test_float32_maps_are_compared_in_float64():
    resmap = np.zeros((1, 9, 9), dtype=np.float32)
    resmap[0, 3:6, 3:6] = 0.1  # float32(0.1) = 0.10000000149... > 0.1
    assert largest_component_areas(resmap, 0.1).tolist() == [9]
    assert largest_component_areas(resmap, float(np.float32(0.1))).tolist() == [0]


def test_diagonal_pixels_are_connected():
    resmap = np.zeros((1, 7, 7))
    resmap[0, 2, 2] = resmap[0, 3, 3] = resmap[0, 4, 2] = 1.0
    assert largest_component_areas(resmap, 0.5).tolist() == [3]


def test_non_border_components_zeroes_border_labels():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = True
    mask[2:4, 2:4] = True
    mask[5, 3:6] = True
    labels, areas = non_border_components(mask)
    assert labels.max() == 3
    assert sorted(areas.tolist()) == [0, 0, 0, 4]
    assert areas[labels[2, 2]] == 4


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: segment(np.zeros((4, 4)), 0.5, 1), "resmaps: expected an array of shape"),
        (lambda: segment(np.zeros((2, 0, 4)), 0.5, 1), "resmaps: expected maps of at least 1x1 pixels"),
        (lambda: segment(np.full((1, 4, 4), np.nan), 0.5, 1), "resmaps: contains 16 NaN"),
        (lambda: segment(np.zeros((1, 4, 4), dtype=complex), 0.5, 1), "resmaps: expected a bool, integer or float"),
        (lambda: segment(np.zeros((1, 4, 4)), "high", 1), "threshold: expected a real number"),
        (lambda: segment(np.zeros((1, 4, 4)), float("nan"), 1), "threshold: expected a real number, got NaN"),
        (lambda: is_defective(np.zeros((1, 4, 4)), 0.5, 0), "min_area: expected an integer >= 1"),
        (lambda: is_defective(np.zeros((1, 4, 4)), 0.5, 2.5), "min_area: expected an integer >= 1"),
    ],
)
def test_bad_input_raises_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
