"""Classify and segment the held-out test images with a finetuned model (what test.py runs)."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from autoencoder import bundle
from processing.data.images import check_masks, load_masks, read_image, scan_dataset
from processing.workflow.finetuning import RESULT_FILE, check_method_dtype, finetuning_dir, result_value_range
from processing.maps.inference import iter_resmaps
from processing.maps.postprocess import ResmapPostprocessor
from processing.evaluation.metrics import (
    PixelMetricsAccumulator,
    classification_metrics,
    image_auroc,
    mask_iou,
    metrics_by_defect_type,
)
from processing.decision.segmentation import segment, validate_clear_border
from processing.decision.thresholds import max_component_level

logger = logging.getLogger(__name__)

TEST_RESULT_FILE = "test_result.json"
PREDICTED_COLOR = (0, 0, 255)  # BGR red
TRUTH_COLOR = (0, 200, 0)  # BGR green


@dataclass
class TestConfig:
    path: str
    save_segmentation: bool = False
    include_finetune: bool = False
    method: str | None = None  # None: every finetuning result of the model
    dtype: str | None = None
    batch_size: int = 16
    results_root: str = "results"


def finetuning_results(model: bundle.ModelBundle, config: TestConfig) -> list[dict]:
    """The finetuning results of `model` that `config` selects; errors when there are none."""
    root = model.results_dir(config.results_root) / "finetuning"
    pattern = f"{config.method or '*'}_{config.dtype or '*'}"
    files = sorted(root.glob(f"{pattern}/{RESULT_FILE}"))
    if not files:
        wanted = "" if pattern == "*_*" else f" for {pattern}"
        raise ValueError(
            f"no finetuning result{wanted} in {root}: run finetune.py -p {model.folder} first"
        )
    return [json.loads(path.read_text()) for path in files]


def test(config: TestConfig) -> list[Path]:
    """Score the test images for every selected finetuning result; return the output folders."""
    if config.method is not None or config.dtype is not None:
        check_method_dtype(config.method or "ssim", config.dtype or "float64")
    model = bundle.load_bundle(config.path)
    layout = scan_dataset(model.info["dataset"]["path"], require_test=True)
    check_masks(layout)
    return [evaluator(result)(model, layout, result, config) for result in finetuning_results(model, config)]


def evaluator(finetuning: dict):
    """The test function for a finetuning result's `detector` ("segmentation" when absent)."""
    detector = finetuning.get("detector", "segmentation")
    if detector == "kde":
        from processing.decision.density import evaluate_kde

        return evaluate_kde
    if detector != "segmentation":
        raise ValueError(f"finetuning result for {finetuning.get('model')}: unknown detector {detector!r}")
    return evaluate


def evaluate(model: bundle.ModelBundle, layout, finetuning: dict, config: TestConfig) -> Path:
    method, dtype = finetuning["method"], finetuning["dtype"]
    min_area, threshold = int(finetuning["best_min_area"]), float(finetuning["best_threshold"])
    clear_border = finetuning_clear_border(finetuning)
    # The post-processing the threshold was found with (smoothing, per-pixel normalisation).
    postprocess = ResmapPostprocessor.from_finetuning(finetuning_dir(model, method, dtype, config.results_root), finetuning)
    color_mode = model.info["model"]["color_mode"]
    size = model.info["model"]["image_size"]

    tuned_on = set(finetuning["finetuning_files"])
    pairs = [
        (path, name)
        for path, name in layout.test_files()
        if config.include_finetune or str(path.relative_to(layout.root)) not in tuned_on
    ]
    classes = {path: name for path, name in pairs}
    files = [path for path, _ in pairs]
    logger.info(
        "%s_%s: testing %d images (min_area=%d, threshold=%.4g%s)%s",
        method, dtype, len(files), min_area, threshold, "" if clear_border else ", border components kept",
        " including the finetuning subset" if config.include_finetune else "",
    )

    value_range = result_value_range(finetuning)
    no_defect_score = float(value_range[0]) - 1.0  # below every real score: no component of min_area at any threshold
    accumulators = {"all": PixelMetricsAccumulator(value_range)}
    accumulators |= {name: PixelMetricsAccumulator(value_range) for name in layout.defect_types}
    has_masks = any(layout.mask_path(path) is not None for path in files if classes[path] != "good")

    rows, ious = [], []
    out_dir = model.results_dir(config.results_root) / "test" / f"{method}_{dtype}"
    started = time.perf_counter()
    with bundle.staging_folder(out_dir, replace=True) as staging:
        batches = iter_resmaps(model.model, files, color_mode, size, method, dtype, config.batch_size)
        with tqdm(total=len(files), desc=f"test {method}_{dtype}", unit="img") as progress:
            for batch in batches:
                resmaps = postprocess(batch.resmaps)
                predicted = segment(resmaps, threshold, min_area, clear_border=clear_border)
                scores = max_component_level(resmaps, min_area, empty_score=no_defect_score, clear_border=clear_border)
                names = [classes[path] for path in batch.paths]
                truth = truth_masks(layout, batch.paths, names, size)
                if has_masks:
                    update_pixel_metrics(accumulators, resmaps, truth, names)
                for path, name, mask_pred, mask_true, score in zip(batch.paths, names, predicted, truth, scores):
                    rows.append({
                        "file": str(path.relative_to(layout.root)),
                        "defect_type": name,
                        "truth": int(name != "good"),
                        "prediction": int(mask_pred.any()),
                        "score": float(score),
                    })
                    if name != "good" and layout.mask_path(path) is not None:
                        ious.append(float(mask_iou(mask_pred[None], mask_true[None])[0]))
                    if config.save_segmentation:
                        write_segmentation(staging / "segmentation" / name, path, mask_pred, layout.mask_path(path), color_mode)
                progress.update(len(batch.paths))
        seconds = time.perf_counter() - started

        result = summarise(rows, ious, accumulators if has_masks else None, finetuning, config, seconds)
        if model.info.get("adversarial"):  # image scores of the adversarial autoencoder (latent likelihood + MSE)
            from processing.workflow.adversarial_training import adversarial_test_metrics

            result |= adversarial_test_metrics(model, files, [row["truth"] for row in rows], config.batch_size)
        write_classification_csv(staging / "classification.csv", rows)
        bundle.write_json(staging / TEST_RESULT_FILE, result)
    log_summary(method, dtype, result)
    return out_dir


