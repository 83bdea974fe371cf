"""Training on cached features: the frozen part of a model runs once per training image.

A feature autoencoder (featureCAE, stageCAE) is a frozen pretrained backbone followed by a small
trainable network. Trained end to end, every epoch runs every image through the backbone again,
although its output never changes. Here the model is cut at its architecture's
``cached_layers`` into an *extractor* (image -> frozen features) and a *head* (frozen features ->
the model's output, sharing the model's layers and weights); the extractor runs once per image
(and once per augmented copy: augmentation draws ``copies`` fixed copies, not a fresh one per
epoch), and the head trains on the cached arrays. The full model then holds the trained weights.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from autoencoder.progress import progress_bar

logger = logging.getLogger(__name__)

AUGMENTED_COPIES = 3  # augmented copies of every training image cached beside the original
# Most bytes the cached training features may take (they are held twice: the arrays and the
# tf.data tensors). Past it fewer augmented copies are cached; when not even the originals fit,
# training runs end to end through the backbone.
CACHE_LIMIT_BYTES = 6 * 2**30


def bytes_per_input(extractor: keras.Model) -> int:
    """float32 bytes of the extractor's outputs for one image."""
    return sum(4 * int(np.prod(output.shape[1:])) for output in extractor.outputs)


def copies_that_fit(n_images: int, per_input: int, wanted: int, limit: int | None = None) -> int | None:
    """How many augmented copies (at most `wanted`) fit in `limit` (default CACHE_LIMIT_BYTES) beside
    the originals; None: not even those."""
    limit = CACHE_LIMIT_BYTES if limit is None else limit
    for copies in range(wanted, -1, -1):
        if 2 * n_images * (1 + copies) * per_input <= limit:
            return copies
    return None


def split_at(model: keras.Model, layer_names) -> tuple[keras.Model, keras.Model]:
    """(extractor, head): image -> outputs of `layer_names`; those outputs -> the model's output."""
    cuts = [model.get_layer(name).output for name in layer_names]
    extractor = keras.Model(model.inputs, cuts, name=f"{model.name}_frozen")
    head = keras.Model(cuts, model.outputs[0], name=f"{model.name}_head")
    return extractor, head


def extract(extractor: keras.Model, images: np.ndarray, batch_size: int, desc: str = "caching features") -> list[np.ndarray]:
    """The extractor's outputs for every image, as one float32 array per cut, in image order."""
    parts: list[list[np.ndarray]] = []
    with progress_bar(total=len(images), desc=desc, unit="image") as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            outputs = extractor.predict_on_batch(batch)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            parts.append([np.asarray(output, dtype=np.float32) for output in outputs])
            bar.update(len(batch))
    return [np.concatenate(column) for column in zip(*parts)]


def augmented_copies(images: np.ndarray, copies: int, seed: int, batch_size: int = 32) -> list[np.ndarray]:
    """`copies` augmented versions of `images` (the rotation, shift and brightness of training)."""
    import tensorflow as tf

    from autoencoder.pipeline import augment_batch

    out = []
    for copy in range(copies):
        batches = []
        for start in range(0, len(images), batch_size):
            batch_seed = tf.constant([seed, copy * 1_000_003 + start], dtype=tf.int64)
            batches.append(augment_batch(tf.constant(images[start : start + batch_size]), batch_seed).numpy())
        out.append(np.concatenate(batches))
    return out


def cached_dataset(features: list[np.ndarray], batch_size: int, shuffle: bool, seed: int):
    """tf.data of (features, dummy target) batches; the map losses read only the prediction."""
    import tensorflow as tf

    n = len(features[0])
    inputs = tuple(features) if len(features) > 1 else features[0]
    dataset = tf.data.Dataset.from_tensor_slices((inputs, np.zeros((n, 1), np.float32)))
    if shuffle:
        dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cached_training_data(
    model: keras.Model, layer_names, train_images: np.ndarray, val_images: np.ndarray, batch_size: int,
    augment: bool, seed: int, copies: int = AUGMENTED_COPIES,
):
    """(head, train_ds, val_ds, n_train): the head of `model` and its cached training and validation
    batches; with `augment`, `copies` augmented copies of every training image join the originals
    (fewer when they would pass CACHE_LIMIT_BYTES). None when not even the originals fit."""
    extractor, head = split_at(model, layer_names)
    per_input = bytes_per_input(extractor)
    fitting = copies_that_fit(len(train_images) + len(val_images), per_input, copies if augment else 0)
    if fitting is None:
        logger.info("the cached features would take %.1f GiB (more than %.0f GiB): training through the backbone every epoch",
                    2 * (len(train_images) + len(val_images)) * per_input / 2**30, CACHE_LIMIT_BYTES / 2**30)
        return None
    if augment and fitting < copies:
        logger.info("caching %d augmented copies instead of %d: more would pass %.0f GiB", fitting, copies, CACHE_LIMIT_BYTES / 2**30)
    copies = fitting
    inputs = [train_images, *augmented_copies(train_images, copies, seed)] if augment else [train_images]
    parts = [extract(extractor, images, batch_size, desc=f"caching features {index + 1}/{len(inputs)}")
             for index, images in enumerate(inputs)]
    train_features = [np.concatenate(column) for column in zip(*parts)]
    val_features = extract(extractor, val_images, batch_size, desc="caching validation features")
    n_bytes = sum(array.nbytes for array in train_features + val_features)
    logger.info(
        "cached features of %d training inputs (%d images%s) and %d validation images: %.0f MiB",
        len(train_features[0]), len(train_images), f" + {copies} augmented copies" if augment else "", len(val_images), n_bytes / 2**20,
    )
    return (
        head,
        cached_dataset(train_features, batch_size, shuffle=True, seed=seed),
        cached_dataset(val_features, batch_size, shuffle=False, seed=seed),
        len(train_features[0]),
    )
