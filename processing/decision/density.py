"""Latent-density detector: a kernel density estimate on the bottleneck codes plus reconstruction error.

An image is called anomalous when its latent code lies in a low-density region of the training
codes OR the autoencoder reconstructs it badly::

    anomaly = log_density(code) < density_threshold  OR  error > error_threshold

* Codes: the output of the model's layer named "bottleneck", flattened to (D,) per image.
* Density: a Gaussian kernel density estimate (the model of scikit-learn's ``KernelDensity``,
  evaluated exactly here: :func:`gaussian_kde_log_density`) on the codes of train/good minus the
  validation images, optionally after PCA (scikit-learn's ``PCA``). The bandwidth is chosen by
  5-fold cross-validated log-likelihood on those codes over a log grid, unless given. Stored
  beside the model as data (``density.npz``: codes, bandwidth, PCA mean/components; no pickles).
* Error: the per-image mean of the float64 residual map of the chosen method ("ssim" or "l2",
  :func:`processing.maps.resmaps.calculate_resmaps`).
* Thresholds: every validation image (defect-free, unseen in training) must stay normal, so the
  density threshold is at most the lowest validation log-density and the error threshold at least
  the highest validation error; among those candidates (each rule may also be switched off), the
  finetuning subset of the test set picks the pair with the best balanced accuracy.

The detector built on these functions is ``processing.detectors.kde.KDEDetector``
(finetune.py --detector kde).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from autoencoder.errors import UserError
from autoencoder.folders import write_npz
from autoencoder.models import BOTTLENECK_LAYER
from autoencoder.progress import on_terminal
from processing.data.images import iter_batches
from processing.maps.resmaps import calculate_resmaps

logger = logging.getLogger(__name__)

DENSITY_FILE = "density.npz"
DETECTOR = "kde"
DENSITY_FORMAT_VERSION = 1
BANDWIDTH_GRID_FACTORS = np.logspace(-2, 0.5, 26)  # times the codes' RMS spread per dimension
CV_FOLDS = 5
BLOCK_ELEMENTS = 2_000_000  # query x training pairs per block (16 MB of float64)
MAX_THRESHOLD_CANDIDATES = 512


class DensityFileError(UserError):
    """A density.npz file that is missing or not one written by :func:`save_density`."""


# --------------------------------------------------------------------------------------------
# The density model
# --------------------------------------------------------------------------------------------


@dataclass
class DensityModel:
    """A Gaussian KDE on (optionally PCA-projected) latent codes.

    codes: (N, K) float64, the training codes after projection.
    bandwidth: the Gaussian kernel's standard deviation, in projected units.
    pca_mean: (D,) float64 and pca_components: (K, D) float64, or both of size 0 without PCA.
    n_features: D, the length of a flattened raw code.
    """

    codes: np.ndarray
    bandwidth: float
    pca_mean: np.ndarray
    pca_components: np.ndarray
    n_features: int

    @property
    def uses_pca(self) -> bool:
        return self.pca_components.size > 0

    def project(self, raw_codes: np.ndarray) -> np.ndarray:
        """(M, D) raw codes -> (M, K) float64 codes in the space the KDE lives in."""
        raw_codes = np.asarray(raw_codes, dtype=np.float64).reshape(len(raw_codes), -1)
        if raw_codes.shape[1] != self.n_features:
            raise UserError(
                f"codes of length {raw_codes.shape[1]} do not match the density model's {self.n_features}: "
                "density.npz was fitted with another model"
            )
        if not self.uses_pca:
            return raw_codes
        return (raw_codes - self.pca_mean) @ self.pca_components.T

    def log_density(self, raw_codes: np.ndarray, progress: bool = False) -> np.ndarray:
        """Log of the normalised KDE density at each code: (M, D) -> (M,) float64 (exact, see
        :func:`gaussian_kde_log_density`)."""
        return gaussian_kde_log_density(self.codes, self.project(raw_codes), self.bandwidth, progress=progress)


def _row_logsumexp(values: np.ndarray) -> np.ndarray:
    """log(sum(exp(values), axis=1)) of a finite (M, N) float64 array, computed in place (values is consumed).

    scipy.special.logsumexp gives the same numbers several times slower on these blocks.
    """
    top = values.max(axis=1)
    values -= top[:, None]
    np.exp(values, out=values)
    return np.log(values.sum(axis=1)) + top


def gaussian_kde_log_density(
    train_codes: np.ndarray,
    query_codes: np.ndarray,
    bandwidth: float,
    block_elements: int = BLOCK_ELEMENTS,
    progress: bool = False,
) -> np.ndarray:
    """Exact Gaussian-KDE log density of each query: (N, K) training, (M, K) queries -> (M,) float64.

    log p(x) = logsumexp_i(-|x - c_i|^2 / (2 h^2)) - log N - (K/2) log(2 pi h^2), the value of
    ``sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h).score_samples``. That
    tree-based estimate is not used here: its bounds lose whole nats far from the training codes
    (the anomalies that matter; scikit-learn issues 7492 and 27186, and benchmarks/bench_kde.py).
    Queries are scored in blocks of at most `block_elements` query-code pairs (memory bounded, no
    M x N matrix); squared distances come from one matrix product per block, on centred codes to
    limit cancellation.
    """
    train = np.asarray(train_codes, dtype=np.float64)
    query = np.asarray(query_codes, dtype=np.float64)
    if train.ndim != 2 or query.ndim != 2 or train.shape[1] != query.shape[1]:
        raise UserError(f"expected (N, K) training and (M, K) query codes, got {train.shape} and {query.shape}")
    if not bandwidth > 0:
        raise UserError(f"--bandwidth {bandwidth}: expected a positive kernel width")
    n, dim = train.shape
    centre = train.mean(axis=0)
    train = train - centre
    query = query - centre
    train_sq = np.einsum("ij,ij->i", train, train)
    scale = -0.5 / bandwidth**2
    norm = np.log(n) + 0.5 * dim * np.log(2 * np.pi * bandwidth**2)
    out = np.empty(len(query), dtype=np.float64)
    rows = max(1, block_elements // max(n, 1))
    starts = range(0, len(query), rows)
    for start in tqdm(starts, desc="kde scoring", unit="block", disable=not progress or len(starts) < 2 or not on_terminal()):
        block = query[start : start + rows]
        squared = np.einsum("ij,ij->i", block, block)[:, None] + train_sq[None, :]
        squared -= 2.0 * (block @ train.T)
        np.maximum(squared, 0.0, out=squared)
        squared *= scale
        out[start : start + rows] = _row_logsumexp(squared) - norm
    return out


def flatten_codes(codes: np.ndarray) -> np.ndarray:
    """(N, ...) bottleneck outputs -> (N, D) float64."""
    codes = np.asarray(codes, dtype=np.float64)
    return codes.reshape(len(codes), -1)


def bandwidth_grid(codes: np.ndarray, factors: np.ndarray = BANDWIDTH_GRID_FACTORS) -> np.ndarray:
    """Candidate bandwidths: `factors` times the RMS standard deviation of the (N, K) codes."""
    spread = float(np.sqrt(np.mean(np.var(codes, axis=0))))
    if not spread > 0:
        raise UserError(
            f"the {len(codes)} training codes are all identical: the encoder maps every image to one code "
            "(train longer or with another learning rate)"
        )
    return spread * np.asarray(factors, dtype=np.float64)


def select_bandwidth(codes: np.ndarray, grid: np.ndarray | None = None, folds: int = CV_FOLDS, seed: int = 0):
    """Bandwidth of the grid with the best cross-validated log-likelihood of held-out codes.

    codes: (N, K) float64, N >= 2. K-fold cross-validation (scikit-learn's shuffled KFold): for
    every bandwidth, the sum of the held-out codes' log densities under the KDE of the other
    folds, averaged over the folds (what GridSearchCV over KernelDensity.score computes, with the
    exact density). Returns (bandwidth, grid, mean held-out log-likelihood per grid value).
    """
    from sklearn.model_selection import KFold

    codes = np.asarray(codes, dtype=np.float64)
    if len(codes) < 2:
        raise UserError(f"choosing a KDE bandwidth needs at least 2 training codes, got {len(codes)}")
    grid = bandwidth_grid(codes) if grid is None else np.asarray(grid, dtype=np.float64)
    splits = KFold(n_splits=min(folds, len(codes)), shuffle=True, random_state=seed).split(codes)
    per_fold = [_held_out_log_likelihoods(codes[fit], codes[held_out], grid) for fit, held_out in splits]
    scores = np.mean(per_fold, axis=0)
    bandwidth = float(grid[int(np.argmax(scores))])
    if bandwidth in (grid[0], grid[-1]):
        logger.warning("KDE bandwidth %.4g is at the edge of the search grid [%.4g, %.4g]", bandwidth, grid[0], grid[-1])
    return bandwidth, grid, scores


def _held_out_log_likelihoods(train: np.ndarray, held_out: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(len(grid),) sums of the held-out codes' log densities, one distance pass for all bandwidths."""
    n, dim = train.shape
    centre = train.mean(axis=0)
    train, held_out = train - centre, held_out - centre
    train_sq = np.einsum("ij,ij->i", train, train)
    totals = np.zeros(len(grid))
    rows = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, len(held_out), rows):
        block = held_out[start : start + rows]
        squared = np.einsum("ij,ij->i", block, block)[:, None] + train_sq[None, :] - 2.0 * (block @ train.T)
        np.maximum(squared, 0.0, out=squared)
        for index, bandwidth in enumerate(grid):
            totals[index] += _row_logsumexp(squared * (-0.5 / bandwidth**2)).sum()
    norms = np.log(n) + 0.5 * dim * np.log(2 * np.pi * grid**2)
    return totals - len(held_out) * norms


