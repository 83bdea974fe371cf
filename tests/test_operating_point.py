"""The smoothed rule of the finetuning search (processing/decision/operating_point.py, thresholds.py):
constructed maps whose answer is known, operating points reached on held-out maps, the warnings."""

import json

import numpy as np
import pytest

from processing.decision.operating_point import (
    OperatingPoint,
    decision_warnings,
    silverman_bandwidth,
    wilson_interval,
)
from processing.decision.segmentation import is_defective
from processing.decision.thresholds import min_area_candidates, search_min_area_threshold
from processing.detectors.segmentation import SegmentationResult
from processing.evaluation.metrics import best_balanced_accuracy

SIDE = 32


def blob_maps(values, rng, side=SIDE, blob=5, noise=0.1):
    """(N, side, side) maps: uniform noise below `noise` and a blob x blob square of value v in the middle."""
    values = np.asarray(values, dtype=np.float64)
    maps = rng.uniform(0.0, noise, (len(values), side, side))
    start = (side - blob) // 2
    maps[:, start:start + blob, start:start + blob] = values[:, None, None]
    return maps


def search(val, finetune, labels, **kwargs):
    kwargs = {"clear_border": False, "progress": False, "n_steps": 400} | kwargs
    return search_min_area_threshold(val, finetune, labels, "float64", **kwargs)


def test_one_outlier_validation_map_does_not_move_the_threshold_to_it():
    rng = np.random.default_rng(0)
    good = rng.uniform(1.0, 2.0, 60)
    val = blob_maps(np.r_[good, 50.0], rng)  # one unusual good validation image
    finetune = blob_maps(np.r_[rng.uniform(1.0, 2.0, 10), rng.uniform(4.0, 5.0, 10)], rng)
    labels = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    smoothed = search(val, finetune, labels)
    original = search(val, finetune, labels, rule="original", min_areas=[1, 5, 10])
    assert original.best_threshold >= 49.0  # the original rule keeps the outlier clean
    assert 2.0 <= smoothed.best_threshold < 4.0  # between the classes, far below the outlier
    assert smoothed.rule == "smoothed" and smoothed.best_tpr == 1.0
    # On new maps drawn as before it finds every defect and flags (almost) no good image.
    held_good = blob_maps(rng.uniform(1.0, 2.0, 200), rng)
    held_bad = blob_maps(rng.uniform(4.0, 5.0, 200), rng)
    assert is_defective(held_bad, smoothed.best_threshold, smoothed.best_min_area, clear_border=False).all()
    assert not is_defective(held_good, smoothed.best_threshold, smoothed.best_min_area, clear_border=False).any()


def test_separated_classes_get_the_middle_of_the_gap_and_ties_the_smaller_min_area():
    rng = np.random.default_rng(1)
    val = blob_maps(rng.uniform(1.0, 2.0, 40), rng)
    finetune = blob_maps(np.r_[rng.uniform(1.0, 2.0, 5), rng.uniform(6.0, 7.0, 8)], rng)
    labels = np.r_[np.zeros(5, bool), np.ones(8, bool)]
    # min_areas 1..25 all see the 25-pixel blob: the same decisions, a tie the smallest wins.
    result = search(val, finetune, labels, min_areas=[1, 4, 9, 25])
    assert result.best_min_area == 1
    assert 3.0 < result.best_threshold < 5.0  # not hugging the highest good map (2.0) nor the lowest defect (6.0)
    assert result.expected.tpr_interval[0] < 1.0  # 8 of 8 found: the Wilson interval still leaves room
    assert result.warnings == []


def test_a_false_alarm_budget_is_reached_on_held_out_good_maps():
    rng = np.random.default_rng(2)
    n_val, budget = 400, 0.1
    val = blob_maps(rng.normal(3.0, 1.0, n_val), rng)
    finetune = blob_maps(np.r_[rng.normal(3.0, 1.0, 10), rng.normal(6.0, 1.0, 15)], rng)
    labels = np.r_[np.zeros(10, bool), np.ones(15, bool)]
    result = search(val, finetune, labels, operating_point=OperatingPoint("false_alarms", budget), min_areas=[1, 9])
    held_out = blob_maps(rng.normal(3.0, 1.0, 4000), rng)
    flagged = is_defective(held_out, result.best_threshold, result.best_min_area, clear_border=False).mean()
    # The threshold is estimated from 410 good maps: within 3 standard errors of that estimate.
    assert abs(flagged - budget) < 3 * np.sqrt(budget * (1 - budget) / n_val)
    assert result.operating_point == OperatingPoint("false_alarms", budget)


