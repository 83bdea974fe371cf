"""Peak memory of the default workflow against the size of the training set, and on tiled large images.

Runs the README's defaults (featureCAE statistics at 256 px, padim) as a user would, each script in
a fresh process, and prints its wall time and peak RSS:

- train.py and finetune.py on a dataset and on the same training images repeated `--repeats`
  times (file links, nothing copied), with the ratio of the peak RSS (the fitted statistics are of
  fixed size: the ratio should stay near 1);
- with `--tiled`: a generated KolektorSDD-like set (grey 500 x 1260 parts with thin defects) that
  train.py --tile 256, finetune.py and test.py handle tile by tile;
- with `--exports`: export.py of the 1x model's result in every format (wall time, peak RSS, file
  size); `--exports-of MODEL --results-dir DIR` measures only that, for a model already finetuned.

Example:
    python benchmarks/bench_memory.py -d ../shared/datasets/magnetic_tile --repeats 4 --tiled --exports
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs `argv` as its child and prints that child's peak RSS: every measure in a fresh process.
PEAK_OF = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def measure(argv: list[str], log: Path) -> dict:
    """Wall seconds and peak RSS (GiB) of one script run; its output goes to `log`."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-c", PEAK_OF, sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=handle, text=True)
    peak_kb, code = (int(value) for value in done.stdout.strip().splitlines()[-1].split()[1:])
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {code}); see {log}")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_gib": round(peak_kb / 2**20, 2)}


def repeated_view(dataset: Path, repeats: int, out: Path) -> Path:
    """`dataset` with its train/good images linked `repeats` times under new names; test/ and ground_truth/ linked."""
    view = out / f"{dataset.name}_x{repeats}"
    good = view / "train" / "good"
    good.mkdir(parents=True)
    for copy in range(repeats):
        for image in sorted((dataset / "train" / "good").iterdir()):
            os.symlink(image.resolve(), good / f"r{copy}_{image.name}")
    for name in ("test", "ground_truth"):
        if (dataset / name).is_dir():
            os.symlink((dataset / name).resolve(), view / name)
    return view


def model_folder(models: Path) -> Path:
    (info,) = models.rglob("info.json")
    return info.parent


def kolektor_like(out: Path, n_train: int, n_good: int, n_defect: int, seed: int) -> Path:
    """Grey 500 x 1260 images with thin defects: the generated high-resolution set, resized to a strip."""
    import cv2

    from processing.data.synthetic_datasets import make_highres_dataset

    square = make_highres_dataset(out / "square", image_size=1024, n_train=n_train, n_test_good=n_good, n_test_defect=n_defect,
                                  defect_size_range=(8, 40), seed=seed)
    strip = out / "kolektor_like"
    for path in sorted(square.rglob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        mask = path.relative_to(square).parts[0] == "ground_truth"
        target = strip / path.relative_to(square)
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.resize(image, (1260, 500), interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_AREA))
    return strip


def export_rows(folder: Path, results: Path, work: Path) -> dict:
    """export.py of the model's (only) finetuning result in every format, each in a fresh process."""
    rows = {}
    for fmt, suffix in (("savedmodel", ""), ("tflite", ".tflite"), ("onnx", ".onnx")):
        out = work / "exports" / f"default{suffix}"
        row = measure(["export.py", "-p", str(folder), "--format", fmt, "-o", str(out), "--results-dir", str(results), "--overwrite"],
                      work / f"export_{fmt}.log")
        size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) if out.is_dir() else out.stat().st_size
        rows[f"export {fmt}"] = row | {"size_mb": round(size / 1e6, 1)}
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", default=str(ROOT.parent / "shared" / "datasets" / "magnetic_tile"))
    parser.add_argument("--repeats", type=int, default=4, help="times the training images are repeated (the 1x run is the reference)")
    parser.add_argument("--tiled", action="store_true", help="also the tiled KolektorSDD-like set (train --tile 256, finetune, test)")
    parser.add_argument("--exports", action="store_true", help="also export the 1x model's result in every format")
    parser.add_argument("--exports-of", default=None, metavar="MODEL", help="only export this finetuned model in every format")
    parser.add_argument("--results-dir", default="results", help="--exports-of: where its finetuning result is")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_memory-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = Path(args.dataset).resolve()
    rows = {}
    if args.exports_of:
        rows = export_rows(Path(args.exports_of), Path(args.results_dir), work)
        print_rows(rows)
        return rows
    for repeats in (1, args.repeats):
        data = dataset if repeats == 1 else repeated_view(dataset, repeats, work)
        models, results = work / f"models_x{repeats}", work / f"results_x{repeats}"
        rows[f"train x{repeats}"] = measure(["train.py", "-d", str(data), "--output-dir", str(models)], work / f"train_x{repeats}.log")
        folder = model_folder(models)
        rows[f"finetune x{repeats}"] = measure(["finetune.py", "-p", str(folder), "--results-dir", str(results)],
                                               work / f"finetune_x{repeats}.log")
        rows[f"train x{repeats}"]["training_images"] = json.loads((folder / "info.json").read_text())["dataset"]["n_train"]
        if repeats == 1 and args.exports:
            rows |= export_rows(folder, results, work)
    if args.tiled:
        data = kolektor_like(work, n_train=200, n_good=50, n_defect=28, seed=3)
        models, results = work / "models_tiled", work / "results_tiled"
        rows["train --tile 256"] = measure(["train.py", "-d", str(data), "--tile", "256", "--output-dir", str(models)],
                                           work / "train_tiled.log")
        folder = model_folder(models)
        rows["finetune tiled"] = measure(["finetune.py", "-p", str(folder), "--results-dir", str(results)], work / "finetune_tiled.log")
        rows["test tiled"] = measure(["test.py", "-p", str(folder), "--results-dir", str(results)], work / "test_tiled.log")
    print_rows(rows)
    for step in ("train", "finetune"):
        ratio = rows[f"{step} x{args.repeats}"]["peak_gib"] / rows[f"{step} x1"]["peak_gib"]
        print(f"{step}: peak RSS at {args.repeats}x the training images / at 1x = {ratio:.2f}")
    print(f"(scratch: {work})")
    return rows


def print_rows(rows: dict) -> None:
    print(f"{'run':<20} {'wall s':>8} {'peak GiB':>9} {'size MB':>8}")
    for name, row in rows.items():
        size = f"{row['size_mb']:>8.1f}" if "size_mb" in row else ""
        print(f"{name:<20} {row['seconds']:>8.1f} {row['peak_gib']:>9.2f} {size}")


if __name__ == "__main__":
    main()
