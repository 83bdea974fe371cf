"""What every training run writes beside its model: the info.json record and the inspection plots."""

from __future__ import annotations

import logging
from pathlib import Path

from autoencoder import bundle
from autoencoder.folders import file_sha256
from autoencoder.image_size import ImageSize
from autoencoder.model_info import SCHEMA_VERSION
from processing.data.fingerprint import dataset_content
from processing.data.images import load_images
from processing.data.roi import ROI_FILE, read_roi, write_roi
from processing.evaluation import plots
from processing.maps.inference import reconstruct
from processing.maps.kinds import get_map_kind, matching_map_for_loss

logger = logging.getLogger(__name__)


def build_info(
    config, architecture, size, layout, train_files, val_files, result, max_lr, finder, train_seconds, model_name, stamp, n_parameters,
    model_path: Path, roi: dict | None = None,
) -> dict:
    """info.json of a model folder; `model_path` is the saved .keras file (its SHA-256 is recorded)."""
    history = {key: [float(v) for v in values] for key, values in result.history.items()}
    best = result.best_epoch - 1
    return {
        "schema_version": SCHEMA_VERSION,  # autoencoder/model_info.py: what finetune.py and test.py check on reading
        "created": stamp,
        "command": bundle.command_line(),
        "settings": config.settings,
        "dataset": {
            "path": str(layout.root.resolve()),
            "name": layout.root.name,
            "validation_split": config.validation_split,
            "seed": config.seed,
            "n_train": len(train_files),
            "n_validation": len(val_files),
            "n_test": {name: len(files) for name, files in layout.test.items()},
            "validation_files": [str(path.relative_to(layout.root)) for path in val_files],
            "content": dataset_content(layout),  # finetune.py/test.py --data-dir must find the same bytes
        },
        "model": {
            "architecture": architecture.name,
            "file": model_name,
            "color_mode": config.color_mode,
            "color_mode_from": "the training images (-c auto)" if getattr(config, "color_detected", False) else "-c/--color",
            **({"tile": config.tile_grid.to_json()} if getattr(config, "tile_grid", None) is not None else {}),
            "image_size": ImageSize.of(size).to_json(),
            "channels": 1 if config.color_mode == "grayscale" else 3,
            "value_range": list(architecture.value_range),
            "preprocessing": architecture.preprocessing,
            "has_bottleneck": architecture.has_bottleneck,
            "output": architecture.output,
            **({"options": dict(config.architecture_options)} if config.architecture_options else {}),
            **({"roi": roi} if roi is not None else {}),  # the region of interest stored beside the model (processing/data/roi.py)
            "parameters": int(n_parameters),
            "sha256": file_sha256(model_path),  # checked before the model is loaded (bundle.check_model_file)
        },
        "training": {
            "loss": config.loss,
            "batch_size": config.batch_size,
            "epochs_cap": config.epochs,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "lr_finder": finder is not None,
            "lr_finder_suggestion": None if finder is None else finder.suggested_lr,
            "max_lr": max_lr,
            "base_lr": None if max_lr is None else max_lr / 10,
            "augment": config.augment,
            "seconds": round(train_seconds, 1),
            "best": {key: values[best] for key, values in history.items() if best < len(values)},
        },
        "versions": bundle.environment_versions(),
    }


def write_inspection_plots(model, config, size, layout, val_images, out_dir: Path, per_class: int = 8) -> None:
    """Input, reconstruction and residual map for validation images and each test class."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = get_map_kind(matching_map_for_loss(config.loss))
    groups = {"validation": val_images[:per_class]}
    for name, files in layout.test.items():
        groups[f"test_{name}"] = load_images(files[:per_class], config.color_mode, size)
    for name, images in groups.items():
        outputs = reconstruct(model, images, per_class)
        resmaps = kind.maps(images, outputs, "float64")
        # A model that outputs its own anomaly map has no reconstruction to show: the input stands in.
        reconstructions = outputs if outputs.shape == images.shape else images
        plots.plot_inspection(images, reconstructions, resmaps, out_dir / f"{name}.png")
    logger.info("inspection plots in %s", out_dir)


def store_roi(config, folder: Path) -> dict | None:
    """The region of interest (--roi, or the dataset's roi.png) written into the model folder; its info.json record."""
    if config.roi is None:
        return None
    region = read_roi(config.roi, "the dataset's region of interest" if getattr(config, "roi_detected", False) else "--roi")
    write_roi(folder / ROI_FILE, region)
    logger.info("region of interest %s: %.1f%% of every image is inspected", config.roi, 100 * region.mean())
    return {"file": ROI_FILE, "coverage": round(float(region.mean()), 6), "source": str(Path(config.roi).resolve())}
