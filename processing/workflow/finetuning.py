"""finetune.py: fit a detector's decision on the validation images and a finetuning subset.

Validation images (defect-free, held out of training) and a stratified finetuning subset of the
test images are handed to the detector chosen by ``--detector`` (processing/detectors/); its
result goes to ``results/<model>/finetuning/<name>/``. The test images outside the subset are left
for test.py.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from autoencoder import bundle, folders
from processing.data.images import GOOD_CLASS, DatasetError
from processing.data.reviews import read_reviews
from processing.data.splits import model_dataset, stratified_finetune_split, validation_files
from processing.data.synthetic_subset import draw_synthetic_defects
from processing.detectors.base import RESULT_FILE, FinetuneConfig, FinetuneData, get_detector
from processing.evaluation.metrics import image_auroc
from processing.maps.kinds import auto_candidates, default_map_for_loss
from processing.workflow.results import ResultsTree

logger = logging.getLogger(__name__)

SYNTHETIC_DIR = "synthetic"  # in a finetuning result: the synthetic defects it was chosen on

__all__ = ["RESULT_FILE", "FinetuneConfig", "finetune", "finetuning_data"]


def checked_config(config: FinetuneConfig, opened: bundle.ModelFolder | None = None) -> tuple[FinetuneConfig, list[str]]:
    """(settings with the map filled in, candidate maps), every check that needs no TensorFlow done:
    the flags, and whether the detector and each map suit the model (its info.json; `opened`: the
    model folder, when already opened). finetune.py runs this before importing TensorFlow."""
    config.validate()  # settings first: a bad flag is reported before the model is read
    detector = get_detector(config.detector)
    opened = opened or bundle.open_model_folder(config.path)
    info = opened.info
    if config.method is None:
        config = replace(config, method=default_map_for_loss(info.training.loss))
    candidates = candidate_methods(config, info)
    for method in candidates:  # every setting is checked before the model is read
        candidate = detector.check_config(replace(config, method=method))
        detector.check_model_info(candidate, info)
    return config, candidates


def finetune(config: FinetuneConfig, opened: bundle.ModelFolder | None = None) -> Path:
    """Fit the chosen detector and write its finetuning result; return the result folder. `opened`:
    the model folder when the caller opened it (finetune.py: read and hashed once per run)."""
    opened = opened or bundle.open_model_folder(config.path)
    config, candidates = checked_config(config, opened)
    detector = get_detector(config.detector)
    tree = ResultsTree.of(opened.info, opened.folder, config.results_root)
    if len(candidates) == 1:
        config = detector.check_config(replace(config, method=candidates[0]))
        name = detector.result_name(config)
        check_not_written(tree.finetuning_folder(name), tree.test_folder(name), config.overwrite)
    model = bundle.load_bundle(opened)
    data = finetuning_data(model, config)
    try:
        if len(candidates) == 1:
            fitted = detector.fit(model, config, data)
        else:
            config, fitted = choose_candidate(detector, model, config, data, candidates)
        return save_result(fitted, config, data, tree)
    finally:
        remove_synthetic(data)


def remove_synthetic(data: FinetuneData) -> None:
    """Remove the temporary folder of the synthetic defects a finetuning was chosen on (if any)."""
    if data.synthetic_dir is not None:
        shutil.rmtree(data.synthetic_dir, ignore_errors=True)


def save_result(fitted, config: FinetuneConfig, data: FinetuneData, tree: ResultsTree) -> Path:
    """Write a fitted detector's result (and the synthetic defects it was chosen on) through a staging folder."""
    name = fitted.result_name(config)
    out_dir, test_dir = tree.finetuning_folder(name), tree.test_folder(name)
    check_not_written(out_dir, test_dir, config.overwrite)
    stamp = folders.timestamp()
    hint = f"pass --overwrite to move it aside to {name}{folders.REPLACED}<time>"
    with bundle.staging_folder(out_dir, replace=config.overwrite, exists_hint=hint, stamp=stamp) as staging:
        fitted.save(staging)
        if data.synthetic_dir is not None:
            shutil.copytree(data.synthetic_dir, staging / SYNTHETIC_DIR)
        if test_dir.exists():  # computed from the result being replaced: stale from now on
            if not config.overwrite:
                raise folders.FolderExistsError(f"{test_dir} appeared meanwhile: {hint}")
            moved = folders.move_aside(test_dir, stamp)
            logger.warning(
                "moved the test result %s aside to %s: it was computed from the finetuning result being replaced", test_dir, moved.name
            )
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


def candidate_methods(config: FinetuneConfig, info) -> list[str]:
    """The maps finetuning tries: config.candidates ("auto": every single and combined map that
    suits the model of `info`), else config.method."""
    if not config.candidates:
        return [config.method]
    if list(config.candidates) == ["auto"]:
        return auto_candidates(info.model.output, info.was_trained)
    return list(dict.fromkeys(config.candidates))


