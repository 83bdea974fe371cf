"""The latent-density detector (finetune.py --detector kde): a kernel density estimate on the
bottleneck codes OR the reconstruction error (the math is in processing/decision/density.py).

    anomaly = log_density(code) < density_threshold  OR  error > error_threshold

It classifies whole images: no maps, no masks.

The density (``density.npz``: the training codes, the bandwidth, the PCA) belongs to the result:
it is written into the result's own folder, never shared and never rewritten. A ``density.npz`` in
the model folder (where older versions kept it, one per model) is read when present, never
written; results made then name it in ``density_file``. New results record its SHA-256, so a file
changed since is refused rather than applied.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoder import bundle
from autoencoder.errors import UserError
from autoencoder.folders import file_sha256
from processing.decision.density import (
    DENSITY_FILE,
    DensityFileError,
    DensityModel,
    batch_codes_and_errors,
    code_and_reconstruction_model,
    codes_and_errors,
    fit_density,
    load_density,
    save_density,
    search_dual_smoothed,
    search_dual_thresholds,
    threshold_from_json,
    threshold_to_json,
)
from processing.decision.thresholds import RULES
from processing.detectors import fields as f
from processing.detectors.base import (
    RESULT_FILE,
    Decisions,
    Detector,
    ExportPlan,
    FinetuneConfig,
    FinetuneData,
    FinetuningResult,
    Scores,
    expected_line,
    register_detector,
)
from processing.evaluation import plots
from processing.evaluation.metrics import format_metrics, image_auroc
from processing.maps.kinds import check_method_dtype
from processing.maps.map_model import refuse_tiled
from processing.maps.resmaps import RESMAP_METHODS

logger = logging.getLogger(__name__)

TILED_WHY = "the latent density is of whole resized images; use the segmentation detector"


@dataclass
class KDEResult(FinetuningResult):
    """The density of the training codes' file and the two thresholds (null: that rule is off)."""

    detector: str = f.checked(f.choice("kde"), default="kde")
    model: str = f.checked(f.text, default="")
    method: str = f.checked(f.choice(*RESMAP_METHODS), default="l2")
    dtype: str = f.checked(f.choice("float64"), default="float64")
    error: str = f.checked(f.text, default="")
    # The density's file: "density.npz" (in the result's folder), or the absolute path of the model
    # folder's density.npz of an older version.
    density_file: str = f.checked(f.text, default="")
    density_sha256: str | None = f.checked(f.sha256, optional=True)
    density_fitted_now: bool = f.checked(f.boolean, default=False)
    bandwidth: float | None = f.checked(f.nullable(f.number(positive=True)), default=None)
    pca_components: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    n_train_codes: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    code_length: int | None = f.checked(f.nullable(f.integer(minimum=1)), default=None)
    density_threshold: float | None = f.checked(f.nullable(f.number()), default=None)
    error_threshold: float | None = f.checked(f.nullable(f.number()), default=None)
    best_score: float | None = f.checked(f.metric, default=None)
    best_tpr: float | None = f.checked(f.metric, default=None)
    best_tnr: float | None = f.checked(f.metric, default=None)
    validation_min_log_density: float | None = f.checked(f.nullable(f.number()), default=None)
    validation_max_error: float | None = f.checked(f.nullable(f.number()), default=None)
    finetune_split: float | None = f.checked(f.nullable(f.number(0.0, 1.0)), default=None)
    seed: int | None = f.checked(f.nullable(f.integer()), default=None)
    n_validation: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    n_finetune: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    finetuning_files: list = f.checked(f.list_of(f.text), default_factory=list)
    finetuning_scores: dict = f.checked(f.mapping, default_factory=dict)
    settings: dict = f.checked(f.mapping, default_factory=dict)
    seconds: float | None = f.checked(f.nullable(f.number(minimum=0.0)), default=None)
    finetuning_subset: dict | None = f.checked(f.mapping, optional=True)  # synthetic defects, when used
    candidates: dict | None = f.checked(f.mapping, optional=True)
    chosen_by: str | None = f.checked(f.text, optional=True)
    # As the segmentation result's: the rule (older results: the original), the operating point,
    # the rates expected on new images and finetune.py's warnings.
    rule: str = f.checked(f.choice(*RULES), default="original")
    operating_point: dict | None = f.checked(f.operating_point, optional=True)
    expected: dict | None = f.checked(f.expected_rates, optional=True)
    warnings: list = f.checked(f.list_of(f.text), default_factory=list)


