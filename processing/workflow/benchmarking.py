"""benchmark.py: train, finetune and test each configuration end to end, then compare them.

Every configuration (architecture x loss x image size) goes through the same library calls the
scripts make (:func:`processing.workflow.training.train`, :func:`processing.workflow.finetuning.finetune`,
:func:`processing.workflow.testing.test`), so the numbers are the ones a user gets from train.py,
finetune.py and test.py with the same settings.

The best configuration is chosen on the finetuning subset only (its image AUROC, then the balanced
accuracy the (min_area, threshold) search reached on it); the test images whose metrics are
reported never take part in the choice.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoencoder import bundle, folders
from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.progress import progress_bar
from processing.evaluation.metrics import NOT_AVAILABLE_KEY, absent_note, absent_to_none, format_metric, is_absent

logger = logging.getLogger(__name__)

BENCHMARK_DIR = "benchmarks"  # under the results root
#: benchmark.py --quick: a smoke run (32 px, 2 epochs, a fixed learning rate).
QUICK_OVERRIDES = {"epochs": 2, "image_sizes": [32], "learning_rate": 1e-3}
FINAL_KEYS = ("image_auroc", "pixel_auroc", "aupro", "balanced_accuracy", "balanced_accuracy_ratio", "train_s", "infer_ms_per_image")
TABLE_KEYS = ("n_images", "n_defective", "image_auroc", "pixel_auroc", "aupro", "tpr", "tnr", "balanced_accuracy",
              "best_threshold_balanced_accuracy", "balanced_accuracy_ratio")


@dataclass
class BenchmarkConfig:
    """The grid of configurations to run and the settings they share."""

    input_dir: str
    # The defaults are the best configuration measured on magnetic_tile's finetuning subset
    # (docs/benchmarks.md): featureCAE at 256 px scored by padim.
    architectures: list[str] = field(default_factory=lambda: ["featureCAE"])
    losses: list[str] = field(default_factory=lambda: ["l2"])
    image_sizes: list = field(default_factory=lambda: [256])  # sides or WIDTHxHEIGHT
    epochs: int | None = None  # None: each architecture's default (featureCAE 0: its padim needs only the feature statistics)
    # The rate the range test falls back to on magnetic_tile (the loss does not fall during the
    # sweep); None: each training runs the range test.
    learning_rate: float | None = 1e-3
    batch_size: int = 8
    color_mode: str = "auto"  # auto: rgb when the training images carry colour (options.resolve_color_mode)
    # Anomaly maps to finetune and test on each model (those that suit it; otherwise the map that
    # matches its loss, e.g. l2 for an L2 pixel autoencoder).
    # None: finetune.py's default map for each model's loss (padim for featureCAE, the model's own
    # map for stageCAE, the map matching the loss of a pixel autoencoder).
    methods: list[str] | None = None
    # -m/--methods given by the user: each architecture must then be suited by one of them (not
    # silently scored with its loss's map instead).
    methods_given: bool = False
    image_score: str | None = None  # None: the finetune default (max for feature/padim/knn maps, component for pixel maps)
    dtype: str = "float64"
    smoothing_sigma: float | None = 2.0  # None: the finetune/test default (no smoothing)
    clear_border: bool | None = None  # None: the finetune default (True: drop border components)
    normalize: str | None = None  # None: the finetune default ("none"); "pixel": per-pixel standardisation
    patience: int = 12
    augment: bool = True
    finetune_split: float = 0.1
    rule: str = "smoothed"  # how finetuning chooses the decision (processing/decision/thresholds.py RULES)
    seed: int = 42
    output_dir: str = "results"  # results root; the benchmark JSON goes to <output_dir>/benchmarks/
    models_dir: str = "saved_models"

    def validate(self) -> None:
        """Every setting that can be checked before any training, without TensorFlow; ValueError naming the flag."""
        from autoencoder.checks import check_positive_int, check_positive_number
        from autoencoder.folders import check_writable_dir
        from autoencoder.loss_rules import check_loss_color
        from autoencoder.models import get_architecture
        from processing.maps.kinds import check_method_dtype, losses_with_maps, matching_map_for_loss
        from processing.maps.postprocess import check_normalization, check_sigma
        from processing.workflow.options import check_dataset_root, resolve_color_mode

        for flag, values in (("--architectures", self.architectures), ("--losses", self.losses), ("--image-sizes", self.image_sizes)):
            if not values:
                raise UserError(f"{flag}: expected at least one value")
        for size in self.image_sizes:
            ImageSize.of(size, "--image-sizes")
        check_positive_int(self.batch_size, "--batch", "a batch size")
        check_positive_int(self.patience, "--patience", "epochs without improvement before training stops")
        from processing.decision.thresholds import RULES

        if self.rule not in RULES:
            raise UserError(f"--rule {self.rule!r}: expected one of {', '.join(RULES)}")
        if self.epochs is not None:
            if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
                raise UserError(f"--epochs {self.epochs}: expected a number of epochs")
            for name in self.architectures:
                if self.epochs < get_architecture(name).min_epochs:
                    raise UserError(f"--epochs {self.epochs}: architecture {name} needs at least 1 epoch")
        if self.learning_rate is not None:
            check_positive_number(self.learning_rate, "--lr", "learning rate")
        if self.smoothing_sigma is not None:
            check_sigma(self.smoothing_sigma)
        if self.clear_border is not None and not isinstance(self.clear_border, bool):
            raise UserError(f"clear_border {self.clear_border!r}: expected true or false")
        if self.normalize is not None:
            check_normalization(self.normalize, self.dtype)
        for method in self.methods or []:
            check_method_dtype(method, self.dtype)
        self.check_untrained_maps()
        if self.methods_given:
            self.check_methods_suit_architectures()
        check_dataset_root(self.input_dir)
        color_mode = resolve_color_mode(self.input_dir) if self.color_mode == "auto" else self.color_mode
        for loss in self.losses:
            check_loss_color(loss, color_mode)
            if loss not in losses_with_maps():
                matching_map_for_loss(loss)  # raises, naming --losses
        for name, size in itertools.product(self.architectures, self.image_sizes):
            get_architecture(name).check_size(ImageSize.of(size), "--image-sizes")
        check_dataset_root(self.input_dir)
        check_writable_dir(self.output_dir, "--output-dir")
        check_writable_dir(self.models_dir, "--models-dir")


    def check_untrained_maps(self) -> None:
        """A map that needs the trained network, asked of an architecture that trains 0 epochs here
        (featureCAE by default): one line before anything is trained."""
        from autoencoder.models import get_architecture
        from processing.maps.kinds import parse_map_spec

        for name in self.architectures:
            architecture = get_architecture(name)
            epochs = architecture.default_epochs if self.epochs is None else self.epochs
            if epochs > 0:
                continue
            for method in self.methods or []:
                spec = parse_map_spec(method)
                if spec.model_output == architecture.output and spec.needs_training:
                    raise UserError(f"-m/--methods {method}: architecture {name} trains 0 epochs here (its feature statistics only), "
                                     "so its own map means nothing; pass --epochs N, or maps such as padim or knn")

    def check_methods_suit_architectures(self) -> None:
        """With -m given, every architecture must take one of the listed maps; one line naming the
        architecture and the maps that would suit it."""
        from autoencoder.models import get_architecture
        from processing.maps.kinds import either, kinds_for_model, parse_map_spec

        for name in self.architectures:
            output = get_architecture(name).output
            if not any(parse_map_spec(method).model_output == output for method in self.methods or []):
                raise UserError(f"-m/--methods {' '.join(self.methods or [])}: no map for architecture {name}, whose model outputs "
                                 f"{'its own anomaly map' if output == 'map' else 'a reconstruction'}; add "
                                 f"{either(kinds_for_model(output))} (or leave -m out)")


@dataclass(frozen=True)
class RunSpec:
    """One configuration of the grid."""

    architecture: str
    loss: str
    image_size: ImageSize

    @property
    def name(self) -> str:
        return f"{self.architecture}-{self.loss}-{self.image_size}"


def expand_grid(config: BenchmarkConfig) -> list[RunSpec]:
    """Every (architecture, loss, image size) combination, in the order the flags list them.

    Raises ValueError (naming the flag) on a setting :meth:`BenchmarkConfig.validate` refuses: before any training.
    """
    from autoencoder.models import get_architecture

    config.validate()
    specs = [
        RunSpec(name, loss, size)
        for name in config.architectures
        for loss in losses_for(get_architecture(name), config.losses)
        for size in (ImageSize.of(size) for size in config.image_sizes)
    ]
    return list(dict.fromkeys(specs))  # drop repeats, keep order


def losses_for(architecture, losses: list[str]) -> list[str]:
    """The listed losses an architecture can train with; its default loss when it takes none of them
    (featureCAE trains only on its feature error, whatever the pixel models compare)."""
    return [loss for loss in losses if loss in architecture.losses] or [architecture.default_loss]


def methods_for(spec: RunSpec, config: BenchmarkConfig) -> list[str]:
    """The anomaly maps to try on one configuration's model: those of --methods that suit its
    architecture (pixel maps for reconstruction models, feature/padim/knn for featureCAE), or the
    map finetune.py chooses by default for its loss, else the map that matches its loss."""
    from autoencoder.models import get_architecture
    from processing.maps.kinds import default_kind_for_loss, matching_map_for_loss, parse_map_spec

    output = get_architecture(spec.architecture).output
    fitting = [m for m in (config.methods or []) if parse_map_spec(m).model_output == output]
    return fitting or [default_kind_for_loss(spec.loss) or matching_map_for_loss(spec.loss)]


def run_configuration(spec: RunSpec, config: BenchmarkConfig) -> list[dict]:
    """Train one configuration, then finetune and test each of its maps; return one record per map
    (settings, metrics, timings)."""
    from processing.workflow.training import TrainConfig, train

    started = time.perf_counter()
    folder = train(TrainConfig(
        input_dir=config.input_dir,
        architecture=spec.architecture,
        color_mode=config.color_mode,
        loss=spec.loss,
        batch_size=config.batch_size,
        epochs=config.epochs,
        image_size=spec.image_size,
        learning_rate=config.learning_rate,
        augment=config.augment,
        seed=config.seed,
        output_dir=config.models_dir,
        patience=config.patience,
    ))
    train_total_s = time.perf_counter() - started
    methods = methods_for(spec, config)
    records = []
    for method in methods:
        record = evaluate_map(folder, method, config, config.output_dir)
        record |= {"name": spec.name if len(methods) == 1 else f"{spec.name}-{method}", "architecture": spec.architecture,
                   "loss": spec.loss, "image_size": spec.image_size.to_json()}
        record["timings_s"]["train_total_s"] = round(train_total_s, 2)
        records.append(record)
    return records


def evaluate_map(folder, method: str, config: BenchmarkConfig, results_root: str, seed: int | None = None) -> dict:
    """Finetune one map of a trained model with the benchmark's settings (`seed`: of the finetuning
    split, default config.seed), then test it; the record of :func:`run_configuration` without the
    configuration's name."""
    from processing.workflow.finetuning import FinetuneConfig, finetune
    from processing.workflow.results import load_detector
    from processing.workflow.testing import TEST_RESULT_FILE, TestConfig, test

    post = {} if config.smoothing_sigma is None else {"smoothing_sigma": config.smoothing_sigma}
    if config.clear_border is not None:
        post["clear_border"] = config.clear_border
    if config.normalize is not None:
        post["normalize"] = config.normalize
    if config.image_score is not None:
        post["image_score"] = config.image_score
    info = bundle.read_info(folder)
    timings = {}
    started = time.perf_counter()
    finetune_dir = finetune(FinetuneConfig(
        path=str(folder), method=method, dtype=config.dtype, finetune_split=config.finetune_split,
        seed=config.seed if seed is None else seed, results_root=results_root, rule=config.rule, **post,
    ))
    timings["finetune_s"] = time.perf_counter() - started
    detector = load_detector(bundle.load_bundle(folder), Path(finetune_dir))
    finetuning = detector.result.summary() | {"image_auroc": finetuning_image_auroc(detector)}

    started = time.perf_counter()
    test_dirs = test(TestConfig(path=str(folder), method=method, dtype=config.dtype, results_root=results_root))
    timings["test_s"] = time.perf_counter() - started
    tested = json.loads((Path(test_dirs[0]) / TEST_RESULT_FILE).read_text())
    return {
        "method": method,
        "dtype": config.dtype,
        "model_folder": str(folder),
        "finetuning_dir": str(finetune_dir),
        "test_dir": str(test_dirs[0]),
        "training": {key: getattr(info.training, key) for key in ("epochs_run", "best_epoch", "max_lr", "seconds")},
        "parameters": info.model.parameters,
        "finetuning": finetuning,
        "finetuning_settings": detector.result.settings,
        "test": {key: value for key, value in tested.items() if key not in ("settings",)},
        "summary": summary_metrics(tested, info),
        "timings_s": {key: round(value, 2) for key, value in timings.items()},
    }


