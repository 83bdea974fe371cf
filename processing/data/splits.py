"""The image splits that train.py, finetune.py and test.py must agree on, and the dataset a model was trained on (--data-dir)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autoencoder.errors import UserError
from autoencoder.folders import file_sha256
from processing.data.fingerprint import content_difference, dataset_content
from processing.data.images import DatasetError, MVTecLayout, scan_dataset, split_train_validation

if TYPE_CHECKING:
    from autoencoder.model_info import DatasetInfo, ModelInfo

logger = logging.getLogger(__name__)


def check_dataset_location(info: ModelInfo, data_dir=None) -> None:
    """The cheap checks of :func:`model_dataset` (no listing unless `data_dir` is given)."""
    if data_dir is None:
        root = Path(info.dataset.path)
        if not root.is_dir():
            raise DatasetError(
                f"dataset folder {root} (from info.json) not found: moved? pass --data-dir with its new location"
            )
    else:
        model_dataset(info, data_dir, log=False)


def model_dataset(info: ModelInfo, data_dir=None, log: bool = True, require_defects: bool = True) -> MVTecLayout:
    """The dataset a model was trained on: the folder info.json names, or `data_dir` (--data-dir:
    the dataset moved since training), which must hold the same files, byte for byte, as info.json's
    ``dataset.content`` records (the same names and counts when info.json predates it). A dataset
    changed in place since training is reported with a warning. With `require_defects`, test/ must
    hold good images and a defect class (scan_dataset's require_test)."""
    recorded = info.dataset
    if data_dir is None:
        check_dataset_location(info)
        root = Path(recorded.path)
        layout = scan_dataset(root, require_test=require_defects) if log else _quiet_scan(root, require_defects)
        problem = _content_problem(layout, recorded)
        if problem and log:
            logger.warning("dataset %s changed since training: %s; results are not comparable with earlier ones", layout.root, problem)
        return layout
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"--data-dir {root} not found: expected the folder of the dataset the model was trained on")
    try:
        layout = scan_dataset(root, require_test=require_defects) if log else _quiet_scan(root, require_defects)
    except DatasetError as error:
        raise DatasetError(f"--data-dir {root}: {error}") from None
    problem = _moved_dataset_problem(layout, recorded) or _content_problem(layout, recorded)
    if problem:
        raise DatasetError(f"--data-dir {root}: {problem}; not the dataset the model was trained on ({recorded.path})")
    if recorded.content is None and log:
        logger.warning("--data-dir %s: info.json (written before schema version 2) records no content hash: only the file names and "
                       "counts were compared", root)
    return layout


def _content_problem(layout: MVTecLayout, recorded: DatasetInfo) -> str | None:
    """How the bytes of `layout` differ from info.json's dataset.content; None when equal or not recorded."""
    if recorded.content is None:
        return None
    return content_difference(dataset_content(layout), dataclasses.asdict(recorded.content))


def _quiet_scan(root: Path, require_test: bool = True) -> MVTecLayout:
    """scan_dataset without its summary line (the early check of a script; the run logs it later)."""
    from processing.data import images

    level = images.logger.level
    images.logger.setLevel(logging.WARNING)
    try:
        return scan_dataset(root, require_test=require_test)
    finally:
        images.logger.setLevel(level)


def _moved_dataset_problem(layout: MVTecLayout, recorded: DatasetInfo) -> str | None:
    """How `layout` differs from the dataset info.json describes; None when it holds the same files."""
    saved = recorded.validation_files
    if saved is None:
        return "info.json lists no validation files to compare with"
    present = {str(path.relative_to(layout.root)) for path in layout.train_good}
    missing = [name for name in saved if name not in present]
    if missing:
        return f"{missing[0]} not found (one of the {len(saved)} validation images info.json lists)"
    expected = recorded.n_train + recorded.n_validation
    if len(layout.train_good) != expected:
        return f"train/good holds {len(layout.train_good)} images; info.json recorded {expected}"
    classes, saved_classes = sorted(layout.test), sorted(recorded.n_test)
    if classes != saved_classes:
        return f"test/ holds the classes {', '.join(classes)}; info.json recorded {', '.join(saved_classes)}"
    for name in classes:
        if len(layout.test[name]) != recorded.n_test[name]:
            return f"test/{name} holds {len(layout.test[name])} images; info.json recorded {recorded.n_test[name]}"
    return None