@register_detector
class KDEDetector(Detector):
    name = "kde"
    result_type = KDEResult
    score_key = "image_auroc_density"  # the image score is -log density
    own_settings = {
        "bandwidth": ("--bandwidth", None),
        "pca_components": ("--pca-components", None),
        "refit_density": ("--refit-density", False),
    }

    def __init__(self, model, result: KDEResult, folder=None, batch_size=16, density: DensityModel | None = None):
        super().__init__(model, result, folder, batch_size)
        self.method = result.method
        self.density = density if density is not None else self._load_density()
        self.density_threshold = threshold_from_json(result.density_threshold, -np.inf)
        self.error_threshold = threshold_from_json(result.error_threshold, np.inf)
        self.scorer = code_and_reconstruction_model(model.model)

    def density_path(self) -> Path:
        """Where the result's density is: its own folder's density.npz (density_file "density.npz"),
        or for a result of an older version (density_file an absolute path, or absent) the model
        folder's, as those versions read it."""
        if self.result.density_file == DENSITY_FILE and self.folder is not None:
            return Path(self.folder) / DENSITY_FILE
        return self.model.folder / DENSITY_FILE

    def _load_density(self) -> DensityModel:
        path = self.density_path()
        if not path.is_file():
            raise DensityFileError(
                f"{path} not found: the kde finetuning result needs its density file; "
                f"run finetune.py -p {self.model.folder} --detector kde --overwrite"
            )
        if self.result.density_sha256 is not None and file_sha256(path) != self.result.density_sha256:
            raise DensityFileError(f"{path} changed since finetuning (its SHA-256 differs from density_sha256 in {RESULT_FILE}): "
                                   f"run finetune.py -p {self.model.folder} --detector kde --overwrite")
        return load_density(path)[0]

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        check_method_dtype(config.method, config.dtype)
        if config.rule == "original" and (config.max_false_alarms or config.min_detection is not None):
            raise UserError("--max-false-alarms and --min-detection: the original rule of --detector kde keeps every validation image "
                             "normal; use --rule smoothed")
        if config.method not in RESMAP_METHODS:
            raise UserError(f"--detector kde: --method {config.method}: expected the residual map of a pixel autoencoder "
                    f"({' or '.join(RESMAP_METHODS)})")
        return config

    @classmethod
    def check_model_info(cls, config: FinetuneConfig, info) -> None:
        model = info.model
        if model.output != "reconstruction" or not model.has_bottleneck:
            raise UserError(f"--detector kde: architecture {model.architecture} has no latent code and reconstruction to "
                             "model (use a pixel autoencoder, or --detector segmentation)")
        refuse_tiled(info, "--detector kde", TILED_WHY)
        if info.model.roi is not None:
            raise UserError("--detector kde: the model has a region of interest (train.py --roi), which a density of whole images "
                            "cannot apply; use the segmentation detector")

    @staticmethod
    def result_name(config_or_result) -> str:
        return f"kde_{config_or_result.method}"

    @classmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> KDEDetector:
        refuse_tiled(model.info, "--detector kde", TILED_WHY)
        scorer = code_and_reconstruction_model(model.model)
        color_mode, size = model.info.model.color_mode, model.info.model.image_size
        held_out = set(data.validation_files)
        train_files = [path for path in data.layout.train_good if path not in held_out]
        labels = data.labels

        started = time.perf_counter()
        density, fitted_now = density_for_result(model, scorer, config, train_files)
        val_codes, val_error = codes_and_errors(
            scorer, data.validation_files, color_mode, size, config.method, config.batch_size, desc="validation"
        )
        ft_codes, ft_error = codes_and_errors(
            scorer, data.finetune_files, color_mode, size, config.method, config.batch_size, desc="finetuning"
        )
        val_log_density = density.log_density(val_codes)
        ft_log_density = density.log_density(ft_codes)
        point = config.operating_point()
        if config.rule == "smoothed":
            search = search_dual_smoothed(val_log_density, val_error, ft_log_density, ft_error, labels, point, seed=config.seed)
        else:
            search = search_dual_thresholds(val_log_density, val_error, ft_log_density, ft_error, labels)
        seconds = time.perf_counter() - started
        logger.info(
            "kde_%s (%s rule): density_threshold=%s error_threshold=%s; on the finetuning data TPR %.3f TNR %.3f, balanced accuracy "
            "%.3f (%.1f s)",
            config.method,
            config.rule,
            threshold_to_json(search.best_density_threshold),
            threshold_to_json(search.best_error_threshold),
            search.best_tpr,
            search.best_tnr,
            search.best_score,
            seconds,
        )
        expected = getattr(search, "expected", None)
        expected = expected.to_json() if expected is not None else None
        if expected is not None:
            logger.info("%s on new images (bootstrap of the finetuning data, %d resamples)", expected_line(expected), expected["resamples"])
        for warning in getattr(search, "warnings", []):
            logger.warning("%s", warning)
        result = KDEResult(
            detector=cls.name,
            model=str(model.model_file),
            method=config.method,
            dtype="float64",
            error=f"mean of the {config.method} residual map",
            density_file=DENSITY_FILE,
            density_fitted_now=fitted_now,
            bandwidth=density.bandwidth,
            pca_components=int(density.pca_components.shape[0]),
            n_train_codes=len(density.codes),
            code_length=density.n_features,
            density_threshold=threshold_to_json(search.best_density_threshold),
            error_threshold=threshold_to_json(search.best_error_threshold),
            best_score=search.best_score,
            best_tpr=search.best_tpr,
            best_tnr=search.best_tnr,
            validation_min_log_density=float(val_log_density.min()),
            validation_max_error=float(val_error.max()),
            finetune_split=config.finetune_split,
            seed=config.seed,
            n_validation=len(data.validation_files),
            n_finetune=len(data.finetune_files),
            finetuning_files=data.relative_finetune_files(),
            finetuning_scores={
                "log_density": ft_log_density.tolist(),
                "error": ft_error.tolist(),
                "label": labels.astype(int).tolist(),
            },
            settings=vars(config) | {"command": bundle.command_line()},
            seconds=round(seconds, 2),
            finetuning_subset=data.subset,
            rule=config.rule,
            operating_point=point.to_json(),
            expected=expected,
            warnings=list(getattr(search, "warnings", [])),
        )
        detector = cls(model, result, batch_size=config.batch_size, density=density)
        detector._plot_groups = {
            "validation": (val_log_density, val_error),
            "finetuning good": (ft_log_density[~labels], ft_error[~labels]),
            "finetuning defective": (ft_log_density[labels], ft_error[labels]),
        }
        return detector

    def save(self, folder) -> None:
        folder = Path(folder)
        metadata = {"model_file": self.model.model_file.name, "model_sha256": self.model.model_sha256}
        save_density(folder / DENSITY_FILE, self.density, metadata)
        self.result.density_file = DENSITY_FILE
        self.result.density_sha256 = file_sha256(folder / DENSITY_FILE)
        super().save(folder)
        groups = getattr(self, "_plot_groups", None)
        if groups is not None:
            plots.plot_density_error_scatter(groups, self.density_threshold, self.error_threshold, folder / "density_vs_error.png")

    # ---- scoring and deciding --------------------------------------------------------------

    def score(self, images: np.ndarray) -> Scores:
        codes, error = batch_codes_and_errors(self.scorer, images, self.method, self.batch_size)
        log_density = self.density.log_density(codes)
        return Scores(-log_density, None, {"log_density": log_density, "error": error})

    def decide(self, scores: Scores) -> Decisions:
        by_density = scores.columns["log_density"] < self.density_threshold
        by_error = scores.columns["error"] > self.error_threshold
        return Decisions(by_density | by_error, None, {"by_density": by_density, "by_error": by_error})

    def test_settings(self) -> dict:
        return {
            "detector": self.name,
            "method": self.method,
            "density_threshold": self.result.density_threshold,
            "error_threshold": self.result.error_threshold,
        }

    def decision_summary(self) -> dict:
        # The image score is -log density: the density rule's threshold on that scale.
        summary = super().decision_summary()
        density_threshold = summary.get("density_threshold")
        return summary | {"threshold": None if density_threshold is None else -float(density_threshold)}

    def export_plan(self) -> KDEExportPlan:
        return KDEExportPlan(self)

    def extra_metrics(self, truth, types, columns) -> tuple[dict, dict]:
        error = columns["error"]
        overall = {
            "image_auroc_error": image_auroc(truth, error),
            "flagged_by_density": int(columns["by_density"].sum()),
            "flagged_by_error": int(columns["by_error"].sum()),
        }
        per_type = {}
        for name in sorted(set(types[truth])):
            keep = (types == "good") | (types == name)
            per_type[name] = {"image_auroc_error": image_auroc(truth[keep], error[keep])}
        return overall, per_type

    def summary_line(self, result: dict) -> str:
        keys = ["balanced_accuracy", "tpr", "tnr", "image_auroc_density", "image_auroc_error"]
        return format_metrics(result, keys)


