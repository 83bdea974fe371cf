"""Time processing.maps.resmaps.ssim_resmaps against a loop of skimage's structural_similarity.

    python benchmarks/bench_resmaps.py              # 100 images of 256x256
    python benchmarks/bench_resmaps.py --quick      # 20 images of 128x128
    python benchmarks/bench_resmaps.py --n 200 --size 512 --repeats 5

Both compute the same float64 SSIM residual maps (1 - local SSIM, Gaussian window sigma 1.5,
data_range 1) on the same grayscale images: reconstruction-like pairs, an input with smooth
structure and noise and a blurred, slightly shifted copy as the "prediction". Each is timed
`--repeats` times and the best wall time is kept; the ratio is reference / ours, measured in
this run. ssim_resmaps is timed with one thread and with its default (all usable CPUs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing.maps.resmaps import ssim_resmaps  # noqa: E402


def make_pairs(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, predictions), each (count, size, size) float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((count, size, size)), sigma=(0, 4, 4))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    inputs = np.clip(smooth + 0.05 * rng.standard_normal(smooth.shape), 0.0, 1.0)
    predictions = ndimage.gaussian_filter(np.roll(inputs, 1, axis=2), sigma=(0, 1, 1))
    return inputs, predictions


def skimage_resmaps(inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The reference: one structural_similarity(full=True) call per image."""
    maps = np.empty_like(inputs)
    for index, (image, prediction) in enumerate(zip(inputs, predictions)):
        _, ssim_map = structural_similarity(
            image,
            prediction,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            full=True,
        )
        maps[index] = 1.0 - ssim_map
    return maps


def best_time(func, repeats: int):
    """(best wall time in seconds over `repeats` runs after one warm-up, last result)."""
    result = func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (default 3)")
    parser.add_argument("--quick", action="store_true", help="20 images of 128x128, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.size, args.repeats = 20, 128, 2
    if args.n < 1 or args.size < 11 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1 and --size >= 11")

    inputs, predictions = make_pairs(args.n, args.size)
    print(f"{args.n} images of {args.size}x{args.size}, float64, best of {args.repeats}, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} CPUs")

    reference_s, reference = best_time(lambda: skimage_resmaps(inputs, predictions), args.repeats)
    print(f"skimage structural_similarity loop : {reference_s * 1e3:9.1f} ms")
    for label, workers in (("1 thread", 1), ("default threads", None)):
        ours_s, ours = best_time(
            lambda: ssim_resmaps(inputs, predictions, workers=workers), args.repeats
        )
        difference = np.abs(ours - reference).max()
        print(
            f"ssim_resmaps ({label:15s})     : {ours_s * 1e3:9.1f} ms   "
            f"{reference_s / ours_s:5.2f}x faster   max |diff| {difference:.2e}"
        )


if __name__ == "__main__":
    main()
