"""predict.py: score new, unlabeled images with a finetuned model and write what it decided.

The images (folders recursively, files, glob patterns: processing/data/inputs.py) are read and
scored in batches by the detector of one finetuning result (``detector.score`` then
``detector.decide``: threshold, min_area, smoothing, border rule and normalisation all happen
there, exactly as in test.py). Outputs, in one folder (``-o``):

- ``predictions.csv``: one row per image, appended and flushed batch by batch (see
  :func:`append_rows` for why it is not written through a temporary name);
- ``masks/`` and ``overlays/`` with ``--masks`` / ``--overlays``, at each image's original size;
- ``report.html`` (+ ``report_files/``): built from the CSV at the end (processing/evaluation/report.py);
- ``predict_settings.json``: the settings that made the folder (written through a temporary name).

Memory does not grow with the number of images: one batch of images is in memory at a time (the
next one is read while the model runs), rows go to the CSV as soon as a batch is done, and the
report reads the CSV back keeping only the image scores (8 bytes an image) and the top of the
gallery. A file that cannot be read becomes a row with its error and the run goes on.

Nothing here imports TensorFlow at module level: predict.py checks the inputs and the output folder
(:func:`check_inputs_and_output`) before the model is loaded.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from autoencoder.progress import progress_bar
from processing.data.images import load_image_and_original
from processing.data.inputs import collect_images
from processing.evaluation.report import GalleryItem, ReportData, relative_link, score_histogram, write_report

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
SETTINGS_FILE = "predict_settings.json"
REPORT_FILE = "report.html"
REPORT_DIR = "report_files"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
#: What predict.py writes into its folder; --overwrite removes these and nothing else.
OUTPUT_ENTRIES = (PREDICTIONS_FILE, SETTINGS_FILE, REPORT_FILE, REPORT_DIR, MASKS_DIR, OVERLAYS_DIR)
CSV_COLUMNS = [
    "path", "score", "defective", "threshold", "min_area", "defect_area_px",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "width", "height", "mask", "overlay", "error",
]
PREDICTED_COLOR = (0, 0, 255)  # BGR red, as test.py's overlays
THUMBNAIL_SIZE = 256  # longest side of a gallery picture, in pixels
MAX_FAILURES_SHOWN = 100
SCORING_THREADS = 2  # batches scored at once (see predict)


@dataclass
class PredictConfig:
    path: str  # model folder (or its .keras file)
    inputs: list[str]  # folders, files, glob patterns
    output: str  # output folder
    result: str | None = None  # finetuning result name; None: the model's only one
    masks: bool = False
    overlays: bool = False
    batch_size: int = 16
    results_root: str = "results"
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    gallery: int = 48  # overlays in the report
    workers: int | None = None  # threads reading images (None: one per CPU)
    shard: str | None = None  # "K/N": only the K-th of N parts of the sorted input list (parse_shard)


@dataclass
class PredictSummary:
    out_dir: Path
    n_images: int  # rows in predictions.csv
    n_defective: int
    n_failed: int
    n_new: int  # scored (or failed) in this run
    n_skipped: int  # already in predictions.csv (--resume)
    seconds: float
    report: Path
    settings: dict = field(default_factory=dict)

    def line(self) -> str:
        good = self.n_images - self.n_defective - self.n_failed
        text = f"{self.n_images} images: {self.n_defective} defective, {good} good, {self.n_failed} failed"
        if self.n_failed:
            text += f" (their errors are in the error column of {self.out_dir / PREDICTIONS_FILE})"
        if self.n_skipped:
            text += f"; {self.n_skipped} already predicted were skipped (--resume)"
        return text + f"; report: {self.report}"


# ---- checks before the model is loaded ---------------------------------------------------------


def check_config(config: PredictConfig) -> None:
    if config.batch_size < 1:
        raise ValueError(f"--batch {config.batch_size}: expected a positive number of images")
    if config.gallery < 0:
        raise ValueError(f"--gallery {config.gallery}: expected a number of images >= 0")
    if config.workers is not None and config.workers < 1:
        raise ValueError(f"--workers {config.workers}: expected a positive number of threads")
    if config.resume and config.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if config.shard is not None:
        parse_shard(config.shard)


# ---- --shard and --merge: prediction split over N processes -----------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """--shard K/N -> (K, N), 1 <= K <= N; ValueError (one line) otherwise."""
    k, slash, n = str(text).partition("/")
    if not slash or not k.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(f"--shard {text}: expected K/N with whole numbers, e.g. 1/3 (part K of N, counted from 1)")
    k, n = int(k), int(n)
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"--shard {text}: expected 1 <= K <= N (part K of N, counted from 1), e.g. 1/{max(n, 1)}")
    return k, n


def shard_files(files: list[Path], k: int, n: int) -> list[Path]:
    """Part k (1-based) of n of the input list: every n-th file of the list sorted by path, from the
    k-th. N processes with 1/N ... N/N cover every image exactly once, whatever order the inputs were
    found in."""
    ordered = sorted(files, key=lambda path: str(path))
    return ordered[k - 1::n]


def check_merge(parts: list[str], output: str, overwrite: bool = False) -> tuple[list[Path], list[dict]]:
    """predict.py --merge: the part folders (each with predictions.csv and predict_settings.json of
    the same model and result, shards of one split when --shard was used) and the output folder."""
    if len(parts) < 1:
        raise ValueError("--merge: expected the output folders of the predict.py runs to merge")
    out_dir = Path(output)
    folders, settings = [], []
    for part in parts:
        folder = Path(part)
        for name in (PREDICTIONS_FILE, SETTINGS_FILE):
            if not (folder / name).is_file():
                raise ValueError(f"--merge {part}: no {name} (expected an output folder of predict.py)")
        if folder.resolve() == out_dir.resolve():
            raise ValueError(f"--merge {part}: also the output folder -o; merge into a new folder")
        if folder.resolve() in [f.resolve() for f in folders]:
            raise ValueError(f"--merge {part}: given twice")
        folders.append(folder)
        settings.append(read_settings(folder))
    first = settings[0]
    for folder, other in zip(folders[1:], settings[1:]):
        for key in ("model_folder", "model_file", "result"):
            if other.get(key) != first.get(key):
                raise ValueError(f"--merge {folder}: {key} {other.get(key)} differs from {first.get(key)} in {folders[0]}")
    shards = [s.get("flags", {}).get("shard") for s in settings]
    if any(shard is not None for shard in shards):
        if None in shards:
            raise ValueError(f"--merge {folders[shards.index(None)]}: not a --shard run, unlike {folders[next(i for i, x in enumerate(shards) if x)]}")
        parsed = [parse_shard(shard) for shard in shards]
        n = parsed[0][1]
        if any(total != n for _, total in parsed):
            raise ValueError(f"--merge: the parts come from different splits ({', '.join(shards)})")
        missing = sorted(set(range(1, n + 1)) - {k for k, _ in parsed})
        if missing:
            raise ValueError(f"--merge: shard {', '.join(f'{k}/{n}' for k in missing)} missing (each of the {n} parts once)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: a file, not a folder")
    check_writable(out_dir)
    if (out_dir / PREDICTIONS_FILE).exists() and not overwrite:
        raise ValueError(f"-o {out_dir} already holds predictions: pass --overwrite to replace them")
    for folder in folders:
        read_done(folder / PREDICTIONS_FILE)  # the columns of this version
    return folders, settings


def merge_predictions(parts: list[str], output: str, gallery: int = 48, workers: int | None = None, overwrite: bool = False) -> PredictSummary:
    """Concatenate the predictions.csv of `parts` (rows sorted by path), copy their masks and
    overlays, and rebuild the report and predict_settings.json in `output`."""
    from autoencoder import bundle
    from processing.detectors import detector_of_result
    from processing.detectors.base import RESULT_FILE

    folders, all_settings = check_merge(parts, output, overwrite)
    out_dir = Path(output)
    rows, seen = [], {}
    for folder in folders:
        with open(folder / PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["path"] in seen:
                    raise ValueError(f"--merge: {row['path']} is in both {seen[row['path']]} and {folder}")
                seen[row["path"]] = folder
                rows.append(row)
    rows.sort(key=lambda row: row["path"])
    first = all_settings[0]
    model = bundle.load_bundle(first["model_folder"])
    result_folder = Path(first["result_folder"])
    result = json.loads((result_folder / RESULT_FILE).read_text())
    detector = detector_of_result(result).load(model, result_folder, result)

    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        clear_outputs(out_dir)
    for folder in folders:
        for sub in (MASKS_DIR, OVERLAYS_DIR):
            if (folder / sub).is_dir():
                shutil.copytree(folder / sub, out_dir / sub, dirs_exist_ok=True)
    with open(out_dir / PREDICTIONS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    settings = dict(first)
    settings["inputs"] = list(dict.fromkeys(item for s in all_settings for item in s.get("inputs", [])))
    settings["n_inputs"] = sum(int(s.get("n_inputs", 0)) for s in all_settings)
    settings["flags"] = {**first.get("flags", {}), "shard": None, "output": str(out_dir)}
    settings["merged_from"] = [{"folder": str(folder.resolve()), "shard": s.get("flags", {}).get("shard"), "rows": sum(1 for f in seen.values() if f == folder)}
                               for folder, s in zip(folders, all_settings)]
    settings["runs"] = [run for s in all_settings for run in s.get("runs", [])]
    settings["created"] = bundle.timestamp()
    settings["command"] = bundle.command_line()
    report, stats = build_report(out_dir, settings, detector, gallery, workers)
    settings["counts"] = stats
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    summary = PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], 0, 0, 0.0, report, settings)
    logger.info("merged %d parts: %s", len(folders), summary.line())
    return summary


def read_settings(out_dir: Path) -> dict | None:
    path = out_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"-o {out_dir}: {SETTINGS_FILE} is not valid JSON; pass --overwrite to replace the predictions there") from None


def check_writable(out_dir: Path) -> None:
    """Raise OSError (one line) unless files can be created in `out_dir`, or in the folder that would hold it."""
    probe_dir = out_dir
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise OSError(f"-o {out_dir}: {probe_dir} is a file, not a folder")
    try:
        handle, name = tempfile.mkstemp(prefix=".predict-probe-", dir=probe_dir)
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        where = "" if probe_dir == out_dir else f" (cannot create it in {probe_dir})"
        raise OSError(f"-o {out_dir}: not writable{where}: {error.strerror or error}") from None


def check_inputs_and_output(config: PredictConfig) -> tuple[list[Path], dict | None]:
    """The image files to predict and the settings of earlier predictions in the output folder.

    Runs before the model is loaded: bad inputs and an output folder that cannot be used fail at
    once, with one line, and nothing is written.
    """
    check_config(config)
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


# ---- which finetuning result -------------------------------------------------------------------


def finetuning_results(model, results_root: str) -> dict[str, Path]:
    """{name: folder} of the model's finetuning results (folders holding finetuning_result.json;
    not the ones finetune.py --overwrite moved aside)."""
    from autoencoder.folders import is_replaced
    from processing.detectors.base import RESULT_FILE, finetuning_root

    root = finetuning_root(model, results_root)
    if not root.is_dir():
        return {}
    return {
        folder.name: folder
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".") and not is_replaced(folder.name) and (folder / RESULT_FILE).is_file()
    }


def choose_result(model, results_root: str, name: str | None, flag: str = "-r/--result") -> tuple[str, Path, dict]:
    """(name, folder, result) of the finetuning result to apply: `name`, or the model's only one."""
    from processing.detectors.base import RESULT_FILE, finetuning_root

    found = finetuning_results(model, results_root)
    if not found:
        raise ValueError(f"no finetuning result in {finetuning_root(model, results_root)}: run finetune.py -p {model.folder} first")
    if name is None:
        if len(found) > 1:
            raise ValueError(f"the model has {len(found)} finetuning results ({', '.join(found)}): choose one with {flag}")
        name = next(iter(found))
    elif name not in found:
        raise ValueError(f"{flag} {name}: no such finetuning result of {model.folder}; it has {', '.join(found)}")
    folder = found[name]
    try:
        result = json.loads((folder / RESULT_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / RESULT_FILE} is not valid JSON: {error}") from None
    return name, folder, result


def load_detector(config: PredictConfig):
    """(model bundle, result name, result folder, detector)."""
    from autoencoder import bundle
    from processing.detectors import detector_of_result

    model = bundle.load_bundle(config.path)
    name, folder, result = choose_result(model, config.results_root, config.result)
    detector = detector_of_result(result).load(model, folder, result, config.batch_size)
    return model, name, folder, detector


def decision_settings(detector) -> dict:
    """The decision for the CSV, the report and the settings: the detector's own settings plus
    `threshold` (on the image score's scale, or None) and `min_area` (or None)."""
    settings = dict(detector.test_settings())
    threshold = settings.get("threshold")
    if threshold is None and "density_threshold" in settings:  # kde: score = -log density
        threshold = -float(settings["density_threshold"])
    return settings | {"detector": detector.name, "threshold": threshold, "min_area": settings.get("min_area")}


# ---- the run -----------------------------------------------------------------------------------


def output_stem(path: Path) -> str:
    """A file name for an image's mask and overlay: its stem and a hash of its absolute path (two
    images of the same name in different folders do not collide; the CSV names both files)."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    return f"{path.stem}_{digest}"


def read_done(csv_path: Path) -> set[str]:
    """The paths already in predictions.csv. A last line cut short by a crash is dropped first."""
    if not csv_path.is_file():
        return set()
    with open(csv_path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            handle.truncate(cut)
            logger.warning("%s: dropped a last line cut short (a run was interrupted)", csv_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != CSV_COLUMNS:
            raise ValueError(f"{csv_path}: not a predictions.csv of this version (columns {reader.fieldnames}); pass --overwrite")
        return {row["path"] for row in reader}


FSYNC_EVERY_S = 2.0
_last_fsync = {"time": 0.0}


def append_rows(handle, rows: list[dict]) -> None:
    """Append one batch's rows and hand them to the operating system.

    predictions.csv is the only output that is not written through a temporary name: it grows
    batch by batch, so a crash or Ctrl-C loses at most the batch in flight, and ``--resume``
    continues from the rows on disk. Rewriting the whole file through a temporary name after every
    batch would cost O(N^2) writes; a cut-off last line is dropped when resuming (:func:`read_done`).
    Every batch is flushed (a killed process loses nothing written); the file is also fsynced at
    most every FSYNC_EVERY_S seconds and at the end (against a power cut), not per batch: an fsync
    costs milliseconds, as much as scoring a batch of small images.
    """
    writer = csv.DictWriter(handle, CSV_COLUMNS, lineterminator="\n")
    writer.writerows(rows)
    handle.flush()
    now = time.monotonic()
    if now - _last_fsync["time"] >= FSYNC_EVERY_S:
        os.fsync(handle.fileno())
        _last_fsync["time"] = now


def load_one(path: Path, color_mode: str, size: int):
    """(model input, original image) or the error as one line."""
    try:
        return load_image_and_original(path, color_mode, size)
    except Exception as error:  # a corrupt, unreadable or foreign file: a row with its error
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return message


def to_display(image: np.ndarray) -> np.ndarray:
    """float (H, W, 1 or 3) in [0, 1] -> uint8 BGR (H, W, 3) for cv2."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if pixels.shape[2] == 1:
        return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)


