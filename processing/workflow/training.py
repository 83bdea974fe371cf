"""Train an autoencoder on `<dataset>/train/good` and write its model folder (what train.py runs)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras

from autoencoder import bundle
from autoencoder.callbacks import find_learning_rate
from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from autoencoder.losses import get_loss, get_metrics
from autoencoder.pipeline import make_training_dataset
from autoencoder.progress import progress_bar
from autoencoder.training import TrainingResult, fit_autoencoder
from processing.data.images import image_size, iter_batches, load_images, scan_dataset, split_train_validation
from processing.data.tiles import iter_tile_batches, load_tiles
from processing.evaluation import plots
from processing.workflow.adversarial_training import train_adversarial
from processing.workflow.distribute import build_before_fit, check_distribute, is_chief, make_strategy, shard_by_data
from processing.workflow.model_info import build_info, store_roi, write_inspection_plots
from processing.workflow.options import TrainConfig, config_from_args

__all__ = ["TrainConfig", "config_from_args", "train"]

logger = logging.getLogger(__name__)

# Adam diverges well below a rate of 1 on these models, so the sweep stops there; and when the
# loss does not fall at all during the sweep (a long initial plateau), Adam's default rate is used.
LR_FINDER_END = 1.0
FALLBACK_LR = 1e-3


def train(config: TrainConfig) -> Path | None:
    """Train, then write the model folder; return its path (None on a multiworker task that is
    not the chief: only the chief writes the model folder)."""
    config = config.resolved()
    config.validate()
    architecture, size = config.architecture_spec, config.size
    layout = scan_dataset(config.input_dir)
    if config.adversarial:
        return train_adversarial(config, architecture, size, layout)
    if config.distribute == "none":
        # No strategy object at all: the single-device path, unchanged.
        return train_on(config, architecture, size, layout)
    tf_config = check_distribute(config.distribute)
    # MultiWorkerMirroredStrategy must exist before TensorFlow initialises its devices: create it first.
    strategy = make_strategy(config.distribute)
    if is_chief(tf_config):
        return train_on(config, architecture, size, layout, strategy)
    # Other workers take part in every step (and in saving: its collective reads), but write
    # their copy into a temporary folder that is removed: nothing under --output-dir.
    scratch = tempfile.mkdtemp(prefix="worker_")
    try:
        train_on(replace(config, output_dir=scratch), architecture, size, layout, strategy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("worker %d done; the chief writes the model folder", tf_config["task"]["index"])
    return None


def train_on(config: TrainConfig, architecture, size: ImageSize, layout, strategy=None) -> Path:
    """The training run of `train`, on one device (strategy None) or under a tf.distribute strategy:
    then `config.batch_size` is the batch per replica, and the pipeline batches b x replicas."""
    keras.utils.set_random_seed(config.seed)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas

    train_files, val_files = split_train_validation(layout.train_good, config.validation_split, config.seed)
    if not train_files or not val_files:
        raise UserError(
            f"--input-dir {config.input_dir}: train/good has {len(layout.train_good)} images; "
            "expected at least 2 (one for validation)"
        )
    logger.info(
        "dataset %s: %d training, %d validation images at %dx%d %s",
        layout.root, len(train_files), len(val_files), size.width, size.height, config.color_mode,
    )
    # Only statistics to fit (--epochs 0): the training images are read batch by batch, never held
    # together, so memory does not grow with their number (or their tiles').
    streamed = config.epochs == 0 and strategy is None
    train_images = None if streamed else training_images(train_files, config, size, progress=True)
    val_images = training_images(val_files, config, size) if not streamed or config.inspect else None
    if strategy is not None:
        logger.info("global batch %d (%d per replica x %d replicas)", global_batch, config.batch_size, replicas)

    with contextlib.nullcontext() if strategy is None else strategy.scope():
        model = architecture.build(config.color_mode, size, **config.architecture_options)
        if config.encoder_weights is not None:
            from autoencoder.models.vgg_cae import freeze_vgg16_encoder, load_vgg16_encoder_weights

            load_vgg16_encoder_weights(model, config.encoder_weights)
            if config.freeze_encoder:
                logger.info("froze %d VGG16 encoder layers", freeze_vgg16_encoder(model))
        if architecture.prepare is not None:
            architecture.prepare(model, training_batches(train_files, train_images, config, size))
        compile_model(model, config)
        if strategy is not None:
            build_before_fit(model, strategy, train_images)
        logger.info("%s: %d parameters", architecture.name, model.count_params())

        trainer, cached = model, None
        if config.epochs > 0 and architecture.cached_layers and strategy is None:
            from autoencoder.cached import cached_training_data

            cached = cached_training_data(
                model, architecture.cached_layers, train_images, val_images, global_batch, config.augment, config.seed
            )
        if cached is not None:
            trainer, train_ds, val_ds, n_inputs = cached
            compile_model(trainer, config)
        else:  # nothing to iterate when only the statistics are fitted (--epochs 0)
            train_ds, val_ds = image_datasets(train_images, val_images, config, global_batch, strategy) if config.epochs else (None, None)
            n_inputs = len(train_files) if train_images is None else len(train_images)
        steps_per_epoch = math.ceil(n_inputs / global_batch)
        max_lr, finder = (None, None) if config.epochs == 0 else learning_rate(trainer, train_ds, config)

        stamp = bundle.timestamp()
        folder = bundle.model_folder(config.output_dir, layout.root.name, architecture.name, config.loss, stamp)
        # unique: a run that started in the same second gets <stamp>_2, never this run's folder.
        writer = bundle.staging_folder(folder, unique=True)
        with writer as staging:
            started = time.perf_counter()
            if config.epochs == 0:
                logger.info("--epochs 0: %s holds its fitted statistics only (no network trained)", architecture.name)
                result = TrainingResult(history={}, best_epoch=0, epochs_run=0, lrs=[])
            else:
                result = fit_autoencoder(
                    trainer,
                    train_ds,
                    val_ds,
                    epochs=config.epochs,
                    max_lr=max_lr,
                    steps_per_epoch=steps_per_epoch,
                    log_dir=str(staging / "logs"),
                    csv_path=str(staging / "history.csv"),
                    patience=config.patience,
                )
            train_seconds = time.perf_counter() - started
            model_name = bundle.model_file_name(architecture.name, config.batch_size, result.best_epoch)
            model.save(staging / model_name)

            info = build_info(
                config, architecture, size, layout, train_files, val_files, result, max_lr, finder,
                train_seconds, model_name, stamp, model.count_params(), staging / model_name, roi=store_roi(config, staging),
            )
            if cached is not None:
                info["training"]["cached_features"] = {"layers": list(architecture.cached_layers), "inputs": n_inputs}
            if strategy is not None:
                info["training"].update(
                    distribute=config.distribute, replicas=replicas, global_batch_size=global_batch,
                    workers=getattr(strategy.extended, "_num_workers", 1),
                )
            bundle.write_json(staging / bundle.INFO_FILE, info)
            if result.epochs_run:
                plots.plot_loss_history(result.history, staging / "loss_plot.png", best_epoch=result.best_epoch)
                plots.plot_lr_schedule(result.lrs, staging / "lr_plot.png", steps_per_epoch=steps_per_epoch)
            if finder is not None:
                plots.plot_lr_finder(finder.lrs, finder.losses, finder.suggested_lr, staging / "lr_finder_plot.png")
            if config.inspect:
                write_inspection_plots(model, config, size, layout, val_images, staging / "inspection")
    folder = writer.final
    logger.info("model folder %s (best epoch %d of %d, %.0f s)", folder, result.best_epoch, result.epochs_run, train_seconds)
    return folder


def image_datasets(train_images, val_images, config: TrainConfig, global_batch: int, strategy=None):
    """The (x, x) training and validation pipelines of the images; under a strategy, each worker's share."""
    train_ds = make_training_dataset(train_images, global_batch, shuffle=True, augment=config.augment, seed=config.seed)
    val_ds = make_training_dataset(val_images, global_batch, shuffle=False, augment=False)
    if strategy is not None:
        # Every worker builds the same global batches; tf.data keeps each worker's share.
        train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
    return train_ds, val_ds


