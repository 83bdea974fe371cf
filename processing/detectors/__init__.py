"""Detectors: ways of turning a trained model's output into decisions (see base.py).

Importing this package registers the built-in detectors: ``segmentation`` (residual maps,
min-area/threshold) and ``kde`` (latent density OR reconstruction error), and the adversarial
autoencoder's own image scores (adversarial.py), which test.py reports beside any detector's.
"""

from processing.detectors import segmentation, kde, adversarial  # noqa: F401, I001  (in this order: the default first)
from processing.detectors.base import (  # noqa: F401
    Decisions,
    Detector,
    FinetuneConfig,
    FinetuneData,
    Scores,
    available_detectors,
    detector_of_result,
    get_detector,
    register_detector,
)
