"""Adversarial autoencoder (AAE) with iterative rejection of suspicious training images.

After Beggel, Pfeiffer and Bischl, "Robust Anomaly Detection in Images using Adversarial
Autoencoders" (ECML-PKDD 2019, arXiv:1901.06355). A "defect-free" training folder often holds a few
defective images; a plain autoencoder learns to reconstruct them too. The AAE adds a
discriminator on the latent codes that pushes the distribution of the codes towards a prior
(standard normal), so the likelihood of an image's code under the prior becomes meaningful, and
every ``reject_every`` epochs the training images that look least normal (by default: the worst
reconstructed; with ``reject_by="likelihood"``: the least likely codes, as in the paper) are left
out of the following epochs.

Model. Any registered architecture whose code layer (named ``"bottleneck"``) splits the model into
an encoder part and a decoder part (no skip connections across it) is wrapped as::

    encoder: image -> <layers before the bottleneck> -> Flatten -> Dense(latent_dim)   (linear)
    decoder: code (latent_dim,) -> Dense(prod(bottleneck output shape)) -> Reshape -> <layers after it>

(the linear latent layer replaces the architecture's bottleneck layer, whose activation, often a
ReLU, would fight the zero-mean prior).

The saved autoencoder is a plain functional model ``image -> encoder -> Identity("bottleneck")
-> decoder``, so finetune.py and test.py load it like any other model and
``ModelBundle.encoder()`` returns the latent code. The discriminator is needed only for training
and is saved beside it as ``discriminator.weights.h5``.

Phases of one training step (:meth:`AdversarialAutoencoder.train_step`), each with its own Adam:

1. reconstruction: encoder and decoder minimise the reconstruction loss (ssim or l2);
2. discriminator: minimises the cross-entropy of telling prior samples (label 1) from codes (0);
3. generator: the encoder minimises the cross-entropy of its codes being called prior samples.

Rejection (iterative training-set refinement). Every ``reject_every`` epochs each training image
gets a rejection score (low = leave out), by ``reject_by``:

- ``"likelihood"``: the log-likelihood ``log N(z; 0, I)`` of its code, the paper's criterion;
- ``"reconstruction"`` (default): minus its reconstruction error (MSE);
- ``"combined"``: minus the combined anomaly score below, standardised on the training images.

With a fixed ``reject_fraction`` the lowest that fraction are left out; otherwise the fraction is
estimated by Tukey's lower fence on the scores (an image is rejected when its score is below
``Q1 - 1.5 * IQR``), capped at ``MAX_ESTIMATED_FRACTION``. The rejected set is recomputed from all
training images at every check (an image rejected early can come back when the model later fits
it well), and ``rejected.csv`` lists the images left out at the end of training: file, epoch of the
check since which it has been out, its log-likelihood, reconstruction error and rejection score at
the last check.

Why the default is not the paper's criterion: on the digits benchmark
(benchmarks/contamination.py) the images of other digits get codes *closer* to the prior's mode
than the normal digit does (their latent AUROC is below 0.5), so likelihood-based rejection
catches almost none of the planted images, while their reconstruction error separates them
(AUROC > 0.99 on the training set). See docs/benchmarks.md (contamination of the training set).

Anomaly score (:func:`combined_scores`): the paper flags an image when its code is unlikely under
the prior or its reconstruction error is large. Here both criteria are put on one scale by robust
standardisation with the validation images (median and MAD-based standard deviation, stored in
info.json) and added: ``(mse - median) / scale + (-loglik - median) / scale``. test.py reports its
AUROC as ``aae_image_auroc``, next to ``aae_latent_auroc`` and ``aae_reconstruction_auroc``.

The gradient steps use TensorFlow (``tf.GradientTape``); everything else is ``keras.ops``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from autoencoder.errors import UserError
from autoencoder.models import BOTTLENECK_LAYER
from autoencoder.rejection import REJECT_BY, check_reject_by  # noqa: F401  (part of this module's interface)

logger = logging.getLogger(__name__)

LATENT_LAYER = "latent"
DISCRIMINATOR_FILE = "discriminator.weights.h5"
REJECTED_FILE = "rejected.csv"
DEFAULT_LATENT_DIM = 16
DEFAULT_REJECT_EVERY = 5
MAX_ESTIMATED_FRACTION = 0.25
TUKEY_K = 1.5
_MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation


class AdversarialSetupError(UserError):
    """An architecture or setting the adversarial autoencoder cannot use."""


# --------------------------------------------------------------------------------------------
# Building the networks
# --------------------------------------------------------------------------------------------


def split_at_bottleneck(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Split a registry autoencoder at its "bottleneck" layer: (image -> bottleneck input, code -> image).

    Raises AdversarialSetupError when the model has no such layer or the decoder part depends on
    layers before the bottleneck (skip connections).
    """
    try:
        bottleneck = model.get_layer(BOTTLENECK_LAYER)
    except ValueError:
        raise AdversarialSetupError(
            f"--architecture {model.name}: no '{BOTTLENECK_LAYER}' layer; --adversarial needs one"
        ) from None
    # The trunk ends at the bottleneck's input: the new linear latent layer replaces the bottleneck
    # (a ReLU bottleneck dies under the generator's push towards a zero-mean prior).
    encoder = keras.Model(model.inputs, bottleneck.input, name=f"{model.name}_encoder_trunk")
    try:
        decoder = keras.Model(bottleneck.output, model.output, name=f"{model.name}_decoder_trunk")
    except ValueError:
        raise AdversarialSetupError(
            f"--architecture {model.name}: the decoder uses layers before the bottleneck (skip "
            "connections); --adversarial needs an architecture whose code is the only path"
        ) from None
    return encoder, decoder


