"""finetune.py: fit a detector's decision on the validation images and a finetuning subset.

Validation images (defect-free, held out of training) and a stratified finetuning subset of the
test images are handed to the detector chosen by ``--detector`` (processing/detectors/); its
result goes to ``results/<model>/finetuning/<name>/``. The test images outside the subset are left
for test.py.

A result is never replaced in place: an existing ``finetuning/<name>/`` (or a ``test/<name>/``,
which test.py computed from an earlier finetuning result) stops the run unless
``config.overwrite``; then both are moved aside to ``<name>.replaced-<timestamp>`` once the new
result is complete, so no test result is left beside a finetuning result it was not computed from.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from autoencoder import bundle, folders
from autoencoder.losses import RESMAP_METHOD_FOR_LOSS
from processing.data.splits import model_dataset, stratified_finetune_split, validation_files
from processing.detectors.base import RESULT_FILE, FinetuneConfig, FinetuneData, get_detector
from processing.maps.postprocess import check_normalization, check_sigma

logger = logging.getLogger(__name__)

__all__ = ["RESULT_FILE", "FinetuneConfig", "finetune", "finetuning_data", "method_for_model"]


def finetune(config: FinetuneConfig) -> Path:
    """Fit the chosen detector and write its finetuning result; return the result folder."""
    check_sigma(config.smoothing_sigma)  # settings first: a bad flag is reported before the model is read
    check_normalization(config.normalize, config.dtype)
    detector = get_detector(config.detector)
    if config.method is None:
        config = replace(config, method=method_for_model(config.path))
    config = detector.check_config(config)
    folder, _ = bundle.resolve_model_path(config.path)
    name = detector.result_name(config)
    results = bundle.results_dir_of(bundle.read_info(folder), folder, config.results_root)
    out_dir, test_dir = results / "finetuning" / name, results / "test" / name
    check_not_written(out_dir, test_dir, config.overwrite)
    model = bundle.load_bundle(config.path)
    data = finetuning_data(model, config)
    fitted = detector.fit(model, config, data)
    stamp = folders.timestamp()
    hint = f"pass --overwrite to move it aside to {name}{folders.REPLACED}<time>"
    with bundle.staging_folder(out_dir, replace=config.overwrite, exists_hint=hint, stamp=stamp) as staging:
        fitted.save(staging)
        if test_dir.exists():  # computed from the result being replaced: stale from now on
            if not config.overwrite:
                raise folders.FolderExistsError(f"{test_dir} appeared meanwhile: {hint}")
            moved = folders.move_aside(test_dir, stamp)
            logger.warning("moved the test result %s aside to %s: it was computed from the finetuning result being replaced", test_dir, moved.name)
    logger.info("finetuning result in %s", out_dir)
    return out_dir


def check_not_written(out_dir: Path, test_dir: Path, overwrite: bool) -> None:
    """Stop (one line naming the folder and --overwrite) when a run would replace a result."""
    if overwrite:
        return
    moved = f"{out_dir.name}{folders.REPLACED}<time>"
    if out_dir.exists():
        also = f" and {test_dir}" if test_dir.exists() else ""
        raise folders.FolderExistsError(
            f"{out_dir} already exists: pass --overwrite to move it{also} aside (to {moved}) and finetune again"
        )
    if test_dir.exists():
        raise folders.FolderExistsError(
            f"{test_dir} already exists (a test result of an earlier finetuning): pass --overwrite to move it "
            f"aside (to {moved}) and finetune again"
        )


def finetuning_data(model: bundle.ModelBundle, config: FinetuneConfig) -> FinetuneData:
    """The model's validation images and the stratified finetuning subset of its test images."""
    layout = model_dataset(model.info, config.data_dir)
    val_files = validation_files(layout, model.info)
    finetune_pairs, _ = stratified_finetune_split(layout.test_files(), config.finetune_split, config.seed)
    labels = np.array([name != "good" for _, name in finetune_pairs])
    logger.info(
        "%d validation images, %d finetuning images (%d defective)", len(val_files), len(finetune_pairs), labels.sum()
    )
    return FinetuneData(layout, val_files, [path for path, _ in finetune_pairs], labels)


def method_for_model(path) -> str:
    """The residual map that matches the loss a model was trained with (SSIM maps for SSIM losses, else L2)."""
    folder, _ = bundle.resolve_model_path(path)
    loss = bundle.read_info(folder).get("settings", {}).get("loss", "ssim")
    return RESMAP_METHOD_FOR_LOSS.get(loss, "ssim")