def summary_metrics(tested: dict, info) -> dict:
    """The six numbers of the final line, from a test result and the model's info.json (None: absent)."""
    return {
        "image_auroc": absent_to_none(tested.get("image_auroc")),
        "pixel_auroc": absent_to_none(tested.get("pixel_auroc")),
        "aupro": absent_to_none(tested.get("aupro")),
        "balanced_accuracy": absent_to_none(tested.get("balanced_accuracy")),
        # The verdicts' balanced accuracy over the best one threshold on the same image scores reaches.
        "balanced_accuracy_ratio": absent_to_none(tested.get("balanced_accuracy_ratio")),
        "best_threshold_balanced_accuracy": absent_to_none(tested.get("best_threshold_balanced_accuracy")),
        "train_s": float(info.training.seconds),
        "infer_ms_per_image": float(tested["ms_per_image"]),
    }


def _absent_to_low(value) -> float:
    """A selection key: an absent metric (None or NaN) counts as the lowest value."""
    return -math.inf if is_absent(value) else float(value)


def finetuning_image_auroc(detector) -> float:
    """Image AUROC on the finetuning subset, scored by the result's own detector exactly as test.py
    scores the test images; NaN when the subset holds a single class."""
    from processing.workflow.finetuning import subset_image_auroc

    root = Path(detector.model.info.dataset.path)
    names = detector.result.finetuning_files
    labels = [Path(name).parent.name != "good" for name in names]
    auroc = subset_image_auroc(detector, [root / name for name in names], labels)
    return math.nan if auroc is None else auroc


