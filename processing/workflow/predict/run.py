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

from autoencoder.errors import UserError
from autoencoder.progress import progress_bar
from processing.data.inputs import collect_images
from processing.data.tiles import batch_of
from processing.evaluation.overlays import draw_heatmap, draw_overlay, write_png
from processing.workflow.predict.csv_io import CSV_COLUMNS, CsvAppender, read_done
from processing.workflow.predict.loading import iter_loaded
from processing.workflow.predict.report import build_report
from processing.workflow.predict.settings import (
    HEATMAPS_DIR,
    MASKS_DIR,
    MERGING_FILE,
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
    row_key,
)
from processing.workflow.predict.shards import shard_files
from processing.workflow.predict.verdict import csv_fields, verdicts_of

logger = logging.getLogger(__name__)

SCORING_THREADS = 2  # batches scored at once (see predict)


def check_inputs_and_output(config: PredictConfig) -> tuple[list[Path], dict | None, object]:
    """The image files to predict and the settings of earlier predictions in the output folder.

    Runs before TensorFlow is imported and before anything is written: bad flags, a model folder
    that is not one (or whose .keras file was replaced), a result that cannot be read, bad inputs and
    an output folder that cannot be used fail at once, with one line.
    """
    config.validate()
    shard = parse_shard(config.shard) if config.shard is not None else None
    # Never predict the outputs of earlier runs found inside an input folder (masks, overlays, a report's images).
    files = collect_images(config.inputs, skip_marked=(SETTINGS_FILE, PREDICTIONS_FILE))
    if shard is not None:
        files = shard_files(files, *shard)
        logger.info("--shard %d/%d: %d images", shard[0], shard[1], len(files))
    out_dir = Path(config.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"-o {out_dir}: a file, not a folder")
    check_writable(out_dir)
    # Never predict predict.py's own outputs (an output folder inside an input folder).
    inside = os.path.realpath(out_dir) + os.sep
    kept = [path for path in files if not os.path.realpath(path).startswith(inside)]
    if not kept:
        raise UserError(f"-i {' '.join(config.inputs)}: the only images found are inside the output folder {out_dir}")
    opened, name, result_folder = check_model_and_result(config.path, config.results_root, config.result)
    if out_dir.is_dir():  # a run writing there now: said before TensorFlow (predict() takes the lock for real)
        from autoencoder.folders import FolderLock

        with FolderLock(out_dir, "predict.py run"):
            pass
    previous = check_output_state(out_dir, config)
    if config.resume and previous is not None:  # predictions of another model or result: said before TensorFlow
        check_same_predictions(previous, identity_of(opened, name, result_folder), out_dir)
    return kept, previous, opened


def identity_of(opened, name: str, result_folder: Path) -> dict:
    """What predictions are of (the keys check_same_predictions compares), without loading the model
    (`opened`: its bundle.ModelFolder)."""
    from processing.workflow.results import finetuning_record

    return {"model_folder": str(Path(opened.folder).resolve()), "result": name, "model_sha256": opened.sha256,
            "finetuning_result": finetuning_record(result_folder)}


def check_model_and_result(path, results_root, result: str | None) -> tuple:
    """(opened model folder, result name, result folder), checked without TensorFlow: the model
    folder, its .keras file (the one train.py saved), the finetuning result (every field).
    predict.py and serve.py run it before importing TensorFlow."""
    from autoencoder import bundle
    from processing.detectors.base import read_result
    from processing.workflow.results import ResultsTree

    opened = bundle.open_model_folder(path)
    name, result_folder = ResultsTree.of(opened.info, opened.folder, results_root).choose(result)
    read_result(result_folder)
    return opened, name, result_folder


