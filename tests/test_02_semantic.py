"""Semantic slots, the memory graph and the GNN: hand-made cases, a slow reference, gradient checks."""
import math

import numpy as np
import pytest

from mlot.architecture import Tensor, gradcheck
from mlot.memory import MemoryGNN, MemoryGraph, SemanticMemory


def unit(vector):
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


# --- consolidation -----------------------------------------------------------------------------------
def test_consolidation_merge_allocate_replace_by_hand():
    memory = SemanticMemory(slots=2, key_dim=2, dim=2)
    keys = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    values = np.array([[1, 1], [3, 3], [5, 5], [7, 7]], dtype=np.float32)
    counts = memory.consolidate(keys, values, importance=[1.0, 0.5, 0.2, 0.7], source_ids=[0, 1, 1, 0])
    # e0 allocates slot 0; e1 (cosine 0.994) merges into it; e2 allocates slot 1; e3 (cosine -1 and 0) finds
    # no free slot and replaces slot 1, whose score 0.2 is below slot 0's 1.5.
    assert counts == (1, 2, 1)
    merged_key = unit(unit([1, 0]) + unit([0.9, 0.1]))
    np.testing.assert_allclose(memory.keys, [merged_key, [-1, 0]], atol=1e-6)
    np.testing.assert_allclose(memory.values, [[2, 2], [7, 7]])
    assert memory.member_count.tolist() == [2, 1] and memory.importance.tolist() == pytest.approx([1.5, 0.7])
    # co-occurrence: source 0 put e0 and e3 in slots 0 and 1; source 1's e2 left slot 1 when it was replaced
    np.testing.assert_array_equal(memory.graph.weights, [[0, 1], [1, 0]])
    expected_coherence = (1 + unit([0.9, 0.1]) @ merged_key + 1) / 3
    assert memory.coherence() == pytest.approx(expected_coherence, abs=1e-6)


def test_search_counts_usage_and_links_co_retrieved_slots():
    memory = SemanticMemory(slots=3, key_dim=2, dim=1)
    memory.consolidate(np.eye(2, dtype=np.float32), np.zeros((2, 1)), [1, 1])
    indices, scores = memory.search(np.array([[1, 0.1], [0.1, 1]]), k=2)
    assert indices.tolist() == [[0, 1], [1, 0]] and scores[0, 0] == pytest.approx(1 / math.sqrt(1.01))
    assert memory.usage_count.tolist() == [2, 2, 0] and memory.hits == 4 and memory.queries == 2
    assert memory.graph.weights[0, 1] == memory.graph.weights[1, 0] == 2
    memory.search(np.array([1, 0]), k=1, record=False)
    assert memory.usage_count.tolist() == [2, 2, 0]


def test_prune_keep_within_and_reset_all():
    memory = SemanticMemory(slots=4, key_dim=2, dim=1, usage_weight=0.1)
    keys = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)
    memory.consolidate(keys, np.ones((4, 1)), [0.5, 0.3, 0.9, 0.3], source_ids=[0, 0, 0, 0])
    memory.usage_count[:] = [0, 3, 0, 0]  # scores 0.5, 0.6, 0.9, 0.3
    assert memory.prune(min_score=0.4) == 1 and memory.live.tolist() == [True, True, True, False]
    assert not memory.graph.weights[3].any() and not memory.graph.weights[:, 3].any()
    assert memory.keep_within(2) == 1 and memory.live.tolist() == [False, True, True, False]
    assert memory.keep_within(5) == 0
    memory.reset_all()
    assert memory.size == 0 and not memory.graph.weights.any() and memory.coherence() == 0.0


def reference_consolidate(n_slots, entries, threshold):
    """Slow, list-based statement of the consolidation rules, in float64."""
    slots = [None] * n_slots
    counts = [0, 0, 0]
    for key, value, importance in entries:
        key = unit(key)
        live = [i for i in range(n_slots) if slots[i] is not None]
        nearest = max(live, key=lambda i: (slots[i]["key"] @ key, -i)) if live else None
        if nearest is not None and slots[nearest]["key"] @ key >= threshold:
            slot = slots[nearest]
            slot["key"] = unit(slot["key"] * slot["members"] + key)
            slot["value"] = (slot["value"] * slot["members"] + value) / (slot["members"] + 1)
            slot["members"] += 1
            slot["importance"] += importance
            counts[0] += 1
            continue
        if None in slots:
            target, counts[1] = slots.index(None), counts[1] + 1
        else:
            target = min(range(n_slots), key=lambda i: (slots[i]["importance"], i))  # no reads: usage 0
            counts[2] += 1
        slots[target] = {"key": key, "value": np.asarray(value, np.float64), "members": 1, "importance": importance}
    return slots, tuple(counts)


def test_consolidation_matches_the_reference_and_never_exceeds_the_slots():
    rng = np.random.default_rng(0)
    centres = np.array([unit(v) for v in rng.standard_normal((9, 6))])
    memory = SemanticMemory(slots=5, key_dim=6, dim=3)
    all_entries, total_counts = [], np.zeros(3, dtype=int)
    for _ in range(6):
        picks = rng.integers(0, 9, 7)
        keys = (centres[picks] + 0.01 * rng.standard_normal((7, 6))).astype(np.float32)
        values = rng.standard_normal((7, 3)).astype(np.float32)
        importance = rng.random(7).astype(np.float32)
        counts = memory.consolidate(keys, values, importance, merge_threshold=0.9)
        assert sum(counts) == 7 and memory.size <= 5
        total_counts += counts
        all_entries += list(zip(keys, values, importance.astype(np.float64)))
    slots, expected_counts = reference_consolidate(5, all_entries, 0.9)
    assert tuple(total_counts) == expected_counts and min(expected_counts) > 0
    for i, slot in enumerate(slots):
        np.testing.assert_allclose(memory.keys[i], slot["key"], atol=1e-5)
        np.testing.assert_allclose(memory.values[i], slot["value"], atol=1e-5)
        assert memory.member_count[i] == slot["members"]
        assert memory.importance[i] == pytest.approx(slot["importance"], abs=1e-5)


