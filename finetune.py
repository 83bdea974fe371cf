"""Choose the minimum defect area and the residual-map threshold of a trained model.

Example:
    python finetune.py -p saved_models/brick/mvtecCAE/ssim/<timestamp> -m ssim -t float64
"""

from __future__ import annotations

import argparse

from autoencoder import cli
from processing.decision.thresholds import RULES
from processing.maps.kinds import IMAGE_SCORES, MAP_DTYPES, map_kind_names, method_or_auto_argument
from processing.maps.postprocess import NORMALIZATIONS


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", required=True, help="model folder written by train.py, or its .keras file")
    parser.add_argument("-m", "--method", nargs="+", default=None, type=method_or_auto_argument, metavar="MAP", help="anomaly map: "
            f"{', '.join(map_kind_names())}, or several joined by + (their standardised mean); several (or auto: every map that suits "
            "the model) are each fitted and the finetuning subset picks the best by image AUROC (default: ssim for ssim/mssim models, "
            "l2 for l2 models, padim for featureCAE). featureCAE maps: feature (its own reconstruction error), padim (a Gaussian per "
            "grid position), knn (distance to a memory bank of training features), or a combination such as padim+knn")
    parser.add_argument("-t", "--dtype", default="float64", choices=MAP_DTYPES, help="residual map type")
    parser.add_argument("--finetune-split", type=float, default=0.1, help="fraction of each test class used for finetuning")
    parser.add_argument("--seed", type=int, default=42, help="seed of the finetuning subset")
    parser.add_argument("-b", "--batch", type=int, default=16, help="inference batch size")
    parser.add_argument("--results-dir", default="results", help="where results are written")
    cli.add_moved_data_dir_flag(parser)
    parser.add_argument("--overwrite", action="store_true", help="when this finetuning result exists: move it and its test result aside "
            "(<name>.replaced-<time>; nothing is deleted) and finetune again")
    parser.add_argument("--clean-stale", action="store_true", help="remove the staging folders that killed runs left among this model's "
            "results (they are reported either way)")
    parser.add_argument("--smoothing", type=float, default=0.0, help="Gaussian sigma in pixels applied to the residual maps (test.py "
            "applies the same)")
    border = parser.add_mutually_exclusive_group()
    border.add_argument(
        "--keep-border",
        dest="clear_border",
        action="store_false",
        default=None,
        help="keep defect components that touch the image border (the default for feature/padim/knn maps)",
    )
    border.add_argument(
        "--clear-border",
        dest="clear_border",
        action="store_true",
        help="drop defect components that touch the image border (the default for pixel maps, as the original toolkit)",
    )
    parser.add_argument(
        "--normalize",
        default="none",
        choices=NORMALIZATIONS,
        help="pixel: standardise each pixel of the (smoothed) "
        "maps by its mean and std over the training images' maps (test.py applies the same)",
    )
    parser.add_argument(
        "--image-score",
        default=None,
        choices=IMAGE_SCORES,
        help="image score: component (the highest threshold "
        "at which a component of min_area survives) or max (the map's maximum); default: max for feature/padim/knn maps, component "
        "for pixel maps",
    )
    parser.add_argument(
        "--combine-with",
        action="append",
        default=[],
        metavar="PATH[:METHOD]",
        help="average in the maps of another model "
        "of the same dataset (e.g. a featureCAE at another size, or a pixel autoencoder), each map standardised on the validation "
        "images; repeatable; METHOD defaults to that model's default map",
    )
    parser.add_argument(
        "--detector",
        default="segmentation",
        help="a registered detector (processing/detectors/): segmentation (default: "
        "residual maps, min_area + threshold) or kde (latent-code density OR reconstruction error; the density is fitted and kept in "
        "the result's folder)",
    )
    parser.add_argument("--bandwidth", type=float, default=None, help="kde: Gaussian kernel width (default: chosen by cross-validation)")
    parser.add_argument("--pca-components", type=int, default=None, help="kde: project the codes onto this many principal components first")
    parser.add_argument("--refit-density", action="store_true", help="kde: fit the density again even when the model "
            "folder holds one of an older version (that file is read, never written; every result keeps its own density.npz)")
    parser.add_argument("--synthetic-defects", action="store_true", help="choose the decision on synthetic defects (scratches, cracks, "
            "spots, stains, missing/added material, brightness and colour changes) drawn into the validation images, not on labelled "
            "test images; what finetune.py does anyway when test/ holds no defect class. The images are kept in the result's synthetic/")
    parser.add_argument("--reviewed", action="append", default=[], metavar="CSV", help="a review file (predict.py's review.csv with "
                        "its review column filled with good or defective): its labelled images join the finetuning data; repeatable")
    parser.add_argument("--rule", default="smoothed", choices=list(RULES), help="how the (min_area, threshold) pair is chosen: smoothed "
            "(default: the validation and good finetuning images set the false-alarm side, the defective finetuning images the detection "
            "side, both as smoothed rates, min_area candidates scaled with the map; bootstrap gives the rates expected on new images) or "
            "original (every validation image clean, then the best balanced accuracy on the finetuning subset, min_area 5-1000 px)")
    point = parser.add_mutually_exclusive_group()
    point.add_argument("--max-false-alarms", type=float, default=0.0, metavar="RATE", help="operating point: a false-alarm budget, the "
            "share of good images the decision may flag, the most defects found within it (--rule original: the share of validation "
            "images that may be flagged; default: the highest balanced accuracy)")
    point.add_argument("--min-detection", type=float, default=None, metavar="RATE", help="operating point: a detection rate to reach, "
            "the share of defective images the decision must flag, the fewest false alarms (--rule smoothed)")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def config_from_args(args):
    from processing.detectors.base import FinetuneConfig

    several = args.method and (len(args.method) > 1 or args.method == ["auto"])
    return FinetuneConfig(
        path=args.path,
        method=args.method[0] if args.method and not several else None,
        candidates=list(args.method) if several else None,
        dtype=args.dtype,
        finetune_split=args.finetune_split,
        seed=args.seed,
        batch_size=args.batch,
        results_root=args.results_dir,
        smoothing_sigma=args.smoothing,
        clear_border=args.clear_border,
        normalize=args.normalize,
        detector=args.detector,
        image_score=args.image_score,
        combine_with=list(args.combine_with),
        bandwidth=args.bandwidth,
        pca_components=args.pca_components,
        refit_density=args.refit_density,
        data_dir=args.data_dir,
        overwrite=args.overwrite,
        synthetic_defects=args.synthetic_defects,
        max_false_alarms=args.max_false_alarms,
        min_detection=args.min_detection,
        rule=args.rule,
        reviewed=args.reviewed,
    )


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.finetuning import checked_config, finetune  # no TensorFlow
    from processing.workflow.options import check_model_path, report_stale_results

    config = config_from_args(args)
    config.validate()  # before TensorFlow is imported
    opened = check_model_path(args.path, args.results_dir, args.data_dir)  # read and hashed once for the run
    checked_config(config, opened)  # the maps and the detector suit the model
    report_stale_results(opened, args.results_dir, args.clean_stale)
    cli.import_tensorflow(args.verbose)

    return finetune(config, opened)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
