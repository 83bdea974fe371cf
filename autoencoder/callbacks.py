"""Learning-rate range test and cyclical learning rates, as plain Keras 3 callbacks.

These replace the two pieces of ktrain the toolkit used (``lr_find`` and ``autofit``):

* :class:`LearningRateRangeTest` and :func:`find_learning_rate` sweep the learning rate
  exponentially, batch by batch, record the loss, and suggest a rate
  (:func:`suggest_learning_rate`);
* :class:`CyclicalLearningRate` is the triangular policy of Smith (2017, arXiv:1506.01186) and
  :class:`ReduceMaxLROnPlateau` halves its bounds when the validation loss stalls.

All of them set the rate through the optimizer's learning-rate variable, so the optimizer must
have been created with a float ``learning_rate`` (not a schedule).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import keras
import numpy as np
from tqdm.auto import tqdm

from autoencoder.errors import UserError
from autoencoder.progress import on_terminal

logger = logging.getLogger(__name__)

__all__ = [
    "LRFinderResult",
    "LearningRateRangeTest",
    "CyclicalLearningRate",
    "ReduceMaxLROnPlateau",
    "find_learning_rate",
    "suggest_learning_rate",
    "set_learning_rate",
    "get_learning_rate",
    "triangular_learning_rate",
]


# --------------------------------------------------------------------------------------------
# optimizer learning rate


def _learning_rate_variable(optimizer) -> keras.Variable:
    """The optimizer's learning-rate variable; ValueError when it has none (schedule, callable)."""
    if optimizer is None:
        raise UserError("model has no optimizer: compile it (e.g. with Adam(learning_rate=1e-3)) first")
    learning_rate = optimizer.learning_rate  # a LossScaleOptimizer forwards to its inner optimizer
    if not isinstance(learning_rate, keras.Variable):
        raise UserError(
            f"optimizer {optimizer.__class__.__name__} has a learning-rate schedule; "
            "create it with a float learning_rate so callbacks can set the rate"
        )
    return learning_rate


def set_learning_rate(optimizer, learning_rate: float) -> None:
    """Set the learning rate of a Keras 3 optimizer created with a float learning rate."""
    _learning_rate_variable(optimizer).assign(float(learning_rate))


def get_learning_rate(optimizer) -> float:
    """The current learning rate of a Keras 3 optimizer created with a float learning rate."""
    return float(keras.ops.convert_to_numpy(_learning_rate_variable(optimizer)))


# --------------------------------------------------------------------------------------------
# per-batch loss


class _BatchLossReader:
    """Recover the loss of the last batch from Keras's running epoch mean.

    Keras 3 reports in batch logs the *mean* loss over the batches seen so far in the epoch. The
    loss tracker (a ``keras.metrics.Mean`` named "loss") holds a sample-weighted total and
    count, so the last batch's loss is the difference of the totals over the difference of the
    counts, which is exact even for a short last batch. Without such a tracker (a custom
    ``train_step``) it falls back to differencing the running mean, which assumes equal batches.
    """

    def __init__(self, model):
        self._tracker = next(
            (m for m in model.metrics if isinstance(m, keras.metrics.Mean) and m.name == "loss"), None
        )
        self._total = 0.0
        self._count = 0.0
        self._mean = 0.0

    def __call__(self, batch_in_epoch: int, logs: dict) -> float:
        if self._tracker is not None:
            total = float(keras.ops.convert_to_numpy(self._tracker.total))
            count = float(keras.ops.convert_to_numpy(self._tracker.count))
            if batch_in_epoch == 0 or count <= self._count:  # the tracker was reset: a new epoch
                self._total, self._count = 0.0, 0.0
            if count > self._count:
                loss = (total - self._total) / (count - self._count)
                self._total, self._count = total, count
                return loss
        if "loss" not in logs:
            raise UserError(f"the training logs have no 'loss' (keys: {sorted(logs)})")
        mean = float(logs["loss"])
        previous = self._mean if batch_in_epoch > 0 else 0.0
        self._mean = mean
        return (batch_in_epoch + 1) * mean - batch_in_epoch * previous


# --------------------------------------------------------------------------------------------
# learning-rate range test


