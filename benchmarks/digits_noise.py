"""How well do the small 28x28 autoencoders tell noisy digits from clean ones?

    python benchmarks/digits_noise.py                  # default settings: about 1.5 minutes on 2 CPU cores
    python benchmarks/digits_noise.py --quick          # 3 epochs, a smoke run
    python benchmarks/digits_noise.py -d demo_data/digits --epochs 100
    python benchmarks/digits_noise.py --noise-sigmas 0.01 0.02 0.05 -o results/benchmarks/digits_noise_weak

Trains fcnSimpleAE, fcnImprovedAE and cnnAE with the L2 loss (Adam, same epochs, batch size and
seed for all) on the clean training digits of a digits dataset (processing/digits.py; generated
into a temporary folder unless -d names one), then scores every test image by its reconstruction
loss (per-image MSE). For each architecture and test class it reports the mean loss, its ratio
to the mean loss of the clean test images, and the image AUROC of test/good against that class.
The reference measured in the same run is ``meanImage``: the mean training image as the
"reconstruction" of every input, i.e. what a model that learned nothing about the digits scores.

Writes into --output-dir (default results/benchmarks/digits_noise/): digits_noise.json (all numbers,
settings and versions), reconstructions_<architecture>.png and loss_histograms.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from processing.data.digits import DEFAULT_NOISE_SIGMAS  # noqa: E402

logger = logging.getLogger("digits_noise")

ARCHITECTURES = ("fcnSimpleAE", "fcnImprovedAE", "cnnAE")
BASELINE = "meanImage"
GOOD_CLASS = "good"
IMAGE_SIZE = 28
COLOR_MODE = "grayscale"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset-dir", type=Path, default=None, help="digits dataset (default: generate one into a temporary "
            "folder)")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO_ROOT / "results" / "benchmarks" / "digits_noise")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), help="architectures to train")
    parser.add_argument(
        "--noise-sigmas",
        type=float,
        nargs="+",
        default=list(DEFAULT_NOISE_SIGMAS),
        metavar="SIGMA",
        help="noise strengths of the generated dataset (ignored with -d)",
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated dataset and of the weights")
    parser.add_argument("--quick", action="store_true", help="3 epochs: checks that everything runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 3
    if args.epochs < 1 or args.batch_size < 1 or not args.learning_rate > 0:
        parser.error("--epochs and --batch-size must be positive integers and --learning-rate positive")
    return args


def class_sort_key(name: str) -> tuple:
    """good first, then noise_<sigma> by sigma, then any other class by name."""
    if name == GOOD_CLASS:
        return (0, 0.0, name)
    if name.startswith("noise_"):
        try:
            return (1, float(name[len("noise_") :]), name)
        except ValueError:
            pass
    return (2, 0.0, name)


def load_study_images(dataset_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(train float32 (N, 28, 28, 1), {test class: float32 (n, 28, 28, 1)}) in [0, 1]."""
    from processing.data.images import load_images, scan_dataset

    layout = scan_dataset(dataset_dir, require_test=True)
    train = load_images(layout.train_good, COLOR_MODE, IMAGE_SIZE, progress=True)
    test = {
        name: load_images(layout.test[name], COLOR_MODE, IMAGE_SIZE)
        for name in sorted(layout.test, key=class_sort_key)
    }
    return train, test


def per_image_loss(images: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """The L2 training loss of each image: float64 (N,)."""
    from keras import ops

    from autoencoder.losses import l2_loss

    return np.asarray(ops.convert_to_numpy(l2_loss(images, reconstructions)), dtype=np.float64)


class EpochBar(keras.callbacks.Callback):
    """One tqdm bar over the epochs of a fit, showing the last training loss."""

    def __init__(self, total: int, desc: str):
        super().__init__()
        self.total, self.desc = total, desc

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.5f}")
        self.bar.update()

    def on_train_end(self, logs=None):
        self.bar.close()


def train_autoencoder(name: str, train: np.ndarray, args: argparse.Namespace):
    """Build and train architecture `name` on `train` with the L2 loss; (model, history dict)."""
    from autoencoder.losses import l2_loss
    from autoencoder.models import build_model

    keras.utils.set_random_seed(args.seed)
    model = build_model(name, COLOR_MODE, IMAGE_SIZE)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=l2_loss)
    history = model.fit(
        train,
        train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[EpochBar(args.epochs, name)],
    )
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}


