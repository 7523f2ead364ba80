"""Semantic memory: long-lived concept slots filled by consolidating episodic entries.

A slot is a normalised key, a value, and counts of how often it was read (usage) and how many
episodic entries it absorbed (members). It survives the per-document reset: only `reset_all`
empties it. Consolidation, which the training stage schedules, takes entries one by one in
input order (so the result is deterministic):
- merge into the nearest live slot when cosine(entry key, slot key) >= merge_threshold
  (nearest = highest cosine, ties to the lower slot): the slot key becomes the renormalised
  running mean of its members' keys, the value their running mean, members += 1,
  importance += the entry's importance;
- else allocate the lowest free slot;
- else replace the live slot with the lowest score (ties to the lower slot), dropping its edges.
Slot score (what replacement and pruning keep): importance + usage_weight * usage_count, where
importance is the summed importance of the members (scaled down by `decay`).

Coherence is the mean member-to-slot cosine: each member adds its similarity to the slot key
just after it joined (1 for the member that allocated the slot).
"""
from __future__ import annotations

import numpy as np

from mlot.memory.episodic import normalize_rows
from mlot.memory.graph import MemoryGraph
from mlot.memory.kernels import topk_cosine
from mlot.memory.state import checked_arrays, export_arrays

MERGED, ALLOCATED, REPLACED = 0, 1, 2