def draw_overlay(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The image (BGR uint8) with the predicted defect outlined in red."""
    overlay = to_display(image)
    if mask is not None and mask.any():
        thickness = max(1, round(max(mask.shape) / 256))
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(overlay, contours, -1, PREDICTED_COLOR, thickness)
    return overlay


def mask_at_original_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A model-size mask at the image's size, nearest neighbour (as test.py's masks)."""
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def write_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), image):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


class Predictor:
    """Scores batches of files with a loaded detector and turns them into CSV rows (and files)."""

    def __init__(self, detector, out_dir: Path, masks: bool = False, overlays: bool = False):
        self.detector = detector
        info = detector.model.info["model"]
        self.color_mode, self.size = info["color_mode"], info["image_size"]
        self.out_dir, self.masks, self.overlays = out_dir, masks, overlays
        decision = decision_settings(detector)
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
        for position, index in enumerate(good):
            original = loaded[index][1]
            height, width = original.shape[:2]
            row = rows[index]
            row.update(score=repr(float(scores.image_scores[position])), defective=int(bool(decisions.defective[position])),
                       width=width, height=height)
            mask = None
            if decisions.masks is not None:
                mask = mask_at_original_size(decisions.masks[position], height, width)
                area = int(np.count_nonzero(mask))
                row["defect_area_px"] = area
                if area:
                    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
                    row.update(bbox_x0=x, bbox_y0=y, bbox_x1=x + w - 1, bbox_y1=y + h - 1)
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


