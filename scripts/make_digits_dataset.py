"""Write the digits anomaly dataset (scikit-learn's 8x8 handwritten digits enlarged to 28x28, with
Gaussian-noise test classes) in the MVTec AD layout. Nothing is downloaded.

    python scripts/make_digits_dataset.py                           # demo_data/digits, all digits normal
    python scripts/make_digits_dataset.py --digits 0 1 -o demo_data/digits01   # one-class setting
    python scripts/make_digits_dataset.py --noise-sigmas 0.1 0.3 --seed 1 --overwrite
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
from processing.data.digits import DEFAULT_NOISE_SIGMAS, DEFAULT_TRAIN_FRACTION, make_digits_dataset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("demo_data/digits"), help="folder to create")
    parser.add_argument(
        "--digits",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="digits that are normal (one-class setting); the others go to test/digit_<k> (default: all normal)",
    )
    parser.add_argument(
        "--noise-sigmas",
        type=float,
        nargs="*",
        default=list(DEFAULT_NOISE_SIGMAS),
        metavar="SIGMA",
        help="standard deviations of the Gaussian noise, on the [0, 1] scale, one test/noise_<sigma> folder each",
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=DEFAULT_TRAIN_FRACTION,
        help="fraction of the normal digits used for training; the rest are the test images",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing digits dataset")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging()
    return make_digits_dataset(
        args.output_dir,
        normal_digits=args.digits,
        noise_sigmas=args.noise_sigmas,
        train_fraction=args.train_fraction,
        seed=args.seed,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
