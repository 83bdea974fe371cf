"""finetune.py: fit a detector's decision on the validation images and a finetuning subset.

Validation images (defect-free, held out of training) and a stratified finetuning subset of the
test images are handed to the detector chosen by ``--detector`` (processing/detectors/); its
result goes to ``results/<model>/finetuning/<name>/``. The test images outside the subset are left
for test.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from autoencoder import bundle
from autoencoder.losses import DEFAULT_METHOD_FOR_LOSS
from processing.data.images import scan_dataset
from processing.data.splits import stratified_finetune_split, validation_files
from processing.detectors.base import RESULT_FILE, FinetuneConfig, FinetuneData, finetuning_root, get_detector
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
    model = bundle.load_bundle(config.path)
    data = finetuning_data(model, config)
    fitted = detector.fit(model, config, data)
    out_dir = finetuning_root(model, config.results_root) / detector.result_name(config)
    with bundle.staging_folder(out_dir, replace=True) as staging:
        fitted.save(staging)
    logger.info("finetuning result in %s", out_dir)
    return out_dir


def finetuning_data(model: bundle.ModelBundle, config: FinetuneConfig) -> FinetuneData:
    """The model's validation images and the stratified finetuning subset of its test images."""
    layout = scan_dataset(model.info["dataset"]["path"], require_test=True)
    val_files = validation_files(layout, model.info)
    finetune_pairs, _ = stratified_finetune_split(layout.test_files(), config.finetune_split, config.seed)
    labels = np.array([name != "good" for _, name in finetune_pairs])
    logger.info(
        "%d validation images, %d finetuning images (%d defective)", len(val_files), len(finetune_pairs), labels.sum()
    )
    return FinetuneData(layout, val_files, [path for path, _ in finetune_pairs], labels)


def method_for_model(path) -> str:
    """The default map of a model: SSIM maps for SSIM losses, L2 maps for L2, padim for featureCAE."""
    folder, _ = bundle.resolve_model_path(path)
    loss = bundle.read_info(folder).get("settings", {}).get("loss", "ssim")
    return DEFAULT_METHOD_FOR_LOSS.get(loss, "ssim")
