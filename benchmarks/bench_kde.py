"""Time the KDE scoring of processing.decision.density against a naive numpy loop and scikit-learn.

    python benchmarks/bench_kde.py                 # 1k, 10k, 100k training codes of length 28, 1,000 queries
    python benchmarks/bench_kde.py --quick         # 1k and 10k training codes, 300 queries
    python benchmarks/bench_kde.py --dim 343 --queries 500

Training codes come from a mixture of Gaussians (latent codes cluster); queries from the same
mixture, a tenth of them pushed far out (outliers: the images the detector must flag). All three
compute log( mean_i N(q; c_i, h^2 I) ) on the same data:

* ours: processing.decision.density.gaussian_kde_log_density (blocks of queries, one matrix product each);
* naive: one query at a time, broadcast differences and scipy's logsumexp (the reference);
* sklearn: KernelDensity(kernel="gaussian").score_samples (tree-based, default tolerances).

codes/s = queries scored per second (best of --repeats runs); ratio = reference time / ours;
max |diff| = largest difference from the naive log densities, in nats.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.neighbors import KernelDensity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processing.decision.density import gaussian_kde_log_density  # noqa: E402


def make_codes(n_train: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train (n_train, dim), queries (n_queries, dim)) float64 from a 10-component mixture."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (10, dim))
    train = centres[rng.integers(0, 10, n_train)] + rng.normal(size=(n_train, dim))
    queries = centres[rng.integers(0, 10, n_queries)] + rng.normal(size=(n_queries, dim))
    queries[: n_queries // 10] += rng.normal(0, 4, (n_queries // 10, dim))  # outliers
    return train, queries


def naive_log_density(train: np.ndarray, queries: np.ndarray, bandwidth: float) -> np.ndarray:
    """The reference: for each query, squared distances to every training code, then logsumexp."""
    n, dim = train.shape
    norm = np.log(n) + dim / 2 * np.log(2 * np.pi * bandwidth**2)
    out = np.empty(len(queries))
    for index, query in enumerate(queries):
        squared = np.sum((train - query) ** 2, axis=1)
        out[index] = logsumexp(-squared / (2 * bandwidth**2)) - norm
    return out


def best_time(func, repeats: int):
    result = func()  # warm-up (builds the tree for ours)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k and 10k training codes, 300 queries")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="numbers of training codes")
    parser.add_argument("--queries", type=int, default=1_000, help="codes scored per size")
    parser.add_argument("--dim", type=int, default=28, help="code length (28 = vggCAE's 2x2x7 code at 64 px)")
    parser.add_argument("--bandwidth", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.repeats = [1_000, 10_000], 300, 1

    print(f"KDE log density, code length {args.dim}, bandwidth {args.bandwidth}, {args.queries} query codes (10% outliers)")
    print(f"{'train codes':>11} | {'ours codes/s':>12} | {'naive codes/s':>13} {'ratio':>7} | {'sklearn codes/s':>15} {'ratio':>7} | "
          f"{'ours max|diff|':>14} {'sklearn max|diff|':>17}")
    for n_train in args.sizes:
        train, queries = make_codes(n_train, args.queries, args.dim)
        ours_s, ours = best_time(lambda: gaussian_kde_log_density(train, queries, args.bandwidth), args.repeats)
        naive_s, naive = best_time(lambda: naive_log_density(train, queries, args.bandwidth), args.repeats)
        kde = KernelDensity(kernel="gaussian", bandwidth=args.bandwidth).fit(train)
        sklearn_s, sklearn = best_time(lambda: kde.score_samples(queries), args.repeats)
        ours_diff = float(np.max(np.abs(ours - naive)))
        sklearn_diff = float(np.max(np.abs(sklearn - naive)))
        if not ours_diff < 1e-8 * max(1.0, float(np.max(np.abs(naive)))):
            raise SystemExit(f"ours differs from the naive log density by {ours_diff} at {n_train} training codes")
        n = args.queries
        print(f"{n_train:>11,} | {n / ours_s:>12,.0f} | {n / naive_s:>13,.0f} {naive_s / ours_s:>6.1f}x | "
              f"{n / sklearn_s:>15,.0f} {sklearn_s / ours_s:>6.1f}x | {ours_diff:>14.1e} {sklearn_diff:>17.1e}")


if __name__ == "__main__":
    main()