def build_adversarial_autoencoder(base: keras.Model, latent_dim: int = DEFAULT_LATENT_DIM) -> tuple[keras.Model, keras.Model, keras.Model]:
    """Wrap a registry autoencoder with a linear latent vector; return (autoencoder, encoder, decoder).

    base: uncompiled registry model, input and output (batch, H, W, C) in [0, 1].
    encoder: (batch, H, W, C) -> (batch, latent_dim) float32, linear (no activation).
    decoder: (batch, latent_dim) -> (batch, H, W, C).
    autoencoder: image -> encoder -> Identity named "bottleneck" -> decoder (what is saved).
    """
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise AdversarialSetupError(f"--latent-dim {latent_dim!r}: expected a positive integer")
    encoder_trunk, decoder_trunk = split_at_bottleneck(base)
    code_shape = tuple(decoder_trunk.input.shape[1:])

    image = keras.Input(shape=tuple(base.input.shape[1:]), name="image")
    code = layers.Flatten()(encoder_trunk(image))
    latent = layers.Dense(int(latent_dim), name=LATENT_LAYER)(code)
    encoder = keras.Model(image, latent, name="encoder")

    latent_in = keras.Input(shape=(int(latent_dim),), name="code")
    x = layers.Dense(math.prod(code_shape), name="latent_projection")(latent_in)
    x = layers.Reshape(code_shape)(x)
    decoder = keras.Model(latent_in, decoder_trunk(x), name="decoder")

    image = keras.Input(shape=tuple(base.input.shape[1:]), name="image")
    code = layers.Identity(name=BOTTLENECK_LAYER)(encoder(image))
    autoencoder = keras.Model(image, decoder(code), name=f"{base.name}_aae")
    return autoencoder, encoder, decoder


def build_discriminator(latent_dim: int, units: tuple[int, ...] = (128, 128)) -> keras.Model:
    """MLP on codes: (batch, latent_dim) -> (batch, 1) logit that the code is a prior sample."""
    code = keras.Input(shape=(int(latent_dim),), name="code")
    x = code
    for width in units:
        x = layers.Dense(width)(x)
        x = layers.LeakyReLU(0.2)(x)
    logit = layers.Dense(1, name="logit")(x)
    return keras.Model(code, logit, name="discriminator")


# --------------------------------------------------------------------------------------------
# The adversarial game
# --------------------------------------------------------------------------------------------


def _bce_with_logits(target: float, logits):
    """Mean binary cross-entropy of `logits` (batch, 1) against a constant label."""
    labels = ops.full_like(logits, target)
    return ops.mean(ops.binary_crossentropy(labels, logits, from_logits=True))


