"""What a dataset holds, byte for byte, in a few lines of info.json.

train.py records the content of the dataset it trained on (``dataset.content`` in info.json):
a SHA-256 over ``(relative path, size, SHA-256 of the bytes)`` of every file the toolkit reads
(train/good and test/<class> images, ground_truth masks), sorted by path, and one such hash per
folder, so that a check can say *which* folder differs. finetune.py and test.py recompute it:
``--data-dir`` must name a dataset with the same content (the same names and counts are not
enough: a copy with one image changed is another dataset).

Hashing reads every file once (threads; hashlib releases the GIL), at disk speed; a run that
checks the same dataset twice (the script's early check, then the workflow) hashes each file once
(:func:`autoencoder.folders.file_sha256`).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autoencoder.folders import file_sha256
from processing.data.images import MVTecLayout

ALGORITHM = "sha256 over 'relative path\\tsize\\tsha256 of the bytes' lines of every file, sorted by path"
def dataset_files(layout: MVTecLayout) -> list[Path]:
    """The files the toolkit reads of a dataset: train/good, test/<class> and the masks that exist."""
    files = list(layout.train_good)
    for path, name in layout.test_files():
        files.append(path)
        mask = layout.mask_path(path) if name != "good" else None
        if mask is not None and mask.is_file():
            files.append(mask)
    return files


def _folder_of(relative: str) -> str:
    """'train/good/000.png' -> 'train/good' (the class folder a file belongs to)."""
    return relative.rsplit("/", 1)[0] if "/" in relative else "."


def dataset_content(layout: MVTecLayout, workers: int | None = None) -> dict:
    """The content record of a dataset: ``{"algorithm", "sha256", "n_files", "bytes", "folders": {folder: sha256}}``."""
    root = Path(layout.root)
    files = sorted(dataset_files(layout), key=lambda path: path.relative_to(root).as_posix())
    stats = [path.stat() for path in files]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        hashes = list(pool.map(file_sha256, files))
    total = hashlib.sha256()
    folders = {}
    for path, stat, digest in zip(files, stats, hashes):
        relative = path.relative_to(root).as_posix()
        line = f"{relative}\t{stat.st_size}\t{digest}\n".encode()
        total.update(line)
        folders.setdefault(_folder_of(relative), hashlib.sha256()).update(line)
    content = {
        "algorithm": ALGORITHM,
        "sha256": total.hexdigest(),
        "n_files": len(files),
        "bytes": int(sum(stat.st_size for stat in stats)),
        "folders": {name: digest.hexdigest() for name, digest in sorted(folders.items())},
    }
    return content


def content_difference(current: dict, recorded: dict) -> str | None:
    """How `current` differs from the `recorded` content, in words (the first folder that differs); None when equal."""
    if current["sha256"] == recorded.get("sha256"):
        return None
    ours, theirs = current.get("folders", {}), recorded.get("folders") or {}
    for name in sorted(set(ours) | set(theirs)):
        if name not in theirs:
            return f"{name}/ was not in the dataset at training"
        if name not in ours:
            return f"{name}/ is missing"
        if ours[name] != theirs[name]:
            return f"the files of {name}/ differ in content from those at training"
    return f"its content differs ({current['n_files']} files, {current['bytes']} bytes; at training {recorded.get('n_files')} files, " \
           f"{recorded.get('bytes')} bytes)"
