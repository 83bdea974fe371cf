"""Time the memory bank of processing.maps.knn: exact nearest-neighbour search and greedy coreset.

    python benchmarks/bench_memory_bank.py           # bank 16,384 x 232, 16x16x200 = 51,200 queries; coreset 100k -> 10k
    python benchmarks/bench_memory_bank.py --quick   # bank 4,096, 12,800 queries; coreset 20k -> 2k

Vectors come from a mixture of Gaussians (patch features cluster), made nonnegative like ReLU
features; a tenth of the queries are pushed away (anomalous patches). Every method is exact:

* ours: MemoryBank.nearest, blocks of queries, one float32 matrix product each, argmin, then the
  distance to the chosen neighbour recomputed directly;
* sklearn brute / kd_tree / auto: NearestNeighbors(n_neighbors=1, algorithm=...).kneighbors.
  The slow ones run on the first --tree-queries queries only; rates are per query.

queries/s = queries searched per second (one timed run after a small warm-up); ratio = the
method's time per query / ours (> 1: ours faster), measured in this run. max rel err = largest
|d - d_exact| / d_exact against float64 scipy cdist on the first 500 queries; same NN = share of
queries whose neighbour index equals ours. Coreset: greedy_coreset (PatchCore k-center greedy on a
128-dim random projection) against random_subsample of the same size, with their covering radius
(the largest distance from any input vector to its nearest chosen vector, computed with ours).
The load average is printed: other processes on the machine slow every row alike, roughly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing.maps.knn import MemoryBank, greedy_coreset, random_subsample  # noqa: E402


def make_vectors(count: int, dim: int, seed: int, outliers: float = 0.0) -> np.ndarray:
    """(count, dim) float32 nonnegative vectors from a 50-component mixture; `outliers` of them shifted."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).gamma(1.0, 1.0, (50, dim))  # the same mixture for every call
    vectors = centres[rng.integers(0, 50, count)] + rng.normal(0.0, 0.5, (count, dim))
    shifted = int(outliers * count)
    vectors[:shifted] += rng.normal(0.0, 1.0, (shifted, dim))
    return np.maximum(vectors, 0.0).astype(np.float32)


def timed(func):
    """(seconds of one run, result)."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def sklearn_search(bank: np.ndarray, algorithm: str):
    """A function queries -> (distances, indices) with NearestNeighbors(algorithm) fit on `bank` (the fit is not timed)."""
    model = NearestNeighbors(n_neighbors=1, algorithm=algorithm).fit(bank)

    def search(queries):
        distances, indices = model.kneighbors(queries)
        return distances[:, 0], indices[:, 0]

    search.method = model._fit_method  # what "auto" chose
    return search


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=int, default=16_384, help="bank vectors")
    parser.add_argument("--dim", type=int, default=232, help="vector length (232 = a typical reduced PatchCore feature)")
    parser.add_argument("--queries", type=int, default=16 * 16 * 200, help="query vectors (16x16 grid x 200 images)")
    parser.add_argument("--tree-queries", type=int, default=500, help="queries for the slow sklearn algorithms")
    parser.add_argument("--coreset-from", type=int, default=100_000, help="vectors to select the coreset from")
    parser.add_argument("--coreset-size", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="bank 4,096, 12,800 queries, coreset 20k -> 2k")
    args = parser.parse_args(argv)
    if args.quick:
        args.bank, args.queries, args.tree_queries, args.coreset_from, args.coreset_size = 4_096, 12_800, 200, 20_000, 2_000

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    bank = make_vectors(args.bank, args.dim, seed=0)
    queries = make_vectors(args.queries, args.dim, seed=1, outliers=0.1)
    exact = cdist(queries[:500].astype(np.float64), bank.astype(np.float64)).min(axis=1)
    ours = MemoryBank(bank).nearest
    ours(queries[:1000])  # warm-up

    print(f"\nexact nearest neighbour: bank {args.bank:,} x {args.dim}, {args.queries:,} query vectors")
    print(f"{'method':>19} | {'queries':>7} | {'seconds':>7} | {'queries/s':>9} | {'ratio':>6} | {'max rel err':>11} | {'same NN':>7}")
    ours_s, (ours_d, ours_i) = timed(lambda: ours(queries))
    ours_rate = args.queries / ours_s
    rows = [("ours (numpy)", args.queries, ours_s, ours_d, ours_i)]
    for algorithm in ("brute", "kd_tree", "auto"):
        count = args.queries if algorithm == "brute" else args.tree_queries
        search = sklearn_search(bank, algorithm)
        search(queries[:50])  # warm-up
        seconds, (distances, indices) = timed(lambda: search(queries[:count]))
        name = f"sklearn {algorithm}" + (f"->{search.method}" if algorithm == "auto" else "")
        rows.append((name, count, seconds, distances, indices))
    for name, count, seconds, distances, indices in rows:
        checked = min(count, 500)
        error = np.max(np.abs(distances[:checked] - exact[:checked]) / exact[:checked])
        same = np.mean(indices == ours_i[:count])
        rate = count / seconds
        print(f"{name:>19} | {count:>7,} | {seconds:>7.2f} | {rate:>9,.0f} | {ours_rate / rate:>5.1f}x | {error:>11.1e} | {same:>7.1%}")

    vectors = make_vectors(args.coreset_from, args.dim, seed=2, outliers=0.01)
    print(f"\ngreedy coreset: {args.coreset_from:,} x {args.dim} -> {args.coreset_size:,} (128-dim projection)")
    print(f"{'method':>19} | {'seconds':>7} | {'covering radius':>15}")
    for name, select in (("greedy_coreset", greedy_coreset), ("random_subsample", random_subsample)):
        seconds, indices = timed(lambda: select(vectors, args.coreset_size, seed=0))
        radius = float(MemoryBank(vectors[indices]).nearest(vectors)[0].max())
        print(f"{name:>19} | {seconds:>7.2f} | {radius:>15.2f}")


if __name__ == "__main__":
    main()
