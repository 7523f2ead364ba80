"""Working memory: a per-layer FIFO cache of the hidden states of the most recent earlier tokens.

As in Transformer-XL, each layer keeps the (detached) hidden states of the last `capacity`
tokens before the current segment, and self-attention sees them in front of the segment's own
tokens. The rows of a batch are separate documents, so each row fills independently: row b
holds lengths[layer, b] valid states, oldest first, zero beyond. States pushed out by an
append are returned so that the caller can write them to episodic memory.
"""
from __future__ import annotations

import numpy as np

from mlot.memory.kernels import fifo_append
from mlot.memory.state import checked_arrays, export_arrays, require


class WorkingMemory:
    """Per layer a (batch, capacity, dim) float32 cache and (batch,) valid lengths."""

    def __init__(self, n_layers: int, capacity: int, dim: int, batch: int):
        for name, value, least in (("n_layers", n_layers, 1), ("capacity", capacity, 0), ("dim", dim, 1),
                                   ("batch", batch, 1)):
            if not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"WorkingMemory: {name} must be an integer >= {least}, got {value!r}")
        self.n_layers, self.capacity, self.dim, self.batch = int(n_layers), int(capacity), int(dim), int(batch)
        self.states = np.zeros((self.n_layers, self.batch, self.capacity, self.dim), dtype=np.float32)
        self.lengths = np.zeros((self.n_layers, self.batch), dtype=np.int64)

    def append(self, layer: int, states, lengths=None) -> list:
        """Push states[b, :lengths[b]] (B, T, dim) into row b of `layer`; returns the evicted states.

        The result is a list with one (n_b, dim) array per row: the oldest states of
        (cached, then new) beyond the capacity, oldest first. lengths defaults to T for every row.
        """
        self._check_layer(layer)
        states = np.ascontiguousarray(states, dtype=np.float32)
        if states.ndim != 3 or states.shape[0] != self.batch or states.shape[2] != self.dim:
            raise ValueError(f"WorkingMemory.append: states of shape {states.shape}, expected "
                             f"(batch={self.batch}, T, dim={self.dim})")
        new_lengths = np.full(self.batch, states.shape[1], dtype=np.int64) if lengths is None \
            else np.asarray(lengths).astype(np.int64)
        if new_lengths.shape != (self.batch,) or new_lengths.min() < 0 or new_lengths.max() > states.shape[1]:
            raise ValueError(f"WorkingMemory.append: lengths {np.asarray(lengths).tolist()} must be {self.batch} "
                             f"counts in [0, {states.shape[1]}]")
        evicted_counts = np.maximum(self.lengths[layer] + new_lengths - self.capacity, 0)
        offsets = np.concatenate([[0], np.cumsum(evicted_counts)])
        evicted = np.empty((offsets[-1], self.dim), dtype=np.float32)
        fifo_append(self.states[layer], self.lengths[layer], states, new_lengths, evicted, offsets)
        return np.split(evicted, offsets[1:-1])

    def read(self, layer: int):
        """(states (B, L, dim), lengths (B,)) of `layer`, valid states first and oldest first.

        L is the longest row; positions at or beyond a row's length are zero. The arrays are
        copies, so later appends do not change them.
        """
        self._check_layer(layer)
        lengths = self.lengths[layer].copy()
        return self.states[layer, :, :int(lengths.max())].copy(), lengths

    def reset(self, rows=None) -> None:
        """Empty every layer of the given batch rows (all rows when None): a new document starts there."""
        rows = slice(None) if rows is None else self._check_rows(rows)
        self.states[:, rows] = 0.0
        self.lengths[:, rows] = 0

    def usage(self) -> float:
        """Fraction of the capacity in use, averaged over layers and rows (0 when capacity is 0)."""
        return float(self.lengths.mean() / self.capacity) if self.capacity else 0.0

    def stats(self) -> dict:
        return {"working_usage": self.usage()}

    def state_dict(self) -> dict:
        return export_arrays({"states": self.states, "lengths": self.lengths})

    def load_state_dict(self, state: dict) -> None:
        arrays = checked_arrays("WorkingMemory", state, {"states": self.states, "lengths": self.lengths})
        lengths = arrays["lengths"]
        require("WorkingMemory", lengths.size == 0 or (lengths.min() >= 0 and lengths.max() <= self.capacity),
                f"'lengths' must lie in [0, {self.capacity}]")
        self.states, self.lengths = arrays["states"], lengths

    def _check_layer(self, layer: int) -> None:
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.n_layers:
            raise IndexError(f"WorkingMemory: layer {layer!r} out of range for {self.n_layers} layers")

    def _check_rows(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows))
        if rows.dtype.kind not in "iu" or (rows.size and (rows.min() < 0 or rows.max() >= self.batch)):
            raise IndexError(f"WorkingMemory.reset: rows {rows.tolist()} must be indices in [0, {self.batch})")
        return rows
