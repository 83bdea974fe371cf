"""train.py --adversarial: train the adversarial autoencoder with rejection and write its model
folder; and the image AUROCs test.py adds for such a model."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import keras

from autoencoder import bundle
from autoencoder.adversarial import (
    DISCRIMINATOR_FILE,
    REJECTED_FILE,
    AdversarialAutoencoder,
    AdversarialSetupError,
    build_adversarial_autoencoder,
    build_discriminator,
    check_reject_by,
    check_reject_fraction,
    encode,
    fit_with_rejection,
    log_likelihood,
    reconstruction_errors,
    rejection_rule,
    score_calibration,
    write_history_csv,
    write_rejected_csv,
)
from autoencoder.errors import UserError
from autoencoder.losses import get_loss
from autoencoder.training import TrainingResult
from processing.data.images import load_images, split_train_validation
from processing.evaluation import plots
from processing.workflow.model_info import build_info, store_roi, write_inspection_plots

logger = logging.getLogger(__name__)


def train_adversarial(config, architecture, size, layout) -> Path:
    """What ``trainer.train`` runs when ``config.adversarial``: train the AAE, write the model folder.

    The folder is the usual one (``.keras`` autoencoder, info.json with an "adversarial" section,
    history.csv, loss_plot.png) plus ``discriminator.weights.h5`` and ``rejected.csv``. There is no
    learning-rate range test or early stopping: the AAE trains for ``config.epochs`` epochs at the
    constant rate ``config.learning_rate`` (default 1e-3).
    """
    check_reject_fraction(config.reject_fraction)
    check_reject_by(config.reject_by)
    if config.reject_every < 0:
        raise AdversarialSetupError(f"--reject-every {config.reject_every}: expected 0 (no rejection) or a positive number of epochs")
    keras.utils.set_random_seed(config.seed)
    base = architecture.build(config.color_mode, size)
    autoencoder, encoder, decoder = build_adversarial_autoencoder(base, config.latent_dim)
    discriminator = build_discriminator(config.latent_dim)

    train_files, val_files = split_train_validation(layout.train_good, config.validation_split, config.seed)
    if not train_files or not val_files:
        raise UserError(
            f"--input-dir {config.input_dir}: train/good has {len(layout.train_good)} images; "
            "expected at least 2 (one for validation)"
        )
    train_images = load_images(train_files, config.color_mode, size, progress=True)
    val_images = load_images(val_files, config.color_mode, size)
    aae = AdversarialAutoencoder(encoder, decoder, discriminator, seed=config.seed)
    learning_rate = 1e-3 if config.learning_rate is None else float(config.learning_rate)
    aae.compile(get_loss(config.loss), learning_rate=learning_rate)
    logger.info(
        "adversarial %s: latent %d, %d + %d (discriminator) parameters, lr %.3g, rejection by %s every %s epochs (%s)",
        architecture.name,
        config.latent_dim,
        autoencoder.count_params(),
        discriminator.count_params(),
        learning_rate,
        config.reject_by,
        config.reject_every or "no",
        "estimated fraction" if config.reject_fraction is None else f"fraction {config.reject_fraction}",
    )

    stamp = bundle.timestamp()
    folder = bundle.model_folder(config.output_dir, layout.root.name, architecture.name, config.loss, stamp)
    writer = bundle.staging_folder(folder, unique=True)
    with writer as staging:
        started = time.perf_counter()
        result = fit_with_rejection(
            aae,
            train_images,
            val_images,
            config.epochs,
            config.batch_size,
            reject_every=config.reject_every,
            reject_fraction=config.reject_fraction,
            augment=config.augment,
            seed=config.seed,
            reject_by=config.reject_by,
        )
        train_seconds = time.perf_counter() - started
        model_name = bundle.model_file_name(architecture.name, config.batch_size, result.epochs_run)
        autoencoder.save(staging / model_name)
        discriminator.save_weights(staging / DISCRIMINATOR_FILE)
        write_rejected_csv(staging / REJECTED_FILE, train_files, layout.root, result)
        write_history_csv(staging / "history.csv", result.history)

        val_errors = reconstruction_errors(autoencoder, val_images)
        val_likelihoods = log_likelihood(encode(encoder, val_images))
        training = TrainingResult(history=result.history, best_epoch=result.epochs_run, epochs_run=result.epochs_run, lrs=[])
        info = build_info(
            config,
            architecture,
            size,
            layout,
            train_files,
            val_files,
            training,
            learning_rate,
            None,
            train_seconds,
            model_name,
            stamp,
            autoencoder.count_params(),
            staging / model_name,
            roi=store_roi(config, staging),
        )
        info["adversarial"] = {
            "paper": "Beggel, Pfeiffer, Bischl: Robust Anomaly Detection in Images using Adversarial Autoencoders (arXiv:1901.06355)",
            "latent_dim": int(config.latent_dim),
            "prior": "normal",
            "prior_std": aae.prior_std,
            "reject_every": int(config.reject_every),
            "reject_fraction": config.reject_fraction,
            "reject_by": config.reject_by,
            "rejection_rule": rejection_rule(config.reject_every, config.reject_fraction),
            "rounds": [asdict(r) for r in result.rounds],
            "n_rejected": int(result.rejected.sum()),
            "discriminator_file": DISCRIMINATOR_FILE,
            "score": "(mse - median) / scale + (-log_likelihood - median) / scale, on validation images",
            "score_calibration": score_calibration(val_errors, val_likelihoods),
        }
        bundle.write_json(staging / bundle.INFO_FILE, info)
        plots.plot_loss_history(result.history, staging / "loss_plot.png", best_epoch=result.epochs_run)
        if config.inspect:
            write_inspection_plots(autoencoder, config, size, layout, val_images, staging / "inspection")
    folder = writer.final
    logger.info(
        "model folder %s (%d epochs, %d training images left out, %.0f s)",
        folder,
        result.epochs_run,
        result.rejected.sum(),
        train_seconds,
    )
    return folder
