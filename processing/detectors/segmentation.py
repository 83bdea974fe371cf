"""The segmentation detector: threshold the anomaly maps, keep components of at least min_area.

The maps are a pixel autoencoder's residuals (ssim, l2), a featureCAE's own map (feature) or a
density on its features (padim, knn), or the standardised mean of several (padim+knn, and the
maps of other models through --combine-with).

Validation images (defect-free, held out of training) fix, for every min_area, the lowest
threshold at which they all stay clean; the finetuning subset then picks the (min_area,
threshold) pair with the best balanced accuracy. A test image is defective when a component of
at least min_area survives; its score is the highest threshold at which one does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from autoencoder import bundle
from autoencoder.losses import DEFAULT_METHOD_FOR_LOSS
from processing.data.images import iter_batches, scan_dataset, split_train_validation
from processing.decision.segmentation import segment, validate_clear_border
from processing.decision.thresholds import DEFAULT_MIN_AREAS, max_component_level, search_min_area_threshold
from processing.detectors.base import Decisions, Detector, FinetuneConfig, FinetuneData, Scores, register_detector
from processing.evaluation import plots
from processing.maps.feature_maps import FEATURE_SCORERS, feature_grid, feature_model_of, fit_feature_scorer, load_feature_scorer, upsample_maps
from processing.maps.inference import maps_from_output, reconstruct
from processing.maps.postprocess import ResmapPostprocessor, check_normalization, check_sigma, fit_pixel_statistics, smooth_resmaps
from processing.maps.resmaps import FEATURE_SCORER_METHODS, MAP_METHODS, UNBOUNDED_METHODS, check_method_dtype, check_method_for_model, resmap_value_range

logger = logging.getLogger(__name__)


@register_detector
class SegmentationDetector(Detector):
    name = "segmentation"

    def __init__(self, model, result, folder=None, batch_size=16, postprocess: ResmapPostprocessor | None = None, feature_scorers=None, partners=None):
        super().__init__(model, result, folder, batch_size)
        self.method, self.dtype = result["method"], result["dtype"]
        self.components = self.method.split("+")  # one map, or the maps a combined map averages
        # Other models whose maps join the combination (--combine-with): map makers of their own.
        self.partners = partners if partners is not None else [
            load_partner(spec, Path(folder) / f"partner_{index}", batch_size) for index, spec in enumerate(result.get("partners", []))
        ]
        # (mean, std) of each component's maps on the validation images, for combined maps.
        self.combination = {name: tuple(value) for name, value in result.get("combination", {}).items()}
        self.feature_scorers = dict(feature_scorers or {})
        self.features = None
        if any(name in FEATURE_SCORER_METHODS for name in self.components):
            self.features = feature_model_of(model.model)
            for name in self.components:
                if name in FEATURE_SCORER_METHODS and name not in self.feature_scorers:
                    self.feature_scorers[name] = load_feature_scorer(name, folder)
        self.min_area, self.threshold = int(result["best_min_area"]), float(result["best_threshold"])
        self.clear_border = result_clear_border(result)
        self.image_score = check_image_score(result.get("image_score", "component"), "finetuning result image_score")
        self.postprocess = postprocess
        if postprocess is None and folder is not None:
            # The post-processing the threshold was found with (smoothing, per-pixel normalisation).
            self.postprocess = ResmapPostprocessor.from_finetuning(folder, result)

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        check_method_dtype(config.method, config.dtype)
        for spec in config.combine_with:  # a wrong path answers before any map is fitted
            bundle.resolve_model_path(parse_partner(spec)[0], flag="--combine-with")
        if config.combine_with and config.dtype != "float64":
            raise ValueError(f"--combine-with averages standardised maps: use --dtype float64, not {config.dtype}")
        feature_maps = config.method in UNBOUNDED_METHODS or bool(config.combine_with)
        if config.image_score is None:
            config = replace(config, image_score="max" if feature_maps else "component")
        if config.clear_border is None:
            config = replace(config, clear_border=not feature_maps)
        check_image_score(config.image_score)
        check_sigma(config.smoothing_sigma)
        validate_clear_border(config.clear_border, "clear_border")
        check_normalization(config.normalize, config.dtype)
        return config

    @staticmethod
    def result_name(config_or_result) -> str:
        if isinstance(config_or_result, dict):
            method, dtype = config_or_result["method"], config_or_result["dtype"]
            partners = [(spec["model"], spec["method"]) for spec in config_or_result.get("partners", [])]
        else:
            method, dtype = config_or_result.method, config_or_result.dtype
            partners = [parse_partner(spec) for spec in config_or_result.combine_with]
        for folder, partner_method in partners:
            method += f"+{Path(folder).name}-{partner_method or 'default'}"
        return f"{method}_{dtype}"

    @classmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> "SegmentationDetector":
        check_method_for_model(config.method, model.info["model"].get("output", "reconstruction"))
        sigma = check_sigma(config.smoothing_sigma)
        clear_border = validate_clear_border(config.clear_border, "clear_border")
        normalize = check_normalization(config.normalize, config.dtype)
        started = time.perf_counter()
        info = model.info["model"]
        feature_scorers = {
            name: fit_feature_scorer(name, model.model, training_files(model, data), info["color_mode"], info["image_size"], config.batch_size, config.seed)
            for name in config.method.split("+")
            if name in FEATURE_SCORER_METHODS
        }
        # A detector without a result yet, to make maps exactly as test.py will.
        maker = cls(model, {"method": config.method, "dtype": config.dtype, "best_min_area": 1, "best_threshold": 0.0},
                    batch_size=config.batch_size, postprocess=ResmapPostprocessor(sigma), feature_scorers=feature_scorers)
        maker.partners = [fit_partner(spec, model, config) for spec in config.combine_with]
        if len(maker.components) + len(maker.partners) > 1:
            maker.combination = fit_combination(maker.component_maps_of_files(data.validation_files))
        if normalize == "pixel":
            maker.postprocess = ResmapPostprocessor(sigma, *fit_pixel_statistics(maker.raw_maps_of_files(training_files(model, data), smoothed=True)))

        val_resmaps = maker.maps_of_files(data.validation_files)
        finetune_resmaps = maker.maps_of_files(data.finetune_files)
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
            "image_score": config.image_score,
            **({"combination": {name: list(value) for name, value in maker.combination.items()}} if maker.combination else {}),
            **({"partners": [{"model": str(p.model.folder), "method": p.method} for p in maker.partners]} if maker.partners else {}),
            # Standardised and model-output maps are unbounded: test.py bins its pixel metrics over
            # this range (the span of the validation and finetuning maps, widened; values outside
            # land in the end bins).
            **({"value_range": widened_range(val_resmaps, finetune_resmaps)} if unbounded_maps(config) else {}),
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
        return cls(model, result, batch_size=config.batch_size, postprocess=maker.postprocess, feature_scorers=feature_scorers, partners=maker.partners)

    def save(self, folder) -> None:
        self.postprocess.save_statistics(folder)
        for name, scorer in self.feature_scorers.items():
            scorer.save(folder / FEATURE_SCORERS[name].file)
        for index, partner in enumerate(self.partners):
            (folder / f"partner_{index}").mkdir()
            for name, scorer in partner.feature_scorers.items():
                scorer.save(folder / f"partner_{index}" / FEATURE_SCORERS[name].file)
        super().save(folder)
        search = self.result["search"]
        plots.plot_threshold_vs_min_area(search["min_areas"], search["thresholds"], self.min_area, folder / "threshold_vs_min_area.png")
        plots.plot_scores_vs_min_area(search["min_areas"], search["tpr"], search["tnr"], search["score"], self.min_area, folder / "scores_vs_min_area.png")

    # ---- scoring and deciding --------------------------------------------------------------

    def component_maps(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each component's anomaly maps (N, H, W) of a batch of model inputs."""
        maps = {}
        grid = None
        for name in self.components:
            if name in self.feature_scorers:
                if grid is None:  # one pass through the backbone for every density scorer
                    grid = feature_grid(self.features, images, self.batch_size)
                maps[name] = upsample_maps(self.feature_scorers[name].score(grid), images.shape[1])
            else:
                maps[name] = maps_from_output(images, reconstruct(self.model.model, images, self.batch_size), name, self.dtype)
        for index, partner in enumerate(self.partners):
            size = partner.model.info["model"]["image_size"]
            partner_maps = partner.raw_maps(resize_images(images, size))
            maps[f"partner_{index}"] = resize_maps(partner_maps, images.shape[1])
        return maps

    def raw_maps(self, images: np.ndarray) -> np.ndarray:
        """The anomaly maps (N, H, W) of a batch of model inputs, before post-processing."""
        maps = self.component_maps(images)
        if len(maps) == 1:
            return maps[self.components[0]]
        return combine_maps(maps, self.combination)

    def component_maps_of_files(self, paths) -> dict[str, np.ndarray]:
        info = self.model.info["model"]
        batches = [self.component_maps(images) for _, images in iter_batches(paths, info["color_mode"], info["image_size"], self.batch_size)]
        return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}

    def resmaps(self, images: np.ndarray) -> np.ndarray:
        """The post-processed anomaly maps (N, H, W) of a batch of model inputs."""
        return self.postprocess(self.raw_maps(images))

    def raw_maps_of_files(self, paths, smoothed: bool = False) -> np.ndarray:
        info = self.model.info["model"]
        batches = [self.raw_maps(images) for _, images in iter_batches(paths, info["color_mode"], info["image_size"], self.batch_size)]
        maps = np.concatenate(batches) if batches else np.zeros((0, info["image_size"], info["image_size"]))
        return smooth_resmaps(maps, self.postprocess.sigma) if smoothed else maps

    def maps_of_files(self, paths) -> np.ndarray:
        """Post-processed maps (N, H, W) of image files, as test.py makes them."""
        return self.postprocess(self.raw_maps_of_files(paths))

    def score(self, images: np.ndarray) -> Scores:
        resmaps = self.resmaps(images)
        if self.image_score == "max":
            scores = resmaps.reshape(len(resmaps), -1).max(axis=1).astype(np.float64)
        else:
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
            "image_score": self.image_score,
        }


