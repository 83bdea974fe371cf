"""Does a region of interest help? Strong distractors outside the region, with and without --roi.

A generated demo dataset (brick texture, scratches/spots/cracks with masks) where half of the test
images, good and defective alike, also carry a strong blob in a band along the right edge that the
inspection must ignore (a fixture, a label, a marker). The same model is trained twice, without
and with `--roi` (white = the rest of the image), finetuned and tested with the defaults; the
script prints image AUROC, balanced accuracy and pixel AUROC of both, and checks that no predicted
mask of the run with the region reaches into the band.

Example:
    python benchmarks/bench_roi.py --seeds 42 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 64
BAND = 16  # the right-most columns, outside the region of interest


def make_set(root: Path, seed: int) -> tuple[Path, Path]:
    """(dataset, roi.png): the demo set with blobs in the band of half the test images."""
    from processing.data.demo import make_demo_dataset

    data = make_demo_dataset(root / "data", image_size=SIZE, n_train=120, n_test_good=40, n_test_defect=40, texture="brick", seed=seed)
    rng = np.random.default_rng(seed)
    for path in sorted((data / "test").rglob("*.png")):
        if rng.random() < 0.5:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            centre = (int(rng.integers(SIZE - BAND + 4, SIZE - 3)), int(rng.integers(6, SIZE - 6)))
            cv2.circle(image, centre, int(rng.integers(3, 7)), int(rng.choice([0, 255])), -1)
            cv2.imwrite(str(path), image)
    roi = np.full((SIZE, SIZE), 255, np.uint8)
    roi[:, SIZE - BAND:] = 0
    roi_path = root / "roi.png"
    cv2.imwrite(str(roi_path), roi)
    return data, roi_path


def run(data: Path, work: Path, roi: Path | None, architecture: str, seed: int) -> dict:
    import finetune
    import test as test_script
    import train

    argv = ["-d", str(data), "-a", architecture, "--image-size", str(SIZE), "--seed", str(seed), "--output-dir", str(work / "models")]
    if architecture == "mvtecCAE":
        argv += ["-l", "l2", "--epochs", "20", "--lr", "1e-3"]
    model = train.main(argv + (["--roi", str(roi)] if roi else []))
    finetune.main(["-p", str(model), "--results-dir", str(work / "results"), "--seed", str(seed)])
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", str(work / "results"), "-s"])
    result = json.loads((test_dir / "test_result.json").read_text())
    outside = 0
    for mask in (test_dir / "segmentation").rglob("*_mask.png"):
        outside += int(np.count_nonzero(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)[:, SIZE - BAND:]))
    with open(test_dir / "classification.csv") as handle:
        flagged_good = sum(1 for row in csv.DictReader(handle) if row["truth"] == "0" and row["prediction"] == "1")
    return {key: result.get(key) for key in ("image_auroc", "balanced_accuracy", "tpr", "tnr", "pixel_auroc", "aupro")} | {
        "mask_pixels_in_band": outside, "good_images_flagged": flagged_good}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("-a", "--architecture", default="featureCAE", help="featureCAE (padim, the default) or mvtecCAE (l2, 20 epochs)")
    args = parser.parse_args(argv)
    from autoencoder import cli

    cli.setup_logging(False)
    cli.import_tensorflow(False)
    rows = []
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix="bench_roi-"))
        data, roi = make_set(work, seed)
        for label, mask in (("without --roi", None), ("with --roi", roi)):
            rows.append({"seed": seed, "run": label} | run(data, work / label.replace(" ", "_"), mask, args.architecture, seed))
    keys = ["image_auroc", "balanced_accuracy", "tpr", "tnr", "pixel_auroc", "aupro", "good_images_flagged", "mask_pixels_in_band"]
    print(f"{'seed':>4} {'run':<14} " + " ".join(f"{key:>19}" for key in keys))
    for row in rows:
        values = " ".join(f"{row[key]:>19.3f}" if isinstance(row[key], float) else f"{row[key]!s:>19}" for key in keys)
        print(f"{row['seed']:>4} {row['run']:<14} {values}")
    return rows


if __name__ == "__main__":
    main()
