"""Exact top-k cosine retrieval against a brute-force ranking of the full score matrix."""
import numpy as np
import pytest

from mlot.memory.kernels import KEYS_PER_CHUNK, topk_cosine


def brute_force_topk(queries, keys, k, valid=None):
    """Every score in float64 (0 for a zero vector), rounded to float32, then a stable lexicographic sort."""
    queries = np.atleast_2d(queries).astype(np.float64)
    keys = np.asarray(keys, dtype=np.float64)
    valid = np.ones(len(keys), dtype=bool) if valid is None else valid
    scale = np.linalg.norm(queries, axis=1)[:, None] * np.linalg.norm(keys, axis=1)[None, :]
    dots = queries @ keys.T
    scores = np.where(scale != 0, dots / np.where(scale != 0, scale, 1.0), 0.0).astype(np.float32)
    candidates = np.flatnonzero(valid)
    kept = min(k, len(candidates))
    indices = np.array([candidates[np.lexsort((candidates, -row[candidates]))][:kept] for row in scores],
                       dtype=np.int64).reshape(len(queries), kept)
    return indices, np.take_along_axis(scores, indices, axis=1)


def check_against_brute_force(queries, keys, k, valid=None, workers=None):
    indices, scores = topk_cosine(queries, keys, k, valid, workers)
    expected_indices, expected_scores = brute_force_topk(queries, keys, k, valid)
    if np.ndim(queries) == 1:
        expected_indices, expected_scores = expected_indices[0], expected_scores[0]
    assert indices.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-7)


rng = np.random.default_rng(7)


@pytest.mark.parametrize("n_keys, n_queries, dim, k", [(1, 1, 1, 1), (50, 3, 8, 5), (300, 10, 17, 32), (9, 4, 6, 9)])
def test_random_keys(n_keys, n_queries, dim, k):
    keys = rng.standard_normal((n_keys, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    check_against_brute_force(queries, keys, k)


def test_k_larger_than_store_returns_every_key():
    keys = rng.standard_normal((6, 4)).astype(np.float32)
    indices, scores = topk_cosine(rng.standard_normal((2, 4)), keys, 50)
    assert indices.shape == scores.shape == (2, 6)
    assert sorted(indices[0]) == list(range(6))
    check_against_brute_force(rng.standard_normal((2, 4)), keys, 50)


def test_ties_go_to_the_lower_index():
    """Entries in {-1, 0, 1} make dot products exact, so many scores tie exactly."""
    keys = rng.integers(-1, 2, (400, 3)).astype(np.float32)
    queries = rng.integers(-1, 2, (12, 3)).astype(np.float32)
    check_against_brute_force(queries, keys, 40)
    duplicated = np.repeat(rng.standard_normal((5, 8)).astype(np.float32), 7, axis=0)  # 7 copies of each row
    indices, scores = topk_cosine(duplicated[21], duplicated, 10)
    assert indices[:7].tolist() == list(range(21, 28))
    assert np.all(scores[:7] == scores[0])


def test_masked_rows_never_returned():
    keys = rng.standard_normal((200, 5)).astype(np.float32)
    valid = rng.random(200) < 0.3
    check_against_brute_force(rng.standard_normal((4, 5)), keys, 12, valid)
    indices, _ = topk_cosine(keys[~valid][:3], keys, 60, valid)
    assert valid[indices].all()
    indices, scores = topk_cosine(keys[:2], keys, 5, np.zeros(200, dtype=bool))
    assert indices.shape == scores.shape == (2, 0)


def test_zero_vectors_score_zero():
    keys = rng.standard_normal((20, 4)).astype(np.float32)
    keys[[3, 11]] = 0.0
    query = rng.standard_normal(4).astype(np.float32)
    check_against_brute_force(query, keys, 20)
    indices, scores = topk_cosine(query, keys, 20)
    assert scores[list(indices).index(3)] == 0.0
    indices, scores = topk_cosine(np.zeros(4, np.float32), keys, 4)  # a zero query: all ties at 0
    assert indices.tolist() == [0, 1, 2, 3] and not scores.any()


def test_nan_ranks_last_and_never_hides_a_row():
    keys = np.array([[1, 0], [np.nan, 1], [0, 1]], dtype=np.float32)
    indices, scores = topk_cosine(np.array([1, 1], np.float32), keys, 3)
    assert indices.tolist() == [0, 2, 1] and scores[2] == -np.inf
    indices, scores = topk_cosine(np.array([np.nan, 1], np.float32), keys, 2)
    assert indices.tolist() == [0, 1] and np.all(scores == -np.inf)


@pytest.mark.parametrize("workers", [1, 3])
def test_many_chunks_and_workers_merge_exactly(workers):
    """More keys than one chunk, chunks shared among workers: the heaps' merge keeps exact ties."""
    n_keys = 2 * KEYS_PER_CHUNK + 123
    keys = rng.integers(-2, 3, (n_keys, 3)).astype(np.float32)  # exact ties across chunks
    queries = rng.integers(-2, 3, (69, 3)).astype(np.float32)
    valid = rng.random(n_keys) < 0.9
    check_against_brute_force(queries, keys, 9, valid, workers=workers)
    keys = rng.standard_normal((n_keys, 3)).astype(np.float32)
    check_against_brute_force(queries[:2], keys, 3, workers=workers)


def test_screen_never_drops_a_key_it_cannot_bound():
    """Cosines that rise by ~1e-10 per key along the store (well inside the float32 screen's error,
    so every chunk's best must displace the last one's), and keys whose float32 squared norms
    overflow or underflow (scored exactly, never screened out), rank as brute force ranks them."""
    n_keys = 3 * KEYS_PER_CHUNK
    u, v = np.linalg.qr(rng.standard_normal((64, 2)))[0].T  # orthonormal directions
    cosines = 0.3 + 1e-6 * np.arange(n_keys) / n_keys
    keys = (cosines[:, None] * u + np.sqrt(1 - cosines ** 2)[:, None] * v).astype(np.float32)
    keys[-5] = u * np.float32(1e25)   # |k|^2 overflows float32; the best key of all
    keys[-9] = u * np.float32(1e-22)  # |k|^2 underflows; ties with it
    check_against_brute_force(np.stack([u, u + 0.5 * v, v]).astype(np.float32), keys, 16, workers=2)


def test_shapes_and_errors():
    keys = rng.standard_normal((10, 4)).astype(np.float32)
    indices, scores = topk_cosine(keys[0], keys, 3)
    assert indices.shape == scores.shape == (3,) and indices[0] == 0
    assert topk_cosine(keys[:2], keys, 0)[0].shape == (2, 0)
    assert topk_cosine(np.zeros((2, 4)), np.zeros((0, 4)), 3)[0].shape == (2, 0)
    with pytest.raises(ValueError, match="queries"):
        topk_cosine(np.zeros((2, 3)), keys, 1)
    with pytest.raises(ValueError, match="k must be"):
        topk_cosine(keys, keys, -1)
    with pytest.raises(ValueError, match="valid"):
        topk_cosine(keys, keys, 1, valid=np.ones(9, dtype=bool))
