"""The training objectives of the spec: contextual reconstruction (0.7), memory consistency (0.2)
and coherence (0.1), each a function of the model's output, logged on its own.

- Reconstruction: cross-entropy of the masked spans (GLM's Part B), the spans sampled at
  several scales by the curriculum; per-token losses come back too, as each token's surprise
  (the importance of the episodic entry it will become).
- Consistency: (a) retrieval alignment, InfoNCE: each query chunk of a segment must score its
  own document's stored entries above the entries of the other documents of the batch;
  (b) commitment: an entry's key stays close to the key of its nearest semantic slot (VQ-VAE's
  commitment term), so consolidation keeps meaning what it was built from.
- Coherence: segment-order prediction; two segments of one document, in order or swapped,
  and a small head says which. Its held-out accuracy is the coherence score.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlot.architecture import Tensor, concat
from mlot.architecture import functional as F
from mlot.model.scoring import score_targets

DEFAULT_WEIGHTS = {"reconstruction": 0.7, "consistency": 0.2, "coherence": 0.1}


@dataclass
class Losses:
    total: Tensor
    terms: dict                                        # name -> float, every term on its own
    target_losses: list = field(default_factory=list)  # per row, the loss of each Part B target, in order
    coherence_correct: int = 0
    coherence_count: int = 0


def reconstruction_loss(model, out, batch):
    """Mean cross-entropy over the Part B targets (autograd), and the rows, columns and float64
    loss of each target (mlot.model.scoring: logits only at target positions)."""
    scores = score_targets(model, out, batch)
    if scores.logits is None:
        return Tensor(np.zeros((), dtype=out.hidden.dtype)), scores.rows, scores.cols, scores.nll
    return F.cross_entropy(scores.logits, scores.targets), scores.rows, scores.cols, scores.nll


SHORT_SPAN_MAX = 3  # spans up to this many tokens count as the short scale in the log


def _loss_by_span_scale(batch, rows, cols, per_token) -> dict:
    """Mean target loss of short spans (<= SHORT_SPAN_MAX tokens) and of long ones, logged apart
    (a span's targets share its row and [MASK] position; one of them is its [EOP])."""
    if rows.size == 0:
        return {}
    span_keys = rows * (batch.pos_a.max() + 1) + batch.pos_a[rows, cols]
    _, inverse, counts = np.unique(span_keys, return_inverse=True, return_counts=True)
    short = counts[inverse] - 1 <= SHORT_SPAN_MAX
    return {f"loss_reconstruction_{name}": float(per_token[chosen].mean())
            for name, chosen in (("short", short), ("long", ~short)) if chosen.any()}


def _unit(x: Tensor) -> Tensor:
    return x / ((x * x).sum(axis=-1, keepdims=True) + 1e-12).sqrt()


def retrieval_alignment_loss(model, out, temperature: float = 0.1):
    """InfoNCE over the batch: a query chunk's positives are its own row's live entries, its
    negatives every other row's. Keys are recomputed from the stored pooled vectors through the
    retriever, so the gradient reaches it; None when no row has both entries and a rival."""
    memory = model.memory
    if memory is None or out.read.query_pooled is None:
        return None
    entry_pooled = [store.pooled[store.live] for store in memory.episodic]
    entry_rows = np.concatenate([np.full(len(pooled), row) for row, pooled in enumerate(entry_pooled)])
    query_rows, query_chunks = np.nonzero(out.read.query_valid)
    usable = np.isin(query_rows, entry_rows) & (np.bincount(entry_rows, minlength=memory.batch)[query_rows]
                                                < len(entry_rows))
    if not usable.any():
        return None
    query_rows, query_chunks = query_rows[usable], query_chunks[usable]
    queries = _unit(model.retriever(Tensor(out.read.query_pooled[query_rows, query_chunks])))  # (Nq, r)
    keys = _unit(model.retriever(Tensor(np.concatenate(entry_pooled))))  # (Ne, r)
    scores = (queries @ keys.T) * (1.0 / temperature)  # (Nq, Ne)
    positive = query_rows[:, None] == entry_rows[None, :]
    return (_logsumexp(scores) - _logsumexp(scores.masked_fill(~positive, -1e9))).mean()  # -log p(positives)


def _logsumexp(x: Tensor) -> Tensor:
    """log(sum(exp(x))) over the last axis, shifted by the (constant) row maximum."""
    peak = Tensor(x.data.max(axis=-1, keepdims=True))
    return ((x - peak).exp().sum(axis=-1, keepdims=True).log() + peak).reshape(-1)


def commitment_loss(model):
    """Mean (1 - cosine) between each live episodic entry's key and its nearest semantic slot's key."""
    memory = model.memory
    if memory is None or memory.semantic.size == 0:
        return None
    pooled = np.concatenate([store.pooled[store.live] for store in memory.episodic])
    if len(pooled) == 0:
        return None
    keys = _unit(model.retriever(Tensor(pooled)))  # (Ne, r)
    slots = memory.semantic.keys[memory.semantic.live]  # (S, r), unit
    nearest = slots[np.argmax(keys.data @ slots.T, axis=1)]  # (Ne, r), constants
    return 1.0 - (keys * Tensor(nearest)).sum(axis=-1).mean()


def coherence_loss(model, segment_states, previous: np.ndarray, has_previous: np.ndarray, swapped: np.ndarray):
    """Cross-entropy of segment-order prediction on (earlier, later) pairs, some shown swapped.

    A pair shown as (a, b) is "in order" with logit model.order_logit(a, b) = h(a) - h(b), h the
    order head's earliness of a segment: antisymmetric, so swapping a pair flips its prediction.

    segment_states: (B, d) mean Part A states of this step's segments (a Tensor carries the
    gradient into the backbone); previous: (B, d) those of the same documents' previous segments
    (constants); has_previous: (B,) rows where one exists; swapped: (B,) bool, the pair shown as
    (later, earlier), label 0; in order, label 1. Returns (loss, correct, count).

    Both sides go through the segment and order heads afresh. In training the previous states
    come from the step before, made by the weights before the last update: heads applied to a
    stored vector learned to tell fresh vectors from stale ones (training loss 0.008 against a
    held-out ~0.7). The backbone can still do so a little (05-training/README.md); cutting its
    gradient too cost more reconstruction than it bought (measured there)."""
    rows = np.flatnonzero(has_previous)
    if rows.size == 0:
        return None, 0, 0
    dtype = model.segment_head.weight.dtype
    states = segment_states[rows] if isinstance(segment_states, Tensor) else \
        Tensor(np.asarray(segment_states[rows], dtype=dtype))
    sign = np.where(swapped[rows], -1.0, 1.0).astype(dtype)[:, None]  # (n, 1)
    in_order = model.order_logit(Tensor(np.asarray(previous[rows], dtype=dtype)), states).reshape(-1, 1) \
        * Tensor(sign)  # (n, 1)
    logits = concat([Tensor(np.zeros_like(sign)), in_order], axis=-1)  # (n, 2): [swapped, in order]
    labels = (~swapped[rows]).astype(np.int64)
    correct = int(((in_order.data[:, 0] > 0) == labels.astype(bool)).sum())
    return F.cross_entropy(logits, labels), correct, int(rows.size)


def training_losses(model, out, batch, weights: dict, previous=None, has_previous=None, swapped=None,
                    use_consistency: bool = True, use_commitment: bool = True) -> Losses:
    """The weighted sum of every term the curriculum switches on, and each term as a float."""
    weights = {**DEFAULT_WEIGHTS, **weights}
    reconstruction, rows, cols, per_token = reconstruction_loss(model, out, batch)
    total = reconstruction * weights["reconstruction"]
    terms = {"loss_reconstruction": reconstruction.item(), **_loss_by_span_scale(batch, rows, cols, per_token)}
    consistency = None
    if use_consistency:
        parts = [retrieval_alignment_loss(model, out)] + ([commitment_loss(model)] if use_commitment else [])
        parts = [p for p in parts if p is not None]
        consistency = sum(parts[1:], parts[0]) if parts else None
    coherence, correct, count = (coherence_loss(model, out.segment_states, previous, has_previous, swapped)
                                 if previous is not None else (None, 0, 0))
    for name, term in (("consistency", consistency), ("coherence", coherence)):
        if term is not None:
            total = total + term * weights[name]
        terms[f"loss_{name}"] = term.item() if term is not None else 0.0
    terms["loss"] = total.item()
    return Losses(total, terms, [per_token[rows == row] for row in range(batch.batch_size)], correct, count)
