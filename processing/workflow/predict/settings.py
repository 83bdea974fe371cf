"""predict.py's settings, its output folder and the summary of a run.

One output folder (``-o``) holds what predict.py writes and nothing else is touched there:
``predictions.csv`` (csv_io.py), ``masks/`` and ``overlays/``, ``report.html`` + ``report_files/``
(report.py) and ``predict_settings.json`` (the settings that made the folder, written through a
temporary name). A folder of earlier predictions is refused unless ``--resume`` or ``--overwrite``;
``--overwrite`` removes :data:`OUTPUT_ENTRIES` and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autoencoder.errors import UserError

PREDICTIONS_FILE = "predictions.csv"
SETTINGS_FILE = "predict_settings.json"
REPORT_FILE = "report.html"
REPORT_DIR = "report_files"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
#: What predict.py writes into its folder; --overwrite removes these and nothing else.
# In an output folder while predict.py --merge writes it: a merge killed before it finished leaves it.
MERGING_FILE = ".merging.json"
HEATMAPS_DIR = "heatmaps"
OUTPUT_ENTRIES = (PREDICTIONS_FILE, SETTINGS_FILE, REPORT_FILE, REPORT_DIR, MASKS_DIR, OVERLAYS_DIR, HEATMAPS_DIR, MERGING_FILE)


@dataclass
class PredictConfig:
    path: str  # model folder (or its .keras file)
    inputs: list[str]  # folders, files, glob patterns
    output: str  # output folder
    result: str | None = None  # finetuning result name; None: the model's only one
    masks: bool = False
    overlays: bool = False
    heatmaps: bool = False  # write each image's anomaly map as a heat map (heatmaps/)
    batch_size: int = 16
    results_root: str = "results"
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    gallery: int = 48  # overlays in the report
    workers: int | None = None  # threads reading images (None: one per CPU)
    shard: str | None = None  # "K/N": only the K-th of N parts of the sorted input list (parse_shard)

    def validate(self) -> None:
        """The flags that need no model and no TensorFlow; ValueError (one line) naming the flag."""
        if self.batch_size < 1:
            raise UserError(f"--batch {self.batch_size}: expected a positive number of images")
        if self.gallery < 0:
            raise UserError(f"--gallery {self.gallery}: expected a number of images >= 0")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers}: expected a positive number of threads")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: choose one")
        if self.shard is not None:
            parse_shard(self.shard)


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


def parse_shard(text: str) -> tuple[int, int]:
    """--shard K/N -> (K, N), 1 <= K <= N; ValueError (one line) otherwise."""
    k, slash, n = str(text).partition("/")
    if not slash or not k.strip().isdigit() or not n.strip().isdigit():
        raise UserError(f"--shard {text}: expected K/N with whole numbers, e.g. 1/3 (part K of N, counted from 1)")
    k, n = int(k), int(n)
    if n < 1 or not 1 <= k <= n:
        raise UserError(f"--shard {text}: expected 1 <= K <= N (part K of N, counted from 1), e.g. 1/{max(n, 1)}")
    return k, n


# The keys of predict_settings.json that predict.py reads back, and their types.
SETTINGS_TYPES = {
    "model_folder": str, "model_file": str, "result": str, "result_folder": str, "runs": list, "inputs": list, "n_inputs": int,
    "flags": dict, "decision": dict, "cwd": str, "finetuning_result": dict, "model_sha256": str,
}


def read_settings(out_dir: Path, flag: str = "-o") -> dict | None:
    """predict_settings.json of an output folder (None when there is none), checked: a hand-edited
    file that is not what predict.py wrote is refused in one line naming it."""
    path = out_dir / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{flag} {out_dir}: {SETTINGS_FILE} is not valid JSON; pass --overwrite to replace the predictions "
                         "there") from None
    problem = settings_problem(settings)
    if problem:
        raise UserError(f"{path}: {problem}; not a file predict.py wrote (pass --overwrite to replace the predictions there)")
    return settings


def settings_problem(settings) -> str | None:
    if not isinstance(settings, dict):
        return "expected a JSON object"
    for key in ("model_folder", "result", "runs"):
        if key not in settings:
            return f"no {key!r}"
    for key, kind in SETTINGS_TYPES.items():
        if key in settings and (not isinstance(settings[key], kind) or isinstance(settings[key], bool)):
            expected = {str: "a string", int: "a whole number", list: "a list", dict: "an object"}[kind]
            return f"{key} {json.dumps(settings[key])[:60]}: expected {expected}"
    if not all(isinstance(run, dict) for run in settings["runs"]):
        return "runs: expected a list of objects"
    return None


def last_status(settings: dict) -> str:
    """The status of the last predict.py run recorded ("complete", "running" for one killed or still
    going, "failed", "interrupted"); "none" without runs."""
    runs = settings.get("runs") or []
    return str(runs[-1].get("status", "unknown")) if runs else "none"


def row_file(text: str, cwd: str | None) -> Path:
    """The image file of a CSV row's path: relative paths are relative to the working folder of the
    run that wrote them (`cwd`, recorded in predict_settings.json; older files: this process's)."""
    return Path(os.path.normpath(os.path.join(cwd or os.getcwd(), text)))


def row_key(text: str, cwd: str | None) -> str:
    """What identifies an image across runs: its resolved path (the same file given as an absolute
    and a relative path, or through a link, is one image)."""
    return os.path.realpath(row_file(text, cwd))


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


MAX_STEM_CHARS = 120  # of an image's stem in the names of its mask and overlay (file names end at 255 bytes)


def output_stem(path: Path, stem_chars: int = MAX_STEM_CHARS) -> str:
    """A file name for an image's mask and overlay: its stem (cut to `stem_chars` characters) and a
    hash of its absolute path (two images of the same name in different folders do not collide; the
    CSV names both files)."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    stem = path.stem
    while len(stem[:stem_chars].encode()) > stem_chars:  # multi-byte characters: cut by bytes
        stem_chars -= 1
    return f"{stem[:stem_chars]}_{digest}"


def clear_outputs(out_dir: Path) -> None:
    """--overwrite: remove what an earlier predict.py wrote there (OUTPUT_ENTRIES), nothing else."""
    for name in OUTPUT_ENTRIES:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
