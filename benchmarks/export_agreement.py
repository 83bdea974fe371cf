"""How closely export.py's graphs (SavedModel, TFLite, ONNX) reproduce the Keras path.

Trains, on the generated demo dataset at 32 px (as tests/test_export.py), an mvtecCAE with the L2
loss and a featureCAE, one epoch each, finetunes three exportable results (SSIM maps smoothed with
sigma 1.5 and standardised per pixel; L2 maps with border components kept and min_area set to 1,
so the decision is in the graph; featureCAE ``feature`` maps smoothed with sigma 1), exports each
in every format and prints, over 32 images, the largest absolute difference of the maps and of the
image scores to ``detector.score``, and how many decisions differ (where the graph has them).

    python benchmarks/export_agreement.py        # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-feature", action="store_true", help="skip the featureCAE")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import cv2
    import numpy as np

    import export as export_script
    import finetune
    import train
    from autoencoder import bundle, cli
    from processing.data.demo import make_demo_dataset
    from processing.data.images import load_images
    from processing.workflow.export import FORMATS, load_exported
    from processing.workflow.results import ResultsTree, load_detector

    cli.setup_logging(False)
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="export_agreement_"))
    try:
        make_demo_dataset(work / "tiles", image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=4, texture="brick", seed=5)
        common = ["-d", str(work / "tiles"), "--image-size", str(SIZE), "-b", "8", "--epochs", "1", "--lr", "1e-3"]
        cases = []
        pixel = train.main([*common, "-a", "mvtecCAE", "-l", "l2", "--output-dir", str(work / "models")])
        results = work / "results"
        finetune.main(
            [
                "-p",
                str(pixel),
                "-m",
                "ssim",
                "--image-score",
                "max",
                "--smoothing",
                "1.5",
                "--normalize",
                "pixel",
                "--results-dir",
                str(results),
            ]
        )
        out = finetune.main(["-p", str(pixel), "-m", "l2", "--image-score", "max", "--keep-border", "--results-dir", str(results)])
        result = json.loads((out / "finetuning_result.json").read_text())
        result["best_min_area"] = 1
        (out / "finetuning_result.json").write_text(json.dumps(result))
        cases += [
            (pixel, results, "ssim_float64", "mvtecCAE, SSIM, smoothed 1.5, per-pixel standardised"),
            (pixel, results, "l2_float64", "mvtecCAE, L2, min_area 1, border kept"),
        ]
        if not args.no_feature:
            feature = train.main([*common, "-a", "featureCAE", "--output-dir", str(work / "feature_models")])
            finetune.main(
                ["-p", str(feature), "-m", "feature", "--image-score", "max", "--smoothing", "1", "--results-dir", str(work / "fresults")]
            )
            cases.append((feature, work / "fresults", "feature_float64", "featureCAE, feature map, smoothed 1"))

        paths = (sorted((work / "tiles" / "test").rglob("*.png")) + sorted((work / "tiles" / "train" / "good").glob("*.png")))[:32]
        pixels = np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths])[..., None]
        images = load_images(paths, "grayscale", SIZE)
        print(f"{'result':<52} {'format':<11} {'max |map diff|':>15} {'max |score diff|':>17} {'decisions differing':>20}")
        for folder, results_root, name, label in cases:
            model = bundle.load_bundle(folder)
            _, result_folder = ResultsTree.of_model(model, str(results_root)).choose(name)
            detector = load_detector(model, result_folder)
            scores = detector.score(images)
            decisions = detector.decide(scores)
            for fmt in FORMATS:
                target = work / "exports" / f"{name}_{folder.name}.{fmt}"
                export_script.main(["-p", str(folder), "-r", name, "--format", fmt, "-o", str(target), "--results-dir", str(results_root)])
                exported = load_exported(target, fmt)(pixels)
                map_diff = float(np.abs(exported["anomaly_map"] - scores.maps).max())
                score_diff = float(np.abs(exported["image_score"] - scores.image_scores).max())
                differing = (
                    f"{int((exported['defective'] != decisions.defective).sum())} of {len(paths)}"
                    if "defective" in exported
                    else "not in graph"
                )
                print(f"{label:<52} {fmt:<11} {map_diff:15.2e} {score_diff:17.2e} {differing:>20}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
