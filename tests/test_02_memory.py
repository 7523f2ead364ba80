"""Working cache, chunking, episodic store and the cascade: hand-made cases, a slow reference, round trips."""
import io
from collections import deque

import numpy as np
import pytest

from mlot.memory import ChunkBuffer, EpisodicMemory, MemoryCascade, WorkingMemory, pool_chunks


def column(*values):
    """States of dim 1 whose values name them: (1, T, 1)."""
    return np.array(values, dtype=np.float32).reshape(1, -1, 1)


# --- working memory ----------------------------------------------------------------------------
def test_working_fifo_by_hand():
    memory = WorkingMemory(n_layers=1, capacity=3, dim=1, batch=1)
    assert [e.ravel().tolist() for e in memory.append(0, column(1, 2))] == [[]]
    assert [e.ravel().tolist() for e in memory.append(0, column(3, 4))] == [[1.0]]
    states, lengths = memory.read(0)
    assert states.ravel().tolist() == [2, 3, 4] and lengths.tolist() == [3]
    evicted = memory.append(0, column(5, 6, 7, 8, 9), lengths=[4])  # 9 is padding
    assert evicted[0].ravel().tolist() == [2, 3, 4, 5]
    assert memory.read(0)[0].ravel().tolist() == [6, 7, 8]


def test_working_rows_fill_independently_and_capacity_zero():
    memory = WorkingMemory(n_layers=2, capacity=2, dim=1, batch=2)
    states = np.array([[1, 2, 3], [10, 20, 30]], dtype=np.float32)[:, :, None]  # (2, 3, 1)
    evicted = memory.append(1, states, lengths=[3, 1])
    assert [e.ravel().tolist() for e in evicted] == [[1.0], []]
    cached, lengths = memory.read(1)
    assert lengths.tolist() == [2, 1] and cached[:, :, 0].tolist() == [[2, 3], [10, 0]]
    assert memory.read(0)[1].tolist() == [0, 0]
    assert memory.usage() == pytest.approx((2 + 1) / (4 * 2))
    none_kept = WorkingMemory(n_layers=1, capacity=0, dim=1, batch=1)
    assert none_kept.append(0, column(4, 5))[0].ravel().tolist() == [4, 5]
    assert none_kept.read(0)[0].shape == (1, 0, 1) and none_kept.usage() == 0.0


def test_working_matches_a_deque_reference_and_never_overflows():
    rng = np.random.default_rng(0)
    capacity, batch = 5, 3
    memory = WorkingMemory(n_layers=1, capacity=capacity, dim=2, batch=batch)
    reference = [deque() for _ in range(batch)]
    for _ in range(40):
        segment = rng.standard_normal((batch, 4, 2)).astype(np.float32)
        lengths = rng.integers(0, 5, batch)
        evicted = memory.append(0, segment, lengths)
        for row in range(batch):
            expected = []
            for token in segment[row, :lengths[row]]:
                reference[row].append(token)
                if len(reference[row]) > capacity:
                    expected.append(reference[row].popleft())
            np.testing.assert_array_equal(evicted[row], np.reshape(expected, (-1, 2)))
        cached, cached_lengths = memory.read(0)
        assert cached_lengths.max() <= capacity
        for row in range(batch):
            np.testing.assert_array_equal(cached[row, :cached_lengths[row]], np.reshape(list(reference[row]), (-1, 2)))
            assert not cached[row, cached_lengths[row]:].any()


def test_working_reset_rows_and_state_round_trip():
    memory = WorkingMemory(n_layers=2, capacity=3, dim=2, batch=3)
    for layer in range(2):
        memory.append(layer, np.ones((3, 2, 2), np.float32))
    restored = WorkingMemory(n_layers=2, capacity=3, dim=2, batch=3)
    restored.load_state_dict(memory.state_dict())
    for layer in range(2):
        for a, b in zip(memory.read(layer), restored.read(layer)):
            np.testing.assert_array_equal(a, b)
    memory.reset(rows=[1])
    assert memory.lengths.tolist() == [[2, 0, 2], [2, 0, 2]] and not memory.states[:, 1].any()
    with pytest.raises(ValueError, match="'states' has shape"):
        WorkingMemory(n_layers=2, capacity=4, dim=2, batch=3).load_state_dict(restored.state_dict())
    with pytest.raises(ValueError, match="lengths"):
        memory.append(0, np.ones((3, 2, 2), np.float32), lengths=[1, 2, 3])
    with pytest.raises(IndexError, match="layer 2"):
        memory.read(2)


