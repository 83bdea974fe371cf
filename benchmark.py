"""Train, finetune and test one or more configurations on an MVTec-layout dataset and compare them.

Prints a table per configuration and defect type, then one line for the configuration with the
best image AUROC (then balanced accuracy) on the finetuning subset; the scored test images never
enter that choice:

    image_auroc=… pixel_auroc=… aupro=… balanced_accuracy=… balanced_accuracy_ratio=… train_s=… infer_ms_per_image=…

A metric that cannot be computed (pixel metrics without ground_truth/ masks) reads n/a there, and
the line before says why.

Everything (settings, metrics, timings, versions) is saved to <output-dir>/benchmarks/<dataset>_<time>.json.

Example:
    python benchmark.py -d /path/to/magnetic_tile -a mvtecCAE -l ssim l2 --image-sizes 128 --epochs 30 --lr 1e-3
"""

from __future__ import annotations

import argparse

from autoencoder import cli
from autoencoder.image_size import size_argument
from autoencoder.loss_rules import available_losses
from autoencoder.model_info import COLOR_MODES
from processing.decision.thresholds import RULES
from processing.maps.kinds import IMAGE_SCORES, MAP_DTYPES, method_argument
from processing.maps.postprocess import NORMALIZATIONS


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    from processing.workflow.benchmarking import BenchmarkConfig

    defaults = BenchmarkConfig(input_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--input-dir", required=True, help="dataset root in MVTec AD layout")
    parser.add_argument("-a", "--architectures", nargs="+", default=defaults.architectures, help="architectures to compare (default: "
            "featureCAE, the best measured on magnetic_tile)")
    parser.add_argument(
        "-l",
        "--losses",
        nargs="+",
        default=defaults.losses,
        choices=available_losses(),
        help="losses to compare (an architecture that takes none of them trains with its own, e.g. featureCAE with feature)",
    )
    parser.add_argument(
        "--image-sizes", nargs="+", type=size_argument, default=defaults.image_sizes, metavar="SIDE|WxH",
        help="model inputs to compare: sides or WIDTHxHEIGHT (default: 256)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="most epochs per training (default: each architecture's: 0 for featureCAE, whose padim needs only its feature "
        "statistics, 20 for stageCAE, 100 for pixel autoencoders)",
    )
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak learning rate (default: %(default)g)")
    parser.add_argument("--lr-finder", action="store_true", help="run the learning-rate range test per training instead of --lr")
    parser.add_argument("-b", "--batch", type=int, default=defaults.batch_size, help="training batch size")
    parser.add_argument("-c", "--color", default=defaults.color_mode, choices=["auto", *COLOR_MODES],
                        help="colour mode (auto: rgb when the training images carry colour, else grayscale)")
    parser.add_argument(
        "-m",
        "--methods",
        nargs="+",
        default=None,
        type=method_argument,
        metavar="MAP",
        help="anomaly maps to finetune and test on "
        "each model, each a row of its own: pixel maps (ssim, l2) apply to the pixel autoencoders, feature/padim/knn and their "
        "combinations to featureCAE and stageCAE (default: finetune.py's for the model's loss: padim for featureCAE, the model's own map "
        "for stageCAE, the map matching the loss of a pixel autoencoder)",
    )
    parser.add_argument(
        "--image-score",
        default=defaults.image_score,
        choices=IMAGE_SCORES,
        help="image score of the segmentation detector (default: finetune.py's: max for feature/padim/knn maps, component for pixel maps)",
    )
    parser.add_argument("-t", "--dtype", default=defaults.dtype, choices=MAP_DTYPES, help="residual map type")
    parser.add_argument(
        "--smoothing",
        type=float,
        default=defaults.smoothing_sigma,
        help="Gaussian sigma (pixels) applied to residual maps (default: %(default)g)",
    )
    parser.add_argument(
        "--keep-border",
        action="store_true",
        help="keep defect components that touch the image border (default: drop them, as the original toolkit)",
    )
    parser.add_argument(
        "--normalize",
        default=None,
        choices=NORMALIZATIONS,
        help="per-pixel standardisation of the residual maps (default: finetune.py's)",
    )
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience in epochs")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--rule", default=defaults.rule, choices=list(RULES), help="how finetuning chooses the decision "
                        "(finetune.py --rule; default smoothed)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every split, initialisation and augmentation")
    parser.add_argument("--output-dir", default=defaults.output_dir, help="results root (the JSON goes to <output-dir>/benchmarks/)")
    parser.add_argument("--models-dir", default=defaults.models_dir, help="where the trained model folders are written")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, 2 epochs, --lr 1e-3 (overrides those flags)")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def config_from_args(args):
    from processing.workflow.benchmarking import BenchmarkConfig

    config = BenchmarkConfig(
        input_dir=args.input_dir,
        architectures=list(args.architectures),
        losses=list(args.losses),
        image_sizes=list(args.image_sizes),
        epochs=args.epochs,
        learning_rate=None if args.lr_finder else args.lr,
        batch_size=args.batch,
        color_mode=args.color,
        methods=BenchmarkConfig(input_dir="").methods if args.methods is None else list(args.methods),
        methods_given=args.methods is not None,
        image_score=args.image_score,
        dtype=args.dtype,
        smoothing_sigma=args.smoothing,
        clear_border=False if args.keep_border else None,
        normalize=args.normalize,
        patience=args.patience,
        augment=not args.no_augment,
        seed=args.seed,
        rule=args.rule,
        output_dir=args.output_dir,
        models_dir=args.models_dir,
    )
    if args.quick:
        from processing.workflow.benchmarking import QUICK_OVERRIDES

        for key, value in QUICK_OVERRIDES.items():
            setattr(config, key, value)
    return config


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    config = config_from_args(args)
    config.validate()  # before TensorFlow is imported
    cli.import_tensorflow(args.verbose)
    from processing.workflow.benchmarking import absent_lines, benchmark, final_line, format_table

    path, result = benchmark(config)
    for run in result["runs"]:
        print(format_table(run))
        print()
    print(f"results: {path}")
    print(f"best configuration (chosen on the finetuning subset): {result['best']}")
    best = result["runs"][result["best_index"]]
    for line in absent_lines(best):  # why a metric of the final line reads n/a
        print(line)
    print(final_line(best))
    return path


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
