"""Choosing a decision's operating point so that it transfers to images it never saw.

A decision here is a *family* of rules with one threshold left free, evaluated on a threshold grid:
``flags[n, j]`` says whether image ``n`` is flagged at grid value ``j``. The segmentation detector
has one family per min_area (``area curve >= min_area``); the grid is uniform (a float map's
linspace, or every integer of a uint8 map).

The *smoothed* rule (the default) estimates each family's false-alarm rate on the defect-free images
(the validation images and the good images of the finetuning subset, pooled) and its detection
rate on the defective finetuning images as kernel-smoothed curves: each class's empirical rate
curve is convolved along the grid with a Gaussian whose width is Silverman's rule on the levels at
which that class's images stop being flagged. The step curves of 5-30 defective images become
smooth, so the chosen threshold sits where the two classes' densities cross, not at whichever gap
happens to separate a few images, and no single unusual good image sets it. The operating point
then picks the family and threshold:

* ``balanced`` (default): the highest smoothed balanced accuracy ``(TPR + TNR) / 2``;
* ``false_alarms`` RATE: the lowest threshold whose smoothed false-alarm rate on good images is at
  most RATE, the family with the highest detection rate there;
* ``detection`` RATE: the highest threshold whose smoothed detection rate is at least RATE, the
  family with the fewest false alarms there.

Ties between families go to the earlier family (the smaller min_area: the rule closest to the
map's maximum, which the image AUROC ranks); ties between thresholds to the middle of the tied run.

:func:`resample` says how sure the choice is: it repeats the choice on bootstrap resamples of the
good and of the defective images and measures each resample's choice on the images that resample
left out. The percentiles of those out-of-bag rates are the interval the result reports; how often
the resampled decisions disagree with the chosen one tells whether the finetuning data can tell the
candidates apart at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoencoder.errors import UserError

#: The operating points a user can ask for (finetune.py: default, --max-false-alarms, --min-detection).
OPERATING_POINTS = ("balanced", "false_alarms", "detection")
#: Bootstrap resamples behind the expected rates and their interval.
DEFAULT_RESAMPLES = 200
#: The interval reported: the 5th to the 95th percentile of the out-of-bag rates.
INTERVAL = (5.0, 95.0)
#: z of the Wilson interval that widens it (a two-sided 90 % interval, as INTERVAL).
WILSON_Z = 1.645
#: Warn when the resampled decisions disagree with the chosen one on more than this share of the
#: finetuning images (median over the resamples).
UNSTABLE_DISAGREEMENT = 0.10
#: Warn when the interval of the expected TPR or TNR is wider than this (about "anything from 0.3 to 1").
WIDE_INTERVAL = 0.7
#: Warn when the decision is expected to flag fewer defective images than this share ("almost
#: nothing"), or more good images than 1 - this share ("almost everything").
DEGENERATE_RATE = 0.10

# A family's flags on the grid: (good (N_good, T) bool, defective (N_defective, T) bool).
FamilyFlags = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class OperatingPoint:
    """What the user asks of a decision: balanced accuracy, a false-alarm budget, or a detection rate."""

    kind: str = "balanced"
    rate: float | None = None

    def __post_init__(self):
        if self.kind not in OPERATING_POINTS:
            raise UserError(f"operating point {self.kind!r}: expected one of {', '.join(OPERATING_POINTS)}")
        if self.kind == "balanced":
            if self.rate is not None:
                raise UserError("operating point balanced: takes no rate")
            return
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise UserError(f"operating point {self.kind}: rate {rate!r}: expected a fraction in [0, 1]")

    def describe(self) -> str:
        if self.kind == "balanced":
            return "the highest balanced accuracy"
        if self.kind == "false_alarms":
            return f"at most {self.rate:.1%} of good images flagged, the most defects found"
        return f"at least {self.rate:.1%} of defective images flagged, the fewest good images flagged"

    def to_json(self) -> dict:
        return {"kind": self.kind} | ({} if self.rate is None else {"rate": float(self.rate)})

    @classmethod
    def from_json(cls, data) -> OperatingPoint:
        if not isinstance(data, dict) or set(data) - {"kind", "rate"}:
            raise UserError('expected {"kind": ..., "rate": ...}')
        return cls(data.get("kind", "balanced"), data.get("rate"))


# ----------------------------------------------------------------------------- smoothed rates


def flagged_level(flags: np.ndarray) -> np.ndarray:
    """Per image, one past the highest grid index at which it is flagged (0 when never flagged):
    for a threshold rule, the image's score on the grid."""
    flags = np.asarray(flags, dtype=bool)
    if flags.shape[1] == 0:
        return np.zeros(len(flags))
    highest = flags.shape[1] - np.argmax(flags[:, ::-1], axis=1)
    return np.where(flags.any(axis=1), highest, 0).astype(np.float64)


