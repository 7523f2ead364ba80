"""Top-k cosine retrieval latency: the kernel beside what the hardware allows, measured in the same run.

Beside the kernel (mlot.memory.kernels.topk_cosine), on the same keys and the same threads:
- read: one pass over the keys (each chunk summed by the same workers): the memory-bandwidth
  bound of any exact search;
- GEMM: the (N, Q) float32 products in one BLAS call, nothing selected: the arithmetic bound;
- NumPy: the usual brute force (normalise both sides, the full score matrix, `argpartition`,
  then sort the k selected), whose top-k the kernel's must equal.
Figures are medians over repeats, after one warm-up call each.

    python 02-memory/benchmark_retrieval.py [--sizes 1000 10000 100000 1000000] [--queries 16] [--load 2]

`--load N` runs N busy single-threaded processes (01-architecture/busy_load.py) throughout.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from mlot.architecture.busy_load import busy_processes
from mlot.architecture.cli import documented_parser, non_negative_int, positive_int
from mlot.architecture.threads import blas_threads, free_cores
from mlot.memory.kernels import KEYS_PER_CHUNK, topk_cosine


@njit(cache=True, nogil=True, fastmath=True)
def _chunk_sum(keys, first, stop):
    total = np.float32(0.0)
    for row in range(first, stop):
        for d in range(keys.shape[1]):
            total += keys[row, d]
    return total


def read_pass(keys: np.ndarray, workers: int, pool: ThreadPoolExecutor) -> float:
    """Every key read once, chunk by chunk, the chunks shared among the workers as the kernel shares them."""
    def read(worker: int) -> float:
        return sum(_chunk_sum(keys, first, min(first + KEYS_PER_CHUNK, len(keys)))
                   for first in range(worker * KEYS_PER_CHUNK, len(keys), workers * KEYS_PER_CHUNK))
    return sum(pool.map(read, range(workers))) if workers > 1 else read(0)


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
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads for every figure (default: the free cores, %(default)s meaning now)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed calls per figure, the median is shown (default: %(default)s)")
    parser.add_argument("--load", type=non_negative_int, default=0,
                        help="busy single-threaded processes running meanwhile (default: %(default)s)")
    args = parser.parse_args(argv)
    if min(args.sizes) < args.k:
        parser.error(f"argument --sizes: every size must be >= k={args.k}, got {min(args.sizes)}")
    with busy_processes(args.load):
        return run(args)


def run(args) -> int:
    time.sleep(1.0 if args.load else 0.0)  # the busy processes start running
    workers = args.workers or free_cores()
    pool = ThreadPoolExecutor(max_workers=workers)
    rng = np.random.default_rng(0)
    print(f"top-{args.k} cosine, r={args.dim}, Q={args.queries}, {workers} thread(s), load {args.load}; "
          f"median of {args.repeats} calls")
    print(f"{'N':>9} {'kernel ms':>10} {'read ms':>9} {'GEMM ms':>9} {'numpy ms':>10} {'kernel/read':>12} "
          f"{'numpy/kernel':>13}  same top-k")
    for n in args.sizes:
        keys = rng.standard_normal((n, args.dim)).astype(np.float32)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        kernel = median_seconds(lambda: topk_cosine(queries, keys, args.k, workers=workers), args.repeats)
        read = median_seconds(lambda: read_pass(keys, workers, pool), args.repeats)
        with blas_threads(workers):
            gemm = median_seconds(lambda: keys @ queries.T, args.repeats)
            reference = median_seconds(lambda: numpy_topk(queries, keys, args.k), args.repeats)
            theirs = numpy_topk(queries, keys, args.k)
        ours = topk_cosine(queries, keys, args.k, workers=workers)
        same = np.array_equal(np.sort(ours[0], axis=1), np.sort(theirs[0], axis=1))
        print(f"{n:>9} {kernel * 1e3:>10.2f} {read * 1e3:>9.2f} {gemm * 1e3:>9.2f} {reference * 1e3:>10.2f} "
              f"{kernel / read:>12.2f} {reference / kernel:>13.2f}  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