def selection_key(run: dict) -> tuple[float, float]:
    """(finetuning image AUROC, finetuning balanced accuracy), an absent value (None, NaN) counted as -inf."""
    finetuning = run["finetuning"]
    return (_absent_to_low(finetuning.get("image_auroc")), _absent_to_low(finetuning.get("best_score")))


def select_best(runs: list[dict]) -> int:
    """Index of the run with the best :func:`selection_key` (ties: the earlier run).

    The key is measured on the finetuning subset only, never on the reported test images: its
    image AUROC first (threshold-free, so it separates models better than the balanced accuracy of
    one threshold on a few dozen images), then the balanced accuracy the threshold search reached.
    """
    if not runs:
        raise UserError("select_best: no benchmark runs to choose from")
    keys = [selection_key(run) for run in runs]
    return max(range(len(runs)), key=lambda index: (keys[index], -index))


def _fmt(value) -> str:
    """Integers as they are, floats with 3 decimals, an absent metric (None, NaN) as n/a."""
    return format_metric(value)


def format_table(run: dict) -> str:
    """A text table of one run: one row per defect type and an 'all' row, columns TABLE_KEYS.

    A defect type's row scores its images against all the good test images (n_images counts both).
    """
    tested = run["test"]
    rows = []
    for name, metrics in sorted(tested.get("per_defect_type", {}).items()):
        rows.append([name] + [_fmt(metrics.get(key)) for key in TABLE_KEYS])
    rows.append(["all"] + [_fmt(tested.get(key)) for key in TABLE_KEYS])
    header = ["defect_type", *TABLE_KEYS]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    lines = [
        f"== {run['name']} ({run['method']}_{run['dtype']} maps; finetuning subset: image_auroc "
        f"{_fmt(run['finetuning'].get('image_auroc'))}, balanced accuracy "
        f"{_fmt(run['finetuning'].get('best_score'))}; train {run['summary']['train_s']:.0f} s, "
        f"{run['summary']['infer_ms_per_image']:.1f} ms/image)",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
    ]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def final_line(run: dict) -> str:
    """`image_auroc=… pixel_auroc=… aupro=… balanced_accuracy=… train_s=… infer_ms_per_image=…`;
    a metric that could not be computed reads `n/a` (see :func:`absent_lines` for why)."""
    summary = run["summary"]
    parts = []
    for key in FINAL_KEYS:
        spec = ".1f" if key.endswith(("_s", "_image")) else ".3f"
        parts.append(f"{key}={format_metric(summary.get(key), spec)}")
    return " ".join(parts)


