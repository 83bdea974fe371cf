"""add_good.py: add defect-free images to a finetuned model without training or refitting it.

The fitted maps (padim's Gaussians, knn's memory bank) keep beside their state, in the finetuning
result, the running sums they were fitted from (``padim_sums.npz``: count, mean and scatter per
position; ``knn_pool.npz``: the random pool of training vectors and its generator). Adding good
images continues those sums with the new images only, one backbone pass over them: the new state
equals a fit on the earlier training images and the new ones together. The network is unchanged.

Written, nothing replaced:

- a new model folder beside the old one (``<dataset>/<architecture>/<loss>/<time>``): the same
  files, with info.json's ``lineage`` naming the parent folder and every good image added so far
  (a later finetune.py on the new folder fits on them too);
- under its results, each selected finetuning result again: the updated states and sums, the
  combination of a combined map refitted, and the decision (min_area, threshold) chosen again on the
  same validation and finetuning images with the result's own settings, since the maps changed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoencoder import bundle, folders
from autoencoder.errors import UserError
from autoencoder.model_info import check_info
from processing.data.images import DatasetError, image_size, list_images
from processing.data.reviews import read_reviews
from processing.data.splits import held_out_problem, model_dataset, training_files, validation_files
from processing.detectors.base import RESULT_FILE, FinetuneConfig
from processing.detectors.segmentation import SegmentationDetector
from processing.maps.map_model import check_growable
from processing.workflow import finetuning
from processing.workflow.results import ResultsTree

logger = logging.getLogger(__name__)


@dataclass
class AddGoodConfig:
    """The settings of one add_good.py run."""

    path: str  # the model folder (or its .keras file)
    images: str | None = None  # a folder of defect-free images
    reviewed: list[str] = field(default_factory=list)  # review CSVs: their images reviewed as good are added too
    method: str | None = None  # only the finetuning results of this map (None: every one)
    dtype: str | None = None
    results_root: str = "results"
    data_dir: str | None = None  # the dataset's folder when it moved since training
    batch_size: int = 16
    epochs: int = 0  # > 0: continue training the network this many epochs at most, then fit every map again

    def validate(self) -> None:
        from autoencoder.checks import check_non_negative_int, check_positive_int

        check_positive_int(self.batch_size, "-b/--batch", "an inference batch size")
        check_non_negative_int(self.epochs, "--epochs", "a number of epochs")
        if self.images is None and not self.reviewed:
            raise UserError("give the good images to add: -i/--images FOLDER and/or --reviewed review.csv")
        if self.images is not None and not Path(self.images).is_dir():
            what = "is a file" if Path(self.images).exists() else "not found"
            raise DatasetError(f"--images {self.images} {what}: expected a folder of defect-free images")
        if self.reviewed:
            good_reviewed(self.reviewed)  # the files checked before TensorFlow


def good_reviewed(files) -> list[Path]:
    """The images of review CSVs an inspector labelled good (confirmed false alarms among them)."""
    reviewed = read_reviews(files)
    good = [path for path, defective in reviewed.images if not defective]
    if not good:
        raise UserError(f"--reviewed {' '.join(map(str, files))}: no image is labelled good; expected rows whose review is 'good'")
    return good


def selected_results(opened: bundle.ModelFolder, config: AddGoodConfig) -> list:
    """(folder, result, its finetuning settings) of every selected finetuning result, each checked to
    be one whose fitted maps can take more images (before TensorFlow)."""
    if config.epochs:
        check_continuation(opened, config.epochs)
    tree = ResultsTree.of(opened.info, opened.folder, config.results_root)
    selected, others = [], []
    for folder, detector, result in tree.select(config.method, config.dtype):
        if detector is not SegmentationDetector:
            others.append(f"finetuning result {folder.name}: the {detector.name} detector fits its own density, which add_good.py does "
                          "not continue; finetune the new model folder instead")
            continue
        finetune = finetune_config(result, folder, opened.folder, config)
        if not config.epochs:  # with --epochs, a new network: every map is fitted again, on the training images and the new ones
            check_growable(folder, result.spec, bool(result.partners), result.normalize)
        selected.append((folder, result, finetune))
    if not selected:
        raise UserError(others[0])
    for line in others:
        logger.warning("%s: left out", line)
    return selected


def check_continuation(opened: bundle.ModelFolder, epochs: int) -> None:
    """One line when the network of `opened` cannot be trained on (add_good.py --epochs)."""
    info, what = opened.info, f"--epochs {epochs}: {opened.folder}"
    if not info.was_trained:
        raise UserError(f"{what} holds no trained network (train.py --epochs 0): nothing to continue; its fitted maps take the new "
                        "images without --epochs")
    if info.adversarial is not None or info.tiled:
        raise UserError(f"{what} was trained {'adversarially' if info.adversarial is not None else 'on tiles'}, which add_good.py "
                        "does not continue: train again with the new images in train/good")


def new_good_images(config: AddGoodConfig, layout, info) -> list[Path]:
    """The images to add (those of --images, then those --reviewed labels good), as absolute paths,
    each once: each readable; none of the dataset's test or validation images (test.py's and the
    threshold's figures would be optimistic); those already among the training images left out
    with a warning."""
    sources = [(Path(path).absolute(), "--images") for path in (list_images(config.images) if config.images is not None else [])]
    sources += [(Path(path).absolute(), "--reviewed") for path in (good_reviewed(config.reviewed) if config.reviewed else [])]
    resolved: dict[Path, tuple[Path, str]] = {}
    for path, flag in sources:
        image_size(path)  # reads the header: an unreadable file is named before anything is computed
        resolved.setdefault(path.resolve(), (path, flag))
    problem = held_out_problem([path for path, _ in resolved.values()], layout, info)
    if problem:
        flag = next(flag for path, flag in resolved.values() if path == problem[0])
        raise UserError(f"{flag} {problem[0]}: {problem[1]}, which must stay unseen; add only new defect-free images")
    known = {path.resolve() for path in training_files(layout, info)}
    new = [path for key, (path, _) in resolved.items() if key not in known]
    if len(new) < len(resolved):
        logger.warning("%d of the %d images given are already training images of the model: left out", len(resolved) - len(new),
                       len(resolved))
    if not new:
        raise UserError("every image given is already one of the model's training images; nothing to add")
    return new


def lineage_info(info, parent: Path, added: list[Path]) -> dict:
    """info.json's object for the new model folder: the parent's, with its ``lineage``."""
    earlier = list(info.lineage.added_good) if info.lineage is not None else []
    return info.to_json() | {"lineage": {
        "parent": str(parent.resolve()),
        "added_good": earlier + [str(path) for path in added],
        "added_last": len(added),
        "created": bundle.timestamp(),
        "command": bundle.command_line(),
    }}


def finetune_config(result, folder: Path, new_folder: Path, config: AddGoodConfig) -> FinetuneConfig:
    """The settings the result in `folder` was finetuned with, for the new model folder: its checked
    fields (map, post-processing, decision rule, seed, partners), and from its ``settings`` only what
    they do not record, each checked; one line naming the file otherwise."""
    source = f"{folder / RESULT_FILE}: settings"
    settings = result.settings
    extra = {}
    for key, check in (("min_detection", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))),
                       ("synthetic_defects", lambda v: isinstance(v, bool)),
                       ("reviewed", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))):
        if key in settings:
            if not check(settings[key]):
                raise UserError(f"{source}.{key} {settings[key]!r}: not what finetune.py writes (edited by hand?)")
            extra[key] = settings[key]
    finetune = FinetuneConfig(
        path=str(new_folder), method=result.method, dtype=result.dtype,
        seed=result.seed if result.seed is not None else FinetuneConfig.seed,
        finetune_split=result.finetune_split if result.finetune_split is not None else FinetuneConfig.finetune_split,
        batch_size=config.batch_size, results_root=config.results_root, smoothing_sigma=result.smoothing_sigma,
        clear_border=result.clear_border, normalize=result.normalize, image_score=result.image_score,
        combine_with=[f"{partner['model']}:{partner['method']}" for partner in result.partners or []], rule=result.rule,
        max_false_alarms=result.max_false_alarms or 0.0, data_dir=config.data_dir, **extra,
    )
    try:
        finetune.validate()
        finetune = SegmentationDetector.check_config(finetune)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    name = SegmentationDetector.result_name(finetune)
    if name != folder.name:
        raise UserError(f"{folder / RESULT_FILE}: its settings name the result {name}, not {folder.name} (edited by hand?); rerun "
                        "finetune.py")
    return finetune


def checked_run(config: AddGoodConfig, opened: bundle.ModelFolder) -> tuple:
    """(selected results, the dataset's layout, the images to add): everything add_good.py checks
    before TensorFlow (its flags, the results, the dataset, each image)."""
    config.validate()
    selected = selected_results(opened, config)
    layout = model_dataset(opened.info, config.data_dir, require_defects=False)
    return selected, layout, new_good_images(config, layout, opened.info)


def add_good(config: AddGoodConfig, opened: bundle.ModelFolder | None = None, checked: tuple | None = None) -> Path:
    """Add the good images of config.images to the model; return the new model folder. `opened`,
    `checked`: the model folder and :func:`checked_run` when the caller made them (add_good.py)."""
    opened = opened or bundle.open_model_folder(config.path)
    selected, layout, images = checked or checked_run(config, opened)
    model = bundle.load_bundle(opened)
    new_info = lineage_info(opened.info, opened.folder, images)
    planned = free_folder(opened.folder.parent, check_info(new_info, opened.folder / bundle.INFO_FILE), config.results_root)
    scratch = Path(tempfile.mkdtemp(prefix="add_good-"))
    fitted, new_folder, ours = [], None, None
    try:
        if config.epochs:
            new_model = continued_model(model, layout, new_info, planned, config.epochs, scratch)
        else:
            new_model = replace(model, info=check_info(new_info, planned / bundle.INFO_FILE), folder=planned,
                                model_file=planned / opened.model_file.name)
        for folder, result, finetune in selected:
            fitted.append(grown_result(model, new_model, folder, result, replace(finetune, path=str(planned)), images, config))
        writer = bundle.staging_folder(planned, unique=True)  # a run that took the name meanwhile: <time>_2
        with writer as staging:
            replaced = {opened.model_file.name} if config.epochs else set()
            shutil.copytree(opened.folder, staging, symlinks=True, dirs_exist_ok=True, ignore=lambda _, names: replaced & set(names))
            shutil.copytree(scratch, staging, dirs_exist_ok=True)  # the continued network and its history (--epochs)
            bundle.write_json(staging / bundle.INFO_FILE, new_info)
        new_folder = writer.final
        tree = ResultsTree.of(new_model.info, new_folder, config.results_root)
        if tree.root.exists():
            raise folders.FolderExistsError(f"{tree.root} appeared meanwhile (another run?); nothing of this run is kept")
        ours = tree.root
        for refitted, finetune, data in fitted:
            refitted.result.model = str(new_folder / new_model.model_file.name)
            refitted.result.settings["path"] = str(new_folder)
            finetuning.save_result(refitted, replace(finetune, path=str(new_folder)), data, tree)
    except BaseException:
        if new_folder is not None:  # this run's own new folders: a model folder without its results is not kept
            if ours is not None:
                shutil.rmtree(ours, ignore_errors=True)
            shutil.rmtree(new_folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for _, _, data in fitted:
            finetuning.remove_synthetic(data)
    logger.info("model folder %s: %s plus %d good images (%d added since train.py)", new_folder, opened.folder.name, len(images),
                len(new_model.info.lineage.added_good))
    return new_folder


def free_folder(parent: Path, info, results_root) -> Path:
    """A model folder name beside the others (the time, or <time>_2, ...) that neither the models'
    folder nor the results tree holds yet."""
    stamp = bundle.timestamp()
    for index in range(1, 100):
        folder = parent / (stamp if index == 1 else f"{stamp}_{index}")
        if not folder.exists() and not ResultsTree.of(info, folder, results_root).root.exists():
            return folder
    raise folders.FolderExistsError(f"{parent / stamp}: 99 folders of that name exist; expected a free name")


def continued_model(model, layout, new_info: dict, planned: Path, epochs: int, scratch: Path) -> bundle.ModelBundle:
    """The model of `new_info` with its network trained `epochs` more on the training images and the
    added ones (saved in `scratch`; `new_info` updated with its file, hash and how it was trained)."""
    from processing.workflow.training import continue_training

    info = check_info(new_info, planned / bundle.INFO_FILE)
    started = time.perf_counter()
    train_files = training_files(layout, info)
    network, trained, rate = continue_training(model, train_files, validation_files(layout, info), epochs, scratch)
    name = bundle.model_file_name(info.model.architecture, info.training.batch_size,
                                  info.training.best_epoch + trained.best_epoch).replace(".keras", "_continued.keras")
    network.save(scratch / name)
    new_info["model"] |= {"file": name, "sha256": bundle.file_sha256(scratch / name)}
    new_info["lineage"]["continued_training"] = {
        "epochs_cap": epochs, "epochs_run": trained.epochs_run, "best_epoch": trained.best_epoch, "max_lr": rate,
        "images": len(train_files), "seconds": round(time.perf_counter() - started, 1),
        "best": {key: float(values[trained.best_epoch - 1]) for key, values in trained.history.items() if values},
    }
    info = check_info(new_info, planned / bundle.INFO_FILE)
    return bundle.ModelBundle(model=network, info=info, folder=planned, model_file=planned / name, sha256=new_info["model"]["sha256"])


def grown_result(model, new_model, folder: Path, result, finetune: FinetuneConfig, images: list[Path], config: AddGoodConfig):
    """(detector, settings, data) of the finetuning result in `folder` with `images` added to its
    fitted maps' training images (with --epochs: every map fitted again on the continued network)
    and its decision chosen again (nothing written yet)."""
    started = time.perf_counter()
    grown = None
    if not config.epochs:
        detector = SegmentationDetector.load(model, folder, result, config.batch_size)
        grown = detector.maps.with_training_images(folder, images, seed=result.seed if result.seed is not None else FinetuneConfig.seed)
    added_seconds = time.perf_counter() - started
    data = finetuning.finetuning_data(new_model, finetune)
    try:
        refitted = SegmentationDetector.fit(new_model, finetune, data, maps=grown)
    except BaseException:
        finetuning.remove_synthetic(data)
        raise
    refitted.result.grown_from = {"result": str(folder.resolve()), "added": len(images), "seconds": round(added_seconds, 2),
                                  "fitted_again": bool(config.epochs)}
    if grown is not None:
        logger.info("%s: %d good images added in %.1f s (their backbone pass and the statistics); the decision chosen again in %.1f s",
                    folder.name, len(images), added_seconds, time.perf_counter() - started - added_seconds)
    return refitted, finetune, data
