"""The whole workflow on the built-in demo dataset: generate it, train, finetune, test.

The demo dataset is cut from a texture photo that ships with scikit-image, with synthetic
scratches, spots and cracks drawn into the test images (nothing is downloaded).

Example:
    python demo.py            # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoencoder import cli
from autoencoder.errors import UserError
from processing.data.demo import TEXTURES


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="demo_data/brick", help="where the demo dataset is generated (reused if present)")
    parser.add_argument("--texture", default="brick", choices=TEXTURES, help="texture photo of the demo dataset")
    parser.add_argument("-a", "--architecture", default="mvtecCAE", help="architecture to train")
    parser.add_argument("--image-size", type=int, default=64, help="side of the demo images and of the model input")
    parser.add_argument("--epochs", type=int, default=80, help="most training epochs")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the learning-rate range test picks it)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dataset, the splits and the training")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.options import TrainConfig  # no TensorFlow

    data_dir = Path(args.data_dir)
    config = TrainConfig(
        input_dir=str(data_dir),
        architecture=args.architecture,
        loss="ssim",  # the brick texture is reconstructed best with SSIM
        color_mode="grayscale",  # SSIM needs it; the demo textures are gray
        image_size=args.image_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        seed=args.seed,
        inspect=True,
    ).resolved()
    config.validate(dataset=False)  # the flags, before TensorFlow is imported and the dataset generated
    if data_dir.exists() and not (data_dir / "train" / "good").is_dir() and any(data_dir.iterdir()):
        raise UserError(f"--data-dir {data_dir}: not empty and not a demo dataset (no train/good/); choose another folder")
    cli.import_tensorflow(args.verbose)
    from processing.data.demo import make_demo_dataset
    from processing.evaluation.metrics import format_metrics
    from processing.workflow.finetuning import FinetuneConfig, finetune
    from processing.workflow.testing import TestConfig, test
    from processing.workflow.training import train

    if not (data_dir / "train" / "good").is_dir():
        cli.logger.info("generating the demo dataset in %s", data_dir)
        make_demo_dataset(
            data_dir, image_size=args.image_size, n_test_good=40, n_test_defect=20, texture=args.texture, seed=args.seed
        )
    model_dir = train(config)
    # The demo's test set is small (100 images): a 20% finetuning subset gives the search a few
    # images of every class to choose from.
    finetune(FinetuneConfig(path=str(model_dir), method="ssim", dtype="float64", finetune_split=0.2, seed=args.seed))
    for out_dir in test(TestConfig(path=str(model_dir), save_segmentation=True)):
        result = json.loads((out_dir / "test_result.json").read_text())
        keys = ["image_auroc", "pixel_auroc", "aupro", "balanced_accuracy", "tpr", "tnr"]
        cli.logger.info("results in %s", out_dir)
        print(format_metrics(result, keys))  # n/a for a metric that could not be computed
    return model_dir


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
