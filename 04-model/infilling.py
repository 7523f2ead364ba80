"""The blank-infilling layout (GLM): Part A, the text with each span replaced by one [MASK],
followed by Part B, each span opened by [SOP] and predicted token by token until [EOP].

Part A attends both ways and Part B attends to Part A and causally to itself, which one
`prefix_len` per row expresses. Positions are two-dimensional: `pos_a` is the position in Part
A (a Part B token takes the position of its span's [MASK]); `pos_b` is the position inside the
span (0 in Part A, 1, 2, ... in Part B). Plain generation is the case "prompt + one [MASK]".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass
class SpecialIds:
    """Token ids the layout needs (from the tokenizer)."""
    pad: int
    mask: int
    sop: int
    eop: int


@dataclass
class InfillBatch:
    """One row per segment; each row is [Part A | Part B | padding]."""
    ids: np.ndarray         # (B, L) int64
    pos_a: np.ndarray       # (B, L) int64: position in Part A
    pos_b: np.ndarray       # (B, L) int64: position inside the span, 0 in Part A
    targets: np.ndarray     # (B, L) int64: next span token at Part B inputs, IGNORE_INDEX elsewhere
    prefix_len: np.ndarray  # (B,) int64: Part A length
    lengths: np.ndarray     # (B,) int64: Part A + Part B length (the rest is padding)

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def part_a_mask(self) -> np.ndarray:
        """(B, L) bool: True on Part A tokens."""
        return np.arange(self.ids.shape[1])[None, :] < self.prefix_len[:, None]


def make_infill_batch(segments, spans, special: SpecialIds) -> InfillBatch:
    """Lay out segments with their spans masked.

    segments: list of 1-D int arrays (the original tokens); spans: per segment a list of
    (start, end) pairs, sorted and disjoint, end exclusive and > start. An empty list gives a
    row with Part A only (the clean text, as read when writing memory).
    """
    if len(segments) != len(spans):
        raise ValueError(f"make_infill_batch: {len(segments)} segments but {len(spans)} span lists")
    rows = [_layout_row(np.asarray(tokens, dtype=np.int64), row_spans, special)
            for tokens, row_spans in zip(segments, spans)]
    width = max(len(row[0]) for row in rows)
    B = len(rows)
    ids = np.full((B, width), special.pad, dtype=np.int64)
    pos_a = np.zeros((B, width), dtype=np.int64)
    pos_b = np.zeros((B, width), dtype=np.int64)
    targets = np.full((B, width), IGNORE_INDEX, dtype=np.int64)
    prefix_len = np.zeros(B, dtype=np.int64)
    lengths = np.zeros(B, dtype=np.int64)
    for b, (row_ids, row_pos_a, row_pos_b, row_targets, part_a) in enumerate(rows):
        n = len(row_ids)
        ids[b, :n], pos_a[b, :n], pos_b[b, :n], targets[b, :n] = row_ids, row_pos_a, row_pos_b, row_targets
        pos_a[b, n:] = part_a  # padding sits after everything, out of every real query's sight
        prefix_len[b], lengths[b] = part_a, n
    return InfillBatch(ids, pos_a, pos_b, targets, prefix_len, lengths)


def _layout_row(tokens: np.ndarray, spans, special: SpecialIds):
    previous_end = 0
    part_a, span_positions = [], []
    for start, end in spans:
        if not (previous_end <= start < end <= len(tokens)):
            raise ValueError(f"spans must be sorted, disjoint and inside the segment of {len(tokens)} tokens, "
                             f"got ({start}, {end}) after end {previous_end}")
        part_a.extend(tokens[previous_end:start])
        span_positions.append(len(part_a))
        part_a.append(special.mask)
        previous_end = end
    part_a.extend(tokens[previous_end:])
    ids, pos_a, pos_b, targets = list(part_a), list(range(len(part_a))), [0] * len(part_a), [IGNORE_INDEX] * len(part_a)
    for (start, end), mask_position in zip(spans, span_positions):
        span = tokens[start:end].tolist()
        ids += [special.sop] + span
        pos_a += [mask_position] * (len(span) + 1)
        pos_b += list(range(1, len(span) + 2))
        targets += span + [special.eop]
    return ids, pos_a, pos_b, targets, len(part_a)
