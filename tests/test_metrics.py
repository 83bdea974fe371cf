"""Tests of processing.evaluation.metrics against independent references (scikit-learn, scikit-image, plain loops)."""

import json
import logging
import math

import numpy as np
import pytest
from skimage.measure import label as skimage_label
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from processing.evaluation.metrics import (
    PixelMetricsAccumulator,
    aupro,
    classification_metrics,
    image_auroc,
    mask_iou,
    mean_iou,
    metrics_by_defect_type,
    pixel_auroc,
)

LOGGER_NAME = "processing.evaluation.metrics"


# ----------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------
def reference_pro_curve(masks, maps):
    """PRO curve by brute force: every distinct score is a threshold; regions by skimage, 8-connectivity."""
    regions = []
    for index, mask in enumerate(masks):
        labelled = skimage_label(mask, connectivity=2)
        for region_id in range(1, labelled.max() + 1):
            regions.append((index, labelled == region_id))
    n_normal = sum(int((~mask).sum()) for mask in masks)
    thresholds = sorted({float(v) for score_map in maps for v in np.ravel(score_map)}, reverse=True)
    fprs, pros = [0.0], [0.0]
    for threshold in thresholds:
        false_positives = sum(int(((score_map >= threshold) & ~mask).sum()) for mask, score_map in zip(masks, maps))
        overlaps = [float((maps[index][region] >= threshold).mean()) for index, region in regions]
        fprs.append(false_positives / n_normal)
        pros.append(sum(overlaps) / len(overlaps))
    return fprs, pros


def reference_aupro(masks, maps, limit=0.3):
    fprs, pros = reference_pro_curve(masks, maps)
    area = 0.0
    for k in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[k - 1], fprs[k], pros[k - 1], pros[k]
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def reference_pixel_auroc(masks, maps):
    return roc_auc_score(
        np.concatenate([np.ravel(m) for m in masks]), np.concatenate([np.ravel(s) for s in maps])
    )


def pairwise_auroc(labels, scores):
    """Mann-Whitney by comparing every defective/good pair; ties count one half."""
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def make_masks(size=32):
    """Six masks: two good images, images with 1, 2 (one diagonal, 8-connected) and 3 regions, an L shape."""
    masks = np.zeros((6, size, size), dtype=bool)
    masks[1, 4:12, 5:15] = True
    masks[2, 2:5, 2:5] = True
    for k in range(8):
        masks[2, 20 + k, 20 + k] = True  # diagonal: one region only with 8-connectivity
    masks[3, 0:2, 28:32] = True
    masks[3, 15, 15] = True
    masks[3, 20:31, 0:12] = True
    masks[5, 10:25, 10:13] = True
    masks[5, 22:25, 10:20] = True
    return masks


def make_maps(masks, seed=0):
    rng = np.random.default_rng(seed)
    return 0.7 * rng.random(masks.shape) + 0.3 * masks * rng.random(masks.shape)


def quantise_to_bin_centres(maps, n_bins):
    return (np.floor(maps * n_bins) + 0.5) / n_bins


@pytest.fixture(scope="module")
def masks():
    return make_masks()


@pytest.fixture(scope="module")
def maps(masks):
    return make_maps(masks)


# ----------------------------------------------------------------------------
# pixel level
# ----------------------------------------------------------------------------
def test_hand_computed_tiny_example():
    # Region A (image 0, area 2): scores 0.9, 0.9.  Region B (image 1, area 3): 0.9, 0.5, 0.1.
    # 15 normal pixels: one at 0.9, five at 0.5, nine at 0.1.
    # t=0.9: FPR 1/15, PRO (1 + 1/3)/2 = 2/3;  t=0.5: FPR 6/15 = 0.4, PRO (1 + 2/3)/2 = 5/6;  t=0.1: (1, 1).
    # Curve (0,0) (1/15,2/3) (0.4,5/6) (1,1). Slope on the middle segment (1/6)/(1/3) = 1/2, so
    # PRO(0.3) = 2/3 + (0.3 - 1/15)/2 = 47/60.
    # Area = (1/15)(2/3)/2 + (0.3 - 1/15)(2/3 + 47/60)/2 = 1/45 + 609/3600 = 689/3600; / 0.3 -> 689/1080.
    # Pixel AUROC (Mann-Whitney, 5 defect x 15 normal): 3*(14 + 1/2) + (9 + 5/2) + 9/2 = 59.5 -> 59.5/75.
    masks = np.array(
        [
            [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]],
            [[0, 0, 0, 0, 0], [0, 0, 1, 1, 1]],
        ],
        dtype=bool,
    )
    maps = np.array(
        [
            [[0.9, 0.9, 0.9, 0.5, 0.5], [0.5, 0.1, 0.1, 0.1, 0.1]],
            [[0.5, 0.5, 0.1, 0.1, 0.1], [0.1, 0.1, 0.9, 0.5, 0.1]],
        ]
    )
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=10)
    accumulator.update(masks, maps)
    result = accumulator.result()
    assert result["aupro"] == pytest.approx(689 / 1080, abs=1e-12)
    assert result["pixel_auroc"] == pytest.approx(59.5 / 75, abs=1e-12)
    fprs, pros = result["pro_curve"]
    np.testing.assert_allclose(fprs, [0, 1 / 15, 0.4, 1], atol=1e-12)
    np.testing.assert_allclose(pros, [0, 2 / 3, 5 / 6, 1], atol=1e-12)
    assert result["n_regions"] == 2
    assert reference_aupro(masks, maps) == pytest.approx(689 / 1080, abs=1e-12)


