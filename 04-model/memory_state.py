"""The model's memory state: the cascade of `mlot.memory`, plus a side track riding along the
working cache with each token's id and surprise, so that an episodic entry written when its
tokens leave the cache knows its text (for its retrieval key and for inspection) and carries
the reconstruction loss its tokens had when they were read (its importance).
"""
from __future__ import annotations

import numpy as np

from mlot.memory.cascade import MemoryCascade
from mlot.memory.chunking import ChunkBuffer
from mlot.memory.working import WorkingMemory


_OWN_ARRAYS = ("entry_tokens", "entry_previous", "last_archived", "entry_serial", "chunks_archived", "doc_ids",
               "write_step")
SIDE_CHANNELS = 2  # token id (exact in float32 below 2^24), surprise


class ModelMemory:
    """Memory of `batch` document streams: per-row working cache, chunks and episodic store;
    shared semantic slots; per-row document ids; a write counter (the episodic write step)."""

    def __init__(self, config, batch: int):
        self.batch = batch
        self.cascade = MemoryCascade(config.n_layers, batch, config.d_model, config.retriever_dim,
                                     config.working_cache_len, config.episodic_capacity, config.chunk_len,
                                     config.semantic_slots)
        self.side = WorkingMemory(1, config.working_cache_len, SIDE_CHANNELS, batch)  # (token id, surprise)
        self.side_chunks = ChunkBuffer(batch, config.chunk_len, SIDE_CHANNELS)
        self.entry_tokens = np.full((batch, config.episodic_capacity, config.chunk_len), -1, dtype=np.int64)
        # the copy_context tokens before each entry's text and the last ones archived (the next entry's),
        # oldest first: the copy head keys a token by what came before it
        self.entry_previous = np.full((batch, config.episodic_capacity, config.copy_context), -1, dtype=np.int64)
        self.last_archived = np.full((batch, config.copy_context), -1, dtype=np.int64)
        # each entry's place among the chunks its row archived: what was written right after a retrieved
        # entry (a fact cut in two at a chunk boundary, "the code of the red box is | 42") is read with it
        self.entry_serial = np.full((batch, config.episodic_capacity), -1, dtype=np.int64)
        self.chunks_archived = np.zeros(batch, dtype=np.int64)
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
        self.side.reset(rows)
        self.side_chunks.reset(rows)
        selected = slice(None) if rows is None else np.atleast_1d(rows)
        self.entry_tokens[selected] = -1
        self.entry_previous[selected] = -1
        self.last_archived[selected] = -1
        self.entry_serial[selected] = -1
        self.chunks_archived[selected] = 0
        self.doc_ids[selected] = -1

    def state_dict(self) -> dict:
        state = {f"cascade.{k}": v for k, v in self.cascade.state_dict().items()}
        state.update({f"side.{k}": v for k, v in self.side.state_dict().items()})
        state.update({f"side_chunks.{k}": v for k, v in self.side_chunks.state_dict().items()})
        for name in _OWN_ARRAYS:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        parts = {"cascade": {}, "side": {}, "side_chunks": {}}
        for name, array in state.items():
            head, _, rest = name.partition(".")
            if head in parts and rest:
                parts[head][rest] = array
            elif name not in _OWN_ARRAYS:
                raise KeyError(f"memory state: unexpected key '{name}'")
        for name in _OWN_ARRAYS:
            if name not in state or np.shape(state[name]) != getattr(self, name).shape:
                raise ValueError(f"memory state: '{name}' is missing or has the wrong shape for a batch of {self.batch}")
        self.cascade.load_state_dict(parts["cascade"])
        self.side.load_state_dict(parts["side"])
        self.side_chunks.load_state_dict(parts["side_chunks"])
        for name in _OWN_ARRAYS:
            setattr(self, name, np.array(state[name], dtype=np.int64))

    def stats(self) -> dict:
        return self.cascade.stats()
