"""Tests for autoencoder.callbacks and autoencoder.training."""

import csv
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoencoder import training
from autoencoder.callbacks import (
    CyclicalLearningRate,
    LearningRateRangeTest,
    ReduceMaxLROnPlateau,
    find_learning_rate,
    get_learning_rate,
    suggest_learning_rate,
    triangular_learning_rate,
)
from autoencoder.training import BestEpoch, fit_autoencoder, tensorboard_available, training_callbacks


def linear_model(n_features, optimizer):
    model = keras.Sequential(
        [keras.Input((n_features,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def optimizer_state(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables]


# ---------------------------------------------------------------------------------------------
# suggest_learning_rate


def test_suggest_learning_rate_hand_computed_curve():
    lrs = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]) * 1e-3
    losses = np.array([10.0, 9.8, 9.0, 6.0, 3.0, 2.4, 2.0, 3.0, np.nan])
    # start 10, minimum 2 at index 6: threshold 10 - 0.85 * 8 = 3.2, first reached at index 4
    assert suggest_learning_rate(lrs, losses) == pytest.approx(5e-3)
    # threshold 10 - 0.5 * 8 = 6.0, first reached at index 3
    assert suggest_learning_rate(lrs, losses, fraction=0.5) == pytest.approx(4e-3)
    # fraction 1: the rate of the minimum
    assert suggest_learning_rate(lrs, losses, fraction=1.0) == pytest.approx(7e-3)


def test_suggest_learning_rate_on_analytic_curve():
    # L(lr) = 1 + 9 / (1 + (lr/c)^2) falls from ~10 to ~1; after the grid it "diverges".
    c = 1e-2
    lrs = np.geomspace(1e-5, 1.0, 301)
    losses = 1 + 9 / (1 + (lrs / c) ** 2)
    losses[-5:] = [5, 50, 500, np.inf, np.nan]
    minimum = losses[:-5].min()
    threshold = losses[0] - 0.85 * (losses[0] - minimum)
    exact = c * math.sqrt(9 / (threshold - 1) - 1)  # where L(lr) == threshold
    suggested = suggest_learning_rate(lrs, losses)
    grid_ratio = lrs[1] / lrs[0]
    assert exact <= suggested < exact * grid_ratio


@pytest.mark.parametrize(
    "lrs, losses, fraction, message",
    [
        ([1e-3, 1e-2], [1.0], 0.85, "same length"),
        ([1e-2, 1e-3], [1.0, 0.5], 0.85, "strictly increasing"),
        ([1e-3, 1e-2, 1e-1], [1.0, 1.5, 3.0], 0.85, "never fell"),
        ([1e-3, 1e-2], [1.0, 0.5], 0.0, "fraction"),
        ([1e-3, 1e-2], [np.nan, 0.5], 0.85, "first loss"),
    ],
)
def test_suggest_learning_rate_rejects_bad_input(lrs, losses, fraction, message):
    with pytest.raises(ValueError, match=message):
        suggest_learning_rate(lrs, losses, fraction=fraction)


# ---------------------------------------------------------------------------------------------
# learning-rate range test


def test_range_test_matches_numpy_gradient_descent():
    """Rates, per-batch losses (also of a short last batch) and smoothing against plain numpy."""
    rng = np.random.default_rng(1)
    n, d, batch_size = 40, 3, 16  # batches of 16, 16, 8
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    model = linear_model(d, keras.optimizers.SGD(learning_rate=0.01))
    start_lr, end_lr, steps = 1e-2, 1e-1, 8  # crosses two epoch boundaries

    result = find_learning_rate(model, dataset, start_lr=start_lr, end_lr=end_lr, max_steps=steps, progress_bar=False)

    batches = [(x[i : i + batch_size].astype(np.float64), y[i : i + batch_size]) for i in range(0, n, batch_size)]
    w = np.zeros((d, 1))
    expected_lrs, expected_losses = [], []
    for step in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
        xb, yb = batches[step % len(batches)]
        residual = xb @ w - yb
        expected_lrs.append(lr)
        expected_losses.append(np.mean(residual**2))
        w -= lr * 2 * xb.T @ residual / len(xb)
    average, expected_smoothed = 0.0, []
    for step, loss in enumerate(expected_losses, start=1):
        average = 0.98 * average + 0.02 * loss
        expected_smoothed.append(average / (1 - 0.98**step))

    np.testing.assert_allclose(result.lrs, expected_lrs, rtol=1e-12)
    np.testing.assert_allclose(result.raw_losses, expected_losses, rtol=1e-4)
    np.testing.assert_allclose(result.losses, expected_smoothed, rtol=1e-4)
    assert "end_lr" in result.stop_reason
    assert result.lrs[-1] == pytest.approx(end_lr)


def make_sign_flipped_regression(seed=0, n_batches=8, batch_size=32, eigenvalues=(4.0, 2.0, 1.0, 0.5), noise=0.5):
    """Least squares whose every batch has the same Hessian, so its stability limit is exact.

    Each batch is the same design matrix with random row signs (X^T D D X = X^T X) and its own
    noisy targets; plain SGD on the MSE is stable exactly for lr < 2 / lambda_max(2 X^T X / b).
    """
    rng = np.random.default_rng(seed)
    d = len(eigenvalues)
    u, _, vt = np.linalg.svd(rng.normal(size=(batch_size, d)), full_matrices=False)
    design = (u * np.sqrt(np.asarray(eigenvalues) * batch_size)) @ vt
    w_true = rng.normal(size=(d, 1))
    xs = [design * rng.choice([-1.0, 1.0], size=(batch_size, 1)) for _ in range(n_batches)]
    ys = [xb @ w_true + noise * rng.normal(size=(batch_size, 1)) for xb in xs]
    hessian = 2 * design.T @ design / batch_size
    critical_lr = 2 / np.linalg.eigvalsh(hessian).max()
    x = np.concatenate(xs).astype("float32")
    y = np.concatenate(ys).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size), d, critical_lr


def test_lr_finder_finds_the_stability_limit_of_linear_regression():
    dataset, d, critical_lr = make_sign_flipped_regression()
    model = linear_model(d, keras.optimizers.SGD(learning_rate=0.01))
    weights_before = model.get_weights()

    result = find_learning_rate(model, dataset, start_lr=1e-3, end_lr=10.0, max_steps=200, progress_bar=False)

    # Below the limit every step contracts the error, so the sweep must run past it and stop
    # by divergence soon after (the smoothed loss lags the raw loss by a few steps).
    divergence_lr = result.lrs[-1]
    assert "exceeds" in result.stop_reason or "not finite" in result.stop_reason
    assert critical_lr < divergence_lr < 3 * critical_lr
    assert result.lrs.size < 200
    # The suggestion is on the stable side, far above the start of the sweep.
    assert critical_lr / 30 < result.suggested_lr < critical_lr
    assert result.suggested_lr < divergence_lr / 1.5
    assert result.raw_losses[-1] > 10 * result.raw_losses.min()
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_find_learning_rate_restores_weights_and_adam_state_exactly():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = linear_model(3, keras.optimizers.Adam(learning_rate=1e-3))
    model.fit(dataset, epochs=1, verbose=0)  # non-zero moments and iteration count
    weights_before = model.get_weights()
    state_before = optimizer_state(model)
    assert int(model.optimizer.iterations.numpy()) == 4

    # A divergence factor that never triggers: the sweep runs all its steps.
    result = find_learning_rate(model, dataset, end_lr=1.0, max_steps=10, divergence_factor=1e9, progress_bar=False)

    assert result.lrs.size == 10
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert len(state_before) == len(model.optimizer.variables)
    for before, after in zip(state_before, optimizer_state(model)):
        np.testing.assert_array_equal(before, after)
    assert get_learning_rate(model.optimizer) == pytest.approx(1e-3)


def test_find_learning_rate_on_fresh_optimizer_leaves_it_fresh():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)
    model = linear_model(2, keras.optimizers.Adam(learning_rate=2e-3))
    find_learning_rate(model, dataset, max_steps=5, progress_bar=False)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(np.all(v == 0) for v in optimizer_state(model)[2:])  # moments
    assert get_learning_rate(model.optimizer) == pytest.approx(2e-3)