def test_semantic_state_round_trip_and_errors():
    rng = np.random.default_rng(1)
    memory = SemanticMemory(slots=4, key_dim=3, dim=2)
    memory.consolidate(rng.standard_normal((6, 3)), rng.standard_normal((6, 2)), rng.random(6), source_ids=[0] * 6)
    memory.search(rng.standard_normal((2, 3)), 2)
    restored = SemanticMemory(slots=4, key_dim=3, dim=2)
    restored.load_state_dict(memory.state_dict())
    for name, array in memory.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], array, err_msg=name)
    query = rng.standard_normal((3, 3))
    for a, b in zip(memory.search(query, 3), restored.search(query, 3)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'graph.weights'|'weights' has shape"):
        SemanticMemory(slots=4, key_dim=3, dim=2).load_state_dict(
            dict(memory.state_dict(), **{"graph.weights": np.zeros((5, 5), np.float32)}))
    with pytest.raises(ValueError, match="'keys' has shape"):
        SemanticMemory(slots=5, key_dim=3, dim=2).load_state_dict(memory.state_dict())
    with pytest.raises(ValueError, match="keys of shape"):
        memory.consolidate(np.ones((2, 4)), np.ones((2, 2)), [1, 1])
    with pytest.raises(ValueError, match="must be finite"):
        memory.consolidate(np.array([[np.nan, 1, 1]]), np.ones((1, 2)), [1])


# --- graph ---------------------------------------------------------------------------------------------
def test_graph_edges_decay_and_adjacency_by_hand():
    graph = MemoryGraph(4)
    graph.add_edges([0, 2, 2, -1, 3], weight=0.5)  # one group: pairs (0,2), (0,3), (2,3); repeats count once
    graph.add_edges(np.array([[0, 1], [1, 0]]), weight=1.0)  # two groups, each with the pair (0,1)
    expected = np.array([[0, 2, 0.5, 0.5], [2, 0, 0, 0], [0.5, 0, 0, 0.5], [0.5, 0, 0.5, 0]])
    np.testing.assert_array_equal(graph.weights, expected)
    adjacency = graph.normalized_adjacency(live=[True, True, False, True])
    np.testing.assert_allclose(adjacency, [[1 / 3.5, 2 / 3.5, 0, 0.5 / 3.5], [2 / 3, 1 / 3, 0, 0], [0, 0, 0, 0],
                                           [0.5 / 1.5, 0, 0, 1 / 1.5]], rtol=1e-6)
    graph.decay(0.5)
    np.testing.assert_array_equal(graph.weights, expected / 2)
    graph.remove_node(0)
    assert not graph.weights[0].any() and not graph.weights[:, 0].any() and graph.weights[2, 3] == 0.25
    with pytest.raises(ValueError, match="symmetric"):
        MemoryGraph(2).load_state_dict({"weights": np.array([[0, 1], [0, 0]], np.float32)})
    with pytest.raises(ValueError, match="weight must be >= 0"):
        graph.add_edges([0, 1], weight=-1)


# --- GNN ---------------------------------------------------------------------------------------------------
def gelu_reference(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def test_fresh_gnn_is_the_identity():
    rng = np.random.default_rng(2)
    values = rng.standard_normal((5, 4)).astype(np.float32)
    graph = MemoryGraph(5)
    graph.add_edges([0, 1, 4])
    output = MemoryGNN(4, rounds=2, rng=rng)(Tensor(values), graph.normalized_adjacency())
    np.testing.assert_array_equal(output.data, values)
    np.testing.assert_array_equal(MemoryGNN(4, rounds=0)(Tensor(values), np.eye(5)).data, values)


def test_gnn_round_matches_numpy_and_passes_gradcheck():
    rng = np.random.default_rng(3)
    gnn = MemoryGNN(3, rounds=2, rng=rng).to_dtype(np.float64)
    for message_round in gnn.rounds:  # move the zero-initialised output layer off zero
        message_round.update.weight.data = rng.normal(0, 0.5, (3, 3))
        message_round.update.bias.data = rng.normal(0, 0.5, 3)
        message_round.combine.weight.data = rng.normal(0, 0.5, (3, 6))
    graph = MemoryGraph(4)
    graph.add_edges(np.array([[0, 1], [1, 2], [0, 3]]), weight=1.5)
    adjacency = graph.normalized_adjacency(live=[True, True, True, False]).astype(np.float64)
    values = rng.standard_normal((4, 3))

    expected = values
    for message_round in gnn.rounds:
        hidden = np.concatenate([expected, adjacency @ expected], axis=1) @ message_round.combine.weight.data.T
        hidden = gelu_reference(hidden + message_round.combine.bias.data)
        expected = expected + hidden @ message_round.update.weight.data.T + message_round.update.bias.data
    np.testing.assert_allclose(gnn(Tensor(values), adjacency).data, expected, rtol=1e-10, atol=1e-12)

    values_tensor = Tensor(values, requires_grad=True)
    assert gradcheck(lambda v, *params: gnn(v, adjacency), [values_tensor, *gnn.parameters()])