class LearningRateRangeTest(keras.callbacks.Callback):
    """Exponential learning-rate sweep, one rate per training batch (the "LR range test").

    Batch ``i`` (counted across epochs) trains with ``start_lr * q**i``, where
    ``q = (end_lr / start_lr) ** (1 / (max_steps - 1))``, so the last allowed batch uses
    ``end_lr``. After each batch it records the rate, the batch loss and an exponentially
    smoothed loss (``avg = beta * avg + (1 - beta) * loss``, reported as
    ``avg / (1 - beta**(i + 1))`` to remove the bias towards the zero start), and stops training
    when the smoothed loss exceeds ``divergence_factor`` times its minimum so far, when the loss
    is NaN or infinite, or after ``max_steps`` batches (the rate has reached ``end_lr``).

    Attributes after training: ``lrs``, ``raw_losses``, ``losses`` (smoothed), lists of floats of
    equal length, and ``stop_reason`` (str).
    """

    def __init__(
        self,
        start_lr: float = 1e-5,
        end_lr: float = 10.0,
        max_steps: int = 100,
        divergence_factor: float = 4.0,
        beta: float = 0.98,
        progress_bar: bool = False,
    ):
        super().__init__()
        if not 0.0 < start_lr < end_lr:
            raise UserError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
        if int(max_steps) < 2:
            raise UserError(f"max_steps must be at least 2, got {max_steps}")
        if not divergence_factor > 1.0:
            raise UserError(f"divergence_factor must be > 1, got {divergence_factor}")
        if not 0.0 <= beta < 1.0:
            raise UserError(f"beta must be in [0, 1), got {beta}")
        self.start_lr = float(start_lr)
        self.end_lr = float(end_lr)
        self.max_steps = int(max_steps)
        self.divergence_factor = float(divergence_factor)
        self.beta = float(beta)
        self.lr_multiplier = (self.end_lr / self.start_lr) ** (1.0 / (self.max_steps - 1))
        self.progress_bar = progress_bar
        self._reset()

    def _reset(self) -> None:
        self.lrs: list[float] = []
        self.raw_losses: list[float] = []
        self.losses: list[float] = []
        self.stop_reason = ""
        self._step = 0
        self._average = 0.0
        self._best = math.inf

    def learning_rate_at(self, step: int) -> float:
        """The rate the sweep uses for batch ``step`` (0-based, counted across epochs)."""
        return self.start_lr * self.lr_multiplier**step

    def on_train_begin(self, logs=None):
        self._reset()
        _learning_rate_variable(self.model.optimizer)  # fail now, not mid-sweep
        self._read_batch_loss = _BatchLossReader(self.model)
        self._bar = tqdm(total=self.max_steps, desc="lr range test", unit="batch", disable=not self.progress_bar or not on_terminal())

    def on_train_batch_begin(self, batch, logs=None):
        set_learning_rate(self.model.optimizer, self.learning_rate_at(self._step))

    def on_train_batch_end(self, batch, logs=None):
        model = self.model  # under JAX this syncs the state, loss tracker included, back to the model
        loss = self._read_batch_loss(batch, logs or {})
        lr = self.learning_rate_at(self._step)
        self._step += 1
        self._average = self.beta * self._average + (1.0 - self.beta) * loss
        smoothed = self._average / (1.0 - self.beta**self._step)
        self.lrs.append(lr)
        self.raw_losses.append(loss)
        self.losses.append(smoothed)
        self._bar.update(1)
        self._bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smoothed:.4g}")

        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            self.stop_reason = f"loss is not finite at lr={lr:.3g}"
        elif smoothed > self.divergence_factor * self._best:
            self.stop_reason = (
                f"smoothed loss {smoothed:.4g} exceeds {self.divergence_factor:g}x its minimum "
                f"{self._best:.4g} at lr={lr:.3g}"
            )
        elif self._step >= self.max_steps:
            self.stop_reason = f"reached end_lr={self.end_lr:.3g} after {self._step} batches"
        self._best = min(self._best, smoothed)
        if self.stop_reason:
            model.stop_training = True

    def on_train_end(self, logs=None):
        self._bar.close()
        if not self.stop_reason and self.lrs:
            self.stop_reason = f"the data ran out after {self._step} batches (lr={self.lrs[-1]:.3g})"
        elif not self.stop_reason:
            self.stop_reason = "no batch ran: the dataset is empty"
        logger.info("lr range test stopped: %s", self.stop_reason)


