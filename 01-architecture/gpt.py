"""A plain GPT built from these modules: the reference workload of the benchmark, demo and tests.

The same architecture as `../shared/bench/torch_twin.py` (pre-LN blocks, GELU MLP x4, learned
positions, tied embeddings, N(0, 0.02) initialisation, biases on every Linear), so that the
two can be timed side by side. The memory-augmented MLoT-Spark model lives in `04-model/`.
"""
from __future__ import annotations

import numpy as np

from mlot.architecture import functional as F
from mlot.architecture import nn
from mlot.architecture.tensor import Tensor


class Block(nn.Module):
    """x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float, rng: np.random.Generator):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiHeadAttention(dim, n_heads, dropout=dropout, rng=rng)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.MLP(dim, 4 * dim, dropout=dropout, rng=rng)

    def forward(self, x: Tensor, causal: bool = True) -> Tensor:
        x = x + self.attn(self.ln1(x), causal=causal)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, dim: int, n_layers: int, n_heads: int, max_len: int,
                 dropout: float = 0.0, *, rng: np.random.Generator):
        super().__init__()
        self.max_len = max_len
        self.wte = nn.Embedding(vocab_size, dim, rng=rng)
        self.wpe = nn.Embedding(max_len, dim, rng=rng)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, rng) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, ids: np.ndarray) -> Tensor:
        """ids (B, T) int -> logits (B, T, V)."""
        B, T = ids.shape
        if T > self.max_len:
            raise ValueError(f"GPT: sequence of {T} tokens is longer than max_len={self.max_len}")
        x = self.wte(ids) + self.wpe(np.arange(T))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied output projection

    def loss(self, ids: np.ndarray, targets: np.ndarray) -> Tensor:
        logits = self(ids)
        return F.cross_entropy(logits, targets)