def test_exact_when_scores_lie_on_bin_centres(masks, maps):
    n_bins = 64
    quantised = quantise_to_bin_centres(maps, n_bins)
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=n_bins)
    accumulator.update(masks, quantised)
    result = accumulator.result()
    assert result["pixel_auroc"] == pytest.approx(reference_pixel_auroc(masks, quantised), abs=1e-12)
    assert result["aupro"] == pytest.approx(reference_aupro(masks, quantised), abs=1e-12)
    reference_fprs, reference_pros = reference_pro_curve(masks, quantised)
    np.testing.assert_allclose(result["pro_curve"][0], reference_fprs, atol=1e-12)
    np.testing.assert_allclose(result["pro_curve"][1], reference_pros, atol=1e-12)


def test_coarse_bins_equal_exact_metrics_of_binned_scores(masks, maps):
    # Scores sharing a bin are ties: results equal the exact metrics of the bin indices.
    n_bins = 16
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=n_bins)
    accumulator.update(masks, maps)
    bin_indices = np.floor(maps * n_bins)
    assert accumulator.pixel_auroc() == pytest.approx(reference_pixel_auroc(masks, bin_indices), abs=1e-12)
    assert accumulator.aupro() == pytest.approx(reference_aupro(masks, bin_indices), abs=1e-12)


def test_continuous_scores_within_1e_3_of_exact(masks, maps):
    assert pixel_auroc(masks, maps) == pytest.approx(reference_pixel_auroc(masks, maps), abs=1e-3)
    assert aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-3)


@pytest.mark.parametrize("limit", [0.05, 1.0])
def test_other_integration_limits(masks, maps, limit):
    quantised = quantise_to_bin_centres(maps, 128)
    assert aupro(masks, quantised, integration_limit=limit, value_range=(0, 1), n_bins=128) == pytest.approx(
        reference_aupro(masks, quantised, limit), abs=1e-12
    )


def test_perfect_and_inverted_maps(masks):
    perfect = masks.astype(np.float64)
    assert pixel_auroc(masks, perfect) == 1.0
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=1e-12)
    inverted = 1.0 - perfect
    assert pixel_auroc(masks, inverted) == 0.0
    assert aupro(masks, inverted) == pytest.approx(0.0, abs=1e-12)


def test_results_independent_of_batching(masks, maps):
    whole = PixelMetricsAccumulator((0.0, 1.0))
    whole.update(masks, maps)
    split = PixelMetricsAccumulator((0.0, 1.0))
    for start, stop in [(0, 2), (2, 3), (3, 6)]:
        split.update(masks[start:stop], maps[start:stop])
    single = PixelMetricsAccumulator((0.0, 1.0))
    for mask, score_map in zip(masks, maps):
        single.update(mask, score_map)  # (H, W) is one image
    expected = whole.result()
    for other in (split.result(), single.result()):
        assert other["pixel_auroc"] == expected["pixel_auroc"]
        assert other["aupro"] == pytest.approx(expected["aupro"], abs=1e-12)
        assert other["n_regions"] == expected["n_regions"] == 7
        assert other["n_images"] == 6
        np.testing.assert_allclose(other["pro_curve"][1], expected["pro_curve"][1], atol=1e-12)


