"""How closely every export (SavedModel, TFLite, ONNX) and its runner reproduce predict.py, on a dataset.

For each finetuning result of the given models and each format: the result is exported, the runner
beside the export scores the dataset's test images from their files, and the rows are compared with
predict.py's rows for the same files (its Predictor, in this process): verdicts that differ, the
largest relative difference of the image scores, defect areas that differ, and the runner's time per
image against predict.py's (a ratio measured in this run).

    python benchmarks/export_agreement.py -p saved_models/magnetic_tile/featureCAE/feature/<ts> [-p ...] \\
        [--results-dir results] [--images ../shared/datasets/magnetic_tile/test] [--every 1]

Without -p it trains a pixel autoencoder and a featureCAE for one epoch on a generated 64 px demo
dataset, with one result of every detector and map kind, and uses that dataset's test images.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = ("savedmodel", "tflite", "onnx")


def demo_models(work: Path) -> tuple[list[Path], Path, Path]:
    import finetune
    import train
    from processing.data.demo import make_demo_dataset

    make_demo_dataset(work / "tiles", image_size=64, n_train=60, n_test_good=20, n_test_defect=10, texture="brick", seed=5)
    common = ["-d", str(work / "tiles"), "--image-size", "64", "-b", "8", "--epochs", "1", "--lr", "1e-3"]
    results = work / "results"
    pixel = train.main([*common, "-a", "mvtecCAE", "-l", "ssim", "--output-dir", str(work / "models")])
    finetune.main(["-p", str(pixel), "-m", "ssim", "--results-dir", str(results)])
    finetune.main(["-p", str(pixel), "-m", "l2", "--smoothing", "1.5", "--normalize", "pixel", "--results-dir", str(results)])
    finetune.main(["-p", str(pixel), "-m", "ssim", "--detector", "kde", "--results-dir", str(results)])
    feature = train.main([*common, "-a", "featureCAE", "--output-dir", str(work / "models")])
    for method in ("padim", "knn", "feature", "padim+knn"):
        finetune.main(["-p", str(feature), "-m", method, "--smoothing", "2", "--results-dir", str(results)])
    finetune.main(["-p", str(feature), "-m", "padim", "--combine-with", f"{pixel}:l2", "--results-dir", str(results)])
    return [pixel, feature], results, work / "tiles" / "test"


def compare(ours: list[dict], theirs: list[dict]) -> tuple[int, float, float, str]:
    """(verdicts that differ, largest relative score difference, largest difference relative to the
    largest score magnitude (kde's -log density crosses zero), defect areas that differ with the
    largest relative difference among them)."""
    verdicts = sum(bool(a["defective"]) != bool(int(b["defective"])) for a, b in zip(ours, theirs))
    scores = np.array([a["score"] for a in ours])
    reference = np.array([float(b["score"]) for b in theirs])
    difference = np.abs(scores - reference)
    relative = float(np.max(difference / np.maximum(np.abs(reference), 1e-12)))
    scaled = float(difference.max() / max(np.abs(reference).max(), 1e-12))
    pairs = [(a["defect_area_px"], b["defect_area_px"]) for a, b in zip(ours, theirs)
             if b["defect_area_px"] != "" and a["defect_area_px"] != b["defect_area_px"]]
    largest = max((abs(a - b) / max(b, 1) for a, b in pairs), default=0.0)
    areas = f"{len(pairs)} (<= {largest:.1%})" if pairs else "0"
    return verdicts, relative, scaled, areas


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--path", action="append", default=[], help="model folder (repeatable); default: train demo models")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--images", default=None, help="folder of images, searched recursively (default: the model's test images)")
    parser.add_argument("--every", type=int, default=1, help="score every n-th image")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--statistics-dtype", nargs="+", default=["float32"], choices=["float32", "float16"],
                        help="export.py --statistics-dtype to compare (each exported and run)")
    args = parser.parse_args(argv)

    from autoencoder import bundle, cli

    cli.setup_logging(False)
    cli.import_tensorflow(False)
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
    import export as export_script
    from processing.data.inputs import collect_images
    from processing.workflow import export_runner
    from processing.workflow.predict.loading import load_one
    from processing.workflow.predict.run import Predictor
    from processing.workflow.results import ResultsTree, load_detector

    work = Path(tempfile.mkdtemp(prefix="export_agreement_"))
    try:
        if args.path:
            models, results = [Path(p) for p in args.path], Path(args.results_dir)
            images = Path(args.images) if args.images else None
        else:
            models, results, images = demo_models(work)
        print(f"{'result':<44} {'format':<11} {'stats':<7} {'MB':>6} {'images':>6} {'verdicts differ':>15} "
              f"{'max rel score diff':>18} {'... of the largest':>18} {'areas differ':>12} {'runner ms/img':>13} {'vs predict':>10}")
        for folder in models:
            model = bundle.load_bundle(folder)
            source = images or Path(model.info.dataset.path) / "test"
            paths = collect_images([str(source)])[:: args.every]
            for name, result_folder in ResultsTree.of_model(model, results).finetuning_folders().items():
                detector = load_detector(model, result_folder, 16)
                Predictor(detector, work).rows(paths[:2], [load_one(path, detector.read_input) for path in paths[:2]])
                started = time.perf_counter()
                loaded = [load_one(path, detector.read_input) for path in paths]
                theirs = Predictor(detector, work).rows(paths, loaded)
                predict_ms = 1000 * (time.perf_counter() - started) / len(paths)
                for fmt, stats in ((fmt, stats) for fmt in args.formats for stats in args.statistics_dtype):
                    target = work / "exports" / (f"{folder.name}_{name}_{stats}" + ("" if fmt == "savedmodel" else f".{fmt}"))
                    try:
                        with contextlib.redirect_stdout(io.StringIO()):  # export.py's "exported to" line
                            export_script.main(["-p", str(folder), "-r", name, "--format", fmt, "-o", str(target),
                                                "--results-dir", str(results), "--statistics-dtype", stats])
                    except ValueError as error:
                        print(f"{name:<44} {fmt:<11} not exported: {error}")
                        continue
                    megabytes = (sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if target.is_dir()
                                 else target.stat().st_size) / 1e6
                    runner = export_runner.load_export(target)
                    runner.predict_files(paths[:2])  # warm-up
                    started = time.perf_counter()
                    ours = runner.predict_files(paths)
                    runner_ms = 1000 * (time.perf_counter() - started) / len(paths)
                    verdicts, relative, scaled, areas = compare(ours, theirs)
                    print(f"{name:<44} {fmt:<11} {stats:<7} {megabytes:>6.1f} {len(paths):>6} {verdicts:>15} {relative:>18.2e} "
                          f"{scaled:>18.2e} {areas:>12} "
                          f"{runner_ms:>13.1f} {runner_ms / predict_ms:>9.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