def silverman_bandwidth(values: np.ndarray, minimum: float = 1.0) -> float:
    """Silverman's rule of thumb ``0.9 min(sd, IQR / 1.34) n^(-1/5)``, at least `minimum`.

    With fewer than two distinct values the spread is unknown and `minimum` is returned."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(minimum)
    spread = values.std(ddof=1)
    iqr = float(np.subtract(*np.percentile(values, [75, 25])))
    if iqr > 0:
        spread = min(spread, iqr / 1.34)
    return float(max(0.9 * spread * len(values) ** -0.2, minimum))


def smooth_along_grid(rates: np.ndarray, bandwidth: float) -> np.ndarray:
    """Rate curves (..., T) convolved with a Gaussian of `bandwidth` grid steps, edges held: what
    ``scipy.ndimage.gaussian_filter1d(rates, bandwidth, axis=-1, mode="nearest")`` gives (its kernel,
    truncated at 4 sigma), through an FFT when the kernel is long (a direct sum over a 800-tap kernel
    per grid point is what made the resampling slow)."""
    rates = np.asarray(rates, dtype=np.float64)
    radius = int(4.0 * bandwidth + 0.5)
    if radius <= 32:
        from scipy.ndimage import gaussian_filter1d  # here, not at import: the scripts check their flags without scipy

        return gaussian_filter1d(rates, bandwidth, axis=-1, mode="nearest")
    from scipy.signal import fftconvolve

    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(rates, [(0, 0)] * (rates.ndim - 1) + [(radius, radius)], mode="edge")
    shape = (1,) * (rates.ndim - 1) + (len(kernel),)
    return fftconvolve(padded, kernel.reshape(shape), mode="valid", axes=-1)


def _middle_of_best(values: np.ndarray) -> int:
    """Index of the maximum; with a tied run, the middle of the run that holds the first maximum."""
    best = int(np.argmax(values))
    tied = values >= values[best] - 1e-12
    end = best
    while end + 1 < len(values) and tied[end + 1]:
        end += 1
    return (best + end) // 2


def pick_threshold(fpr: np.ndarray, tpr: np.ndarray, point: OperatingPoint) -> tuple[int, float, bool]:
    """(grid index, objective, reached) of one family's smoothed curves for the operating point.

    ``reached`` is False when a target rate is out of reach on this family (then the index is the
    one that comes closest)."""
    if point.kind == "balanced":
        balanced = (tpr + 1.0 - fpr) / 2.0
        index = _middle_of_best(balanced)
        return index, float(balanced[index]), True
    if point.kind == "false_alarms":
        # Lowest threshold from which on every higher one keeps within the budget.
        over = np.flatnonzero(fpr > point.rate + 1e-12)
        index = 0 if not len(over) else int(over[-1]) + 1
        if index >= len(fpr):
            return len(fpr) - 1, float(tpr[-1]), False
        return index, float(tpr[index]), True
    # detection: the highest threshold up to which every lower one reaches the rate.
    short = np.flatnonzero(tpr < point.rate - 1e-12)
    index = len(tpr) - 1 if not len(short) else int(short[0]) - 1
    if index < 0:
        return int(np.argmax(tpr)), float(tpr.max()) - 1.0, False  # below every reachable family
    return index, float(1.0 - fpr[index]), True


@dataclass
class Choice:
    """The chosen family and grid index, and every family's own best (for the plots and the record)."""

    family: int
    index: int
    reached: bool
    family_index: np.ndarray  # (F,) each family's chosen grid index
    family_objective: np.ndarray  # (F,) each family's objective at that index


