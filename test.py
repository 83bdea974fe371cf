"""Classify and segment the test images (outside the finetuning subset) with a finetuned model.

Example:
    python test.py -p saved_models/brick/mvtecCAE/ssim/<timestamp> -s
"""

from __future__ import annotations

import argparse
import os
import sysconfig

from autoencoder import cli
from processing.maps.kinds import MAP_DTYPES, method_argument

# This script keeps its documented name, so with the repository root on sys.path (the tests, the
# README's `python -c` lines) `import test` is this module, not the standard library's regression
# test package. A __path__ makes it that package's parent too: `import test.support` and
# `from test import support` still find the standard library's submodules.
__path__ = [os.path.join(sysconfig.get_paths()["stdlib"], "test")]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", required=True, help="model folder written by train.py, or its .keras file")
    parser.add_argument("-s", "--save", action="store_true", help="write predicted masks and overlays for every test image")
    parser.add_argument("--heatmaps", action="store_true", help="write every test image under its anomaly map as a heat map, the "
                        "threshold's contour in white, at the image's original size (heatmaps/<class>/)")
    parser.add_argument("-m", "--method", default=None, type=method_argument, metavar="MAP", help="only the results of this anomaly map, "
            "e.g. ssim or padim+knn (default: every finetuning result)")
    parser.add_argument("-t", "--dtype", default=None, choices=MAP_DTYPES, help="only this residual map type")
    parser.add_argument("--include-finetune", action="store_true", help="also score the finetuning images (as the original toolkit did)")
    parser.add_argument("-b", "--batch", type=int, default=16, help="inference batch size")
    parser.add_argument("--results-dir", default="results", help="where results are read and written")
    cli.add_moved_data_dir_flag(parser)
    parser.add_argument("--overwrite", action="store_true", help="when a test result exists: move it aside (<name>.replaced-<time>; "
            "nothing is deleted) and score again")
    parser.add_argument("--clean-stale", action="store_true", help="remove the staging folders that killed runs left among this model's "
            "results (they are reported either way)")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.options import TestConfig, check_model_path, report_stale_results

    config = TestConfig(
        path=args.path,
        save_segmentation=args.save,
        heatmaps=args.heatmaps,
        include_finetune=args.include_finetune,
        method=args.method,
        dtype=args.dtype,
        batch_size=args.batch,
        results_root=args.results_dir,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
    )
    config.validate()  # before TensorFlow is imported
    opened = check_model_path(args.path, args.results_dir, args.data_dir)
    report_stale_results(opened, args.results_dir, args.clean_stale)
    from processing.workflow.results import ResultsTree

    ResultsTree.of(opened.info, opened.folder, args.results_dir).select(args.method, args.dtype)  # every result checked before TensorFlow
    cli.import_tensorflow(args.verbose)
    from processing.workflow.testing import test

    return test(config, opened)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
