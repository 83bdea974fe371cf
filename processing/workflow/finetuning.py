"""Choose the (minimum defect area, threshold) pair of a trained model (what finetune.py runs).

Validation images (defect-free, held out of training) fix, for every min_area, the lowest threshold
at which they all stay clean; a stratified finetuning subset of the test images then picks the
pair with the best balanced accuracy. The test images outside that subset are left for test.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autoencoder import bundle
from processing.evaluation import plots
from processing.data.images import scan_dataset
from processing.maps.inference import compute_resmaps
from processing.maps.postprocess import ResmapPostprocessor, check_normalization, check_sigma, fit_pixel_statistics, smooth_resmaps
from processing.data.splits import stratified_finetune_split, validation_files
from processing.decision.segmentation import validate_clear_border
from processing.decision.thresholds import DEFAULT_MIN_AREAS, search_min_area_threshold

logger = logging.getLogger(__name__)

METHODS = ("ssim", "l2")
DTYPES = ("float64", "uint8")
RESULT_FILE = "finetuning_result.json"


@dataclass
class FinetuneConfig:
    path: str
    method: str | None = None  # residual map; None: the one matching the model's training loss
    dtype: str = "float64"
    finetune_split: float = 0.1
    seed: int = 42
    batch_size: int = 16
    results_root: str = "results"
    smoothing_sigma: float = 0.0  # Gaussian sigma (pixels) applied to the residual maps; 0: none
    clear_border: bool = True  # drop defect components that touch the image border (the original toolkit's rule)
    normalize: str = "none"  # "pixel": standardise every pixel by the training images' maps (after smoothing)
    detector: str = "segmentation"  # or "kde": latent density OR reconstruction error (processing/density.py)
    bandwidth: float | None = None  # kde: kernel width; None: cross-validated
    pca_components: int | None = None  # kde: PCA before the KDE; None/0: none
    refit_density: bool = False  # kde: refit density.npz even when the model folder has one


def check_method_dtype(method: str, dtype: str) -> None:
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")


def finetuning_dir(model: bundle.ModelBundle, method: str, dtype: str, results_root: str = "results") -> Path:
    return model.results_dir(results_root) / "finetuning" / f"{method}_{dtype}"


def finetune(config: FinetuneConfig) -> Path:
    """Run the search and write `finetuning_result.json` and its plots; return the folder."""
    check_sigma(config.smoothing_sigma)  # settings first: a bad flag is reported before the model is read
    check_normalization(config.normalize, config.dtype)
    if config.method is None:
        config = replace(config, method=method_for_model(config.path))
    if config.detector == "kde":
        from processing.decision.density import finetune_kde

        return finetune_kde(config)
    if config.detector != "segmentation":
        raise ValueError(f"--detector {config.detector!r}: expected segmentation or kde")
    check_method_dtype(config.method, config.dtype)
    sigma = check_sigma(config.smoothing_sigma)
    clear_border = validate_clear_border(config.clear_border, "clear_border")
    normalize = check_normalization(config.normalize, config.dtype)
    model = bundle.load_bundle(config.path)
    layout = scan_dataset(model.info["dataset"]["path"], require_test=True)
    color_mode = model.info["model"]["color_mode"]
    size = model.info["model"]["image_size"]

    val_files = validation_files(layout, model.info)
    finetune_pairs, _ = stratified_finetune_split(layout.test_files(), config.finetune_split, config.seed)
    finetune_files = [path for path, _ in finetune_pairs]
    labels = np.array([name != "good" for _, name in finetune_pairs])
    logger.info(
        "%d validation images, %d finetuning images (%d defective)", len(val_files), len(finetune_files), labels.sum()
    )

    started = time.perf_counter()
    postprocess = ResmapPostprocessor(sigma)
    if normalize == "pixel":
        postprocess = ResmapPostprocessor(sigma, *pixel_statistics(model, layout, config, sigma))

    def maps(paths):
        resmaps = compute_resmaps(model.model, paths, color_mode, size, config.method, config.dtype, config.batch_size)
        return postprocess(resmaps)

    val_resmaps = maps(val_files)
    finetune_resmaps = maps(finetune_files)
    search = search_min_area_threshold(
        val_resmaps, finetune_resmaps, labels, config.dtype, min_areas=DEFAULT_MIN_AREAS,
        clear_border=clear_border,
    )
    seconds = time.perf_counter() - started
    logger.info(
        "best pair: min_area=%d threshold=%.4g balanced accuracy=%.3f (%.1f s)",
        search.best_min_area, search.best_threshold, search.best_score, seconds,
    )

    out_dir = finetuning_dir(model, config.method, config.dtype, config.results_root)
    best = int(np.flatnonzero(np.asarray(search.min_areas) == search.best_min_area)[0])
    result = {
        "model": str(model.model_file),
        "method": config.method,
        "dtype": config.dtype,
        "smoothing_sigma": sigma,
        "clear_border": clear_border,
        "normalize": normalize,
        # Standardised maps are unbounded: test.py bins its pixel metrics over this range (the
        # span of the validation and finetuning maps, widened; values outside land in the end bins).
        **({"value_range": widened_range(val_resmaps, finetune_resmaps)} if normalize != "none" else {}),
        "best_min_area": int(search.best_min_area),
        "best_threshold": float(search.best_threshold),
        "best_score": float(search.best_score),
        "best_tpr": float(search.tpr[best]),
        "best_tnr": float(search.tnr[best]),
        "finetune_split": config.finetune_split,
        "seed": config.seed,
        "n_validation": len(val_files),
        "n_finetune": len(finetune_files),
        "finetuning_files": [str(path.relative_to(layout.root)) for path in finetune_files],
        "settings": vars(config) | {"command": bundle.command_line()},
        "search": {
            "min_areas": [int(a) for a in search.min_areas],
            "thresholds": [float(t) for t in search.pair_thresholds],
            "tpr": [float(v) for v in search.tpr],
            "tnr": [float(v) for v in search.tnr],
            "score": [float(v) for v in search.scores],
        },
        "seconds": round(seconds, 2),
    }
    with bundle.staging_folder(out_dir, replace=True) as staging:
        postprocess.save_statistics(staging)
        bundle.write_json(staging / RESULT_FILE, result)
        plots.plot_threshold_vs_min_area(search.min_areas, search.pair_thresholds, search.best_min_area, staging / "threshold_vs_min_area.png")
        plots.plot_scores_vs_min_area(search.min_areas, search.tpr, search.tnr, search.scores, search.best_min_area, staging / "scores_vs_min_area.png")
    logger.info("finetuning result in %s", out_dir)
    return out_dir


def pixel_statistics(model: bundle.ModelBundle, layout, config: FinetuneConfig, sigma: float):
    """Per-pixel mean and std of the smoothed maps of the model's *training* images.

    The validation images are kept out: they set the threshold, and standardising them with
    their own statistics would make them look cleaner than unseen images.
    """
    from processing.data.images import split_train_validation

    dataset = model.info["dataset"]
    train_files, _ = split_train_validation(layout.train_good, dataset["validation_split"], dataset["seed"])
    logger.info("per-pixel statistics of %d training maps", len(train_files))
    resmaps = compute_resmaps(
        model.model, train_files, model.info["model"]["color_mode"], model.info["model"]["image_size"],
        config.method, config.dtype, config.batch_size,
    )
    return fit_pixel_statistics(smooth_resmaps(resmaps, sigma))


def widened_range(*resmaps: np.ndarray) -> list[float]:
    """[min - span/4, max + span] over the given maps: room for test maps beyond the finetuning ones."""
    lowest = min(float(np.min(maps)) for maps in resmaps)
    highest = max(float(np.max(maps)) for maps in resmaps)
    span = max(highest - lowest, 1e-12)
    return [lowest - 0.25 * span, highest + span]


def method_for_model(path) -> str:
    """The residual map that matches the loss a model was trained with (SSIM maps for SSIM losses, else L2)."""
    from autoencoder.losses import RESMAP_METHOD_FOR_LOSS

    folder, _ = bundle.resolve_model_path(path)
    loss = bundle.read_info(folder).get("settings", {}).get("loss", "ssim")
    return RESMAP_METHOD_FOR_LOSS.get(loss, "ssim")


def result_value_range(finetuning: dict) -> tuple[float, float]:
    """The range of a finetuning result's maps: recorded for standardised maps, else the method's own."""
    from processing.maps.resmaps import resmap_value_range

    if "value_range" in finetuning:
        return tuple(finetuning["value_range"])
    return resmap_value_range(finetuning["method"], finetuning["dtype"])