def fit_density(
    raw_codes: np.ndarray,
    bandwidth: float | None = None,
    pca_components: int | None = None,
    seed: int = 0,
) -> DensityModel:
    """Fit the density model on (N, ...) training codes.

    `pca_components`: project onto that many principal components first (None or 0: no PCA).
    `bandwidth`: the kernel's standard deviation; None chooses it by cross-validation.
    """
    codes = flatten_codes(raw_codes)
    n_codes, n_features = codes.shape
    if n_codes < 2:
        raise UserError(f"fitting a KDE needs at least 2 training codes, got {n_codes}")
    if bandwidth is not None and not bandwidth > 0:
        raise UserError(f"--bandwidth {bandwidth}: expected a positive kernel width")
    pca_mean = np.zeros(0)
    components = np.zeros((0, n_features))
    if pca_components:
        if not 1 <= pca_components <= min(n_codes, n_features):
            raise UserError(
                f"--pca-components {pca_components}: expected 1..{min(n_codes, n_features)} "
                f"({n_codes} codes of length {n_features})"
            )
        from sklearn.decomposition import PCA

        pca = PCA(n_components=pca_components, random_state=seed).fit(codes)
        pca_mean, components = pca.mean_.astype(np.float64), pca.components_.astype(np.float64)
        codes = (codes - pca_mean) @ components.T
        kept = 100 * pca.explained_variance_ratio_.sum()
        logger.info("PCA: %d of %d dimensions keep %.1f%% of the variance", pca_components, n_features, kept)
    if bandwidth is None:
        bandwidth, grid, scores = select_bandwidth(codes, seed=seed)
        logger.info("KDE bandwidth %.4g chosen by %d-fold cross-validation over %d values", bandwidth, min(CV_FOLDS, n_codes), len(grid))
    return DensityModel(codes=codes, bandwidth=float(bandwidth), pca_mean=pca_mean, pca_components=components, n_features=n_features)