def density_for_result(model_bundle, scorer, config, train_files) -> tuple[DensityModel, bool]:
    """The density of a new result: fitted on the training codes, or (unless config.refit_density)
    the model folder's density.npz of an older version, read and never written. Returns
    (density, fitted_now); the result saves its own copy (KDEDetector.save)."""
    legacy = model_bundle.folder / DENSITY_FILE
    if legacy.is_file() and not config.refit_density:
        density, metadata = load_density(legacy)
        if metadata.get("model_file") not in (None, model_bundle.model_file.name):
            raise UserError(f"{legacy} was fitted for {metadata['model_file']}, not {model_bundle.model_file.name}; pass --refit-density")
        wanted_pca = config.pca_components or 0
        stored_pca = density.pca_components.shape[0]
        if (config.bandwidth is not None and not np.isclose(config.bandwidth, density.bandwidth)) or (
            config.pca_components is not None and wanted_pca != stored_pca
        ):
            raise UserError(
                f"{legacy} (an older version's density of this model) holds bandwidth {density.bandwidth:.4g} with {stored_pca} PCA "
                "components; pass --refit-density to fit one with the given --bandwidth/--pca-components (that file is left as it is)"
            )
        logger.info("density model %s (an older version's, read only): %d codes, bandwidth %.4g", legacy, len(density.codes),
                    density.bandwidth)
        return density, False
    color_mode, size = model_bundle.info.model.color_mode, model_bundle.info.model.image_size
    codes, _ = codes_and_errors(scorer, train_files, color_mode, size, config.method, config.batch_size, desc="encoding train/good")
    density = fit_density(codes, config.bandwidth, config.pca_components, seed=config.seed)
    logger.info("density model of %d training codes fitted (bandwidth %.4g)", len(codes), density.bandwidth)
    return density, True