def training_files(layout: MVTecLayout, info: ModelInfo) -> list[Path]:
    """The images a model's fitted maps (padim, knn, per-pixel statistics) are fitted on: train/good
    minus the validation split, then the defect-free images add_good.py added (info.json's
    lineage.added_good), each of which must still be where it was, once, and none of them a
    held-out image (:func:`held_out_problem`)."""
    dataset = info.dataset
    train, _ = split_train_validation(layout.train_good, dataset.validation_split, dataset.seed)
    added = [Path(path) for path in (info.lineage.added_good if info.lineage is not None else [])]
    where = f"one of the {len(added)} good images info.json's lineage.added_good lists (added by add_good.py)"
    for path in added:
        if not path.is_file():
            raise UserError(f"{path}: not found, {where}: put it back, or finetune the parent model")
    if len({path.resolve() for path in added}) < len(added):
        raise UserError("lineage.added_good lists an image twice: not an info.json written by add_good.py")
    problem = held_out_problem(added, layout, info)
    if problem:
        raise UserError(f"{problem[0]}: {problem[1]}, yet {where}: the figures would be optimistic; finetune the parent model")
    return train + added


def held_out_problem(paths: list[Path], layout: MVTecLayout, info: ModelInfo) -> tuple[Path, str] | None:
    """(path, why) of the first of `paths` that is one of the images that must stay unseen by the
    fitted maps: a test image of the dataset or one of the model's validation images, the same file
    (a link) or a copy of its bytes; None when there is none."""
    if not paths:
        return None
    held_out = {path: "a test image of the dataset" for path, _ in layout.test_files()}
    held_out |= {path: "one of the model's validation images" for path in validation_files(layout, info)}
    by_file = {}
    for path, why in held_out.items():
        if path.is_file():
            stat = path.stat()
            by_file[(stat.st_dev, stat.st_ino)] = why
    for path in paths:
        stat = path.stat()
        if (stat.st_dev, stat.st_ino) in by_file:
            return path, by_file[(stat.st_dev, stat.st_ino)]
    sizes = {path.stat().st_size for path in paths}
    by_digest = {file_sha256(path): why for path, why in held_out.items() if path.is_file() and path.stat().st_size in sizes}
    for path in paths:
        if path.stat().st_size in sizes and by_digest and (why := by_digest.get(file_sha256(path))):
            return path, f"a copy of {why}"
    return None


def validation_files(layout: MVTecLayout, info: ModelInfo) -> list[Path]:
    """The validation images a model was trained with, rebuilt from its info.json.

    The split is recomputed from the saved fraction and seed and checked against the saved list,
    so a dataset that changed since training is noticed instead of silently mixing images.
    """
    dataset = info.dataset
    _, val = split_train_validation(layout.train_good, dataset.validation_split, dataset.seed)
    saved = dataset.validation_files
    if saved is not None and sorted(str(p.relative_to(layout.root)) for p in val) != sorted(saved):
        raise UserError(
            f"{layout.root}/train/good changed since training: the validation split no longer matches info.json"
        )
    return val


def stratified_finetune_split(
    test_files: list[tuple[Path, str]], fraction: float = 0.1, seed: int = 42
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Split (file, class) pairs into a finetuning subset and the rest, class by class.

    Each class gives round(fraction * n) images, at least one when it has two or more, so every
    defect type and the good class appear in the finetuning subset. Deterministic for a seed and
    independent of the input order.
    """
    if not 0 < fraction < 1:
        raise UserError(f"--finetune-split {fraction}: expected a fraction in (0, 1)")
    by_class: dict[str, list[Path]] = {}
    for path, name in sorted(test_files, key=lambda item: (item[1], str(item[0]))):
        by_class.setdefault(name, []).append(path)
    rng = np.random.default_rng(seed)
    finetune, rest = [], []
    for name in sorted(by_class):
        files = by_class[name]
        n_pick = int(round(fraction * len(files)))
        if len(files) >= 2:
            n_pick = min(max(n_pick, 1), len(files) - 1)
        picked = set(rng.permutation(len(files))[:n_pick].tolist())
        for index, path in enumerate(files):
            (finetune if index in picked else rest).append((path, name))
    return finetune, rest
