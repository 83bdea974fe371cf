"""The image splits that train.py, finetune.py and test.py must agree on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from processing.data.images import MVTecLayout, split_train_validation


def validation_files(layout: MVTecLayout, info: dict) -> list[Path]:
    """The validation images a model was trained with, rebuilt from its info.json.

    The split is recomputed from the saved fraction and seed and checked against the saved list,
    so a dataset that changed since training is noticed instead of silently mixing images.
    """
    dataset = info["dataset"]
    _, val = split_train_validation(layout.train_good, dataset["validation_split"], dataset["seed"])
    saved = dataset.get("validation_files")
    if saved is not None and sorted(str(p.relative_to(layout.root)) for p in val) != sorted(saved):
        raise ValueError(
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
        raise ValueError(f"--finetune-split {fraction}: expected a fraction in (0, 1)")
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
