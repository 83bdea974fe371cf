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

import numpy as np

from autoencoder import bundle
from autoencoder.errors import UserError
from processing.data import splits
from processing.data.roi import below_outside
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
from processing.maps.kinds import IMAGE_SCORES, MAP_DTYPES, MapSpec, default_map_for_loss, is_map_spec, parse_map_spec
from processing.maps.map_model import MapModel, parse_partner, refuse_tiled
from processing.maps.postprocess import MAX_SIGMA, NORMALIZATIONS

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
    reviewed: dict | None = f.checked(f.mapping, optional=True)  # finetune.py --reviewed: the review files and images used
    # add_good.py: the result whose fitted states were continued with more good images, how many, and in how long.
    grown_from: dict | None = f.checked(f.mapping, optional=True)

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
                raise UserError(f"{path} not found: the finetuning result {folder.name} needs it; rerun finetune.py")

    def check(self, source: str) -> None:
        spec = self.spec
        try:
            spec.check_dtype(self.dtype)
        except ValueError:
            raise UserError(f"{source}: dtype {self.dtype!r}: {spec.name} maps need float64") from None
        if self.normalize != "none" and self.dtype != "float64":
            raise UserError(f"{source}: normalize {self.normalize!r} needs float64 maps, not {self.dtype}")
        components = spec.names + [f"partner_{index}" for index in range(len(self.partners or []))]
        if len(components) > 1 and sorted(self.combination or {}) != sorted(components):
            raise UserError(f"{source}: combination: expected the mean and std of {', '.join(components)}")
        bounds = self.value_range or spec.value_range(self.dtype)
        if bounds is not None and not bounds[0] <= self.best_threshold <= bounds[1]:
            raise UserError(f"{source}: best_threshold {self.best_threshold!r}: outside the range of its {spec.name} maps "
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

    def __init__(self, model, result: SegmentationResult, folder=None, batch_size=16, maps: MapModel | None = None):
        super().__init__(model, result, folder, batch_size)
        self.spec = result.spec
        self.method, self.dtype = result.method, result.dtype
        # The map model the decision was chosen on (fit), or the one saved beside the result.
        self.maps = maps if maps is not None else MapModel.load(
            model, result.method, result.dtype, folder, partners=result.partners or [], combination=result.combination,
            smoothing_sigma=result.smoothing_sigma, normalize=result.normalize, batch_size=batch_size,
        )
        self.min_area, self.threshold = result.best_min_area, result.best_threshold
        largest = self.maps.largest_area
        if largest is not None and self.min_area > largest:
            where = Path(folder) / "finetuning_result.json" if folder is not None else "the finetuning result"
            height, width = self.maps.size
            raise UserError(f"{where}: best_min_area {self.min_area}: larger than the model's {width}x{height} maps (at most {largest})")
        self.clear_border = result.clear_border
        self.image_score = result.image_score

    @classmethod
    def check_config(cls, config: FinetuneConfig) -> FinetuneConfig:
        spec = parse_map_spec(config.method)
        spec.check_dtype(config.dtype)
        for partner in config.combine_with:  # a wrong path answers before any map is fitted
            bundle.resolve_model_path(parse_partner(partner)[0], flag="--combine-with")
        if config.combine_with and config.dtype != "float64":
            raise UserError(f"--combine-with averages standardised maps: use --dtype float64, not {config.dtype}")
        if config.image_score is None:
            config = replace(config, image_score="max" if config.combine_with else spec.image_score)
        if config.clear_border is None:
            config = replace(config, clear_border=False if config.combine_with else spec.clear_border)
        return config

    @classmethod
    def check_model_info(cls, config: FinetuneConfig, info) -> None:
        parse_map_spec(config.method).check_model(info.model.output, info.was_trained)
        if config.normalize != "none":  # before TensorFlow; MapModel.fit checks again
            refuse_tiled(info, "--normalize pixel", "its images and maps have their own sizes")
        if config.combine_with:
            refuse_tiled(info, "--combine-with", "its images and maps have their own sizes")
        folder = Path(config.path) if Path(config.path).is_dir() else Path(config.path).parent
        for partner in config.combine_with:
            partner_folder, _ = bundle.resolve_model_path(parse_partner(partner)[0], flag="--combine-with")
            if partner_folder.resolve() == folder.resolve():
                raise UserError(f"--combine-with {partner}: that is the model being finetuned; combine it with another model's maps "
                                 "(or use -m with several maps, e.g. -m padim+knn)")
            ours, theirs = (Path(i.dataset.path).resolve() for i in (info, bundle.read_info(partner_folder)))
            if ours != theirs:  # before TensorFlow; fit_partner checks again
                raise UserError(f"--combine-with {partner}: that model was trained on {theirs}, this one on {ours}")

    @staticmethod
    def result_name(config_or_result) -> str:
        if isinstance(config_or_result, SegmentationResult):
            method, dtype = config_or_result.method, config_or_result.dtype
            partners = [(spec["model"], spec["method"]) for spec in config_or_result.partners or []]
        else:
            method, dtype = config_or_result.method, config_or_result.dtype
            partners = [parse_partner(spec) for spec in config_or_result.combine_with]
        for folder, partner_method in partners:
            if partner_method is None:  # the partner's own default map, as fit_partner resolves it (and the result records)
                partner_folder, _ = bundle.resolve_model_path(folder, "--combine-with")
                partner_method = default_map_for_loss(bundle.read_info(partner_folder).training.loss)
            method += f"+{Path(folder).name}-{partner_method}"
        return f"{method}_{dtype}"

    @classmethod
    def fit(cls, model: bundle.ModelBundle, config: FinetuneConfig, data: FinetuneData,
            maps: MapModel | None = None) -> SegmentationDetector:
        """Fit the map model on the training images and choose the decision; `maps`: a map model whose
        states are already fitted (add_good.py), of which only the combination is refitted."""
        spec = parse_map_spec(config.method)
        clear_border, normalize = config.clear_border, config.normalize
        started = time.perf_counter()
        if maps is None:
            maker = MapModel.fit(
                model, config.method, config.dtype, training_files=training_files(model, data), validation_files=data.validation_files,
                smoothing_sigma=config.smoothing_sigma, normalize=normalize, combine_with=config.combine_with,
                batch_size=config.batch_size, seed=config.seed,
            )
        else:
            maker = maps
            maker.fit_combination(data.validation_files)
        val_resmaps = maker.maps_of_files(data.validation_files)
        finetune_resmaps = maker.maps_of_files(data.finetune_files)
        allowed = allowed_false_alarms(config.max_false_alarms, len(val_resmaps))
        if config.rule == "original" and config.max_false_alarms and not allowed:
            raise UserError(f"--max-false-alarms {config.max_false_alarms:g}: allows none of the {len(val_resmaps)} validation images "
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
            smoothing_sigma=config.smoothing_sigma,
            clear_border=clear_border,
            normalize=normalize,
            image_score=config.image_score,
            combination={name: list(value) for name, value in maker.combination.items()} or None,
            partners=maker.partner_records() or None,
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
            reviewed=data.reviewed,
        )
        return cls(model, result, batch_size=config.batch_size, maps=maker)

    def save(self, folder) -> None:
        self.maps.save(folder)
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

    def read_input(self, path):
        return self.maps.read_input(path)

    def inputs_of_files(self, paths):
        yield from self.maps.iter_inputs(paths)

    def map_shape(self, path) -> tuple[int, int]:
        return self.maps.map_shape(path)

    def roi_mask(self, path):
        return self.maps.roi_mask(path)

    def score(self, images) -> Scores:
        resmaps = self.maps.maps(images)
        if self.image_score == "max":
            scores = np.array([float(np.max(resmap)) for resmap in resmaps], dtype=np.float64)
        else:
            scores = max_component_level(resmaps, self.min_area, empty_score=self.no_defect_score, clear_border=self.clear_border)
        return Scores(np.asarray(scores, dtype=np.float64), resmaps, {"score": scores})

    def decide(self, scores: Scores) -> Decisions:
        maps = scores.maps if self.maps.roi is None else below_outside(scores.maps, self.maps.roi, self.threshold)
        masks = segment(maps, self.threshold, self.min_area, clear_border=self.clear_border)
        return Decisions(np.array([bool(mask.any()) for mask in masks], dtype=bool), masks)

    @property
    def map_value_range(self) -> tuple[float, float]:
        """The range of the maps: recorded for standardised maps, else the method's own."""
        if self.result.value_range is not None:
            return tuple(self.result.value_range)
        return self.spec.value_range(self.dtype)

    def heatmap_scale(self) -> tuple[float, float]:
        """From the lowest value the maps take to as far above the threshold: the threshold is the
        colormap's middle, so that above and below it read the same on every heat map of the result."""
        low = float(self.map_value_range[0])
        return low, max(2.0 * float(self.threshold) - low, low + 1e-12)

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
        from processing.detectors.segmentation_export import SegmentationExportPlan

        return SegmentationExportPlan(self)


def training_files(model: bundle.ModelBundle, data: FinetuneData) -> list:
    """The model's *training* images (train/good minus its validation split, plus the good images
    add_good.py added).

    Per-pixel statistics and feature densities are fitted on them; the validation images are kept
    out: they set the threshold, and fitting on them would make them look cleaner than unseen images.
    """
    return splits.training_files(data.layout, model.info)


def widened_range(*resmaps) -> list[float]:
    """[min - span/4, max + span] over the given maps (arrays, or lists of maps): room for test maps
    beyond the finetuning ones."""
    lowest = min(float(np.min(m)) for maps in resmaps for m in (maps if isinstance(maps, list) else [maps]))
    highest = max(float(np.max(m)) for maps in resmaps for m in (maps if isinstance(maps, list) else [maps]))
    span = max(highest - lowest, 1e-12)
    return [lowest - 0.25 * span, highest + span]