def _gradient_step(loss_fn, variables, optimizer):
    """One optimiser step on `variables` minimising `loss_fn()`; returns the loss (backend-specific)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn()
    gradients = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    return loss


class AdversarialAutoencoder(keras.Model):
    """Encoder, decoder and a latent discriminator trained by alternating phases (module docstring).

    Inputs: float32 images (batch, H, W, C) in [0, 1], as ``(x, x)`` pairs or bare ``x``.
    ``call(x)`` is the reconstruction. Train with :meth:`compile` then ``fit``; the epoch logs hold
    ``loss`` (reconstruction), ``discriminator_loss``, ``generator_loss``, and ``val_loss``.
    Only the TensorFlow backend is supported for training.
    """

    def __init__(
        self, encoder: keras.Model, decoder: keras.Model, discriminator: keras.Model, prior_std: float = 1.0, seed: int = 0, **kwargs
    ):
        super().__init__(**kwargs)
        if keras.backend.backend() != "tensorflow":
            raise AdversarialSetupError(f"KERAS_BACKEND={keras.backend.backend()}: the adversarial training step needs tensorflow")
        self.encoder = encoder
        self.decoder = decoder
        self.discriminator = discriminator
        self.prior_std = float(prior_std)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="loss")
        self.discriminator_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.generator_tracker = keras.metrics.Mean(name="generator_loss")

    def call(self, inputs, training=False):
        return self.decoder(self.encoder(inputs, training=training), training=training)

    def compile(self, reconstruction_loss, learning_rate: float = 1e-3, adversarial_learning_rate: float | None = None, **kwargs):
        """Three Adam optimisers: reconstruction at `learning_rate`, discriminator and generator at
        `adversarial_learning_rate` (default: the same) with beta_1 = 0.5 (usual for GANs)."""
        adversarial_lr = learning_rate if adversarial_learning_rate is None else adversarial_learning_rate
        super().compile(optimizer=keras.optimizers.Adam(learning_rate), **kwargs)
        self.reconstruction_loss = reconstruction_loss
        self.discriminator_optimizer = keras.optimizers.Adam(adversarial_lr, beta_1=0.5)
        self.generator_optimizer = keras.optimizers.Adam(adversarial_lr, beta_1=0.5)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.generator_optimizer.build(self.encoder.trainable_variables)

    @property
    def metrics(self):
        return [self.reconstruction_tracker, self.discriminator_tracker, self.generator_tracker]

    def sample_prior(self, n):
        """(n, latent_dim) samples of N(0, prior_std^2 I)."""
        return keras.random.normal((n, self.encoder.output.shape[-1]), stddev=self.prior_std, seed=self.seed_generator)

    def reconstruction_step(self, x):
        variables = self.encoder.trainable_variables + self.decoder.trainable_variables

        def loss_fn():
            return ops.mean(self.reconstruction_loss(x, self(x, training=True)))

        return _gradient_step(loss_fn, variables, self.optimizer)

    def discriminator_loss(self, codes, prior_samples):
        """Cross-entropy of calling prior samples real (1) and codes fake (0)."""
        real = self.discriminator(prior_samples, training=True)
        fake = self.discriminator(codes, training=True)
        return _bce_with_logits(1.0, real) + _bce_with_logits(0.0, fake)

    def discriminator_step(self, x):
        codes = ops.stop_gradient(self.encoder(x, training=False))
        prior_samples = self.sample_prior(ops.shape(x)[0])
        return _gradient_step(
            lambda: self.discriminator_loss(codes, prior_samples),
            self.discriminator.trainable_variables,
            self.discriminator_optimizer,
        )

    def generator_loss(self, x):
        """Cross-entropy of the discriminator calling the codes of `x` prior samples."""
        return _bce_with_logits(1.0, self.discriminator(self.encoder(x, training=True), training=False))

    def generator_step(self, x):
        return _gradient_step(lambda: self.generator_loss(x), self.encoder.trainable_variables, self.generator_optimizer)

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        self.reconstruction_tracker.update_state(self.reconstruction_step(x))
        self.discriminator_tracker.update_state(self.discriminator_step(x))
        self.generator_tracker.update_state(self.generator_step(x))
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        self.reconstruction_tracker.update_state(ops.mean(self.reconstruction_loss(x, self(x, training=False))))
        return {"loss": self.reconstruction_tracker.result()}


# --------------------------------------------------------------------------------------------
# Likelihoods, rejection and scores (numpy)
# --------------------------------------------------------------------------------------------


def log_likelihood(codes: np.ndarray, prior_std: float = 1.0) -> np.ndarray:
    """log N(z; 0, prior_std^2 I) of each row of codes (N, d); float64 (N,)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2:
        raise UserError(f"codes of shape {codes.shape}: expected (N, latent_dim)")
    d = codes.shape[1]
    return -0.5 * np.sum((codes / prior_std) ** 2, axis=1) - d * (0.5 * math.log(2 * math.pi) + math.log(prior_std))