IMAGE_SCORES = ("component", "max")


def check_image_score(name: str, flag: str = "--image-score") -> str:
    if name not in IMAGE_SCORES:
        raise ValueError(f"{flag} {name!r}: expected one of {', '.join(IMAGE_SCORES)}")
    return name


def unbounded_maps(config: FinetuneConfig) -> bool:
    return config.normalize != "none" or config.method in UNBOUNDED_METHODS or bool(config.combine_with)


def result_clear_border(result: dict) -> bool:
    """Whether a finetuning result dropped border components (True for results older than the flag)."""
    return validate_clear_border(result.get("clear_border", True), f"finetuning result {result.get('model')}: clear_border")


def parse_partner(spec: str) -> tuple[str, str | None]:
    """--combine-with PATH[:METHOD] -> (PATH, METHOD, or None for the model's default map)."""
    path, _, method = spec.rpartition(":")
    if path and method in MAP_METHODS:
        return path, method
    return spec, None


def partner_maker(partner_model, method: str, batch_size: int, feature_scorers=None, folder=None) -> "SegmentationDetector":
    """A map maker for another model's raw maps (no decision of its own)."""
    result = {"method": method, "dtype": "float64", "best_min_area": 1, "best_threshold": 0.0}
    return SegmentationDetector(partner_model, result, folder, batch_size, postprocess=ResmapPostprocessor(0.0), feature_scorers=feature_scorers, partners=[])


