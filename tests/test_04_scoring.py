"""Per-target scoring: functional.target_nll against -log(exp(z_t) / sum exp(z)) summed by hand
with math.fsum, and scoring.score_targets against the full output projection over every
position, softmax written out in numpy."""
import math

import numpy as np
import pytest

from mlot.architecture import no_grad
from mlot.architecture.functional import target_nll
from mlot.model.infilling import IGNORE_INDEX, make_infill_batch
from mlot.model.scoring import score_targets
from test_04_model import SPECIAL, filled_model


def nll_by_hand(row, target):
    return -math.log(math.exp(row[target]) / math.fsum(math.exp(v) for v in row))


def test_target_nll_matches_the_formula_and_survives_large_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (7, 11))
    targets = rng.integers(0, 11, 7)
    expected = [nll_by_hand(list(map(float, row)), t) for row, t in zip(logits, targets)]
    np.testing.assert_allclose(target_nll(logits, targets), expected, rtol=1e-12)
    # a constant added to a row changes nothing; exp(1000) alone would overflow
    shifted = target_nll((logits + 1000.0).astype(np.float32), targets)
    assert shifted.dtype == np.float64
    np.testing.assert_allclose(shifted, expected, atol=1e-3)  # float32 logits near 1000 keep ~1e-4
    assert target_nll(np.zeros((3, 4)), [0, 1, 3]) == pytest.approx([math.log(4)] * 3)
    assert target_nll(np.zeros((0, 5)), np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="target_nll"):
        target_nll(np.zeros((3, 4)), [0, 1])


def spans_batch():
    return make_infill_batch([np.arange(10, 22), np.arange(20, 28)], [[(1, 3), (6, 9)], [(2, 3)]], SPECIAL)


def test_score_targets_equals_full_projection_softmax():
    model = filled_model()
    batch = spans_batch()
    with no_grad():
        out = model(batch, record_access=False)
        scores = score_targets(model, out, batch)
        every = model.logits(out.hidden).data.astype(np.float64)  # (B, L, V): every position
    rows, cols = np.nonzero(batch.targets != IGNORE_INDEX)
    np.testing.assert_array_equal(scores.rows, rows)
    np.testing.assert_array_equal(scores.cols, cols)
    assert scores.targets.tolist() == [11, 12, SPECIAL.eop, 16, 17, 18, SPECIAL.eop, 22, SPECIAL.eop]
    chosen = every[rows, cols]  # (N, V)
    probs = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores.nll, -np.log(probs[np.arange(len(rows)), scores.targets]), rtol=1e-5)
    np.testing.assert_array_equal(scores.hits, chosen.argmax(axis=1) == scores.targets)
    assert scores.count == 9


def test_score_targets_where_selects_a_subset_and_no_target_gives_empty_scores():
    model = filled_model()
    batch = spans_batch()
    with no_grad():
        out = model(batch, record_access=False)
        every = score_targets(model, out, batch)
        where = np.zeros_like(batch.targets, dtype=bool)
        where[0] = True  # the first row only, padding and Part A included (they have no target)
        first_row = score_targets(model, out, batch, where=where)
        clean = make_infill_batch([np.arange(10, 22), np.arange(20, 28)], [[], []], SPECIAL)
        empty = score_targets(model, model(clean, record_access=False), clean)
    assert first_row.count == 7 and (first_row.rows == 0).all()
    np.testing.assert_allclose(first_row.nll, every.nll[:7], rtol=1e-6)
    assert empty.count == 0 and empty.logits is None and empty.nll.shape == (0,)
