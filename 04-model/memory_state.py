"""The model's memory state: the cascade of `mlot.memory`, plus each token's surprise riding
along the working cache, so that an episodic entry written when its tokens leave the cache
carries the reconstruction loss its tokens had when they were read (its importance).
"""
from __future__ import annotations

import numpy as np

from mlot.memory.cascade import MemoryCascade
from mlot.memory.chunking import ChunkBuffer
from mlot.memory.working import WorkingMemory


class ModelMemory:
    """Memory of `batch` document streams: per-row working cache, chunks and episodic store;
    shared semantic slots; per-row document ids; a write counter (the episodic write step)."""

    def __init__(self, config, batch: int):
        self.batch = batch
        self.cascade = MemoryCascade(config.n_layers, batch, config.d_model, config.retriever_dim,
                                     config.working_cache_len, config.episodic_capacity, config.chunk_len,
                                     config.semantic_slots)
        self.surprise = WorkingMemory(1, config.working_cache_len, 1, batch)
        self.surprise_chunks = ChunkBuffer(batch, config.chunk_len, 1)
        self.doc_ids = np.full(batch, -1, dtype=np.int64)
        self.write_step = np.zeros(1, dtype=np.int64)

    @property
    def working(self):
        return self.cascade.working

    @property
    def episodic(self):
        return self.cascade.episodic

    @property
    def semantic(self):
        return self.cascade.semantic

    def reset(self, rows=None) -> None:
        """New documents start in `rows` (all when None); semantic memory survives."""
        self.cascade.reset(rows)
        self.surprise.reset(rows)
        self.surprise_chunks.reset(rows)
        self.doc_ids[slice(None) if rows is None else np.atleast_1d(rows)] = -1

    def state_dict(self) -> dict:
        state = {f"cascade.{k}": v for k, v in self.cascade.state_dict().items()}
        state.update({f"surprise.{k}": v for k, v in self.surprise.state_dict().items()})
        state.update({f"surprise_chunks.{k}": v for k, v in self.surprise_chunks.state_dict().items()})
        state["doc_ids"], state["write_step"] = self.doc_ids.copy(), self.write_step.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        parts = {"cascade": {}, "surprise": {}, "surprise_chunks": {}}
        for name, array in state.items():
            head, _, rest = name.partition(".")
            if head in parts and rest:
                parts[head][rest] = array
            elif name not in ("doc_ids", "write_step"):
                raise KeyError(f"memory state: unexpected key '{name}'")
        for name in ("doc_ids", "write_step"):
            if name not in state or np.shape(state[name]) != getattr(self, name).shape:
                raise ValueError(f"memory state: '{name}' is missing or has the wrong shape for a batch of {self.batch}")
        self.cascade.load_state_dict(parts["cascade"])
        self.surprise.load_state_dict(parts["surprise"])
        self.surprise_chunks.load_state_dict(parts["surprise_chunks"])
        self.doc_ids = np.array(state["doc_ids"], dtype=np.int64)
        self.write_step = np.array(state["write_step"], dtype=np.int64)

    def stats(self) -> dict:
        return self.cascade.stats()
