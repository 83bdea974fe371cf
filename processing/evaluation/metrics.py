"""Evaluation metrics for anomaly detection (image level) and segmentation (pixel level).

Pure numpy / scipy / scikit-learn; no deep-learning framework is imported.

Image level
    :func:`image_auroc`, :func:`classification_metrics`, :func:`metrics_by_defect_type`.

Pixel level
    :class:`PixelMetricsAccumulator` computes the pixel AUROC and the AUPRO
    (area under the per-region-overlap curve, Bergmann et al. 2021, IJCV) from
    score maps that arrive batch by batch, in memory that does not grow with the
    number of images. :func:`pixel_auroc` and :func:`aupro` wrap it for arrays
    that are already complete. :func:`mask_iou` and :func:`mean_iou` score binary
    segmentations.

Conventions: a label / mask value of True means *defective*; a higher score
means *more anomalous*; a pixel (image) is predicted defective when its score
is >= the threshold.

Metrics that cannot be computed (one class only, no ground-truth masks) are NaN
here, so array arithmetic keeps working. Results, JSON files and printed lines
report them as absent instead: :func:`absent_to_none` turns NaN into None
(``null`` in JSON) and :func:`format_metric` prints ``n/a``.
"""

import logging
import math
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_N_BINS = 2**16
DEFAULT_INTEGRATION_LIMIT = 0.3

# 8-connectivity inside each image, no connection between the images of a batch.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------
def _shape_str(shape):
    return "(" + ",".join(str(s) for s in shape) + ")"


def _as_binary(values, name):
    """Return ``values`` as a bool array; accepts bool or numbers that are all 0/1."""
    values = np.asarray(values)
    if values.dtype == bool:
        return values
    if not (np.issubdtype(values.dtype, np.number)):
        raise ValueError(f"{name} must be boolean or 0/1 numbers, got dtype {values.dtype}")
    if np.any((values != 0) & (values != 1)):
        raise ValueError(f"{name} must be boolean or 0/1, got values {np.unique(values)[:5].tolist()}...")
    return values.astype(bool)


