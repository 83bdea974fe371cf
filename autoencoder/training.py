"""Training loop helpers: the callback set and a ``fit`` wrapper for the autoencoders.

Training follows ktrain's ``autofit`` as the original toolkit used it: a triangular cyclical
learning rate (one cycle per epoch, between ``max_lr / 10`` and ``max_lr``) whose bounds are
halved when the validation loss stalls, and early stopping that restores the best weights.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass, field

import keras

from autoencoder.callbacks import CyclicalLearningRate, ReduceMaxLROnPlateau, get_learning_rate
from autoencoder.errors import UserError
from autoencoder.progress import on_terminal

logger = logging.getLogger(__name__)

__all__ = ["BestEpoch", "TrainingResult", "training_callbacks", "fit_autoencoder"]


class BestEpoch(keras.callbacks.Callback):
    """Record the epoch (1-based) with the lowest ``monitor`` value, e.g. for the model file name.

    Ties go to the earlier epoch and NaN never counts as best, the same rule as
    ``keras.callbacks.EarlyStopping`` with ``min_delta=0``, so both agree on the best epoch.
    ``best_epoch`` is 0 and ``best_value`` is inf until a value has been seen.
    """

    def __init__(self, monitor: str = "val_loss"):
        super().__init__()
        self.monitor = monitor
        self.best_epoch = 0
        self.best_value = math.inf

    def on_train_begin(self, logs=None):
        self.best_epoch = 0
        self.best_value = math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) < self.best_value:
            self.best_value = float(value)
            self.best_epoch = epoch + 1


def tensorboard_available() -> bool:
    """Whether the tensorboard package (needed by ``keras.callbacks.TensorBoard``) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def training_callbacks(
    max_lr: float,
    steps_per_epoch: int,
    log_dir: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    patience: int = 12,
    plateau_patience: int = 6,
    plateau_factor: float = 0.5,
    monitor: str = "val_loss",
) -> list[keras.callbacks.Callback]:
    """The callbacks for training an autoencoder, in the order they must run.

    Returns ``[CyclicalLearningRate, ReduceMaxLROnPlateau, EarlyStopping, BestEpoch,
    TensorBoard?, CSVLogger?]``: the schedule runs first so that its ``"lr"``/``"max_lr"``
    entries are in the epoch logs the loggers write. Early stopping watches ``monitor`` with
    ``patience`` epochs and restores the best weights at the end of training (also when it did
    not stop early). TensorBoard and CSVLogger are included only when ``log_dir`` /
    ``csv_path`` are given; TensorBoard is skipped, with a warning, when the tensorboard package
    is not installed (tensorflow-cpu does not bring it).
    """
    if int(steps_per_epoch) < 1:
        raise UserError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    if int(patience) < 1:
        raise UserError(f"patience must be at least 1, got {patience}")
    schedule = CyclicalLearningRate(max_lr=max_lr, steps_per_epoch=int(steps_per_epoch))
    callbacks: list[keras.callbacks.Callback] = [
        schedule,
        ReduceMaxLROnPlateau(schedule, monitor=monitor, patience=plateau_patience, factor=plateau_factor),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=int(patience), restore_best_weights=True),
        BestEpoch(monitor=monitor),
    ]
    if log_dir is not None:
        if tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(log_dir=os.fspath(log_dir)))
        else:
            logger.warning("log_dir %s: tensorboard is not installed, no TensorBoard logs are written", log_dir)
    if csv_path is not None:
        csv_folder = os.path.dirname(os.fspath(csv_path))
        if csv_folder and not os.path.isdir(csv_folder):
            raise UserError(f"csv_path {csv_path}: folder {csv_folder} does not exist")
        callbacks.append(keras.callbacks.CSVLogger(os.fspath(csv_path)))
    return callbacks


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch (epoch, time, loss, validation loss, learning rate): what training
    reports when stderr is not a terminal, instead of Keras's per-step progress bar."""

    def __init__(self, epochs: int, log: logging.Logger | None = None):
        super().__init__()
        self.epochs = int(epochs)
        self.log = log or logger
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        values = " ".join(f"{key}={float(value):.5g}" for key, value in (logs or {}).items())
        self.log.info("epoch %d/%d (%.1f s): %s", epoch + 1, self.epochs, time.perf_counter() - self.started, values)


