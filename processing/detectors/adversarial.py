"""The adversarial autoencoder's own image scores (train.py --adversarial), beside the detector's.

An adversarial autoencoder scores an image by itself: the likelihood of its latent code under the
prior and its reconstruction error, combined with the calibration train.py recorded
(autoencoder/adversarial.py). test.py reports their AUROCs for every finetuning result of such a
model (``aae_image_auroc``, ``aae_latent_auroc``, ``aae_reconstruction_auroc``); it asks the
detector (``Detector.model_test_metrics``), which asks the model scores registered here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from processing.data.images import load_images
from processing.detectors.base import register_model_scores
from processing.evaluation.metrics import image_auroc


def adversarial_test_metrics(model_bundle, files, truth, batch_size: int = 64) -> dict:
    """Image AUROCs of an AAE model folder on image files (what test.py adds to test_result.json).

    truth: bool (N,) per file, True for defective. Returns {"aae_image_auroc" (combined score),
    "aae_latent_auroc" (-log-likelihood only), "aae_reconstruction_auroc" (MSE only)}.
    """
    from autoencoder.adversarial import image_scores

    info = model_bundle.info
    images = load_images(files, info.model.color_mode, info.model.image_size)
    aae = info.adversarial
    scores = image_scores(model_bundle.model, images, dataclasses.asdict(aae.score_calibration), aae.prior_std, batch_size)
    truth = np.asarray(truth, dtype=bool)
    return {
        "aae_image_auroc": image_auroc(truth, scores["combined"]),
        "aae_latent_auroc": image_auroc(truth, -scores["log_likelihood"]),
        "aae_reconstruction_auroc": image_auroc(truth, scores["reconstruction_error"]),
    }


register_model_scores("adversarial", lambda info: info.adversarial is not None, adversarial_test_metrics)
