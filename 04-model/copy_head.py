"""Copying: a pointer over the memory tokens and the segment's own, mixed into the output distribution.

A fact fetched from episodic memory has to come out as the very token that was stored (a pass
key, a name). Through the cross-attention's value and output projections that means learning
an identity map over the vocabulary, token by token, which a small model trained for minutes
did not get to (06-evaluation/README.md: 0 % passkey without this head). A pointer has the
identity built in, as in pointer-generator networks (See et al., 2017): attention over the
memory tokens, whose token ids the episodic store keeps (and over the working cache's and the
segment's own visible tokens), is itself a distribution over tokens, and a switch decides how
much of it to use:

    p(w) = (1 - s) softmax(logits)(w) + s * sum_m a_m [id_m = w],   s = sigmoid(switch(h))

A token's key also holds the embedding of the token before it in its text, as an induction head
matches on the previous token: without it the pointer, asked for what follows "the pass key is",
picked "is" or "key" themselves, whose states say as much about the key as the key's own. And it
holds the mean direction of the copy_context tokens before it: every value of "the code of the
red box is 42" follows "is", so only the words further back (red, box) tell which value a
question asks for; the backbone's states did not learn to carry them (associative recall ~27 %
with the pairs in view, 06-evaluation/README.md).

And the pointer's score of each token gains `match_weight` times the number of distinct tokens
the text before it shares with the text before the token being predicted (`shared_tokens`), the
exact-match feature of extractive readers (DrQA): asked "what colour is the canoe of Orla
Quill? It is", the value after "the canoe of Orla Quill is" shares canoe, Orla and Quill, the
other colours of the story do not. Learned states alone picked the right value among those
read only about half the time (04-model/README.md).

The head returns log p: used as logits, cross-entropy, argmax and temperature sampling work on
it unchanged (log_softmax(log p) = log p).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from mlot.architecture import Function, Tensor, nn
from mlot.architecture import functional as F

SMALLEST_PROBABILITY = 1e-30  # keeps log p finite where both parts give a token nothing


class _ScatterToVocab(Function):
    """weights (N, M) onto (N, V) by token id: out[n, ids[n, m]] += weights[n, m]; ids < 0 dropped."""

    def forward(self, weights, ids, vocab_size):
        self.shape = weights.shape
        self.rows, self.cols = np.nonzero(ids >= 0)
        self.token = ids[self.rows, self.cols]
        out = np.zeros((weights.shape[0], vocab_size), dtype=weights.dtype)
        np.add.at(out, (self.rows, self.token), weights[self.rows, self.cols])
        return out

    def backward(self, grad):
        dweights = np.zeros(self.shape, dtype=grad.dtype)
        dweights[self.rows, self.cols] = grad[self.rows, self.token]
        return dweights


def scatter_to_vocab(weights: Tensor, ids: np.ndarray, vocab_size: int) -> Tensor:
    return _ScatterToVocab.apply(weights, ids=np.asarray(ids, dtype=np.int64), vocab_size=vocab_size)


@njit(cache=True)
def _shared_counts(query, candidates, rows):
    N, c = query.shape
    M, c_candidates = candidates.shape[1], candidates.shape[2]
    out = np.zeros((N, M), dtype=np.float32)
    for n in range(N):
        row = rows[n]
        for m in range(M):
            count = 0
            for i in range(c):
                token = query[n, i]
                if token < 0:
                    break  # a run of text ends at its first -1
                repeated = False
                for earlier in range(i):
                    repeated = repeated or query[n, earlier] == token
                if repeated:
                    continue
                for j in range(c_candidates):
                    other = candidates[row, m, j]
                    if other < 0:
                        break
                    if other == token:
                        count += 1
                        break
            out[n, m] = count
    return out


def shared_tokens(query: np.ndarray, candidates: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N, M) float32: how many distinct tokens of query (N, c) also occur in candidates[rows[n], m]
    (B, M, c'); both are runs of ids that end at their first -1."""
    return _shared_counts(np.ascontiguousarray(query, dtype=np.int64),
                          np.ascontiguousarray(candidates, dtype=np.int64), np.asarray(rows, dtype=np.int64))


class MemoryCopyHead(nn.Module):
    """Pointer attention from the final states over the memory tokens, and the copy switch."""

    def __init__(self, dim: int, rng: np.random.Generator, switch_init: float = -2.0):
        super().__init__()
        self.memory_norm = nn.LayerNorm(dim)
        # unit gain, as in the memory cross-attention: a near-uniform pointer has no gradient to learn from
        self.q_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.k_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.previous_norm = nn.LayerNorm(dim)
        self.previous_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.context_norm = nn.LayerNorm(dim)
        self.context_proj = nn.Linear(dim, dim, rng=rng, init_std=dim ** -0.5)
        self.switch = nn.Linear(dim, 1, rng=rng)
        self.switch.bias.data[:] = switch_init  # copy a little at first: sigmoid(-2) = 0.12
        self.match_weight = nn.Parameter(np.ones(1, dtype=np.float32))  # one shared token: e times the weight

    def forward(self, hidden: Tensor, logits: Tensor, memory: Tensor, memory_ids: np.ndarray,
                rows: np.ndarray, previous: Tensor, context: Tensor, shared: np.ndarray | None = None) -> Tensor:
        """hidden (N, d) and logits (N, V) at N positions of batch rows `rows`; memory (B, M, d)
        with token ids (B, M), -1 where a memory token has none (semantic slots, padding), the
        embeddings of the tokens before them (B, M, d), zero where none, and the mean direction
        of the tokens before those (B, M, d), and the tokens each shares with the text before each
        position (N, M; None: nothing known). Returns log p (N, V)."""
        N, d = hidden.shape
        B, M = memory_ids.shape
        ids = memory_ids[rows]  # (N, M)
        copyable = ids >= 0
        keys = self.k_proj(self.memory_norm(memory)) + self.previous_proj(self.previous_norm(previous)) \
            + self.context_proj(self.context_norm(context))
        keys = keys.reshape(B * M, d)
        # every position against every row's keys, then its own row's block: gathering the keys per
        # position instead would copy (and scatter back) N x M x d floats
        own_row = (np.arange(N)[:, None], rows[:, None] * M + np.arange(M)[None, :])
        scores = (self.q_proj(hidden) @ keys.T)[own_row] * d ** -0.5  # (N, M)
        if shared is not None:
            scores = scores + Tensor(shared.astype(scores.dtype)) * self.match_weight
        pointer = F.softmax(scores.masked_fill(~copyable, -1e9), axis=-1)
        anything = copyable.any(axis=1, keepdims=True).astype(hidden.dtype)  # nothing to copy: no copying
        share = self.switch(hidden).sigmoid() * anything  # (N, 1)
        mixed = (1 - share) * F.softmax(logits, axis=-1) + share * scatter_to_vocab(pointer, ids, logits.shape[-1])
        return (mixed + SMALLEST_PROBABILITY).log()