def iter_loaded(paths: list[Path], color_mode: str, size: int, batch_size: int, workers: int | None):
    """Yield (chunk, loaded) batch by batch; the next chunk is read (by a thread pool) while the
    caller works on the current one, so reading overlaps the model."""
    workers = workers or os.cpu_count() or 1
    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(load_one, path, color_mode, size) for path in chunk]

        pending = submit(chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else None
            yield chunk, loaded


def clear_outputs(out_dir: Path) -> None:
    """--overwrite: remove what an earlier predict.py wrote there (OUTPUT_ENTRIES), nothing else."""
    for name in OUTPUT_ENTRIES:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


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
        "decision": decision_settings(detector),
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
    run = {"started": bundle.timestamp(), "command": bundle.command_line(), "n_inputs": len(files), "n_skipped": skipped, "status": "running"}
    settings["runs"] = [*settings.get("runs", []), run]
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    for sub, wanted in ((MASKS_DIR, config.masks and detector.map_value_range is not None), (OVERLAYS_DIR, config.overlays)):
        if wanted:
            (out_dir / sub).mkdir(exist_ok=True)
    if config.masks and detector.map_value_range is None:
        logger.warning("the %s detector classifies whole images: no masks are written", detector.name)

    predictor = Predictor(detector, out_dir, config.masks, config.overlays)
    logger.info("predicting %d images with %s (%s)", len(todo), name,
                ", ".join(f"{k}={v}" for k, v in decision_settings(detector).items() if k != "detector" and v is not None))
    started = time.perf_counter()
    new_csv = not csv_path.exists() or csv_path.stat().st_size == 0
    n_new = n_failed_new = 0
    with open(csv_path, "a", newline="", encoding="utf-8") as handle:
        if new_csv:
            csv.writer(handle, lineterminator="\n").writerow(CSV_COLUMNS)
        with progress_bar(total=len(todo), desc="predict", unit="img") as progress, ThreadPoolExecutor(max_workers=SCORING_THREADS) as scoring:
            # Two batches are scored at once: one in the model (TensorFlow releases the GIL), the
            # other in the decision's numpy/Python code; rows are written in input order.
            pending: deque = deque()

            def write(rows: list[dict]) -> None:
                nonlocal n_new, n_failed_new
                append_rows(handle, rows)
                n_new += len(rows)
                n_failed_new += sum(1 for row in rows if row["error"])
                progress.update(len(rows))

            for chunk, loaded in iter_loaded(todo, predictor.color_mode, predictor.size, config.batch_size, config.workers):
                pending.append(scoring.submit(predictor.rows, chunk, loaded))
                if len(pending) >= SCORING_THREADS:
                    write(pending.popleft().result())
            while pending:
                write(pending.popleft().result())
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started

    report, stats = build_report(out_dir, settings, detector, config.gallery, config.workers)
    run |= {"status": "complete", "n_new": n_new, "n_failed_new": n_failed_new, "seconds": round(seconds, 2),
            "images_per_second": round(n_new / seconds, 2) if seconds > 0 else None}
    settings |= {"counts": stats}
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    summary = PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], n_new, skipped, seconds, report, settings)
    logger.info("%s", summary.line())
    if config.strict and summary.n_failed:
        raise ValueError(f"{summary.n_failed} of {summary.n_images} images failed (--strict); see the error column of {csv_path}")
    return summary


