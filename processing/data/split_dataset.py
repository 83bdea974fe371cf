"""Turn a flat two-class (or more) image folder into the MVTec AD layout (what scripts/split.py runs).

Input, e.g. the malaria cell images::

    cell_images/Uninfected/*.png     the normal class
    cell_images/Parasitized/*.png    anomalies (every other sub-folder is an anomaly class)

Output::

    <out>/train/good/       train_fraction of the normal images
    <out>/test/good/        the other normal images
    <out>/test/<class>/     every image of each other class
    <out>/split_settings.json

Files are symbolic links to the originals (absolute targets) unless `copy`. The normal images are
shuffled with `seed` after sorting by name, so the split depends only on the file names and the
seed. The output is written into a temporary sibling folder and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from processing.data.images import GOOD_CLASS, IMAGE_EXTENSIONS, DatasetError, writing_dataset

logger = logging.getLogger(__name__)

SETTINGS_FILE = "split_settings.json"


@dataclass
class SplitSummary:
    """Where each image went: lists of (source file, destination file) per output folder."""

    out_dir: Path
    train_good: list[tuple[Path, Path]] = field(default_factory=list)
    test: dict[str, list[tuple[Path, Path]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"train/good": len(self.train_good)} | {f"test/{name}": len(pairs) for name, pairs in self.test.items()}


def class_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (hidden files skipped)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def find_classes(source: Path, normal: str) -> dict[str, list[Path]]:
    """{class name: sorted image files} of the sub-folders of `source`; errors name the folder."""
    if not source.is_dir():
        raise DatasetError(f"--input-dir {source} not found: expected a folder with one sub-folder per class")
    if not (source / normal).is_dir():
        found = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DatasetError(f"--normal {normal}: class folder {source / normal} not found (classes found: {', '.join(found) or 'none'})")
    classes = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = class_images(folder)
        if not images:
            raise DatasetError(f"class folder {folder} holds no image: expected files ending in {'/'.join(IMAGE_EXTENSIONS)}")
        classes[folder.name] = images
    if len(classes) < 2:
        raise DatasetError(f"--input-dir {source}: only class {normal} found; expected at least one anomaly class folder beside it")
    if GOOD_CLASS in classes and normal != GOOD_CLASS:
        raise DatasetError(f"--input-dir {source}: an anomaly class may not be named {GOOD_CLASS!r} (the MVTec name of normal images)")
    return classes


def split_normal(files: list[Path], train_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, test) of the normal images: round(train_fraction * n) for training, at least one each."""
    if not 0 < train_fraction < 1:
        raise DatasetError(f"--train-fraction {train_fraction}: expected a fraction in (0, 1)")
    if len(files) < 2:
        raise DatasetError(f"normal class {files[0].parent if files else ''} has {len(files)} image; expected at least 2 (train and test)")
    n_train = min(max(round(train_fraction * len(files)), 1), len(files) - 1)
    order = np.random.default_rng(seed).permutation(len(files))
    train = sorted((files[i] for i in order[:n_train]), key=lambda p: p.name)
    test = sorted((files[i] for i in order[n_train:]), key=lambda p: p.name)
    return train, test


def _check_output(out_dir: Path, source: Path, overwrite: bool) -> None:
    if out_dir.resolve() == source.resolve() or source.resolve() in out_dir.resolve().parents:
        raise DatasetError(f"--output-dir {out_dir}: must not lie inside --input-dir {source}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"--output-dir {out_dir} is a file: expected a folder for the dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise DatasetError(f"--output-dir {out_dir} is not empty: pass --overwrite to replace it")
        if not (out_dir / SETTINGS_FILE).is_file():
            raise DatasetError(f"refusing to replace {out_dir}: it was not written by split.py (no {SETTINGS_FILE})")


def _place(source: Path, destination: Path, copy: bool) -> None:
    if copy:
        shutil.copy2(source, destination)
    else:
        os.symlink(source.resolve(), destination)


def split_dataset(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    normal: str,
    train_fraction: float = 0.8,
    seed: int = 42,
    copy: bool = False,
    overwrite: bool = False,
) -> SplitSummary:
    """Write the MVTec-layout split of the class folders of `input_dir` into `output_dir`."""
    source, out_dir = Path(input_dir), Path(output_dir)
    if not 0 < train_fraction < 1:
        raise DatasetError(f"--train-fraction {train_fraction}: expected a fraction in (0, 1)")
    classes = find_classes(source, normal)
    _check_output(out_dir, source, overwrite)
    train, test_good = split_normal(classes[normal], train_fraction, seed)

    summary = SplitSummary(out_dir=out_dir)
    plan = [("train/good", train), ("test/good", test_good)]
    plan += [(f"test/{name}", files) for name, files in classes.items() if name != normal]
    settings = {
        "input_dir": str(source.resolve()),
        "normal": normal,
        "anomaly_classes": [name for name in classes if name != normal],
        "train_fraction": train_fraction,
        "seed": seed,
        "files": "copies" if copy else "symbolic links",
    }
    with writing_dataset(out_dir, settings, SETTINGS_FILE, "split", overwrite) as staging:
        with tqdm(total=sum(len(files) for _, files in plan), desc="split", unit="img", disable=None) as progress:
            for folder, files in plan:
                (staging / folder).mkdir(parents=True)
                pairs = []
                for path in files:
                    _place(path, staging / folder / path.name, copy)
                    pairs.append((path, out_dir / folder / path.name))
                    progress.update()
                if folder == "train/good":
                    summary.train_good = pairs
                else:
                    summary.test[folder.split("/", 1)[1]] = pairs
        settings["counts"] = summary.counts()  # written when the block ends
    logger.info("%s -> %s: %s", source, out_dir, summary.counts())
    return summary