def _family_curves(good: np.ndarray, defective: np.ndarray, good_weights=None, defect_weights=None):
    """Smoothed (fpr, tpr) curves of one family; weights (B, N) give B resampled curves at once.

    The bandwidths are those of all the images (a resample keeps them). Smoothing is linear, so the
    images' flags are smoothed once and the resamples are weighted sums of them."""
    bandwidths = (silverman_bandwidth(flagged_level(good)), silverman_bandwidth(flagged_level(defective)))
    if good_weights is None:
        return (smooth_along_grid(np.mean(good, axis=0), bandwidths[0]), smooth_along_grid(np.mean(defective, axis=0), bandwidths[1]))
    smoothed_good = smooth_along_grid(np.asarray(good, dtype=np.float64), bandwidths[0])
    smoothed_defective = smooth_along_grid(np.asarray(defective, dtype=np.float64), bandwidths[1])
    return good_weights @ smoothed_good, defect_weights @ smoothed_defective


def choose(flags_of: FamilyFlags, n_families: int, point: OperatingPoint | None = None) -> Choice:
    """The smoothed rule: every family's threshold for `point` (None: balanced), then the best family
    (ties: the earlier)."""
    point = point or OperatingPoint()
    if n_families < 1:
        raise UserError("expected at least one candidate family")
    indices, objectives, reached = [], [], []
    for family in range(n_families):
        good, defective = flags_of(family)
        _check_flags(good, defective)
        index, objective, ok = pick_threshold(*_family_curves(good, defective), point)
        indices.append(index)
        objectives.append(objective)
        reached.append(ok)
    objectives = np.array(objectives)
    best = int(np.argmax(objectives))  # first maximum: the earlier family
    return Choice(best, indices[best], reached[best], np.array(indices), objectives)


def _check_flags(good, defective) -> None:
    if good.ndim != 2 or defective.ndim != 2 or good.shape[1] != defective.shape[1]:
        raise UserError(f"expected (N, T) flags on one grid, got {good.shape} and {defective.shape}")
    if len(good) == 0 or len(defective) == 0:
        raise UserError("the smoothed rule needs good and defective images (the validation images and at least one defective "
                         "finetuning image)")


# ----------------------------------------------------------------------------- resampling


@dataclass
class Expected:
    """What the chosen decision is expected to do on new images, from bootstrap resamples of the
    finetuning data (each resample's choice measured on the images it left out)."""

    tpr: float
    tpr_interval: tuple[float, float]
    tnr: float
    tnr_interval: tuple[float, float]
    balanced_accuracy: float
    balanced_accuracy_interval: tuple[float, float]
    disagreement: float  # median share of the finetuning images on which a resample's decision differs
    resamples: int

    def to_json(self) -> dict:
        def rounded(value):
            return None if value is None or not math.isfinite(value) else round(float(value), 4)

        return {
            "tpr": rounded(self.tpr),
            "tpr_interval": [rounded(v) for v in self.tpr_interval],
            "tnr": rounded(self.tnr),
            "tnr_interval": [rounded(v) for v in self.tnr_interval],
            "balanced_accuracy": rounded(self.balanced_accuracy),
            "balanced_accuracy_interval": [rounded(v) for v in self.balanced_accuracy_interval],
            "disagreement": rounded(self.disagreement),
            "resamples": self.resamples,
            "method": f"median and {INTERVAL[0]:g}-{INTERVAL[1]:g} percentiles over bootstrap resamples of the finetuning data of "
                      "the rates of each resample's own choice on the images it left out",
        }


