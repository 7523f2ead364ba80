"""The whole memory state of a model reading `batch` document streams, as one object.

    segment -> working cache (per layer) -> evicted states -> chunks -> episodic store (per row)
            -> consolidation -> semantic slots + graph (shared by all rows, survives resets)

It owns the per-document / per-session state and the long-lived state, so that `reset(rows)`
clears exactly the per-document part of the given rows, `state_dict()` is one flat dict of
arrays ("working.states", "episodic.3.keys", "semantic.graph.weights", ...), and `stats()`
gathers the statistics the training log reports. The trainable parts (retriever projection,
GNN) are modules of the model, not state here.
"""
from __future__ import annotations

import copy

import numpy as np

from mlot.memory.chunking import ChunkBuffer
from mlot.memory.episodic import EpisodicMemory
from mlot.memory.semantic import SemanticMemory
from mlot.memory.working import WorkingMemory


class MemoryCascade:
    """WorkingMemory + ChunkBuffer + one EpisodicMemory per batch row + one SemanticMemory."""

    def __init__(self, n_layers: int, batch: int, dim: int, key_dim: int, working_capacity: int,
                 episodic_capacity: int, chunk_len: int, semantic_slots: int):
        self.batch = batch
        self.working = WorkingMemory(n_layers, working_capacity, dim, batch)
        self.chunks = ChunkBuffer(batch, chunk_len, dim)
        self.episodic = [EpisodicMemory(episodic_capacity, chunk_len, dim, key_dim) for _ in range(batch)]
        self.semantic = SemanticMemory(semantic_slots, key_dim, dim)

    def reset(self, rows=None) -> None:
        """A new document (or session) starts in the given rows (all when None).

        Clears their working cache, pending chunk and episodic store; semantic memory survives.
        """
        rows = list(range(self.batch)) if rows is None else [int(row) for row in np.atleast_1d(rows)]
        self.working.reset(rows)
        self.chunks.reset(rows)
        for row in rows:
            self.episodic[row].reset()

    def reset_all(self) -> None:
        """Forget everything, semantic memory included."""
        self.reset()
        self.semantic.reset_all()

    def _parts(self) -> dict:
        parts = {"working": self.working, "chunks": self.chunks, "semantic": self.semantic}
        parts.update({f"episodic.{row}": store for row, store in enumerate(self.episodic)})
        return parts

    def state_dict(self) -> dict:
        return {f"{prefix}.{name}": array for prefix, part in self._parts().items()
                for name, array in part.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        """Load every part, or none: a bad key leaves this cascade as it was."""
        fresh = copy.deepcopy(self)
        parts = fresh._parts()
        split = {prefix: {} for prefix in parts}
        for name, array in state.items():
            head, _, rest = name.partition(".")
            if head == "episodic":  # "episodic.<row>.<array>"
                row, _, rest = rest.partition(".")
                head = f"episodic.{row}"
            if head not in split or not rest:
                raise KeyError(f"MemoryCascade.load_state_dict: unexpected key '{name}'")
            split[head][rest] = array
        for prefix, part in parts.items():
            part.load_state_dict(split[prefix])
        self.__dict__.update(fresh.__dict__)

    def stats(self) -> dict:
        """working_usage; episodic size and diversity averaged over rows, hits and queries summed; semantic stats."""
        episodic = [store.stats() for store in self.episodic]
        return {**self.working.stats(),
                "episodic_size": float(np.mean([s["episodic_size"] for s in episodic])),
                "episodic_diversity": float(np.mean([s["episodic_diversity"] for s in episodic])),
                "episodic_hits": int(sum(s["episodic_hits"] for s in episodic)),
                "episodic_queries": int(sum(s["episodic_queries"] for s in episodic)),
                **self.semantic.stats()}