@dataclass
class TrainingResult:
    """Outcome of :func:`fit_autoencoder`.

    ``history`` maps each logged quantity (loss, val_loss, metrics, lr, max_lr) to its list of
    per-epoch values; ``best_epoch`` is 1-based (the weights the model now holds);
    ``lrs`` is the learning rate of every training batch, in order.
    """

    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    lrs: list[float] = field(repr=False)
    best_value: float = math.inf


def _number_of_batches(dataset) -> int | None:
    """Batches per pass over ``dataset``, or None when unknown or infinite."""
    try:
        length = len(dataset)
    except (TypeError, ValueError):
        return None
    return int(length) if length >= 0 else None


def fit_autoencoder(
    model: keras.Model,
    train_ds,
    val_ds,
    epochs: int,
    max_lr: float,
    steps_per_epoch: int | None = None,
    log_dir: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    patience: int = 12,
    plateau_patience: int = 6,
    plateau_factor: float = 0.5,
) -> TrainingResult:
    """Train a compiled autoencoder with the cyclical schedule and early stopping.

    ``model`` must be compiled by the caller with an optimizer created with a float learning
    rate (e.g. ``Adam(learning_rate=1e-3)``; the schedule overwrites the rate every batch).
    ``train_ds`` and ``val_ds`` yield ``(inputs, targets)`` batches (a ``tf.data.Dataset`` or a
    ``keras.utils.PyDataset``); ``val_ds`` may be None, then the training loss is monitored.
    ``steps_per_epoch`` is required only when ``train_ds`` has no length (a repeated dataset);
    otherwise it defaults to, and must equal, ``len(train_ds)``. Progress: ``verbose`` as in
    ``model.fit`` (1 a bar, 2 one line per epoch, 0 none); ``"auto"``: Keras's bar on a terminal,
    elsewhere one log line per epoch (:class:`EpochLog`), never per-step bar updates in a log file.
    On return the model holds the weights of the best epoch.
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise UserError("fit_autoencoder: compile the model (e.g. Adam with a float learning_rate) first")
    get_learning_rate(model.optimizer)  # ValueError now when it is a schedule
    if int(epochs) < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    batches = _number_of_batches(train_ds)
    if steps_per_epoch is None:
        if batches is None:
            raise UserError("fit_autoencoder: train_ds has no length (repeated?); pass steps_per_epoch")
        steps_per_epoch = batches
    elif batches is not None and steps_per_epoch != batches:
        raise UserError(f"steps_per_epoch={steps_per_epoch} but train_ds has {batches} batches per pass")

    monitor = "val_loss" if val_ds is not None else "loss"
    callbacks = training_callbacks(
        max_lr,
        steps_per_epoch,
        log_dir=log_dir,
        csv_path=csv_path,
        patience=patience,
        plateau_patience=plateau_patience,
        plateau_factor=plateau_factor,
        monitor=monitor,
    )
    if verbose == "auto":
        verbose = 1 if on_terminal() else 0
        if not verbose:
            callbacks.append(EpochLog(epochs))
    schedule = next(c for c in callbacks if isinstance(c, CyclicalLearningRate))
    best = next(c for c in callbacks if isinstance(c, BestEpoch))
    logger.info(
        "training for up to %d epochs of %d batches, cyclical lr in [%.3g, %.3g], monitoring %s",
        epochs, steps_per_epoch, schedule.base_lr, schedule.max_lr, monitor,
    )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=int(epochs),
        steps_per_epoch=steps_per_epoch if batches is None else None,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    stopper = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    if stopper.stopped_epoch > 0:
        logger.info("early stopping after epoch %d: no improvement for %d epochs", stopper.stopped_epoch + 1, patience)
    history_dict = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(history_dict.get("loss", []))
    logger.info("trained %d epochs; best epoch %d (%s=%.5g)", epochs_run, best.best_epoch, monitor, best.best_value)
    return TrainingResult(
        history=history_dict,
        best_epoch=best.best_epoch,
        epochs_run=epochs_run,
        lrs=list(schedule.history_lrs),
        best_value=best.best_value,
    )