def tukey_lower_fence(values: np.ndarray, k: float = TUKEY_K) -> float:
    """Q1 - k * IQR of `values` (1-D): below it a value counts as an outlier."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q1 - k * (q3 - q1))


def choose_rejected(log_likelihoods: np.ndarray, reject_fraction: float | None = None) -> np.ndarray:
    """Boolean (N,) mask of the images to leave out, from their log-likelihoods (N,).

    With `reject_fraction` f the round(f * N) least likely are rejected (ties broken by index);
    with None, those below Tukey's lower fence, at most MAX_ESTIMATED_FRACTION of them.
    """
    values = np.asarray(log_likelihoods, dtype=np.float64)
    n = len(values)
    order = np.argsort(values, kind="stable")
    if reject_fraction is None:
        below = int(np.sum(values < tukey_lower_fence(values)))
        count = min(below, int(MAX_ESTIMATED_FRACTION * n))
    else:
        check_reject_fraction(reject_fraction)
        count = int(round(reject_fraction * n))
    rejected = np.zeros(n, dtype=bool)
    rejected[order[:count]] = True
    return rejected


def check_reject_fraction(reject_fraction: float | None) -> None:
    if reject_fraction is not None and not (0.0 <= reject_fraction < 0.5):
        raise AdversarialSetupError(f"--reject-fraction {reject_fraction}: expected a fraction in [0, 0.5)")


def encode(encoder: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Latent codes of images (N, H, W, C) float32: float64 (N, latent_dim)."""
    if len(images) == 0:
        return np.zeros((0, encoder.output.shape[-1]))
    return np.asarray(encoder.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)


