"""Episodic memory: chunks of past token states, found again by a retrieval key.

Each entry holds `chunk_len` token states (the values) so that exact details can be copied back
by attention later (RETRO, Memorizing Transformers), one L2-normalised retrieval key projected
from the chunk by the model's retriever, and the raw `pooled` vector the key was projected
from, so that a loss can recompute the key with gradient. Entries carry their document id,
write step, access count and importance (surprise), which decide what to forget when full.

Retention rule. When a write would exceed the capacity, the live entries and the incoming ones
compete on
    retention = importance * recency_decay ** (step - write_step) + access_bonus * access_count
(step = the write's step; incoming entries have age 0 and no accesses). The lowest are
dropped, ties going first to the older write step, then to the lower slot (existing entries
before incoming ones, incoming in input order). A dropped incoming entry gets slot -1.
"""
from __future__ import annotations

import numpy as np

from mlot.memory.kernels import topk_cosine
from mlot.memory.state import checked_arrays, export_arrays, require


def normalize_rows(vectors) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64, then float32; a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


def mean_pairwise_cosine(unit_keys: np.ndarray) -> float:
    """Mean cosine similarity over the pairs of distinct rows of L2-normalised (or zero) keys.

    sum_{i != j} k_i . k_j = |sum_i k_i|^2 - sum_i |k_i|^2, so no (n, n) matrix is formed.
    Needs n >= 2.
    """
    n = len(unit_keys)
    keys = unit_keys.astype(np.float64)
    total = keys.sum(axis=0)
    return float((total @ total - np.einsum("nd,nd->", keys, keys)) / (n * (n - 1)))


