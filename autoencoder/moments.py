"""Mean and standard deviation accumulated batch by batch (over the first axis).

featureCAE and stageCAE standardise their pretrained features with the statistics of the training
images (their ``prepare``, per channel), and ``--normalize pixel`` standardises maps with those of
the training images' maps (per pixel): both are accumulated here one batch at a time, so that
fitting them holds one batch in memory, not the whole training set.
"""

from __future__ import annotations

import numpy as np

from autoencoder.errors import UserError


class Moments:
    """Sums of (x - k) and (x - k)^2 over the first axis of every batch (k: the first batch's mean
    over that axis: the shifted-data algorithm, no cancellation when |mean| >> spread)."""

    def __init__(self):
        self.count, self.shift, self.sums, self.squares = 0, None, None, None

    def update(self, values) -> Moments:
        """Add (N, ...) values; every batch has the same trailing shape."""
        values = np.asarray(values, dtype=np.float64)
        if self.shift is not None and values.shape[1:] != self.shift.shape:
            raise UserError(f"values of shape {values.shape}: expected (N, {', '.join(map(str, self.shift.shape))}) like the first batch")
        if len(values) == 0:
            return self
        if self.shift is None:
            self.shift = values.mean(axis=0)
            self.sums, self.squares = np.zeros_like(self.shift), np.zeros_like(self.shift)
        deltas = values - self.shift
        self.sums += deltas.sum(axis=0)
        self.squares += np.square(deltas).sum(axis=0)
        self.count += len(values)
        return self

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, population std) over everything added, float64."""
        if self.count == 0:
            raise UserError("no training image to fit the statistics on")
        offset = self.sums / self.count
        return self.shift + offset, np.sqrt(np.maximum(self.squares / self.count - offset**2, 0.0))


class ChannelMoments(Moments):
    """Per channel: every position of every (..., C) feature batch is one sample."""

    def update(self, features) -> ChannelMoments:
        return super().update(np.reshape(features, (-1, np.shape(features)[-1])))
