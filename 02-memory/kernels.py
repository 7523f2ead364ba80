"""Numba kernels of the memory stores: exact top-k cosine retrieval and the FIFO cache append.

Retrieval must equal a brute-force ranking exactly, so its rules are fixed here once:
- cosine(q, k) = dot(q, k) / (|q| |k|), dot and norms accumulated in float64 in index order,
  and 0 when |q| |k| == 0 (a zero vector is similar to nothing);
- the score is rounded to float32 *before* ranking, so that the returned scores explain the
  order: descending score, equal scores by ascending key index;
- only rows with valid[i] take part; k' = min(k, number of valid rows) results per query;
- a NaN similarity (a NaN in a vector) counts as -inf: it ranks last but never hides a row.

Exact scores for every key would cost a float64 pass far slower than reading the keys. Instead
the keys are streamed in chunks of KEYS_PER_CHUNK: one float32 BLAS product scores a chunk
against all unit queries (the chunk then sits in cache for its norms), and a key gets its exact
score only when its float32 screen comes within the screen's error bound of the worst candidate
a query's bounded heap holds. The result is exact; the extra memory is one (chunk, Q) block and
Q k' heap places per worker, never a (Q, N) matrix. Workers take chunks in turn, each with its
own heaps, merged at the end.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from mlot.architecture.threads import blas_threads, free_cores, usable_cores

KEYS_PER_CHUNK = 4096
PARALLEL_MIN_KEYS = 1 << 16  # below this one thread is faster than handing chunks out
SCREEN_MARGIN = 1e-4  # cosine: above the float32 screen's error bound (_screen_chunk) by a wide factor
_NO_INDEX = np.iinfo(np.int64).max  # heap filler: worse than every real candidate


@njit(cache=True)
def row_norms(matrix):
    """Euclidean norm of each row, float64, summed over columns in order."""
    norms = np.empty(matrix.shape[0], dtype=np.float64)
    for i in range(matrix.shape[0]):
        total = 0.0
        for d in range(matrix.shape[1]):
            value = np.float64(matrix[i, d])
            total += value * value
        norms[i] = np.sqrt(total)
    return norms


@njit(cache=True, inline="always")
def _worse(score_a, index_a, score_b, index_b):
    """True when candidate a ranks below b: lower score, or equal score and higher index."""
    return score_a < score_b or (score_a == score_b and index_a > index_b)


@njit(cache=True, inline="always")
def _sift_down(scores, indices, position):
    """Restore the heap (worst candidate at the root) below `position`."""
    size = scores.shape[0]
    while True:
        worst = position
        for child in (2 * position + 1, 2 * position + 2):
            if child < size and _worse(scores[child], indices[child], scores[worst], indices[worst]):
                worst = child
        if worst == position:
            return
        scores[position], scores[worst] = scores[worst], scores[position]
        indices[position], indices[worst] = indices[worst], indices[position]
        position = worst


@njit(cache=True, inline="always")
def _offer(scores, indices, score, index):
    """Keep (score, index) in the bounded heap if it beats the worst candidate held."""
    if _worse(scores[0], indices[0], score, index):
        scores[0] = score
        indices[0] = index
        _sift_down(scores, indices, 0)


@njit(cache=True, nogil=True, fastmath=True)
def _screen(keys, first, dots, thresholds, norms2, best):
    """For the keys first.. (dots (n, Q): their float32 products with the unit queries): their
    float32 squared norms, and the largest dot - threshold * norm over the queries (>= 0: some
    query may take the key). float32 in any order, so a screen only; garbage where a key is not
    finite (never trusted)."""
    n_keys, n_queries = dots.shape
    for t in range(n_keys):
        total = np.float32(0.0)
        for d in range(keys.shape[1]):
            total += keys[first + t, d] * keys[first + t, d]
        norms2[t] = total
        norm = np.sqrt(total)
        largest = dots[t, 0] - thresholds[0] * norm
        for q in range(1, n_queries):
            largest = max(largest, dots[t, q] - thresholds[q] * norm)
        best[t] = largest


@njit(cache=True, nogil=True)
def _exact_score(query, query_norm, keys, row):
    """The rules' score: float64 sums in index order, rounded to float32, NaN as -inf."""
    dot, norm2 = 0.0, 0.0
    for d in range(keys.shape[1]):
        value = np.float64(keys[row, d])
        dot += query[d] * value
        norm2 += value * value
    scale = query_norm * np.sqrt(norm2)
    score = np.float32(dot / scale) if scale != 0.0 else np.float32(0.0)
    return np.float32(-np.inf) if np.isnan(score) else score


