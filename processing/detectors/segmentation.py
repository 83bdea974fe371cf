"""The segmentation detector: threshold the residual maps, keep components of at least min_area.

Validation images (defect-free, held out of training) fix, for every min_area, the lowest
threshold at which they all stay clean; the finetuning subset then picks the (min_area,
threshold) pair with the best balanced accuracy. A test image is defective when a component of
at least min_area survives; its score is the highest threshold at which one does.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from autoencoder import bundle
from processing.data.images import split_train_validation
from processing.decision.segmentation import segment, validate_clear_border
from processing.decision.thresholds import DEFAULT_MIN_AREAS, max_component_level, search_min_area_threshold
from processing.detectors.base import Decisions, Detector, FinetuneConfig, FinetuneData, Scores, register_detector
from processing.evaluation import plots
from processing.maps.inference import compute_resmaps, reconstruct
from processing.maps.postprocess import ResmapPostprocessor, check_normalization, check_sigma, fit_pixel_statistics, smooth_resmaps
from processing.maps.resmaps import calculate_resmaps, check_method_dtype, resmap_value_range

logger = logging.getLogger(__name__)


@register_detector
class SegmentationDetector(Detector):
    name = "segmentation"

    def __init__(self, model, result, folder=None, batch_size=16, postprocess: ResmapPostprocessor | None = None):
        super().__init__(model, result, folder, batch_size)
        self.method, self.dtype = result["method"], result["dtype"]
        self.min_area, self.threshold = int(result["best_min_area"]), float(result["best_threshold"])
        self.clear_border = result_clear_border(result)
        self.postprocess = postprocess
        if postprocess is None and folder is not None:
            # The post-processing the threshold was found with (smoothing, per-pixel normalisation).
            self.postprocess = ResmapPostprocessor.from_finetuning(folder, result)

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        check_method_dtype(config.method, config.dtype)
        check_sigma(config.smoothing_sigma)
        validate_clear_border(config.clear_border, "clear_border")
        check_normalization(config.normalize, config.dtype)
        return config

    @staticmethod
    def result_name(config_or_result) -> str:
        get = config_or_result.get if isinstance(config_or_result, dict) else lambda key: getattr(config_or_result, key)
        return f"{get('method')}_{get('dtype')}"

    @classmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> "SegmentationDetector":
        sigma = check_sigma(config.smoothing_sigma)
        clear_border = validate_clear_border(config.clear_border, "clear_border")
        normalize = check_normalization(config.normalize, config.dtype)
        started = time.perf_counter()
        postprocess = ResmapPostprocessor(sigma)
        if normalize == "pixel":
            postprocess = ResmapPostprocessor(sigma, *pixel_statistics(model, data, config, sigma))

        def maps(paths):
            return postprocess(resmaps_of_files(model, paths, config.method, config.dtype, config.batch_size))

        val_resmaps = maps(data.validation_files)
        finetune_resmaps = maps(data.finetune_files)
        search = search_min_area_threshold(
            val_resmaps, finetune_resmaps, data.labels, config.dtype, min_areas=DEFAULT_MIN_AREAS,
            clear_border=clear_border,
        )
        seconds = time.perf_counter() - started
        logger.info(
            "best pair: min_area=%d threshold=%.4g balanced accuracy=%.3f (%.1f s)",
            search.best_min_area, search.best_threshold, search.best_score, seconds,
        )
        best = int(np.flatnonzero(np.asarray(search.min_areas) == search.best_min_area)[0])
        result = {
            "model": str(model.model_file),
            "method": config.method,
            "dtype": config.dtype,
            "smoothing_sigma": sigma,
            "clear_border": clear_border,
            "normalize": normalize,
            # Standardised maps are unbounded: test.py bins its pixel metrics over this range (the
            # span of the validation and finetuning maps, widened; values outside land in the end bins).
            **({"value_range": widened_range(val_resmaps, finetune_resmaps)} if normalize != "none" else {}),
            "best_min_area": int(search.best_min_area),
            "best_threshold": float(search.best_threshold),
            "best_score": float(search.best_score),
            "best_tpr": float(search.tpr[best]),
            "best_tnr": float(search.tnr[best]),
            "finetune_split": config.finetune_split,
            "seed": config.seed,
            "n_validation": len(data.validation_files),
            "n_finetune": len(data.finetune_files),
            "finetuning_files": data.relative_finetune_files(),
            "settings": vars(config) | {"command": bundle.command_line()},
            "search": {
                "min_areas": [int(a) for a in search.min_areas],
                "thresholds": [float(t) for t in search.pair_thresholds],
                "tpr": [float(v) for v in search.tpr],
                "tnr": [float(v) for v in search.tnr],
                "score": [float(v) for v in search.scores],
            },
            "seconds": round(seconds, 2),
        }
        return cls(model, result, batch_size=config.batch_size, postprocess=postprocess)

    def save(self, folder) -> None:
        self.postprocess.save_statistics(folder)
        super().save(folder)
        search = self.result["search"]
        plots.plot_threshold_vs_min_area(search["min_areas"], search["thresholds"], self.min_area, folder / "threshold_vs_min_area.png")
        plots.plot_scores_vs_min_area(search["min_areas"], search["tpr"], search["tnr"], search["score"], self.min_area, folder / "scores_vs_min_area.png")

    # ---- scoring and deciding --------------------------------------------------------------

    def resmaps(self, images: np.ndarray) -> np.ndarray:
        """The post-processed residual maps (N, H, W) of a batch of model inputs."""
        reconstructions = reconstruct(self.model.model, images, self.batch_size)
        return self.postprocess(calculate_resmaps(images, reconstructions, method=self.method, dtype=self.dtype))

    def score(self, images: np.ndarray) -> Scores:
        resmaps = self.resmaps(images)
        scores = max_component_level(resmaps, self.min_area, empty_score=self.no_defect_score, clear_border=self.clear_border)
        return Scores(np.asarray(scores, dtype=np.float64), resmaps, {"score": scores})

    def decide(self, scores: Scores) -> Decisions:
        masks = segment(scores.maps, self.threshold, self.min_area, clear_border=self.clear_border)
        return Decisions(masks.reshape(len(masks), -1).any(axis=1), masks)

    @property
    def map_value_range(self) -> tuple[float, float]:
        """The range of the maps: recorded for standardised maps, else the method's own."""
        if "value_range" in self.result:
            return tuple(self.result["value_range"])
        return resmap_value_range(self.method, self.dtype)

    @property
    def no_defect_score(self) -> float:
        """Below every real score: no component of min_area at any threshold."""
        return float(self.map_value_range[0]) - 1.0

    def test_settings(self) -> dict:
        return {
            "method": self.method,
            "dtype": self.dtype,
            "min_area": self.min_area,
            "threshold": self.threshold,
            "smoothing_sigma": float(self.result.get("smoothing_sigma", 0.0)),
            "clear_border": self.clear_border,
            "normalize": self.result.get("normalize", "none"),
        }


