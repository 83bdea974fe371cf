"""Elongated parts: a non-square model input against the square one the images are squashed into.

A generated set of 4:1 gray strips (1024 x 256 px, the high-resolution product texture) with thin
defects (scratches and cracks, 1-4 px wide) is trained, finetuned and tested with the defaults
(featureCAE statistics scored by padim) at three model inputs:

- ``256``: the default square; the strip is squashed 4:1 along its length, so a scratch across
  it becomes a quarter as wide;
- ``512x128``: the same number of pixels, the aspect kept (both axes halved);
- ``1024x256``: the strip at its own resolution (four times the pixels).

It prints image AUROC, pixel AUROC, AUPRO and balanced accuracy (overall and per defect type) and
the seconds train + finetune + test took, per dataset seed. test.py measures the pixel metrics on
each model's maps against the masks resized to them, which differ between a squashed and an
unsquashed input; ``orig_pixel_auroc`` and ``orig_aupro`` measure them where the inputs agree: on
the test images' own 1024 x 256 pixels (each map resized bilinearly to its image, the masks as
drawn), over the same test images.

Example:
    python benchmarks/bench_elongated.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = "1024x256"
INPUTS = ("256", "512x128", "1024x256")
DEFECTS = ("scratch", "crack")
KEYS = ("image_auroc", "pixel_auroc", "aupro", "balanced_accuracy")
BATCH = 16


def make_set(root: Path, seed: int, n_train: int, n_good: int, n_defect: int) -> Path:
    from processing.data.synthetic_datasets import make_highres_dataset

    return make_highres_dataset(root / f"strips_{seed}", image_size=IMAGE, n_train=n_train, n_test_good=n_good, n_test_defect=n_defect,
                                defect_types=DEFECTS, defect_size_range=(20, 120), seed=seed)


def run(data: Path, work: Path, size: str, seed: int) -> dict:
    import finetune
    import test as test_script
    import train

    started = time.perf_counter()
    model = train.main(["-d", str(data), "--image-size", size, "--seed", str(seed), "--output-dir", str(work / "models")])
    finetune.main(["-p", str(model), "--results-dir", str(work / "results"), "--seed", str(seed)])
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", str(work / "results")])
    seconds = time.perf_counter() - started
    result = json.loads((test_dir / "test_result.json").read_text())
    row = {key: result[key] for key in KEYS} | {"seconds": seconds} | at_original_size(model, work / "results", test_dir, data)
    for defect in DEFECTS:
        row |= {f"{defect}_{key}": result["per_defect_type"][defect][key] for key in ("image_auroc", "pixel_auroc", "aupro")}
    return row


def at_original_size(model_folder: Path, results: Path, test_dir: Path, data: Path) -> dict:
    """Pixel AUROC and AUPRO of the test images test.py scored, at the images' own size."""
    import csv

    import cv2
    import numpy as np

    from autoencoder import bundle
    from processing.data.images import MVTecLayout, read_mask, scan_dataset
    from processing.evaluation.metrics import PixelMetricsAccumulator
    from processing.workflow.results import ResultsTree, load_detector

    model = bundle.load_bundle(model_folder)
    _, result_folder = ResultsTree.of_model(model, str(results)).choose(None)
    detector = load_detector(model, result_folder)
    layout: MVTecLayout = scan_dataset(data)
    with open(test_dir / "classification.csv", newline="") as handle:
        paths = [data / row["file"] for row in csv.DictReader(handle)]
    accumulator = PixelMetricsAccumulator(detector.map_value_range)
    for start in range(0, len(paths), BATCH):
        chunk = paths[start:start + BATCH]
        maps = detector.maps.maps_of_files(chunk)
        truth, resized = [], []
        for path, resmap in zip(chunk, maps):
            mask_path = layout.mask_path(path) if path.parent.name != "good" else None
            mask = read_mask(mask_path) if mask_path is not None else np.zeros(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2], bool)
            truth.append(mask)
            resized.append(cv2.resize(resmap, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR))
        accumulator.update(np.stack(truth), np.stack(resized))
    measured = accumulator.result()
    return {"orig_pixel_auroc": measured["pixel_auroc"], "orig_aupro": measured["aupro"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="dataset (and training) seeds")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), help="model inputs to compare (sides or WIDTHxHEIGHT)")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test-good", type=int, default=60)
    parser.add_argument("--n-test-defect", type=int, default=40, help="per defect type")
    args = parser.parse_args(argv)
    from autoencoder import cli

    cli.setup_logging(False)
    cli.import_tensorflow(False)
    rows = []
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix="bench_elongated-"))
        data = make_set(work, seed, args.n_train, args.n_test_good, args.n_test_defect)
        for size in args.inputs:
            rows.append({"seed": seed, "input": size} | run(data, work / size, size, seed))
            print(json.dumps(rows[-1]), flush=True)
    per_type = [f"{defect}_{key}" for defect in DEFECTS for key in ("image_auroc", "pixel_auroc", "aupro")]
    keys = [*KEYS, "orig_pixel_auroc", "orig_aupro", *per_type, "seconds"]
    print(f"{'seed':>4} {'input':<9} " + " ".join(f"{key:>21}" for key in keys))
    for row in rows:
        print(f"{row['seed']:>4} {row['input']:<9} " + " ".join(f"{row[key]:>21.3f}" for key in keys))
    print("mean over seeds")
    for size in args.inputs:
        mine = [row for row in rows if row["input"] == size]
        print(f"{'':>4} {size:<9} " + " ".join(f"{sum(row[key] for row in mine) / len(mine):>21.3f}" for key in keys))
    return rows


if __name__ == "__main__":
    main()
