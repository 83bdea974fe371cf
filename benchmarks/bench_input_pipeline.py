"""Training throughput with the real input pipeline against in-memory arrays.

Trains the same small convolutional autoencoder twice, for the same number of steps:

  (a) pipeline:  model.fit(make_training_dataset(images, ...))   shuffle + augmentation + prefetch
  (b) reference: model.fit(images, images, batch_size=...)       in-memory arrays, no augmentation

and prints images/s of both and their ratio (target >= 0.9: augmenting must cost less than 10 % of
training speed). The first epoch of each is a warm-up (tracing, thread pools) and is not timed.

    python benchmarks/bench_input_pipeline.py            # demo dataset in a temp dir, 64x64
    python benchmarks/bench_input_pipeline.py --quick
    python benchmarks/bench_input_pipeline.py -d /work/shared/datasets/magnetic_tile --size 128
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from autoencoder.pipeline import make_training_dataset  # noqa: E402
from processing.data.demo import make_demo_dataset  # noqa: E402
from processing.data.images import load_images, scan_dataset  # noqa: E402


def tiny_autoencoder(size: int, channels: int) -> keras.Model:
    """3 strided convolutions down, 3 transposed convolutions up; output in [0, 1]."""
    inputs = keras.Input((size, size, channels))
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    for filters in (64, 32):
        x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and CPU (all threads of this process) seconds of each epoch."""

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def measure(fit, n_images: int, epochs: int) -> tuple[float, float]:
    """Run fit(epochs, callbacks); return (images per second, CPU milliseconds per image) over
    the epochs after the first."""
    timer = EpochTimer()
    fit(epochs, [timer])
    timed_images = n_images * (epochs - 1)
    return timed_images / sum(timer.wall[1:]), 1e3 * sum(timer.cpu[1:]) / timed_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", type=Path, help="MVTec-layout folder (default: a generated demo dataset)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--color-mode", choices=("grayscale", "rgb"), default="grayscale")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    parser.add_argument("--n-images", type=int, default=512, help="training images (repeated if fewer files)")
    parser.add_argument("--repeats", type=int, default=3, help="alternate (a) and (b) this many times")
    parser.add_argument("--quick", action="store_true", help="256 images, 3 epochs, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.n_images, args.epochs, args.repeats = 256, 3, 2

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dataset or make_demo_dataset(Path(tmp) / "demo", image_size=args.size, n_train=200)
        files = scan_dataset(root).train_good
        start = time.perf_counter()
        decoded = load_images(files, args.color_mode, args.size, progress=True)
        decode_rate = len(files) / (time.perf_counter() - start)
    images = np.resize(decoded, (args.n_images, *decoded.shape[1:]))  # repeats files when too few

    def fit_pipeline(epochs, callbacks, augment=True):
        dataset = make_training_dataset(images, args.batch_size, shuffle=True, augment=augment, seed=0)
        models["pipeline"].fit(dataset, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)

    def fit_pipeline_no_augment(epochs, callbacks):
        fit_pipeline(epochs, callbacks, augment=False)

    def fit_arrays(epochs, callbacks):
        models["arrays"].fit(images, images, batch_size=args.batch_size, epochs=epochs, callbacks=callbacks, verbose=0)

    def pipeline_alone():
        dataset = make_training_dataset(images, args.batch_size, shuffle=True, augment=True, seed=0)
        for _ in dataset:  # warm-up epoch
            pass
        start = time.perf_counter()
        for _ in dataset:
            pass
        return len(images) / (time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    channels = images.shape[-1]
    models = {name: tiny_autoencoder(args.size, channels) for name in ("pipeline", "arrays")}
    for model in models.values():
        model.compile(optimizer="adam", loss="mse")

    runs = {"pipeline": fit_pipeline, "arrays": fit_arrays, "no_augment": fit_pipeline_no_augment}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    cpu_ms: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        # Interleaved, in alternating order, and the best run of each kept: other load on the
        # machine slows single runs down but cannot make one faster.
        for name in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
            rate, cpu = measure(runs[name], len(images), args.epochs)
            rates[name].append(rate)
            cpu_ms[name].append(cpu)
    best = {name: max(values) for name, values in rates.items()}
    least_cpu = {name: min(values) for name, values in cpu_ms.items()}

    def show(values):
        return ", ".join(f"{r:.0f}" for r in values)

    print(f"images: {len(images)} of {args.size}x{args.size}x{channels}, batch {args.batch_size}, "
          f"{args.epochs - 1} timed epochs x {args.repeats} repeats, {os.cpu_count()} CPU cores")
    print(f"decoding (load_images, {len(files)} files): {decode_rate:10.1f} images/s")
    print(f"pipeline alone, no model:           {pipeline_alone():10.1f} images/s")
    for label, name in [
        ("(a) fit on make_training_dataset: ", "pipeline"),
        ("(b) fit on in-memory arrays:      ", "arrays"),
        ("    pipeline without augmentation:", "no_augment"),
    ]:
        print(f"{label} {best[name]:8.1f} images/s, {least_cpu[name]:.3f} CPU ms/image  (runs: {show(rates[name])})")
    print(f"ratio (a)/(b): {best['pipeline'] / best['arrays']:.3f}  (target >= 0.9); "
          f"CPU time per image (b)/(a): {least_cpu['arrays'] / least_cpu['pipeline']:.3f}")


if __name__ == "__main__":
    main()
