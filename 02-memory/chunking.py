"""Cutting the token states that leave the working cache into episodic chunks of `chunk_len` tokens.

Evictions come in arbitrary counts per segment, so each batch row keeps a pending partial chunk
until it has `chunk_len` tokens. At the end of a document `flush` hands out the partial rest
with its true length, so a document shorter than one chunk still gives one entry. The pending
tokens are per-document state: they are part of the checkpoint and of `reset`.
"""
from __future__ import annotations

import numpy as np

from mlot.memory.state import checked_arrays, export_arrays, require


class ChunkBuffer:
    """Per batch row, the pending (chunk_len, dim) partial chunk and how many tokens it holds."""

    def __init__(self, batch: int, chunk_len: int, dim: int):
        for name, value in (("batch", batch), ("chunk_len", chunk_len), ("dim", dim)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ChunkBuffer: {name} must be a positive integer, got {value!r}")
        self.batch, self.chunk_len, self.dim = int(batch), int(chunk_len), int(dim)
        self.pending = np.zeros((self.batch, self.chunk_len, self.dim), dtype=np.float32)
        self.pending_lengths = np.zeros(self.batch, dtype=np.int64)

    def push(self, evicted: list) -> list:
        """Add each row's evicted states (n_b, dim), oldest first; returns each row's completed chunks.

        The result has one (chunks (m_b, chunk_len, dim), lengths (m_b,)) pair per row, every
        length equal to chunk_len; the tokens that do not fill a chunk stay pending.
        """
        if len(evicted) != self.batch:
            raise ValueError(f"ChunkBuffer.push: {len(evicted)} rows of states for a batch of {self.batch}")
        return [self._push_row(row, np.asarray(states, dtype=np.float32)) for row, states in enumerate(evicted)]

    def flush(self, rows=None) -> list:
        """Hand out and clear the pending partial chunk of the given rows (all when None), a document ending.

        Returns per requested row (chunks (m, chunk_len, dim), lengths (m,)), m = 1 when tokens
        were pending and 0 otherwise; positions beyond the length are zero.
        """
        rows = range(self.batch) if rows is None else [int(row) for row in np.atleast_1d(rows)]
        flushed = []
        for row in rows:
            has_tokens = int(self.pending_lengths[row] > 0)
            rows_to_take = slice(row, row + has_tokens)
            flushed.append((self.pending[rows_to_take].copy(), self.pending_lengths[rows_to_take].copy()))
        self.reset(list(rows))
        return flushed

    def reset(self, rows=None) -> None:
        """Drop the pending tokens of the given rows (all when None)."""
        rows = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        self.pending[rows] = 0.0
        self.pending_lengths[rows] = 0

    def state_dict(self) -> dict:
        return export_arrays({"pending": self.pending, "pending_lengths": self.pending_lengths})

    def load_state_dict(self, state: dict) -> None:
        arrays = checked_arrays("ChunkBuffer", state, {"pending": self.pending,
                                                       "pending_lengths": self.pending_lengths})
        lengths = arrays["pending_lengths"]
        require("ChunkBuffer", lengths.min() >= 0 and lengths.max() < self.chunk_len,
                f"'pending_lengths' must lie in [0, {self.chunk_len})")
        self.pending, self.pending_lengths = arrays["pending"], lengths

    def _push_row(self, row: int, states: np.ndarray):
        if states.ndim != 2 or states.shape[1] != self.dim:
            raise ValueError(f"ChunkBuffer.push: row {row} has states of shape {states.shape}, "
                             f"expected (n, {self.dim})")
        held = int(self.pending_lengths[row])
        tokens = np.concatenate([self.pending[row, :held], states])  # (held + n, dim)
        n_chunks = len(tokens) // self.chunk_len
        chunks = tokens[:n_chunks * self.chunk_len].reshape(n_chunks, self.chunk_len, self.dim)
        rest = tokens[n_chunks * self.chunk_len:]
        self.pending[row] = 0.0
        self.pending[row, :len(rest)] = rest
        self.pending_lengths[row] = len(rest)
        return chunks, np.full(n_chunks, self.chunk_len, dtype=np.int64)


def pool_chunks(values, lengths) -> np.ndarray:
    """Mean of the valid token states of each chunk: values (n, chunk_len, dim), lengths (n,) -> (n, dim).

    The vector a retrieval key is projected from; a zero-length chunk pools to zero.
    """
    values = np.asarray(values, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    valid = np.arange(values.shape[1]) < lengths[:, None]  # (n, chunk_len)
    sums = np.einsum("nt,ntd->nd", valid.astype(np.float32), values)
    return (sums / np.maximum(lengths, 1)[:, None]).astype(np.float32)
