"""The memory graph over semantic slots: which concepts are retrieved or seen together.

Edges are symmetric non-negative weights that grow each time two slots are returned by the same
query (co-retrieval) or are filled from the same document (co-occurrence), and fade with
`decay`. The GNN reads the graph as a row-normalised adjacency with self-loops, so that each
slot's message is a weighted mean over itself and its neighbours.
"""
from __future__ import annotations

import numpy as np

from mlot.memory.state import checked_arrays, export_arrays, require


class MemoryGraph:
    """Dense symmetric (slots, slots) float32 edge weights with a zero diagonal."""

    def __init__(self, slots: int):
        if not isinstance(slots, (int, np.integer)) or slots < 0:
            raise ValueError(f"MemoryGraph: slots must be a non-negative integer, got {slots!r}")
        self.slots = int(slots)
        self.weights = np.zeros((self.slots, self.slots), dtype=np.float32)

    def add_edges(self, slot_indices, weight: float = 1.0) -> None:
        """Add `weight` to the edge of every pair of distinct slots in each group.

        slot_indices: (n,) one group, or (G, n) one group per row (e.g. the top-k of each of G
        queries). A slot repeated within a group counts once; negative indices are ignored.
        """
        if weight < 0:
            raise ValueError(f"MemoryGraph.add_edges: weight must be >= 0, got {weight}")
        groups = np.asarray(slot_indices, dtype=np.int64)
        groups = groups.reshape(1, -1) if groups.ndim == 1 else groups
        if groups.ndim != 2 or (groups.size and groups.max() >= self.slots):
            raise ValueError(f"MemoryGraph.add_edges: slot indices of shape {groups.shape} must be (n,) or (G, n) "
                             f"with values below {self.slots}")
        groups = np.sort(groups, axis=1)
        groups[:, 1:][groups[:, 1:] == groups[:, :-1]] = -1  # a slot counts once per group
        first, second = groups[:, :, None], groups[:, None, :]  # (G, n, 1), (G, 1, n): all ordered pairs
        pair = (first >= 0) & (second >= 0) & (first != second)
        flat_pairs = (first * self.slots + second)[pair]
        counts = np.bincount(flat_pairs, minlength=self.slots * self.slots).reshape(self.slots, self.slots)
        self.weights += np.float32(weight) * counts.astype(np.float32)

    def decay(self, factor: float) -> None:
        """Scale every edge by factor in [0, 1]: old associations fade unless renewed."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"MemoryGraph.decay: factor must lie in [0, 1], got {factor}")
        self.weights *= np.float32(factor)

    def remove_node(self, slot) -> None:
        """Drop every edge of `slot` (an index or an index array): its concept was forgotten or replaced."""
        self.weights[slot, :] = 0.0
        self.weights[:, slot] = 0.0

    def normalized_adjacency(self, live=None) -> np.ndarray:
        """(slots, slots) float32: row i = (weights[i] + e_i) / (sum of weights[i] + 1) over live slots.

        Dead slots (live False) neither send nor receive: their rows and columns are zero.
        """
        live = np.ones(self.slots, dtype=bool) if live is None else np.asarray(live, dtype=bool)
        if live.shape != (self.slots,):
            raise ValueError(f"MemoryGraph.normalized_adjacency: live mask of shape {live.shape}, "
                             f"expected ({self.slots},)")
        adjacency = self.weights.astype(np.float64) + np.eye(self.slots)
        adjacency *= live[:, None] & live[None, :]
        row_sums = adjacency.sum(axis=1, keepdims=True)
        return np.divide(adjacency, row_sums, out=np.zeros_like(adjacency), where=row_sums > 0).astype(np.float32)

    def reset(self) -> None:
        self.weights[:] = 0.0

    def state_dict(self) -> dict:
        return export_arrays({"weights": self.weights})

    def load_state_dict(self, state: dict) -> None:
        weights = checked_arrays("MemoryGraph", state, {"weights": self.weights})["weights"]
        require("MemoryGraph", bool(np.all(weights >= 0) and np.array_equal(weights, weights.T)
                                    and not np.diagonal(weights).any()),
                "'weights' must be symmetric, non-negative and zero on the diagonal")
        self.weights = weights
