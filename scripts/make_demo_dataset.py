"""Write the built-in demo dataset (texture crops from scikit-image with synthetic defects) in the
MVTec AD layout.

    python scripts/make_demo_dataset.py -o demo_data/brick --texture brick
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
from processing.data.demo import TEXTURES, make_demo_dataset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("demo_data/brick"), help="folder to create")
    parser.add_argument("--texture", choices=TEXTURES, default="brick", help="scikit-image texture photo")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square images, in pixels")
    parser.add_argument("--n-train", type=int, default=200, help="number of defect-free training images")
    parser.add_argument("--n-test-good", type=int, default=20, help="number of defect-free test images")
    parser.add_argument("--n-test-defect", type=int, default=10, help="number of test images per defect type")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo dataset")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging()
    return make_demo_dataset(
        args.output_dir,
        image_size=args.image_size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        texture=args.texture,
        seed=args.seed,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