# --- chunking ------------------------------------------------------------------------------------
def test_chunks_cut_the_eviction_stream_and_flush_the_rest():
    buffer = ChunkBuffer(batch=2, chunk_len=3, dim=1)
    stream = np.arange(1, 8, dtype=np.float32)[:, None]  # tokens 1..7 of row 0
    first = buffer.push([stream[:2], np.zeros((0, 1), np.float32)])
    assert first[0][0].shape == (0, 3, 1) and first[1][0].shape == (0, 3, 1)
    (chunks, lengths), _ = buffer.push([stream[2:], np.ones((1, 1), np.float32)])
    assert chunks[:, :, 0].tolist() == [[1, 2, 3], [4, 5, 6]] and lengths.tolist() == [3, 3]
    (rest, rest_lengths), (short, short_lengths) = buffer.flush()
    assert rest[:, :, 0].tolist() == [[7, 0, 0]] and rest_lengths.tolist() == [1]
    assert short[:, :, 0].tolist() == [[1, 0, 0]] and short_lengths.tolist() == [1]  # shorter than a chunk
    (empty, empty_lengths), = buffer.flush(rows=[0])
    assert empty.shape == (0, 3, 1) and empty_lengths.shape == (0,)


def test_pool_chunks_is_the_mean_of_valid_tokens():
    values = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    pooled = pool_chunks(values, [2, 3])
    np.testing.assert_allclose(pooled, [values[0, :2].mean(0), values[1].mean(0)])


# --- episodic memory -----------------------------------------------------------------------------
def entries(rng, n, chunk_len=4, dim=3, key_dim=5):
    values = rng.standard_normal((n, chunk_len, dim)).astype(np.float32)
    keys = rng.standard_normal((n, key_dim)).astype(np.float32)
    return values, keys, values.mean(axis=1)


def test_episodic_write_gather_partial_chunks():
    rng = np.random.default_rng(1)
    store = EpisodicMemory(capacity=4, chunk_len=4, dim=3, key_dim=5)
    values, keys, pooled = entries(rng, 3)
    slots = store.write(values, [4, 2, 1], keys, pooled, doc_id=7, step=3, importance=[1, 1, 1])
    assert slots.tolist() == [0, 1, 2] and store.size == 3
    tokens, total = store.gather([2, 0, 1])
    assert total == 7
    np.testing.assert_array_equal(tokens, np.concatenate([values[2, :1], values[0], values[1, :2]]))
    assert not store.values[1, 2:].any()  # padding beyond the length is stored as zero
    np.testing.assert_allclose(np.linalg.norm(store.keys[:3], axis=1), 1.0, rtol=1e-6)
    assert store.doc_id[:3].tolist() == [7, 7, 7] and store.write_step[:3].tolist() == [3, 3, 3]
    with pytest.raises(IndexError, match="live entries"):
        store.gather([3])
    with pytest.raises(ValueError, match="lengths must lie in"):
        store.write(values[:1], [5], keys[:1], pooled[:1], 0, 0, [1])


