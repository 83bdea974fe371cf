"""What can decide which training images the adversarial autoencoder leaves out (train.py
--reject-by), without TensorFlow: the scripts take their choices from here."""

from __future__ import annotations

from autoencoder.errors import UserError

REJECT_BY = ("likelihood", "reconstruction", "combined")


def check_reject_by(reject_by: str) -> None:
    if reject_by not in REJECT_BY:
        raise UserError(f"--reject-by {reject_by!r}: expected one of {', '.join(REJECT_BY)}")
