"""Numba kernels of the memory stores: exact top-k cosine retrieval and the FIFO cache append.

Retrieval must equal a brute-force ranking exactly, so its rules are fixed here once:
- cosine(q, k) = dot(q, k) / (|q| |k|), dot and norms accumulated in float64 in index order,
  and 0 when |q| |k| == 0 (a zero vector is similar to nothing);
- the score is rounded to float32 *before* ranking, so that the returned scores explain the
  order: descending score, equal scores by ascending key index;
- only rows with valid[i] take part; k' = min(k, number of valid rows) results per query;
- a NaN similarity (a NaN in a vector) counts as -inf: it ranks last but never hides a row.

No (Q, N) score matrix is ever formed: each task (a block of KEYS_PER_BLOCK keys x a group
of queries) keeps one bounded heap of its k' best candidates per query, and a second pass
merges the per-block heaps of each query, so the extra memory is (N / KEYS_PER_BLOCK) Q k'
heap places. Tasks run in parallel, so a single query over a large store also uses every
core; within a task each key row is read once for the whole query group.
"""
import numpy as np
from numba import njit, prange

KEYS_PER_BLOCK = 16384
QUERIES_PER_GROUP = 64
TILE = 64
PARALLEL_MIN_WORK = 1 << 22  # multiply-adds below which one thread is faster than waking the pool
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


@njit(cache=True)
def _scan_task(queries, query_norms, keys, valid, block, group, heap_scores, heap_indices):
    """Offer the valid keys of one block to the heaps of one group of queries.

    The task copies TILE valid keys at a time, transposed to float64 (r, TILE), so that the dot
    products of one query with the whole tile, and the tile's norms, are vectorised across keys
    while each key's own sum still runs over d in order.
    """
    n_keys, dim = keys.shape
    tile = np.empty((dim, TILE), dtype=np.float64)
    tile_norms = np.empty(TILE, dtype=np.float64)
    tile_rows = np.empty(TILE, dtype=np.int64)
    dots = np.empty(TILE, dtype=np.float64)
    row, stop = block * KEYS_PER_BLOCK, min(n_keys, (block + 1) * KEYS_PER_BLOCK)
    while row < stop:
        count = 0
        while row < stop and count < TILE:
            if valid[row]:
                for d in range(dim):
                    tile[d, count] = keys[row, d]
                tile_rows[count] = row
                count += 1
            row += 1
        tile_norms[:count] = 0.0
        for d in range(dim):
            for t in range(count):
                tile_norms[t] += tile[d, t] * tile[d, t]
        for t in range(count):
            tile_norms[t] = np.sqrt(tile_norms[t])
        for q in range(group * QUERIES_PER_GROUP, min(queries.shape[0], (group + 1) * QUERIES_PER_GROUP)):
            dots[:count] = 0.0
            for d in range(dim):
                query_value = queries[q, d]
                for t in range(count):
                    dots[t] += query_value * tile[d, t]
            for t in range(count):
                scale = query_norms[q] * tile_norms[t]
                score = np.float32(dots[t] / scale) if scale != 0.0 else np.float32(0.0)
                if np.isnan(score):
                    score = np.float32(-np.inf)
                if _worse(heap_scores[block, q, 0], heap_indices[block, q, 0], score, tile_rows[t]):  # before slicing
                    _offer(heap_scores[block, q], heap_indices[block, q], score, tile_rows[t])


@njit(cache=True, parallel=True)
def _scan_parallel(queries, query_norms, keys, valid, heap_scores, heap_indices):
    """All (key block, query group) tasks, in parallel; heaps are (n_blocks, Q, k)."""
    n_groups = (queries.shape[0] + QUERIES_PER_GROUP - 1) // QUERIES_PER_GROUP
    for task in prange(heap_scores.shape[0] * n_groups):
        _scan_task(queries, query_norms, keys, valid, task // n_groups, task % n_groups, heap_scores, heap_indices)


@njit(cache=True)
def _scan_serial(queries, query_norms, keys, valid, heap_scores, heap_indices):
    """The same tasks in one thread: small searches do not pay for waking the thread pool."""
    n_groups = (queries.shape[0] + QUERIES_PER_GROUP - 1) // QUERIES_PER_GROUP
    for task in range(heap_scores.shape[0] * n_groups):
        _scan_task(queries, query_norms, keys, valid, task // n_groups, task % n_groups, heap_scores, heap_indices)


@njit(cache=True)
def _merge_candidates(heap_scores, heap_indices):
    """Merge the per-block heaps of each query into its k best, sorted best first."""
    n_blocks, n_queries, k = heap_scores.shape
    top_scores = np.empty((n_queries, k), dtype=np.float32)
    top_indices = np.empty((n_queries, k), dtype=np.int64)
    scores = np.empty(k, dtype=np.float32)
    indices = np.empty(k, dtype=np.int64)
    for q in range(n_queries):
        scores[:] = heap_scores[0, q]
        indices[:] = heap_indices[0, q]
        for block in range(1, n_blocks):
            for place in range(k):
                if heap_indices[block, q, place] != _NO_INDEX:
                    _offer(scores, indices, heap_scores[block, q, place], heap_indices[block, q, place])
        for size in range(k, 0, -1):  # pop the worst to the back: heap sort, best first
            top_scores[q, size - 1] = scores[0]
            top_indices[q, size - 1] = indices[0]
            scores[0], indices[0] = scores[size - 1], indices[size - 1]
            _sift_down(scores[:size - 1], indices[:size - 1], 0)
    return top_scores, top_indices


def topk_cosine(queries, keys, k: int, valid=None):
    """Exact top-k cosine similarity search (rules in the module docstring).

    queries: (Q, r) or (r,); keys: (N, r); valid: optional bool (N,) mask of live rows.
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
    else:
        queries = np.ascontiguousarray(queries, dtype=np.float64)
        n_blocks = (keys.shape[0] + KEYS_PER_BLOCK - 1) // KEYS_PER_BLOCK
        heap_scores = np.full((n_blocks, n_queries, kept), -np.inf, dtype=np.float32)
        heap_indices = np.full((n_blocks, n_queries, kept), _NO_INDEX, dtype=np.int64)
        tasks = n_blocks * ((n_queries + QUERIES_PER_GROUP - 1) // QUERIES_PER_GROUP)
        scan = _scan_parallel if tasks > 1 and keys.size * n_queries >= PARALLEL_MIN_WORK else _scan_serial
        scan(queries, row_norms(queries), keys, valid, heap_scores, heap_indices)
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