@dataclass
class LRFinderResult:
    """Outcome of :func:`find_learning_rate`.

    ``lrs``, ``losses`` (smoothed) and ``raw_losses`` are float64 arrays of shape (steps,);
    ``suggested_lr`` is None when the loss never fell (see :func:`suggest_learning_rate`).
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggested_lr: float | None
    stop_reason: str = ""


def suggest_learning_rate(lrs, losses, fraction: float = 0.85) -> float:
    """The learning rate at which the loss has fallen ``fraction`` of the way to its minimum.

    This is the rule the original toolkit applied to ktrain's range test: with ``L0`` the first
    loss and ``Lmin`` the minimum (ignoring NaN/inf), return the first rate, scanning upwards
    from the start and no further than the minimum, at which
    ``loss <= L0 - fraction * (L0 - Lmin)``. It sits on the steep, still stable, part of the
    curve, below the rate of the minimum loss (beyond which training soon diverges).

    Parameters
    ----------
    lrs : array_like, shape (n,)
        Increasing positive learning rates.
    losses : array_like, shape (n,)
        The (smoothed) loss at each rate; non-finite values after the minimum are allowed.
    fraction : float in (0, 1]
        1 gives the rate of the minimum loss.

    Raises
    ------
    ValueError
        On mismatched or invalid inputs, or when the loss never falls below its first value.
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if lrs.ndim != 1 or lrs.shape != losses.shape or lrs.size < 2:
        raise UserError(
            f"lrs and losses must be 1-D of the same length >= 2, got shapes {lrs.shape} and {losses.shape}"
        )
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    if not (np.all(np.isfinite(lrs)) and np.all(lrs > 0) and np.all(np.diff(lrs) > 0)):
        raise UserError("lrs must be positive, finite and strictly increasing")
    if not np.isfinite(losses[0]):
        raise UserError(f"the first loss is {losses[0]}; the sweep started at a diverging rate")
    finite_losses = np.where(np.isfinite(losses), losses, np.inf)
    minimum_index = int(np.argmin(finite_losses))
    start_loss, min_loss = losses[0], finite_losses[minimum_index]
    if not min_loss < start_loss:
        raise UserError(
            f"the loss never fell below its first value {start_loss:.4g} between lr={lrs[0]:.3g} and "
            f"lr={lrs[-1]:.3g}; sweep a wider or lower range"
        )
    threshold = start_loss - fraction * (start_loss - min_loss)
    first_index = int(np.flatnonzero(losses[: minimum_index + 1] <= threshold)[0])
    return float(lrs[first_index])


