"""The layers of MLoT-Spark: a pre-LN transformer block whose self-attention also sees the
working-memory cache, and the memory injection block that reads episodic and semantic memory.

Positions are rotary (RoPE), so attention scores depend on the distance between tokens: the
cached states of earlier segments sit at negative positions in front of the segment and need no
re-encoding, as in Transformer-XL's relative positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlot.architecture import concat, nn
from mlot.architecture import functional as F
from mlot.architecture.tensor import Tensor


@dataclass
class AttentionFrame:
    """Where the keys of one self-attention call sit (shared by all layers of a forward).

    Keys are [cached states (C) | past keys (P) | this call's tokens (T)]; query i is at key
    index i + q_offset (q_offset = C + P). Key j is visible to a query of row b when
    j >= key_start[b] (the left-padded part of the cache is hidden) and either j < prefix_len[b]
    (cache and Part A) or j <= i + q_offset (Part B, causally).
    """
    cos_q: np.ndarray       # (B, 1, T, D/2)
    sin_q: np.ndarray
    cos_k: np.ndarray       # (B, 1, C + T, D/2) for the keys computed in this call
    sin_k: np.ndarray
    n_cache: int            # C: cached states prepended to this call's tokens
    prefix_len: np.ndarray  # (B,) int64, in key indices
    key_start: np.ndarray   # (B,) int64
    q_offset: int


class CachedSelfAttention(nn.Module):
    """Multi-head self-attention over [working cache | past keys | tokens] with rotary positions."""

    def __init__(self, dim: int, n_heads: int, dropout: float, rng: np.random.Generator, out_init_std: float):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, rng=rng)
        self.out_proj = nn.Linear(dim, dim, rng=rng, init_std=out_init_std)
        self.dropout = nn.Dropout(dropout, rng=rng)

    def forward(self, h: Tensor, frame: AttentionFrame, past=None):
        """h (B, C + T, d): normalised cache states then tokens -> (y (B, T, d), (keys, values))."""
        B, S, d = h.shape
        C = frame.n_cache
        qkv = self.qkv(h).reshape(B, S, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, S, D)
        q = F.rotary(qkv[0][:, :, C:], frame.cos_q, frame.sin_q)  # (B, H, T, D)
        k = F.rotary(qkv[1], frame.cos_k, frame.sin_k)             # (B, H, C + T, D)
        v = qkv[2]
        if past is not None:  # KV cache of generation: keys already rotated
            k = concat([k[:, :, :C], Tensor(past[0]), k[:, :, C:]], axis=2)
            v = concat([v[:, :, :C], Tensor(past[1]), v[:, :, C:]], axis=2)
        y = F.scaled_dot_product_attention(q, k, v, prefix_len=frame.prefix_len, q_offset=frame.q_offset,
                                           key_start=frame.key_start)  # (B, H, T, D)
        y = y.permute(0, 2, 1, 3).reshape(B, S - C, d)
        return self.dropout(self.out_proj(y)), (k.data, v.data)


class Block(nn.Module):
    """Pre-LN block: x + attn(ln1([cache | x])), then x + mlp(ln2(x))."""

    def __init__(self, dim: int, n_heads: int, d_ff: int, dropout: float, eps: float,
                 rng: np.random.Generator, out_init_std: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps)
        self.attn = CachedSelfAttention(dim, n_heads, dropout, rng, out_init_std)
        self.ln2 = nn.LayerNorm(dim, eps)
        self.mlp = nn.MLP(dim, d_ff, dropout, rng=rng, out_init_std=out_init_std)

    def forward(self, x: Tensor, frame: AttentionFrame, cache: np.ndarray | None = None, past=None):
        """x (B, T, d); cache (B, C, d) constant states of earlier tokens -> (x, (keys, values))."""
        h = x if cache is None else concat([Tensor(cache), x], axis=1)
        attended, present = self.attn(self.ln1(h), frame, past)
        x = x + attended
        return x + self.mlp(self.ln2(x)), present


class MemoryCrossAttention(nn.Module):
    """Queries from the segment attend to memory tokens (k/v/o projections, normalised memory)."""

    def __init__(self, dim: int, n_heads: int, rng: np.random.Generator):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.memory_norm = nn.LayerNorm(dim)
        # queries and keys start at unit gain (not GPT's 0.02): near-uniform attention over a
        # few hundred memory tokens would give the selection almost no gradient to learn from
        self.k_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.v_proj = nn.Linear(dim, dim, rng=rng)
        self.o_proj = nn.Linear(dim, dim, rng=rng)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.reshape(B, T, self.n_heads, self.head_dim).permute(0, 2, 1, 3)  # (B, H, T, D)

    def forward(self, queries: Tensor, memory: Tensor, memory_count: np.ndarray) -> Tensor:
        """queries (B, T, d), memory (B, M, d) with the first memory_count[b] tokens valid."""
        B, T, d = queries.shape
        m = self.memory_norm(memory)
        # only keys j < memory_count[b] are visible: the prefix rule with no causal part
        y = F.scaled_dot_product_attention(self._heads(queries), self._heads(self.k_proj(m)),
                                           self._heads(self.v_proj(m)), prefix_len=memory_count, q_offset=-T)
        return self.o_proj(y.permute(0, 2, 1, 3).reshape(B, T, d))


class MemoryInjectionBlock(nn.Module):
    """x + tanh(gate) * post_memory_layernorm(cross_attention(q_proj(norm(x)), memory)).

    The gate starts at `gate_init` (0: closed, so a fresh model computes exactly what the model
    without memory computes) and still receives gradient, d/dgate = (1 - tanh^2) * update, as in
    Flamingo's gated cross-attention. Rows without memory get no update at all.
    """

    def __init__(self, dim: int, n_heads: int, gate_init: float, eps: float, rng: np.random.Generator):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps)
        self.q_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.cross_attention = MemoryCrossAttention(dim, n_heads, rng)
        self.post_memory_layernorm = nn.LayerNorm(dim, eps)
        self.gate = nn.Parameter(np.full(1, gate_init, dtype=np.float32))

    def forward(self, x: Tensor, memory: Tensor, memory_count: np.ndarray) -> Tensor:
        update = self.cross_attention(self.q_proj(self.norm(x)), memory, memory_count)
        has_memory = (np.asarray(memory_count) > 0).astype(x.dtype)[:, None, None]  # (B, 1, 1)
        return x + self.gate.tanh() * self.post_memory_layernorm(update) * has_memory