def check_output_state(out_dir: Path, config: PredictConfig) -> dict | None:
    """The settings of the predictions already in `out_dir` (None: none), refused unless --resume
    or --overwrite; checked first, and again once the folder is locked."""
    if (out_dir / MERGING_FILE).exists():
        raise UserError(f"-o {out_dir} holds a predict.py --merge that did not finish (killed?): run the same --merge again, "
                         "which redoes it")
    previous = read_settings(out_dir) if out_dir.is_dir() else None
    has_csv = (out_dir / PREDICTIONS_FILE).exists()
    if (previous is not None or has_csv) and not (config.resume or config.overwrite):
        holder = f" of model {previous.get('model_folder')} (result {previous.get('result')})" if previous else ""
        raise UserError(f"-o {out_dir} already holds predictions{holder}: pass --resume to continue them or --overwrite to replace them")
    if config.resume and has_csv and previous is None:
        raise UserError(f"-o {out_dir}: {PREDICTIONS_FILE} without {SETTINGS_FILE}; cannot tell which model made it: pass --overwrite")
    return previous


def check_same_predictions(previous: dict, settings: dict, out_dir: Path) -> None:
    """--resume continues predictions of this very model and finetuning result, not of another one
    of the same name: the model folder, the result, and (where recorded) the SHA-256 of the .keras
    file and of finetuning_result.json must be those of the predictions in `out_dir`."""
    if previous.get("model_folder") != settings["model_folder"] or previous.get("result") != settings["result"]:
        raise UserError(
            f"-o {out_dir} holds predictions of model {previous.get('model_folder')} (result {previous.get('result')}), "
            f"not of {settings['model_folder']} ({settings['result']}): use another -o, or --overwrite"
        )
    for what, key, now in (
        ("the model file", "model_sha256", settings["model_sha256"]),
        (f"the finetuning result {settings['result']}", "finetuning_result", settings["finetuning_result"]),
    ):
        recorded = previous.get(key)
        if recorded is None:
            continue  # made by an older version: not recorded
        if key == "finetuning_result":
            recorded, now = (recorded.get("folder"), recorded.get("sha256")), (now["folder"], now["sha256"])
        if recorded != now:
            raise UserError(f"-o {out_dir}: {what} changed since these predictions were made; --resume would mix two decisions "
                             "in one CSV: use another -o, or --overwrite")


def load_finetuned(path, result: str | None = None, results_root: str = "results", batch_size: int = 16):
    """(model bundle, result name, result folder, detector) of a model folder (a path, or a
    bundle.ModelFolder already opened) and its finetuning result `result` (None: the model's only
    one), as predict.py and serve.py choose and load them."""
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

    def __init__(self, detector, out_dir: Path, masks: bool = False, overlays: bool = False, absolute: bool = False,
                 heatmaps: bool = False):
        self.detector = detector
        self.absolute = absolute  # write the rows' paths absolute
        self.out_dir, self.masks, self.overlays = out_dir, masks, overlays
        self.heatmap_scale = detector.heatmap_scale() if heatmaps else None  # None: no heat maps (or no maps to draw)
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
        images = batch_of([loaded[index][0] for index in good])
        scores = self.detector.score(images)
        decisions = self.detector.decide(scores)
        verdicts = verdicts_of(scores, decisions, [loaded[index][1].shape[:2] for index in good])
        for position, (index, verdict) in enumerate(zip(good, verdicts)):
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
            if self.heatmap_scale is not None:
                heatmap = draw_heatmap(original, scores.maps[position], self.threshold, self.heatmap_scale)
                write_png(self.out_dir / HEATMAPS_DIR / f"{stem}_heatmap.png", heatmap)
        return rows

    def empty_row(self, path: Path) -> dict:
        row = dict.fromkeys(CSV_COLUMNS, "")
        row["path"] = os.path.abspath(path) if self.absolute else str(path)
        row["threshold"] = "" if self.threshold is None else repr(float(self.threshold))
        row["min_area"] = "" if self.min_area is None else int(self.min_area)
        return row


