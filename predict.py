"""Score new, unlabeled images with a finetuned model: predictions.csv, report.html, masks, overlays.

Examples:
    python predict.py -p saved_models/brick/mvtecCAE/ssim/<timestamp> -i new_images/ -o predictions/brick
    python predict.py -p <model folder> -r padim_float64 -i 'line3/**/*.png' -o out --masks --overlays
    python predict.py -p <model folder> -i new_images/ -o part2 --shard 2/3   # one of 3 machines
    python predict.py --merge part1 part2 part3 -o predictions/all            # then join the 3 parts

Folders are searched recursively (png/jpg/bmp/tif, 8/16-bit, gray/RGB/RGBA, any size). A file that
cannot be read becomes a row with its error and the run goes on (exit code 0; --strict: 2).
"""

from __future__ import annotations

import argparse

from autoencoder import cli
from autoencoder.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (docs/cli.md is generated from it: scripts/make_cli_docs.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", default=None, help="model folder written by train.py, or its .keras file")
    parser.add_argument("-i", "--input", default=None, nargs="+", metavar="INPUT", help="image folders (searched recursively), image "
            "files or quoted glob patterns ('**' recurses)")
    parser.add_argument("-o", "--output", required=True, help="output folder: predictions.csv, report.html, predict_settings.json, "
            "masks/, overlays/")
    parser.add_argument("-r", "--result", default=None, metavar="NAME", help="finetuning result to apply, e.g. ssim_float64 or "
            "padim_float64 (default: the model's only one; required when it has several)")
    parser.add_argument("--masks", action="store_true", help="write the predicted masks at each image's original size (masks/)")
    parser.add_argument("--overlays", action="store_true", help="write each image with the predicted defect outlined in red (overlays/)")
    parser.add_argument("--heatmaps", action="store_true", help="write each image under its anomaly map as a heat map, the threshold's "
                        "contour in white, at the image's original size (heatmaps/; report.html shows them for its gallery anyway)")
    parser.add_argument("--shard", default=None, metavar="K/N", help="predict only part K of N (from 1) of the sorted input list: N runs "
            "with 1/N ... N/N cover every image once; join them with --merge (docs/distributed.md)")
    parser.add_argument("--merge", default=None, nargs="+", metavar="OUT", help="instead of predicting: join the output folders of "
            "--shard runs (or any runs of one model and result) into -o, rows sorted by path, masks, overlays and report rebuilt")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run: skip the images already in predictions.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace the predictions already in the output folder")
    parser.add_argument("--strict", action="store_true", help="exit with code 2 when any image could not be read (the outputs are still "
            "written)")
    parser.add_argument("--gallery", type=int, default=48, help="overlays shown in report.html, most suspicious first")
    parser.add_argument("-b", "--batch", type=int, default=16, help="inference batch size")
    parser.add_argument("--workers", type=int, default=None, help="threads reading images (default: one per CPU)")
    parser.add_argument("--results-dir", default="results", help="where finetuning results are read")
    cli.add_verbose_flag(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    from processing.workflow.predict import PredictConfig, check_inputs_and_output, check_merge, merge_predictions, predict

    if args.merge is not None:
        for flag, value in (
            ("-p/--path", args.path),
            ("-i/--input", args.input),
            ("--shard", args.shard),
            ("--resume", args.resume or None),
        ):
            if value is not None:
                raise UserError(f"--merge joins finished runs: {flag} does not apply")
        check_merge(args.merge, args.output, args.overwrite)  # before TensorFlow is loaded
        cli.import_tensorflow(args.verbose)
        summary = merge_predictions(args.merge, args.output, args.gallery, args.workers, args.overwrite)
        print(summary.line())
        return summary
    for flag, value in (("-p/--path", args.path), ("-i/--input", args.input)):
        if value is None:
            raise UserError(f"{flag} is required (unless --merge)")
    config = PredictConfig(
        path=args.path,
        inputs=args.input,
        output=args.output,
        result=args.result,
        masks=args.masks,
        overlays=args.overlays,
        heatmaps=args.heatmaps,
        batch_size=args.batch,
        results_root=args.results_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        strict=args.strict,
        gallery=args.gallery,
        workers=args.workers,
        shard=args.shard,
    )
    checked = check_inputs_and_output(config)  # bad inputs or output folder: one line before TensorFlow is loaded
    cli.import_tensorflow(args.verbose)
    summary = predict(config, checked)  # the model folder opened (and its .keras file hashed) once
    print(summary.line())
    return summary


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
