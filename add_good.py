"""Add new defect-free images to a finetuned model without training it again.

The padim and knn maps of each selected finetuning result continue from the sums they were fitted
from, with one backbone pass over the new images only (the statistics then equal a fit on all the
training images); with --epochs N the network itself is trained up to N more epochs on the training
images and the new ones, and every map fitted again. The decision is chosen again. Writes a new
model folder beside the old one (its info.json names the parent and the images added) and its
finetuning results; nothing is replaced.

Example:
    python add_good.py -p saved_models/brick/featureCAE/feature/<timestamp> -i new_good/
    python add_good.py -p saved_models/brick/featureCAE/feature/<timestamp> --reviewed predictions/day1/review.csv
    python add_good.py -p saved_models/brick/mvtecCAE/l2/<timestamp> -i new_good/ --epochs 5   # a network's own maps
"""

from __future__ import annotations

import argparse

from autoencoder import cli
from processing.maps.kinds import MAP_DTYPES, method_argument


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", required=True, help="model folder written by train.py (or add_good.py), or its .keras file")
    parser.add_argument("-i", "--images", default=None, metavar="FOLDER", help="folder of new defect-free images (not the dataset's test "
            "or validation images); they stay where they are, listed in the new info.json")
    parser.add_argument("--reviewed", nargs="+", default=[], metavar="CSV", help="review files (predict.py's review.csv, its review "
            "column filled): the images an inspector labelled good, confirmed false alarms among them, are added too")
    parser.add_argument("-m", "--method", default=None, type=method_argument, metavar="MAP", help="only the finetuning results of this "
            "map, e.g. padim or padim+knn (default: every finetuning result; each must have fitted maps)")
    parser.add_argument("-t", "--dtype", default=None, choices=MAP_DTYPES, help="only the results of this map type")
    parser.add_argument("--epochs", type=int, default=0, help="also continue training the network at most this many epochs (early "
            "stopping on the validation images) on the training images and the new ones, at the low rate of its schedule, then fit "
            "every map again: for maps that are the network's own (ssim, l2, feature); 0 (default): the network is left as it is")
    parser.add_argument("-b", "--batch", type=int, default=16, help="inference batch size")
    parser.add_argument("--results-dir", default="results", help="where results are read and written")
    cli.add_moved_data_dir_flag(parser)
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.add_good import AddGoodConfig, checked_run
    from processing.workflow.options import check_model_path

    config = AddGoodConfig(path=args.path, images=args.images, reviewed=args.reviewed, method=args.method, dtype=args.dtype,
                           results_root=args.results_dir, data_dir=args.data_dir, batch_size=args.batch, epochs=args.epochs)
    config.validate()  # the flags first, before the model folder is read
    opened = check_model_path(args.path, args.results_dir, args.data_dir)
    checked = checked_run(config, opened)  # the results, the dataset and every image, before TensorFlow
    cli.import_tensorflow(args.verbose)
    from processing.workflow.add_good import add_good

    return add_good(config, opened, checked)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
