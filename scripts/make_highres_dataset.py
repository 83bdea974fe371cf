"""Write a generated high-resolution dataset in the MVTec AD layout: 8-bit gray procedural
textures of one product (fibres, stripes, grain; 1536 px by default) with small synthetic defects
(5-30 px: scratch, crack, spot, stain, missing_material, added_material, brightness) and their
masks. Nothing is downloaded.

    python scripts/make_highres_dataset.py -o demo_data/highres
    python scripts/make_highres_dataset.py -o demo_data/highres_2048 --image-size 2048 --defect-size-range 10 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# scripts/ is not a package: make `processing` importable when run from anywhere.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autoencoder import cli  # noqa: E402
from autoencoder.image_size import size_argument  # noqa: E402
from processing.data.synthetic_datasets import HIGHRES_DEFAULTS, HIGHRES_DEFECT_TYPES, make_highres_dataset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("demo_data/highres"), help="folder to create")
    parser.add_argument(
        "--image-size", type=size_argument, default=HIGHRES_DEFAULTS["image_size"], metavar="SIDE|WxH",
        help="side of square images, or WIDTHxHEIGHT (e.g. 1024x256 for elongated parts), in pixels (>= 32)"
    )
    parser.add_argument("--n-train", type=int, default=HIGHRES_DEFAULTS["n_train"], help="number of defect-free training images")
    parser.add_argument("--n-test-good", type=int, default=HIGHRES_DEFAULTS["n_test_good"], help="number of defect-free test images")
    parser.add_argument(
        "--n-test-defect", type=int, default=HIGHRES_DEFAULTS["n_test_defect"], help="number of test images per defect type"
    )
    parser.add_argument(
        "--defect-types",
        nargs="+",
        choices=HIGHRES_DEFECT_TYPES,
        default=list(HIGHRES_DEFECT_TYPES),
        metavar="TYPE",
        help=f"defect kinds, one test folder each (default: all of {', '.join(HIGHRES_DEFECT_TYPES)})",
    )
    parser.add_argument(
        "--defect-size-range",
        nargs=2,
        type=float,
        default=list(HIGHRES_DEFAULTS["defect_size_range"]),
        metavar=("MIN", "MAX"),
        help="defect extent in pixels of the image, drawn log-uniformly from [MIN, MAX]",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing high-resolution dataset")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging()
    return make_highres_dataset(
        args.output_dir,
        image_size=args.image_size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        defect_types=args.defect_types,
        defect_size_range=tuple(args.defect_size_range),
        seed=args.seed,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
