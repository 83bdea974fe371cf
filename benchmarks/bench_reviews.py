"""Reviewed verdicts back into the decision: does labelling N predicted images and finetuning again help?

On a dataset with labelled test images (magnetic_tile by default) with the README's defaults
(featureCAE statistics, padim, finetune.py --smoothing 2):

1. train, finetune, test: the verdicts on the test images outside the finetuning subset;
2. predict.py on those images, and an inspector's review of the first N rows of its review.csv
   (``--pick sheet``, the default: the sheet's order, random), or of the N images nearest the
   threshold (``--pick nearest``), or predict.py on N of the images drawn at random, all reviewed
   (``--pick random``); the review is the truth, from the images' class folders;
3. finetune.py --reviewed review.csv (--overwrite) and test again: test.py now leaves the reviewed
   images out too.

It prints the balanced accuracy, TPR and TNR before and after on the same images (the test images
outside the finetuning subset and the reviewed ones).

Example:
    python benchmarks/bench_reviews.py -d ../shared/datasets/magnetic_tile -n 50 --seeds 42 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def verdicts(test_dir: Path) -> dict[str, tuple[bool, bool]]:
    with open(test_dir / "classification.csv", newline="") as handle:
        return {row["file"]: (row["truth"] == "1", row["prediction"] == "1") for row in csv.DictReader(handle)}


def rates(rows: list[tuple[bool, bool]]) -> dict:
    truth = np.array([t for t, _ in rows])
    predicted = np.array([p for _, p in rows])
    tpr = float((predicted & truth).sum() / max(truth.sum(), 1))
    tnr = float((~predicted & ~truth).sum() / max((~truth).sum(), 1))
    return {"balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr, "images": len(rows)}


def one_seed(dataset: Path, work: Path, n_reviewed: int, seed: int, pick: str = "sheet", split: float = 0.1) -> dict:
    import finetune
    import predict
    import test as test_script
    import train

    model = train.main(["-d", str(dataset), "--seed", str(seed), "--output-dir", str(work / "models")])
    results = str(work / "results")
    finetune.main(["-p", str(model), "--smoothing", "2", "--seed", str(seed), "--results-dir", results, "--finetune-split", str(split)])
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", results])
    before = verdicts(test_dir)
    if pick == "random":
        chosen = sorted(np.random.default_rng(seed).choice(sorted(before), n_reviewed, replace=False))
    else:  # the line predicts every one of them; the inspector reviews the top of the sheet
        chosen = sorted(before)
    images = work / "line"  # the images a line predicted: links to the chosen test images
    for name in chosen:
        target = images / name.replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dataset / name)
    out = work / "predicted"
    predict.main(["-p", str(model), "-i", str(images), "-o", str(out), "--results-dir", results])
    reviewed = out / "review.csv"  # the inspector's review: the truth of each image
    with open(reviewed, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if pick == "nearest":
        threshold = json.loads((out / "predict_settings.json").read_text())["decision"]["threshold"]
        rows.sort(key=lambda row: abs(float(row["score"]) - threshold))
    rows = rows[:n_reviewed]  # the rows the inspector reviewed (all of them when drawn at random)
    for row in rows:
        name = Path(row["path"]).name.replace("__", "/")
        row["review"] = "good" if name.split("/")[1] == "good" else "defective"
        row["path"] = str((dataset / name).resolve())  # the dataset's own file: test.py leaves it out afterwards
    with open(reviewed, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finetune.main(["-p", str(model), "--smoothing", "2", "--seed", str(seed), "--results-dir", results, "--finetune-split", str(split),
                   "--reviewed", str(reviewed), "--overwrite"])
    (test_dir,) = test_script.main(["-p", str(model), "--results-dir", results, "--overwrite"])
    after = verdicts(test_dir)
    same = sorted(set(before) & set(after))
    labels = [row["review"] for row in rows]
    return {"seed": seed, "before": rates([before[name] for name in same]), "after": rates([after[name] for name in same]),
            "reviewed": {"defective": labels.count("defective"), "good": labels.count("good")}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", default=str(ROOT.parent / "shared" / "datasets" / "magnetic_tile"))
    parser.add_argument("-n", "--reviewed", type=int, default=50, help="predicted images the inspector reviews")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--pick", choices=("sheet", "nearest", "random"), default="sheet", help="sheet: the first N rows of review.csv "
                        "after predicting every test image outside the finetuning subset; nearest: the N of them nearest the threshold; "
                        "random: predict.py on N of them drawn at random")
    parser.add_argument("--finetune-split", type=float, default=0.1, help="finetune.py's --finetune-split (the labelled share of test/)")
    args = parser.parse_args(argv)
    from autoencoder import cli

    cli.setup_logging(False)
    cli.import_tensorflow(False)
    runs = [one_seed(Path(args.dataset).resolve(), Path(tempfile.mkdtemp(prefix="bench_reviews-")), args.reviewed, seed, args.pick,
                     args.finetune_split)
            for seed in args.seeds]
    print(f"{'seed':>4} {'reviewed (def/good)':>20} {'images':>7} {'BA before':>10} {'BA after':>9} {'TPR before':>11} {'TPR after':>10} "
          f"{'TNR before':>11} {'TNR after':>10}")
    for run in runs:
        b, a, r = run["before"], run["after"], run["reviewed"]
        print(f"{run['seed']:>4} {r['defective']:>12}/{r['good']:<7} {b['images']:>7} {b['balanced_accuracy']:>10.3f} "
              f"{a['balanced_accuracy']:>9.3f} {b['tpr']:>11.3f} {a['tpr']:>10.3f} {b['tnr']:>11.3f} {a['tnr']:>10.3f}")
    return runs


if __name__ == "__main__":
    main()