@njit(cache=True, nogil=True)
def _screen_chunk(dots, first, queries, query_norms, keys, valid, heap_scores, heap_indices):
    """Offer the valid keys first.. (dots (n, Q): their float32 products with the unit queries) to the heaps.

    The screen's cosine errs by at most about r 2^-24 (float32 sums of r products, in any order,
    of a unit query and a key, and the key's norm) wherever the key's squared norm lies in
    [1e-30, 1e30]; a key whose screen falls below every heap's worst score by more than the
    margin cannot enter any. Keys outside that range, and every key when a query is not finite,
    are scored exactly (_exact_score), so the result equals the brute-force ranking.
    """
    n_keys, n_queries = dots.shape
    margin = SCREEN_MARGIN + 8.0 * keys.shape[1] * 2.0 ** -24
    thresholds = np.empty(n_queries, dtype=np.float32)  # a cosine below -1 - margin passes every key
    for q in range(n_queries):
        thresholds[q] = max(heap_scores[q, 0] - margin, -2.0) if heap_indices[q, 0] != _NO_INDEX else -2.0
    norms2, best = np.empty(n_keys, dtype=np.float32), np.empty(n_keys, dtype=np.float32)
    _screen(keys, first, dots, thresholds, norms2, best)
    screenable = np.all(np.isfinite(query_norms))
    for t in range(n_keys):
        row = first + t
        safe = screenable and 1e-30 <= norms2[t] <= 1e30
        if not valid[row] or (safe and best[t] < 0):
            continue
        inverse_norm = 1.0 / np.sqrt(np.float64(norms2[t])) if safe else 0.0
        for q in range(n_queries):  # the heaps as they stand now (the thresholds were the chunk's first)
            if safe and heap_indices[q, 0] != _NO_INDEX and dots[t, q] * inverse_norm < heap_scores[q, 0] - margin:
                continue
            score = _exact_score(queries[q], query_norms[q], keys, row)
            if _worse(heap_scores[q, 0], heap_indices[q, 0], score, row):
                _offer(heap_scores[q], heap_indices[q], score, row)


@njit(cache=True)
def _merge_candidates(heap_scores, heap_indices):
    """Merge the per-worker heaps of each query into its k best, sorted best first."""
    n_heaps, n_queries, k = heap_scores.shape
    top_scores = np.empty((n_queries, k), dtype=np.float32)
    top_indices = np.empty((n_queries, k), dtype=np.int64)
    scores = np.empty(k, dtype=np.float32)
    indices = np.empty(k, dtype=np.int64)
    for q in range(n_queries):
        scores[:] = heap_scores[0, q]
        indices[:] = heap_indices[0, q]
        for heap in range(1, n_heaps):
            for place in range(k):
                if heap_indices[heap, q, place] != _NO_INDEX:
                    _offer(scores, indices, heap_scores[heap, q, place], heap_indices[heap, q, place])
        for size in range(k, 0, -1):  # pop the worst to the back: heap sort, best first
            top_scores[q, size - 1] = scores[0]
            top_indices[q, size - 1] = indices[0]
            scores[0], indices[0] = scores[size - 1], indices[size - 1]
            _sift_down(scores[:size - 1], indices[:size - 1], 0)
    return top_scores, top_indices


_pool_lock = threading.Lock()
_pool: list = []  # one ThreadPoolExecutor of usable_cores() threads, made on the first parallel search


def _executor() -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="topk"))
        return _pool[0]