def learning_rate(model: keras.Model, train_ds, config: TrainConfig):
    """(max_lr, finder): --lr, or the range test's suggestion (finder None with --lr)."""
    if config.learning_rate is not None:
        return float(config.learning_rate), None
    logger.info("learning-rate range test (%d steps at most)", config.lr_finder_steps)
    finder = find_learning_rate(model, train_ds, end_lr=LR_FINDER_END, max_steps=config.lr_finder_steps)
    if finder.suggested_lr is None:
        logger.warning("the range test saw no falling loss; training with Adam's default rate %.3g (or pass --lr)", FALLBACK_LR)
        return FALLBACK_LR, finder
    logger.info("suggested learning rate %.3g", finder.suggested_lr)
    return float(finder.suggested_lr), finder


def training_images(files, config: TrainConfig, size: ImageSize, progress: bool = False):
    """The model inputs of training (or validation) images: resized, or every tile of them (--tile)."""
    if config.tile_grid is None:
        return load_images(files, config.color_mode, size, progress=progress)
    tiles = load_tiles(files, config.color_mode, config.tile_grid)
    if len(tiles) == len(files):
        logger.warning("--tile %d: no image is larger than one tile, so each is one (mirror-padded) tile; "
                       "train without --tile for images this small", config.tile_grid.size)
    logger.info("%d tiles of %d px (overlap %d px) of %d images", len(tiles), config.tile_grid.size, config.tile_grid.overlap, len(files))
    return tiles


