import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import balanced_accuracy_score, recall_score

from processing.decision import thresholds
from processing.decision.segmentation import is_defective
from processing.decision.thresholds import (
    NO_COMPONENT_SCORE,
    choose_best_pair,
    largest_area_curves,
    largest_area_curves_naive,
    max_component_level,
    min_thresholds_for_areas,
    score_pairs,
    search_min_area_threshold,
    threshold_grid,
)


def smooth_maps(rng, shape, sigma):
    maps = gaussian_filter(rng.random(shape), sigma=(0, sigma, sigma))
    return (maps - maps.min()) / (maps.max() - maps.min() + 1e-12)


def random_maps(seed, shape, kind):
    """Random maps with blobs in several encodings; plateaus/ties for 'rounded' and 'uint8'."""
    rng = np.random.default_rng(seed)
    maps = smooth_maps(rng, shape, sigma=rng.uniform(0.5, 3.0))
    if kind == "uint8":
        return np.round(maps * 255).astype(np.uint8)
    if kind == "rounded":  # few levels: large flat zones with equal values
        return np.round(maps * rng.integers(2, 12)) / 4.0
    if kind == "framed":  # minimum on the border: whole upper level sets can be non-border
        maps[:, [0, -1], :] = 0.0
        maps[:, :, [0, -1]] = 0.0
    return maps


@pytest.mark.parametrize("kind", ["float", "rounded", "uint8", "framed"])
@pytest.mark.parametrize("shape", [(3, 1, 9), (3, 2, 2), (3, 3, 3), (4, 17, 31), (2, 48, 40)])
def test_curves_equal_naive_on_min_max_grid(kind, shape):
    for seed in range(3):
        resmaps = random_maps(seed, shape, kind)
        grid = threshold_grid(resmaps, "uint8" if kind == "uint8" else "float64", n_steps=64)
        np.testing.assert_array_equal(largest_area_curves(resmaps, grid), largest_area_curves_naive(resmaps, grid))