class EpisodicMemory:
    """One store of chunk entries (the model keeps one per document stream)."""

    _ARRAYS = ("keys", "values", "lengths", "pooled", "doc_id", "write_step", "access_count", "importance", "live")

    def __init__(self, capacity: int, chunk_len: int, dim: int, key_dim: int,
                 recency_decay: float = 0.99, access_bonus: float = 0.1):
        for name, value, least in (("capacity", capacity, 0), ("chunk_len", chunk_len, 1), ("dim", dim, 1),
                                   ("key_dim", key_dim, 1)):
            if not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"EpisodicMemory: {name} must be an integer >= {least}, got {value!r}")
        if not 0.0 < recency_decay <= 1.0 or access_bonus < 0.0:
            raise ValueError(f"EpisodicMemory: recency_decay must lie in (0, 1] and access_bonus be >= 0, "
                             f"got {recency_decay} and {access_bonus}")
        self.capacity, self.chunk_len, self.dim, self.key_dim = int(capacity), int(chunk_len), int(dim), int(key_dim)
        self.recency_decay, self.access_bonus = float(recency_decay), float(access_bonus)
        self.reset()

    # --- writing -----------------------------------------------------------------------------
    def write(self, values, lengths, keys, pooled, doc_id, step: int, importance) -> np.ndarray:
        """Store n chunks; returns their slots (n,) int64, -1 for an entry the retention rule dropped.

        values (n, chunk_len, dim) with lengths (n,) valid tokens each (1..chunk_len, the rest
        ignored and stored as zero); keys (n, key_dim), stored normalised; pooled (n, dim);
        doc_id an int or (n,) ints; step the current step; importance (n,) (e.g. surprise).
        """
        values, lengths, keys, pooled, doc_id, importance = self._checked_entries(
            values, lengths, keys, pooled, doc_id, importance)
        n = len(values)
        slots = np.full(n, -1, dtype=np.int64)
        kept = self._make_room(step, importance)
        free = np.flatnonzero(~self.live)[:int(kept.sum())]
        slots[kept] = free
        token_is_valid = np.arange(self.chunk_len) < lengths[kept, None]  # (kept, chunk_len)
        self.values[free] = values[kept] * token_is_valid[:, :, None]
        self.lengths[free] = lengths[kept]
        self.keys[free] = normalize_rows(keys[kept])
        self.pooled[free] = pooled[kept]
        self.doc_id[free] = doc_id[kept]
        self.write_step[free] = step
        self.access_count[free] = 0
        self.importance[free] = importance[kept]
        self.live[free] = True
        return slots

    def retention(self, step: int) -> np.ndarray:
        """Retention score (capacity,) float64 of every slot at `step` (meaningless for dead slots)."""
        age = np.maximum(step - self.write_step, 0)
        return self.importance * self.recency_decay ** age + self.access_bonus * self.access_count

    def _make_room(self, step: int, importance: np.ndarray) -> np.ndarray:
        """Evict the entries that lose on retention; returns which incoming entries are kept."""
        live_slots = np.flatnonzero(self.live)
        excess = len(live_slots) + len(importance) - self.capacity
        kept = np.ones(len(importance), dtype=bool)
        if excess <= 0:
            return kept
        scores = np.concatenate([self.retention(step)[live_slots], importance.astype(np.float64)])
        write_steps = np.concatenate([self.write_step[live_slots], np.full(len(importance), step)])
        candidates = np.arange(len(scores))  # existing slots in order, then incoming in input order
        losers = np.lexsort((candidates, write_steps, scores))[:excess]
        self.remove(live_slots[losers[losers < len(live_slots)]])
        kept[losers[losers >= len(live_slots)] - len(live_slots)] = False
        return kept

    def _checked_entries(self, values, lengths, keys, pooled, doc_id, importance):
        values = np.asarray(values, dtype=np.float32)
        n = values.shape[0] if values.ndim == 3 else -1
        if values.shape[1:] != (self.chunk_len, self.dim) or n < 0:
            raise ValueError(f"EpisodicMemory.write: values of shape {values.shape}, "
                             f"expected (n, chunk_len={self.chunk_len}, dim={self.dim})")
        lengths = np.asarray(lengths)
        keys = np.asarray(keys, dtype=np.float32)
        pooled = np.asarray(pooled, dtype=np.float32)
        importance = np.asarray(importance, dtype=np.float32)
        doc_id = np.asarray(doc_id)
        doc_id = np.full(n, doc_id) if doc_id.ndim == 0 else doc_id
        for name, array, shape in (("lengths", lengths, (n,)), ("doc_id", doc_id, (n,)),
                                   ("keys", keys, (n, self.key_dim)),
                                   ("pooled", pooled, (n, self.dim)), ("importance", importance, (n,))):
            if array.shape != shape:
                raise ValueError(f"EpisodicMemory.write: {name} of shape {array.shape}, expected {shape}")
        if lengths.dtype.kind not in "iu" or doc_id.dtype.kind not in "iu":
            raise TypeError(f"EpisodicMemory.write: lengths and doc_id must be integers, "
                            f"got {lengths.dtype} and {doc_id.dtype}")
        if n and (lengths.min() < 1 or lengths.max() > self.chunk_len):
            raise ValueError(f"EpisodicMemory.write: lengths must lie in [1, {self.chunk_len}], "
                             f"got {lengths.min()}..{lengths.max()}")
        if not (np.isfinite(keys).all() and np.isfinite(importance).all()):
            raise ValueError("EpisodicMemory.write: keys and importance must be finite")
        return values, lengths.astype(np.int32), keys, pooled, doc_id.astype(np.int64), importance

    # --- reading -----------------------------------------------------------------------------
    def search(self, query, k: int, record: bool = True):
        """Top-k live entries by cosine similarity to query (key_dim,) or (Q, key_dim).

        Returns (slot indices, scores) as topk_cosine does (1-D for one query). With record,
        each returned entry's access_count grows by one per query that returned it, and the
        hit and query counters grow (use record=False for a loss that only looks).
        """
        query = np.asarray(query, dtype=np.float32)
        if query.shape[-1:] != (self.key_dim,) or query.ndim not in (1, 2):
            raise ValueError(f"EpisodicMemory.search: query of shape {query.shape}, expected (key_dim={self.key_dim},)"
                             f" or (Q, {self.key_dim})")
        indices, scores = topk_cosine(query, self.keys, k, self.live)
        if record:
            np.add.at(self.access_count, indices.ravel(), 1)
            self.hits += indices.size
            self.queries += 1 if query.ndim == 1 else len(query)
        return indices, scores

    def gather(self, indices):
        """The valid token states of the given entries, packed in the order given: (tokens (total, dim), total)."""
        indices = self._checked_slots(indices, "gather")
        token_is_valid = np.arange(self.chunk_len) < self.lengths[indices, None]  # (n, chunk_len)
        tokens = self.values[indices][token_is_valid]  # (total, dim), entry by entry, tokens in order
        return tokens, len(tokens)

    # --- forgetting ----------------------------------------------------------------------------
    def remove(self, indices) -> None:
        """Forget the given entries; their slots become free and hold zeros."""
        indices = self._checked_slots(indices, "remove")
        for name in self._ARRAYS:
            getattr(self, name)[indices] = 0

    def reset(self) -> None:
        """Forget everything, counters included: a new document or session starts."""
        self.keys = np.zeros((self.capacity, self.key_dim), dtype=np.float32)
        self.values = np.zeros((self.capacity, self.chunk_len, self.dim), dtype=np.float32)
        self.lengths = np.zeros(self.capacity, dtype=np.int32)
        self.pooled = np.zeros((self.capacity, self.dim), dtype=np.float32)
        self.doc_id = np.zeros(self.capacity, dtype=np.int64)
        self.write_step = np.zeros(self.capacity, dtype=np.int64)
        self.access_count = np.zeros(self.capacity, dtype=np.int64)
        self.importance = np.zeros(self.capacity, dtype=np.float32)
        self.live = np.zeros(self.capacity, dtype=bool)
        self.hits, self.queries = 0, 0

    # --- statistics and state ------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(np.count_nonzero(self.live))

    def diversity(self) -> float:
        """Mean pairwise cosine distance (1 - cosine) of the live keys; 0 with fewer than two."""
        return 1.0 - mean_pairwise_cosine(self.keys[self.live]) if self.size >= 2 else 0.0

    def stats(self) -> dict:
        return {"episodic_size": self.size, "episodic_diversity": self.diversity(),
                "episodic_hits": self.hits, "episodic_queries": self.queries}

    def state_dict(self) -> dict:
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        return export_arrays({**arrays, "hits": np.int64(self.hits), "queries": np.int64(self.queries)})

    def load_state_dict(self, state: dict) -> None:
        expected = {name: getattr(self, name) for name in self._ARRAYS}
        arrays = checked_arrays("EpisodicMemory", state, {**expected, "hits": np.int64(0), "queries": np.int64(0)})
        live, lengths = arrays["live"], arrays["lengths"]
        require("EpisodicMemory", bool(np.all((lengths[live] >= 1) & (lengths[live] <= self.chunk_len))),
                f"'lengths' of live entries must lie in [1, {self.chunk_len}]")
        for name in self._ARRAYS:
            setattr(self, name, arrays[name])
        self.hits, self.queries = int(arrays["hits"]), int(arrays["queries"])

    def _checked_slots(self, indices, op: str) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(f"EpisodicMemory.{op}: indices must be a 1-D integer array, got {indices.dtype} "
                             f"{indices.shape}")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity or not self.live[indices].all()):
            raise IndexError(f"EpisodicMemory.{op}: indices {indices.tolist()} must name live entries "
                             f"of a store of capacity {self.capacity}")
        return indices
