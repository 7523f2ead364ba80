"""Which spans of a segment are masked for contextual reconstruction: a mixture of short spans
(a word or two: local syntax) and long ones (a phrase or more: content that only the context or
memory can supply), as the spec's multi-scale masking asks. Training draws them at its
curriculum phase's scales, validation at the scales a checkpoint recorded.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class SpanScales(NamedTuple):
    mask_ratio: float            # fraction of a segment's tokens masked
    short_span_fraction: float   # probability that a span is short
    short_span_max: int          # short spans: 1..short_span_max tokens, uniform
    long_span_mean: float        # long spans average this many tokens (> short_span_max)


def draw_span_length(scales: SpanScales, rng: np.random.Generator, max_span_len: int) -> int:
    """One span length of the multi-scale mixture: short (uniform 1..short_span_max) with
    probability ``short_span_fraction``, else long: short_span_max + 1 + Poisson(mean - that),
    so long spans average ``long_span_mean``; both clipped to ``max_span_len``."""
    if rng.random() < scales.short_span_fraction:
        length = int(rng.integers(1, scales.short_span_max + 1))
    else:
        floor = scales.short_span_max + 1
        length = floor + int(rng.poisson(scales.long_span_mean - floor))
    return min(length, max_span_len)


def sample_spans(length: int, scales: SpanScales, rng: np.random.Generator,
                 max_span_len: int) -> list[tuple[int, int]]:
    """Masked spans ``[(start, end), ...]`` of a segment of ``length`` tokens.

    Sorted, inside ``[0, length)``, separated by at least one visible token (so each masked
    region is one span of at most ``max_span_len`` tokens), and at least one token stays
    visible. Span lengths come from the short/long mixture; spans are drawn until they cover
    about ``mask_ratio * length`` tokens (the last draw is kept only if it brings the total
    closer to that target); at least one span when ``length >= 2``, none below (a first draw
    that overshoots a short segment's target is cut to the target, rounded half up, at least 1).
    Gaps are a uniformly random composition of the visible tokens; all randomness comes from
    ``rng``.
    """
    if max_span_len < 1:
        raise ValueError(f"max_span_len must be >= 1, got {max_span_len}")
    if length < 2:
        return []
    target = scales.mask_ratio * length
    span_lengths, masked = [], 0
    while not span_lengths or masked < target:
        room = length - masked - len(span_lengths) - 1  # keeps masked + spans <= length: gaps and one visible token
        if room < 1:
            break
        span_len = min(draw_span_length(scales, rng, max_span_len), room)
        if masked + span_len - target > target - masked:  # overshoots more than it falls short
            if span_lengths:
                break
            span_len = max(1, math.floor(target + 0.5))  # the one span a short segment gets
        span_lengths.append(span_len)
        masked += span_len
    span_lengths = [span_lengths[i] for i in rng.permutation(len(span_lengths))]
    count = len(span_lengths)
    spare_visible = length - masked - (count - 1)  # visible tokens beyond the one-token gaps
    # Items: spare_visible loose tokens and `count` blocks (span + its mandatory gap); block i at
    # item position p_i starts at p_i + (tokens of the spans before it).
    block_positions = np.sort(rng.choice(spare_visible + count, size=count, replace=False))
    spans, masked_before = [], 0
    for position, span_len in zip(block_positions, span_lengths):
        start = int(position) + masked_before
        spans.append((start, start + span_len))
        masked_before += span_len
    return spans