# ---- the report --------------------------------------------------------------------------------


def read_predictions(csv_path: Path, gallery: int):
    """One pass over predictions.csv: scores and verdicts of the scored rows (arrays), the `gallery`
    highest-scoring rows, the first failures and the counts."""
    scores, defective, failures = [], [], []
    top: list[tuple[float, int, dict]] = []
    counts = {"images": 0, "defective": 0, "good": 0, "failed": 0}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            counts["images"] += 1
            if row["error"] or row["score"] == "":
                counts["failed"] += 1
                if len(failures) < MAX_FAILURES_SHOWN:
                    failures.append((row["path"], row["error"] or "not scored"))
                continue
            score, bad = float(row["score"]), row["defective"] == "1"
            counts["defective" if bad else "good"] += 1
            scores.append(score)
            defective.append(bad)
            if gallery:
                key = (score if math.isfinite(score) else -math.inf, -index)
                item = (key, index, row)
                if len(top) < gallery:
                    heapq.heappush(top, item)
                elif key > top[0][0]:
                    heapq.heapreplace(top, item)
    ranked = [row for _, _, row in sorted(top, key=lambda item: item[0], reverse=True)]
    return np.asarray(scores, dtype=np.float64), np.asarray(defective, dtype=bool), ranked, failures, counts


