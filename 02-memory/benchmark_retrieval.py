"""Top-k cosine retrieval latency: the Numba kernel against NumPy brute force, measured in the same run.

The reference normalises both sides, forms the full (Q, N) score matrix with one BLAS product,
and selects with `argpartition` (then sorts the k selected), the usual NumPy idiom. The kernel
never forms that matrix. Figures are medians over repeats, after one warm-up call each.

    python 02-memory/benchmark_retrieval.py [--sizes 1000 10000 100000 1000000] [--queries 16]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from mlot.architecture.cli import documented_parser, positive_int
from mlot.memory.kernels import topk_cosine


def numpy_topk(queries: np.ndarray, keys: np.ndarray, k: int):
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    unit_keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    scores = unit_queries @ unit_keys.T  # (Q, N)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    indices = np.take_along_axis(top, order, axis=1)
    return indices, np.take_along_axis(scores, indices, axis=1)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[10**3, 10**4, 10**5, 10**6],
                        help="store sizes N, each at least k (default: %(default)s)")
    parser.add_argument("--dim", type=positive_int, default=64, help="key width r (default: %(default)s)")
    parser.add_argument("--k", type=positive_int, default=8, help="results per query (default: %(default)s)")
    parser.add_argument("--queries", type=positive_int, default=16, help="queries per call Q (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed calls per figure, the median is shown (default: %(default)s)")
    args = parser.parse_args(argv)
    if min(args.sizes) < args.k:
        parser.error(f"argument --sizes: every size must be >= k={args.k}, got {min(args.sizes)}")

    rng = np.random.default_rng(0)
    print(f"top-{args.k} cosine, r={args.dim}, Q={args.queries}; median of {args.repeats} calls")
    print(f"{'N':>9} {'numba ms':>10} {'numpy ms':>10} {'numpy/numba':>12}  same top-k")
    for n in args.sizes:
        keys = rng.standard_normal((n, args.dim)).astype(np.float32)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        kernel = median_seconds(lambda: topk_cosine(queries, keys, args.k), args.repeats)
        reference = median_seconds(lambda: numpy_topk(queries, keys, args.k), args.repeats)
        ours, theirs = topk_cosine(queries, keys, args.k), numpy_topk(queries, keys, args.k)
        same = np.array_equal(np.sort(ours[0], axis=1), np.sort(theirs[0], axis=1))
        print(f"{n:>9} {kernel * 1e3:>10.2f} {reference * 1e3:>10.2f} {reference / kernel:>12.2f}  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
