"""Seconds per training epoch of a feature autoencoder: on cached backbone features (what train.py
does, autoencoder/cached.py) against through the frozen backbone every epoch (the reference), in
the same run.

Both train the same freshly built model (same weights at the start, same loss, Adam at a fixed
rate) on the same images for ``--epochs`` epochs without augmentation; the cached run first
extracts the features once (its cost is printed, and counted in the total). Printed: seconds per
epoch of each, their ratio, the one-off cache time and the total time of ``--epochs`` epochs each
way. Images: ``--data-dir``'s train/good, or a generated demo dataset.

    python benchmarks/bench_cached_features.py                          # stageCAE, 128 px, generated images
    python benchmarks/bench_cached_features.py -a featureCAE --size 256
    python benchmarks/bench_cached_features.py --data-dir ../shared/datasets/magnetic_tile --images 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-a", "--architecture", default="stageCAE", choices=["stageCAE", "featureCAE"])
    parser.add_argument("--size", type=int, default=128, help="model input side")
    parser.add_argument("--images", type=int, default=160, help="training images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed each way (the first of each is a warm-up, not counted)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--data-dir", default=None, help="dataset whose train/good images to use (default: a generated demo dataset)")
    return parser.parse_args(argv)


def load_training_images(args) -> np.ndarray:  # noqa: F821
    from processing.data.demo import make_demo_dataset
    from processing.data.images import list_images, load_images

    if args.data_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="bench_cached_")) / "brick"
        make_demo_dataset(folder, image_size=args.size, n_test_good=1, n_test_defect=1, n_train=args.images, seed=0)
        data_dir = folder
    else:
        data_dir = Path(args.data_dir)
    files = list_images(data_dir / "train" / "good")[: args.images]
    return load_images(files, "grayscale", args.size)


def timed_epochs(model, dataset, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - started)
    return times


def main(argv=None):
    args = parse_args(argv)
    from autoencoder import cli

    cli.import_tensorflow(verbose=False)  # hides TensorFlow's start-up lines
    import keras
    import numpy as np

    from autoencoder.cached import cached_dataset, extract, split_at
    from autoencoder.losses import get_loss
    from autoencoder.models import get_architecture
    from autoencoder.pipeline import make_training_dataset

    images = load_training_images(args)
    architecture = get_architecture(args.architecture)
    keras.utils.set_random_seed(0)
    model = architecture.build("grayscale", args.size)
    architecture.prepare(model, images)
    initial = model.get_weights()
    loss = get_loss(architecture.default_loss)

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    through = timed_epochs(model, make_training_dataset(images, args.batch, shuffle=True, augment=False, seed=0), args.epochs)

    model.set_weights(initial)
    started = time.perf_counter()
    extractor, head = split_at(model, architecture.cached_layers)
    features = extract(extractor, images, args.batch)
    cache_seconds = time.perf_counter() - started
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    cached = timed_epochs(head, cached_dataset(features, args.batch, shuffle=True, seed=0), args.epochs)

    per_epoch_through, per_epoch_cached = float(np.mean(through[1:])), float(np.mean(cached[1:]))
    print(f"{args.architecture} at {args.size} px, {len(images)} images, batch {args.batch}, {args.epochs} epochs each "
          f"(first one a warm-up, not in the means)")
    print(f"through the backbone every epoch: {per_epoch_through:.2f} s/epoch")
    print(f"on cached features:               {per_epoch_cached:.2f} s/epoch (+ {cache_seconds:.2f} s once to cache "
          f"{sum(f.nbytes for f in features) / 2**20:.0f} MiB)")
    print(f"ratio (through / cached): {per_epoch_through / per_epoch_cached:.1f}x per epoch; "
          f"{args.epochs} epochs {sum(through):.1f} s vs {sum(cached) + cache_seconds:.1f} s with the cache")


if __name__ == "__main__":
    main()