def reconstruction_errors(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per-image mean squared error between images (N, H, W, C) and their reconstructions: float64 (N,)."""
    if len(images) == 0:
        return np.zeros(0)
    reconstructions = np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)
    return np.mean((reconstructions - images) ** 2, axis=tuple(range(1, images.ndim)))


def robust_location_scale(values: np.ndarray) -> dict:
    """{"median", "scale"} of 1-D values; scale = 1.4826 * MAD (std for normal data), never 0."""
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    scale = float(_MAD_TO_STD * np.median(np.abs(values - median)))
    if not scale > 0:
        scale = float(np.std(values)) or 1.0
    return {"median": median, "scale": scale}


def score_calibration(recon_errors: np.ndarray, log_likelihoods: np.ndarray) -> dict:
    """Robust location/scale of both criteria on defect-free (validation) images, for combined_scores."""
    return {
        "reconstruction_error": robust_location_scale(recon_errors),
        "negative_log_likelihood": robust_location_scale(-np.asarray(log_likelihoods, dtype=np.float64)),
    }


def combined_scores(recon_errors: np.ndarray, log_likelihoods: np.ndarray, calibration: dict) -> np.ndarray:
    """Anomaly score (N,) float64: standardised reconstruction error + standardised -log-likelihood."""
    rec = calibration["reconstruction_error"]
    nll = calibration["negative_log_likelihood"]
    recon_errors = np.asarray(recon_errors, dtype=np.float64)
    negative_ll = -np.asarray(log_likelihoods, dtype=np.float64)
    return (recon_errors - rec["median"]) / rec["scale"] + (negative_ll - nll["median"]) / nll["scale"]


def image_scores(autoencoder: keras.Model, images: np.ndarray, calibration: dict, prior_std: float = 1.0, batch_size: int = 64) -> dict:
    """Scores of images (N, H, W, C) with a saved AAE autoencoder: each value float64 (N,).

    Keys: "reconstruction_error", "log_likelihood", "combined".
    """
    encoder = keras.Model(autoencoder.inputs, autoencoder.get_layer(BOTTLENECK_LAYER).output)
    errors = reconstruction_errors(autoencoder, images, batch_size)
    likelihoods = log_likelihood(encode(encoder, images, batch_size), prior_std)
    return {
        "reconstruction_error": errors,
        "log_likelihood": likelihoods,
        "combined": combined_scores(errors, likelihoods, calibration),
    }


# --------------------------------------------------------------------------------------------
# Training with rejection
# --------------------------------------------------------------------------------------------


@dataclass
class RejectionRound:
    epoch: int  # the check ran after this many epochs
    n_rejected: int
    fence: float | None  # Tukey's fence when the fraction was estimated


@dataclass
class AdversarialResult:
    """Outcome of fit_with_rejection: per-epoch history, the rejection rounds and final state."""

    history: dict[str, list[float]]
    epochs_run: int
    rounds: list[RejectionRound] = field(default_factory=list)
    rejected: np.ndarray = field(default=None, repr=False)  # bool (N,) left out at the end
    rejected_since: np.ndarray = field(default=None, repr=False)  # int (N,) epoch of rejection, 0 if kept
    log_likelihoods: np.ndarray = field(default=None, repr=False)  # (N,) at the last check
    reconstruction_errors: np.ndarray = field(default=None, repr=False)  # (N,) MSE at the last check
    rejection_scores: np.ndarray = field(default=None, repr=False)  # (N,) what was thresholded (low = out)


class _EpochBar(keras.callbacks.Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix({k: f"{float(v):.3g}" for k, v in logs.items() if k in ("loss", "val_loss", "discriminator_loss")})
        self.bar.update(1)


def fit_with_rejection(
    aae: AdversarialAutoencoder,
    train_images: np.ndarray,
    val_images: np.ndarray | None,
    epochs: int,
    batch_size: int,
    reject_every: int = DEFAULT_REJECT_EVERY,
    reject_fraction: float | None = None,
    augment: bool = True,
    seed: int = 0,
    progress: bool = True,
    reject_by: str = "reconstruction",
) -> AdversarialResult:
    """Train a compiled AAE for `epochs`, checking every `reject_every` epochs which images to leave out.

    train_images, val_images: float32 (N, H, W, C) in [0, 1]. reject_every = 0 disables rejection.
    The training pipeline (autoencoder.pipeline.make_training_dataset) is rebuilt on the kept images
    after each check. No check runs after the last epoch (it could not change the model).
    reject_by: "likelihood" (the paper's criterion) or "combined" (see rejection_scores).
    """
    from tqdm.auto import tqdm

    from autoencoder.pipeline import make_training_dataset
    from autoencoder.progress import on_terminal

    check_reject_fraction(reject_fraction)
    check_reject_by(reject_by)
    if reject_every < 0:
        raise AdversarialSetupError(f"--reject-every {reject_every}: expected 0 (no rejection) or a positive number of epochs")
    n = len(train_images)
    rejected = np.zeros(n, dtype=bool)
    rejected_since = np.zeros(n, dtype=np.int64)
    likelihoods, errors, scores = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    val_ds = None
    if val_images is not None and len(val_images):
        val_ds = make_training_dataset(val_images, batch_size, shuffle=False, augment=False)
    history: dict[str, list[float]] = {}
    rounds: list[RejectionRound] = []
    chunk = reject_every if reject_every > 0 else epochs
    with tqdm(total=epochs, desc="adversarial training", unit="epoch", disable=not progress or not on_terminal()) as bar:
        for start in range(0, epochs, chunk):
            stop = min(start + chunk, epochs)
            kept = train_images[~rejected]
            train_ds = make_training_dataset(kept, batch_size, shuffle=True, augment=augment, seed=seed + start)
            fitted = aae.fit(
                train_ds, validation_data=val_ds, initial_epoch=start, epochs=stop, verbose=0, shuffle=False, callbacks=[_EpochBar(bar)]
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            if reject_every > 0 and stop < epochs:
                likelihoods = log_likelihood(encode(aae.encoder, train_images), aae.prior_std)
                errors = reconstruction_errors(aae, train_images)
                scores = rejection_scores(likelihoods, errors, reject_by)
                now = choose_rejected(scores, reject_fraction)
                rejected_since = np.where(now & ~rejected, stop, np.where(now, rejected_since, 0))
                rejected = now
                fence = tukey_lower_fence(scores) if reject_fraction is None else None
                rounds.append(RejectionRound(epoch=stop, n_rejected=int(rejected.sum()), fence=fence))
                logger.info("epoch %d: %d of %d training images left out", stop, rejected.sum(), n)
    return AdversarialResult(history, epochs, rounds, rejected, rejected_since, likelihoods, errors, scores)


def rejection_scores(log_likelihoods: np.ndarray, recon_errors: np.ndarray, reject_by: str = "reconstruction") -> np.ndarray:
    """What the rejection thresholds, (N,) float64, low = leave out.

    "likelihood": the codes' log-likelihoods under the prior (the paper's criterion).
    "reconstruction": minus the reconstruction errors (MSE).
    "combined": minus the combined anomaly score, standardised on the training images themselves
    (robustly, so the few outliers barely move the median and MAD).
    """
    check_reject_by(reject_by)
    if reject_by == "likelihood":
        return np.asarray(log_likelihoods, dtype=np.float64)
    if reject_by == "reconstruction":
        return -np.asarray(recon_errors, dtype=np.float64)
    return -combined_scores(recon_errors, log_likelihoods, score_calibration(recon_errors, log_likelihoods))


def write_rejected_csv(path: str | Path, files: list[Path], root: Path, result: AdversarialResult) -> Path:
    """rejected.csv: file (relative to the dataset root), epoch_rejected, log_likelihood,
    reconstruction_error (MSE), rejection_score (what was thresholded); most clearly rejected first."""
    path = Path(path)
    indices = np.flatnonzero(result.rejected)
    indices = indices[np.argsort(result.rejection_scores[indices], kind="stable")]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "epoch_rejected", "log_likelihood", "reconstruction_error", "rejection_score"])
        for i in indices:
            writer.writerow(
                [
                    str(Path(files[i]).relative_to(root)),
                    int(result.rejected_since[i]),
                    f"{result.log_likelihoods[i]:.6g}",
                    f"{result.reconstruction_errors[i]:.6g}",
                    f"{result.rejection_scores[i]:.6g}",
                ]
            )
    return path


def read_rejected_csv(path: str | Path) -> list[dict]:
    """Rows of rejected.csv as dicts (file: str, epoch_rejected: int, the other columns float)."""
    with open(path, newline="") as handle:
        return [
            {
                "file": row["file"],
                "epoch_rejected": int(row["epoch_rejected"]),
                "log_likelihood": float(row["log_likelihood"]),
                "reconstruction_error": float(row["reconstruction_error"]),
                "rejection_score": float(row["rejection_score"]),
            }
            for row in csv.DictReader(handle)
        ]


def rejection_rule(reject_every: int, reject_fraction: float | None) -> str:
    """One-line description of the rejection setting, for info.json."""
    if reject_every == 0:
        return "none"
    if reject_fraction is not None:
        return f"the lowest {reject_fraction:g} of the rejection scores, every {reject_every} epochs"
    return f"below Tukey's lower fence (k={TUKEY_K}, at most {MAX_ESTIMATED_FRACTION:g}), every {reject_every} epochs"


def write_history_csv(path: Path, history: dict[str, list[float]]) -> None:
    """history.csv as keras.callbacks.CSVLogger writes it: epoch, then one column per series."""
    keys = sorted(history)
    n = max((len(v) for v in history.values()), default=0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(n):
            writer.writerow([epoch, *(history[k][epoch] if epoch < len(history[k]) else "" for k in keys)])