def _as_finite_float(values, name):
    """Return ``values`` as a float array; rejects non-numeric dtypes, NaN and inf."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contain NaN or inf ({np.count_nonzero(~np.isfinite(values))} values)")
    return values


def _image_labels_and_scores(labels, scores, labels_name="labels", scores_name="scores"):
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"{labels_name} {_shape_str(labels.shape)} vs {scores_name} {_shape_str(scores.shape)}: "
            "expected two 1-D arrays of the same length"
        )
    if labels.size == 0:
        raise ValueError(f"{labels_name} and {scores_name} are empty")
    return _as_binary(labels, labels_name), scores


def _masks_and_maps(masks_true, score_maps, masks_name="masks", maps_name="maps"):
    """Validate a batch: ``(B, H, W)`` (or a single ``(H, W)``) masks and maps of equal shape."""
    masks_true = np.asarray(masks_true)
    score_maps = np.asarray(score_maps)
    if masks_true.shape != score_maps.shape or masks_true.ndim not in (2, 3):
        raise ValueError(
            f"{masks_name} {_shape_str(masks_true.shape)} vs {maps_name} {_shape_str(score_maps.shape)}: "
            "expected equal shapes (B,H,W) or (H,W)"
        )
    if masks_true.ndim == 2:
        masks_true = masks_true[np.newaxis]
        score_maps = score_maps[np.newaxis]
    return _as_binary(masks_true, masks_name), _as_finite_float(score_maps, maps_name)


def _iter_image_batches(masks_true, score_maps):
    """Yield ``(masks, maps)`` batches from arrays ``(N, H, W)`` or from sequences of ``(H, W)`` arrays.

    Sequences let images of different sizes be evaluated together.
    """
    if isinstance(masks_true, np.ndarray) and isinstance(score_maps, np.ndarray):
        yield masks_true, score_maps
        return
    if not (isinstance(masks_true, Sequence | np.ndarray) and isinstance(score_maps, Sequence | np.ndarray)):
        raise ValueError(
            f"masks and maps must be arrays (N,H,W) or sequences of (H,W) arrays, "
            f"got {type(masks_true).__name__} and {type(score_maps).__name__}"
        )
    if len(masks_true) != len(score_maps):
        raise ValueError(f"masks ({len(masks_true)} images) vs maps ({len(score_maps)} images): expected equal counts")
    yield from zip(masks_true, score_maps, strict=True)


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else math.nan


# ----------------------------------------------------------------------------
# image level
# ----------------------------------------------------------------------------
def image_auroc(labels, scores):
    """Area under the ROC curve of image anomaly scores.

    Parameters
    ----------
    labels : array-like of bool or 0/1, shape (N,)
        True for defective images.
    scores : array-like of float, shape (N,)
        Image anomaly scores; higher means more anomalous.

    Returns
    -------
    float
        ROC AUC (ties count one half), or NaN with a logged warning when only
        one class is present.
    """
    labels, scores = _image_labels_and_scores(labels, scores)
    scores = _as_finite_float(scores, "scores")
    if labels.all() or not labels.any():
        logger.warning("image AUROC undefined: only one class present in %d labels (reported as n/a)", labels.size)
        return math.nan
    from sklearn.metrics import roc_auc_score  # here, not at import: the scripts check their flags without it

    return float(roc_auc_score(labels, scores))


def best_balanced_accuracy(labels, scores):
    """The highest balanced accuracy any single threshold on the image scores reaches on these
    images (a hindsight reference: what the scores allow, not what a decision chosen beforehand gets).

    Every cut ``score >= t`` between distinct scores counts (and flagging all or none). NaN when
    only one class is present.
    """
    labels, scores = _image_labels_and_scores(labels, scores)
    scores = _as_finite_float(scores, "scores")
    if labels.all() or not labels.any():
        return math.nan
    order = np.argsort(-scores, kind="stable")
    ranked, truth = scores[order], labels[order]
    # Flag the first k images (k = 0..N); only cuts between distinct scores are thresholds.
    true_positives = np.r_[0, np.cumsum(truth)]
    false_positives = np.r_[0, np.cumsum(~truth)]
    cuts = np.r_[True, ranked[1:] != ranked[:-1], True]
    balanced = (true_positives / truth.sum() + 1.0 - false_positives / (~truth).sum()) / 2
    return float(balanced[cuts].max())


def classification_metrics(y_true, y_pred):
    """Confusion counts and rates of binary image predictions.

    Parameters
    ----------
    y_true, y_pred : array-like of bool or 0/1, shape (N,)
        True (defective) labels and predictions.

    Returns
    -------
    dict
        ``tp, fp, tn, fn`` (int) and ``tpr, tnr, fpr, fnr, balanced_accuracy,
        score, precision, f1, accuracy`` (float). ``score`` is an alias of
        ``balanced_accuracy`` = (tpr + tnr) / 2. A ratio with a zero denominator
        is NaN (results report it as absent: ``null`` in JSON, ``n/a`` when
        printed). All values are plain Python numbers.
    """
    y_true, y_pred = _image_labels_and_scores(y_true, y_pred, "y_true", "y_pred")
    y_pred = _as_binary(y_pred, "y_pred")
    tp = int(np.count_nonzero(y_true & y_pred))
    fp = int(np.count_nonzero(~y_true & y_pred))
    tn = int(np.count_nonzero(~y_true & ~y_pred))
    fn = int(np.count_nonzero(y_true & ~y_pred))
    tpr = _ratio(tp, tp + fn)
    tnr = _ratio(tn, tn + fp)
    balanced_accuracy = (tpr + tnr) / 2  # NaN when either rate is undefined
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tpr": tpr,
        "tnr": tnr,
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
        "balanced_accuracy": balanced_accuracy,
        "score": balanced_accuracy,
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
    }


def metrics_by_defect_type(defect_types, labels, scores, preds=None):
    """Per-defect-type image metrics: each type's images together with all good images.

    Parameters
    ----------
    defect_types : sequence of str, length N
        Defect type of every image (e.g. ``"crack"``; good images typically ``"good"``).
    labels : array-like of bool or 0/1, shape (N,)
        True for defective images. A type must not mix good and defective images.
    scores : array-like of float, shape (N,)
        Image anomaly scores.
    preds : array-like of bool or 0/1, shape (N,), optional
        Image predictions; when given, :func:`classification_metrics` is added.

    Returns
    -------
    dict[str, dict]
        For every type of defective images (sorted): ``n_images``,
        ``n_defective``, ``image_auroc`` and, with ``preds``, the keys of
        :func:`classification_metrics`.
    """
    labels, scores = _image_labels_and_scores(labels, scores)
    defect_types = np.asarray(defect_types, dtype=str)
    if defect_types.shape != labels.shape:
        raise ValueError(
            f"defect_types {_shape_str(defect_types.shape)} vs labels {_shape_str(labels.shape)}: expected equal lengths"
        )
    if preds is not None:
        preds = np.asarray(preds)
        if preds.shape != labels.shape:
            raise ValueError(f"preds {_shape_str(preds.shape)} vs labels {_shape_str(labels.shape)}: expected equal lengths")
    for defect_type in np.unique(defect_types):
        type_labels = labels[defect_types == defect_type]
        if type_labels.any() and not type_labels.all():
            raise ValueError(f"defect type {str(defect_type)!r} has both good and defective labels")

    results = {}
    for defect_type in sorted(np.unique(defect_types[labels]).tolist()):
        selected = (defect_types == defect_type) | ~labels
        entry = {
            "n_images": int(np.count_nonzero(selected)),
            "n_defective": int(np.count_nonzero(selected & labels)),
            "image_auroc": image_auroc(labels[selected], scores[selected]),
        }
        if preds is not None:
            entry.update(classification_metrics(labels[selected], preds[selected]))
        results[defect_type] = entry
    return results


# ----------------------------------------------------------------------------
# pixel level
# ----------------------------------------------------------------------------
def _area_up_to(fprs, heights, limit):
    """Trapezoidal area under a curve with non-decreasing ``fprs``, from 0 up to ``fprs == limit``.

    The curve is linearly interpolated at exactly ``limit``.
    """
    starts_before = fprs[:-1] < limit
    x0, x1 = fprs[:-1][starts_before], fprs[1:][starts_before]
    y0, y1 = heights[:-1][starts_before], heights[1:][starts_before]
    crosses = x1 > limit  # only there is x1 > x0 needed and guaranteed
    fraction_kept = np.divide(limit - x0, x1 - x0, out=np.ones_like(x0), where=crosses)
    y_end = y0 + (y1 - y0) * fraction_kept
    x_end = np.minimum(x1, limit)
    return float(np.sum((x_end - x0) * (y0 + y_end) / 2))


class PixelMetricsAccumulator:
    """Memory-bounded pixel AUROC and AUPRO over score maps that arrive in batches.

    Scores are counted into ``n_bins`` equal bins over ``value_range``; scores in
    the same bin are treated as ties, so the results equal the exact metrics of
    the scores quantised to the bins (resolution ``(hi - lo) / n_bins``; the
    default 2**16 bins resolve 1.5e-5 on [0, 1]). Values outside the range are
    clipped into the first/last bin (counted in ``n_clipped``, warned about in
    :meth:`result`).

    Three histograms of length ``n_bins`` are kept, whatever the number of
    images or regions (memory ``3 * n_bins * 8`` bytes, 1.5 MiB by default):

    * pixel counts of normal pixels (outside every mask, good images included),
    * pixel counts of defect pixels,
    * the PRO histogram: every defect pixel adds ``1 / area`` of its ground-truth
      region (connected component, 8-connectivity, per image). Summed over the
      bins at and above a threshold this gives, for each region, the fraction
      of it predicted defective, summed over regions; divided by the number of
      regions it is the PRO at that threshold. This single weighted histogram
      replaces one histogram per region at the same exactness.

    Parameters
    ----------
    value_range : (float, float)
        ``(lo, hi)`` with ``lo < hi``: range of the score maps.
    n_bins : int
        Number of bins (>= 2).
    integration_limit : float
        FPR up to which the PRO curve is integrated, in (0, 1]; 0.3 as in MVTec AD.
    """

    def __init__(self, value_range=(0.0, 1.0), n_bins=DEFAULT_N_BINS, integration_limit=DEFAULT_INTEGRATION_LIMIT):
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(f"value_range must be (lo, hi) numbers, got {value_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
        if not (0.0 < float(integration_limit) <= 1.0):
            raise ValueError(f"integration_limit must be in (0, 1], got {integration_limit!r}")
        self.value_range = (lo, hi)
        self.n_bins = int(n_bins)
        self.integration_limit = float(integration_limit)
        self._normal_counts = np.zeros(self.n_bins, dtype=np.int64)
        self._defect_counts = np.zeros(self.n_bins, dtype=np.int64)
        self._region_fraction_sums = np.zeros(self.n_bins, dtype=np.float64)
        self.n_regions = 0
        self.n_images = 0
        self.n_clipped = 0

    @property
    def bin_edges(self):
        """Bin edges, float64 array (n_bins + 1,); bin k holds scores in [edge k, edge k+1)."""
        return np.linspace(*self.value_range, self.n_bins + 1)

    def _bin_indices(self, score_maps):
        lo, hi = self.value_range
        positions = (score_maps.astype(np.float64, copy=False) - lo) * (self.n_bins / (hi - lo))
        outside = (positions < 0) | (positions > self.n_bins)
        self.n_clipped += int(np.count_nonzero(outside))
        return np.clip(np.floor(positions), 0, self.n_bins - 1).astype(np.intp)

    def update(self, masks_true, score_maps, valid=None):
        """Add a batch.

        Parameters
        ----------
        masks_true : array-like of bool or 0/1, shape (B, H, W) or (H, W)
            Ground-truth defect masks (all False for good images).
        score_maps : array-like of float, shape like ``masks_true``
            Pixel anomaly scores; finite.
        valid : array-like of bool, shape like ``masks_true``, optional
            The pixels that count (a region of interest); None: every pixel. Defect regions are
            the parts of the true masks inside it.
        """
        masks_true, score_maps = _masks_and_maps(masks_true, score_maps)
        bins = self._bin_indices(score_maps)
        normal = ~masks_true
        if valid is not None:
            valid = np.broadcast_to(np.asarray(valid, dtype=bool), masks_true.shape)
            masks_true, normal = masks_true & valid, normal & valid
        self._normal_counts += np.bincount(bins[normal], minlength=self.n_bins)
        self._defect_counts += np.bincount(bins[masks_true], minlength=self.n_bins)
        if masks_true.any():
            from scipy import ndimage

            regions, n_regions = ndimage.label(masks_true, structure=_REGION_STRUCTURE)
            region_areas = np.bincount(regions.ravel())
            pixel_weights = 1.0 / region_areas[regions[masks_true]]
            self._region_fraction_sums += np.bincount(bins[masks_true], weights=pixel_weights, minlength=self.n_bins)
            self.n_regions += int(n_regions)
        self.n_images += masks_true.shape[0]

    def pixel_auroc(self):
        """Pixel ROC AUC of the quantised scores; NaN with a warning when a class has no pixels."""
        n_normal = int(self._normal_counts.sum())
        n_defect = int(self._defect_counts.sum())
        if n_normal == 0 or n_defect == 0:
            logger.warning(
                "pixel AUROC undefined: %d normal and %d defect pixels (reported as n/a)", n_normal, n_defect
            )
            return math.nan
        # Mann-Whitney: a defect pixel beats every normal pixel in a lower bin and half of those in its bin.
        normal_below = np.cumsum(self._normal_counts) - self._normal_counts
        wins = np.dot(self._defect_counts.astype(np.float64), normal_below + 0.5 * self._normal_counts)
        return float(wins / (float(n_defect) * float(n_normal)))

    def pro_curve(self):
        """The PRO curve: (fprs, pros), float64 arrays (K,), from (0, 0) to (1, 1).

        One point per occupied bin, thresholds decreasing; fprs are non-decreasing.
        Returns None with a warning when there is no normal pixel or no region.
        """
        n_normal = int(self._normal_counts.sum())
        if n_normal == 0 or self.n_regions == 0:
            logger.warning(
                "PRO curve undefined: %d normal pixels and %d defect regions", n_normal, self.n_regions
            )
            return None
        occupied = (self._normal_counts + self._defect_counts) > 0
        false_positives = np.cumsum(self._normal_counts[::-1])[::-1][occupied][::-1]
        overlaps = np.cumsum(self._region_fraction_sums[::-1])[::-1][occupied][::-1]
        fprs = np.concatenate([[0.0], false_positives / n_normal])
        pros = np.concatenate([[0.0], np.minimum(overlaps / self.n_regions, 1.0)])
        return fprs, pros

    def aupro(self):
        """Area under the PRO curve up to FPR = ``integration_limit``, divided by it; NaN when undefined."""
        curve = self.pro_curve()
        if curve is None:
            return math.nan
        return _area_up_to(*curve, self.integration_limit) / self.integration_limit

    def result(self):
        """Metrics of everything added so far.

        Returns
        -------
        dict
            ``pixel_auroc`` (float), ``aupro`` (float), ``pro_curve`` ((fprs, pros)
            arrays, or None when undefined), ``n_images``, ``n_regions``,
            ``n_normal_pixels``, ``n_defect_pixels``, ``n_clipped`` (int).
        """
        if self.n_clipped:
            n_pixels = int(self._normal_counts.sum() + self._defect_counts.sum())
            logger.warning(
                "%d of %d scores (%.2g%%) were outside value_range %s and were clipped",
                self.n_clipped,
                n_pixels,
                100.0 * self.n_clipped / n_pixels,
                self.value_range,
            )
        curve = self.pro_curve()
        return {
            "pixel_auroc": self.pixel_auroc(),
            "aupro": math.nan if curve is None else _area_up_to(*curve, self.integration_limit) / self.integration_limit,
            "pro_curve": curve,
            "n_images": self.n_images,
            "n_regions": self.n_regions,
            "n_normal_pixels": int(self._normal_counts.sum()),
            "n_defect_pixels": int(self._defect_counts.sum()),
            "n_clipped": self.n_clipped,
        }


def _accumulate(masks_true, score_maps, value_range, n_bins, integration_limit):
    batches = [_masks_and_maps(masks, maps) for masks, maps in _iter_image_batches(masks_true, score_maps)]
    if not batches:
        raise ValueError("masks and maps are empty: expected at least one image")
    if value_range is None:
        value_range = (min(float(maps.min()) for _, maps in batches), max(float(maps.max()) for _, maps in batches))
        if value_range[0] == value_range[1]:
            value_range = (value_range[0], value_range[0] + 1.0)  # constant maps: any non-empty range
    accumulator = PixelMetricsAccumulator(value_range, n_bins=n_bins, integration_limit=integration_limit)
    for masks, maps in batches:
        accumulator.update(masks, maps)
    return accumulator


def pixel_auroc(masks_true, score_maps, value_range=None, n_bins=DEFAULT_N_BINS):
    """Pixel ROC AUC of complete score maps (via :class:`PixelMetricsAccumulator`).

    Parameters
    ----------
    masks_true : bool array (N, H, W) or (H, W), or a sequence of (H, W) arrays
    score_maps : float array(s) of the same shape(s)
    value_range : (float, float), optional
        Histogram range; default the min and max of the maps.
    n_bins : int
        Histogram resolution (see :class:`PixelMetricsAccumulator`).
    """
    return _accumulate(masks_true, score_maps, value_range, n_bins, DEFAULT_INTEGRATION_LIMIT).pixel_auroc()


def aupro(masks_true, score_maps, integration_limit=DEFAULT_INTEGRATION_LIMIT, value_range=None, n_bins=DEFAULT_N_BINS):
    """Normalised area under the PRO curve up to FPR = ``integration_limit`` (MVTec AD definition).

    Parameters as in :func:`pixel_auroc`; returns a float in [0, 1], NaN when
    there is no ground-truth region or no normal pixel.
    """
    return _accumulate(masks_true, score_maps, value_range, n_bins, integration_limit).aupro()


def _ious_and_defect_flags(masks_pred, masks_true):
    """Per-image IoU (float64 (N,), NaN where both masks are empty) and whether the true mask is non-empty (bool (N,))."""
    ious, has_defect = [], []
    for pred, true in _iter_image_batches(masks_pred, masks_true):
        pred = np.asarray(pred)
        true = np.asarray(true)
        if pred.shape != true.shape or pred.ndim not in (2, 3):
            raise ValueError(
                f"predicted masks {_shape_str(pred.shape)} vs true masks {_shape_str(true.shape)}: "
                "expected equal shapes (N,H,W) or (H,W)"
            )
        pred = _as_binary(pred, "predicted masks").reshape(-1, *pred.shape[-2:])
        true = _as_binary(true, "true masks").reshape(-1, *true.shape[-2:])
        intersection = np.count_nonzero(pred & true, axis=(1, 2))
        union = np.count_nonzero(pred | true, axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            ious.append(np.where(union > 0, intersection / union, np.nan))
        has_defect.append(true.any(axis=(1, 2)))
    if not ious:
        raise ValueError("predicted and true masks are empty: expected at least one image")
    return np.concatenate(ious).astype(np.float64), np.concatenate(has_defect)


def mask_iou(masks_pred, masks_true):
    """Per-image intersection over union of binary masks.

    Parameters
    ----------
    masks_pred, masks_true : bool or 0/1 arrays (N, H, W) or (H, W), or
        sequences of (H, W) arrays (sizes may differ between images).

    Returns
    -------
    float64 array (N,)
        |pred & true| / |pred | true|; NaN for images whose predicted and true
        masks are both empty (nothing to segment and nothing segmented). A good
        image with a false-positive prediction scores 0.
    """
    return _ious_and_defect_flags(masks_pred, masks_true)[0]


def mean_iou(masks_pred, masks_true, defect_images_only=True):
    """Mean IoU over images (arguments as in :func:`mask_iou`).

    With ``defect_images_only`` (the usual reporting), the mean is over images
    whose true mask is non-empty; false positives on good images are measured
    by image/pixel FPR instead. Otherwise the mean is over all images where the
    IoU is defined (good images with a false positive count as 0). Returns NaN
    when no image qualifies.
    """
    ious, has_defect = _ious_and_defect_flags(masks_pred, masks_true)
    if defect_images_only:
        ious = ious[has_defect]
    ious = ious[~np.isnan(ious)]
    return float(ious.mean()) if ious.size else math.nan


# ----------------------------------------------------------------------------
# reporting: absent metrics
# ----------------------------------------------------------------------------
NOT_AVAILABLE = "n/a"
NOT_AVAILABLE_KEY = "not_available"  # in a result: {metric: why it is None}


def is_absent(value) -> bool:
    """True for None and NaN: a metric that could not be computed."""
    if value is None:
        return True
    try:
        return math.isnan(value)
    except TypeError:
        return False


def absent_to_none(value):
    """``value`` with every NaN float (also inside dicts, lists and numpy arrays) replaced by None."""
    if isinstance(value, dict):
        return {key: absent_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [absent_to_none(item) for item in value]
    if isinstance(value, np.ndarray):
        return absent_to_none(value.tolist())
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


def format_metric(value, spec: str = ".3f") -> str:
    """A metric for printing: ``n/a`` when absent (None or NaN), else ``format(value, spec)``."""
    if is_absent(value):
        return NOT_AVAILABLE
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return format(float(value), spec)


def format_metrics(result: dict, keys, spec: str = ".3f") -> str:
    """``key=value`` for every key of ``keys`` present in ``result`` (absent values as ``n/a``)."""
    return " ".join(f"{key}={format_metric(result[key], spec)}" for key in keys if key in result)


def absent_note(reasons: dict[str, str]) -> list[str]:
    """One line per reason, e.g. ``pixel_auroc, aupro: n/a (no ground-truth masks)``.

    ``reasons`` maps metric names to why they are absent; names with the same reason share a line.
    """
    by_reason: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        by_reason.setdefault(reason, []).append(key)
    return [f"{', '.join(keys)}: {NOT_AVAILABLE} ({reason})" for reason, keys in by_reason.items()]