def absent_lines(run: dict) -> list[str]:
    """Why the final line's absent metrics are absent, e.g. ``pixel_auroc, aupro: n/a (no ground-truth masks)``."""
    reasons = run.get("test", {}).get(NOT_AVAILABLE_KEY, {})
    missing = {key: reasons.get(key, "not computed") for key in FINAL_KEYS if is_absent(run["summary"].get(key))}
    return absent_note(missing)


def benchmark(config: BenchmarkConfig) -> tuple[Path, dict]:
    """Run every configuration of the grid, save the JSON, return (its path, its content)."""
    from processing.data.images import scan_dataset

    specs = expand_grid(config)  # validates the config first
    layout = scan_dataset(config.input_dir, require_test=True)
    started_stamp = bundle.timestamp()
    started = time.perf_counter()
    runs = []
    with progress_bar(total=len(specs), desc="benchmark", unit="config") as progress:
        for spec in specs:
            progress.set_postfix_str(spec.name)
            logger.info("configuration %d/%d: %s", len(runs) + 1, len(specs), spec.name)
            runs.extend(run_configuration(spec, config))
            progress.update(1)
    best = select_best(runs)
    payload = {
        "created": started_stamp,
        "command": bundle.command_line(),
        "dataset": {"path": str(layout.root.resolve()), "name": layout.root.name},
        "config": asdict(config),
        "selection": "highest image AUROC, then balanced accuracy, on the finetuning subset (never the scored test images)",
        "best": runs[best]["name"],
        "best_index": best,
        "final_line": final_line(runs[best]),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": bundle.environment_versions() | {"scikit-learn": _version("sklearn"), "scikit-image": _version("skimage")},
    }
    out_dir = Path(config.output_dir) / BENCHMARK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    # A benchmark started in the same second writes <name>_2.json, never over this one.
    path = bundle.write_json(folders.claim_unique_file(out_dir / f"{layout.root.name}_{started_stamp}.json"), payload)
    logger.info("benchmark result in %s", path)
    return path, payload


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None
