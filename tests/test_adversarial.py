"""Adversarial autoencoder: the adversarial game, latent likelihoods, rejection, and train.py --adversarial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.metrics import roc_auc_score

import finetune
import test as test_script
import train
from autoencoder import adversarial, bundle
from autoencoder.adversarial import (
    AdversarialAutoencoder,
    AdversarialSetupError,
    build_adversarial_autoencoder,
    build_discriminator,
    choose_rejected,
    combined_scores,
    log_likelihood,
    rejection_scores,
    score_calibration,
    tukey_lower_fence,
)
from autoencoder.losses import l2_loss
from autoencoder.models import build_model
from processing.data.digits import generate_digits_arrays, make_digits_dataset
from processing.data.images import load_images, scan_dataset

LATENT = 2


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def test_log_likelihood_matches_scipy():
    codes = np.random.default_rng(0).normal(size=(20, 5)) * 2 + 0.5
    for std in (1.0, 0.5):
        expected = multivariate_normal(mean=np.zeros(5), cov=std**2 * np.eye(5)).logpdf(codes)
        np.testing.assert_allclose(log_likelihood(codes, std), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="expected \\(N, latent_dim\\)"):
        log_likelihood(np.zeros(4))


def test_tukey_fence_and_rejection_rules():
    rng = np.random.default_rng(1)
    values = rng.normal(size=200)
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    assert tukey_lower_fence(values) == pytest.approx(q1 - 1.5 * (q3 - q1))

    # fixed fraction: exactly the round(f * N) smallest
    rejected = choose_rejected(values, 0.1)
    assert rejected.sum() == 20
    assert set(np.flatnonzero(rejected)) == set(np.argsort(values)[:20])

    # estimated: planted outliers far below are caught, and nothing above the fence is
    values_out = values.copy()
    values_out[:8] -= 10.0
    rejected = choose_rejected(values_out)
    assert rejected[:8].all()
    fence = tukey_lower_fence(values_out)
    np.testing.assert_array_equal(rejected, values_out < fence)

    # the estimate is capped
    heavy = np.concatenate([np.zeros(50), -np.arange(1, 51) * 100.0])
    assert choose_rejected(heavy).sum() <= int(adversarial.MAX_ESTIMATED_FRACTION * 100)
    with pytest.raises(ValueError, match="--reject-fraction 0.7"):
        choose_rejected(values, 0.7)


def test_combined_score_is_sum_of_standardised_criteria():
    rng = np.random.default_rng(2)
    val_err, val_ll = rng.gamma(2.0, size=50), rng.normal(-10, 2, size=50)
    calibration = score_calibration(val_err, val_ll)
    err, ll = rng.gamma(2.0, size=7), rng.normal(-10, 2, size=7)
    mad = lambda v: 1.4826 * np.median(np.abs(v - np.median(v)))  # noqa: E731
    expected = (err - np.median(val_err)) / mad(val_err) + (-ll - np.median(-val_ll)) / mad(-val_ll)
    np.testing.assert_allclose(combined_scores(err, ll, calibration), expected)
    # worse on either criterion alone -> higher score
    assert combined_scores(err + 1, ll, calibration)[0] > combined_scores(err, ll, calibration)[0]
    assert combined_scores(err, ll - 1, calibration)[0] > combined_scores(err, ll, calibration)[0]


def test_rejection_scores_per_criterion():
    rng = np.random.default_rng(4)
    ll, err = rng.normal(-8, 2, size=30), rng.gamma(2.0, size=30)
    np.testing.assert_array_equal(rejection_scores(ll, err, "likelihood"), ll)
    np.testing.assert_array_equal(rejection_scores(ll, err, "reconstruction"), -err)
    np.testing.assert_allclose(rejection_scores(ll, err, "combined"), -combined_scores(err, ll, score_calibration(err, ll)))
    with pytest.raises(ValueError, match="--reject-by 'mse'"):
        rejection_scores(ll, err, "mse")


# --------------------------------------------------------------------------------------------
# Networks and the adversarial game
# --------------------------------------------------------------------------------------------


def test_wrapping_a_registry_model():
    autoencoder, encoder, decoder = build_adversarial_autoencoder(build_model("cnnAE", "grayscale", 28), latent_dim=6)
    assert encoder.output.shape == (None, 6) and decoder.output.shape == (None, 28, 28, 1)
    assert autoencoder.get_layer("bottleneck").output.shape == (None, 6)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(autoencoder.predict(x, verbose=0), decoder.predict(encoder.predict(x, verbose=0), verbose=0), atol=1e-6)
    with pytest.raises(AdversarialSetupError, match="skip connections"):
        build_adversarial_autoencoder(build_model("skipCAE", "grayscale", 32))
    with pytest.raises(AdversarialSetupError, match="--latent-dim 0"):
        build_adversarial_autoencoder(build_model("cnnAE", "grayscale", 28), latent_dim=0)


def toy_aae(shift: float, seed: int = 0) -> AdversarialAutoencoder:
    """4x4 images -> 2-d codes whose distribution starts far from the prior (mean `shift`)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((4, 4, 1))
    code = keras.layers.Dense(LATENT, bias_initializer=keras.initializers.Constant(shift))(keras.layers.Flatten()(image))
    encoder = keras.Model(image, code)
    latent = keras.Input((LATENT,))
    decoder = keras.Model(latent, keras.layers.Reshape((4, 4, 1))(keras.layers.Dense(16, activation="sigmoid")(latent)))
    aae = AdversarialAutoencoder(encoder, decoder, build_discriminator(LATENT, units=(32, 32)), seed=seed)
    aae.compile(l2_loss, learning_rate=1e-3, adversarial_learning_rate=2e-3)
    return aae


