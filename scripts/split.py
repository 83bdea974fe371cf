"""Turn a folder of class sub-folders (e.g. cell_images/Uninfected, cell_images/Parasitized) into
the MVTec AD layout: train/good and test/good from the normal class, test/<class> for the others.

    python scripts/split.py -i cell_images -o datasets/malaria --normal Uninfected --train-fraction 0.8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# scripts/ is not a package: make the repository importable when run from anywhere.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autoencoder import cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input-dir", required=True, help="folder with one sub-folder of images per class")
    parser.add_argument("-o", "--output-dir", required=True, help="dataset folder to create (MVTec AD layout)")
    parser.add_argument("--normal", required=True, help="name of the normal (defect-free) class folder")
    parser.add_argument("--train-fraction", type=float, default=0.8, help="fraction of the normal images used for training, in (0, 1)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/test split of the normal images")
    parser.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links to them)")
    parser.add_argument("--overwrite", action="store_true", help="replace an output folder written by an earlier split.py run")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.data.split_dataset import split_dataset

    return split_dataset(
        args.input_dir,
        args.output_dir,
        normal=args.normal,
        train_fraction=args.train_fraction,
        seed=args.seed,
        copy=args.copy,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