def fit_partner(spec: str, model: bundle.ModelBundle, config: FinetuneConfig) -> "SegmentationDetector":
    """The map maker of a --combine-with model, its feature scorers fitted on its own training images."""
    path, method = parse_partner(spec)
    partner = bundle.load_bundle(path)
    ours, theirs = (Path(m.info["dataset"]["path"]).resolve() for m in (model, partner))
    if ours != theirs:
        raise ValueError(f"--combine-with {path}: that model was trained on {theirs}, this one on {ours}")
    method = method or DEFAULT_METHOD_FOR_LOSS.get(partner.info.get("settings", {}).get("loss"), "ssim")
    check_method_dtype(method, "float64")
    if "+" in method:
        raise ValueError(f"--combine-with {spec}: give a partner model one map (e.g. :padim), not {method}")
    check_method_for_model(method, partner.info["model"].get("output", "reconstruction"))
    scorers = {}
    if method in FEATURE_SCORER_METHODS:
        info = partner.info["model"]
        layout = scan_dataset(partner.info["dataset"]["path"])
        dataset = partner.info["dataset"]
        train_files, _ = split_train_validation(layout.train_good, dataset["validation_split"], dataset["seed"])
        scorers[method] = fit_feature_scorer(method, partner.model, train_files, info["color_mode"], info["image_size"], config.batch_size, config.seed)
    logger.info("combining with %s (%s maps at %d px)", partner.folder, method, partner.info["model"]["image_size"])
    return partner_maker(partner, method, config.batch_size, feature_scorers=scorers)