def test_learning_rate_schedule_is_rejected_with_clear_error():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=10, decay_rate=0.9)
    model = linear_model(2, keras.optimizers.SGD(learning_rate=schedule))
    dataset = tf.data.Dataset.from_tensor_slices((np.ones((4, 2), "float32"), np.ones((4, 1), "float32"))).batch(2)
    with pytest.raises(ValueError, match="float learning_rate"):
        find_learning_rate(model, dataset, max_steps=5, progress_bar=False)


def test_range_test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="start_lr"):
        LearningRateRangeTest(start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="max_steps"):
        LearningRateRangeTest(max_steps=1)


# ---------------------------------------------------------------------------------------------
# cyclical learning rate


def test_triangular_learning_rate_hand_computed():
    # base 0.1, max 1.0, 4 batches per half cycle: +0.225 per batch up, -0.225 down
    expected = [0.1, 0.325, 0.55, 0.775, 1.0, 0.775, 0.55, 0.325, 0.1, 0.325, 0.55, 0.775, 1.0]
    got = triangular_learning_rate(np.arange(13), 0.1, 1.0, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert triangular_learning_rate(16, 0.1, 1.0, 4) == pytest.approx(0.1)
    assert triangular_learning_rate(20, 0.1, 1.0, 4) == pytest.approx(1.0)


class KernelProbe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(float(keras.ops.convert_to_numpy(self.model.weights[0]).ravel()[0]))


def test_cyclical_learning_rate_is_what_the_optimizer_uses():
    # w * 1 against target -1000 under MAE: the gradient is exactly 1, so SGD moves w by -lr.
    x = np.ones((8, 1), "float32")
    y = np.full((8, 1), -1000.0, "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mae")
    schedule = CyclicalLearningRate(max_lr=1.0, steps_per_epoch=8)  # base 0.1, step size 4
    probe = KernelProbe()

    history = model.fit(dataset, epochs=2, callbacks=[schedule, probe], verbose=0)

    expected = [0.1, 0.325, 0.55, 0.775, 1.0, 0.775, 0.55, 0.325] * 2
    np.testing.assert_allclose(schedule.history_lrs, expected, rtol=1e-12)
    steps_taken = -np.diff(np.concatenate([[0.0], probe.kernels]))
    np.testing.assert_allclose(steps_taken, expected, rtol=1e-5)
    np.testing.assert_allclose(history.history["lr"], [0.325, 0.325], rtol=1e-12)
    np.testing.assert_allclose(history.history["max_lr"], [1.0, 1.0])


def test_cyclical_learning_rate_rejects_missing_step_size():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        CyclicalLearningRate(max_lr=1e-3)
    with pytest.raises(ValueError, match="base_lr"):
        CyclicalLearningRate(max_lr=1e-3, base_lr=1e-2, steps_per_epoch=4)


def test_plateau_halves_cycle_bounds_after_patience_epochs():
    schedule = CyclicalLearningRate(max_lr=1.0, steps_per_epoch=10)
    plateau = ReduceMaxLROnPlateau(schedule, patience=6, factor=0.5)
    plateau.on_train_begin()
    val_losses = [1.0, 0.9] + [0.95] * 5  # five epochs without improvement: no change yet
    for epoch, value in enumerate(val_losses):
        plateau.on_epoch_end(epoch, {"val_loss": value})
    assert (schedule.base_lr, schedule.max_lr) == (pytest.approx(0.1), pytest.approx(1.0))

    plateau.on_epoch_end(7, {"val_loss": 0.91})  # sixth: halve
    assert (schedule.base_lr, schedule.max_lr) == (pytest.approx(0.05), pytest.approx(0.5))
    assert plateau.reductions == [(7, pytest.approx(0.5))]

    plateau.on_epoch_end(8, {"val_loss": 0.5})  # improvement restarts the count
    for epoch in range(9, 14):
        plateau.on_epoch_end(epoch, {"val_loss": 0.6})
    assert schedule.max_lr == pytest.approx(0.5)
    plateau.on_epoch_end(14, {"val_loss": 0.6})
    assert (schedule.base_lr, schedule.max_lr) == (pytest.approx(0.025), pytest.approx(0.25))
    assert schedule.current_learning_rate() == pytest.approx(triangular_learning_rate(0, 0.025, 0.25, 5))


# ---------------------------------------------------------------------------------------------
# training loop


def tiny_autoencoder():
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")
    return model


def image_dataset(images, targets, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(batch_size)


def test_training_callbacks_order_and_optional_loggers(tmp_path, monkeypatch):
    callbacks = training_callbacks(1e-3, steps_per_epoch=10)
    kinds = [type(c) for c in callbacks]
    assert kinds == [CyclicalLearningRate, ReduceMaxLROnPlateau, keras.callbacks.EarlyStopping, BestEpoch]
    assert callbacks[2].patience == 12 and callbacks[2].restore_best_weights
    assert callbacks[1].patience == 6 and callbacks[1].factor == 0.5
    assert callbacks[0].step_size == 5 and callbacks[0].base_lr == pytest.approx(1e-4)
    monkeypatch.setattr(training, "tensorboard_available", lambda: True)
    callbacks = training_callbacks(1e-3, 10, log_dir=tmp_path / "tb", csv_path=tmp_path / "log.csv")
    assert [type(c) for c in callbacks[-2:]] == [keras.callbacks.TensorBoard, keras.callbacks.CSVLogger]
    monkeypatch.setattr(training, "tensorboard_available", lambda: False)
    callbacks = training_callbacks(1e-3, 10, log_dir=tmp_path / "tb", csv_path=tmp_path / "log.csv")
    assert [type(c) for c in callbacks[-2:]] == [BestEpoch, keras.callbacks.CSVLogger]
    with pytest.raises(ValueError, match="csv_path"):
        training_callbacks(1e-3, 10, csv_path=tmp_path / "missing" / "log.csv")


def test_fit_autoencoder_records_history_lrs_and_logs(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(32, 16, 16, 1)).astype("float32")
    train_ds = image_dataset(images[:24], images[:24])
    val_ds = image_dataset(images[24:], images[24:])
    model = tiny_autoencoder()
    csv_path = tmp_path / "training.csv"

    result = fit_autoencoder(
        model, train_ds, val_ds, epochs=3, max_lr=1e-2, log_dir=tmp_path / "tb", csv_path=csv_path, verbose=0
    )

    assert result.epochs_run == 3
    assert {"loss", "val_loss", "lr", "max_lr"} <= set(result.history)
    assert len(result.history["val_loss"]) == 3
    best_index = int(np.argmin(result.history["val_loss"]))
    assert result.best_epoch == best_index + 1
    assert len(result.lrs) == 3 * 3
    np.testing.assert_allclose(result.lrs[:3], [1e-3, 1e-3 + 0.9e-2 * 2 / 3, 1e-2 - 0.9e-2 / 3], rtol=1e-9)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and "lr" in rows[0] and "val_loss" in rows[0]
    if tensorboard_available():
        assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))
    final_val_loss = model.evaluate(val_ds, verbose=0)
    assert final_val_loss == pytest.approx(result.history["val_loss"][best_index], rel=1e-5)


