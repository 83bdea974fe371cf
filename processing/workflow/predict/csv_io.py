"""predictions.csv: one row per image, appended batch by batch, and read back for --resume,
--merge and the report."""

from __future__ import annotations

import csv
import heapq
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import naming

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "path", "score", "defective", "threshold", "min_area", "defect_area_px",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "width", "height", "mask", "overlay", "error",
]
PREDICTIONS_NAME = "predictions.csv"
MAX_FAILURES_SHOWN = 100
FSYNC_EVERY_S = 2.0


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
            raise UserError(f"{csv_path}: not a predictions.csv of this version (columns {reader.fieldnames}); pass --overwrite")
        done = set()
        for index, row in enumerate(reader):
            check_row(row, csv_path, index + 2)
            done.add(row["path"])
        return done


class CsvAppender:
    """Appends batches of rows to an open predictions.csv and hands them to the operating system.

    predictions.csv is the only output that is not written through a temporary name: it grows
    batch by batch, so a crash or Ctrl-C loses at most the batch in flight, and ``--resume``
    continues from the rows on disk. Rewriting the whole file through a temporary name after every
    batch would cost O(N^2) writes; a cut-off last line is dropped when resuming (:func:`read_done`).
    Every batch is flushed (a killed process loses nothing written); the file is also fsynced at
    most every FSYNC_EVERY_S seconds and at :meth:`close` (against a power cut), not per batch: an
    fsync costs milliseconds, as much as scoring a batch of small images.
    """

    def __init__(self, handle, header: bool, path: Path | None = None):
        self.handle = handle
        self.path = path if path is not None else Path(getattr(handle, "name", PREDICTIONS_NAME))
        self.writer = csv.DictWriter(handle, CSV_COLUMNS, lineterminator="\n")
        self.last_fsync = time.monotonic()
        if header:
            with self.naming_errors():
                self.writer.writeheader()
                self.handle.flush()

    def append(self, rows: list[dict]) -> None:
        with self.naming_errors():
            self.writer.writerows(rows)
            self.handle.flush()
            now = time.monotonic()
            if now - self.last_fsync >= FSYNC_EVERY_S:
                os.fsync(self.handle.fileno())
                self.last_fsync = now

    def sync(self) -> None:
        with self.naming_errors():
            self.handle.flush()
            os.fsync(self.handle.fileno())

    @contextmanager
    def naming_errors(self):
        """An OSError of a write (a full disk) names the CSV."""
        try:
            yield
        except OSError as error:
            raise naming(self.path, error) from None


def read_predictions(csv_path: Path, gallery: int):
    """One pass over predictions.csv: scores and verdicts of the scored rows (arrays), the `gallery`
    highest-scoring rows, the first failures and the counts."""
    scores, defective, failures = [], [], []
    top: list[tuple[float, int, dict]] = []
    counts = {"images": 0, "defective": 0, "good": 0, "failed": 0}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            check_row(row, csv_path, index + 2)
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


def check_row(row: dict, csv_path: Path, line: int) -> None:
    """A row as predict.py writes it: every column, a score that is a number, defective 0 or 1;
    ValueError naming the file and the line otherwise (a hand-edited or damaged CSV)."""
    def refuse(what: str):
        raise UserError(f"{csv_path} line {line}: {what}; not a row predict.py wrote (pass --overwrite to predict again)")

    if None in row or any(value is None for value in row.values()):
        refuse(f"expected {len(CSV_COLUMNS)} columns")
    if not row["path"]:
        refuse("no path")
    if row["error"] or row["score"] == "":
        return
    try:
        float(row["score"])
    except ValueError:
        refuse(f"score {row['score']!r} is not a number")
    if row["defective"] not in ("0", "1"):
        refuse(f"defective {row['defective']!r}: expected 0 or 1")
