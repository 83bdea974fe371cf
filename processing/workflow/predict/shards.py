"""predict.py --shard K/N and --merge: prediction split over N processes, and put back together."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

from processing.workflow.predict.csv_io import CSV_COLUMNS, read_done
from processing.workflow.predict.report import build_report
from processing.workflow.predict.settings import (
    MASKS_DIR,
    OVERLAYS_DIR,
    PREDICTIONS_FILE,
    SETTINGS_FILE,
    PredictSummary,
    check_writable,
    clear_outputs,
    parse_shard,
    read_settings,
)

logger = logging.getLogger(__name__)


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
            raise ValueError(f"--merge {folders[shards.index(None)]}: not a --shard run, unlike "
                    f"{folders[next(i for i, x in enumerate(shards) if x)]}")
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


def merge_predictions(
    parts: list[str], output: str, gallery: int = 48, workers: int | None = None, overwrite: bool = False
) -> PredictSummary:
    """Concatenate the predictions.csv of `parts` (rows sorted by path), copy their masks and
    overlays, and rebuild the report and predict_settings.json in `output`."""
    from autoencoder import bundle
    from processing.workflow.results import load_detector

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
    detector = load_detector(model, Path(first["result_folder"]))

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
    settings["merged_from"] = [
        {"folder": str(folder.resolve()), "shard": s.get("flags", {}).get("shard"), "rows": sum(1 for f in seen.values() if f == folder)}
        for folder, s in zip(folders, all_settings)
    ]
    settings["runs"] = [run for s in all_settings for run in s.get("runs", [])]
    settings["created"] = bundle.timestamp()
    settings["command"] = bundle.command_line()
    report, stats = build_report(out_dir, settings, detector, gallery, workers)
    settings["counts"] = stats
    bundle.write_json(out_dir / SETTINGS_FILE, settings)
    summary = PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], 0, 0, 0.0, report, settings)
    logger.info("merged %d parts: %s", len(folders), summary.line())
    return summary