def test_fit_autoencoder_stops_early_and_restores_best_weights():
    """Validation targets are the negatives 1 - x: learning the identity makes val_loss worse."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(48, 16, 16, 1)).astype("float32")
    train_ds = image_dataset(images[:32], images[:32])
    val_ds = image_dataset(images[32:], 1.0 - images[32:])
    model = tiny_autoencoder()

    result = fit_autoencoder(model, train_ds, val_ds, epochs=20, max_lr=3e-2, patience=2, verbose=0)

    val_losses = result.history["val_loss"]
    assert result.epochs_run < 20  # early stopping fired
    assert result.epochs_run == result.best_epoch + 2
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert result.best_epoch < result.epochs_run
    final_val_loss = model.evaluate(val_ds, verbose=0)
    assert final_val_loss == pytest.approx(min(val_losses), rel=1e-5)
    assert final_val_loss < val_losses[-1]


def test_fit_autoencoder_rejects_mismatched_steps_and_schedules():
    images = np.zeros((8, 16, 16, 1), "float32")
    dataset = image_dataset(images, images, batch_size=4)
    with pytest.raises(ValueError, match="steps_per_epoch=5"):
        fit_autoencoder(tiny_autoencoder(), dataset, dataset, epochs=1, max_lr=1e-3, steps_per_epoch=5)
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        fit_autoencoder(tiny_autoencoder(), dataset.repeat(), dataset, epochs=1, max_lr=1e-3)
    model = tiny_autoencoder()
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, 10)), loss="mse")
    with pytest.raises(ValueError, match="float learning_rate"):
        fit_autoencoder(model, dataset, dataset, epochs=1, max_lr=1e-3)
