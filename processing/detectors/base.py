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
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from autoencoder import bundle
from processing.data.images import MVTecLayout
from processing.evaluation.metrics import format_metrics

RESULT_FILE = "finetuning_result.json"
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
    refit_density: bool = False  # kde: refit density.npz even when the model folder has one
    data_dir: str | None = None  # the dataset's folder when it moved since training (None: info.json's)
    overwrite: bool = False  # move an existing result (and its test result) aside instead of stopping


@dataclass
class FinetuneData:
    """The images a detector is fitted on: validation images and the labelled finetuning subset."""

    layout: MVTecLayout
    validation_files: list[Path]
    finetune_files: list[Path]
    labels: np.ndarray  # (len(finetune_files),) bool, True for defective

    def relative_finetune_files(self) -> list[str]:
        return [str(path.relative_to(self.layout.root)) for path in self.finetune_files]


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
    # The key under which test_result.json reports the AUROC of Scores.image_scores.
    score_key: ClassVar[str] = "image_auroc"

    def __init__(self, model: bundle.ModelBundle, result: dict, folder: Path | None = None, batch_size: int = 16):
        self.model = model
        self.result = result  # the content of finetuning_result.json
        self.folder = folder  # where the result lives once saved or loaded
        self.batch_size = batch_size

    # ---- finetuning ------------------------------------------------------------------------

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        """Validate (and complete) the settings before any model is read; return them."""
        return config

    @classmethod
    @abc.abstractmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> "Detector":
        """Choose the decision on `data`; the returned detector holds its result, not yet saved."""

    @staticmethod
    @abc.abstractmethod
    def result_name(config_or_result) -> str:
        """The folder name of a result under finetuning/ and test/ (e.g. ``l2_float64``)."""

    def save(self, folder: Path) -> None:
        """Write finetuning_result.json and whatever the detector keeps beside it into `folder`."""
        bundle.write_json(Path(folder) / RESULT_FILE, self.result)
        self.folder = Path(folder)

    @classmethod
    def load(cls, model: bundle.ModelBundle, folder: Path, result: dict | None = None, batch_size: int = 16) -> "Detector":
        """The detector of a saved finetuning folder."""
        folder = Path(folder)
        if result is None:
            result = json.loads((folder / RESULT_FILE).read_text())
        return cls(model, result, folder, batch_size)

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
        """The numbers test.py logs for one result."""
        keys = ["image_auroc", "pixel_auroc", "aupro", "mean_iou", "balanced_accuracy", "tpr", "tnr"]
        return format_metrics(result, keys)  # a metric that could not be computed prints as n/a

    @property
    def tuned_on(self) -> set[str]:
        """The finetuning files (relative to the dataset root) test.py leaves out."""
        return set(self.result["finetuning_files"])


_REGISTRY: dict[str, type[Detector]] = {}


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
        raise ValueError(f"{what} {name!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def detector_of_result(result: dict) -> type[Detector]:
    """The detector class a finetuning result was made by."""
    return get_detector(result.get("detector", DEFAULT_DETECTOR), f"finetuning result for {result.get('model')}: unknown detector")


def finetuning_root(model: bundle.ModelBundle, results_root: str = "results") -> Path:
    return model.results_dir(results_root) / "finetuning"