TOY_IMAGES = np.random.default_rng(3).random((64, 4, 4, 1), dtype=np.float32)


def compiled(step):
    """The step as one traced graph (the training step supports TensorFlow only; eager is slow)."""
    import tensorflow as tf

    return tf.function(step)


def test_discriminator_loss_falls_with_frozen_encoder():
    aae = toy_aae(shift=2.0)
    before = [w.copy() for w in aae.encoder.get_weights()]
    discriminator_step = compiled(aae.discriminator_step)
    losses = [float(discriminator_step(TOY_IMAGES)) for _ in range(150)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    for old, new in zip(before, aae.encoder.get_weights()):
        np.testing.assert_array_equal(old, new)  # the discriminator phase leaves the encoder alone


def test_generator_phase_moves_codes_towards_prior():
    aae = toy_aae(shift=3.0)
    codes_before = aae.encoder.predict(TOY_IMAGES, verbose=0)
    discriminator_step, generator_step = compiled(aae.discriminator_step), compiled(aae.generator_step)
    for _ in range(100):
        discriminator_step(TOY_IMAGES)
    discriminator_before = [w.copy() for w in aae.discriminator.get_weights()]
    generator_losses = [float(generator_step(TOY_IMAGES)) for _ in range(20)]
    for old, new in zip(discriminator_before, aae.discriminator.get_weights()):
        np.testing.assert_array_equal(old, new)  # the generator phase leaves the discriminator alone
    assert generator_losses[-1] < generator_losses[0]
    for _ in range(300):  # the game: alternate the two phases
        discriminator_step(TOY_IMAGES)
        generator_step(TOY_IMAGES)
    codes_after = aae.encoder.predict(TOY_IMAGES, verbose=0)
    distance = lambda c: np.abs(c.mean(axis=0)).max() + np.abs(np.log(c.std(axis=0))).max()  # noqa: E731
    assert abs(codes_before.mean()) > 2.5
    assert distance(codes_after) < 0.3 * distance(codes_before)
    assert np.abs(codes_after.mean(axis=0)).max() < 0.75


def test_fit_logs_the_three_losses_and_reconstruction_improves():
    aae = toy_aae(shift=0.0)
    history = aae.fit(TOY_IMAGES, TOY_IMAGES, validation_data=(TOY_IMAGES, TOY_IMAGES), batch_size=16, epochs=15, verbose=0)
    assert {"loss", "discriminator_loss", "generator_loss", "val_loss"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]


# --------------------------------------------------------------------------------------------
# Rejection on digits with planted outliers
# --------------------------------------------------------------------------------------------


def test_rejection_removes_most_planted_outliers():
    arrays = generate_digits_arrays(normal_digits=[0], noise_sigmas=(), train_fraction=0.6, seed=0)
    normal = arrays.images["train/good"][..., None].astype(np.float32) / 255
    planted = arrays.images["test/digit_1"][:6, ..., None].astype(np.float32) / 255  # 5 % of the training set
    images = np.concatenate([normal, planted])
    is_planted = np.r_[np.zeros(len(normal), bool), np.ones(len(planted), bool)]

    keras.utils.set_random_seed(0)
    _, encoder, decoder = build_adversarial_autoencoder(build_model("fcnSimpleAE", "grayscale", 28), latent_dim=8)
    aae = AdversarialAutoencoder(encoder, decoder, build_discriminator(8), seed=0)
    aae.compile(l2_loss, learning_rate=1e-3)
    result = adversarial.fit_with_rejection(aae, images, None, epochs=25, batch_size=16, reject_every=5, augment=False, progress=False)
    assert [r.epoch for r in result.rounds] == [5, 10, 15, 20]
    caught = int((result.rejected & is_planted).sum())
    assert caught >= 4, f"rejection caught {caught} of 6 planted images"
    assert result.rejected.sum() <= 2 * len(planted), f"{result.rejected.sum()} images rejected for 6 planted"
    np.testing.assert_array_equal(result.rejected, result.rejection_scores < result.rounds[-1].fence)
    np.testing.assert_allclose(result.rejection_scores, -result.reconstruction_errors)


# --------------------------------------------------------------------------------------------
# train.py --adversarial -> finetune.py -> test.py
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory) -> Path:
    return make_digits_dataset(tmp_path_factory.mktemp("data") / "digits", normal_digits=[0], noise_sigmas=(0.3,), train_fraction=0.3)