def test_regions_are_8_connected_per_image():
    # Two diagonal pixels are one region; touching pixels in consecutive images are not joined.
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 3, 3] = masks[0, 4, 4] = True
    masks[1, 3, 3] = True
    maps = masks.astype(float)
    maps[0, 4, 4] = 0.0  # one of the two pixels of the diagonal region is missed
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=4)
    accumulator.update(masks, maps)
    assert accumulator.n_regions == sum(skimage_label(m, connectivity=2).max() for m in masks) == 2
    fprs, pros = accumulator.pro_curve()
    # At threshold 1: no false positive; overlaps 1/2 and 1 -> PRO 3/4.
    assert fprs[1] == 0.0 and pros[1] == pytest.approx(0.75)


def test_images_of_different_sizes_as_sequences():
    rng = np.random.default_rng(3)
    masks = [np.zeros((16, 16), bool), np.zeros((32, 24), bool), np.zeros((20, 20), bool)]
    masks[1][3:9, 4:10] = True
    masks[1][20:22, 20:23] = True
    masks[2][5:15, 5] = True
    maps = [quantise_to_bin_centres(0.8 * rng.random(m.shape) + 0.2 * m, 32) for m in masks]
    assert pixel_auroc(masks, maps, value_range=(0, 1), n_bins=32) == pytest.approx(
        reference_pixel_auroc(masks, maps), abs=1e-12
    )
    assert aupro(masks, maps, value_range=(0, 1), n_bins=32) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_out_of_range_scores_are_clipped_and_reported(masks, maps, caplog):
    stretched = maps * 2.0 - 0.5  # about half the values leave [0, 1]
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=32)
    accumulator.update(masks, stretched)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = accumulator.result()
    assert result["n_clipped"] == int(np.count_nonzero((stretched < 0) | (stretched > 1)))
    assert "clipped" in caplog.text
    clipped = np.clip(stretched, 0.0, 1.0)
    reference = PixelMetricsAccumulator((0.0, 1.0), n_bins=32)
    reference.update(masks, clipped)
    assert result["aupro"] == pytest.approx(reference.aupro(), abs=1e-12)
    assert result["pixel_auroc"] == reference.pixel_auroc()


def test_memory_does_not_grow_with_images(masks, maps):
    accumulator = PixelMetricsAccumulator((0.0, 1.0), n_bins=1024)

    def state_bytes():
        return sum(v.nbytes for v in vars(accumulator).values() if isinstance(v, np.ndarray))

    accumulator.update(masks, maps)
    before = state_bytes()
    for _ in range(20):
        accumulator.update(masks, maps)
    assert state_bytes() == before == 3 * 1024 * 8
    assert accumulator.n_regions == 21 * 7


def test_undefined_metrics_are_nan_with_warning(caplog):
    good_masks = np.zeros((2, 8, 8), dtype=bool)
    maps = np.random.default_rng(0).random((2, 8, 8))
    accumulator = PixelMetricsAccumulator((0.0, 1.0))
    accumulator.update(good_masks, maps)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        result = accumulator.result()
    assert math.isnan(result["pixel_auroc"]) and math.isnan(result["aupro"])
    assert result["pro_curve"] is None
    assert "undefined" in caplog.text


def test_pixel_input_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"masks \(3,32,32\) vs maps \(3,16,16\)"):
        pixel_auroc(np.zeros((3, 32, 32), bool), np.zeros((3, 16, 16)))
    accumulator = PixelMetricsAccumulator()
    with pytest.raises(ValueError, match="NaN"):
        accumulator.update(np.zeros((1, 4, 4), bool), np.full((1, 4, 4), np.nan))
    with pytest.raises(ValueError, match="masks must be boolean or 0/1"):
        accumulator.update(np.full((1, 4, 4), 255, np.uint8), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"masks \(2 images\) vs maps \(1 images\)"):
        aupro([np.zeros((4, 4), bool)] * 2, [np.zeros((4, 4))])
    with pytest.raises(ValueError, match="value_range"):
        PixelMetricsAccumulator((1.0, 0.0))
    with pytest.raises(ValueError, match="n_bins"):
        PixelMetricsAccumulator(n_bins=1)
    with pytest.raises(ValueError, match="integration_limit"):
        PixelMetricsAccumulator(integration_limit=0.0)


# ----------------------------------------------------------------------------
# image level
# ----------------------------------------------------------------------------
def test_image_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.3 * labels, 1)  # rounding creates ties
    assert image_auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores), abs=1e-12)
    assert image_auroc(labels.astype(int).tolist(), scores.tolist()) == pytest.approx(pairwise_auroc(labels, scores))


def test_image_auroc_single_class_is_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert "one class" in caplog.text


