"""Benchmark of the finetuning (min_area, threshold) search: one pass per map vs relabelling.

Builds smooth random residual maps (validation maps without defects, finetuning maps of
which half carry an added bright blob), times the whole search with the one-pass area
curves (``processing.decision.thresholds.largest_area_curves``) and with the naive reference that
relabels every map at every threshold (``largest_area_curves_naive``), checks that both
give the same curves and the same best pair, and prints the times and their ratio; then times the
original decision rule on the same maps against the smoothed one (the default, with its bootstrap).

The naive search is slow (one labelling per map and threshold), so by default it runs on
a subset of the maps (both searches are compared on that subset) and its time is scaled
per map to the full set; the script says so when it does.

    python benchmarks/bench_finetune.py            # 100 + 40 maps of 256x256
    python benchmarks/bench_finetune.py --quick    # 20 + 10 maps of 64x64, naive on all
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing.decision.thresholds import DEFAULT_FLOAT_STEPS, search_min_area_threshold  # noqa: E402


def make_maps(rng, n_maps, size, n_defective, dtype):
    """Smooth random maps in [0, 0.4]; the last ``n_defective`` get a bright gaussian blob.

    Returns (n_maps, size, size) maps (float64, or uint8 scaled to 0..255) and the labels.
    """
    maps = gaussian_filter(rng.random((n_maps, size, size)), sigma=(0, 3, 3))
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    maps = 0.4 * (maps - low) / (high - low)
    labels = np.zeros(n_maps, dtype=bool)
    labels[n_maps - n_defective :] = True
    rows, cols = np.mgrid[:size, :size]
    radius = max(2.0, size / 40)
    for index in np.flatnonzero(labels):
        row, col = rng.uniform(0.25 * size, 0.75 * size, 2)
        maps[index] += 0.6 * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * radius**2))
    if dtype == "uint8":
        maps = np.round(maps / 1.0 * 255).clip(0, 255).astype(np.uint8)
    return maps, labels


def timed_search(val, finetune, labels, args, naive, rule="smoothed"):
    started = time.perf_counter()
    result = search_min_area_threshold(
        val, finetune, labels, args.dtype, n_steps=args.n_steps, naive=naive, progress=False, rule=rule
    )
    return result, time.perf_counter() - started


def same_search(fast, naive):
    """True when both searches give identical curves and the same best pair."""
    return (
        np.array_equal(fast.val_curves, naive.val_curves)
        and np.array_equal(fast.finetune_curves, naive.finetune_curves)
        and (fast.best_min_area, fast.best_threshold, fast.best_score)
        == (naive.best_min_area, naive.best_threshold, naive.best_score)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 + 10 maps of 64x64, naive search on all maps")
    parser.add_argument("--n-val", type=int, default=100, help="defect-free validation maps")
    parser.add_argument("--n-finetune", type=int, default=40, help="finetuning maps (half of them defective)")
    parser.add_argument("--size", type=int, default=256, help="map height and width in pixels")
    parser.add_argument("--dtype", choices=["float64", "uint8"], default="float64")
    parser.add_argument("--n-steps", type=int, default=DEFAULT_FLOAT_STEPS, help="grid size for float maps")
    parser.add_argument(
        "--naive-maps", type=int, default=16, help="maps in the naive subset (half validation); 0 = all maps"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the one-pass search (best time kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.n_val, args.n_finetune, args.size, args.naive_maps = 20, 10, 64, 0
    if min(args.n_val, args.n_finetune, args.size) < 1 or args.n_finetune < 2 or args.naive_maps < 0:
        parser.error("--n-val, --size must be >= 1, --n-finetune >= 2 and --naive-maps >= 0")

    rng = np.random.default_rng(args.seed)
    val, _ = make_maps(rng, args.n_val, args.size, 0, args.dtype)
    finetune, labels = make_maps(rng, args.n_finetune, args.size, args.n_finetune // 2, args.dtype)
    n_maps = args.n_val + args.n_finetune
    print(
        f"{args.n_val} validation + {args.n_finetune} finetuning maps ({labels.sum()} defective), "
        f"{args.size}x{args.size} {args.dtype}, seed {args.seed}"
    )

    fast_seconds = []
    for _ in range(max(1, args.repeats)):
        fast, seconds = timed_search(val, finetune, labels, args, naive=False)
        fast_seconds.append(seconds)
    fast_time = min(fast_seconds)
    print(f"grid: {len(fast.thresholds)} thresholds, {len(fast.min_areas)} min_areas")
    print(
        f"one-pass search: {fast_time:.3f} s ({1e3 * fast_time / n_maps:.2f} ms per map, best of {len(fast_seconds)}); "
        f"best pair min_area={fast.best_min_area} threshold={fast.best_threshold:.6g} score={fast.best_score:.3f}"
    )

    if args.naive_maps == 0 or args.naive_maps >= n_maps:
        naive, naive_time = timed_search(val, finetune, labels, args, naive=True)
        agree = same_search(fast, naive)
        print(f"naive search on all {n_maps} maps: {naive_time:.2f} s")
    else:
        # Both searches on the same subset (both classes of finetuning maps kept).
        n_sub_val = max(1, args.naive_maps // 2)
        n_sub_ft = max(2, args.naive_maps - n_sub_val)
        keep = np.r_[np.arange(n_sub_ft // 2), args.n_finetune - 1 - np.arange(n_sub_ft - n_sub_ft // 2)]
        sub_val, sub_ft, sub_labels = val[:n_sub_val], finetune[keep], labels[keep]
        fast_sub, _ = timed_search(sub_val, sub_ft, sub_labels, args, naive=False)
        naive_sub, naive_sub_time = timed_search(sub_val, sub_ft, sub_labels, args, naive=True)
        agree = same_search(fast_sub, naive_sub)
        n_sub = len(sub_val) + len(sub_ft)
        naive_time = naive_sub_time / n_sub * n_maps
        print(
            f"naive search timed on a subset of {n_sub} maps ({naive_sub_time:.2f} s, "
            f"{1e3 * naive_sub_time / n_sub:.1f} ms per map) and scaled per map to {n_maps} maps: {naive_time:.1f} s"
        )
    # The rules on the same maps: the smoothed rule's choice and its 200 bootstrap resamples against
    # the original rule's lookups (both include the one-pass curves).
    original_seconds = [timed_search(val, finetune, labels, args, naive=False, rule="original")[1] for _ in range(max(1, args.repeats))]
    original_time = min(original_seconds)
    print(f"the original rule on the same maps: {original_time:.3f} s; the smoothed rule (the one-pass search above, with its "
          f"resamples) takes {fast_time / original_time:.2f}x that, +{fast_time - original_time:.2f} s")
    print(f"same curves and best pair: {agree}")
    print(f"speed-up of the one-pass search over the naive one: {naive_time / fast_time:.0f}x")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