def test_a_detection_rate_is_reached_on_held_out_defective_maps():
    rng = np.random.default_rng(3)
    val = blob_maps(rng.normal(3.0, 1.0, 100), rng)
    finetune = blob_maps(np.r_[rng.normal(3.0, 1.0, 10), rng.normal(5.0, 1.0, 40)], rng)
    labels = np.r_[np.zeros(10, bool), np.ones(40, bool)]
    result = search(val, finetune, labels, operating_point=OperatingPoint("detection", 0.9), min_areas=[1])
    held_out = blob_maps(rng.normal(5.0, 1.0, 4000), rng)
    found = is_defective(held_out, result.best_threshold, 1, clear_border=False).mean()
    assert abs(found - 0.9) < 3 * np.sqrt(0.9 * 0.1 / 40)
    balanced = search(val, finetune, labels, min_areas=[1])
    assert result.best_threshold < balanced.best_threshold  # more detection asks for a lower threshold


def test_an_unreachable_target_and_the_largest_min_area_warn_in_one_line():
    rng = np.random.default_rng(4)
    # Goods carry a bright 2-pixel speck, defects a bright 3-pixel one: only min_area 3 tells them apart.
    val, finetune = rng.uniform(0, 0.1, (30, SIDE, SIDE)), rng.uniform(0, 0.1, (12, SIDE, SIDE))
    val[:, 10, 10:12] = 5.0
    finetune[:6, 10, 10:12] = 5.0
    finetune[6:, 10, 10:13] = 5.0
    labels = np.r_[np.zeros(6, bool), np.ones(6, bool)]
    result = search(val, finetune, labels, min_areas=[1, 2, 3])
    assert result.best_min_area == 3 and result.best_tpr == 1.0 and result.best_tnr == 1.0
    assert any("largest candidate" in warning for warning in result.warnings)
    assert all("\n" not in warning for warning in result.warnings)


def test_warnings_when_the_decision_flags_almost_nothing_or_everything_or_data_are_too_few():
    assert any("flags almost nothing" in w for w in decision_warnings(0.05, 0.99, None, 100, 20))
    assert any("flags almost everything" in w for w in decision_warnings(1.0, 0.02, None, 100, 20))
    assert any("too few" in w for w in decision_warnings(0.8, 0.9, None, 100, 2))
    assert decision_warnings(0.8, 0.9, None, 100, 20) == []


def test_indistinguishable_classes_say_the_subset_cannot_tell_the_candidates_apart():
    rng = np.random.default_rng(5)
    val = blob_maps(rng.normal(3.0, 1.0, 60), rng)
    finetune = blob_maps(rng.normal(3.0, 1.0, 16), rng)  # "defects" drawn like the good images
    labels = np.r_[np.zeros(8, bool), np.ones(8, bool)]
    result = search(val, finetune, labels, min_areas=[1, 9, 25])
    assert any("cannot tell the candidate decisions apart" in w for w in result.warnings)


def test_min_area_candidates_scale_with_the_map():
    small, large = min_area_candidates(64 * 64), min_area_candidates(256 * 256)
    assert small[0] == large[0] == 1
    assert small[-1] == int(0.05 * 64 * 64) and large[-1] == int(0.05 * 256 * 256)
    assert np.all(np.diff(large) > 0)
    with pytest.raises(ValueError, match="map_pixels"):
        min_area_candidates(0)


def test_the_original_rule_stays_reproducible_and_refuses_a_detection_target():
    rng = np.random.default_rng(6)
    val = blob_maps(rng.uniform(1.0, 2.0, 20), rng)
    finetune = blob_maps(np.r_[rng.uniform(1.0, 2.0, 4), rng.uniform(4.0, 5.0, 4)], rng)
    labels = np.r_[np.zeros(4, bool), np.ones(4, bool)]
    original = search(val, finetune, labels, rule="original")
    assert original.rule == "original" and original.min_areas[-1] == 1000
    assert original.best_threshold >= val.max() - 1e-9 or original.best_min_area > 25  # every validation map clean
    with pytest.raises(ValueError, match="--min-detection"):
        search(val, finetune, labels, rule="original", operating_point=OperatingPoint("detection", 0.9))
    with pytest.raises(ValueError, match="rule"):
        search(val, finetune, labels, rule="best")


def test_operating_points_check_their_rates():
    assert OperatingPoint.from_json(OperatingPoint("false_alarms", 0.05).to_json()) == OperatingPoint("false_alarms", 0.05)
    for bad in (-0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="rate"):
            OperatingPoint("detection", bad)
    with pytest.raises(ValueError, match="expected one of"):
        OperatingPoint("recall")


def test_a_result_without_a_rule_reads_as_the_original_rule():
    data = {"model": "m.keras", "method": "ssim", "dtype": "float64", "best_min_area": 5, "best_threshold": 0.2}
    assert SegmentationResult.from_json(data).rule == "original"
    with pytest.raises(ValueError, match="rule"):
        SegmentationResult.from_json(data | {"rule": "magic"})
    result = SegmentationResult.from_json(json.loads(json.dumps(data | {"rule": "smoothed", "expected": {
        "tpr": 0.9, "tpr_interval": [0.8, 1.0], "tnr": 0.95, "tnr_interval": [0.9, 0.99], "resamples": 200}})))
    assert result.expectation_line() == "expected TPR 0.90 (0.80-1.00), TNR 0.95 (0.90-0.99) (finetuning data, 200 resamples)"


