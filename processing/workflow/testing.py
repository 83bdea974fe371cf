"""test.py: classify and segment the held-out test images with every finetuning result of a model,
through the detector interface (processing/detectors/).

``test_result.json`` records the finetuning result it was scored with (its folder and the SHA-256
of its ``finetuning_result.json``). An existing ``test/<name>/`` stops the run unless
``config.overwrite``; then it is moved aside to ``<name>.replaced-<timestamp>`` (never deleted)
once the new result is complete.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np

from autoencoder import bundle, folders
from autoencoder.errors import UserError
from autoencoder.progress import progress_bar
from processing.data.images import check_masks, load_mask_at, read_image, read_mask
from processing.data.splits import model_dataset
from processing.data.tiles import batch_of
from processing.detectors.base import Detector
from processing.evaluation.metrics import (
    NOT_AVAILABLE_KEY,
    PixelMetricsAccumulator,
    absent_note,
    absent_to_none,
    best_balanced_accuracy,
    classification_metrics,
    format_metrics,
    image_auroc,
    is_absent,
    mask_iou,
    metrics_by_defect_type,
)
from processing.evaluation.overlays import draw_heatmap, write_png
from processing.workflow.options import TestConfig
from processing.workflow.results import ResultsTree, finetuning_record

logger = logging.getLogger(__name__)

TEST_RESULT_FILE = "test_result.json"
PREDICTED_COLOR = (0, 0, 255)  # BGR red
TRUTH_COLOR = (0, 200, 0)  # BGR green
PIXEL_KEYS = ("pixel_auroc", "aupro", "mean_iou")  # need ground-truth masks


def selected_results(info: dict, model_folder: Path, config: TestConfig) -> list:
    """(folder, detector class, result) of the finetuning results `config` selects; errors when there are none."""
    return ResultsTree.of(info, model_folder, config.results_root).select(config.method, config.dtype)


def check_test_dirs(info: dict, model_folder: Path, selected: list, config: TestConfig) -> None:
    """Stop, naming the folder and --overwrite, when a test result of a selected finetuning result exists."""
    if config.overwrite:
        return
    tree = ResultsTree.of(info, model_folder, config.results_root)
    for folder, _, _ in selected:
        test_dir = tree.test_folder(folder.name)
        if not test_dir.exists():
            continue
        try:
            recorded = json.loads((test_dir / TEST_RESULT_FILE).read_text()).get("finetuning_result", {}).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded is None:
            state = "its finetuning result unrecorded"
        elif recorded == finetuning_record(folder)["sha256"]:
            state = "scored with the current finetuning result"
        else:
            state = "scored with an earlier finetuning result"
        raise folders.FolderExistsError(
            f"{test_dir} already exists ({state}): pass --overwrite to move it aside "
            f"(to {test_dir.name}{folders.REPLACED}<time>) and score again"
        )


def load_detectors(model: bundle.ModelBundle, config: TestConfig) -> list[Detector]:
    """The detector of every finetuning result `config` selects."""
    return [
        detector.load(model, folder, result, config.batch_size)
        for folder, detector, result in selected_results(model.info, model.folder, config)
    ]


def test(config: TestConfig, opened: bundle.ModelFolder | None = None) -> list[Path]:
    """Score the test images for every selected finetuning result; return the output folders.
    `opened`: the model folder when the caller opened it (test.py: read and hashed once per run)."""
    config.validate()
    opened = opened or bundle.open_model_folder(config.path)
    model_folder, info = opened.folder, opened.info
    check_test_dirs(info, model_folder, selected_results(info, model_folder, config), config)
    layout = model_dataset(info, config.data_dir, require_defects=False)  # only good test images: the false alarms
    if not layout.test_files():
        raise UserError(f"{layout.root / 'test'} holds no test image: expected {layout.root}/test/<good or defect type>/ with images")
    check_masks(layout)
    model = bundle.load_bundle(opened)
    return [evaluate(detector, layout, config) for detector in load_detectors(model, config)]


def evaluate(detector: Detector, layout, config: TestConfig) -> Path:
    """Classify (and segment) the test images outside the detector's finetuning subset; write
    test_result.json, classification.csv and, with config.save_segmentation, masks and overlays."""
    model = detector.model
    name = detector.result_name(detector.result)
    color_mode = model.info.model.color_mode
    tuned_on = detector.tuned_on
    pairs = [
        (path, kind) for path, kind in layout.test_files() if config.include_finetune or str(path.relative_to(layout.root)) not in tuned_on
    ]
    classes = {path: kind for path, kind in pairs}
    files = [path for path, _ in pairs]
    settings = detector.test_settings()
    logger.info(
        "%s: testing %d images (%s)%s",
        name,
        len(files),
        ", ".join(f"{k}={v}" for k, v in settings.items() if k != "detector"),
        " including the finetuning subset" if config.include_finetune else "",
    )
    value_range = detector.map_value_range
    accumulators = None
    has_masks = any(layout.mask_path(path) is not None for path in files if classes[path] != "good")
    if value_range is not None and has_masks:
        accumulators = {"all": PixelMetricsAccumulator(value_range)}
        accumulators |= {kind: PixelMetricsAccumulator(value_range) for kind in layout.defect_types}
    if (config.save_segmentation or config.heatmaps) and value_range is None:
        logger.warning("%s: the %s detector classifies whole images; no segmentation masks or heat maps are written", name, detector.name)
    heatmap_scale = detector.heatmap_scale() if config.heatmaps else None
    heatmap_threshold = detector.decision_summary()["threshold"]

    rows, ious, columns = [], [], {}
    out_dir = ResultsTree.of_model(model, config.results_root).test_folder(name)
    started = time.perf_counter()
    hint = f"pass --overwrite to move it aside to {name}{folders.REPLACED}<time>"
    with bundle.staging_folder(out_dir, replace=config.overwrite, exists_hint=hint) as staging:
        with progress_bar(total=len(files), desc=f"test {name}", unit="img") as progress:
            for batch_paths, images in detector.inputs_of_files(files):
                scores = detector.score(images)
                decisions = detector.decide(scores)
                kinds = [classes[path] for path in batch_paths]
                truth = truth_masks(layout, batch_paths, kinds, detector.map_shape)  # at the maps' size
                valid = regions_of(detector, batch_paths)  # the region of interest: what counts (None: everything)
                if valid is not None:
                    truth = truth & valid if not isinstance(truth, list) else [t & v for t, v in zip(truth, valid)]
                if accumulators is not None and scores.maps is not None:
                    update_pixel_metrics(accumulators, scores.maps, truth, kinds, valid)
                batch_columns = scores.columns | decisions.columns
                for key, values in batch_columns.items():
                    columns.setdefault(key, []).extend(np.asarray(values).tolist())
                for i, (path, kind) in enumerate(zip(batch_paths, kinds)):
                    rows.append(
                        {
                            "file": str(path.relative_to(layout.root)),
                            "defect_type": kind,
                            "truth": int(kind != "good"),
                            "prediction": int(decisions.defective[i]),
                            "score": float(scores.image_scores[i]),
                        }
                    )
                    if decisions.masks is None:
                        continue
                    if kind != "good" and layout.mask_path(path) is not None:
                        ious.append(float(mask_iou(decisions.masks[i][None], truth[i][None])[0]))
                    if config.save_segmentation:
                        write_segmentation(staging / "segmentation" / kind, path, decisions.masks[i], layout.mask_path(path), color_mode)
                    if heatmap_scale is not None and scores.maps is not None:
                        heatmap = draw_heatmap(read_image(path, "rgb"), scores.maps[i], heatmap_threshold, heatmap_scale)
                        (staging / "heatmaps" / kind).mkdir(parents=True, exist_ok=True)
                        write_png(staging / "heatmaps" / kind / f"{path.stem}_heatmap.png", heatmap)
                progress.update(len(batch_paths))
        seconds = time.perf_counter() - started

        columns = {key: np.asarray(values) for key, values in columns.items()}
        result = summarise(detector, rows, columns, ious, accumulators, config, seconds)
        result["finetuning_result"] = finetuning_record(detector.folder)
        roi = model.info.model.roi
        if roi is not None:  # the pixel metrics and IoUs count the region of interest only
            result["region_of_interest"] = {"file": str(model.folder / roi.file), "coverage": roi.coverage,
                                            "metrics": "pixel metrics and IoU inside the region only"}
        if getattr(detector.result, "expected", None):
            result["expected"] = detector.result.expected  # what finetune.py expected, beside what was measured here
        result |= detector.model_test_metrics(files, [row["truth"] for row in rows], config.batch_size)
        result = mark_absent(result, masks=accumulators is not None)
        write_classification_csv(staging / "classification.csv", rows, columns)
        bundle.write_json(staging / TEST_RESULT_FILE, result)
    logger.info("%s: %s (%.1f ms/image)", name, detector.summary_line(result), result["ms_per_image"])
    log_expectation(name, detector.result, result)
    for line in absent_note(result[NOT_AVAILABLE_KEY]):
        logger.info("%s: %s", name, line)
    return out_dir


def log_expectation(name: str, finetuning, result: dict) -> None:
    """Log what finetune.py expected of the decision beside what these test images measured, and its warnings."""
    expectation = finetuning.expectation_line()
    if expectation:
        measured = format_metrics(result, ["tpr", "tnr"])
        logger.info("%s: finetune.py %s; measured here %s", name, expectation, measured)
    for warning in finetuning.decision_warnings:
        logger.warning("%s: the decision: %s", name, warning)


def truth_masks(layout, paths, names, shape_of):
    """Ground-truth masks, each at ``shape_of(path)`` (the size of its map); all-False for good
    images and images without a mask. One (N, H, W) array when they share a size, else a list."""
    masks = []
    for path, name in zip(paths, names):
        mask_path = layout.mask_path(path) if name != "good" else None
        shape = shape_of(path)
        masks.append(load_mask_at(mask_path, shape) if mask_path is not None else np.zeros(shape, dtype=bool))
    return batch_of(masks) if masks else np.zeros((0, 0, 0), dtype=bool)


def regions_of(detector: Detector, paths):
    """The region of interest at each map's shape, like the truth masks (None without one)."""
    regions = [detector.roi_mask(path) for path in paths]
    return None if not regions or regions[0] is None else batch_of(regions)


