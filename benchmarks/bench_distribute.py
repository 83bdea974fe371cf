"""Training throughput with 1 and with 2 replicas of MirroredStrategy, as train.py --distribute runs it.

Trains mvtecCAE on generated images, the same number of images per epoch, first under a
MirroredStrategy of one device, then of two (two GPUs when the machine has them, otherwise the CPU
split into two logical devices), each replica with the same per-replica batch (-b), so the global
batch doubles as with train.py --distribute mirrored; and one device with that doubled batch, to
tell the larger batch from the second replica. Prints images/s and the ratios. On a CPU the two
replicas share the same cores: what is gained comes from the larger batch and from running the two
replicas' ops side by side, not from more hardware. The first epoch of each is a warm-up (tracing) and is not timed.

    python benchmarks/bench_distribute.py
    python benchmarks/bench_distribute.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("-b", "--batch", type=int, default=8, help="batch per replica")
    parser.add_argument("--images", type=int, default=256, help="training images (random, in memory)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--quick", action="store_true", help="32 px, 64 images, 1 timed epoch")
    return parser.parse_args(argv)


def devices(tf) -> list[str]:
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= 2:
        return ["/gpu:0", "/gpu:1"]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return ["/cpu:0", "/cpu:1"]


def images_per_second(tf, keras, strategy, images, batch: int, epochs: int, size: int, scale: int = 1) -> float:
    """Training images/s under `strategy` with batch `batch` per replica (times `scale`)."""
    from autoencoder.models import get_architecture
    from autoencoder.pipeline import make_training_dataset

    global_batch = batch * scale * strategy.num_replicas_in_sync
    dataset = make_training_dataset(images, global_batch, shuffle=True, augment=True, seed=0)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = get_architecture("mvtecCAE").build("grayscale", size)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
    return len(images) * epochs / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    if args.quick:
        args.size, args.images, args.epochs = 32, 64, 1
    import numpy as np
    import tensorflow as tf

    two = devices(tf)  # before TensorFlow initialises its devices
    import keras

    images = np.random.default_rng(0).random((args.images, args.size, args.size, 1), dtype=np.float32)
    one_replica = images_per_second(tf, keras, tf.distribute.MirroredStrategy(devices=two[:1]), images, args.batch, args.epochs, args.size)
    two_replicas = images_per_second(tf, keras, tf.distribute.MirroredStrategy(devices=two), images, args.batch, args.epochs, args.size)
    # the same global batch on one device: what the strategy itself costs, apart from the larger batch
    one_big = images_per_second(
        tf, keras, tf.distribute.MirroredStrategy(devices=two[:1]), images, args.batch, args.epochs, args.size, scale=2
    )
    ratio = two_replicas / one_replica
    kind = "GPUs" if two[0].startswith("/gpu") else "logical CPU devices (the same cores)"
    print(f"mvtecCAE {args.size} px, batch {args.batch} per replica, {args.images} images x {args.epochs} epochs, {os.cpu_count()} cores")
    print(f"1 replica : {one_replica:8.1f} images/s (global batch {args.batch})")
    print(f"2 replicas: {two_replicas:8.1f} images/s (global batch {2 * args.batch}, on 2 {kind})")
    print(f"1 replica : {one_big:8.1f} images/s (global batch {2 * args.batch}: the batch effect alone)")
    print(f"ratio 2 replicas / 1 replica: {ratio:.2f} (same batch per replica); {two_replicas / one_big:.2f} (same global batch)")
    return ratio


if __name__ == "__main__":
    main()
