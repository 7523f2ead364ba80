"""Span sampling (04-model/masking.py): valid spans on every length, the mask ratio's coverage and
the short/long length mixture against the distribution written out by hand, seeded draws."""
import math

import numpy as np
import pytest

from mlot.model.masking import SpanScales, sample_spans


def scales_with(**changes):
    return SpanScales(**{**dict(mask_ratio=0.15, short_span_fraction=0.5, short_span_max=3, long_span_mean=8.0),
                         **changes})


def assert_valid(spans, length, max_span_len):
    masked = 0
    previous_end = -1
    for start, end in spans:
        assert isinstance(start, int) and isinstance(end, int)
        assert 0 <= start < end <= length and end - start <= max_span_len
        assert start > previous_end  # sorted with at least one visible token between spans
        previous_end, masked = end, masked + end - start
    assert masked < length or length == 0
    assert (len(spans) >= 1) == (length >= 2)


def test_spans_are_valid_on_every_length_and_ratio():
    rng = np.random.default_rng(0)
    for mask_ratio in (0.05, 0.3, 0.5):
        scales = scales_with(mask_ratio=mask_ratio)
        for length in list(range(0, 20)) + [64, 257]:
            for max_span_len in (1, 2, 5, 16):
                for _ in range(5):
                    assert_valid(sample_spans(length, scales, rng, max_span_len), length, max_span_len)


def test_same_seed_same_spans():
    scales = scales_with()
    draws = [sample_spans(200, scales, np.random.default_rng(42), 16) for _ in range(2)]
    assert draws[0] == draws[1]
    assert draws[0] != sample_spans(200, scales, np.random.default_rng(43), 16)


def test_coverage_follows_the_mask_ratio():
    rng = np.random.default_rng(1)
    for mask_ratio, length in ((0.10, 128), (0.25, 128), (0.15, 512), (0.10, 32), (0.5, 64)):
        scales = scales_with(mask_ratio=mask_ratio)
        covered = [sum(end - start for start, end in sample_spans(length, scales, rng, 16)) for _ in range(400)]
        assert np.mean(covered) / length == pytest.approx(mask_ratio, abs=0.01)


def test_span_lengths_follow_the_short_long_mixture():
    """Histogram of span lengths on long segments (where the budget's last-span rule barely
    matters) against the mixture: uniform 1..3 with weight 0.5, else 4 + Poisson(8 - 4)
    clipped to 12."""
    short_fraction, short_max, long_mean, max_span_len = 0.5, 3, 8.0, 12
    scales = scales_with(short_span_fraction=short_fraction, long_span_mean=long_mean)
    rng = np.random.default_rng(2)
    lengths = np.concatenate([[end - start for start, end in sample_spans(4000, scales, rng, max_span_len)]
                              for _ in range(40)])
    lam = long_mean - (short_max + 1)
    poisson = [math.exp(-lam) * lam ** k / math.factorial(k) for k in range(max_span_len - short_max)]
    expected = np.zeros(max_span_len + 1)
    expected[1:short_max + 1] = short_fraction / short_max
    expected[short_max + 1:max_span_len + 1] = (1 - short_fraction) * np.array(poisson)
    expected[max_span_len] += (1 - short_fraction) * (1 - sum(poisson))  # clipped tail
    observed = np.bincount(lengths, minlength=max_span_len + 1) / len(lengths)
    assert len(lengths) > 4000
    np.testing.assert_allclose(observed, expected, atol=0.02)


def test_gaps_reach_both_ends():
    scales = scales_with(mask_ratio=0.3)
    rng = np.random.default_rng(3)
    draws = [sample_spans(10, scales, rng, 4) for _ in range(300)]
    assert any(spans[0][0] == 0 for spans in draws) and any(spans[-1][1] == 10 for spans in draws)


def test_max_span_len_must_be_positive():
    with pytest.raises(ValueError, match="max_span_len"):
        sample_spans(10, scales_with(), np.random.default_rng(0), 0)
