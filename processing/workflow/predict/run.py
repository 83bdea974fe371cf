"""predict.py: score new, unlabeled images with a finetuned model and write what it decided.

The images (folders recursively, files, glob patterns: processing/data/inputs.py) are read and
scored in batches by the detector of one finetuning result (``detector.score`` then
``detector.decide``: threshold, min_area, smoothing, border rule and normalisation all happen
there, exactly as in test.py). What goes into the output folder is described in settings.py.

Memory does not grow with the number of images: one batch of images is in memory at a time (the
next one is read while the model runs), rows go to the CSV as soon as a batch is done, and the
report reads the CSV back keeping only the image scores (8 bytes an image) and the top of the
gallery. A file that cannot be read becomes a row with its error and the run goes on.

Nothing here imports TensorFlow at module level: predict.py checks the inputs and the output folder
(:func:`check_inputs_and_output`) before the model is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from autoencoder.progress import progress_bar
from processing.data.inputs import collect_images
from processing.evaluation.overlays import draw_overlay, write_png
from processing.workflow.predict.csv_io import CSV_COLUMNS, CsvAppender, read_done
from processing.workflow.predict.loading import iter_loaded
from processing.workflow.predict.report import build_report
from processing.workflow.predict.settings import (
    MASKS_DIR,
    OVERLAYS_DIR,
    PREDICTIONS_FILE,
    SETTINGS_FILE,
    PredictConfig,
    PredictSummary,
    check_writable,
    clear_outputs,
    output_stem,
    parse_shard,
    read_settings,
)
from processing.workflow.predict.shards import shard_files
from processing.workflow.predict.verdict import csv_fields, verdicts_of

logger = logging.getLogger(__name__)

SCORING_THREADS = 2  # batches scored at once (see predict)


def check_inputs_and_output(config: PredictConfig) -> tuple[list[Path], dict | None]:
    """The image files to predict and the settings of earlier predictions in the output folder.

    Runs before the model is loaded: bad inputs and an output folder that cannot be used fail at
    once, with one line, and nothing is written.
    """
    config.validate()
    shard = parse_shard(config.shard) if config.shard is not None else None
    files = collect_images(config.inputs)
    if shard is not None:
        files = shard_files(files, *shard)
        logger.info("--shard %d/%d: %d images", shard[0], shard[1], len(files))
    out_dir = Path(config.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: a file, not a folder")
    check_writable(out_dir)
    # Never predict predict.py's own outputs (an output folder inside an input folder).
    inside = os.path.realpath(out_dir) + os.sep
    kept = [path for path in files if not os.path.realpath(path).startswith(inside)]
    if not kept:
        raise ValueError(f"-i {' '.join(config.inputs)}: the only images found are inside the output folder {out_dir}")
    files = kept
    previous = read_settings(out_dir) if out_dir.is_dir() else None
    has_csv = (out_dir / PREDICTIONS_FILE).exists()
    if (previous is not None or has_csv) and not (config.resume or config.overwrite):
        holder = f" of model {previous.get('model_folder')} (result {previous.get('result')})" if previous else ""
        raise ValueError(f"-o {out_dir} already holds predictions{holder}: pass --resume to continue them or --overwrite to replace them")
    if config.resume and has_csv and previous is None:
        raise ValueError(f"-o {out_dir}: {PREDICTIONS_FILE} without {SETTINGS_FILE}; cannot tell which model made it: pass --overwrite")
    return files, previous


def load_finetuned(path: str, result: str | None = None, results_root: str = "results", batch_size: int = 16):
    """(model bundle, result name, result folder, detector) of a model folder and its finetuning
    result `result` (None: the model's only one), as predict.py and serve.py choose and load them."""
    from autoencoder import bundle
    from processing.workflow.results import ResultsTree
    from processing.workflow.results import load_detector as load_result_detector

    model = bundle.load_bundle(path)
    name, folder = ResultsTree.of_model(model, results_root).choose(result)
    return model, name, folder, load_result_detector(model, folder, batch_size)


def load_detector(config: PredictConfig):
    """(model bundle, result name, result folder, detector) of predict.py's flags."""
    return load_finetuned(config.path, config.result, config.results_root, config.batch_size)


class Predictor:
    """Scores batches of files with a loaded detector and turns them into CSV rows (and files)."""

    def __init__(self, detector, out_dir: Path, masks: bool = False, overlays: bool = False):
        self.detector = detector
        info = detector.model.info["model"]
        self.color_mode, self.size = info["color_mode"], info["image_size"]
        self.out_dir, self.masks, self.overlays = out_dir, masks, overlays
        decision = detector.decision_summary()
        self.threshold, self.min_area = decision["threshold"], decision["min_area"]

    def rows(self, paths: list[Path], loaded: list) -> list[dict]:
        rows = [self.empty_row(path) for path in paths]
        good = [index for index, item in enumerate(loaded) if not isinstance(item, str)]
        for index, item in enumerate(loaded):
            if isinstance(item, str):
                rows[index]["error"] = item
        if not good:
            return rows
        images = np.stack([loaded[index][0] for index in good])
        scores = self.detector.score(images)
        decisions = self.detector.decide(scores)
        verdicts = verdicts_of(scores, decisions, [loaded[index][1].shape[:2] for index in good])
        for index, verdict in zip(good, verdicts):
            original = loaded[index][1]
            row = rows[index]
            row.update(csv_fields(verdict))
            mask = verdict.mask
            stem = output_stem(paths[index])
            if self.masks and mask is not None:
                target = self.out_dir / MASKS_DIR / f"{stem}_mask.png"
                write_png(target, mask.astype(np.uint8) * 255)
                row["mask"] = target.relative_to(self.out_dir).as_posix()
            if self.overlays:
                target = self.out_dir / OVERLAYS_DIR / f"{stem}_overlay.png"
                write_png(target, draw_overlay(original, mask))
                row["overlay"] = target.relative_to(self.out_dir).as_posix()
        return rows

    def empty_row(self, path: Path) -> dict:
        row = dict.fromkeys(CSV_COLUMNS, "")
        row["path"] = str(path)
        row["threshold"] = "" if self.threshold is None else repr(float(self.threshold))
        row["min_area"] = "" if self.min_area is None else int(self.min_area)
        return row


def settings_of(config: PredictConfig, model, name: str, folder: Path, detector, n_inputs: int) -> dict:
    from autoencoder import bundle

    info = model.info
    return {
        "model_folder": str(model.folder.resolve()),
        "model_file": model.model_file.name,
        "architecture": info["model"]["architecture"],
        "loss": info["training"]["loss"],
        "image_size": info["model"]["image_size"],
        "color_mode": info["model"]["color_mode"],
        "result": name,
        "result_folder": str(folder.resolve()),
        "decision": detector.decision_summary(),
        "inputs": list(config.inputs),
        "n_inputs": n_inputs,
        "flags": {key: value for key, value in asdict(config).items() if key not in ("inputs",)},
        "created": bundle.timestamp(),
        "command": bundle.command_line(),
        "versions": bundle.environment_versions(),
        "runs": [],
    }


def predict(config: PredictConfig) -> PredictSummary:
    """Score every input image; write predictions.csv, masks/overlays, report.html, predict_settings.json."""
    from autoencoder import bundle

    files, previous = check_inputs_and_output(config)
    model, name, folder, detector = load_detector(config)
    out_dir = Path(config.output)
    if previous is not None and config.resume:
        if previous.get("model_folder") != str(model.folder.resolve()) or previous.get("result") != name:
            raise ValueError(
                f"-o {out_dir} holds predictions of model {previous.get('model_folder')} (result {previous.get('result')}), "
                f"not of {model.folder.resolve()} ({name}): use another -o, or --overwrite"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.overwrite:
        clear_outputs(out_dir)
    settings = previous if (config.resume and previous is not None) else settings_of(config, model, name, folder, detector, len(files))
    csv_path = out_dir / PREDICTIONS_FILE
    done = read_done(csv_path) if config.resume else set()
    todo = [path for path in files if str(path) not in done]
    skipped = len(files) - len(todo)
    if skipped:
        logger.info("%d of %d images already in %s: skipped (--resume)", skipped, len(files), csv_path)
    run = {
        "started": bundle.timestamp(), "command": bundle.command_line(), "n_inputs": len(files), "n_skipped": skipped, "status": "running",
    }
    settings["runs"] = [*settings.get("runs", []), run]
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    for sub, wanted in ((MASKS_DIR, config.masks and detector.map_value_range is not None), (OVERLAYS_DIR, config.overlays)):
        if wanted:
            (out_dir / sub).mkdir(exist_ok=True)
    if config.masks and detector.map_value_range is None:
        logger.warning("the %s detector classifies whole images: no masks are written", detector.name)

    predictor = Predictor(detector, out_dir, config.masks, config.overlays)
    logger.info(
        "predicting %d images with %s (%s)",
        len(todo),
        name,
        ", ".join(f"{k}={v}" for k, v in detector.decision_summary().items() if k != "detector" and v is not None),
    )
    started = time.perf_counter()
    new_csv = not csv_path.exists() or csv_path.stat().st_size == 0
    n_new = n_failed_new = 0
    with open(csv_path, "a", newline="", encoding="utf-8") as handle:
        appender = CsvAppender(handle, header=new_csv)
        with (
            progress_bar(total=len(todo), desc="predict", unit="img") as progress,
            ThreadPoolExecutor(max_workers=SCORING_THREADS) as scoring,
        ):
            # Two batches are scored at once: one in the model (TensorFlow releases the GIL), the
            # other in the decision's numpy/Python code; rows are written in input order.
            pending: deque = deque()

            def write(rows: list[dict]) -> None:
                nonlocal n_new, n_failed_new
                appender.append(rows)
                n_new += len(rows)
                n_failed_new += sum(1 for row in rows if row["error"])
                progress.update(len(rows))

            for chunk, loaded in iter_loaded(todo, predictor.color_mode, predictor.size, config.batch_size, config.workers):
                pending.append(scoring.submit(predictor.rows, chunk, loaded))
                if len(pending) >= SCORING_THREADS:
                    write(pending.popleft().result())
            while pending:
                write(pending.popleft().result())
        appender.sync()
    seconds = time.perf_counter() - started

    report, stats = build_report(out_dir, settings, detector, config.gallery, config.workers)
    run |= {
        "status": "complete",
        "n_new": n_new,
        "n_failed_new": n_failed_new,
        "seconds": round(seconds, 2),
        "images_per_second": round(n_new / seconds, 2) if seconds > 0 else None,
    }
    settings |= {"counts": stats}
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    summary = PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], n_new, skipped, seconds, report, settings)
    logger.info("%s", summary.line())
    if config.strict and summary.n_failed:
        raise ValueError(f"{summary.n_failed} of {summary.n_images} images failed (--strict); see the error column of {csv_path}")
    return summary
