"""The segmentation detector: threshold the anomaly maps, keep components of at least min_area.

The maps are those of a map spec (processing/maps/kinds.py): a pixel autoencoder's residuals
(ssim, l2), a featureCAE's own map (feature) or a density on its features (padim, knn), or the
standardised mean of several (padim+knn, and the maps of other models through --combine-with).

The (min_area, threshold) pair is chosen by one of the rules of processing/decision/thresholds.py:
the smoothed rule (default; the validation images and the good finetuning images set the
false-alarm side, the defective finetuning images the detection side, both smoothed, at the
user's operating point, with the rates expected on new images from resampling) or the original
toolkit's (every validation image clean, the best balanced accuracy on the finetuning subset).
A test image is defective when a component of at least min_area survives; its score is the highest
threshold at which one does (``component``) or the map's maximum (``max``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from autoencoder import bundle
from processing.data.images import iter_batches, scan_dataset, split_train_validation
from processing.data.tiles import TileGrid, iter_originals, iter_tile_batches, load_tiles, stitch, tiles_of
from processing.decision.segmentation import segment
from processing.decision.thresholds import RULES, allowed_false_alarms, max_component_level, search_min_area_threshold
from processing.detectors import fields as f
from processing.detectors.base import (
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
from processing.maps.inference import bind_sources, fit_states, source_values
from processing.maps.kinds import (
    IMAGE_SCORES,
    MAP_DTYPES,
    MapSpec,
    combine_maps,
    default_map_for_loss,
    fit_combination,
    get_map_source,
    is_map_spec,
    model_was_trained,
    parse_map_spec,
)
from processing.maps.postprocess import (
    MAX_SIGMA,
    NORMALIZATIONS,
    ResmapPostprocessor,
    check_smoothing_fits,
    fit_pixel_statistics,
    smooth_resmaps,
)

logger = logging.getLogger(__name__)


def map_name(value):
    if not is_map_spec(value):
        raise f.FieldError("expected a map name such as ssim, l2, padim or padim+knn")
    return value


def partner_entry(value):
    entry = f.mapping(value)
    if not isinstance(entry.get("model"), str) or not is_map_spec(entry.get("method")):
        raise f.FieldError("expected {\"model\": folder, \"method\": map}")
    return entry


def combination_entry(value):
    table = f.mapping(value)
    for pair in table.values():
        mean, std = f.list_of(f.number())(pair) if isinstance(pair, list) and len(pair) == 2 else (None, None)
        if mean is None or not std > 0:
            raise f.FieldError("expected {component: [mean, std > 0]}")
    return table


@dataclass
class SegmentationResult(FinetuningResult):
    """The (min_area, threshold) pair and the map post-processing it was chosen with."""

    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = (
        "best_min_area", "best_threshold", "best_score", "best_tpr", "best_tnr", "n_finetune",
        "smoothing_sigma", "clear_border", "normalize", "image_score", "rule", "operating_point", "expected",
    )

    model: str = f.checked(f.text)
    method: str = f.checked(map_name)
    dtype: str = f.checked(f.choice(*MAP_DTYPES))
    # Results older than these keys: no smoothing, border components dropped, no normalisation,
    # the component image score.
    smoothing_sigma: float = f.checked(f.number(minimum=0.0, maximum=MAX_SIGMA), default=0.0)
    clear_border: bool = f.checked(f.boolean, default=True)
    normalize: str = f.checked(f.choice(*NORMALIZATIONS), default="none")
    image_score: str = f.checked(f.choice(*IMAGE_SCORES), default="component")
    combination: dict | None = f.checked(combination_entry, optional=True)  # {component: [mean, std]} of combined maps
    partners: list | None = f.checked(f.list_of(partner_entry), optional=True)  # --combine-with models
    # The range pixel metrics bin unbounded maps over (the span of the validation and finetuning maps, widened).
    value_range: list | None = f.checked(f.number_range, optional=True)
    best_min_area: int = f.checked(f.integer(minimum=1), default=1)
    best_threshold: float = f.checked(f.number(), default=0.0)
    best_score: float | None = f.checked(f.metric, default=None)
    best_tpr: float | None = f.checked(f.metric, default=None)
    best_tnr: float | None = f.checked(f.metric, default=None)
    finetune_split: float | None = f.checked(f.nullable(f.number(0.0, 1.0)), default=None)
    seed: int | None = f.checked(f.nullable(f.integer()), default=None)
    n_validation: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    n_finetune: int | None = f.checked(f.nullable(f.integer(minimum=0)), default=None)
    finetuning_files: list = f.checked(f.list_of(f.text), default_factory=list)
    settings: dict = f.checked(f.mapping, default_factory=dict)
    search: dict = f.checked(f.mapping, default_factory=dict)
    seconds: float | None = f.checked(f.nullable(f.number(minimum=0.0)), default=None)
    # How the finetuning subset was made when it was not the labelled test images (synthetic defects).
    finetuning_subset: dict | None = f.checked(f.mapping, optional=True)
    max_false_alarms: float | None = f.checked(f.number(0.0, 1.0), optional=True)  # when above 0
    allowed_false_alarms: int | None = f.checked(f.integer(minimum=0), optional=True)  # of the validation images
    candidates: dict | None = f.checked(f.mapping, optional=True)  # -m A B / auto: every candidate's scores
    chosen_by: str | None = f.checked(f.text, optional=True)
    # The rule that chose the pair (results older than the key: the original rule), the operating point
    # it aimed at, what the decision is expected to do on new images, and the warnings finetune.py gave.
    rule: str = f.checked(f.choice(*RULES), default="original")
    operating_point: dict | None = f.checked(f.operating_point, optional=True)
    expected: dict | None = f.checked(f.expected_rates, optional=True)
    warnings: list = f.checked(f.list_of(f.text), default_factory=list)

    @property
    def spec(self) -> MapSpec:
        return parse_map_spec(self.method)

    def matches(self, method: str | None, dtype: str | None) -> bool:
        # A map combined with other models' maps is not the map of -m METHOD alone.
        return super().matches(method, dtype) and (method is None or not self.partners)

    def check_files(self, folder: Path) -> None:
        """The files the result needs beside it (fitted map states, per-pixel statistics, partners'
        states), checked when it is read, before TensorFlow."""
        from processing.maps.postprocess import PIXEL_STATISTICS_FILE

        needed = [folder / kind.state_file for kind in self.spec.fitted_kinds]
        if self.normalize != "none":
            needed.append(folder / PIXEL_STATISTICS_FILE)
        for index, partner in enumerate(self.partners or []):
            needed += [folder / f"partner_{index}" / kind.state_file for kind in parse_map_spec(partner["method"]).fitted_kinds]
        for path in needed:
            if not path.is_file():
                raise ValueError(f"{path} not found: the finetuning result {folder.name} needs it; rerun finetune.py")

    def check(self, source: str) -> None:
        spec = self.spec
        try:
            spec.check_dtype(self.dtype)
        except ValueError:
            raise ValueError(f"{source}: dtype {self.dtype!r}: {spec.name} maps need float64") from None
        if self.normalize != "none" and self.dtype != "float64":
            raise ValueError(f"{source}: normalize {self.normalize!r} needs float64 maps, not {self.dtype}")
        components = spec.names + [f"partner_{index}" for index in range(len(self.partners or []))]
        if len(components) > 1 and sorted(self.combination or {}) != sorted(components):
            raise ValueError(f"{source}: combination: expected the mean and std of {', '.join(components)}")
        bounds = self.value_range or spec.value_range(self.dtype)
        if bounds is not None and not bounds[0] <= self.best_threshold <= bounds[1]:
            raise ValueError(f"{source}: best_threshold {self.best_threshold!r}: outside the range of its {spec.name} maps "
                             f"[{bounds[0]:g}, {bounds[1]:g}]; rerun finetune.py")


@register_detector
class SegmentationDetector(Detector):
    name = "segmentation"
    result_type = SegmentationResult
    own_settings = {
        "dtype": ("-t/--dtype", "float64"),
        "smoothing_sigma": ("--smoothing", 0.0),
        "clear_border": ("--keep-border/--clear-border", None),
        "normalize": ("--normalize", "none"),
        "image_score": ("--image-score", None),
        "combine_with": ("--combine-with", []),
    }

    def __init__(self, model, result: SegmentationResult, folder=None, batch_size=16,
                 postprocess: ResmapPostprocessor | None = None, states=None, partners=None):
        super().__init__(model, result, folder, batch_size)
        self.spec = result.spec
        self.method, self.dtype = result.method, result.dtype
        # Other models whose maps join the combination (--combine-with): map makers of their own.
        self.partners = partners if partners is not None else [
            load_partner(spec, Path(folder) / f"partner_{index}", batch_size) for index, spec in enumerate(result.partners or [])
        ]
        # (mean, std) of each component's maps on the validation images, for combined maps.
        self.combination = {name: tuple(value) for name, value in (result.combination or {}).items()}
        self.states = dict(states or {})
        for kind in self.spec.fitted_kinds:
            if kind.name not in self.states:
                self.states[kind.name] = load_state(kind, folder)
        self.sources = bind_sources(self.spec, model.model)
        self.grid = TileGrid.of(model.info["model"].get("tile"))  # a tiled model scores whole images, tile by tile
        self.min_area, self.threshold = result.best_min_area, result.best_threshold
        size = model.info["model"]["image_size"]
        if self.min_area > size * size:
            where = Path(folder) / "finetuning_result.json" if folder is not None else "the finetuning result"
            raise ValueError(f"{where}: best_min_area {self.min_area}: larger than the model's {size}x{size} maps (at most {size * size})")
        self.clear_border = result.clear_border
        self.image_score = result.image_score
        self.postprocess = postprocess
        if postprocess is None and folder is not None:
            # The post-processing the threshold was found with (smoothing, per-pixel normalisation).
            self.postprocess = ResmapPostprocessor.from_finetuning(folder, result.smoothing_sigma, result.normalize)

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        spec = parse_map_spec(config.method)
        spec.check_dtype(config.dtype)
        for partner in config.combine_with:  # a wrong path answers before any map is fitted
            bundle.resolve_model_path(parse_partner(partner)[0], flag="--combine-with")
        if config.combine_with and config.dtype != "float64":
            raise ValueError(f"--combine-with averages standardised maps: use --dtype float64, not {config.dtype}")
        if config.image_score is None:
            config = replace(config, image_score="max" if config.combine_with else spec.image_score)
        if config.clear_border is None:
            config = replace(config, clear_border=False if config.combine_with else spec.clear_border)
        return config

    @classmethod
    def check_model_info(cls, config: FinetuneConfig, info: dict) -> None:
        parse_map_spec(config.method).check_model(info["model"].get("output", "reconstruction"), model_was_trained(info))
        grid = TileGrid.of(info["model"].get("tile"))
        if grid is not None and (config.normalize != "none" or config.combine_with):  # before TensorFlow; fit() checks again
            raise ValueError(f"{'--normalize pixel' if config.normalize != 'none' else '--combine-with'}: not for a tiled model "
                             f"(train.py --tile {grid.size}): its images and maps have their own sizes")
        folder = Path(config.path) if Path(config.path).is_dir() else Path(config.path).parent
        for partner in config.combine_with:
            partner_folder, _ = bundle.resolve_model_path(parse_partner(partner)[0], flag="--combine-with")
            if partner_folder.resolve() == folder.resolve():
                raise ValueError(f"--combine-with {partner}: that is the model being finetuned; combine it with another model's maps "
                                 "(or use -m with several maps, e.g. -m padim+knn)")
            ours, theirs = (Path(i["dataset"]["path"]).resolve() for i in (info, bundle.read_info(partner_folder)))
            if ours != theirs:  # before TensorFlow; fit_partner checks again
                raise ValueError(f"--combine-with {partner}: that model was trained on {theirs}, this one on {ours}")

    @staticmethod
    def result_name(config_or_result) -> str:
        if isinstance(config_or_result, SegmentationResult):
            method, dtype = config_or_result.method, config_or_result.dtype
            partners = [(spec["model"], spec["method"]) for spec in config_or_result.partners or []]
        else:
            method, dtype = config_or_result.method, config_or_result.dtype
            partners = [parse_partner(spec) for spec in config_or_result.combine_with]
        for folder, partner_method in partners:
            method += f"+{Path(folder).name}-{partner_method or 'default'}"
        return f"{method}_{dtype}"

    @classmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData) -> SegmentationDetector:
        spec = parse_map_spec(config.method)
        spec.check_model(model.info["model"].get("output", "reconstruction"), model_was_trained(model.info))
        sigma, clear_border, normalize = config.smoothing_sigma, config.clear_border, config.normalize
        started = time.perf_counter()
        info = model.info["model"]
        grid = TileGrid.of(info.get("tile"))
        if grid is not None and (normalize != "none" or config.combine_with):
            raise ValueError(f"{'--normalize pixel' if normalize != 'none' else '--combine-with'}: not for a tiled model "
                             f"(train.py --tile {grid.size}): its images and maps have their own sizes")
        train_files = training_files(model, data)
        states = fit_states(spec.fitted_kinds, model.model, lambda: training_batches(train_files, info, config.batch_size, config.seed),
                            config.batch_size, config.seed)
        # A detector without a decision yet, to make maps exactly as test.py will.
        maker = cls(model, SegmentationResult(model="", method=config.method, dtype=config.dtype),
                    batch_size=config.batch_size, postprocess=ResmapPostprocessor(sigma), states=states, partners=[])
        maker.partners = [fit_partner(spec, model, config) for spec in config.combine_with]
        if len(maker.spec.kinds) + len(maker.partners) > 1:
            maker.combination = fit_combination(maker.component_maps_of_files(data.validation_files))
        if normalize == "pixel":
            training_maps = maker.raw_maps_of_files(training_files(model, data), smoothed=True)
            maker.postprocess = ResmapPostprocessor(sigma, *fit_pixel_statistics(training_maps))

        val_resmaps = maker.maps_of_files(data.validation_files)
        finetune_resmaps = maker.maps_of_files(data.finetune_files)
        allowed = allowed_false_alarms(config.max_false_alarms, len(val_resmaps))
        if config.rule == "original" and config.max_false_alarms and not allowed:
            raise ValueError(f"--max-false-alarms {config.max_false_alarms:g}: allows none of the {len(val_resmaps)} validation images "
                             f"under --rule original (one is {1 / len(val_resmaps):.2g} of them); raise it, or use --rule smoothed, "
                             "whose budget is a rate on every good image")
        point = config.operating_point()
        validation = {Path(path).resolve() for path in data.validation_files}
        search = search_min_area_threshold(
            val_resmaps,
            finetune_resmaps,
            data.labels,
            config.dtype,
            clear_border=clear_border,
            allowed_false_alarms=allowed,
            rule=config.rule,
            operating_point=point,
            # A good finetuning image that is a validation image (synthetic defects without test/good) counts once.
            pooled_goods=[Path(path).resolve() not in validation for path in data.finetune_files],
            seed=config.seed,
        )
        seconds = time.perf_counter() - started
        logger.info(
            "best pair (%s rule, %s): min_area=%d threshold=%.4g; on the finetuning data TPR %.3f TNR %.3f, balanced accuracy %.3f "
            "(%.1f s)",
            search.rule, point.describe(), search.best_min_area, search.best_threshold, search.best_tpr, search.best_tnr,
            search.best_score, seconds,
        )
        expected = search.expected.to_json() if search.expected is not None else None
        if expected is not None:
            logger.info("%s on new images (bootstrap of the finetuning data, %d resamples)", expected_line(expected), expected["resamples"])
        for warning in search.warnings:
            logger.warning("%s", warning)
        unbounded = normalize != "none" or not spec.bounded or bool(config.combine_with)
        result = SegmentationResult(
            model=str(model.model_file),
            method=config.method,
            dtype=config.dtype,
            smoothing_sigma=sigma,
            clear_border=clear_border,
            normalize=normalize,
            image_score=config.image_score,
            combination={name: list(value) for name, value in maker.combination.items()} or None,
            partners=[{"model": str(p.model.folder), "method": p.method} for p in maker.partners] or None,
            # Standardised and model-output maps are unbounded: test.py bins its pixel metrics over
            # this range (values outside land in the end bins).
            value_range=widened_range(val_resmaps, finetune_resmaps) if unbounded else None,
            best_min_area=int(search.best_min_area),
            best_threshold=float(search.best_threshold),
            best_score=float(search.best_score),
            best_tpr=float(search.best_tpr),
            best_tnr=float(search.best_tnr),
            finetune_split=config.finetune_split,
            seed=config.seed,
            n_validation=len(data.validation_files),
            n_finetune=len(data.finetune_files),
            finetuning_files=data.relative_finetune_files(),
            settings=vars(config) | {"command": bundle.command_line()},
            search={
                "min_areas": [int(a) for a in search.min_areas],
                "thresholds": [float(t) for t in search.pair_thresholds],
                "tpr": [float(v) for v in search.tpr],
                "tnr": [float(v) for v in search.tnr],
                "score": [float(v) for v in search.scores],
            },
            seconds=round(seconds, 2),
            finetuning_subset=data.subset,
            max_false_alarms=config.max_false_alarms or None,
            allowed_false_alarms=allowed if config.max_false_alarms and search.rule == "original" else None,
            rule=search.rule,
            operating_point=point.to_json(),
            expected=expected,
            warnings=list(search.warnings),
        )
        return cls(model, result, batch_size=config.batch_size, postprocess=maker.postprocess, states=states, partners=maker.partners)

    def save(self, folder) -> None:
        self.postprocess.save_statistics(folder)
        for kind in self.spec.fitted_kinds:
            self.states[kind.name].save(folder / kind.state_file)
        for index, partner in enumerate(self.partners):
            (folder / f"partner_{index}").mkdir()
            for kind in partner.spec.fitted_kinds:
                partner.states[kind.name].save(folder / f"partner_{index}" / kind.state_file)
        super().save(folder)
        search = self.result.search
        smoothed = self.result.rule == "smoothed"
        title = "threshold chosen for each minimum defect area" if smoothed else "lowest threshold keeping every validation image clean"
        plots.plot_threshold_vs_min_area(search["min_areas"], search["thresholds"], self.min_area, folder / "threshold_vs_min_area.png",
                                         title=title)
        objective = {"balanced": "balanced accuracy (smoothed)", "false_alarms": "detection rate (smoothed)",
                     "detection": "true negative rate (smoothed)"}[(self.result.operating_point or {}).get("kind", "balanced")]
        plots.plot_scores_vs_min_area(search["min_areas"], search["tpr"], search["tnr"], search["score"], self.min_area,
                                      folder / "scores_vs_min_area.png", score_label=objective if smoothed else "balanced accuracy")

    # ---- scoring and deciding --------------------------------------------------------------

    def component_maps(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each component's anomaly maps (N, H, W) of a batch of model inputs."""
        values = source_values(self.sources, images, self.batch_size)  # one model pass per source
        maps = {kind.name: kind.maps(images, values[kind.source], self.dtype, self.states.get(kind.name)) for kind in self.spec.kinds}
        for index, partner in enumerate(self.partners):
            size = partner.model.info["model"]["image_size"]
            partner_maps = partner.raw_maps(resize_images(images, size))
            maps[f"partner_{index}"] = resize_maps(partner_maps, images.shape[1])
        return maps

    def raw_maps(self, images: np.ndarray) -> np.ndarray:
        """The anomaly maps (N, H, W) of a batch of model inputs, before post-processing."""
        maps = self.component_maps(images)
        if len(maps) == 1:
            return maps[self.spec.names[0]]
        return combine_maps(maps, self.combination)

    def component_maps_of_files(self, paths) -> dict[str, np.ndarray]:
        """Each component's maps of image files (of every tile of them, for a tiled model), pooled."""
        info = self.model.info["model"]
        if self.grid is None:
            inputs = (images for _, images in iter_batches(paths, info["color_mode"], info["image_size"], self.batch_size))
            batches = [self.component_maps(images) for images in inputs]
        else:
            batches = [self.component_maps(tiles) for tiles in iter_tile_batches(paths, info["color_mode"], self.grid, self.batch_size)]
        return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}

    def stitched_map(self, image: np.ndarray) -> np.ndarray:
        """The raw map (H, W) of one whole image of a tiled model: its tiles' maps, stitched."""
        tiles = tiles_of(image, self.grid)
        maps = np.concatenate([self.raw_maps(tiles[start:start + self.batch_size]) for start in range(0, len(tiles), self.batch_size)])
        return stitch(maps, self.grid, *image.shape[:2])

    def resmaps(self, images) -> np.ndarray | list[np.ndarray]:
        """The post-processed anomaly maps of a batch: (N, H, W) of model inputs, or for a tiled model
        a list of (H_i, W_i) maps of whole images (each at its own size)."""
        if self.grid is None:
            return self.postprocess(self.raw_maps(images))
        return [self.postprocess(self.stitched_map(image)[None])[0] for image in images]

    def raw_maps_of_files(self, paths, smoothed: bool = False) -> np.ndarray:
        info = self.model.info["model"]
        batches = [self.raw_maps(images) for _, images in iter_batches(paths, info["color_mode"], info["image_size"], self.batch_size)]
        maps = np.concatenate(batches) if batches else np.zeros((0, info["image_size"], info["image_size"]))
        return smooth_resmaps(maps, self.postprocess.sigma) if smoothed else maps

    def maps_of_files(self, paths) -> np.ndarray | list[np.ndarray]:
        """Post-processed maps of image files, as test.py makes them: (N, H, W), or a list for a tiled model."""
        if self.grid is None:
            return self.postprocess(self.raw_maps_of_files(paths))
        info = self.model.info["model"]
        return [resmap for _, images in iter_originals(paths, info["color_mode"], self.batch_size) for resmap in self.resmaps(images)]

    def score(self, images) -> Scores:
        resmaps = self.resmaps(images)
        if self.image_score == "max":
            scores = np.array([float(np.max(resmap)) for resmap in resmaps], dtype=np.float64)
        else:
            scores = max_component_level(resmaps, self.min_area, empty_score=self.no_defect_score, clear_border=self.clear_border)
        return Scores(np.asarray(scores, dtype=np.float64), resmaps, {"score": scores})

    def decide(self, scores: Scores) -> Decisions:
        masks = segment(scores.maps, self.threshold, self.min_area, clear_border=self.clear_border)
        return Decisions(np.array([bool(mask.any()) for mask in masks], dtype=bool), masks)

    @property
    def map_value_range(self) -> tuple[float, float]:
        """The range of the maps: recorded for standardised maps, else the method's own."""
        if self.result.value_range is not None:
            return tuple(self.result.value_range)
        return self.spec.value_range(self.dtype)

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
            "smoothing_sigma": float(self.result.smoothing_sigma),
            "clear_border": self.clear_border,
            "normalize": self.result.normalize,
            "image_score": self.image_score,
        }

    # ---- predict.py's report and export.py -------------------------------------------------

    @property
    def score_floor(self) -> float | None:
        # The component score gives images without a region of min_area at any level a score below
        # every map value; drawn, they would squeeze the rest into a corner.
        return self.no_defect_score if self.image_score == "component" else None

    def report_notes(self) -> list[str]:
        return [
            "An image is defective when, after the post-processing above, its anomaly map has a connected region "
            "above the threshold of at least min_area pixels"
            + (" not touching the border" if self.clear_border else "")
            + f"; its score is the {'map maximum' if self.image_score == 'max' else 'highest level at which such a region survives'}"
            + (
                "; at the threshold itself such a region may have grown into the border, so an image can score above the threshold and be "
                "good."
                if self.clear_border
                else "."
            )
        ] + self.decision_notes()

    def export_plan(self) -> ExportPlan:
        return SegmentationExportPlan(self)