def update_pixel_metrics(accumulators, resmaps, truth, names, valid=None) -> None:
    """Add a batch to the pixel metrics (`valid`: the region of interest per image, or None)."""
    if isinstance(resmaps, list):  # whole images of a tiled model, each at its own size
        for index, (resmap, mask, name) in enumerate(zip(resmaps, truth, names)):
            update_pixel_metrics(accumulators, resmap[None], mask[None], [name], None if valid is None else valid[index][None])
        return
    scores = resmaps.astype(np.float64)
    accumulators["all"].update(truth, scores, valid)
    names = np.asarray(names)
    good = names == "good"
    for name, accumulator in accumulators.items():
        if name == "all":
            continue
        keep = good | (names == name)
        if keep.any():
            accumulator.update(truth[keep], scores[keep], None if valid is None else valid[keep])


def summarise(detector: Detector, rows, columns, ious, accumulators, config, seconds) -> dict:
    truth = np.array([row["truth"] for row in rows], dtype=bool)
    predicted = np.array([row["prediction"] for row in rows], dtype=bool)
    scores = np.array([row["score"] for row in rows], dtype=float)
    types = np.array([row["defect_type"] for row in rows])
    extra, extra_per_type = detector.extra_metrics(truth, types, columns)
    result = {
        **detector.test_settings(),
        "n_images": len(rows),
        "n_defective": int(truth.sum()),
        "include_finetune": config.include_finetune,
        **classification_metrics(truth, predicted),
        detector.score_key: image_auroc(truth, scores),
        **decision_efficiency(truth, predicted, scores),
    }
    makes_maps = detector.map_value_range is not None
    if accumulators is not None:
        overall = accumulators["all"].result()
        result["pixel_auroc"] = overall["pixel_auroc"]
        result["aupro"] = overall["aupro"]
        result["mean_iou"] = float(np.nanmean(ious)) if ious else math.nan
    elif makes_maps:  # maps but no ground-truth masks: the pixel metrics are absent, not missing
        result |= dict.fromkeys(PIXEL_KEYS, math.nan)
    result |= extra
    per_type = metrics_by_defect_type(types, truth, scores, predicted)
    for name, metrics in per_type.items():
        metrics[detector.score_key] = metrics.pop("image_auroc")
        of_type = (types == name) | ~truth
        metrics |= decision_efficiency(truth[of_type], predicted[of_type], scores[of_type])
        metrics |= extra_per_type.get(name, {})
        if accumulators is not None and name in accumulators:
            pixel = accumulators[name].result()
            metrics["pixel_auroc"] = pixel["pixel_auroc"]
            metrics["aupro"] = pixel["aupro"]
        elif makes_maps:
            metrics |= {"pixel_auroc": math.nan, "aupro": math.nan}
    result["per_defect_type"] = per_type
    result["seconds"] = round(seconds, 2)
    result["ms_per_image"] = round(1000 * seconds / max(len(rows), 1), 2)
    result["settings"] = vars(config) | {"command": bundle.command_line()}
    return result


