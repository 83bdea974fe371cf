"""predict.py --shard K/N and --merge: prediction split over N processes, and put back together."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

from autoencoder.errors import UserError
from processing.workflow.predict.csv_io import CSV_COLUMNS, check_row, read_done
from processing.workflow.predict.report import build_report
from processing.workflow.predict.settings import (
    HEATMAPS_DIR,
    MASKS_DIR,
    MERGING_FILE,
    OVERLAYS_DIR,
    PREDICTIONS_FILE,
    SETTINGS_FILE,
    PredictSummary,
    check_writable,
    clear_outputs,
    last_status,
    parse_shard,
    read_settings,
    row_file,
    row_key,
)

logger = logging.getLogger(__name__)


def shard_files(files: list[Path], k: int, n: int) -> list[Path]:
    """Part k (1-based) of n of the input list: every n-th file of the list sorted by path, from the
    k-th. N processes with 1/N ... N/N cover every image exactly once, whatever order the inputs were
    found in."""
    ordered = sorted(files, key=lambda path: str(path))
    return ordered[k - 1::n]


def check_merge(parts: list[str], output: str, overwrite: bool = False) -> tuple[list[Path], list[dict]]:
    """predict.py --merge: the part folders and the output folder, checked before anything is
    written (and before TensorFlow is imported). Each part must be a *finished* predict.py run (its
    last run "complete": a killed or failed run's rows are partial), and all of the same model and
    finetuning result, compared by what they are (folders, SHA-256 of the .keras file and of
    finetuning_result.json), not by name; that result must still be what it was (the report scores
    its gallery again); shards of one split when --shard was used."""
    if len(parts) < 1:
        raise UserError("--merge: expected the output folders of the predict.py runs to merge")
    out_dir = Path(output)
    folders, settings = [], []
    for part in parts:
        folder = Path(part)
        if (folder / MERGING_FILE).exists():
            raise UserError(f"--merge {part}: a --merge that did not finish (killed?); run that --merge again first")
        for name in (PREDICTIONS_FILE, SETTINGS_FILE):
            if not (folder / name).is_file():
                raise UserError(f"--merge {part}: no {name} (expected an output folder of predict.py)")
        if folder.resolve() == out_dir.resolve():
            raise UserError(f"--merge {part}: also the output folder -o; merge into a new folder")
        if folder.resolve() in [f.resolve() for f in folders]:
            raise UserError(f"--merge {part}: given twice")
        part_settings = read_settings(folder, "--merge")
        status = last_status(part_settings)
        if status != "complete":
            raise UserError(f"--merge {part}: its predict.py run did not finish (status {status!r} in {SETTINGS_FILE}); its rows are "
                             f"partial: finish it with predict.py ... -o {part} --resume, then merge")
        folders.append(folder)
        settings.append(part_settings)
    first = settings[0]
    for folder, other in zip(folders[1:], settings[1:]):
        difference = identity_difference(first, other)
        if difference:
            raise UserError(f"--merge {folder}: {difference} than {folders[0]}: not predictions of the same model and result")
    check_result_unchanged(first, folders[0])
    shards = [s.get("flags", {}).get("shard") for s in settings]
    if any(shard is not None for shard in shards):
        if None in shards:
            raise UserError(f"--merge {folders[shards.index(None)]}: not a --shard run, unlike "
                    f"{folders[next(i for i, x in enumerate(shards) if x)]}")
        parsed = [parse_shard(shard) for shard in shards]
        n = parsed[0][1]
        if any(total != n for _, total in parsed):
            raise UserError(f"--merge: the parts come from different splits ({', '.join(shards)})")
        missing = sorted(set(range(1, n + 1)) - {k for k, _ in parsed})
        if missing:
            raise UserError(f"--merge: shard {', '.join(f'{k}/{n}' for k in missing)} missing (each of the {n} parts once)")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"-o {out_dir}: a file, not a folder")
    check_writable(out_dir)
    if (out_dir / PREDICTIONS_FILE).exists() and not overwrite and not (out_dir / MERGING_FILE).exists():
        raise UserError(f"-o {out_dir} already holds predictions: pass --overwrite to replace them")
    for folder in folders:
        read_done(folder / PREDICTIONS_FILE)  # the columns of this version
    merged_rows(folders, settings)  # the same image in two parts: said before the model is loaded
    return folders, settings


def identity(settings: dict) -> dict:
    """What a predict.py run's model and result *are*: folders resolved, and the SHA-256 of the
    .keras file and of finetuning_result.json where recorded (older settings: not recorded)."""
    record = settings.get("finetuning_result") or {}
    return {
        "model folder": settings.get("model_folder"),
        "model file": settings.get("model_file"),
        "model file SHA-256": settings.get("model_sha256"),
        "result": settings.get("result"),
        "result folder": str(Path(settings["result_folder"]).resolve()) if settings.get("result_folder") else None,
        "finetuning_result.json SHA-256": record.get("sha256") if isinstance(record, dict) else None,
    }


def identity_difference(first: dict, other: dict) -> str | None:
    """'its result folder X differs from Y' for the first difference, None when none (a key
    recorded by one side only is not compared)."""
    ours, theirs = identity(first), identity(other)
    for key, value in theirs.items():
        if value is not None and ours[key] is not None and value != ours[key]:
            return f"another {key} ({value}, not {ours[key]})"
    return None


def check_result_unchanged(settings: dict, folder: Path) -> None:
    """The finetuning result the predictions were made with is still the one on disk."""
    from processing.workflow.results import finetuning_record

    record = settings.get("finetuning_result")
    result_folder = Path(settings.get("result_folder", ""))
    if not (result_folder / "finetuning_result.json").is_file():
        raise UserError(f"--merge {folder}: its finetuning result {result_folder} is gone (needed for the report)")
    if isinstance(record, dict) and record.get("sha256") != finetuning_record(result_folder)["sha256"]:
        raise UserError(f"--merge {folder}: the finetuning result {result_folder} changed since these predictions were made: predict "
                         "again with it")


def merge_predictions(
    parts: list[str], output: str, gallery: int = 48, workers: int | None = None, overwrite: bool = False
) -> PredictSummary:
    """Concatenate the predictions.csv of `parts` (rows sorted by path), copy their masks and
    overlays, and rebuild the report and predict_settings.json in `output`. The same image (by
    resolved path) in two parts is refused."""
    from autoencoder import bundle
    from autoencoder.folders import FolderLock
    from processing.workflow.results import load_detector

    folders, all_settings = check_merge(parts, output, overwrite)
    rows, seen = merged_rows(folders, all_settings)
    first = all_settings[0]
    model = bundle.load_bundle(first["model_folder"])
    detector = load_detector(model, Path(first["result_folder"]))

    out_dir = Path(output)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(out_dir, "predict.py run"):
            check_output_free(out_dir, overwrite)
            if overwrite:
                clear_outputs(out_dir)
            marker = out_dir / MERGING_FILE
            bundle.write_json(marker, {"parts": [str(folder.resolve()) for folder in folders], "pid": os.getpid()})
            try:
                summary = write_merged(out_dir, folders, all_settings, rows, seen, detector, gallery, workers, overwrite)
            except BaseException:
                clear_outputs(out_dir)  # nothing half-merged stays
                raise
            marker.unlink()
    finally:
        if created:
            try:
                out_dir.rmdir()
            except OSError:
                pass
    logger.info("merged %d parts: %s", len(folders), summary.line())
    return summary


def merged_rows(folders: list[Path], all_settings: list[dict]) -> tuple[list[dict], dict]:
    """(every part's rows sorted by path, {resolved path: part folder}); the same image (by resolved
    path, whatever working folder a part ran in) in two parts is refused. check_merge runs it too,
    before TensorFlow."""
    base = all_settings[0].get("cwd") or os.getcwd()
    rows, seen = [], {}
    for folder, part_settings in zip(folders, all_settings):
        cwd = part_settings.get("cwd") or os.getcwd()
        with open(folder / PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                check_row(row, folder / PREDICTIONS_FILE, index + 2)
                key = row_key(row["path"], cwd)
                if key in seen:
                    raise UserError(f"--merge: {row['path']} is in both {seen[key]} and {folder}")
                seen[key] = folder
                if cwd != base and not os.path.isabs(row["path"]):
                    row["path"] = str(row_file(row["path"], cwd))  # relative to another working folder: made absolute
                rows.append(row)
    rows.sort(key=lambda row: row["path"])
    return rows, seen


def check_output_free(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace predictions without --overwrite; a merge killed before it finished (its
    marker left, the lock free) is redone."""
    if (out_dir / MERGING_FILE).exists():
        logger.warning("-o %s: a --merge that did not finish (killed?) left it: merging again", out_dir)
        clear_outputs(out_dir)
        return
    if (out_dir / PREDICTIONS_FILE).exists() and not overwrite:
        raise UserError(f"-o {out_dir} already holds predictions: pass --overwrite to replace them")


def write_merged(out_dir, folders, all_settings, rows, seen, detector, gallery, workers, overwrite) -> PredictSummary:
    from autoencoder import bundle

    for folder in folders:
        for sub in (MASKS_DIR, OVERLAYS_DIR, HEATMAPS_DIR):
            if (folder / sub).is_dir():
                shutil.copytree(folder / sub, out_dir / sub, dirs_exist_ok=True)
    staged = out_dir / f".{PREDICTIONS_FILE}.tmp"
    with open(staged, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(staged, out_dir / PREDICTIONS_FILE)
    first = all_settings[0]
    settings = dict(first)
    settings["cwd"] = first.get("cwd") or os.getcwd()
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
    return PredictSummary(out_dir, stats["images"], stats["defective"], stats["failed"], 0, 0, 0.0, report, settings)
