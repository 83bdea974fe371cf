"""Does the adversarial autoencoder with rejection stay robust when the training set holds defects?

    python benchmarks/contamination.py                     # digits, one normal digit: a few minutes on 2 cores
    python benchmarks/contamination.py --quick             # 3 epochs, one seed: checks that everything runs
    python benchmarks/contamination.py -d /work/shared/datasets/magnetic_tile -a mvtecCAE -l l2 \\
        --image-size 64 --epochs 20 --batch 16 --seeds 0

For each contamination p (default 0, 5 %, 10 %), defective test images are moved into train/good
so that they make up the fraction p of it (n = round(p * n_good / (1 - p)) images, chosen at random
across the defect types; the sets are nested: the images planted at 5 % are also planted at 10 %).
Every image that is planted at the largest p is left out of the test set at every p, so all
models are scored on the same test images. The datasets are built in a temporary folder from
symbolic links; nothing is copied.

On each, a plain autoencoder (train.py's path: cyclical learning rate, no early stopping) and the
adversarial autoencoder with rejection (train.py --adversarial) are trained with the same
architecture, loss, epochs, batch size, peak learning rate and seed. Each test image is scored:
the plain model by its reconstruction error (per-image MSE), the AAE by its combined score
(standardised MSE + standardised latent -log-likelihood, see autoencoder/adversarial.py). Reported
per p: image AUROC, balanced accuracy at the threshold "95th percentile of the validation images'
scores" (the validation images come from the possibly contaminated train/good, as they would in
practice), and how many of the planted images the rejection left out. The reference measured in
the same run is the plain model: the last lines print each model's AUROC drop from p = 0 to the
largest p and their ratio.

Default dataset: processing/digits.py with one normal digit (--normal-digit) and the other nine
digits as the defects. Writes contamination.json into --output-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

logger = logging.getLogger("contamination")

GOOD = "good"
PLANTED_PREFIX = "planted__"
VALIDATION_QUANTILE = 0.95
# name -> (adversarial, reject_every (0: no rejection), reject_by)
VARIANTS = {
    "CAE": (False, 0, None),
    "AAE": (True, 0, None),
    "AAE+rej(lik)": (True, None, "likelihood"),
    "AAE+rej(rec)": (True, None, "reconstruction"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset-dir", type=Path, default=None, help="MVTec-layout dataset (default: a generated digits dataset)")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO_ROOT / "results" / "benchmarks" / "contamination")
    parser.add_argument("--normal-digit", type=int, default=8, help="digits dataset: the normal digit")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.05, 0.10], help="contamination fractions of train/good")
    parser.add_argument("-a", "--architecture", default="fcnSimpleAE")
    parser.add_argument("-l", "--loss", default="l2", choices=["ssim", "mssim", "l2"])
    parser.add_argument("-c", "--color", default="grayscale", choices=["grayscale", "rgb"])
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("-b", "--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--reject-every", type=int, default=5)
    parser.add_argument("--reject-fraction", type=float, default=None, help="default: estimated (Tukey's fence)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="models: CAE (plain), AAE (no rejection), AAE+rej(lik) (rejection by latent likelihood, as in the paper), "
                                "AAE+rej(rec) (rejection by reconstruction error)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (the planted images and the dataset use "
            "--data-seed)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 epochs, one seed")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 3, args.seeds[:1]
    if any(not 0.0 <= p < 0.5 for p in args.fractions):
        parser.error(f"--fractions {args.fractions}: expected fractions in [0, 0.5)")
    if args.epochs < 1 or args.batch < 1:
        parser.error("--epochs and --batch must be positive")
    return args


def planted_count(n_good: int, fraction: float) -> int:
    """Defective images to add to n_good so that they are `fraction` of the training set."""
    return int(round(fraction * n_good / (1.0 - fraction)))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), link)


def build_contaminated(layout, out: Path, planted: list[Path], held_out: set[Path]) -> list[str]:
    """Symlinked copy of `layout` at `out` with `planted` test images added to train/good.

    Test images in `held_out` (all candidates for planting) are left out of test/. Returns the
    planted images' names in train/good.
    """
    for path in layout.train_good:
        _link(path, out / "train" / GOOD / path.name)
    names = []
    for path in planted:
        name = f"{PLANTED_PREFIX}{path.parent.name}__{path.name}"
        _link(path, out / "train" / GOOD / name)
        names.append(name)
    for path, defect_type in layout.test_files():
        if path not in held_out:
            _link(path, out / "test" / defect_type / path.name)
    if layout.ground_truth_dir.is_dir():
        _link(layout.ground_truth_dir, out / "ground_truth")
    return names


def train_model(dataset: Path, models_dir: Path, args, seed: int, variant: str) -> Path:
    from processing.workflow.training import TrainConfig, train

    adversarial, reject_every, reject_by = VARIANTS[variant]
    config = TrainConfig(
        input_dir=str(dataset),
        architecture=args.architecture,
        color_mode=args.color,
        loss=args.loss,
        batch_size=args.batch,
        epochs=args.epochs,
        image_size=args.image_size,
        learning_rate=args.lr,
        seed=seed,
        output_dir=str(models_dir / variant.replace("(", "_").replace(")", "").replace("+", "_") / f"seed{seed}"),
        patience=args.epochs,  # same budget for both: no early stopping
        adversarial=adversarial,
        latent_dim=args.latent_dim,
        reject_every=args.reject_every if reject_every is None else reject_every,
        reject_fraction=args.reject_fraction,
        reject_by=reject_by or "reconstruction",
    )
    return train(config)


def score_images(folder: Path, images: np.ndarray) -> np.ndarray:
    """Anomaly scores per image, each (N,): "score" is the combined AAE score or the plain model's
    reconstruction MSE; an AAE also gives its "reconstruction" (MSE) and "latent" (-log-likelihood)."""
    from autoencoder import bundle
    from autoencoder.adversarial import image_scores, reconstruction_errors

    model = bundle.load_bundle(folder)
    aae = model.info.adversarial
    if aae is not None:
        scores = image_scores(model.model, images, dataclasses.asdict(aae.score_calibration), aae.prior_std)
        return {"score": scores["combined"], "reconstruction": scores["reconstruction_error"], "latent": -scores["log_likelihood"]}
    return {"score": reconstruction_errors(model.model, images)}


def evaluate_model(folder: Path, dataset: Path, test_images, truth, planted_names, size, color) -> dict:
    from autoencoder import bundle
    from processing.data.images import load_images
    from processing.evaluation.metrics import classification_metrics, image_auroc

    info = bundle.read_info(folder)
    val_files = [dataset / rel for rel in info.dataset.validation_files]
    val_scores = score_images(folder, load_images(val_files, color, size))
    scores = score_images(folder, test_images)
    threshold = float(np.quantile(val_scores["score"], VALIDATION_QUANTILE))
    decision = classification_metrics(truth, scores["score"] > threshold)
    result = {
        "image_auroc": image_auroc(truth, scores["score"]),
        **{f"{name}_auroc": image_auroc(truth, values) for name, values in scores.items() if name != "score"},
        "balanced_accuracy": decision["balanced_accuracy"],
        "threshold": threshold,
        "n_planted_in_validation": sum(Path(rel).name in planted_names for rel in info.dataset.validation_files),
    }
    rejected_csv = folder / "rejected.csv"
    if rejected_csv.is_file():
        from autoencoder.adversarial import read_rejected_csv

        rejected = {Path(row["file"]).name for row in read_rejected_csv(rejected_csv)}
        result["n_rejected"] = len(rejected)
        result["planted_rejected"] = len(rejected & set(planted_names))
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    import keras

    keras.config.disable_interactive_logging()  # the per-epoch Keras bars of the plain model's fit
    from autoencoder.models import get_architecture
    from processing.data.digits import make_digits_dataset
    from processing.data.images import load_images, scan_dataset

    started = time.perf_counter()
    fractions = sorted(set(args.fractions))
    with tempfile.TemporaryDirectory(prefix="contamination_") as tmp:
        tmp = Path(tmp)
        source = args.dataset_dir
        if source is None:
            source = make_digits_dataset(
                tmp / "digits", normal_digits=[args.normal_digit], noise_sigmas=(), train_fraction=0.6, seed=args.data_seed
            )
        layout = scan_dataset(source, require_test=True)
        size = args.image_size or get_architecture(args.architecture).default_size

        defective = [path for path, name in layout.test_files() if name != GOOD]
        rng = np.random.default_rng(args.data_seed)
        n_max = planted_count(len(layout.train_good), max(fractions))
        if n_max > len(defective) // 2:
            raise SystemExit(
                f"--fractions {max(fractions)}: needs {n_max} defective test images, only {len(defective)} (at most half can be planted)"
            )
        pool = [defective[i] for i in rng.permutation(len(defective))[:n_max]]
        held_out = set(pool)

        table, test_set = [], None
        for fraction in fractions:
            n_planted = planted_count(len(layout.train_good), fraction)
            dataset = tmp / f"p{round(fraction * 100):02d}" / layout.root.name
            planted_names = build_contaminated(layout, dataset, pool[:n_planted], held_out)
            if test_set is None:
                contaminated = scan_dataset(dataset, require_test=True)
                test_files = contaminated.test_files()
                truth = np.array([name != GOOD for _, name in test_files])
                test_images = load_images([p for p, _ in test_files], args.color, size, progress=True)
                test_set = (test_images, truth)
            logger.info("p=%.0f%%: %d planted of %d training images", 100 * fraction, n_planted, len(layout.train_good) + n_planted)
            for seed in args.seeds:
                for variant in args.variants:
                    t0 = time.perf_counter()
                    folder = train_model(dataset, tmp / "models" / f"p{fraction}", args, seed, variant)
                    row = evaluate_model(folder, dataset, *test_set, planted_names, size, args.color)
                    row |= {
                        "fraction": fraction,
                        "n_planted": n_planted,
                        "seed": seed,
                        "model": variant,
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                    logger.info("%s", row)
                    table.append(row)
        n_test, n_test_defective = len(test_set[1]), int(test_set[1].sum())

    summary = summarise(table, fractions, args.variants)
    print_table(summary, fractions, args, n_test, n_test_defective)
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dataset": str(source) if args.dataset_dir else f"digits (normal digit {args.normal_digit})",
        "n_train_good": len(layout.train_good),
        "n_test": n_test,
        "n_test_defective": n_test_defective,
        "runs": table,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "contamination.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.output_dir / 'contamination.json'} ({report['seconds']:.0f} s)")
    return report


def summarise(table: list[dict], fractions: list[float], variants: list[str]) -> dict:
    """Mean and std over seeds per (model, fraction)."""
    out: dict = {}
    for model in variants:
        out[model] = {}
        for fraction in fractions:
            rows = [r for r in table if r["model"] == model and r["fraction"] == fraction]
            entry = {}
            for key in ("image_auroc", "balanced_accuracy", "reconstruction_auroc", "latent_auroc", "n_rejected", "planted_rejected"):
                values = [r[key] for r in rows if key in r]
                if values:
                    entry[key] = float(np.mean(values))
                    entry[f"{key}_std"] = float(np.std(values))
            entry["n_planted"] = rows[0]["n_planted"] if rows else 0
            out[model][str(fraction)] = entry
    return out


def print_table(summary: dict, fractions: list[float], args, n_test: int, n_defective: int) -> None:
    """One row per (model, p): AUROC of the model's score and of the MSE, balanced accuracy, rejection."""
    print(
        f"\n{args.architecture}, {args.loss} loss, {args.epochs} epochs, batch {args.batch}, lr {args.lr}, seeds {args.seeds}; "
        f"{n_test} test images ({n_defective} defective); mean (std) over seeds"
    )
    print(
        "score: CAE = reconstruction MSE; AAE = combined (standardised MSE + latent -log-likelihood); "
        "AUROC(MSE) = the AAE's reconstruction error alone"
    )
    header = (
        f"{'model':<13} {'p':>4} {'planted':>7} | {'AUROC(score)':>14} {'AUROC(MSE)':>14} {'AUROC(lat)':>10} {'bal.acc':>7} | "
        f"{'rejected (planted)':>18}"
    )
    print(header)
    print("-" * len(header))
    for model, per_fraction in summary.items():
        for fraction in fractions:
            e = per_fraction[str(fraction)]
            mse = e.get("reconstruction_auroc", e["image_auroc"])
            mse_std = e.get("reconstruction_auroc_std", e["image_auroc_std"])
            latent = f"{e['latent_auroc']:.3f}" if "latent_auroc" in e else "-"
            rejected = f"{e['n_rejected']:.1f} ({e['planted_rejected']:.1f})" if "n_rejected" in e else "-"
            print(
                f"{model:<13} {100 * fraction:3.0f}% {e['n_planted']:7d} | {e['image_auroc']:.3f} ({e['image_auroc_std']:.3f}) "
                f"{mse:.3f} ({mse_std:.3f}) {latent:>10} {e['balanced_accuracy']:7.3f} | {rejected:>18}"
            )
    first, last = str(fractions[0]), str(fractions[-1])
    print(f"\nAUROC drop in points from p={fractions[0]:g} to p={fractions[-1]:g} (reference: CAE):")
    reference = None
    for model, per_fraction in summary.items():
        drop = 100 * (per_fraction[first]["image_auroc"] - per_fraction[last]["image_auroc"])
        key = "reconstruction_auroc" if "reconstruction_auroc" in per_fraction[first] else "image_auroc"
        drop_mse = 100 * (per_fraction[first][key] - per_fraction[last][key])
        if model == "CAE":
            reference = drop
        ratio = f", ratio to CAE {drop_mse / reference:.2f}" if reference else ""
        print(f"  {model:<13} score {drop:5.1f}   MSE {drop_mse:5.1f}{ratio}")


if __name__ == "__main__":
    main()