@pytest.mark.parametrize("kind", ["float", "rounded", "uint8"])
def test_curves_equal_naive_on_arbitrary_grids(kind):
    rng = np.random.default_rng(1)
    resmaps = random_maps(2, (3, 20, 23), kind)
    values = np.unique(resmaps)
    lowest, highest = float(values[0]), float(values[-1])
    grids = [
        np.sort(rng.uniform(lowest - 1, highest + 1, 25)),  # values outside the maps' range
        np.sort(np.r_[values[:: max(1, len(values) // 20)], values[:3]]),  # exact hits and duplicates
        np.array([lowest]),
        np.array([highest + 1.0]),
        np.array([-np.inf, (lowest + highest) / 2, np.inf]),
    ]
    for grid in grids:
        np.testing.assert_array_equal(largest_area_curves(resmaps, grid), largest_area_curves_naive(resmaps, grid))


def test_curves_of_float32_maps_equal_naive_at_float64_thresholds():
    resmaps = random_maps(3, (3, 20, 20), "float").astype(np.float32)
    values = np.unique(resmaps).astype(np.float64)
    # Grid values a hair below/above float32 values: only a float64 comparison separates them.
    grid = np.sort(np.r_[values[::7], np.nextafter(values[::7], -1.0), np.nextafter(values[::7], 2.0)])
    curves = largest_area_curves(resmaps, grid)
    np.testing.assert_array_equal(curves, largest_area_curves_naive(resmaps, grid))
    assert curves.any()


def test_curves_of_constant_and_monotone_maps_are_zero():
    ramp = np.add.outer(np.arange(20.0), np.arange(20.0))
    resmaps = np.stack([np.zeros((20, 20)), np.full((20, 20), 3.0), ramp])
    grid = np.linspace(-1, 40, 50)
    curves = largest_area_curves(resmaps, grid)
    np.testing.assert_array_equal(curves, largest_area_curves_naive(resmaps, grid))
    assert not curves.any()  # every component of a plateau or a ramp touches the border


def test_curve_of_a_framed_plateau():
    resmap = np.zeros((1, 10, 10))
    resmap[0, 1:-1, 1:-1] = 1.0
    resmap[0, 4:6, 4:6] = 2.0
    np.testing.assert_array_equal(largest_area_curves(resmap, [-1.0, 0.0, 0.5, 1.0, 2.0]), [[0, 64, 64, 4, 0]])


def test_hand_made_curve():
    resmap = np.zeros((1, 12, 12))
    resmap[0, 4:7, 4:7] = 1.0  # central blob, area 9
    resmap[0, 5, 5] = 3.0  # its peak, area 1
    resmap[0, 0:4, 8:12] = 2.0  # border blob, always dropped
    grid = np.array([-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    # -0.5: the whole image touches the border; 0.0 .. 0.5: the blob (strict '>');
    # 1.0 .. 2.5: only the peak; 3.0: nothing is above.
    expected = [[0, 9, 9, 1, 1, 1, 1, 0]]
    np.testing.assert_array_equal(largest_area_curves(resmap, grid), expected)
    np.testing.assert_array_equal(largest_area_curves_naive(resmap, grid), expected)


def test_interval_maximum_matches_loop():
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 64, 100):
        lo = rng.integers(0, size, 300)
        hi = np.minimum(size, lo + 1 + rng.integers(0, size, 300))
        values = rng.integers(1, 1000, 300)
        expected = np.zeros(size, dtype=np.int64)
        for start, stop, value in zip(lo, hi, values):
            expected[start:stop] = np.maximum(expected[start:stop], value)
        np.testing.assert_array_equal(thresholds._interval_maximum(lo, hi, values, size), expected)


def test_grid_levels_match_searchsorted():
    rng = np.random.default_rng(4)
    values = rng.random((30, 30))
    grids = [
        np.linspace(0, 1, 1000),
        np.linspace(0.2, 0.7, 7),
        np.sort(rng.random(50)),
        np.array([0.5, 0.5, 0.6]),
        np.array([-np.inf, 0.5, np.inf]),
        np.array([0.0, 1e-300, 1.0]),
    ]
    values.ravel()[:50] = grids[0][rng.integers(0, 1000, 50)]  # exact grid hits
    for grid in grids:
        expected = np.searchsorted(grid, values, side="left")
        np.testing.assert_array_equal(thresholds._grid_levels(values, grid), expected)
    as_uint8 = (values * 255).astype(np.uint8)
    grid = np.arange(0, 256, 3.5)
    np.testing.assert_array_equal(thresholds._grid_levels(as_uint8, grid), np.searchsorted(grid, as_uint8))


@pytest.mark.parametrize("kind", ["float", "rounded", "uint8"])
def test_max_component_level_is_the_supremum_of_defective_thresholds(kind):
    resmaps = random_maps(5, (6, 16, 18), kind)
    for min_area in (1, 4, 15):
        scores = max_component_level(resmaps, min_area)
        for resmap, score in zip(resmaps, scores):
            values = np.unique(resmap).astype(np.float64)
            tests = np.r_[values, (values[1:] + values[:-1]) / 2, values[-1] + 1]
            defective = np.array([is_defective(resmap[None], t, min_area)[0] for t in tests])
            if score == NO_COMPONENT_SCORE:
                assert not defective.any()
                continue
            assert score in values
            # False at and above the score, True on [next lower value, score).
            assert not defective[tests >= score].any()
            below = values[np.searchsorted(values, score) - 1]
            assert defective[(tests >= below) & (tests < score)].all()


def test_max_component_level_hand_made_and_empty():
    resmaps = np.zeros((3, 10, 10))
    resmaps[0, 3:6, 3:6] = 0.5
    resmaps[0, 4, 4] = 0.9
    resmaps[1, :, 4:6] = 1.0  # crosses the image: touches the border at every threshold
    np.testing.assert_array_equal(max_component_level(resmaps, 1), [0.9, NO_COMPONENT_SCORE, NO_COMPONENT_SCORE])
    np.testing.assert_array_equal(max_component_level(resmaps, 2), [0.5, NO_COMPONENT_SCORE, NO_COMPONENT_SCORE])
    assert max_component_level(resmaps, 10)[0] == NO_COMPONENT_SCORE
    assert np.isneginf(max_component_level(resmaps, 10, empty_score=-np.inf)).all()


def test_threshold_grid():
    resmaps = np.array([[[3, 7], [5, 200]]], dtype=np.uint8)
    np.testing.assert_array_equal(threshold_grid(resmaps, "uint8"), np.arange(3, 201))
    floats = [np.full((1, 2, 2), 0.25), np.full((2, 3, 3), 0.75)]
    grid = threshold_grid(floats, np.float64, n_steps=11)
    np.testing.assert_allclose(grid, np.linspace(0.25, 0.75, 11))
    assert grid[0] == 0.25 and grid[-1] == 0.75
    assert len(threshold_grid(floats, "float64")) == thresholds.DEFAULT_FLOAT_STEPS
    np.testing.assert_array_equal(threshold_grid(np.full((1, 2, 2), 0.5), "float64"), [0.5])


def test_min_thresholds_for_areas_hand_made():
    curves = np.array([[0, 5, 3, 0, 0], [0, 2, 6, 1, 0]])
    grid = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    # worst curve [0, 5, 6, 1, 0]: the low start (border clearing) must not count as clean.
    result = min_thresholds_for_areas(curves, grid, [1, 2, 6, 7])
    np.testing.assert_array_equal(result, [14.0, 13.0, 13.0, 10.0])
    failing_top = np.array([[0, 1, 4]])
    np.testing.assert_array_equal(min_thresholds_for_areas(failing_top, grid[:3], [3, 5]), [12.0, 10.0])


def test_min_thresholds_for_areas_matches_loop():
    rng = np.random.default_rng(6)
    curves = rng.integers(0, 50, (7, 40))
    grid = np.sort(rng.random(40))
    min_areas = np.arange(1, 60, 3)
    expected = []
    for min_area in min_areas:
        clean = [j for j in range(40) if all(curves[:, k].max() < min_area for k in range(j, 40))]
        expected.append(grid[clean[0]] if clean else grid[-1])
    np.testing.assert_array_equal(min_thresholds_for_areas(curves, grid, min_areas), expected)


def test_score_pairs_matches_sklearn():
    rng = np.random.default_rng(7)
    curves = rng.integers(0, 30, (25, 12))
    labels = rng.random(25) < 0.4
    grid = np.arange(12.0)
    min_areas = np.array([1, 5, 10, 20, 29])
    pair_thresholds = grid[[0, 3, 5, 11, 7]]
    rates = score_pairs(curves, labels, grid, min_areas, pair_thresholds)
    for i, (min_area, threshold) in enumerate(zip(min_areas, pair_thresholds)):
        predicted = curves[:, int(threshold)] >= min_area
        assert rates["tpr"][i] == pytest.approx(recall_score(labels, predicted, pos_label=True))
        assert rates["tnr"][i] == pytest.approx(recall_score(labels, predicted, pos_label=False))
        assert rates["score"][i] == pytest.approx(balanced_accuracy_score(labels, predicted))


def test_score_pairs_with_a_missing_class():
    curves = np.array([[0, 8], [3, 9]])
    rates = score_pairs(curves, [False, False], [0.0, 1.0], [5, 9], [1.0, 1.0])
    assert np.isnan(rates["tpr"]).all()
    np.testing.assert_array_equal(rates["tnr"], [0.0, 0.5])
    np.testing.assert_array_equal(rates["score"], rates["tnr"])


def test_choose_best_pair_tie_rule():
    min_areas = [5, 10, 15, 20]
    pair_thresholds = [0.9, 0.7, 0.5, 0.3]
    assert choose_best_pair(min_areas, pair_thresholds, [0.8, 0.9, 0.9, 0.6]) == (15, 0.5, 0.9)
    assert choose_best_pair(min_areas, pair_thresholds, [np.nan, 0.2, 0.1, np.nan]) == (10, 0.7, 0.2)
    assert choose_best_pair([5, 5], [0.4, 0.2], [1.0, 1.0]) == (5, 0.2, 1.0)
    with pytest.raises(ValueError, match="every score is NaN"):
        choose_best_pair([5], [0.1], [np.nan])


def blob_maps(rng, n, size, with_blob):
    maps = smooth_maps(rng, (n, size, size), sigma=2.0) * 0.5
    for index in range(n):
        if with_blob[index]:
            row, col = rng.integers(8, size - 14, 2)
            maps[index, row : row + 6, col : col + 6] += 0.8
    return maps


@pytest.mark.parametrize("dtype", ["float64", "uint8"])
def test_search_matches_naive_and_finds_the_blobs(dtype):
    rng = np.random.default_rng(8)
    val = blob_maps(rng, 6, 32, np.zeros(6, dtype=bool))
    labels = np.arange(8) % 2 == 1
    finetune = blob_maps(rng, 8, 32, labels)
    if dtype == "uint8":
        top = max(val.max(), finetune.max())
        val, finetune = (np.round(a / top * 255).astype(np.uint8) for a in (val, finetune))
    min_areas = range(5, 60, 5)
    fast = search_min_area_threshold(val, finetune, labels, dtype, min_areas=min_areas, n_steps=300, progress=False)
    naive = search_min_area_threshold(
        val, finetune, labels, dtype, min_areas=min_areas, n_steps=300, naive=True, progress=False
    )
    np.testing.assert_array_equal(fast.val_curves, naive.val_curves)
    np.testing.assert_array_equal(fast.finetune_curves, naive.finetune_curves)
    np.testing.assert_array_equal(fast.scores, naive.scores)
    assert (fast.best_min_area, fast.best_threshold, fast.best_score) == (
        naive.best_min_area,
        naive.best_threshold,
        naive.best_score,
    )
    assert fast.best_score == 1.0  # the 6x6 blobs stand out of the background
    # The chosen pair really separates the finetuning maps under the decision rule.
    predicted = is_defective(finetune, fast.best_threshold, fast.best_min_area)
    np.testing.assert_array_equal(predicted, labels)
    assert not is_defective(val, fast.best_threshold, fast.best_min_area).any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: largest_area_curves(np.zeros((1, 4, 4)), [0.5, 0.2]), "thresholds: expected values sorted"),
        (lambda: largest_area_curves(np.zeros((1, 4, 4)), []), "thresholds: expected a non-empty 1-D"),
        (lambda: largest_area_curves(np.zeros((4, 4)), [0.5]), "resmaps: expected an array of shape"),
        (lambda: max_component_level(np.zeros((1, 4, 4)), 0), "min_area: expected an integer >= 1"),
        (lambda: threshold_grid(np.zeros((1, 4, 4)), "complex128"), "dtype: expected an integer or float"),
        (lambda: threshold_grid(np.zeros((1, 4, 4)), "nonsense"), "dtype: expected a numpy dtype"),
        (lambda: threshold_grid(np.zeros((1, 4, 4)), "float64", n_steps=1), "n_steps: expected an integer >= 2"),
        (lambda: min_thresholds_for_areas(np.zeros((2, 3)), [0.0, 1.0], [5]), r"val_curves: expected shape \(N, 2\)"),
        (lambda: min_thresholds_for_areas(np.zeros((2, 2)), [0.0, 1.0], [0]), "min_areas: expected integers >= 1"),
        (lambda: score_pairs(np.zeros((2, 2)), [True], [0.0, 1.0], [5], [1.0]), r"labels: expected shape \(2,\)"),
        (lambda: score_pairs(np.zeros((1, 2)), [2], [0.0, 1.0], [5], [1.0]), "labels: expected booleans"),
        (lambda: score_pairs(np.zeros((1, 2)), [True], [0.0, 1.0], [5], [0.5]), "are not values of thresholds"),
        (
            lambda: search_min_area_threshold(np.zeros((0, 4, 4)), np.zeros((1, 4, 4)), [True], "float64"),
            "val_resmaps: expected at least one",
        ),
    ],
)
def test_bad_input_raises_one_line_value_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
