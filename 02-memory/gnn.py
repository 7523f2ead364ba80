"""A small GNN that refines semantic slot values with their neighbours in the memory graph.

Each round is a residual message-passing update
    h <- h + W2 gelu(W1 [h, A h] + b1) + b2,
with A the row-normalised adjacency with self-loops (MemoryGraph.normalized_adjacency), so a
slot's message is the weighted mean of itself and its neighbours. W2 and b2 start at zero:
a fresh GNN is the identity, and training only moves slot values as far as it pays.
"""
from __future__ import annotations

import numpy as np

from mlot.architecture import Tensor, concat, nn
from mlot.architecture import functional as F


class MessagePassingRound(nn.Module):
    """One residual update h + W2 gelu(W1 [h, A h]) of width `dim`."""

    def __init__(self, dim: int, rng=None):
        super().__init__()
        self.combine = nn.Linear(2 * dim, dim, rng=rng)
        self.update = nn.Linear(dim, dim, rng=rng, init_std=0.0)

    def forward(self, values: Tensor, adjacency: Tensor) -> Tensor:
        messages = adjacency @ values  # (S, dim)
        return values + self.update(F.gelu(self.combine(concat([values, messages], axis=1))))


class MemoryGNN(nn.Module):
    """`rounds` message-passing rounds over the slot graph (0 rounds: the identity).

    forward(values (S, dim), adjacency (S, S)) -> refined values (S, dim).
    """

    def __init__(self, dim: int, rounds: int = 1, rng=None):
        super().__init__()
        if not isinstance(rounds, (int, np.integer)) or rounds < 0:
            raise ValueError(f"MemoryGNN: rounds must be a non-negative integer, got {rounds!r}")
        rng = rng if rng is not None else np.random.default_rng()
        self.dim = dim
        self.rounds = nn.ModuleList([MessagePassingRound(dim, rng=rng) for _ in range(rounds)])

    def forward(self, values: Tensor, adjacency) -> Tensor:
        """Refined slot values (S, dim); adjacency is a constant array (no gradient flows into the graph)."""
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise ValueError(f"MemoryGNN: values of shape {values.shape}, expected (slots, {self.dim})")
        adjacency = np.asarray(adjacency.data if isinstance(adjacency, Tensor) else adjacency)
        if adjacency.shape != (values.shape[0],) * 2:
            raise ValueError(f"MemoryGNN: adjacency of shape {adjacency.shape} for {values.shape[0]} slots")
        adjacency = Tensor(adjacency.astype(values.dtype))
        for message_round in self.rounds:
            values = message_round(values, adjacency)
        return values