def gallery_thumbnails(rows: list[dict], detector, folder: Path, workers: int | None) -> list[str | None]:
    """Overlays of the gallery's images, at most THUMBNAIL_SIZE pixels a side, scored again (a few
    dozen images): the report needs no overlay written during the run. None where the image cannot
    be read any more."""
    folder.mkdir(parents=True, exist_ok=True)
    info = detector.model.info["model"]
    paths = [Path(row["path"]) for row in rows]
    names: list[str | None] = [None] * len(rows)
    offset = 0
    for chunk, loaded in iter_loaded(paths, info["color_mode"], info["image_size"], detector.batch_size, workers):
        good = [index for index, item in enumerate(loaded) if not isinstance(item, str)]
        masks = [None] * len(chunk)
        if good:
            decisions = detector.decide(detector.score(np.stack([loaded[index][0] for index in good])))
            if decisions.masks is not None:
                for position, index in enumerate(good):
                    masks[index] = decisions.masks[position]
        for index in good:
            original = loaded[index][1]
            height, width = original.shape[:2]
            scale = min(1.0, THUMBNAIL_SIZE / max(height, width))
            small = cv2.resize(original, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
            small = small.reshape(small.shape[0], small.shape[1], original.shape[2])
            mask = None if masks[index] is None else mask_at_original_size(masks[index], small.shape[0], small.shape[1])
            name = f"{offset + index:04d}_{output_stem(chunk[index])}.png"
            write_png(folder / name, draw_overlay(small, mask))
            names[offset + index] = name
        offset += len(chunk)
    return names


def build_report(out_dir: Path, settings: dict, detector, gallery: int, workers: int | None = None) -> tuple[Path, dict]:
    """report.html and report_files/ from predictions.csv; returns (report path, counts)."""
    scores, defective, ranked, failures, counts = read_predictions(out_dir / PREDICTIONS_FILE, gallery)
    decision = settings["decision"]
    staging = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.", dir=out_dir))
    try:
        histogram = None
        # Segmentation's component score gives images without a region of min_area at any level a
        # score below every map value; drawn, they would squeeze the rest into a corner.
        floor = getattr(detector, "no_defect_score", None) if decision.get("image_score") == "component" else None
        n_floor = int(np.count_nonzero(scores <= floor)) if floor is not None else 0
        drawn = scores > floor if floor is not None else np.ones(len(scores), dtype=bool)
        if drawn.any():
            score_histogram(scores[drawn], defective[drawn], decision.get("threshold"), staging / "scores.png")
            histogram = f"{REPORT_DIR}/scores.png"
        thumbs = gallery_thumbnails(ranked, detector, staging / "gallery", workers) if ranked else []
        staging.chmod(0o755)
        final = out_dir / REPORT_DIR
        old = None
        if final.exists():
            old = out_dir / f".{REPORT_DIR}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    items = []
    for row, thumb in zip(ranked, thumbs):
        image_link = relative_link(row["path"], out_dir)
        link = quote_relative(row["overlay"]) if row["overlay"] else image_link
        items.append(GalleryItem(
            path=row["path"], score=float(row["score"]), defective=row["defective"] == "1",
            thumbnail=f"{REPORT_DIR}/gallery/{thumb}" if thumb else None, link=link, image_link=image_link,
            area=int(row["defect_area_px"]) if row["defect_area_px"] else None,
        ))
    model_rows = [
        ("model", settings["model_folder"]),
        ("file", settings["model_file"]),
        ("architecture", f"{settings['architecture']} ({settings['loss']} loss)"),
        ("input", f"{settings['image_size']} px, {settings['color_mode']}"),
        ("finetuning result", f"{settings['result']} ({settings['result_folder']})"),
    ]
    decision_rows = [(key.replace("_", " "), _show(value)) for key, value in decision.items() if value is not None]
    notes = []
    if n_floor:
        notes.append(f"{n_floor} images have no region of min_area pixels above any level (score {floor:.4g}); they are not drawn.")
    if decision.get("detector") == "segmentation":
        notes.append(
            "An image is defective when, after the post-processing above, its anomaly map has a connected region "
            "above the threshold of at least min_area pixels"
            + (" not touching the border" if decision.get("clear_border") else "")
            + f"; its score is the {'map maximum' if decision.get('image_score') == 'max' else 'highest level at which such a region survives'}"
            + ("; at the threshold itself such a region may have grown into the border, so an image can score above the threshold and be good."
               if decision.get("clear_border") else ".")
        )
    data = ReportData(
        title=f"Predictions of {Path(settings['model_folder']).name} ({settings['result']})",
        model=model_rows,
        decision=decision_rows,
        counts=counts,
        histogram=histogram,
        gallery=items,
        gallery_of=len(scores),
        failures=failures,
        links=[("predictions.csv", PREDICTIONS_FILE), ("settings", SETTINGS_FILE)],
        notes=notes,
    )
    return write_report(out_dir / REPORT_FILE, data), counts


def quote_relative(path: str) -> str:
    from urllib.parse import quote

    return quote(path)


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
