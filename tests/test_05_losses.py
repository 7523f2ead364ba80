"""The training losses against NumPy references written here, and their gradients."""
import numpy as np
import pytest

from mlot.architecture import Tensor, gradcheck
from mlot.model.infilling import make_infill_batch
from mlot.training.loss_functions import (coherence_loss, commitment_loss, reconstruction_loss,
                                          retrieval_alignment_loss, training_losses)
from test_04_model import SPECIAL, filled_model


def batch_for(model, seed=0):
    rng = np.random.default_rng(seed)
    segments = [rng.integers(10, 40, 12) for _ in range(model.memory.batch)]
    return make_infill_batch(segments, [[(2, 4), (7, 8)]] * len(segments), SPECIAL)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_sum_exp(x, axis=-1):
    peak = x.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(x - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


def test_reconstruction_matches_reference_and_reports_each_target():
    model = filled_model()
    batch = batch_for(model)
    out = model(batch, record_access=False)
    loss, rows, cols, per_token = reconstruction_loss(model, out, batch)
    logits = model.logits(out.hidden).data.astype(np.float64)  # (B, L, V), every position
    log_probs = logits - log_sum_exp(logits)[..., None]
    picked = -log_probs[rows, cols, batch.targets[rows, cols]]
    assert rows.size == (batch.targets != -100).sum() == 2 * (2 + 1 + 1 + 1)
    np.testing.assert_allclose(per_token, picked, rtol=1e-5)
    assert loss.item() == pytest.approx(picked.mean(), rel=1e-5)


def test_retrieval_alignment_matches_reference():
    model = filled_model()
    out = model(batch_for(model), record_access=False)
    loss = retrieval_alignment_loss(model, out, temperature=0.1)
    W = model.retriever.weight.data.astype(np.float64)
    entries, owners = [], []
    for row, store in enumerate(model.memory.episodic):
        entries.append(store.pooled[store.live])
        owners += [row] * int(store.live.sum())
    keys, owners = unit(np.concatenate(entries) @ W.T), np.array(owners)
    losses = []
    for row, chunk in zip(*np.nonzero(out.read.query_valid)):
        scores = unit(out.read.query_pooled[row, chunk] @ W.T) @ keys.T / 0.1
        losses.append(log_sum_exp(scores) - log_sum_exp(scores[owners == row]))
    assert loss.item() == pytest.approx(np.mean(losses), rel=1e-4)


def test_retrieval_alignment_gradient_reaches_the_retriever():
    model = filled_model()
    model.to_dtype(np.float64)
    out = model(batch_for(model), record_access=False)
    assert gradcheck(lambda w: retrieval_alignment_loss(model, out), [model.retriever.weight], max_checks=20)


def test_commitment_matches_reference_and_gradient():
    model = filled_model()
    model.to_dtype(np.float64)
    W = model.retriever.weight.data
    pooled = np.concatenate([s.pooled[s.live] for s in model.memory.episodic]).astype(np.float64)
    slots = model.memory.semantic.keys[model.memory.semantic.live]
    keys = unit(pooled @ W.T)
    expected = np.mean(1 - (keys * slots[np.argmax(keys @ slots.T, axis=1)]).sum(axis=1))
    assert commitment_loss(model).item() == pytest.approx(expected, rel=1e-5)
    assert gradcheck(lambda w: commitment_loss(model), [model.retriever.weight], max_checks=20)


def test_coherence_matches_reference():
    model = filled_model()
    rng = np.random.default_rng(2)
    current = rng.standard_normal((3, 16)).astype(np.float32)  # mean Part A states
    previous = rng.standard_normal((3, 16)).astype(np.float32)
    swapped = np.array([True, False, False])
    loss, correct, count = coherence_loss(model, current, previous, np.array([True, True, True]), swapped)
    W, b = model.coherence_head.weight.data, model.coherence_head.bias.data
    S, c = model.segment_head.weight.data, model.segment_head.bias.data

    def earliness(states):
        z = states @ S.T + c
        vector = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))  # gelu (tanh form)
        return float(vector @ W[0] + b[0])

    # each pair as shown: row 0 swapped (later, earlier), rows 1-2 in order (earlier, later)
    shown = [(current[0], previous[0]), (previous[1], current[1]), (previous[2], current[2])]
    labels = [0, 1, 1]
    margins = [earliness(a) - earliness(b) for a, b in shown]  # logit of "in order"
    expected = np.mean([np.log1p(np.exp(-m)) if y == 1 else np.log1p(np.exp(m)) for m, y in zip(margins, labels)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert count == 3 and correct == sum((m > 0) == bool(y) for m, y in zip(margins, labels))
    # antisymmetric head: a pair shown the other way round is the same question, same loss and answer
    flipped, flipped_correct, _ = coherence_loss(model, current, previous, np.array([True, True, True]), ~swapped)
    assert flipped.item() == pytest.approx(loss.item(), rel=1e-6) and flipped_correct == correct
    loss.backward()  # given arrays, only the two heads learn from this term
    assert np.abs(model.coherence_head.weight.grad).sum() > 0 and np.abs(model.segment_head.weight.grad).sum() > 0
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith(("segment_head",
                                                                                               "coherence_head")))
    states = Tensor(current, requires_grad=True)  # training passes the states as a Tensor: the backbone learns too
    coherence_loss(model, states, previous, np.array([True, True, True]), swapped)[0].backward()
    assert np.abs(states.grad).sum() > 0


def test_weighted_total_and_terms():
    model = filled_model()
    batch = batch_for(model)
    out = model(batch, record_access=False)
    previous = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    losses = training_losses(model, out, batch, {"reconstruction": 0.5}, previous=previous,
                             has_previous=np.array([True, False]), swapped=np.array([False, False]))
    t = losses.terms
    assert t["loss"] == pytest.approx(0.5 * t["loss_reconstruction"] + 0.2 * t["loss_consistency"]
                                      + 0.1 * t["loss_coherence"], rel=1e-5)
    assert t["loss_consistency"] > 0 and t["loss_coherence"] > 0 and losses.coherence_count == 1
    assert [len(x) for x in losses.target_losses] == [5, 5]
    # spans (2, 4) and (7, 8) of both rows: 2 tokens + [EOP] and 1 token + [EOP], both short
    assert t["loss_reconstruction_short"] == pytest.approx(t["loss_reconstruction"], rel=1e-5)
    assert "loss_reconstruction_long" not in t


def test_span_scales_are_logged_apart():
    model = filled_model()
    rng = np.random.default_rng(4)
    segments = [rng.integers(10, 40, 12) for _ in range(2)]
    batch = make_infill_batch(segments, [[(0, 1), (3, 9)], [(5, 10)]], SPECIAL)
    out = model(batch, record_access=False)
    losses = training_losses(model, out, batch, {})
    _, rows, cols, per_token = reconstruction_loss(model, out, batch)
    short = np.zeros(len(rows), bool)
    short[:2] = True  # targets in row-major order: row 0's span (0, 1) gives t0 and [EOP] first
    assert losses.terms["loss_reconstruction_short"] == pytest.approx(per_token[short].mean(), rel=1e-5)
    assert losses.terms["loss_reconstruction_long"] == pytest.approx(per_token[~short].mean(), rel=1e-5)
