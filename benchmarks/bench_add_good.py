"""Adding good images to a padim model: time against a full fit, in the same run (issue 29).

A copy of the dataset (links) holds back `--held-back` of its train/good images; the README's
default model (featureCAE statistics, 256 px, padim with --smoothing 2) is trained and finetuned on
the rest. Then, for each N of `--added`, the held-back images' first N are added to the fitted
statistics (MapModel.with_training_images: one backbone pass over the N images, continuing the kept
sums) and, for reference, the statistics are fitted again on every training image plus the N
(MapModel.fit, what a retraining costs). The script prints both times, their ratio, the largest
differences between the two Gaussians, and, once, the whole add_good.py run (the decision chosen
again included) with its peak memory.

Example:
    python benchmarks/bench_add_good.py -d ../shared/datasets/magnetic_tile --added 25 50 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def held_back_copy(source: Path, target: Path, held_back: int) -> list[Path]:
    """A linked copy of the dataset without the last `held_back` train/good images; return those."""
    from processing.data.images import list_images

    good = list_images(source / "train" / "good")
    kept, back = good[:-held_back], good[-held_back:]
    (target / "train" / "good").mkdir(parents=True)
    for path in kept:
        (target / "train" / "good" / path.name).symlink_to(path.resolve())
    for name in ("test", "ground_truth"):
        if (source / name).is_dir():
            (target / name).symlink_to((source / name).resolve())
    return [path.resolve() for path in back]


def peak_run(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS GiB, last line of stderr) of a script run in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    return time.perf_counter() - started, int(lines[-1]) / 2**20, lines[-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--dataset", type=Path, required=True)
    parser.add_argument("--held-back", type=int, default=100, help="train/good images kept out of training, the ones added")
    parser.add_argument("--added", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--script-added", type=int, default=50, help="N of the one add_good.py run timed as a whole")
    args = parser.parse_args()

    from autoencoder import bundle, cli

    cli.setup_logging(False)
    cli.import_tensorflow()
    import finetune
    import train
    from processing.data.splits import model_dataset, training_files, validation_files
    from processing.maps.map_model import MapModel
    from processing.workflow.results import ResultsTree, load_detector

    work = Path(tempfile.mkdtemp(prefix="bench_add_good-"))
    data = work / args.dataset.name
    new = held_back_copy(args.dataset, data, max(max(args.added), args.script_added))
    folder = train.main(["-d", str(data), "--output-dir", str(work / "models")])
    result = finetune.main(["-p", str(folder), "--smoothing", "2", "--results-dir", str(work / "results")])
    model = bundle.load_bundle(folder)
    detector = load_detector(model, result)
    layout = model_dataset(model.info, require_defects=False)
    train_files, val_files = training_files(layout, model.info), validation_files(layout, model.info)
    print(f"{args.dataset.name}: {len(train_files)} training images, default featureCAE at {model.info.model.image_size} px, padim")
    print(f"{'added':>6} {'add (s)':>8} {'full fit (s)':>12} {'ratio':>6} {'mean diff':>10} {'inverse diff (rel. to max)':>27}")
    rows = []
    for n in args.added:
        started = time.perf_counter()
        grown = detector.maps.with_training_images(result, new[:n], seed=42)
        added = time.perf_counter() - started
        started = time.perf_counter()
        full = MapModel.fit(model, "padim", "float64", training_files=train_files + new[:n], validation_files=val_files, seed=42)
        refit = time.perf_counter() - started
        ours, theirs = grown.states["padim"], full.states["padim"]
        mean_diff = float(np.abs(ours.mean - theirs.mean).max())
        inverse_diff = float(np.abs(ours.inv_covariance - theirs.inv_covariance).max() / np.abs(theirs.inv_covariance).max())
        print(f"{n:>6} {added:>8.1f} {refit:>12.1f} {added / refit:>6.3f} {mean_diff:>10.2e} {inverse_diff:>27.2e}")
        rows.append({"added": n, "add_seconds": added, "full_fit_seconds": refit, "mean_diff": mean_diff, "inverse_diff": inverse_diff})
    extra = work / "new_good"
    extra.mkdir()
    for path in new[: args.script_added]:
        (extra / path.name).symlink_to(path)
    seconds, peak, _ = peak_run(["add_good.py", "-p", str(folder), "-i", str(extra), "--results-dir", str(work / "results")])
    grown_folder = max((path for path in folder.parent.iterdir() if path != folder), key=lambda path: path.name)
    record = json.loads(next((ResultsTree.of(bundle.read_info(grown_folder), grown_folder, work / "results").finetuning_root)
                             .glob("*/finetuning_result.json")).read_text())
    print(f"add_good.py with {args.script_added} images: {seconds:.1f} s in all, peak {peak:.2f} GiB (statistics "
          f"{record['grown_from']['seconds']:.1f} s, the decision chosen again in the rest)")
    script = {"added": args.script_added, "seconds": seconds, "peak_gib": peak}
    print(json.dumps({"dataset": str(args.dataset), "rows": rows, "script": script}))


if __name__ == "__main__":
    main()
