"""How well the model predicts the targets of a batch: each target's negative log-likelihood and
whether the greedy choice hits it. The one place where training losses, validation, bits per
byte and the benchmarks turn a forward pass into per-target figures.

Logits are computed only at the scored positions: the output projection (and the copy head's
mixture) is the largest product of a step, and Part A needs none.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mlot.architecture import Tensor
from mlot.architecture.functional import target_nll
from mlot.model.infilling import IGNORE_INDEX


class TargetScores(NamedTuple):
    rows: np.ndarray         # (N,) batch row of each scored target
    cols: np.ndarray         # (N,) its input position (Part B) in that row
    targets: np.ndarray      # (N,) the token to predict there
    logits: Tensor | None    # (N, V) what the model predicts there (a graph node when grad is on); None if N == 0
    nll: np.ndarray          # (N,) float64 -log p(target), nats
    hits: np.ndarray         # (N,) bool: argmax == target

    @property
    def count(self) -> int:
        return len(self.targets)


def score_targets(model, out, batch, where: np.ndarray | None = None) -> TargetScores:
    """Scores of the targets of `batch` at the positions `where` ((B, L) bool; default: every
    target, IGNORE_INDEX excluded) from the model output `out` of that batch."""
    scored = batch.targets != IGNORE_INDEX if where is None else where & (batch.targets != IGNORE_INDEX)
    rows, cols = np.nonzero(scored)
    targets = batch.targets[rows, cols]
    if rows.size == 0:
        return TargetScores(rows, cols, targets, None, np.zeros(0), np.zeros(0, dtype=bool))
    before = model.text_before(batch, rows, cols) if model.copy_head is not None else None  # only the pointer reads it
    logits = model.output_logits(out.hidden[rows, cols], out.read, rows, before)  # (N, V)
    return TargetScores(rows, cols, targets, logits, target_nll(logits.data, targets),
                        logits.data.argmax(axis=1) == targets)