def test_image_input_errors():
    with pytest.raises(ValueError, match=r"labels \(3\) vs scores \(2\)"):
        image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels must be boolean or 0/1"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores contain NaN"):
        image_auroc([0, 1], [0.1, np.nan])


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y_true = rng.random(50) < 0.5
    y_pred = rng.random(50) < 0.5
    metrics = classification_metrics(y_true, y_pred)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred).ravel()
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (tp, fp, tn, fn)
    assert metrics["tpr"] == pytest.approx(recall_score(y_true, y_pred))
    assert metrics["tnr"] == pytest.approx(recall_score(~y_true, ~y_pred))
    assert metrics["fpr"] == pytest.approx(1 - metrics["tnr"])
    assert metrics["fnr"] == pytest.approx(1 - metrics["tpr"])
    assert metrics["balanced_accuracy"] == metrics["score"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert metrics["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert metrics["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert all(type(v) in (int, float) for v in metrics.values())
    assert json.loads(json.dumps(metrics)) == metrics


def test_classification_metrics_undefined_ratios_are_nan():
    metrics = classification_metrics([0, 0, 0], [0, 0, 1])  # no defective image, nothing predicted right
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (0, 1, 2, 0)
    assert math.isnan(metrics["tpr"]) and math.isnan(metrics["fnr"]) and math.isnan(metrics["balanced_accuracy"])
    assert metrics["precision"] == 0.0 and metrics["f1"] == 0.0
    assert metrics["tnr"] == pytest.approx(2 / 3)
    assert math.isnan(classification_metrics([0, 0], [0, 0])["precision"])


def test_metrics_by_defect_type_uses_type_images_plus_all_good():
    rng = np.random.default_rng(4)
    types = np.array(["good"] * 6 + ["crack"] * 4 + ["fray"] * 3 + ["blowhole"] * 2)
    labels = types != "good"
    scores = rng.random(types.size) + 0.5 * labels
    preds = scores > 0.7
    results = metrics_by_defect_type(types.tolist(), labels, scores, preds)
    assert list(results) == ["blowhole", "crack", "fray"]
    for defect_type, entry in results.items():
        selected = (types == defect_type) | (types == "good")
        assert entry["n_images"] == int(selected.sum())
        assert entry["n_defective"] == int((types == defect_type).sum())
        assert entry["image_auroc"] == pytest.approx(pairwise_auroc(labels[selected], scores[selected]))
        assert entry["tp"] == int((preds & (types == defect_type)).sum())
        assert entry["fp"] == int((preds & (types == "good")).sum())
    assert "tp" not in metrics_by_defect_type(types, labels, scores)["crack"]
    with pytest.raises(ValueError, match="'crack' has both good and defective"):
        metrics_by_defect_type(["crack", "crack", "good"], [1, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"defect_types \(2\) vs labels \(3\)"):
        metrics_by_defect_type(["crack", "good"], [1, 0, 0], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------
def test_mask_iou_matches_sklearn_jaccard(masks):
    rng = np.random.default_rng(5)
    predicted = masks ^ (rng.random(masks.shape) < 0.05)
    predicted[4] = False  # a good image predicted clean: both empty
    ious = mask_iou(predicted, masks)
    assert ious.shape == (6,) and ious.dtype == np.float64
    assert math.isnan(ious[4])
    for index in (0, 1, 2, 3, 5):
        assert ious[index] == pytest.approx(jaccard_score(masks[index].ravel(), predicted[index].ravel()))
    assert ious[0] == 0.0  # good image with false positives
    defect_images = [1, 2, 3, 5]
    assert mean_iou(predicted, masks) == pytest.approx(ious[defect_images].mean())
    assert mean_iou(predicted, masks, defect_images_only=False) == pytest.approx(ious[[0, 1, 2, 3, 5]].mean())


def test_mask_iou_sequences_and_errors():
    true = [np.ones((4, 4), bool), np.zeros((6, 3), bool)]
    pred = [np.eye(4, dtype=bool), np.zeros((6, 3), bool)]
    ious = mask_iou(pred, true)
    assert ious[0] == pytest.approx(4 / 16) and math.isnan(ious[1])
    assert mean_iou(pred, true) == pytest.approx(0.25)
    assert math.isnan(mean_iou([np.zeros((2, 2), bool)], [np.zeros((2, 2), bool)]))
    with pytest.raises(ValueError, match=r"predicted masks \(2,8,8\) vs true masks \(2,4,4\)"):
        mask_iou(np.zeros((2, 8, 8), bool), np.zeros((2, 4, 4), bool))