class MapGraph:
    """The raw maps of one model's map spec as tensor ops, at `size` (each map source computed once)."""

    def __init__(self, keras_model, spec: MapSpec, states: dict, size: int):
        self.spec, self.states, self.size = spec, states, size
        self.sources = {name: get_map_source(name).tensor(keras_model) for name in spec.sources}

    def maps(self, images, dtype: str) -> dict:
        values = {name: compute(images) for name, compute in self.sources.items()}
        return {kind.name: kind.graph(images, values[kind.source], self.states.get(kind.name), dtype) for kind in self.spec.kinds}


def resize_images_tensor(images, size: int):
    """:func:`resize_images` as tensor ops, for the sizes it can reproduce exactly: an integer
    shrink factor (area averaging = average pooling) or any enlargement (bilinear)."""
    from keras import ops

    side = int(images.shape[1])
    if size == side:
        return images
    if size > side:
        return ops.image.resize(images, (size, size), interpolation="bilinear", antialias=False)
    return ops.average_pool(images, pool_size=side // size, strides=side // size, padding="valid")


class SegmentationExportPlan(ExportPlan):
    """The segmentation detector's maps, combination, post-processing and threshold as one graph;
    the component rule (min_area, border) and the component image score are left to the runner."""

    def __init__(self, detector: SegmentationDetector):
        self.name = detector.result_name(detector.result)
        if detector.grid is not None:
            raise ValueError(f"result {self.name} is of a tiled model (train.py --tile {detector.grid.size}): its maps are stitched "
                             "from tiles at each image's own size, which one graph of a fixed input size cannot hold; use predict.py or "
                                     "serve.py")
        self.size = int(detector.model.info["model"]["image_size"])
        self.dtype, self.threshold, self.min_area = detector.dtype, detector.threshold, detector.min_area
        self.clear_border, self.image_score = detector.clear_border, detector.image_score
        self.postprocess, self.combination = detector.postprocess, detector.combination
        self.no_defect_score = detector.no_defect_score
        self.value_range = detector.spec.value_range("float64")
        self.graphs = [("", MapGraph(detector.model.model, detector.spec, detector.states, self.size))]
        self.models = [detector.model.model]
        for index, partner in enumerate(detector.partners):
            size = int(partner.model.info["model"]["image_size"])
            if size < self.size and self.size % size:
                raise ValueError(
                    f"result {self.name}: the {size} px partner model {partner.model.folder} would need a non-integer "
                    f"area resize from {self.size} px, which export.py cannot reproduce exactly"
                )
            self.graphs.append((f"partner_{index}", MapGraph(partner.model.model, partner.spec, partner.states, size)))
            self.models.append(partner.model.model)
        check_smoothing_fits(self.postprocess.sigma, self.size)

    @property
    def decision_in_graph(self) -> bool:
        """Whether the decision is ``map maximum > threshold`` (min_area 1, border components kept)."""
        return self.min_area == 1 and not self.clear_border

    def check_format(self, fmt: str, dtype: str) -> None:
        if self.dtype == "uint8" and dtype != "float64":
            raise ValueError(
                f"result {self.name} uses uint8 maps, whose rounding at .5 a {dtype} {fmt} graph cannot reproduce; "
                "export it as savedmodel (float64), or finetune with -t float64"
            )

    def raw_maps(self, images, dtype: str):
        from keras import ops

        maps = {}
        for prefix, graph in self.graphs:
            inputs = resize_images_tensor(images, graph.size)
            component = graph.maps(inputs, dtype)
            if prefix:  # a partner model: its one map, back at our size
                (partner_map,) = component.values()
                partner_map = ops.image.resize(ops.cast(partner_map, "float32")[..., None], (self.size, self.size),
                                               interpolation="bilinear", antialias=False)[..., 0]
                component = {prefix: ops.cast(partner_map, dtype)}
            maps |= component
        if len(maps) == 1:
            return next(iter(maps.values()))
        total = sum((maps[name] - mean) / std for name, (mean, std) in self.combination.items())
        return total / len(maps)

    def outputs(self, images, dtype: str) -> dict:
        from keras import ops

        maps = self.raw_maps(images, dtype)
        if self.dtype == "uint8":  # as calculate_resmaps: the clipped map scaled onto 0..255, rounded half to even
            low, high = self.value_range
            maps = ops.round((maps - low) * (255.0 / (high - low)))
            maps = ops.clip(ops.round(self.postprocess.tensor(maps, dtype)), 0.0, 255.0)
        else:
            maps = self.postprocess.tensor(maps, dtype)
        threshold = ops.convert_to_tensor(self.threshold, dtype=dtype)
        highest = ops.max(maps, axis=(1, 2))
        outputs = {"anomaly_map": ops.cast(maps, "float32"), "above_threshold": maps > threshold}
        if self.image_score == "max":
            outputs["image_score"] = ops.cast(highest, "float32")
        if self.decision_in_graph:
            outputs["defective"] = highest > threshold
        return outputs

    def describe_outputs(self, size: int) -> dict[str, str]:
        described = {
            "anomaly_map": f"float32 (N, {size}, {size}): the post-processed anomaly map (higher = more anomalous)",
            "above_threshold": f"bool (N, {size}, {size}): anomaly_map > threshold, before the component rule",
        }
        if self.image_score == "max":
            described["image_score"] = "float32 (N,): the map's maximum, the image score"
        if self.decision_in_graph:
            described["defective"] = "bool (N,): the decision (min_area 1, border kept: the map's maximum > threshold)"
        return described

    def decision(self) -> dict:
        return {
            "detector": "segmentation",
            "rule": "components",
            "threshold": self.threshold,
            "min_area": self.min_area,
            "clear_border": self.clear_border,
            "image_score": self.image_score,
            "no_defect_score": self.no_defect_score,
            "map_dtype": self.dtype,
            "decision_in_graph": self.decision_in_graph,
            "text": (
                f"defective = a connected region (8-connectivity) of anomaly_map > threshold of at least {self.min_area} pixels"
                + (" not touching the image border" if self.clear_border else "")
                + "; image score = "
                + ("the map's maximum" if self.image_score == "max" else "the highest threshold at which such a region survives")
            ),
        }


def load_state(kind, folder):
    """The fitted state of a map kind, saved beside the finetuning result."""
    path = Path(folder) / kind.state_file
    if not path.is_file():
        raise ValueError(f"{path} not found: the finetuning result needs its {kind.name} scorer; rerun finetune.py")
    return kind.load_state(path)


def parse_partner(spec: str) -> tuple[str, str | None]:
    """--combine-with PATH[:METHOD] -> (PATH, METHOD, or None for the model's default map)."""
    path, _, method = spec.rpartition(":")
    if path and is_map_spec(method):
        return path, method
    return spec, None


def partner_maker(partner_model, method: str, batch_size: int, states=None, folder=None) -> SegmentationDetector:
    """A map maker for another model's raw maps (no decision of its own)."""
    result = SegmentationResult(model="", method=method, dtype="float64")
    return SegmentationDetector(partner_model, result, folder, batch_size, postprocess=ResmapPostprocessor(0.0), states=states, partners=[])


def fit_partner(spec: str, model: bundle.ModelBundle, config: FinetuneConfig) -> SegmentationDetector:
    """The map maker of a --combine-with model, its fitted kinds fitted on its own training images."""
    path, method = parse_partner(spec)
    partner = bundle.load_bundle(path)
    ours, theirs = (Path(m.info["dataset"]["path"]).resolve() for m in (model, partner))
    if ours != theirs:
        raise ValueError(f"--combine-with {path}: that model was trained on {theirs}, this one on {ours}")
    method = method or default_map_for_loss(partner.info.get("settings", {}).get("loss"))
    partner_spec = parse_map_spec(method, "--combine-with")
    if partner_spec.combined:
        raise ValueError(f"--combine-with {spec}: give a partner model one map (e.g. :padim), not {method}")
    partner_spec.check_model(partner.info["model"].get("output", "reconstruction"), model_was_trained(partner.info))
    states = {}
    if partner_spec.fitted_kinds:
        info, dataset = partner.info["model"], partner.info["dataset"]
        train_files, _ = split_train_validation(scan_dataset(dataset["path"]).train_good, dataset["validation_split"], dataset["seed"])
        batches = lambda: training_batches(train_files, info, config.batch_size, config.seed)  # noqa: E731
        states = fit_states(partner_spec.fitted_kinds, partner.model, batches, config.batch_size, config.seed)
    logger.info("combining with %s (%s maps at %d px)", partner.folder, method, partner.info["model"]["image_size"])
    return partner_maker(partner, method, config.batch_size, states=states)


def load_partner(spec: dict, folder: Path, batch_size: int) -> SegmentationDetector:
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


MAX_FIT_TILES = 4000  # tiles of the training images a fitted map (padim, knn) is fitted on, at most


def training_batches(paths: list, info: dict, batch_size: int, seed: int):
    """Batches of model inputs of the training images `paths`: the images resized, or for a tiled
    model their tiles (at most MAX_FIT_TILES of them, drawn at random: the densities need a sample,
    not every tile of every image)."""
    grid = TileGrid.of(info.get("tile"))
    if grid is None:
        yield from (images for _, images in iter_batches(paths, info["color_mode"], info["image_size"], batch_size))
        return
    tiles = load_tiles(paths, info["color_mode"], grid)
    if len(tiles) > MAX_FIT_TILES:
        tiles = tiles[np.sort(np.random.default_rng(seed).choice(len(tiles), MAX_FIT_TILES, replace=False))]
    yield from (tiles[start:start + batch_size] for start in range(0, len(tiles), batch_size))


def training_files(model: bundle.ModelBundle, data: FinetuneData) -> list:
    """The model's *training* images (train/good minus its validation split).

    Per-pixel statistics and feature densities are fitted on them; the validation images are kept
    out: they set the threshold, and fitting on them would make them look cleaner than unseen images.
    """
    dataset = model.info["dataset"]
    train_files, _ = split_train_validation(data.layout.train_good, dataset["validation_split"], dataset["seed"])
    return train_files


def widened_range(*resmaps) -> list[float]:
    """[min - span/4, max + span] over the given maps (arrays, or lists of maps): room for test maps
    beyond the finetuning ones."""
    lowest = min(float(np.min(m)) for maps in resmaps for m in (maps if isinstance(maps, list) else [maps]))
    highest = max(float(np.max(m)) for maps in resmaps for m in (maps if isinstance(maps, list) else [maps]))
    span = max(highest - lowest, 1e-12)
    return [lowest - 0.25 * span, highest + span]