def choose_candidate(detector, model, config: FinetuneConfig, data: FinetuneData, candidates: list[str]):
    """Fit every candidate map; keep the one with the best finetuning-subset image AUROC (then
    balanced accuracy; ties: the earlier candidate). Its result lists every candidate's scores."""
    fits = []
    for method in candidates:
        candidate = detector.check_config(replace(config, method=method))
        try:
            fitted = detector.fit(model, candidate, data)
        except ValueError as error:  # e.g. padim on a single training image: the other candidates may still fit
            if len(candidates) == 1 or (method == candidates[-1] and not fits):
                raise
            logger.warning("candidate %s left out: %s", method, error)
            continue
        auroc = subset_image_auroc(fitted, data.finetune_files, data.labels)
        logger.info(
            "candidate %s: finetuning-subset image AUROC %s, balanced accuracy %.3f",
            method,
            "n/a" if auroc is None else f"{auroc:.3f}",
            fitted.result.balanced_accuracy,
        )
        fits.append((candidate, fitted, auroc))
    best = max(range(len(fits)), key=lambda i: (-np.inf if fits[i][2] is None else fits[i][2], fits[i][1].result.balanced_accuracy, -i))
    config, fitted, _ = fits[best]
    fitted.result.candidates = {
        candidate.method: {"finetuning_image_auroc": auroc, "balanced_accuracy": result.result.balanced_accuracy}
        for candidate, result, auroc in fits
    }
    candidates = [candidate.method for candidate, _, _ in fits]
    fitted.result.chosen_by = "finetuning-subset image AUROC, then balanced accuracy"
    logger.info("chose %s among %s", config.method, ", ".join(candidates))
    return config, fitted


def subset_image_auroc(detector, files, labels) -> float | None:
    """Image AUROC of a detector's scores on labelled files (None when they hold one class only)."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    scores = [detector.score(images).image_scores for _, images in detector.inputs_of_files(files)]
    return float(image_auroc(labels, np.concatenate(scores)))


def finetuning_data(model: bundle.ModelBundle, config: FinetuneConfig) -> FinetuneData:
    """The model's validation images and the finetuning subset: a stratified share of its test
    images, or, when test/ holds no defect class (or with config.synthetic_defects), synthetic
    defects drawn into the validation images (:func:`synthetic_finetuning_data`)."""
    layout = model_dataset(model.info, config.data_dir, require_defects=False)
    val_files = validation_files(layout, model.info)
    if not layout.defect_types or config.synthetic_defects:
        return with_reviews(synthetic_finetuning_data(layout, val_files, model.info.model.color_mode, config), config, model.info)
    if GOOD_CLASS not in layout.test:
        raise DatasetError(f"{layout.root / 'test' / GOOD_CLASS} not found or empty: expected defect-free test images there")
    finetune_pairs, _ = stratified_finetune_split(layout.test_files(), config.finetune_split, config.seed)
    labels = np.array([name != "good" for _, name in finetune_pairs])
    logger.info("%d validation images, %d finetuning images (%d defective)", len(val_files), len(finetune_pairs), labels.sum())
    return with_reviews(FinetuneData(layout, val_files, [path for path, _ in finetune_pairs], labels), config, model.info)


def with_reviews(data: FinetuneData, config: FinetuneConfig, info=None) -> FinetuneData:
    """`data` with the reviewed images of config.reviewed added to the finetuning images (those of
    the dataset's test/ are then left out of test.py's images, as the finetuning subset is). Those
    add_good.py made training images of the model (`info`'s lineage) are left out: a training
    image would look cleaner to the decision than a new one."""
    if not config.reviewed:
        return data
    reviewed = read_reviews(config.reviewed)
    known = {Path(path).resolve() for path in data.finetune_files}
    trained = {Path(path).resolve() for path in (info.lineage.added_good if info is not None and info.lineage is not None else [])}
    if trained & {path.resolve() for path, _ in reviewed.images}:
        logger.info("%d reviewed images are training images of the model (added by add_good.py): left out of the finetuning data",
                    len(trained & {path.resolve() for path, _ in reviewed.images}))
    known |= trained
    added = [(path, label) for path, label in reviewed.images if path.resolve() not in known]
    files = list(data.finetune_files) + [path for path, _ in added]
    labels = np.concatenate([data.labels, np.array([label for _, label in added], dtype=bool)])
    logger.info("%d reviewed images join the finetuning data (%d defective, %d good; %d already in it)", len(added),
                sum(label for _, label in added), sum(not label for _, label in added), len(reviewed.images) - len(added))
    return replace(data, finetune_files=files, labels=labels, reviewed=reviewed.record())


def synthetic_finetuning_data(layout, val_files: list[Path], color_mode: str, config: FinetuneConfig) -> FinetuneData:
    """A finetuning subset without real defects: synthetic defects drawn into copies of the validation
    images (processing/data/synthetic_subset.py) as the defective part; as the good part the
    stratified share of test/good when there is one, else the validation images themselves (the
    search then keeps them all clean and maximises the synthetic defects found)."""
    reason = "--synthetic-defects" if layout.defect_types else f"{layout.root / 'test'} holds no defect class"
    test_good = [(path, GOOD_CLASS) for path in layout.test.get(GOOD_CLASS, [])]
    goods = [path for path, _ in stratified_finetune_split(test_good, config.finetune_split, config.seed)[0]] if len(test_good) >= 2 else []
    good_source = f"{len(goods)} images of test/{GOOD_CLASS}" if goods else "the validation images"
    folder = Path(tempfile.mkdtemp(prefix="synthetic-defects-"))
    drawn = draw_synthetic_defects(val_files, folder, color_mode, config.seed)
    goods = goods or list(val_files)
    files = goods + [image.path for image in drawn]
    labels = np.array([False] * len(goods) + [True] * len(drawn))
    kinds = {kind: sum(image.kind == kind for image in drawn) for kind in dict.fromkeys(image.kind for image in drawn)}
    logger.info("%s: finetuning on %d synthetic defects drawn into the %d validation images, and %s as good images",
                reason, len(drawn), len(val_files), good_source)
    subset = {
        "source": "synthetic defects",
        "why": reason,
        "defective": f"{len(drawn)} synthetic defects drawn into the {len(val_files)} validation images",
        "good": good_source,
        "kinds": kinds,
        "seed": config.seed,
        "folder": SYNTHETIC_DIR,
    }
    return FinetuneData(layout, val_files, files, labels, subset=subset, synthetic_dir=folder)