def test_best_balanced_accuracy_equals_a_naive_loop():
    rng = np.random.default_rng(7)
    for _ in range(20):
        labels = rng.random(40) < 0.4
        scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # ties included
        naive = max(((scores >= t)[labels].mean() + (scores < t)[~labels].mean()) / 2 for t in np.r_[np.unique(scores), np.inf])
        assert best_balanced_accuracy(labels, scores) == pytest.approx(naive)
    assert np.isnan(best_balanced_accuracy([True, True], [0.1, 0.2]))


def test_helpers_against_references():
    assert silverman_bandwidth([5.0]) == 1.0 and silverman_bandwidth([2.0, 2.0, 2.0]) == 1.0
    values = np.random.default_rng(8).normal(0, 10, 500)
    assert silverman_bandwidth(values) == pytest.approx(0.9 * min(values.std(ddof=1), np.subtract(*np.percentile(values, [75, 25])) / 1.34)
                                                        * 500 ** -0.2)
    low, high = wilson_interval(9, 9)
    assert high == 1.0 and 0.75 < low < 0.79  # z = 1.645
    low, high = wilson_interval(15, 30)
    assert low == pytest.approx(1 - high)


def test_the_dual_density_rule_smoothed_ignores_one_outlier_and_keeps_the_error_rule_off_on_ties():
    from processing.decision.density import dual_rule_predict, search_dual_smoothed, search_dual_thresholds

    rng = np.random.default_rng(9)
    val_log_density, val_error = rng.normal(0.0, 1.0, 80), rng.normal(1.0, 0.1, 80)
    val_log_density[0] = -40.0  # one unusual good validation image
    ft_log_density = np.r_[rng.normal(0.0, 1.0, 10), rng.normal(-6.0, 1.0, 10)]
    ft_error = rng.normal(1.0, 0.1, 20)  # the error tells nothing
    labels = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    original = search_dual_thresholds(val_log_density, val_error, ft_log_density, ft_error, labels)
    smoothed = search_dual_smoothed(val_log_density, val_error, ft_log_density, ft_error, labels)
    assert original.best_density_threshold <= -40.0  # pinned below the outlier: no defect is flagged by density
    assert -6.0 < smoothed.best_density_threshold < -1.0 and smoothed.best_error_threshold == np.inf
    held_good, held_bad = rng.normal(0.0, 1.0, 2000), rng.normal(-6.0, 1.0, 2000)
    flagged_good = dual_rule_predict(held_good, np.ones(2000), smoothed.best_density_threshold, smoothed.best_error_threshold).mean()
    found = dual_rule_predict(held_bad, np.ones(2000), smoothed.best_density_threshold, smoothed.best_error_threshold).mean()
    assert flagged_good < 0.05 and found > 0.9
    assert smoothed.expected.tpr_interval[0] <= found <= smoothed.expected.tpr_interval[1] + 1e-9


def test_without_defective_finetuning_images_the_original_rule_chooses_and_says_so():
    rng = np.random.default_rng(10)
    val = blob_maps(rng.uniform(1.0, 2.0, 20), rng)
    finetune = blob_maps(rng.uniform(1.0, 2.0, 4), rng)
    result = search(val, finetune, np.zeros(4, bool))
    assert result.rule == "original"
    assert not is_defective(val, result.best_threshold, result.best_min_area, clear_border=False).any()
    assert any("holds no defective image" in warning for warning in result.warnings)
    with pytest.raises(ValueError, match="no defective image"):
        search(val, finetune, np.zeros(4, bool), operating_point=OperatingPoint("detection", 0.9))


def test_a_wide_expected_interval_warns_that_the_subset_is_too_small():
    from processing.decision.operating_point import Expected

    def expected(tpr_interval):
        return Expected(0.5, tpr_interval, 0.9, (0.85, 0.95), 0.7, (0.5, 0.9), 0.0, 200)

    assert any("too small to say" in w and "TPR 0.00-1.00" in w for w in decision_warnings(0.5, 0.9, expected((0.0, 1.0)), 30, 7))
    assert decision_warnings(0.5, 0.9, expected((0.3, 0.7)), 30, 7) == []


def test_smoothing_along_the_grid_equals_scipys_gaussian_filter():
    from scipy.ndimage import gaussian_filter1d

    from processing.decision.operating_point import smooth_along_grid

    rates = (np.random.default_rng(11).random((5, 2000)) < 0.3).astype(float)
    for bandwidth in (1.0, 3.7, 40.0, 180.0):  # direct and FFT paths
        np.testing.assert_allclose(smooth_along_grid(rates, bandwidth), gaussian_filter1d(rates, bandwidth, axis=-1, mode="nearest"),
                                   atol=1e-10)