def find_learning_rate(
    model: keras.Model,
    dataset,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    max_steps: int = 100,
    divergence_factor: float = 4.0,
    beta: float = 0.98,
    fraction: float = 0.85,
    steps_per_epoch: int | None = None,
    progress_bar: bool = True,
) -> LRFinderResult:
    """Run a learning-rate range test on a compiled model and suggest a learning rate.

    The model trains on ``dataset`` (anything ``model.fit`` takes as ``x`` that yields
    ``(inputs, targets)``; it is iterated over as many epochs as needed) while
    :class:`LearningRateRangeTest` raises the rate exponentially from ``start_lr`` to ``end_lr``
    over at most ``max_steps`` batches, stopping early once the smoothed loss diverges. The
    model's weights and the optimizer's state (slots, iteration count, learning rate) are
    restored exactly afterwards, also when the sweep fails.

    The suggested rate is where the smoothed loss has fallen ``fraction`` (85%) of the way from
    its first value to its minimum: the first rate, scanning upwards and not past the minimum,
    with ``loss <= L0 - fraction * (L0 - Lmin)`` (see :func:`suggest_learning_rate`). When the
    loss never falls, ``suggested_lr`` is None and a warning is logged.

    ``steps_per_epoch`` is passed to ``model.fit``; give it for an infinite (repeated) dataset
    to keep epochs short, otherwise leave it None.
    """
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise UserError("find_learning_rate: compile the model (optimizer with a float learning rate, loss) first")
    if not model.built or not model.weights:
        raise UserError("find_learning_rate: the model has no weights yet; build it (give it an Input) first")
    optimizer = model.optimizer
    _learning_rate_variable(optimizer)
    if not optimizer.built:
        # Create the slot variables now so that their initial values are part of the snapshot.
        optimizer.build(model.trainable_variables)
    saved_weights = model.get_weights()
    saved_optimizer_state = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]

    range_test = LearningRateRangeTest(
        start_lr=start_lr,
        end_lr=end_lr,
        max_steps=max_steps,
        divergence_factor=divergence_factor,
        beta=beta,
        progress_bar=progress_bar,
    )
    try:
        # Each epoch has at least one batch, so max_steps epochs always suffice; the callback
        # stops training once it has run max_steps batches or the loss diverged.
        model.fit(
            dataset,
            epochs=range_test.max_steps,
            steps_per_epoch=steps_per_epoch,
            callbacks=[range_test],
            shuffle=False,  # batch order does not matter to the sweep; tf.data warns otherwise
            verbose=0,
        )
    finally:
        model.set_weights(saved_weights)
        for variable, value in zip(optimizer.variables, saved_optimizer_state):
            variable.assign(value)

    lrs = np.asarray(range_test.lrs, dtype=np.float64)
    losses = np.asarray(range_test.losses, dtype=np.float64)
    try:
        suggested_lr = suggest_learning_rate(lrs, losses, fraction=fraction)
    except ValueError as error:
        logger.warning("no learning rate suggested: %s", error)
        suggested_lr = None
    else:
        logger.info("suggested learning rate %.3g (sweep of %d batches)", suggested_lr, lrs.size)
    return LRFinderResult(
        lrs=lrs,
        losses=losses,
        raw_losses=np.asarray(range_test.raw_losses, dtype=np.float64),
        suggested_lr=suggested_lr,
        stop_reason=range_test.stop_reason,
    )


# --------------------------------------------------------------------------------------------
# cyclical learning rate


def triangular_learning_rate(iteration, base_lr: float, max_lr: float, step_size: float):
    """The triangular cyclical rate of Smith (2017) at ``iteration`` (int or array of ints).

    Rises linearly from ``base_lr`` at iteration 0 to ``max_lr`` at ``step_size``, falls back
    to ``base_lr`` at ``2 * step_size``, and repeats.
    """
    iteration = np.asarray(iteration, dtype=np.float64)
    cycle = np.floor(1.0 + iteration / (2.0 * step_size))
    distance_from_peak = np.abs(iteration / step_size - 2.0 * cycle + 1.0)
    rate = base_lr + (max_lr - base_lr) * np.maximum(0.0, 1.0 - distance_from_peak)
    return float(rate) if rate.ndim == 0 else rate