def settings_of(config: PredictConfig, model, name: str, folder: Path, detector, n_inputs: int) -> dict:
    from autoencoder import bundle
    from processing.workflow.results import finetuning_record

    info = model.info
    return {
        "model_folder": str(model.folder.resolve()),
        "model_file": model.model_file.name,
        "model_sha256": model.model_sha256,
        "architecture": info.model.architecture,
        "loss": info.training.loss,
        "image_size": info.model.image_size.to_json(),
        "color_mode": info.model.color_mode,
        "result": name,
        "result_folder": str(folder.resolve()),
        "finetuning_result": finetuning_record(folder),  # what the result is: its folder and a hash of its JSON
        "decision": detector.decision_summary(),
        "inputs": list(config.inputs),
        "n_inputs": n_inputs,
        "cwd": os.getcwd(),  # relative paths in predictions.csv are relative to it
        "flags": {key: value for key, value in asdict(config).items() if key not in ("inputs",)},
        "created": bundle.timestamp(),
        "command": bundle.command_line(),
        "versions": bundle.environment_versions(),
        "runs": [],
    }


def predict(config: PredictConfig, checked: tuple | None = None) -> PredictSummary:
    """Score every input image; write predictions.csv, masks/overlays, report.html, predict_settings.json.

    Everything that can fail without scoring is checked before the output folder is touched (the
    flags, the model, the result, the inputs, the folder); the folder is then locked
    (autoencoder/folders.py FolderLock: a second run on it refuses, a killed run's lock is taken
    over). A run that fails before its first row leaves the folder as it found it; one that fails
    later keeps its rows (for --resume) and records the failure in predict_settings.json.
    """
    from autoencoder.folders import FolderLock

    files, _, opened = checked or check_inputs_and_output(config)  # checked: what predict.py checked before TensorFlow
    model, name, folder, detector = load_finetuned(opened, config.result, config.results_root, config.batch_size)
    out_dir = Path(config.output)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(out_dir, "predict.py run"):
            return predict_locked(config, files, model, name, folder, detector, out_dir)
    finally:
        if created:
            remove_if_empty(out_dir)


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: it holds predictions


def predict_locked(config: PredictConfig, files: list[Path], model, name: str, folder: Path, detector, out_dir: Path) -> PredictSummary:
    """predict() once the output folder is locked."""
    from autoencoder import bundle

    previous = check_output_state(out_dir, config)  # again: another run may have written meanwhile
    current = settings_of(config, model, name, folder, detector, len(files))
    resuming = config.resume and previous is not None
    if resuming:
        check_same_predictions(previous, current, out_dir)
    if config.overwrite:
        clear_outputs(out_dir)
    settings = previous if resuming else current
    cwd = os.getcwd()
    base = settings.get("cwd")  # relative rows of the CSV are relative to it (None: older settings, this process's)
    csv_path = out_dir / PREDICTIONS_FILE
    done = {row_key(text, base) for text in read_done(csv_path)} if config.resume else set()
    todo = [path for path in files if row_key(str(path), cwd) not in done]
    skipped = len(files) - len(todo)
    if skipped:
        logger.info("%d of %d images already in %s: skipped (--resume)", skipped, len(files), csv_path)
    run = {
        "started": bundle.timestamp(), "command": bundle.command_line(), "cwd": cwd, "n_inputs": len(files), "n_skipped": skipped,
        "status": "running",
    }
    settings["runs"] = [*settings.get("runs", []), run]
    progress = {"rows": 0, "failed": 0}
    try:
        bundle.write_json(out_dir / SETTINGS_FILE, settings)
        seconds = score_into_csv(config, detector, out_dir, todo, progress, absolute=base not in (None, cwd))
        report, stats = build_report(out_dir, settings, detector, config.gallery, config.workers)
    except BaseException as error:
        record_failure(out_dir, settings, run, error, fresh=not resuming, rows=progress["rows"])
        raise
    run |= {
        "status": "complete",
        "n_new": progress["rows"],
        "n_failed_new": progress["failed"],
        "seconds": round(seconds, 2),
        "images_per_second": round(progress["rows"] / seconds, 2) if seconds > 0 else None,
    }
    settings |= {"counts": stats}
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    summary = PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], progress["rows"], skipped, seconds, report,
                             settings)
    logger.info("%s", summary.line())
    if config.strict and summary.n_failed:
        raise UserError(f"{summary.n_failed} of {summary.n_images} images failed (--strict); see the error column of {csv_path}")
    return summary