def decision_efficiency(truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict:
    """The best balanced accuracy one threshold on the image scores reaches on these images (in
    hindsight), and the share of it the decision's verdicts keep (``balanced_accuracy_ratio``)."""
    best = best_balanced_accuracy(truth, scores)
    reached = classification_metrics(truth, predicted)["balanced_accuracy"]
    ratio = reached / best if best > 0 and not math.isnan(reached) else math.nan
    return {"best_threshold_balanced_accuracy": best, "balanced_accuracy_ratio": ratio}


def mark_absent(result: dict, masks: bool) -> dict:
    """The result with every metric that could not be computed (NaN) as None (``null`` in JSON), and
    ``not_available``: {metric: why} for the top-level ones, which test.py logs as one line per reason."""
    n_images, n_defective = result.get("n_images", 0), result.get("n_defective", 0)
    if n_defective == 0:
        one_class = "no defective test images"
    elif n_defective == n_images:
        one_class = "no good test images"
    else:
        one_class = None
    reasons = {}
    for key, value in result.items():
        if key in ("settings", "per_defect_type") or not isinstance(value, float) or not is_absent(value):
            continue
        if key in PIXEL_KEYS and not masks:
            reasons[key] = "no ground-truth masks"
        else:
            reasons[key] = one_class or "undefined on these test images"
    result = absent_to_none(result)
    result[NOT_AVAILABLE_KEY] = reasons
    return result


def write_classification_csv(path: Path, rows: list[dict], columns: dict[str, np.ndarray]) -> None:
    """file, defect_type, truth, prediction, then the detector's per-image columns."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "defect_type", "truth", "prediction", *columns])
        for index, row in enumerate(rows):
            values = [_csv_value(values[index]) for values in columns.values()]
            writer.writerow([row["file"], row["defect_type"], row["truth"], row["prediction"], *values])


def _csv_value(value):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return repr(float(value))


def write_segmentation(out_dir: Path, image_path: Path, mask_pred: np.ndarray, mask_path, color_mode: str) -> None:
    """The predicted mask at the image's original size and an overlay of prediction and truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image = read_image(image_path, "rgb")
    height, width = image.shape[:2]
    mask = cv2.resize(mask_pred.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(out_dir / f"{image_path.stem}_mask.png"), mask * 255)
    overlay = cv2.cvtColor((image * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(height, width) / 256))
    if mask_path is not None:
        truth = read_mask(mask_path).astype(np.uint8)  # decoded as every reader does (EXIF orientation)
        contours, _ = cv2.findContours(truth, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(overlay, contours, -1, TRUTH_COLOR, thickness)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, PREDICTED_COLOR, thickness)
    cv2.imwrite(str(out_dir / f"{image_path.stem}_overlay.png"), overlay)
