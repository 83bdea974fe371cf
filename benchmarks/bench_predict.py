"""Benchmark of predict.py: end-to-end images/s against the model's forward pass alone, and peak
memory at 1,000 vs 10,000 images.

What is used (generated here, nothing read from ../shared): the demo brick dataset at 64 px, an
``mvtecCAE`` trained with the L2 loss for 2 epochs (grayscale, 64 px), finetuned twice: with the
defaults (L2 maps, the ``component`` image score, min_area + threshold) and with ``--image-score
max`` (the same decision; the score is the map's maximum instead of the highest level at which a
component of min_area survives, which a per-image merge tree in Python computes). The images predicted are 64x64 PNG files:
copies (hard links) of the demo test and training images under distinct names.

1. Throughput, in one process, on the same ``--images`` files (default 1,000), after a warm-up:
   - the forward pass alone: the images already decoded in memory, ``model.predict_on_batch`` on
     batches of ``--batch`` (as processing/maps/inference.py runs it);
   - predict end to end: ``processing.workflow.predict.predict`` (reading and decoding the
     files, the model, the maps, the decision, masks at the original size, the CSV appended per
     batch) -- the streaming loop's rate (``runs[-1].images_per_second`` in predict_settings.json),
     and the whole call (model loading, report with its gallery) for reference.
   Each is timed twice and the faster run kept. The ratio end-to-end / forward is printed for both
   finetuning results (target >= 0.7x).
2. Peak RSS: ``python predict.py`` as a subprocess on 1,000 and on 10,000 images (``os.wait4``
   gives each child's own ``ru_maxrss``).

    python benchmarks/bench_predict.py             # 1,000 images for the rate, 1k vs 10k for memory (a few minutes on 2 cores)
    python benchmarks/bench_predict.py --quick     # 200 images, 200 vs 1,000 for memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

SIZE = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images for the throughput comparison")
    parser.add_argument(
        "--memory", type=int, nargs=2, default=[1000, 10000], metavar=("SMALL", "LARGE"), help="image counts of the two memory runs"
    )
    parser.add_argument("--batch", type=int, default=16, help="batch size of both paths")
    parser.add_argument("--quick", action="store_true", help="200 images, memory at 200 vs 1000")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed at the end)")
    return parser.parse_args(argv)


def setup(work: Path) -> Path:
    """Demo dataset, a trained and finetuned 64 px model; returns the model folder."""
    import finetune
    import train
    from processing.data.demo import make_demo_dataset

    make_demo_dataset(work / "brick", image_size=SIZE, n_train=40, n_test_good=10, n_test_defect=6, texture="brick", seed=0)
    folder = train.main(
        [
            "-d",
            str(work / "brick"),
            "-a",
            "mvtecCAE",
            "-l",
            "l2",
            "-b",
            "8",
            "--image-size",
            str(SIZE),
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--output-dir",
            str(work / "models"),
        ]
    )
    finetune.main(["-p", str(folder), "--results-dir", str(work / "results")])
    finetune.main(["-p", str(folder), "--image-score", "max", "--results-dir", str(work / "results_max")])
    return folder


def image_folder(work: Path, count: int) -> Path:
    """`count` PNG files (hard links to the demo images, distinct names) in 100-file sub-folders."""
    folder = work / f"images_{count}"
    if folder.is_dir():
        return folder
    pool = sorted((work / "brick" / "test").rglob("*.png")) + sorted((work / "brick" / "train" / "good").glob("*.png"))
    for index in range(count):
        target = folder / f"{index // 100:04d}" / f"{index:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(pool[index % len(pool)], target)
        except OSError:
            shutil.copyfile(pool[index % len(pool)], target)
    return folder


def throughput(work: Path, folder: Path, images: Path, batch: int) -> dict:
    import numpy as np

    from autoencoder import bundle
    from processing.data.images import load_images
    from processing.data.inputs import collect_images
    from processing.workflow.predict import PredictConfig, predict

    files = collect_images([str(images)])
    model = bundle.load_bundle(folder).model
    decoded = load_images(files, "grayscale", SIZE)

    def forward() -> float:
        started = time.perf_counter()
        for start in range(0, len(decoded), batch):
            chunk = decoded[start : start + batch]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            np.asarray(model.predict_on_batch(chunk))
        return time.perf_counter() - started

    def end_to_end(name: str, results: str = "results") -> tuple[float, float]:
        config = PredictConfig(
            path=str(folder),
            inputs=[str(images)],
            output=str(work / name),
            batch_size=batch,
            results_root=str(work / results),
            overwrite=True,
        )
        started = time.perf_counter()
        summary = predict(config)
        return summary.settings["runs"][-1]["images_per_second"], len(files) / (time.perf_counter() - started)

    forward()  # warm-up: tracing, thread pools
    end_to_end("warmup")
    forward_s = min(forward() for _ in range(2))
    # Best of two runs each, like the forward pass (the machine is shared; each predict() call
    # loads the model again, and its first batch traces the graph).
    loop_rate, call_rate = max(end_to_end("predictions") for _ in range(2))
    max_loop_rate, max_call_rate = max(end_to_end("predictions_max", "results_max") for _ in range(2))
    forward_rate = len(files) / forward_s
    return {
        "images": len(files),
        "forward_img_s": forward_rate,
        "predict_loop_img_s": loop_rate,
        "predict_call_img_s": call_rate,
        "ratio": loop_rate / forward_rate,
        "ratio_call": call_rate / forward_rate,
        "max_loop_img_s": max_loop_rate,
        "max_call_img_s": max_call_rate,
        "ratio_max": max_loop_rate / forward_rate,
        "ratio_max_call": max_call_rate / forward_rate,
    }


def peak_rss(work: Path, folder: Path, images: Path) -> tuple[int, float]:
    """(peak RSS in MiB, seconds) of `python predict.py` on `images`, in its own process."""
    out = work / f"out_{images.name}"
    argv = [
        sys.executable,
        str(ROOT / "predict.py"),
        "-p",
        str(folder),
        "-i",
        str(images),
        "-o",
        str(out),
        "--results-dir",
        str(work / "results"),
        "--overwrite",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"predict.py failed on {images}: {process.stderr.read()[-2000:]}")
    return usage.ru_maxrss // 1024, seconds  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.images, args.memory = 200, [200, 1000]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from autoencoder import cli

        cli.setup_logging(False)
        import logging

        logging.getLogger().setLevel(logging.WARNING)
        started = time.perf_counter()
        folder = setup(work)
        print(f"model: {folder} (mvtecCAE, L2, {SIZE} px, 2 epochs; setup {time.perf_counter() - started:.0f} s)")
        rates = throughput(work, folder, image_folder(work, args.images), args.batch)
        print(f"forward pass alone:    {rates['forward_img_s']:8.1f} images/s ({rates['images']} images, batch {args.batch})")
        print(
            f"predict, streaming:    {rates['predict_loop_img_s']:8.1f} images/s (read, model, maps, decision, masks, CSV; component score)"
        )
        print(f"predict, whole call:   {rates['predict_call_img_s']:8.1f} images/s (+ model loading, report and its gallery)")
        print(f"predict, max score:    {rates['max_loop_img_s']:8.1f} images/s streaming, {rates['max_call_img_s']:.1f} whole call")
        memory = {}
        for count in args.memory:
            memory[count] = peak_rss(work, folder, image_folder(work, count))
            print(f"peak RSS, {count:>6} images: {memory[count][0]:5d} MiB (python predict.py, {memory[count][1]:.0f} s)")
        small, large = args.memory
        growth = memory[large][0] / memory[small][0]
        print(
            f"ratio predict/forward: {rates['ratio']:.2f}x component score, {rates['ratio_max']:.2f}x max score (target >= 0.7x; "
            f"whole call {rates['ratio_call']:.2f}x, {rates['ratio_max_call']:.2f}x); "
            f"peak RSS {large} vs {small} images: {growth:.2f}x"
        )
        (work / "bench_predict.json").write_text(
            json.dumps({"rates": rates, "memory_mib": {str(k): v[0] for k, v in memory.items()}}, indent=2)
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