def score_into_csv(config: PredictConfig, detector, out_dir: Path, todo: list[Path], progress_counts: dict, absolute: bool) -> float:
    """Score `todo` batch by batch, appending rows to predictions.csv (and writing masks/overlays);
    return the seconds it took. `absolute`: write absolute paths (a run from another working folder
    than the one the CSV's relative paths are relative to)."""
    has_maps = detector.map_value_range is not None
    wanted_folders = ((MASKS_DIR, config.masks and has_maps), (OVERLAYS_DIR, config.overlays), (HEATMAPS_DIR, config.heatmaps and has_maps))
    for sub, wanted in wanted_folders:
        if wanted:
            (out_dir / sub).mkdir(exist_ok=True)
    if (config.masks or config.heatmaps) and not has_maps:
        logger.warning("the %s detector classifies whole images: no masks or heat maps are written", detector.name)
    predictor = Predictor(detector, out_dir, config.masks, config.overlays, absolute, heatmaps=config.heatmaps)
    logger.info(
        "predicting %d images with %s (%s)",
        len(todo),
        detector.result_name(detector.result),
        ", ".join(f"{k}={v}" for k, v in detector.decision_summary().items() if k != "detector" and v is not None),
    )
    csv_path = out_dir / PREDICTIONS_FILE
    started = time.perf_counter()
    new_csv = not csv_path.exists() or csv_path.stat().st_size == 0
    with open(csv_path, "a", newline="", encoding="utf-8") as handle:
        appender = CsvAppender(handle, header=new_csv, path=csv_path)
        with (
            progress_bar(total=len(todo), desc="predict", unit="img") as progress,
            ThreadPoolExecutor(max_workers=SCORING_THREADS) as scoring,
        ):
            # Two batches are scored at once: one in the model (TensorFlow releases the GIL), the
            # other in the decision's numpy/Python code; rows are written in input order.
            pending: deque = deque()

            def write(rows: list[dict]) -> None:
                appender.append(rows)
                progress_counts["rows"] += len(rows)
                progress_counts["failed"] += sum(1 for row in rows if row["error"])
                progress.update(len(rows))

            batches = iter_loaded(todo, predictor.detector.read_input, config.batch_size, config.workers)
            for chunk, loaded in batches:
                pending.append(scoring.submit(predictor.rows, chunk, loaded))
                if len(pending) >= SCORING_THREADS:
                    write(pending.popleft().result())
            while pending:
                write(pending.popleft().result())
        appender.sync()
    return time.perf_counter() - started


def record_failure(out_dir: Path, settings: dict, run: dict, error: BaseException, fresh: bool, rows: int) -> None:
    """After a run failed: a new run that wrote no row leaves nothing behind (its settings, the
    header-only CSV, the folders it made); otherwise the rows stay for --resume and the run's
    status says what happened (a killed run's stays "running")."""
    from autoencoder import bundle
    from autoencoder.cli import error_line

    try:
        if fresh and rows == 0:
            clear_outputs(out_dir)
            return
        run |= {"status": "interrupted" if isinstance(error, KeyboardInterrupt) else "failed", "n_new": rows,
                "error": error_line(error) if isinstance(error, Exception) else type(error).__name__}
        bundle.write_json(out_dir / SETTINGS_FILE, settings)
    except OSError as cleanup_error:  # the disk that failed the run may fail this too: the first error is the one to report
        logger.warning("%s: could not record the failed run: %s", out_dir, cleanup_error)
