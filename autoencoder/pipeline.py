"""The tf.data input pipeline that feeds training: shuffled batches of in-memory images with
random rotation, shift and brightness augmentation, reproducible for a seed.

TensorFlow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import numpy as np

from autoencoder.errors import UserError

# Augmentation ranges of the original toolkit (Keras ImageDataGenerator settings).
ROTATION_DEGREES = 5.0
SHIFT_FRACTION = 0.05
BRIGHTNESS_RANGE = (0.95, 1.05)




def augmentation_transforms(angles_deg, shifts_xy, height: int, width: int):
    """Rows of tf.raw_ops.ImageProjectiveTransformV3 for a rotation about the image centre
    followed by a translation.

    angles_deg: float (B,), in degrees; with x to the right and y down, a positive angle turns
    the content clockwise as displayed. shifts_xy: float (B, 2), in pixels (x right, y down).
    Returns float32 (B, 8): each row maps an output pixel to the input point it samples (pixel
    centres at integer coordinates, the centre of rotation at ((width-1)/2, (height-1)/2)).
    """
    import tensorflow as tf

    theta = tf.cast(angles_deg, tf.float32) * (np.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
    shifts_xy = tf.cast(shifts_xy, tf.float32)
    # Forward map: out = R (in - c) + c + t. Inverse: in = R^T (out - c - t) + c.
    ox = center_x + shifts_xy[:, 0]
    oy = center_y + shifts_xy[:, 1]
    zeros = tf.zeros_like(theta)
    return tf.stack(
        [
            cos,
            sin,
            center_x - cos * ox - sin * oy,
            -sin,
            cos,
            center_y + sin * ox - cos * oy,
            zeros,
            zeros,
        ],
        axis=1,
    )


def apply_affine(images, transforms):
    """Warp a float32 batch (B, H, W, C) with bilinear interpolation, borders filled by the
    nearest edge pixel."""
    import tensorflow as tf

    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def augment_batch(images, seed):
    """Random augmentation of a float32 batch (B, H, W, C) in [0, 1], one draw per image:
    rotation up to ±5°, x/y shifts up to ±5 % of the width/height, brightness factor in
    [0.95, 1.05], borders filled with the nearest pixel, result clipped to [0, 1].

    `seed` is a stateless-RNG seed (int32/int64 tensor of shape (2,)): the same seed gives the
    same output.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    angles = tf.random.stateless_uniform([batch], seeds[0], -ROTATION_DEGREES, ROTATION_DEGREES)
    size_xy = tf.cast(tf.stack([width, height]), tf.float32)
    shifts = tf.random.stateless_uniform([batch, 2], seeds[1], -SHIFT_FRACTION, SHIFT_FRACTION) * size_xy
    brightness = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[2], *BRIGHTNESS_RANGE)
    transforms = augmentation_transforms(angles, shifts, tf.cast(height, tf.float32), tf.cast(width, tf.float32))
    warped = apply_affine(images, transforms)
    return tf.clip_by_value(warped * brightness, 0.0, 1.0)


def make_training_dataset(
    images: np.ndarray,
    batch_size: int,
    shuffle: bool = True,
    augment: bool = True,
    seed: int = 0,
):
    """tf.data pipeline of (x, x) batches for training an autoencoder on in-memory images.

    images: float32 (N, H, W, C) in [0, 1], decoded once by load_images (the array is the cache).
    Yields (x, x) with x float32 (<= batch_size, H, W, C): the input is its own target, also when
    augmented. With `shuffle`, the order changes every epoch; with `augment`, every image gets a
    fresh random rotation/shift/brightness each epoch (see augment_batch). The whole stream is
    reproducible for a given `seed`. For validation use shuffle=False, augment=False
    (make_validation_dataset).
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise UserError(f"training images of shape {images.shape} not supported: expected (N>0, H, W, C)")
    if images.dtype != np.float32:
        images = images.astype(np.float32)
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} not supported: expected a positive integer")
    n = images.shape[0]
    images_tensor = tf.constant(images)

    # Shuffle and batch indices, then gather whole batches: shuffling the images themselves would
    # copy every image through a shuffle buffer as large as the data set.
    indices = tf.data.Dataset.range(n)
    if shuffle:
        indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size)
    if augment:
        # One stateless seed per batch, drawn afresh each epoch, so the order of the parallel
        # calls does not matter and the stream is reproducible.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def gather_and_augment(batch_indices, batch_seed):
            augmented = augment_batch(tf.gather(images_tensor, batch_indices), batch_seed)
            # The projective transform loses the static image shape; losses need it at graph build.
            augmented = tf.ensure_shape(augmented, (None, *images.shape[1:]))
            return augmented, augmented

        batches = tf.data.Dataset.zip(indices, batch_seeds).map(gather_and_augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:

        def gather(batch_indices):
            batch = tf.gather(images_tensor, batch_indices)
            return batch, batch

        batches = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


def make_validation_dataset(images: np.ndarray, batch_size: int):
    """(x, x) batches in order, without augmentation: make_training_dataset(shuffle=False, augment=False)."""
    return make_training_dataset(images, batch_size, shuffle=False, augment=False)