class CyclicalLearningRate(keras.callbacks.Callback):
    """Triangular cyclical learning rate (Smith 2017), set on the optimizer before every batch.

    The rate moves linearly between ``base_lr`` (default ``max_lr / 10``, as ktrain's
    ``autofit``) and ``max_lr``, ``step_size`` batches per half cycle; by default
    ``step_size = steps_per_epoch / 2``, one full cycle per epoch, so every epoch ends near
    ``base_lr``. The batch counter runs across epochs and restarts, with the bounds given
    here, at every ``fit``. The rates used are appended to ``history_lrs`` (one float per
    batch), and the epoch logs get ``"lr"`` (the rate of the epoch's last batch) and
    ``"max_lr"`` (the current upper bound), so History, CSVLogger and TensorBoard placed after
    this callback record them. :class:`ReduceMaxLROnPlateau` scales the bounds.
    """

    def __init__(
        self,
        max_lr: float,
        steps_per_epoch: int | None = None,
        base_lr: float | None = None,
        step_size: float | None = None,
    ):
        super().__init__()
        if not max_lr > 0:
            raise UserError(f"max_lr must be positive, got {max_lr}")
        base_lr = max_lr / 10.0 if base_lr is None else base_lr
        if not 0 < base_lr <= max_lr:
            raise UserError(f"need 0 < base_lr <= max_lr, got base_lr={base_lr}, max_lr={max_lr}")
        if step_size is None:
            if steps_per_epoch is None or steps_per_epoch < 1:
                raise UserError(f"give steps_per_epoch >= 1 or step_size > 0, got steps_per_epoch={steps_per_epoch}")
            step_size = steps_per_epoch / 2.0
        if not step_size > 0:
            raise UserError(f"step_size must be positive, got {step_size}")
        self.initial_max_lr = float(max_lr)
        self.initial_base_lr = float(base_lr)
        self.max_lr = self.initial_max_lr
        self.base_lr = self.initial_base_lr
        self.step_size = float(step_size)
        self.iteration = 0
        self.history_lrs: list[float] = []

    def current_learning_rate(self) -> float:
        """The rate for the next batch, from the current bounds and batch counter."""
        return triangular_learning_rate(self.iteration, self.base_lr, self.max_lr, self.step_size)

    def scale_bounds(self, factor: float) -> None:
        """Multiply ``base_lr`` and ``max_lr`` by ``factor`` (from the next batch on)."""
        self.base_lr *= factor
        self.max_lr *= factor

    def on_train_begin(self, logs=None):
        self.iteration = 0
        self.history_lrs = []
        self.max_lr, self.base_lr = self.initial_max_lr, self.initial_base_lr
        set_learning_rate(self.model.optimizer, self.base_lr)

    def on_train_batch_begin(self, batch, logs=None):
        lr = self.current_learning_rate()
        set_learning_rate(self.model.optimizer, lr)
        self.history_lrs.append(lr)
        self.iteration += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.history_lrs[-1] if self.history_lrs else self.base_lr
            logs["max_lr"] = self.max_lr


class ReduceMaxLROnPlateau(keras.callbacks.Callback):
    """Scale the bounds of a :class:`CyclicalLearningRate` when a monitored value stalls.

    A stock ``ReduceLROnPlateau`` would be overwritten by the cyclical schedule at the next
    batch, so this one acts on the cycle: after ``patience`` consecutive epochs without an
    improvement of ``monitor`` (a decrease by more than ``min_delta`` for mode "min"), both
    ``base_lr`` and ``max_lr`` are multiplied by ``factor`` and the count restarts. The
    reductions so far are in ``reductions`` as ``(epoch, new_max_lr)``, epochs 0-based.
    """

    def __init__(
        self,
        schedule: CyclicalLearningRate,
        monitor: str = "val_loss",
        patience: int = 6,
        factor: float = 0.5,
        min_delta: float = 0.0,
        mode: str = "min",
    ):
        super().__init__()
        if not isinstance(schedule, CyclicalLearningRate):
            raise UserError(f"schedule must be a CyclicalLearningRate, got {type(schedule).__name__}")
        if not 0.0 < factor < 1.0:
            raise UserError(f"factor must be in (0, 1), got {factor}")
        if int(patience) < 1:
            raise UserError(f"patience must be at least 1, got {patience}")
        if mode not in ("min", "max"):
            raise UserError(f"mode must be 'min' or 'max', got {mode!r}")
        self.schedule = schedule
        self.monitor = monitor
        self.patience = int(patience)
        self.factor = float(factor)
        self.min_delta = abs(float(min_delta))
        self.mode = mode
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.reductions: list[tuple[int, float]] = []
        self._warned_missing = False

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned_missing:
                logger.warning(
                    "ReduceMaxLROnPlateau: %r is not in the epoch logs (%s)", self.monitor, sorted(logs or {})
                )
                self._warned_missing = True
            return
        if self._improved(float(value)):
            self.best = float(value)
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.schedule.scale_bounds(self.factor)
            self.reductions.append((epoch, self.schedule.max_lr))
            self.wait = 0
            logger.info(
                "epoch %d: %s has not improved for %d epochs; cyclical lr bounds now [%.3g, %.3g]",
                epoch + 1, self.monitor, self.patience, self.schedule.base_lr, self.schedule.max_lr,
            )