def topk_cosine(queries, keys, k: int, valid=None, workers: int | None = None):
    """Exact top-k cosine similarity search (rules in the module docstring).

    queries: (Q, r) or (r,); keys: (N, r); valid: optional bool (N,) mask of live rows;
    workers: threads scanning chunks (default: one for small stores, else the free cores).
    Returns (indices (Q, k') int64, scores (Q, k') float32), k' = min(k, valid rows); a 1-D
    query gives 1-D results.
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    single = queries.ndim == 1
    queries = queries.reshape(1, -1) if single else queries
    if keys.ndim != 2 or queries.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"topk_cosine: queries {queries.shape} and keys {keys.shape} must be (Q, r) and (N, r)")
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"topk_cosine: k must be a non-negative integer, got {k!r}")
    if valid is None:
        valid = np.ones(keys.shape[0], dtype=np.bool_)
    valid = np.ascontiguousarray(valid)
    if valid.shape != (keys.shape[0],) or valid.dtype != np.bool_:
        raise ValueError(f"topk_cosine: valid must be a bool mask of shape ({keys.shape[0]},), "
                         f"got {valid.dtype} {valid.shape}")
    n_queries, kept = queries.shape[0], min(int(k), int(np.count_nonzero(valid)))
    if kept == 0 or n_queries == 0:
        indices, scores = np.zeros((n_queries, kept), np.int64), np.zeros((n_queries, kept), np.float32)
        return (indices[0], scores[0]) if single else (indices, scores)
    queries = np.ascontiguousarray(queries, dtype=np.float64)
    query_norms = row_norms(queries)
    unit_queries_t = np.ascontiguousarray((queries / np.where(query_norms == 0, 1.0, query_norms)[:, None]).T,
                                          dtype=np.float32)
    n_chunks = -(-keys.shape[0] // KEYS_PER_CHUNK)
    if workers is None:
        workers = 1 if keys.shape[0] < PARALLEL_MIN_KEYS else free_cores()
    workers = max(1, min(int(workers), n_chunks))
    heap_scores = np.full((workers, n_queries, kept), -np.inf, dtype=np.float32)
    heap_indices = np.full((workers, n_queries, kept), _NO_INDEX, dtype=np.int64)

    def scan(worker: int) -> None:
        for first in range(worker * KEYS_PER_CHUNK, keys.shape[0], workers * KEYS_PER_CHUNK):
            dots = keys[first:first + KEYS_PER_CHUNK] @ unit_queries_t
            _screen_chunk(dots, first, queries, query_norms, keys, valid, heap_scores[worker], heap_indices[worker])

    if workers == 1:
        scan(0)
    else:
        with blas_threads(1):  # the workers are the parallelism; a BLAS pool on these thin products only waits
            list(_executor().map(scan, range(workers)))
    scores, indices = _merge_candidates(heap_scores, heap_indices)
    return (indices[0], scores[0]) if single else (indices, scores)


@njit(cache=True)
def fifo_append(cache, lengths, states, new_lengths, evicted, evicted_offsets):
    """Append states[b, :new_lengths[b]] behind the valid part cache[b, :lengths[b]] of each row, in place.

    A row holds at most cache.shape[1] states, oldest first. The oldest states of the
    concatenation (old then new) beyond that capacity go, in order, to
    evicted[evicted_offsets[b]:evicted_offsets[b + 1]], whose sizes the caller computed as
    max(0, lengths[b] + new_lengths[b] - capacity). States move forward in index order, so
    reading position t after writing position t - evicted never reads an overwritten state.
    """
    for b in range(cache.shape[0]):
        old = lengths[b]
        total = old + new_lengths[b]
        n_evicted = evicted_offsets[b + 1] - evicted_offsets[b]
        for t in range(total):
            source = cache[b, t] if t < old else states[b, t - old]
            if t < n_evicted:
                evicted[evicted_offsets[b] + t] = source
            else:
                cache[b, t - n_evicted] = source
        lengths[b] = total - n_evicted