class SemanticMemory:
    """`slots` concept slots with keys (key_dim,), values (dim,), statistics, and a MemoryGraph."""

    _ARRAYS = ("keys", "values", "usage_count", "member_count", "importance", "live", "similarity_sum")

    def __init__(self, slots: int, key_dim: int, dim: int, usage_weight: float = 0.1,
                 co_retrieval_weight: float = 1.0, co_occurrence_weight: float = 1.0):
        for name, value, least in (("slots", slots, 0), ("key_dim", key_dim, 1), ("dim", dim, 1)):
            if not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"SemanticMemory: {name} must be an integer >= {least}, got {value!r}")
        self.slots, self.key_dim, self.dim = int(slots), int(key_dim), int(dim)
        self.usage_weight = float(usage_weight)
        self.co_retrieval_weight, self.co_occurrence_weight = float(co_retrieval_weight), float(co_occurrence_weight)
        self.graph = MemoryGraph(self.slots)
        self.reset_all()

    # --- consolidation -------------------------------------------------------------------------
    def consolidate(self, keys, values, importance, merge_threshold: float = 0.8, source_ids=None):
        """Merge, allocate or replace for each entry (rules in the module docstring).

        keys (n, key_dim), values (n, dim), importance (n,); source_ids (n,) optional ints: the
        slots of entries from one source (e.g. a document) get co-occurrence edges.
        Returns the counts (merged, allocated, replaced).
        """
        keys = np.asarray(keys, dtype=np.float32)
        values = np.asarray(values, dtype=np.float32)
        importance = np.asarray(importance, dtype=np.float32)
        n = len(keys)
        for name, array, shape in (("keys", keys, (n, self.key_dim)), ("values", values, (n, self.dim)),
                                   ("importance", importance, (n,))):
            if array.shape != shape:
                raise ValueError(f"SemanticMemory.consolidate: {name} of shape {array.shape}, expected {shape}")
        if not (np.isfinite(keys).all() and np.isfinite(values).all() and np.isfinite(importance).all()):
            raise ValueError("SemanticMemory.consolidate: keys, values and importance must be finite")
        if source_ids is not None and np.shape(source_ids) != (n,):
            raise ValueError(f"SemanticMemory.consolidate: source_ids of shape {np.shape(source_ids)}, expected {(n,)}")
        keys = normalize_rows(keys)
        counts = [0, 0, 0]
        entry_slots = np.full(n, -1, dtype=np.int64)
        for entry in range(n if self.slots else 0):
            slot, action = self._place(keys[entry], values[entry], importance[entry], merge_threshold)
            if action == REPLACED:
                entry_slots[entry_slots == slot] = -1  # earlier entries of this call left with the old concept
            entry_slots[entry] = slot
            counts[action] += 1
        if source_ids is not None:
            self._link_sources(entry_slots, np.asarray(source_ids))
        return tuple(counts)

    def _place(self, key: np.ndarray, value: np.ndarray, importance: float, merge_threshold: float):
        live_slots = np.flatnonzero(self.live)
        if live_slots.size:
            similarity = self.keys[live_slots].astype(np.float64) @ key.astype(np.float64)
            nearest = int(np.argmax(similarity))  # first maximum: the lowest slot
            if similarity[nearest] >= merge_threshold:
                slot = int(live_slots[nearest])
                self._merge(slot, key, value, importance)
                return slot, MERGED
        free_slots = np.flatnonzero(~self.live)
        if free_slots.size:
            slot, action = int(free_slots[0]), ALLOCATED
        else:
            slot, action = int(np.argmin(self.score())), REPLACED  # first minimum: the lowest slot
            self.remove(np.array([slot]))
        self.keys[slot], self.values[slot] = key, value
        self.member_count[slot], self.importance[slot] = 1, importance
        self.similarity_sum[slot] = float(key.astype(np.float64) @ key)  # 1, or 0 for a zero key
        self.live[slot] = True
        return slot, action

    def _merge(self, slot: int, key: np.ndarray, value: np.ndarray, importance: float) -> None:
        members = self.member_count[slot]
        self.keys[slot] = normalize_rows(self.keys[slot].astype(np.float64) * members + key)
        self.values[slot] += (value - self.values[slot]) / np.float32(members + 1)
        self.member_count[slot] = members + 1
        self.importance[slot] += importance
        self.similarity_sum[slot] += float(self.keys[slot].astype(np.float64) @ key)

    def _link_sources(self, entry_slots: np.ndarray, source_ids: np.ndarray) -> None:
        for source in np.unique(source_ids):
            self.graph.add_edges(entry_slots[source_ids == source], self.co_occurrence_weight)

    # --- forgetting ----------------------------------------------------------------------------
    def score(self) -> np.ndarray:
        """Keep-worthiness of every slot (slots,) float64: importance + usage_weight * usage_count; +inf if dead."""
        score = self.importance.astype(np.float64) + self.usage_weight * self.usage_count
        return np.where(self.live, score, np.inf)

    def remove(self, slots) -> None:
        """Forget the given slots (an index array) and their edges; they become free and hold zeros."""
        slots = np.asarray(slots, dtype=np.int64)
        for name in self._ARRAYS:
            getattr(self, name)[slots] = 0
        self.graph.remove_node(slots)

    def prune(self, min_score: float) -> int:
        """Forget every live slot whose score is below min_score; returns how many."""
        doomed = np.flatnonzero(self.score() < min_score)
        self.remove(doomed)
        return len(doomed)

    def keep_within(self, n: int) -> int:
        """Forget the lowest-scored slots (ties: lower slot first) until at most n are live; returns how many."""
        excess = self.size - max(int(n), 0)
        if excess <= 0:
            return 0
        slots = np.arange(self.slots)
        doomed = np.lexsort((slots, self.score()))[:excess]
        self.remove(doomed)
        return excess

    def decay(self, factor: float) -> None:
        """Scale importances and graph edges by factor in [0, 1], so unrenewed concepts lose their place."""
        self.graph.decay(factor)
        self.importance *= np.float32(factor)

    def reset_all(self) -> None:
        """Empty every slot, the graph and the counters. (There is no per-document reset: slots persist.)"""
        self.keys = np.zeros((self.slots, self.key_dim), dtype=np.float32)
        self.values = np.zeros((self.slots, self.dim), dtype=np.float32)
        self.usage_count = np.zeros(self.slots, dtype=np.int64)
        self.member_count = np.zeros(self.slots, dtype=np.int64)
        self.importance = np.zeros(self.slots, dtype=np.float32)
        self.live = np.zeros(self.slots, dtype=bool)
        self.similarity_sum = np.zeros(self.slots, dtype=np.float64)
        self.graph.reset()
        self.hits, self.queries = 0, 0

    # --- reading -------------------------------------------------------------------------------
    def search(self, query, k: int, record: bool = True):
        """Top-k live slots by cosine similarity to query (key_dim,) or (Q, key_dim).

        With record, usage_count += 1 per returned slot and query, the slots returned together
        for one query get co-retrieval edges, and the hit and query counters grow.
        """
        query = np.asarray(query, dtype=np.float32)
        if query.shape[-1:] != (self.key_dim,) or query.ndim not in (1, 2):
            raise ValueError(f"SemanticMemory.search: query of shape {query.shape}, expected (key_dim={self.key_dim},)"
                             f" or (Q, {self.key_dim})")
        indices, scores = topk_cosine(query, self.keys, k, self.live)
        if record:
            np.add.at(self.usage_count, indices.ravel(), 1)
            self.graph.add_edges(indices, self.co_retrieval_weight)
            self.hits += indices.size
            self.queries += 1 if query.ndim == 1 else len(query)
        return indices, scores

    def adjacency(self) -> np.ndarray:
        """The graph's row-normalised adjacency over live slots, the input the GNN expects."""
        return self.graph.normalized_adjacency(self.live)

    # --- statistics and state ------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(np.count_nonzero(self.live))

    def coherence(self) -> float:
        """Mean member-to-slot cosine similarity over all members of live slots; 0 without members."""
        members = int(self.member_count[self.live].sum())
        return float(self.similarity_sum[self.live].sum() / members) if members else 0.0

    def stats(self) -> dict:
        return {"semantic_size": self.size, "semantic_coherence": self.coherence(),
                "semantic_hits": self.hits, "semantic_queries": self.queries}

    def state_dict(self) -> dict:
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        graph = {f"graph.{name}": array for name, array in self.graph.state_dict().items()}
        return export_arrays({**arrays, **graph, "hits": np.int64(self.hits), "queries": np.int64(self.queries)})

    def load_state_dict(self, state: dict) -> None:
        graph_state = {name[len("graph."):]: array for name, array in state.items() if name.startswith("graph.")}
        own_state = {name: array for name, array in state.items() if not name.startswith("graph.")}
        expected = {name: getattr(self, name) for name in self._ARRAYS}
        arrays = checked_arrays("SemanticMemory", own_state, {**expected, "hits": np.int64(0), "queries": np.int64(0)})
        self.graph.load_state_dict(graph_state)
        for name in self._ARRAYS:
            setattr(self, name, arrays[name])
        self.hits, self.queries = int(arrays["hits"]), int(arrays["queries"])