def score_classes(losses: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per test class: mean loss, its ratio to the clean mean, AUROC of good vs that class."""
    from processing.evaluation.metrics import image_auroc

    clean = losses[GOOD_CLASS]
    scores = {}
    for name, class_losses in losses.items():
        entry = {"n_images": int(class_losses.size), "mean_loss": float(class_losses.mean())}
        entry["ratio_to_clean"] = entry["mean_loss"] / float(clean.mean())
        if name != GOOD_CLASS:
            labels = np.r_[np.zeros(clean.size, bool), np.ones(class_losses.size, bool)]
            entry["image_auroc"] = image_auroc(labels, np.r_[clean, class_losses])
        scores[name] = entry
    return scores


def versions() -> dict[str, str]:
    import cv2
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "scikit_learn": sklearn.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


def format_table(results: dict[str, dict], classes: list[str]) -> str:
    """Plain-text table: one line per model and test class."""
    lines = [f"{'model':<14} {'test class':<12} {'images':>6} {'mean loss':>10} {'x clean':>8} {'AUROC':>6}"]
    for model_name, result in results.items():
        for name in classes:
            entry = result["classes"][name]
            auroc = f"{entry['image_auroc']:.3f}" if "image_auroc" in entry else "-"
            lines.append(
                f"{model_name:<14} {name:<12} {entry['n_images']:>6} {entry['mean_loss']:>10.5f} "
                f"{entry['ratio_to_clean']:>8.2f} {auroc:>6}"
            )
    return "\n".join(lines)


def figure_rows(test: dict[str, np.ndarray], max_noise_rows: int = 3) -> list[str]:
    """Classes shown in the reconstruction figures: good and up to `max_noise_rows` noise strengths
    spread over the range (always the strongest)."""
    noise = [name for name in test if name.startswith("noise_")]
    if len(noise) > max_noise_rows:
        noise = [noise[i] for i in np.unique(np.linspace(0, len(noise) - 1, max_noise_rows).round().astype(int))]
    return [GOOD_CLASS] + noise


def run(args: argparse.Namespace, dataset_dir: Path) -> dict:
    from processing.evaluation.plots import plot_loss_histograms, plot_reconstruction_pairs

    train, test = load_study_images(dataset_dir)
    classes = list(test)
    logger.info("%d training images; test classes %s", len(train), {k: len(v) for k, v in test.items()})
    args.output_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    losses_by_model: dict[str, dict[str, np.ndarray]] = {}
    mean_image = train.mean(axis=0, keepdims=True)
    losses_by_model[BASELINE] = {
        name: per_image_loss(images, np.broadcast_to(mean_image, images.shape)) for name, images in test.items()
    }
    results[BASELINE] = {"classes": score_classes(losses_by_model[BASELINE])}

    shown = figure_rows(test)
    for name in args.architectures:
        start = time.perf_counter()
        model, history = train_autoencoder(name, train, args)
        train_seconds = time.perf_counter() - start
        # One batch of all test images (28x28, a few MB): batches of different
        # shapes would retrace the predict function.
        all_images = np.concatenate(list(test.values()))
        all_reconstructions = model.predict(all_images, batch_size=len(all_images), verbose=0)
        ends = np.cumsum([len(images) for images in test.values()])
        reconstructions = dict(zip(classes, np.split(all_reconstructions, ends[:-1])))
        losses_by_model[name] = {cls: per_image_loss(test[cls], reconstructions[cls]) for cls in classes}
        results[name] = {
            "classes": score_classes(losses_by_model[name]),
            "final_train_loss": history["loss"][-1],
            "train_loss_history": history["loss"],
            "train_seconds": train_seconds,
            "parameters": int(model.count_params()),
        }
        plot_reconstruction_pairs(
            {cls: (test[cls], reconstructions[cls]) for cls in shown},
            args.output_dir / f"reconstructions_{name}.png",
            title=f"{name}: test inputs and reconstructions",
        )
        logger.info("%s: trained in %.1f s, final training loss %.5f", name, train_seconds, history["loss"][-1])

    plot_loss_histograms(
        {model_name: losses_by_model[model_name] for model_name in [*args.architectures, BASELINE]},
        GOOD_CLASS,
        args.output_dir / "loss_histograms.png",
        title="per-image reconstruction loss (L2): clean test digits vs each test class",
    )
    return {"results": results, "classes": classes, "n_train": int(len(train))}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from autoencoder.models import get_architecture
    from processing.data.digits import SETTINGS_FILE, make_digits_dataset
    from processing.data.images import DatasetError

    for name in args.architectures:
        try:
            get_architecture(name).check_size(IMAGE_SIZE)
        except ValueError as error:
            logger.error("--architectures %s: not usable on 28x28 digits (%s)", name, error)
            return 2

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="digits_noise_") as scratch:
        try:
            if args.dataset_dir is None:
                dataset_dir = make_digits_dataset(Path(scratch) / "digits", noise_sigmas=args.noise_sigmas, seed=args.seed)
            else:
                if args.noise_sigmas != list(DEFAULT_NOISE_SIGMAS):
                    logger.warning("--noise-sigmas is ignored: the dataset %s has its own noise folders", args.dataset_dir)
                dataset_dir = args.dataset_dir
            dataset_settings_file = dataset_dir / SETTINGS_FILE
            dataset_settings = json.loads(dataset_settings_file.read_text()) if dataset_settings_file.is_file() else None
            study = run(args, dataset_dir)
        except DatasetError as error:
            logger.error("%s", error)
            return 2
    total_seconds = time.perf_counter() - start

    print()
    print(format_table(study["results"], study["classes"]))
    print(f"\ntotal {total_seconds:.0f} s; reference {BASELINE} = mean training image as reconstruction")

    report = {
        "settings": {
            "architectures": args.architectures,
            "loss": "l2 (per-image MSE)",
            "optimizer": "Adam",
            "learning_rate": args.learning_rate,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "dataset_dir": str(args.dataset_dir) if args.dataset_dir else "generated (temporary)",
            "dataset_settings": dataset_settings,
            "n_train": study["n_train"],
            "score": "per-image L2 reconstruction loss; AUROC of test/good (label 0) vs each class (label 1)",
            "reference": f"{BASELINE}: the mean training image used as reconstruction of every input",
        },
        "versions": versions(),
        "results": study["results"],
        "total_seconds": total_seconds,
    }
    json_path = args.output_dir / "digits_noise.json"
    temporary = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, json_path)
    logger.info("wrote %s, %s and loss_histograms.png", json_path, ", ".join(f"reconstructions_{a}.png" for a in args.architectures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