def save_density(path: str | os.PathLike, density: DensityModel, metadata: dict | None = None) -> Path:
    """Write `density` as plain arrays to `path` (.npz) through a temporary file and a rename.

    `metadata`: str -> str/number entries stored beside the arrays (e.g. the model file name).
    """
    path = Path(path)
    arrays = {
        "format_version": np.array(DENSITY_FORMAT_VERSION),
        "codes": density.codes,
        "bandwidth": np.array(density.bandwidth),
        "pca_mean": density.pca_mean,
        "pca_components": density.pca_components,
        "n_features": np.array(density.n_features),
    }
    for key, value in (metadata or {}).items():
        arrays[f"meta_{key}"] = np.array(value)
    return write_npz(path, arrays)


def _density_problem(arrays: dict) -> str | None:
    """What is wrong with the arrays of a density file (types, shapes, finite values); None when nothing."""
    def number(name):
        value = arrays[name]
        return value.item() if value.shape == () and value.dtype.kind in "iuf" else None

    bandwidth, n_features = number("bandwidth"), number("n_features")
    if bandwidth is None or not np.isfinite(bandwidth) or bandwidth <= 0:
        return f"bandwidth {arrays['bandwidth']!r}: expected a finite number > 0"
    if n_features is None or int(n_features) != n_features or n_features < 1:
        return f"n_features {arrays['n_features']!r}: expected a whole number >= 1"
    codes, mean, components = arrays["codes"], arrays["pca_mean"], arrays["pca_components"]
    if any(a.dtype.kind not in "iuf" for a in (codes, mean, components)):
        return "codes, pca_mean and pca_components must be numeric arrays"
    if codes.ndim != 2 or len(codes) < 1 or not np.isfinite(codes).all():
        return f"codes of shape {codes.shape}: expected (N >= 1, K) finite values"
    if components.size == 0:
        if codes.shape[1] != n_features or mean.size != 0:
            return f"codes of {codes.shape[1]} columns without PCA: expected {int(n_features)}"
    elif components.shape != (codes.shape[1], n_features) or mean.shape != (n_features,) or not (
            np.isfinite(components).all() and np.isfinite(mean).all()):
        return f"pca_components {components.shape} and pca_mean {mean.shape}: expected ({codes.shape[1]}, {int(n_features)}) and " \
               f"({int(n_features)},) finite values"
    return None


