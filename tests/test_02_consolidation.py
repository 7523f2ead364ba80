"""Memory consolidation: triggers, promotion rules, merge/allocate/replace, pruning, capacity,
recency of merged values, state round trip, and a real model's memory. Expected answers are
worked out by hand (or by the retention formula written out here), not taken from the code."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from mlot.architecture.config import ConfigError
from mlot.memory.consolidation import ConsolidationConfig, MemoryConsolidator
from mlot.memory.episodic import EpisodicMemory
from mlot.memory.semantic import SemanticMemory
from mlot.model.model import MLoTSpark

from test_04_model import tiny_config

CHUNK, DIM, KEY_DIM = 2, 3, 3
QUIET = dict(min_access=10**6, importance_quantile=0.0, episodic_prune_score=-1.0, semantic_min_score=-1.0,
             semantic_decay=1.0)  # promotes and prunes nothing


def unit(*components):
    vector = np.array(components, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def make_memory(rows=1, capacity=8, slots=4, clock=0):
    """A hand-built stand-in for ModelMemory: episodic stores, semantic slots, a write clock."""
    return SimpleNamespace(episodic=[EpisodicMemory(capacity, CHUNK, DIM, KEY_DIM) for _ in range(rows)],
                           semantic=SemanticMemory(slots, KEY_DIM, DIM), write_step=np.array([clock]))


def write(store, key, value, importance=1.0, step=0, doc=0, access=0, length=CHUNK):
    """One entry whose valid tokens all equal `value`, so its pooled token state is `value`."""
    tokens = np.zeros((1, CHUNK, DIM), dtype=np.float32)
    tokens[0, :length] = value
    slot = int(store.write(tokens, [length], [key], np.zeros((1, DIM)), doc, step, [importance])[0])
    store.access_count[slot] = access
    return slot


# --- configuration and triggers --------------------------------------------------------------------
def test_config_rejects_bad_values_naming_the_key():
    with pytest.raises(ConfigError, match="merge_value_rate"):
        ConsolidationConfig(merge_value_rate=0.0)
    with pytest.raises(ConfigError, match="full_fraction"):
        ConsolidationConfig.from_dict({"full_fraction": 1.5})
    with pytest.raises(ConfigError, match="bogus"):
        ConsolidationConfig.from_dict({"bogus": 1})
    assert ConsolidationConfig.from_dict(ConsolidationConfig(interval=7).to_dict()).interval == 7


def test_triggers_fire_exactly_when_they_should():
    consolidator = MemoryConsolidator(ConsolidationConfig(interval=10, full_fraction=0.5, min_gap=3, **QUIET))
    memory = make_memory(capacity=4, slots=4)
    fired = {step: consolidator.step(memory, step) for step in range(0, 10)}
    assert all(event is None for event in fired.values())
    assert consolidator.step(memory, 10)["reason"] == "interval" and consolidator.last_step == 10
    for n in range(2):  # 2 of 4 entries: half full, and QUIET prunes nothing, so it stays full
        write(memory.episodic[0], unit(1, n, 0), np.ones(DIM), step=n)
    assert consolidator.step(memory, 11) is None and consolidator.step(memory, 12) is None  # gap < 3
    assert consolidator.step(memory, 13)["reason"] == "full"
    assert consolidator.step(memory, 14) is None
    assert consolidator.step(memory, 15, plateau=True)["reason"] == "plateau"
    assert consolidator.step(memory, 18)["reason"] == "full"
    memory.episodic[0].reset()
    assert [consolidator.step(memory, s) is not None for s in range(19, 29)] == [False] * 9 + [True]  # 28
    assert consolidator.step(memory, 38, plateau=True)["reason"] == "interval+plateau"
    assert consolidator.totals["events"] == 6
    assert [consolidator.totals[f"events_{name}"] for name in ("interval", "full", "plateau")] == [3, 2, 2]


def test_semantic_fullness_also_triggers():
    consolidator = MemoryConsolidator(ConsolidationConfig(interval=0, full_fraction=1.0, min_gap=0, **QUIET))
    memory = make_memory(slots=2)
    memory.semantic.consolidate([unit(1, 0, 0)], [np.zeros(DIM)], [1.0])
    assert consolidator.step(memory, 5) is None
    memory.semantic.consolidate([unit(0, 1, 0)], [np.zeros(DIM)], [1.0])
    assert consolidator.step(memory, 6)["reason"] == "full"


# --- promotion --------------------------------------------------------------------------------------
def test_promotion_picks_exactly_the_frequent_and_the_important_entries():
    config = ConsolidationConfig(min_access=2, importance_quantile=0.25, merge_threshold=0.999,
                                 episodic_prune_score=-1.0, semantic_min_score=-1.0)
    memory = make_memory(capacity=8, slots=8, clock=10)
    store = memory.episodic[0]
    # (importance, access, step): ceil(0.25 * 8) = 2 by importance -> slots 1 (5.0) and, of the
    # two 3.0 ties, the newer write (slot 4); by access -> slots 2 (2) and 6 (7).
    table = [(1.0, 0, 0), (5.0, 1, 1), (0.5, 2, 2), (3.0, 0, 1), (3.0, 1, 3), (0.1, 1, 4), (2.0, 7, 5), (0.0, 0, 6)]
    keys = np.random.default_rng(1).normal(size=(8, KEY_DIM))  # distinct directions, none merge at 0.999
    for n, (importance, access, step) in enumerate(table):
        write(store, keys[n], np.full(DIM, n), importance, step, access=access)
    consolidator = MemoryConsolidator(config)
    assert consolidator.promotion_candidates(store, 0).tolist() == [1, 2, 4, 6]
    counts = consolidator.consolidate(memory)
    assert counts["promoted"] == 4 and counts["allocated"] == 4
    # placed oldest write first: slot 1 (step 1), 2 (step 2), 4 (step 3), 6 (step 5)
    np.testing.assert_allclose(memory.semantic.values[:4, 0], [1, 2, 4, 6])
    # promoted once: a second event promotes nothing, even though the entries are still there
    assert consolidator.consolidate(memory)["promoted"] == 0 and store.size == 8
    # an entry removed and a new one written in its slot is a new entry, and may be promoted
    store.remove([6])
    assert write(store, keys[6], np.full(DIM, 9.0), step=11, access=3) == 6
    assert consolidator.promotion_candidates(store, 0).tolist() == [6]


def test_merge_allocate_replace_against_hand_made_keys():
    config = ConsolidationConfig(min_access=1, importance_quantile=0.0, merge_threshold=0.8,
                                 episodic_prune_score=-1.0, semantic_min_score=-1.0)
    memory = make_memory(capacity=8, slots=2, clock=5)
    memory.semantic.consolidate([unit(1, 0, 0)], [np.zeros(DIM)], [10.0])  # slot 0, high score
    store = memory.episodic[0]
    write(store, unit(1, 0.2, 0), np.ones(DIM), step=0, access=1)    # cos 0.98 with slot 0: merge
    write(store, unit(0, 1, 0), np.ones(DIM), step=1, access=1)      # cos 0: allocate slot 1
    write(store, unit(0, 0, 1), np.full(DIM, 2.0), 0.5, step=2, access=1)  # full: replace slot 1 (score 1 < 10.98)
    write(store, unit(0.5, 0, 0.9), np.ones(DIM), step=3, access=1)  # cos 0.49 and 0.87 (slot 1 now e2): merge into 1
    counts = MemoryConsolidator(config).consolidate(memory)
    assert (counts["promoted"], counts["merged"], counts["allocated"], counts["replaced"]) == (4, 2, 1, 1)
    semantic = memory.semantic
    assert semantic.member_count.tolist() == [2, 2]
    np.testing.assert_allclose(semantic.keys[0], unit(1 + unit(1, 0.2, 0)[0], unit(1, 0.2, 0)[1], 0), atol=1e-6)
    np.testing.assert_allclose(semantic.keys[1], unit(unit(0.5, 0, 0.9)[0], 0, 1 + unit(0.5, 0, 0.9)[2]), atol=1e-6)
    np.testing.assert_allclose(semantic.importance, [11.0, 1.5])
    assert semantic.graph.weights[0, 1] == 1.0  # one document, two concepts: a co-occurrence edge


# --- pruning and capacity -----------------------------------------------------------------------------
def test_episodic_pruning_follows_the_retention_formula():
    config = ConsolidationConfig(episodic_prune_score=0.5, min_access=10**6, importance_quantile=0.0)
    memory = make_memory(capacity=6, clock=50)
    store = memory.episodic[0]
    table = [(1.0, 0, 50), (1.0, 0, 0), (0.2, 3, 40), (0.2, 2, 40), (0.6, 0, 20), (0.0, 5, 10)]
    for n, (importance, access, step) in enumerate(table):
        write(store, unit(1, n, 1), np.ones(DIM), importance, step, access=access)
    retention = [importance * 0.99 ** (50 - step) + 0.1 * access for importance, access, step in table]
    # = 1.0, 0.605, 0.481, 0.381, 0.444, 0.5
    expected_kept = [n for n, score in enumerate(retention) if score >= 0.5]
    assert expected_kept == [0, 1, 5]
    counts = MemoryConsolidator(config).consolidate(memory)
    assert counts["episodic_pruned"] == 3 and np.flatnonzero(store.live).tolist() == expected_kept


def test_semantic_capacity_is_never_exceeded_and_counts_add_up():
    rng = np.random.default_rng(0)
    config = ConsolidationConfig(interval=1, full_fraction=1.0, min_gap=1000, min_access=1, importance_quantile=0.5, merge_threshold=0.9,
                                 semantic_capacity=3, semantic_min_score=0.2, semantic_decay=0.5)
    consolidator = MemoryConsolidator(config)
    memory = make_memory(rows=2, capacity=5, slots=6)
    events = []
    for step in range(1, 25):
        for row, store in enumerate(memory.episodic):
            write(store, rng.normal(size=KEY_DIM), rng.normal(size=DIM), rng.uniform(0, 2), step,
                  doc=row, access=int(rng.integers(0, 3)))
        memory.write_step[0] = step + 1
        event = consolidator.step(memory, step)
        events.append(event)
        assert memory.semantic.size <= 3
        assert event["promoted"] == event["merged"] + event["allocated"] + event["replaced"]
    assert all(events)
    for name in ("promoted", "merged", "allocated", "replaced", "episodic_pruned", "semantic_pruned"):
        assert consolidator.totals[name] == sum(event[name] for event in events)
    assert consolidator.totals["events"] == consolidator.totals["events_interval"] == 24
    assert consolidator.totals["semantic_pruned"] > 0 and consolidator.totals["merged"] > 0


# --- recency --------------------------------------------------------------------------------------------
def test_a_newer_value_for_the_same_key_wins_over_older_ones():
    config = ConsolidationConfig(min_access=1, importance_quantile=0.0, merge_threshold=0.8)
    consolidator = MemoryConsolidator(config)
    memory = make_memory(capacity=8, slots=4, clock=10)
    key, old_value, new_value = unit(1, 2, 3), np.array([1.0, 0, 0]), np.array([0, 5.0, 0])
    store = memory.episodic[0]
    for step in range(5):  # an old fact seen five times
        write(store, key, old_value, step=step, access=1)
    consolidator.consolidate(memory, reason="document_end")
    memory.episodic[0].reset()
    write(store, key, new_value, step=9, access=1)  # the same key with a new value, later
    counts = consolidator.consolidate(memory, reason="document_end")
    assert counts["merged"] == 1 and memory.semantic.size == 1
    slot_value = memory.semantic.values[0].astype(np.float64)
    assert np.linalg.norm(slot_value - new_value) < np.linalg.norm(slot_value - old_value)
    np.testing.assert_allclose(slot_value, old_value + 0.75 * (new_value - old_value), atol=1e-6)
    assert consolidator.totals["events_document_end"] == 2


def test_within_one_event_the_newest_write_is_placed_last():
    consolidator = MemoryConsolidator(ConsolidationConfig(min_access=1, importance_quantile=0.0))
    memory = make_memory(rows=2, capacity=4, slots=4, clock=10)
    key = unit(0, 1, 1)
    write(memory.episodic[0], key, np.full(DIM, 7.0), step=8, access=1)  # row 0 holds the newer fact
    write(memory.episodic[1], key, np.full(DIM, 3.0), step=2, access=1)
    consolidator.consolidate(memory)
    np.testing.assert_allclose(memory.semantic.values[0], 3.0 + 0.75 * 4.0)


# --- state ------------------------------------------------------------------------------------------------
def test_state_round_trip_resumes_the_same_schedule_and_promotion_marks():
    config = ConsolidationConfig(interval=5, full_fraction=1.0, min_access=1, importance_quantile=0.0,
                                 episodic_prune_score=-1.0)
    original = MemoryConsolidator(config)
    memory = make_memory(capacity=8, slots=4, clock=3)
    write(memory.episodic[0], unit(1, 0, 0), np.ones(DIM), step=1, access=1)
    assert original.step(memory, 7)["promoted"] == 1
    restored = MemoryConsolidator(config)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert restored.totals == original.totals and restored.last_step == 7
    assert restored.promotion_candidates(memory.episodic[0], 0).size == 0
    outcomes = [(restored.step(memory, s) is None, original.step(memory, s) is None) for s in range(8, 20)]
    assert all(a == b for a, b in outcomes) and [not a for a, _ in outcomes].count(True) == 2  # 12, 17
    with pytest.raises(KeyError, match="totals"):
        MemoryConsolidator(config).load_state_dict({"last_step": 0, "promoted": []})


# --- the real model's memory ----------------------------------------------------------------------------
def test_consolidating_a_real_model_memory_keeps_it_usable():
    model = MLoTSpark(tiny_config(semantic_slots=3), seed=0)
    model.reset_memory(batch_size=2)
    rng = np.random.default_rng(0)
    for _ in range(4):
        model.write_memory([rng.integers(10, 40, 12) for _ in range(2)], doc_ids=[4, 9])
    memory = model.memory
    live_before = [store.size for store in memory.episodic]
    consolidator = MemoryConsolidator(ConsolidationConfig(min_access=10**6, importance_quantile=0.5,
                                                          merge_threshold=0.95, semantic_capacity=2))
    counts = consolidator.consolidate(memory, rows=[0], reason="document_end")
    assert counts["promoted"] == math.ceil(live_before[0] / 2) > 0  # importance = surprise = 1 for every entry
    assert counts["promoted"] == counts["merged"] + counts["allocated"] + counts["replaced"]
    assert 0 < memory.semantic.size <= 2
    assert [store.size for store in memory.episodic] == [live_before[0] - counts["episodic_pruned"], live_before[1]]
    memory.reset([0])
    model.write_memory([rng.integers(10, 40, 12) for _ in range(2)], doc_ids=[5, 9])  # still runs, reads slots
