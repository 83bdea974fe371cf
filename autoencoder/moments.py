"""Per-channel mean and standard deviation of feature maps seen batch by batch.

featureCAE and stageCAE standardise their pretrained features with the statistics of the training
images (their ``prepare``); those are accumulated here one batch at a time, so that fitting them
holds one batch of images and features in memory, not the whole training set.
"""

from __future__ import annotations

import numpy as np

from autoencoder.errors import UserError


class ChannelMoments:
    """Sums of (x - k) and (x - k)^2 per channel over every position of every batch (k: the first
    batch's channel means: the shifted-data algorithm, no cancellation when |mean| >> spread)."""

    def __init__(self):
        self.count, self.shift, self.sums, self.squares = 0, None, None, None

    def update(self, features) -> ChannelMoments:
        """Add (..., C) features."""
        flat = np.asarray(features, dtype=np.float64).reshape(-1, np.shape(features)[-1])
        if self.shift is None:
            self.shift = flat.mean(axis=0)
            self.sums, self.squares = np.zeros_like(self.shift), np.zeros_like(self.shift)
        deltas = flat - self.shift
        self.sums += deltas.sum(axis=0)
        self.squares += np.square(deltas).sum(axis=0)
        self.count += len(flat)
        return self

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, population std) per channel, float64."""
        if self.count == 0:
            raise UserError("no training image to fit the feature statistics on")
        offset = self.sums / self.count
        return self.shift + offset, np.sqrt(np.maximum(self.squares / self.count - offset**2, 0.0))