def load_partner(spec: dict, folder: Path, batch_size: int) -> "SegmentationDetector":
    partner_model = bundle.load_bundle(spec["model"])
    return partner_maker(partner_model, spec["method"], batch_size, folder=folder)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """A batch (N, H, W, C) float32 resized to (N, size, size, C): area averaging to shrink, bilinear to enlarge."""
    if images.shape[1] == size:
        return images
    interpolation = cv2.INTER_AREA if size < images.shape[1] else cv2.INTER_LINEAR
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.float32)
    for index, image in enumerate(images):
        out[index] = cv2.resize(image, (size, size), interpolation=interpolation).reshape(size, size, -1)
    return out


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) maps resized bilinearly to (N, size, size) float64."""
    if maps.shape[1] == size:
        return maps
    return np.stack([cv2.resize(np.asarray(m, dtype=np.float64), (size, size), interpolation=cv2.INTER_LINEAR) for m in maps])


def fit_combination(component_maps: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each component's validation maps (every pixel pooled)."""
    return {name: (float(maps.mean()), float(max(maps.std(), 1e-12))) for name, maps in component_maps.items()}


def combine_maps(component_maps: dict[str, np.ndarray], combination: dict[str, tuple[float, float]]) -> np.ndarray:
    """The mean of the components' maps, each standardised by its validation mean and std."""
    total = None
    for name, maps in component_maps.items():
        mean, std = combination[name]
        standardized = (maps - mean) / std
        total = standardized if total is None else total + standardized
    return total / len(component_maps)


def training_files(model: bundle.ModelBundle, data: FinetuneData) -> list:
    """The model's *training* images (train/good minus its validation split).

    Per-pixel statistics and feature densities are fitted on them; the validation images are kept
    out: they set the threshold, and fitting on them would make them look cleaner than unseen images.
    """
    dataset = model.info["dataset"]
    train_files, _ = split_train_validation(data.layout.train_good, dataset["validation_split"], dataset["seed"])
    return train_files


def widened_range(*resmaps: np.ndarray) -> list[float]:
    """[min - span/4, max + span] over the given maps: room for test maps beyond the finetuning ones."""
    lowest = min(float(np.min(maps)) for maps in resmaps)
    highest = max(float(np.max(maps)) for maps in resmaps)
    span = max(highest - lowest, 1e-12)
    return [lowest - 0.25 * span, highest + span]