def test_episodic_retention_rule_by_hand():
    """retention = importance * 0.99 ** age + 0.1 * accesses; the lowest loses, ties to the older write."""
    rng = np.random.default_rng(2)
    store = EpisodicMemory(capacity=3, chunk_len=4, dim=3, key_dim=5)
    values, keys, pooled = entries(rng, 3)
    store.write(values, [4, 4, 4], keys, pooled, doc_id=0, step=0, importance=[1.0, 0.2, 0.5])
    store.access_count[1] = 2
    # at step 10: 1.0 * 0.904 = 0.904, 0.2 * 0.904 + 0.2 = 0.381, 0.5 * 0.904 = 0.452
    assert store.write(values[:1], [4], keys[:1], pooled[:1], 1, 10, [0.6]).tolist() == [1]
    assert store.write(values[:1], [4], keys[:1], pooled[:1], 1, 10, [0.1]).tolist() == [-1]
    assert store.importance.tolist() == pytest.approx([1.0, 0.6, 0.5]) and store.size == 3
    tied = EpisodicMemory(capacity=2, chunk_len=4, dim=3, key_dim=5, recency_decay=1.0)
    tied.write(values[:1], [4], keys[:1], pooled[:1], 0, 0, [0.5])
    tied.write(values[1:2], [4], keys[1:2], pooled[1:2], 0, 1, [0.5])
    assert tied.write(values[2:], [4], keys[2:], pooled[2:], 0, 2, [0.5]).tolist() == [0]  # slot 0 was older
    assert EpisodicMemory(0, 4, 3, 5).write(values, [4] * 3, keys, pooled, 0, 0, [1] * 3).tolist() == [-1] * 3


def test_episodic_capacity_never_exceeded_and_search_is_exact():
    rng = np.random.default_rng(3)
    store = EpisodicMemory(capacity=16, chunk_len=4, dim=3, key_dim=5)
    for step in range(30):
        n = int(rng.integers(1, 9))
        values, keys, pooled = entries(rng, n)
        slots = store.write(values, rng.integers(1, 5, n), keys, pooled, step, step, rng.random(n))
        assert store.size <= 16 and len(set(slots[slots >= 0].tolist())) == int((slots >= 0).sum())
        if step % 5 == 0:
            store.remove(np.flatnonzero(store.live)[:2])
    query = rng.standard_normal((3, 5)).astype(np.float32)
    indices, scores = store.search(query, 4)
    live = np.flatnonzero(store.live)
    similarity = (query.astype(np.float64) @ store.keys[live].T.astype(np.float64)
                  / np.linalg.norm(query, axis=1)[:, None] / np.linalg.norm(store.keys[live], axis=1))
    expected = live[np.argsort(-similarity, axis=1, kind="stable")[:, :4]]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(similarity, np.argsort(-similarity, 1)[:, :4], 1), atol=1e-6)
    assert store.hits == 12 and store.queries == 3
    assert np.bincount(indices.ravel(), minlength=16).tolist() == store.access_count.tolist()
    store.search(query[0], 4, record=False)
    assert store.hits == 12 and store.queries == 3


def test_episodic_diversity_is_mean_pairwise_cosine_distance():
    rng = np.random.default_rng(4)
    store = EpisodicMemory(capacity=8, chunk_len=4, dim=3, key_dim=5)
    values, keys, pooled = entries(rng, 6)
    keys[2] = 0.0
    store.write(values, [4] * 6, keys, pooled, 0, 0, np.ones(6))
    store.remove([4])
    live_keys = keys[[0, 1, 2, 3, 5]].astype(np.float64)
    distances = [1 - (a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) if a.any() and b.any() else 0.0)
                 for i, a in enumerate(live_keys) for b in live_keys[i + 1:]]
    assert store.diversity() == pytest.approx(np.mean(distances), abs=1e-6)
    assert EpisodicMemory(4, 4, 3, 5).diversity() == 0.0