def load_density(path: str | os.PathLike) -> tuple[DensityModel, dict]:
    """Read a file written by :func:`save_density`; return (density model, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise DensityFileError(f"{path} not found: run finetune.py --detector kde on the model first")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # zipfile/numpy raise many types for a bad file
        raise DensityFileError(f"{path} is not a density file written by finetune.py --detector kde ({type(error).__name__})") from None
    required = {"format_version", "codes", "bandwidth", "pca_mean", "pca_components", "n_features"}
    if not required <= set(arrays):
        raise DensityFileError(f"{path}: missing {', '.join(sorted(required - set(arrays)))}; not a density file")
    if int(arrays["format_version"]) != DENSITY_FORMAT_VERSION:
        raise DensityFileError(f"{path}: format version {int(arrays['format_version'])}, expected {DENSITY_FORMAT_VERSION}")
    problem = _density_problem(arrays)
    if problem:
        raise DensityFileError(f"{path}: {problem}; not a density file written by finetune.py --detector kde")
    density = DensityModel(
        codes=arrays["codes"].astype(np.float64),
        bandwidth=float(arrays["bandwidth"]),
        pca_mean=arrays["pca_mean"].astype(np.float64),
        pca_components=arrays["pca_components"].astype(np.float64),
        n_features=int(arrays["n_features"]),
    )
    metadata = {key[len("meta_") :]: arrays[key].item() for key in arrays if key.startswith("meta_")}
    return density, metadata


# --------------------------------------------------------------------------------------------
# The dual (OR) rule and its thresholds
# --------------------------------------------------------------------------------------------


def dual_rule_predict(log_density, error, density_threshold: float, error_threshold: float) -> np.ndarray:
    """True (anomaly) where log_density < density_threshold OR error > error_threshold.

    log_density, error: (N,) float. A threshold of -inf / +inf switches its rule off.
    """
    log_density = np.asarray(log_density, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    return (log_density < density_threshold) | (error > error_threshold)


def _candidates(extreme: float, values: np.ndarray, beyond, off: float, descending: bool) -> np.ndarray:
    """The validation extreme, the finetuning values beyond it, then `off` (rule disabled)."""
    values = np.unique(values[beyond(values)])
    if len(values) > MAX_THRESHOLD_CANDIDATES:
        values = np.unique(np.quantile(values, np.linspace(0, 1, MAX_THRESHOLD_CANDIDATES)))
    if descending:
        values = values[::-1]
    return np.concatenate([[extreme], values, [off]])


@dataclass
class DualSearchResult:
    density_thresholds: np.ndarray  # (A,) from the validation minimum down to -inf
    error_thresholds: np.ndarray  # (B,) from the validation maximum up to +inf
    tpr: np.ndarray  # (A, B)
    tnr: np.ndarray  # (A, B)
    scores: np.ndarray  # (A, B) balanced accuracy
    best_density_threshold: float
    best_error_threshold: float
    best_score: float
    best_tpr: float
    best_tnr: float


def search_dual_thresholds(val_log_density, val_error, finetune_log_density, finetune_error, labels) -> DualSearchResult:
    """Choose (density_threshold, error_threshold) for :func:`dual_rule_predict`.

    Every validation image stays normal: density thresholds are the lowest validation
    log-density and the finetuning log-densities below it (and -inf), error thresholds the
    highest validation error and the finetuning errors above it (and +inf). The pair with the best
    balanced accuracy on the finetuning images (labels: (N,) bool, True = defective) wins; ties go
    to the most sensitive pair (the one nearest the validation extremes).
    """
    val_log_density = np.asarray(val_log_density, dtype=np.float64)
    val_error = np.asarray(val_error, dtype=np.float64)
    log_density = np.asarray(finetune_log_density, dtype=np.float64)
    error = np.asarray(finetune_error, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if len(val_log_density) == 0 or len(val_error) != len(val_log_density):
        raise UserError("the threshold search needs validation scores: at least one validation image, as many errors as densities")
    if not (len(log_density) == len(error) == len(labels)):
        raise UserError(f"finetuning scores and labels differ in length: {len(log_density)}, {len(error)}, {len(labels)}")
    if labels.all() or not labels.any():
        raise UserError("the finetuning subset needs both defect-free and defective images to choose thresholds")

    density_thresholds = _candidates(val_log_density.min(), log_density, lambda v: v < val_log_density.min(), -np.inf, descending=True)
    error_thresholds = _candidates(val_error.max(), error, lambda v: v > val_error.max(), np.inf, descending=False)
    # flagged[i, k]: image k flagged by threshold i of one rule. True positives of the OR of two
    # rules = |D & pos| + |E & pos| - |D & E & pos|, the last term a matrix product.
    flagged_density = (log_density[None, :] < density_thresholds[:, None]).astype(np.float64)
    flagged_error = (error[None, :] > error_thresholds[:, None]).astype(np.float64)
    counts = {}
    for name, mask in (("pos", labels), ("neg", ~labels)):
        d, e = flagged_density * mask, flagged_error * mask
        counts[name] = d.sum(1)[:, None] + e.sum(1)[None, :] - d @ e.T
    tpr = counts["pos"] / labels.sum()
    tnr = 1.0 - counts["neg"] / (~labels).sum()
    scores = (tpr + tnr) / 2
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)  # first maximum: most sensitive
    return DualSearchResult(
        density_thresholds=density_thresholds,
        error_thresholds=error_thresholds,
        tpr=tpr,
        tnr=tnr,
        scores=scores,
        best_density_threshold=float(density_thresholds[best[0]]),
        best_error_threshold=float(error_thresholds[best[1]]),
        best_score=float(scores[best]),
        best_tpr=float(tpr[best]),
        best_tnr=float(tnr[best]),
    )


#: Grid of the smoothed dual search: density thresholds and error-threshold families.
SMOOTHED_DENSITY_STEPS = 400
SMOOTHED_ERROR_FAMILIES = 24


@dataclass
class SmoothedDualResult:
    """Outcome of :func:`search_dual_smoothed`: the pair, its rates on the finetuning data (good
    side: validation and good finetuning images pooled) and what it is expected to do on new images."""

    best_density_threshold: float
    best_error_threshold: float
    best_score: float
    best_tpr: float
    best_tnr: float
    expected: object  # operating_point.Expected or None
    warnings: list


def search_dual_smoothed(val_log_density, val_error, finetune_log_density, finetune_error, labels, point=None,
                         n_resamples: int | None = None, seed: int = 0) -> SmoothedDualResult:
    """The smoothed rule (processing/decision/operating_point.py) for :func:`dual_rule_predict`.

    The image score ``-log_density`` is thresholded on a uniform grid over the scores of every
    image; each *family* fixes the error threshold: off first (ties keep the density rule alone),
    then quantiles of the pooled errors from their median up. The validation images and the good
    finetuning images set the false-alarm side, the defective finetuning images the detection side.
    """
    from processing.decision.operating_point import DEFAULT_RESAMPLES, OperatingPoint, settle

    point = point or OperatingPoint()
    labels = np.asarray(labels, dtype=bool)
    val_score, ft_score = -np.asarray(val_log_density, dtype=np.float64), -np.asarray(finetune_log_density, dtype=np.float64)
    val_error, ft_error = np.asarray(val_error, dtype=np.float64), np.asarray(finetune_error, dtype=np.float64)
    if len(val_score) == 0 or len(val_error) != len(val_score):
        raise UserError("the threshold search needs validation scores: at least one validation image, as many errors as densities")
    if not (len(ft_score) == len(ft_error) == len(labels)):
        raise UserError(f"finetuning scores and labels differ in length: {len(ft_score)}, {len(ft_error)}, {len(labels)}")
    if not labels.any():
        raise UserError("the finetuning subset needs defective images to choose thresholds")
    good_score, good_error = np.r_[val_score, ft_score[~labels]], np.r_[val_error, ft_error[~labels]]
    bad_score, bad_error = ft_score[labels], ft_error[labels]
    every = np.r_[good_score, bad_score]
    if not np.isfinite(every).all() or not np.isfinite(np.r_[good_error, bad_error]).all():
        raise UserError("the density or error scores contain NaN or infinite values")
    low, high = float(every.min()), float(every.max())
    grid = np.linspace(low, high + max(high - low, 1e-12) * 1e-6, SMOOTHED_DENSITY_STEPS)  # the top flags nothing
    errors = np.r_[good_error, bad_error]
    families = np.r_[np.inf, np.unique(np.quantile(errors, np.linspace(0.5, 1.0, SMOOTHED_ERROR_FAMILIES)))]

    def flags_of(family):
        return ((good_score[:, None] > grid) | (good_error[:, None] > families[family]),
                (bad_score[:, None] > grid) | (bad_error[:, None] > families[family]))

    settled = settle(flags_of, len(families), point, DEFAULT_RESAMPLES if n_resamples is None else n_resamples, seed)
    return SmoothedDualResult(
        best_density_threshold=float(-grid[settled.choice.index]),
        best_error_threshold=float(families[settled.choice.family]),
        best_score=(settled.tpr + settled.tnr) / 2,
        best_tpr=settled.tpr,
        best_tnr=settled.tnr,
        expected=settled.expected,
        warnings=settled.warnings,
    )


def threshold_to_json(value: float) -> float | None:
    """±inf (a rule switched off) is written as null: JSON has no infinity."""
    return None if not np.isfinite(value) else float(value)


def threshold_from_json(value, off: float) -> float:
    return off if value is None else float(value)


# --------------------------------------------------------------------------------------------
# Codes and reconstruction errors of image files
# --------------------------------------------------------------------------------------------


def code_and_reconstruction_model(model):
    """A keras.Model mapping images to [bottleneck code, reconstruction]; ValueError without a bottleneck."""
    import keras

    names = {layer.name for layer in model.layers}
    if BOTTLENECK_LAYER not in names:
        raise UserError(
            f"--detector {DETECTOR}: model {model.name} has no '{BOTTLENECK_LAYER}' layer to take latent codes from; "
            "use an architecture with a bottleneck"
        )
    return keras.Model(model.inputs, [model.get_layer(BOTTLENECK_LAYER).output, model.output])


def batch_codes_and_errors(scorer, images: np.ndarray, method: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened codes (N, D) float64 and reconstruction errors (N,) float64 of one batch of model inputs.

    The error is the mean of the image's float64 residual map of `method` ('ssim' or 'l2').
    `scorer` is :func:`code_and_reconstruction_model` of the autoencoder.
    """
    n = len(images)
    padded = images
    if n < batch_size:  # one input shape, so the graph is traced once
        padded = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
    code, reconstruction = scorer.predict_on_batch(padded)
    resmaps = calculate_resmaps(images, np.asarray(reconstruction, dtype=np.float32)[:n], method=method, dtype="float64")
    return flatten_codes(np.asarray(code)[:n]), resmaps.reshape(n, -1).mean(axis=1)


def codes_and_errors(scorer, paths, color_mode: str, size: int, method: str, batch_size: int = 16, desc: str = "encoding"):
    """:func:`batch_codes_and_errors` of image files, batch by batch: (N, D) codes and (N,) errors."""
    codes, errors = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=len(paths) < 4 * batch_size or not on_terminal()) as progress:
        for _, images in iter_batches(paths, color_mode, size, batch_size):
            code, error = batch_codes_and_errors(scorer, images, method, batch_size)
            codes.append(code)
            errors.append(error)
            progress.update(len(images))
    if not codes:
        return np.zeros((0, 0)), np.zeros(0)
    return np.concatenate(codes), np.concatenate(errors)