def resample(
    flags_of: FamilyFlags,
    n_families: int,
    choice: Choice,
    point: OperatingPoint | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Expected:
    """Bootstrap the choice: resample the good and the defective images with replacement, choose
    again (same bandwidths), and measure each choice on the images its resample left out."""
    point = point or OperatingPoint()
    good0, defective0 = flags_of(0)
    n_good, n_defective = len(good0), len(defective0)
    rng = np.random.default_rng(seed)
    good_draws = rng.integers(0, n_good, size=(n_resamples, n_good))
    defect_draws = rng.integers(0, n_defective, size=(n_resamples, n_defective))
    good_weights = _draw_weights(good_draws, n_good).astype(np.float64)
    defect_weights = _draw_weights(defect_draws, n_defective).astype(np.float64)

    best_objective = np.full(n_resamples, -np.inf)
    chosen_family = np.zeros(n_resamples, dtype=np.int64)
    chosen_index = np.zeros(n_resamples, dtype=np.int64)
    for family in range(n_families):
        good, defective = flags_of(family)
        fpr, tpr = _family_curves(good, defective, good_weights, defect_weights)
        for draw in range(n_resamples):
            index, objective, _ = pick_threshold(fpr[draw], tpr[draw], point)
            if objective > best_objective[draw]:
                best_objective[draw], chosen_family[draw], chosen_index[draw] = objective, family, index

    final_good, final_defective = flags_of(choice.family)
    final_good, final_defective = final_good[:, choice.index], final_defective[:, choice.index]
    tprs, tnrs, disagreements = [], [], []
    for family in np.unique(chosen_family):
        good, defective = flags_of(int(family))
        for draw in np.flatnonzero(chosen_family == family):
            index = chosen_index[draw]
            good_flagged, defect_flagged = good[:, index], defective[:, index]
            out_good = good_weights[draw] == 0
            out_defective = defect_weights[draw] == 0
            tnrs.append(np.mean(~good_flagged[out_good]) if out_good.any() else np.nan)
            tprs.append(np.mean(defect_flagged[out_defective]) if out_defective.any() else np.nan)
            differs = np.count_nonzero(good_flagged != final_good) + np.count_nonzero(defect_flagged != final_defective)
            disagreements.append(differs / (n_good + n_defective))
    tprs, tnrs = np.array(tprs), np.array(tnrs)
    balanced = (tprs + tnrs) / 2
    # Bootstrap percentiles collapse when the finetuning data separate perfectly (every resample
    # says 1.00): the interval also covers the binomial (Wilson) interval of the chosen decision's
    # own counts, so 9 of 9 defects found reads 1.00 (0.77-1.00), not (1.00-1.00).
    tpr_counts = (int(np.count_nonzero(final_defective)), n_defective)
    tnr_counts = (int(np.count_nonzero(~final_good)), n_good)
    return Expected(
        tpr=_median(tprs),
        tpr_interval=_widened(_interval(tprs), *tpr_counts),
        tnr=_median(tnrs),
        tnr_interval=_widened(_interval(tnrs), *tnr_counts),
        balanced_accuracy=_median(balanced),
        balanced_accuracy_interval=_interval(balanced),
        disagreement=float(np.median(disagreements)),
        resamples=n_resamples,
    )


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (z 1.645: a 90 % interval, as INTERVAL)."""
    if n <= 0:
        return (math.nan, math.nan)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _widened(interval: tuple[float, float], successes: int, n: int) -> tuple[float, float]:
    low, high = wilson_interval(successes, n)
    if math.isnan(interval[0]):
        return (low, high)
    return (min(interval[0], low), max(interval[1], high))


def _draw_weights(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float32 weights of bootstrap draws: each image's share of its resample."""
    counts = np.zeros((len(draws), n), dtype=np.float32)
    for row, draw in enumerate(draws):
        counts[row] = np.bincount(draw, minlength=n)
    return counts / n


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return (math.nan, math.nan)
    low, high = np.percentile(values, INTERVAL)
    return float(low), float(high)


# ----------------------------------------------------------------------------- warnings


def decision_warnings(
    tpr: float,
    tnr: float,
    expected: Expected | None,
    n_good: int,
    n_defective: int,
    at_top_edge: str | None = None,
    unreached: str | None = None,
) -> list[str]:
    """One-line warnings about a chosen decision: it flags almost nothing or almost everything, the
    finetuning data cannot tell the candidates apart, the choice sits at the edge of its range, or a
    target rate is out of reach. `tpr`, `tnr`: the decision's rates on the finetuning data."""
    warnings = []
    if unreached:
        warnings.append(unreached)
    if math.isfinite(tpr) and tpr < DEGENERATE_RATE:
        warnings.append(f"the decision flags almost nothing: {tpr:.0%} of the defective finetuning images; pass --min-detection "
                        "RATE to ask for a detection rate, or check that the defects show in the anomaly maps")
    if math.isfinite(tnr) and tnr < DEGENERATE_RATE:
        warnings.append(f"the decision flags almost everything: {1 - tnr:.0%} of the good images; pass --max-false-alarms RATE "
                        "to set a false-alarm budget, or check that the validation images are defect-free")
    if n_defective < 3:
        warnings.append(f"the finetuning subset holds {n_defective} defective image{'s' if n_defective != 1 else ''}: too few "
                        "to tell candidate decisions apart; raise --finetune-split or add labelled defects")
    elif expected is not None and expected.disagreement > UNSTABLE_DISAGREEMENT:
        warnings.append(f"the finetuning subset ({n_defective} defective, {n_good} good images) cannot tell the candidate decisions "
                        f"apart: decisions chosen on resamples of it differ from this one on {expected.disagreement:.0%} of its "
                        "images; raise --finetune-split or add labelled defects")
    if expected is not None and n_defective >= 3:
        widths = {"TPR": expected.tpr_interval, "TNR": expected.tnr_interval}
        wide = {name: span for name, span in widths.items() if math.isfinite(span[0]) and span[1] - span[0] > WIDE_INTERVAL}
        if wide:
            described = ", ".join(f"{name} {low:.2f}-{high:.2f}" for name, (low, high) in wide.items())
            warnings.append(f"the finetuning subset ({n_defective} defective, {n_good} good images) is too small to say what the "
                            f"decision will do on new images ({described}); raise --finetune-split or add labelled defects")
    if at_top_edge:
        warnings.append(at_top_edge)
    return warnings


@dataclass
class Settled:
    """A chosen decision with what goes with it: its rates on the finetuning data (good side pooled),
    the rates expected on new images (None without resamples) and the one-line warnings."""

    choice: Choice
    tpr: float
    tnr: float
    expected: Expected | None
    warnings: list[str]


def settle(flags_of: FamilyFlags, n_families: int, point: OperatingPoint | None = None, n_resamples: int = DEFAULT_RESAMPLES,
           seed: int = 0, at_top_edge: str | None = None) -> Settled:
    """:func:`choose`, then :func:`resample` and :func:`decision_warnings`: the whole smoothed rule
    on a detector's candidate families (`at_top_edge`: the warning for a choice of the last family)."""
    point = point or OperatingPoint()
    choice = choose(flags_of, n_families, point)
    expected = resample(flags_of, n_families, choice, point, n_resamples, seed) if n_resamples else None
    good, defective = (flags[:, choice.index] for flags in flags_of(choice.family))
    tpr, tnr = float(defective.mean()), float(1.0 - good.mean())
    unreached = None
    if not choice.reached:
        target = "false-alarm budget" if point.kind == "false_alarms" else "detection rate"
        unreached = (f"the {target} {point.rate:.1%} is out of reach on the finetuning data; the decision comes closest: "
                     f"TPR {tpr:.2f}, TNR {tnr:.2f}")
    edge = at_top_edge if choice.family == n_families - 1 and n_families > 1 else None
    warnings = decision_warnings(tpr, tnr, expected, len(good), len(defective), edge, unreached)
    return Settled(choice, tpr, tnr, expected, warnings)