def result_clear_border(result: dict) -> bool:
    """Whether a finetuning result dropped border components (True for results older than the flag)."""
    return validate_clear_border(result.get("clear_border", True), f"finetuning result {result.get('model')}: clear_border")


def resmaps_of_files(model: bundle.ModelBundle, paths, method: str, dtype: str, batch_size: int) -> np.ndarray:
    """Raw residual maps (N, H, W) of image files at the model's input size."""
    info = model.info["model"]
    return compute_resmaps(model.model, paths, info["color_mode"], info["image_size"], method, dtype, batch_size)


def pixel_statistics(model: bundle.ModelBundle, data: FinetuneData, config: FinetuneConfig, sigma: float):
    """Per-pixel mean and std of the smoothed maps of the model's *training* images.

    The validation images are kept out: they set the threshold, and standardising them with
    their own statistics would make them look cleaner than unseen images.
    """
    dataset = model.info["dataset"]
    train_files, _ = split_train_validation(data.layout.train_good, dataset["validation_split"], dataset["seed"])
    logger.info("per-pixel statistics of %d training maps", len(train_files))
    resmaps = resmaps_of_files(model, train_files, config.method, config.dtype, config.batch_size)
    return fit_pixel_statistics(smooth_resmaps(resmaps, sigma))


def widened_range(*resmaps: np.ndarray) -> list[float]:
    """[min - span/4, max + span] over the given maps: room for test maps beyond the finetuning ones."""
    lowest = min(float(np.min(maps)) for maps in resmaps)
    highest = max(float(np.max(maps)) for maps in resmaps)
    span = max(highest - lowest, 1e-12)
    return [lowest - 0.25 * span, highest + span]