KDE_GRAPH_ELEMENTS = 1_000_000  # training-code elements per step of the exported density (x the batch)


class KDEExportPlan(ExportPlan):
    """The latent density and the reconstruction error as one graph: the whole decision is in it
    (``log_density < density_threshold`` OR ``error > error_threshold``; a threshold that is null is off)."""

    def __init__(self, detector: KDEDetector):
        from processing.maps.kinds import get_map_kind

        self.name = detector.result_name(detector.result)
        self.scorer = detector.scorer  # images -> [bottleneck code, reconstruction]
        self.models = [detector.model.model]
        self.kind = get_map_kind(detector.method)
        self.density = detector.density
        self.density_threshold, self.error_threshold = detector.result.density_threshold, detector.result.error_threshold

    def log_density(self, codes, dtype: str):
        """gaussian_kde_log_density as tensor ops, on codes centred by the training codes' mean."""
        from keras import ops

        density = self.density
        codes = ops.reshape(ops.cast(codes, dtype), (ops.shape(codes)[0], -1))
        if density.uses_pca:
            codes = ops.matmul(codes - ops.convert_to_tensor(density.pca_mean, dtype=dtype),
                               ops.transpose(ops.convert_to_tensor(density.pca_components, dtype=dtype)))
        # Squared distances from the differences themselves, block by block of training codes (a
        # fixed number of steps: every format expresses it): |x|^2 + |c|^2 - 2 x.c cancels badly in float32.
        train = density.codes
        step = max(1, KDE_GRAPH_ELEMENTS // max(1, train.shape[1]))
        blocks = []
        for start in range(0, len(train), step):
            delta = ops.expand_dims(codes, 1) - ops.expand_dims(ops.convert_to_tensor(train[start : start + step], dtype=dtype), 0)
            blocks.append(ops.sum(delta * delta, axis=2))
        squared = blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=1)
        n, dim = density.codes.shape
        norm = np.log(n) + 0.5 * dim * np.log(2 * np.pi * density.bandwidth**2)
        return ops.logsumexp(squared * (-0.5 / density.bandwidth**2), axis=1) - norm

    def outputs(self, images, dtype: str) -> dict:
        from keras import ops

        code, reconstruction = self.scorer(images, training=False)
        log_density = self.log_density(code, dtype)
        error = ops.mean(self.kind.graph(images, reconstruction, None, dtype), axis=(1, 2))
        defective = ops.zeros_like(log_density) > 1.0  # all False
        if self.density_threshold is not None:
            defective = defective | (log_density < self.density_threshold)
        if self.error_threshold is not None:
            defective = defective | (error > self.error_threshold)
        return {"image_score": ops.cast(-log_density, "float32"), "log_density": ops.cast(log_density, "float32"),
                "error": ops.cast(error, "float32"), "defective": defective}

    def describe_outputs(self, size: tuple[int, int]) -> dict[str, str]:
        return {
            "image_score": "float32 (N,): -log density of the bottleneck code (higher = more anomalous)",
            "log_density": "float32 (N,): log density of the code under the training codes' Gaussian KDE",
            "error": f"float32 (N,): the mean of the {self.kind.name} residual map",
            "defective": "bool (N,): log_density < density_threshold OR error > error_threshold",
        }

    def decision(self) -> dict:
        return {
            "detector": "kde",
            "rule": "in_graph",
            "density_threshold": self.density_threshold,
            "error_threshold": self.error_threshold,
            "threshold": None if self.density_threshold is None else -float(self.density_threshold),
            "min_area": None,
            "text": "defective = log_density < density_threshold OR error > error_threshold (a null threshold is off); "
                    "image score = -log_density",
        }
