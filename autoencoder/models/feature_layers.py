"""The Keras layers of featureCAE (registered for deserialisation: autoencoder/bundle.py imports
this module before loading a model; the architecture module imports it when it builds one)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="autoencoder")
class SquaredFeatureError(layers.Layer):
    """Mean over channels of (reconstruction - target)^2: (N, h, w, C) x 2 -> (N, h, w, 1)."""

    def call(self, inputs):
        reconstruction, target = inputs
        return ops.mean(ops.square(reconstruction - target), axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="autoencoder")
class Standardize(layers.Layer):
    """(x - mean) / std per channel, with non-trainable statistics set from data (see prepare_feature_cae)."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.mean = self.add_weight(shape=(channels,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(channels,), initializer="ones", trainable=False, name="std")

    def call(self, inputs):
        return (inputs - self.mean) / self.std


@keras.saving.register_keras_serializable(package="autoencoder")
class CosineDistance(layers.Layer):
    """1 - cosine similarity over channels of (reconstruction, target): (N, h, w, C) x 2 -> (N, h, w, 1), in [0, 2]."""

    def call(self, inputs):
        reconstruction, target = inputs
        dot = ops.sum(reconstruction * target, axis=-1, keepdims=True)
        norms = ops.norm(reconstruction, axis=-1, keepdims=True) * ops.norm(target, axis=-1, keepdims=True)
        return 1.0 - dot / ops.maximum(norms, 1e-6)