def test_episodic_state_round_trip_gives_identical_searches():
    rng = np.random.default_rng(5)
    store = EpisodicMemory(capacity=10, chunk_len=4, dim=3, key_dim=5)
    values, keys, pooled = entries(rng, 7)
    store.write(values, [4, 3, 2, 1, 4, 4, 4], keys, pooled, np.arange(7), 2, rng.random(7))
    store.search(keys[:2], 3)
    restored = EpisodicMemory(capacity=10, chunk_len=4, dim=3, key_dim=5)
    restored.load_state_dict(store.state_dict())
    for name, array in store.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], array, err_msg=name)
    for a, b in zip(store.search(keys, 4), restored.search(keys, 4)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'keys' has shape"):
        EpisodicMemory(capacity=10, chunk_len=4, dim=3, key_dim=6).load_state_dict(store.state_dict())
    with pytest.raises(ValueError, match="'values' has shape"):
        EpisodicMemory(capacity=10, chunk_len=5, dim=3, key_dim=5).load_state_dict(store.state_dict())
    with pytest.raises(KeyError, match="missing keys \\['hits'\\]"):
        restored.load_state_dict({k: v for k, v in store.state_dict().items() if k != "hits"})
    store.reset()
    assert store.size == 0 and store.hits == 0 and not store.access_count.any()


# --- the cascade -----------------------------------------------------------------------------------
def filled_cascade(rng):
    cascade = MemoryCascade(n_layers=2, batch=2, dim=3, key_dim=4, working_capacity=3, episodic_capacity=5,
                            chunk_len=2, semantic_slots=4)
    for layer in range(2):
        cascade.working.append(layer, rng.standard_normal((2, 4, 3)))
    cascade.chunks.push([rng.standard_normal((3, 3)), rng.standard_normal((1, 3))])
    for row, store in enumerate(cascade.episodic):
        store.write(rng.standard_normal((2, 2, 3)), [2, 1], rng.standard_normal((2, 4)), rng.standard_normal((2, 3)),
                    row, 0, [1, 1])
    cascade.semantic.consolidate(rng.standard_normal((3, 4)), rng.standard_normal((3, 3)), [1, 2, 3],
                                 source_ids=[0, 0, 1])
    return cascade


def test_cascade_reset_clears_exactly_the_per_document_state():
    rng = np.random.default_rng(6)
    cascade = filled_cascade(rng)
    before = cascade.state_dict()
    fresh = MemoryCascade(n_layers=2, batch=2, dim=3, key_dim=4, working_capacity=3, episodic_capacity=5,
                          chunk_len=2, semantic_slots=4).state_dict()
    cascade.reset(rows=[1])
    after = cascade.state_dict()
    for name in before:
        if name.startswith("semantic.") or name.startswith("episodic.0."):
            expected = before[name]  # another document, and the long-lived memory: untouched
        elif name.startswith("episodic.1."):
            expected = fresh[name]
        else:  # working and chunks: row 1 fresh, row 0 untouched
            row_axis = 1 if name.startswith("working.") else 0
            expected = np.concatenate([np.take(before[name], [0], axis=row_axis),
                                       np.take(fresh[name], [1], axis=row_axis)], axis=row_axis)
        np.testing.assert_array_equal(after[name], expected, err_msg=name)
    cascade.reset_all()
    for name, array in cascade.state_dict().items():
        np.testing.assert_array_equal(array, fresh[name], err_msg=name)


def test_cascade_state_round_trip_is_exact_and_all_or_nothing():
    rng = np.random.default_rng(7)
    cascade = filled_cascade(rng)
    state = cascade.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values()) and "semantic.graph.weights" in state
    restored = MemoryCascade(n_layers=2, batch=2, dim=3, key_dim=4, working_capacity=3, episodic_capacity=5,
                             chunk_len=2, semantic_slots=4)
    archive = io.BytesIO()
    np.savez(archive, **state)  # a checkpoint holds .npy files: no pickled objects
    archive.seek(0)
    with np.load(archive, allow_pickle=False) as loaded:
        restored.load_state_dict(dict(loaded))
    for name, array in restored.state_dict().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)
    assert restored.stats() == cascade.stats()
    broken = dict(state, **{"episodic.1.keys": np.zeros((6, 4), np.float32)})
    with pytest.raises(ValueError, match="'keys' has shape"):
        restored.load_state_dict(broken)
    with pytest.raises(KeyError, match="episodic.9.keys"):
        restored.load_state_dict(dict(state, **{"episodic.9.keys": state["episodic.1.keys"]}))
    for name, array in restored.state_dict().items():
        np.testing.assert_array_equal(array, state[name], err_msg=name)


def test_cascade_stats():
    stats = filled_cascade(np.random.default_rng(8)).stats()
    assert stats["working_usage"] == 1.0 and stats["episodic_size"] == 2.0 and stats["semantic_size"] >= 1
    assert set(stats) == {"working_usage", "episodic_size", "episodic_diversity", "episodic_hits", "episodic_queries",
                          "semantic_size", "semantic_coherence", "semantic_hits", "semantic_queries"}