def finetuning_clear_border(finetuning: dict) -> bool:
    """Whether the finetuning result dropped border components (True for results older than the flag)."""
    return validate_clear_border(finetuning.get("clear_border", True), f"finetuning result {finetuning.get('model')}: clear_border")


def truth_masks(layout, paths, names, size) -> np.ndarray:
    """Ground-truth masks at model size; all-False for good images and images without a mask."""
    masks = np.zeros((len(paths), size, size), dtype=bool)
    with_mask = [(i, layout.mask_path(p)) for i, (p, n) in enumerate(zip(paths, names)) if n != "good"]
    with_mask = [(i, m) for i, m in with_mask if m is not None]
    if with_mask:
        loaded = load_masks([m for _, m in with_mask], size)
        for (i, _), mask in zip(with_mask, loaded):
            masks[i] = mask
    return masks


def update_pixel_metrics(accumulators, resmaps, truth, names) -> None:
    scores = resmaps.astype(np.float64)
    accumulators["all"].update(truth, scores)
    names = np.asarray(names)
    good = names == "good"
    for name, accumulator in accumulators.items():
        if name == "all":
            continue
        keep = good | (names == name)
        if keep.any():
            accumulator.update(truth[keep], scores[keep])


def summarise(rows, ious, accumulators, finetuning, config, seconds) -> dict:
    truth = np.array([row["truth"] for row in rows], dtype=bool)
    predicted = np.array([row["prediction"] for row in rows], dtype=bool)
    scores = np.array([row["score"] for row in rows], dtype=float)
    types = np.array([row["defect_type"] for row in rows])
    result = {
        "method": finetuning["method"],
        "dtype": finetuning["dtype"],
        "min_area": int(finetuning["best_min_area"]),
        "threshold": float(finetuning["best_threshold"]),
        "smoothing_sigma": float(finetuning.get("smoothing_sigma", 0.0)),
        "clear_border": finetuning_clear_border(finetuning),
        "normalize": finetuning.get("normalize", "none"),
        "n_images": len(rows),
        "n_defective": int(truth.sum()),
        "include_finetune": config.include_finetune,
        **classification_metrics(truth, predicted),
        "image_auroc": image_auroc(truth, scores),
    }
    if accumulators is not None:
        overall = accumulators["all"].result()
        result["pixel_auroc"] = overall["pixel_auroc"]
        result["aupro"] = overall["aupro"]
        result["mean_iou"] = float(np.nanmean(ious)) if ious else float("nan")
    per_type = metrics_by_defect_type(types, truth, scores, predicted)
    if accumulators is not None:
        for name, metrics in per_type.items():
            if name in accumulators:
                pixel = accumulators[name].result()
                metrics["pixel_auroc"] = pixel["pixel_auroc"]
                metrics["aupro"] = pixel["aupro"]
    result["per_defect_type"] = per_type
    result["seconds"] = round(seconds, 2)
    result["ms_per_image"] = round(1000 * seconds / max(len(rows), 1), 2)
    result["settings"] = vars(config) | {"command": bundle.command_line()}
    return result


def write_classification_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "defect_type", "truth", "prediction", "score"])
        writer.writeheader()
        writer.writerows(rows)


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
        truth = (cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        contours, _ = cv2.findContours(truth, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(overlay, contours, -1, TRUTH_COLOR, thickness)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, PREDICTED_COLOR, thickness)
    cv2.imwrite(str(out_dir / f"{image_path.stem}_overlay.png"), overlay)


def log_summary(method: str, dtype: str, result: dict) -> None:
    keys = ["image_auroc", "pixel_auroc", "aupro", "mean_iou", "balanced_accuracy", "tpr", "tnr"]
    parts = [f"{key}={result[key]:.3f}" for key in keys if key in result]
    logger.info("%s_%s: %s (%.1f ms/image)", method, dtype, " ".join(parts), result["ms_per_image"])
