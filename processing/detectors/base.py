"""The detector interface: what finetune.py, test.py and benchmark.py call, whatever the detector.

A detector turns a trained model into decisions. Its life has four steps, split the way
scikit-learn splits fit from predict and anomalib splits the model from its post-processor:

1. ``fit``: choose the decision (thresholds, and whatever else it needs) on the validation images
   (defect-free, held out of training) and a labelled finetuning subset of the test images;
2. ``save`` / ``load``: the result is ``finetuning_result.json`` plus any arrays beside it in one
   folder (``results/<model>/finetuning/<name>/``);
3. ``score``: a batch of images -> image scores (higher = more anomalous), optional anomaly maps
   at the model's resolution, and per-image values for ``classification.csv``;
4. ``decide``: scores -> defective or not, and optional masks.

Detectors are registered by name (``@register_detector``) and found with :func:`get_detector`,
like the architectures. A finetuning result names its detector (``"detector"``; results without
the key are segmentation results).

The result itself is typed: each detector has a :class:`FinetuningResult` dataclass
(``result_type``) that it creates in ``fit``, and that alone writes and reads
``finetuning_result.json`` (``to_json`` / ``from_json``, every field checked: fields.py). What the
other stages need from a result they ask the detector for: its decision (``decision_summary``),
the report's notes (``report_notes``), the benchmark's summary (``result.summary()``) and an
export plan (``export_plan``, or a one-line refusal).
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from autoencoder import bundle
from autoencoder.errors import UserError
from autoencoder.folders import REPLACED
from processing.data.images import MVTecLayout, iter_batches, load_image_and_original
from processing.detectors.result import (  # noqa: F401  (part of the detector interface)
    RESULT_FILE,
    ExportPlan,
    FinetuningResult,
    expected_line,
    read_result_file,
    two_digits,
)
from processing.evaluation.metrics import format_metrics

DEFAULT_DETECTOR = "segmentation"


@dataclass
class FinetuneConfig:
    """The settings of one finetune.py run (every detector reads the ones it needs)."""

    path: str
    method: str | None = None  # residual map; None: the one matching the model's training loss
    dtype: str = "float64"
    finetune_split: float = 0.1
    seed: int = 42
    batch_size: int = 16
    results_root: str = "results"
    smoothing_sigma: float = 0.0  # Gaussian sigma (pixels) applied to the residual maps; 0: none
    # Drop defect components that touch the image border (the original toolkit's rule, right for
    # pixel maps, whose frame is where reconstruction fails); None: True for pixel maps, False for
    # feature/padim/knn maps (measured on magnetic_tile's finetuning subset, docs/benchmarks.md).
    clear_border: bool | None = None
    normalize: str = "none"  # "pixel": standardise every pixel by the training images' maps (after smoothing)
    # segmentation: "component" (the highest level with a min_area component) or "max" (the map's
    # maximum); None: max for feature/padim/knn maps, component for pixel maps.
    image_score: str | None = None
    # segmentation: other models of the same dataset whose maps are averaged in ("PATH" or "PATH:METHOD")
    combine_with: list[str] = field(default_factory=list)
    detector: str = DEFAULT_DETECTOR  # a name of the detector registry (processing/detectors/)
    # Several maps to try (or ["auto"]): the finetuning subset picks one (finetuning.choose_candidate).
    candidates: list[str] | None = None
    bandwidth: float | None = None  # kde: kernel width; None: cross-validated
    pca_components: int | None = None  # kde: PCA before the KDE; None/0: none
    refit_density: bool = False  # kde: fit a new density even when the model folder has an older version's density.npz
    data_dir: str | None = None  # the dataset's folder when it moved since training (None: info.json's)
    overwrite: bool = False  # move an existing result (and its test result) aside instead of stopping
    # Choose the decision on synthetic defects drawn into held-out good images, even when test/ has
    # defect classes (without them this is what finetune.py does anyway).
    synthetic_defects: bool = False
    # The operating point: a false-alarm budget on good images (the smoothed rule; the original rule:
    # the share of validation images that may be flagged), or a detection rate to reach; neither
    # (0.0 and None): the highest balanced accuracy.
    max_false_alarms: float = 0.0
    min_detection: float | None = None
    # segmentation: how the (min_area, threshold) pair is chosen (processing/decision/thresholds.py
    # RULES): "smoothed" (default) or "original" (every validation image clean, as the original toolkit).
    rule: str = "smoothed"
    # Review CSVs (predict.py's review.csv with its review column filled): their labelled images join
    # the finetuning data (processing/data/reviews.py).
    reviewed: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Every setting that can be checked without the model or TensorFlow (finetune.py runs this
        before TensorFlow is imported, finetune() again for library callers); ValueError naming the flag."""
        from autoencoder.checks import check_fraction, check_non_negative_int, check_positive_int, check_positive_number
        from processing.maps.kinds import IMAGE_SCORES, check_method_dtype
        from processing.maps.postprocess import check_normalization, check_sigma

        check_positive_int(self.batch_size, "-b/--batch", "an inference batch size")
        check_fraction(self.finetune_split, "--finetune-split")
        check_sigma(self.smoothing_sigma)
        check_normalization(self.normalize, self.dtype)
        for method in [self.method] if self.method is not None else []:
            check_method_dtype(method, self.dtype)
        if self.candidates is not None:
            if "auto" in self.candidates and len(self.candidates) > 1:
                raise UserError(f"--method {' '.join(self.candidates)}: auto stands alone")
            for method in self.candidates:
                if method != "auto":
                    check_method_dtype(method, self.dtype)
        if self.clear_border is not None and not isinstance(self.clear_border, bool):
            raise UserError(f"clear_border {self.clear_border!r}: expected true or false")
        if self.image_score is not None and self.image_score not in IMAGE_SCORES:
            raise UserError(f"--image-score {self.image_score!r}: expected one of {', '.join(IMAGE_SCORES)}")
        get_detector(self.detector)
        self.check_flags_apply()
        if self.bandwidth is not None:
            check_positive_number(self.bandwidth, "--bandwidth", "kernel width")
        if self.pca_components is not None:
            check_non_negative_int(self.pca_components, "--pca-components", "a number of components")
        rate = self.max_false_alarms
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise UserError(f"--max-false-alarms {rate}: expected a fraction of the good images in [0, 1)")
        detection = self.min_detection
        if detection is not None and (isinstance(detection, bool) or not isinstance(detection, (int, float)) or not 0 < detection <= 1):
            raise UserError(f"--min-detection {detection}: expected a fraction of the defective images in (0, 1]")
        if detection is not None and rate:
            raise UserError("--max-false-alarms and --min-detection: give one operating point, not both")
        from processing.decision.thresholds import RULES

        if self.rule not in RULES:
            raise UserError(f"--rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.rule == "original" and detection is not None:
            raise UserError("--min-detection needs --rule smoothed: the original rule keeps every validation image clean")
        if self.reviewed:
            from processing.data.reviews import read_reviews

            read_reviews(self.reviewed)  # every file, label and image checked before TensorFlow

    def operating_point(self):
        """The operating point these settings ask for (processing/decision/operating_point.py)."""
        from processing.decision.operating_point import OperatingPoint

        if self.min_detection is not None:
            return OperatingPoint("detection", float(self.min_detection))
        if self.max_false_alarms:
            return OperatingPoint("false_alarms", float(self.max_false_alarms))
        return OperatingPoint()


    def check_flags_apply(self) -> None:
        """A setting that only another detector reads (its ``own_settings``) is refused, naming the
        flag, rather than silently ignored (--bandwidth without --detector kde, --smoothing with it)."""
        for name, other in _REGISTRY.items():
            if name == self.detector:
                continue
            for key, (flag, default) in other.own_settings.items():
                if getattr(self, key) != default:
                    raise UserError(f"{flag} applies to --detector {name} only; this run uses --detector {self.detector}")


@dataclass
class FinetuneData:
    """The images a detector is fitted on: validation images and the labelled finetuning subset
    (test images, or synthetic defects drawn into held-out good images: processing/data/synthetic_subset.py)."""

    layout: MVTecLayout
    validation_files: list[Path]
    finetune_files: list[Path]
    labels: np.ndarray  # (len(finetune_files),) bool, True for defective
    # How the finetuning subset was made, for the result (None: the labelled test images, as always).
    subset: dict | None = None
    synthetic_dir: Path | None = None  # the synthetic images while finetune.py runs (copied into the result)
    reviewed: dict | None = None  # the reviewed images among finetune_files (Reviewed.record()), for the result

    def relative_finetune_files(self) -> list[str]:
        """The dataset's files in the finetuning subset (test.py leaves them out), relative to its root."""
        root = Path(os.path.abspath(self.layout.root))  # not resolve(): a dataset's files may be links (split.py)
        files = [Path(os.path.abspath(path)) for path in self.finetune_files]
        return [str(path.relative_to(root)) for path in files if path.is_relative_to(root)]


@dataclass
class Scores:
    """What a detector says about a batch of N images before deciding."""

    image_scores: np.ndarray  # (N,) float64, higher = more anomalous; the score of the image AUROC
    maps: np.ndarray | None = None  # (N, H, W) anomaly maps at the model's resolution, or None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-image values for classification.csv


@dataclass
class Decisions:
    """A detector's verdict on a batch of N images."""

    defective: np.ndarray  # (N,) bool
    masks: np.ndarray | None = None  # (N, H, W) bool predicted defect pixels, or None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-image values for classification.csv


class Detector(abc.ABC):
    """One way of turning a model's output into decisions; see the module docstring."""

    name: ClassVar[str]
    result_type: ClassVar[type[FinetuningResult]]
    # The key under which test_result.json reports the AUROC of Scores.image_scores.
    score_key: ClassVar[str] = "image_auroc"
    # The FinetuneConfig settings only this detector reads: {field: (flag, default)}; another
    # detector refuses them when they differ from the default (FinetuneConfig.check_flags_apply).
    own_settings: ClassVar[dict[str, tuple[str, object]]] = {}

    def __init__(self, model: bundle.ModelBundle, result: FinetuningResult, folder: Path | None = None, batch_size: int = 16):
        self.model = model
        self.result = result
        self.folder = folder  # where the result lives once saved or loaded
        self.batch_size = batch_size

    # ---- finetuning ------------------------------------------------------------------------

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        """Validate (and complete) the settings before any model is read; return them."""
        return config

    @classmethod
    def check_model_info(cls, config: FinetuneConfig, info: dict) -> None:
        """Whether the detector with these settings applies to a model, from its info.json alone
        (no TensorFlow: finetune.py asks before importing it); ValueError naming the flag."""
        return None

    @classmethod
    @abc.abstractmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> Detector:
        """Choose the decision on `data`; the returned detector holds its result, not yet saved."""

    @staticmethod
    @abc.abstractmethod
    def result_name(config_or_result) -> str:
        """The folder name of a result (a FinetuneConfig or the detector's result) under
        finetuning/ and test/ (e.g. ``l2_float64``)."""

    def save(self, folder: Path) -> None:
        """Write finetuning_result.json and whatever the detector keeps beside it into `folder`."""
        bundle.write_json(Path(folder) / RESULT_FILE, {"schema_version": self.result.SCHEMA_VERSION, **self.result.to_json()})
        self.folder = Path(folder)

    @classmethod
    def read_result(cls, folder: Path, data: dict | None = None) -> FinetuningResult:
        """The typed result of a finetuning folder (`data`: its JSON, when already read)."""
        path = Path(folder) / RESULT_FILE
        return cls.result_type.from_json(read_result_file(path) if data is None else data, str(path))

    @classmethod
    def load(cls, model: bundle.ModelBundle, folder: Path, result: FinetuningResult | None = None, batch_size: int = 16) -> Detector:
        """The detector of a saved finetuning folder."""
        folder = Path(folder)
        if result is None:
            result = cls.read_result(folder)
        return cls(model, result, folder, batch_size)

    # ---- what a file becomes ----------------------------------------------------------------

    def read_input(self, path) -> tuple[np.ndarray, np.ndarray]:
        """(model input, original image) of one image file (predict.py, serve.py)."""
        return load_image_and_original(path, self.model.info.model.color_mode, self.model.info.model.image_size)

    def inputs_of_files(self, paths):
        """(paths, inputs :meth:`score` takes) batch by batch."""
        info = self.model.info.model
        yield from iter_batches(paths, info.color_mode, info.image_size, self.batch_size)

    def roi_mask(self, path) -> np.ndarray | None:
        """The region of interest at the shape of `path`'s map (None: every pixel counts)."""
        return None

    def map_shape(self, path) -> tuple[int, int]:
        """(H, W) of the maps and masks of image file `path` (test.py reads its ground truth at that size)."""
        return tuple(self.model.info.model.image_size)

    # ---- scoring and deciding --------------------------------------------------------------

    @abc.abstractmethod
    def score(self, images: np.ndarray) -> Scores:
        """Score a batch of model inputs (N, H, W, C) float32 in [0, 1]."""

    @abc.abstractmethod
    def decide(self, scores: Scores) -> Decisions:
        """The decision for scored images."""

    @property
    def map_value_range(self) -> tuple[float, float] | None:
        """The range pixel metrics bin the maps over (None: the detector makes no maps)."""
        return None

    def test_settings(self) -> dict:
        """The decision's settings, at the head of test_result.json."""
        return {}

    def extra_metrics(self, truth: np.ndarray, types: np.ndarray, columns: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """Detector-specific test metrics: (overall, per defect type) dicts merged into test_result.json."""
        return {}, {}

    def summary_line(self, result: dict) -> str:
        """The numbers test.py logs for one test result."""
        keys = ["image_auroc", "pixel_auroc", "aupro", "mean_iou", "balanced_accuracy", "tpr", "tnr"]
        return format_metrics(result, keys)  # a metric that could not be computed prints as n/a

    def model_test_metrics(self, files, truth, batch_size: int = 16) -> dict:
        """What the model scores by itself (registered model scores that apply to it, e.g. the
        adversarial autoencoder's likelihood), as test_result.json keys; {} for most models."""
        metrics = {}
        for applies, measure in _MODEL_SCORES.values():
            if applies(self.model.info):
                metrics |= measure(self.model, files, truth, batch_size)
        return metrics

    @property
    def tuned_on(self) -> set[str]:
        """The finetuning files (relative to the dataset root) test.py leaves out."""
        return set(self.result.finetuning_files)

    # ---- what predict.py, its report and export.py ask -------------------------------------

    def decision_summary(self) -> dict:
        """The decision for predict.py's CSV, report and settings: the test settings plus
        ``detector``, ``threshold`` (on the image score's scale, or None) and ``min_area`` (or None)."""
        settings = dict(self.test_settings())
        return settings | {"detector": self.name, "threshold": settings.get("threshold"), "min_area": settings.get("min_area")}

    def heatmap_scale(self) -> tuple[float, float] | None:
        """(low, high) of the heat maps' colormap, the same for every image (None: the detector makes no maps)."""
        return None

    @property
    def score_floor(self) -> float | None:
        """A score that means "nothing found at any level" (the report leaves such images out of its
        histogram); None when every score is a real measurement."""
        return None

    def report_notes(self) -> list[str]:
        """Sentences for predict.py's report explaining how the decision is made."""
        return self.decision_notes()

    def decision_notes(self) -> list[str]:
        """How the decision was chosen, what it is expected to do on new images, and finetune.py's
        warnings about it (for the report)."""
        from processing.decision.operating_point import OperatingPoint

        result = self.result
        rule, point = getattr(result, "rule", None), getattr(result, "operating_point", None)
        if rule is None:
            return []
        tpr, tnr = getattr(result, "best_tpr", None), getattr(result, "best_tnr", None)
        line = (f"The decision was chosen by the {rule} rule"
                + (f" at {OperatingPoint.from_json(point).describe()}" if point else "")
                + f"; on the finetuning data TPR {two_digits(tpr)}, TNR {two_digits(tnr)}")
        expectation = result.expectation_line()
        line += f"; {expectation}." if expectation else "."
        return [line] + [f"Warning: {warning}" for warning in result.decision_warnings]

    def export_plan(self) -> ExportPlan:
        """What export.py puts into the graph; ValueError (one line) when this result cannot be exported."""
        raise UserError(f"result {self.result_name(self.result)} uses the {self.name} detector, which export.py cannot export")



_REGISTRY: dict[str, type[Detector]] = {}
# Image scores some models make by themselves: name -> (applies(model info), metrics(model, files, truth, batch_size) -> dict).
_MODEL_SCORES: dict[str, tuple] = {}


def register_model_scores(name: str, applies, metrics) -> None:
    """Make a model's own image scores part of every test result of the models they apply to."""
    if name in _MODEL_SCORES:
        raise ValueError(f"model scores {name!r} are registered twice")
    _MODEL_SCORES[name] = (applies, metrics)


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"detector {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_detectors() -> list[str]:
    return list(_REGISTRY)


def get_detector(name: str, what: str = "--detector") -> type[Detector]:
    """The detector class registered as `name`; ValueError naming `what` and the known names."""
    if name not in _REGISTRY:
        raise UserError(f"{what} {name!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def detector_of_result(data: dict, source: str = RESULT_FILE) -> type[Detector]:
    """The detector class a finetuning result (its JSON object) was made by."""
    return get_detector(data.get("detector", DEFAULT_DETECTOR), f"{source}: unknown detector")


def read_result(folder: Path) -> tuple[type[Detector], FinetuningResult]:
    """(detector class, typed result) of a finetuning folder; one line naming the file when it is not valid."""
    path = Path(folder) / RESULT_FILE
    data = read_result_file(path)
    detector = detector_of_result(data, str(path))
    result = detector.read_result(folder, data)
    # finetune.py names the folder after the result's map and dtype (ssim_float64): a method or dtype
    # edited by hand would apply one map's threshold to another map.
    name, expected = Path(folder).name, detector.result_name(result)
    if name != expected and not name.startswith(expected + REPLACED):
        raise UserError(f"{path}: its settings name the result {expected}, but it is in {name}/: edited by hand (method, dtype)? "
                         "rerun finetune.py")
    result.check_files(Path(folder))
    return detector, result


def finetuning_root(model: bundle.ModelBundle, results_root: str = "results") -> Path:
    return model.results_dir(results_root) / "finetuning"