PREPARE_BATCH = 32  # training inputs per step of an architecture's prepare (its feature statistics)


def training_batches(files, images, config: TrainConfig, size: ImageSize):
    """The training inputs for an architecture's prepare, PREPARE_BATCH at a time: slices of
    `images` when they are in memory, else read from `files` batch by batch (resized, or every tile
    of them with --tile) with a progress bar."""
    if images is not None:
        yield from (images[start:start + PREPARE_BATCH] for start in range(0, len(images), PREPARE_BATCH))
        return
    if config.tile_grid is None:
        inputs = (batch for _, batch in iter_batches(files, config.color_mode, size, PREPARE_BATCH))
        total, unit = len(files), "img"
    else:
        inputs = iter_tile_batches(files, config.color_mode, config.tile_grid, PREPARE_BATCH)
        total = sum(config.tile_grid.count(*(max(side, config.tile_grid.size) for side in image_size(path))) for path in files)
        unit = "tile"
    with progress_bar(total=total, desc="feature statistics", unit=unit) as bar:
        for batch in inputs:
            yield batch
            bar.update(len(batch))


def continue_training(model: bundle.ModelBundle, train_files: list, val_files: list, epochs: int, out_dir: Path) -> tuple:
    """(network, training result, learning rate): the trained network of `model` trained up to
    `epochs` more epochs on `train_files` from its own weights (add_good.py --epochs), early stopping
    on `val_files`. A continuation, not a new training: the loss, batch size and augmentation of its
    info.json settings, no range test, and its schedule's low rate as the peak rate, so that small
    steps adapt what it learnt to the images added instead of starting over. Its history and logs go
    to `out_dir`. Not for tiled, adversarial or untrained (--epochs 0) models
    (processing/workflow/add_good.py refuses them first)."""
    info = model.info
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    config = replace(TrainConfig(**{key: value for key, value in info.settings.items() if key in known}), epochs=epochs)
    rate = info.training.base_lr or (info.training.max_lr or FALLBACK_LR) / 10
    keras.utils.set_random_seed(config.seed)
    size = info.model.image_size
    train_images = training_images(train_files, config, size, progress=True)
    val_images = training_images(val_files, config, size)
    network, architecture = model.model, config.architecture_spec
    compile_model(network, config)
    trainer, cached = network, None
    if architecture.cached_layers:
        from autoencoder.cached import cached_training_data

        cached = cached_training_data(network, architecture.cached_layers, train_images, val_images, config.batch_size, config.augment,
                                      config.seed)
    if cached is not None:
        trainer, train_ds, val_ds, n_inputs = cached
        compile_model(trainer, config)
    else:
        (train_ds, val_ds), n_inputs = image_datasets(train_images, val_images, config, config.batch_size), len(train_images)
    logger.info("continuing the training of %s for up to %d epochs on %d images at a peak rate of %.3g", model.folder.name, epochs,
                len(train_files), rate)
    result = fit_autoencoder(trainer, train_ds, val_ds, epochs=epochs, max_lr=rate, steps_per_epoch=math.ceil(n_inputs / config.batch_size),
                             log_dir=str(out_dir / "logs_continued"), csv_path=str(out_dir / "history_continued.csv"),
                             patience=config.patience)
    return network, result, rate


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=get_loss(config.loss),
        metrics=get_metrics(config.loss, config.color_mode),
    )