@pytest.fixture(scope="module")
def aae_folder(digits_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("work")
    return train.main([
        "-d", str(digits_dataset), "-a", "fcnSimpleAE", "-l", "l2", "-b", "16", "--epochs", "4", "--lr", "1e-3",
        "--adversarial", "--latent-dim", "8", "--reject-every", "2", "--reject-fraction", "0.1",
        "--output-dir", str(out / "models"), "--seed", "5",
    ])


def test_train_adversarial_writes_loadable_model_folder(aae_folder, digits_dataset):
    names = {p.name for p in aae_folder.iterdir()}
    assert {"info.json", "history.csv", "loss_plot.png", "rejected.csv", adversarial.DISCRIMINATOR_FILE} <= names
    info = json.loads((aae_folder / "info.json").read_text())
    assert info["adversarial"]["latent_dim"] == 8 and info["adversarial"]["reject_fraction"] == 0.1
    assert [r["epoch"] for r in info["adversarial"]["rounds"]] == [2]
    assert info["training"]["epochs_run"] == 4

    rows = list(csv.DictReader(open(aae_folder / "rejected.csv")))
    n_train = info["dataset"]["n_train"]
    assert len(rows) == info["adversarial"]["n_rejected"] == round(0.1 * n_train)
    train_names = {p.name for p in scan_dataset(digits_dataset).train_good}
    assert all(Path(r["file"]).name in train_names and r["file"].startswith("train/good/") for r in rows)
    assert all(int(r["epoch_rejected"]) == 2 for r in rows)
    scores = [float(r["rejection_score"]) for r in rows]
    assert scores == sorted(scores)
    assert all(float(r["rejection_score"]) == pytest.approx(-float(r["reconstruction_error"]), rel=1e-5) for r in rows)

    loaded = bundle.load_bundle(aae_folder)
    assert loaded.model_file.name == "fcnSimpleAE_b16_e4.keras"
    images = load_images(scan_dataset(digits_dataset).train_good[:5], "grayscale", 28)
    codes = loaded.encoder().predict(images, verbose=0)
    assert codes.shape == (5, 8)
    # the saved model is the plain autoencoder: same output as encoder -> decoder inside it
    decoder = loaded.model.get_layer("decoder")
    np.testing.assert_allclose(loaded.model.predict(images, verbose=0), decoder.predict(codes, verbose=0), atol=1e-5)
    discriminator = build_discriminator(8)
    discriminator.load_weights(aae_folder / adversarial.DISCRIMINATOR_FILE)


def test_finetune_and_test_on_adversarial_model(aae_folder, tmp_path):
    results = tmp_path / "results"
    finetune.main(["-p", str(aae_folder), "-m", "l2", "-t", "float64", "--results-dir", str(results)])
    test_script.main(["-p", str(aae_folder), "--results-dir", str(results)])
    loaded = bundle.load_bundle(aae_folder)
    result_file = loaded.results_dir(results) / "test" / "l2_float64" / "test_result.json"
    result = json.loads(result_file.read_text())
    for key in ("image_auroc", "aae_image_auroc", "aae_latent_auroc", "aae_reconstruction_auroc"):
        assert 0.0 <= result[key] <= 1.0

    # aae_reconstruction_auroc is the AUROC of the per-image MSE: recompute it independently
    rows = list(csv.DictReader(open(result_file.parent / "classification.csv")))
    files = [loaded.info.dataset.path + "/" + r["file"] for r in rows]
    images = load_images([Path(f) for f in files], "grayscale", 28)
    mse = ((loaded.model.predict(images, verbose=0) - images) ** 2).mean(axis=(1, 2, 3))
    truth = [int(r["truth"]) for r in rows]
    assert result["aae_reconstruction_auroc"] == pytest.approx(roc_auc_score(truth, mse), abs=1e-6)


def test_train_adversarial_bad_input(digits_dataset, tmp_path, capsys):
    base = ["-d", str(digits_dataset), "-b", "16", "--epochs", "1", "--lr", "1e-3", "--output-dir", str(tmp_path), "--adversarial"]
    cases = [
        (["-a", "fcnSimpleAE", "-l", "l2", "--reject-fraction", "0.7"], "--reject-fraction 0.7"),
        (["-a", "fcnSimpleAE", "-l", "l2", "--reject-every", "-1"], "--reject-every -1"),
        (["-a", "fcnSimpleAE", "-l", "l2", "--latent-dim", "0"], "--latent-dim 0"),
        (["-a", "skipCAE", "--image-size", "32"], "skip connections"),
    ]
    for extra, expected in cases:
        assert train.cli.run(train.main, base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not any(tmp_path.iterdir()), "a failed run left a model folder"
