"""Verdicts an inspector reviewed: a CSV of image paths and labels, taken back into the decision.

predict.py writes `review.csv` beside its predictions.csv (one row per image, in a random order:
path, score, the toolkit's verdict, and an empty `review` column); the inspector fills `review`
with `good` or `defective` (rows left empty are not used) in any spreadsheet program or editor, and
`finetune.py --reviewed review.csv` adds those images to the finetuning data: the defective ones to
the detection side, the good ones (confirmed false alarms among them) to the false-alarm side.
Relative paths are relative to the working folder of the predict.py run that wrote them
(`cwd` in the predict_settings.json beside the file; else the file's own folder).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import write_bytes_atomic
from processing.data.images import image_size

REVIEW_FILE = "review.csv"
REVIEW_COLUMNS = ("path", "score", "verdict", "review")
LABELS = {"good": False, "defective": True}


@dataclass(frozen=True)
class Reviewed:
    """The labelled images of review files: (path, defective) in order, each image once."""

    images: list[tuple[Path, bool]]
    sources: list[dict]  # {"file", "sha256", "n_good", "n_defective"} per review file

    def record(self) -> dict:
        """What a finetuning result records of them."""
        return {"sources": self.sources, "n_defective": sum(label for _, label in self.images),
                "n_good": sum(not label for _, label in self.images), "files": [str(path) for path, _ in self.images]}


_READ: dict[tuple, Reviewed] = {}  # review files already read by this process, by (path, size, mtime): finetune.py checks them
# before TensorFlow and uses them after it; each reviewed image's header is read once


def read_reviews(files, flag: str = "--reviewed") -> Reviewed:
    """The reviewed images of review CSVs (columns `path` and `review`); one line naming the file,
    its line and what was expected for a missing column, an unknown label, an image that is not
    there, or one image given two labels."""
    try:
        key = tuple((str(Path(file).resolve()), Path(file).stat().st_size, Path(file).stat().st_mtime_ns, flag) for file in files)
    except OSError:
        key = None  # a file that is not there: _read_reviews says so
    if key is None or key not in _READ:
        reviewed = _read_reviews(files, flag)
        if key is None:
            return reviewed
        _READ[key] = reviewed
    return _READ[key]


def _read_reviews(files, flag: str) -> Reviewed:
    labels: dict[Path, tuple[bool, str]] = {}
    sources = []
    for file in dict.fromkeys(Path(file) for file in files):  # a file given twice counts once
        problem = _not_a_file(file)
        if problem:
            raise UserError(f"{flag} {str(file)[:200]}: {problem}; expected a review CSV (predict.py writes {REVIEW_FILE}; fill its "
                            "review column)")
        data = file.read_bytes()
        try:
            rows = list(csv.DictReader(data.decode("utf-8-sig").splitlines()))
        except (UnicodeDecodeError, csv.Error) as error:
            raise UserError(f"{flag} {file}: not a readable CSV ({error})") from None
        if not rows:
            raise UserError(f"{flag} {file}: holds no row; expected the columns path and review (predict.py's {REVIEW_FILE})")
        if "path" not in rows[0] or "review" not in rows[0]:
            raise UserError(f"{flag} {file}: expected the columns path and review (predict.py's {REVIEW_FILE}), found "
                            f"{', '.join(map(str, rows[0]))}")
        base = _base_folder(file)
        counts = {True: 0, False: 0}
        for line, row in enumerate(rows, start=2):
            label = (row.get("review") or "").strip().lower()
            if not label:
                continue  # not reviewed
            if label not in LABELS:
                raise UserError(f"{flag} {file}, line {line}: review {label[:40]!r}: expected good, defective or nothing")
            text = _unescaped(row["path"] or "").strip()
            if not text:
                raise UserError(f"{flag} {file}, line {line}: no path; expected the reviewed image's path")
            path = Path(os.path.normpath(os.path.join(base, text)))
            problem = _not_a_file(path) or _not_an_image(path)
            if problem:
                raise UserError(f"{flag} {file}, line {line}: {str(path)[:200]}: {problem}; the reviewed image must still be there")
            defective = LABELS[label]
            key = path.resolve()
            if key in labels and labels[key][0] != defective:
                raise UserError(f"{flag} {file}, line {line}: {path} is reviewed {label} here and "
                                f"{'defective' if labels[key][0] else 'good'} in {labels[key][1]}")
            if key not in labels:
                counts[defective] += 1
            labels[key] = (defective, f"{file}, line {line}")
        sources.append({"file": str(file.resolve()), "sha256": hashlib.sha256(data).hexdigest(),
                        "n_good": counts[False], "n_defective": counts[True]})
    if not labels:
        raise UserError(f"{flag} {' '.join(map(str, files))}: no row has a review (good or defective)")
    return Reviewed([(path, defective) for path, (defective, _) in labels.items()], sources)


def _not_a_file(path: Path) -> str | None:
    """Why `path` is not a readable file, in words; None when it is one."""
    try:
        if path.is_dir():
            return "a folder, not a file"
        return None if path.is_file() else "not found"
    except OSError as error:  # a name too long for the file system
        return f"cannot be read ({error.strerror or error})"


def _not_an_image(path: Path) -> str | None:
    """Why `path` is not an image the toolkit reads (from its header), in words; None when it is one."""
    try:
        image_size(path)
    except (ValueError, OSError) as error:
        return f"not a readable image ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return None


def _base_folder(file: Path) -> str:
    """What a review file's relative paths are relative to: the predict.py run's working folder."""
    settings = file.parent / "predict_settings.json"
    try:
        cwd = json.loads(settings.read_text()).get("cwd") if settings.is_file() else None
    except (ValueError, OSError, AttributeError):
        cwd = None
    return cwd if isinstance(cwd, str) and os.path.isdir(cwd) else str(file.parent)


def write_review_sheet(path: Path, rows: list[dict], seed: int = 0) -> bool:
    """`review.csv` from predictions.csv rows (`review` empty), unless the file exists: it may hold
    an inspector's labels, which are never overwritten. Whether it was written.

    The rows are in a random order (fixed by `seed`): whatever number of rows an inspector labels
    from the top is then a fair sample of the predicted images, which is what the decision's rates
    need. Labelling the verdicts nearest the threshold first was measured to make the decision
    worse on the other images (docs/benchmarks.md); the report lists the most suspicious first."""
    if path.exists():
        return False
    scored = [row for row in rows if row.get("score") not in ("", None)]
    scored = [scored[index] for index in np.random.default_rng(seed).permutation(len(scored))]
    lines = [",".join(REVIEW_COLUMNS)]
    for row in scored:
        verdict = "defective" if row.get("defective") == "1" else "good"
        lines.append(",".join([_csv_field(row["path"]), row["score"], verdict, ""]))
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
    return True


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run a cell starting so as a formula


def _csv_field(text: str) -> str:
    """A CSV field that a spreadsheet shows as text: quoted when needed, and a leading ' before a
    formula character (a file named `=HYPERLINK(...).png` stays a name)."""
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    if any(character in text for character in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _unescaped(text: str) -> str:
    """The path of a review row, without the ' that :func:`_csv_field` put before a formula character."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text
