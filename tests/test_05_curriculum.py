"""Curriculum: phase table against hand-written tables, pacing rules on hand-computed loss
sequences, exact resume after a JSON save/load, and the span sampler's invariants and
statistics against the mixture's closed-form distribution."""
import json
import math

import numpy as np
import pytest

from mlot.architecture.config import ConfigError
from mlot.training.curriculum import Curriculum, CurriculumConfig, build_phases, sample_spans


def fast_config(**changes):
    settings = dict(min_steps_per_phase=0, ema_decay=0.5, plateau_patience=2, plateau_threshold=0.1,
                    rise_tolerance=0.2)
    settings.update(changes)
    return CurriculumConfig(**settings)


# ------------------------------------------------------------------------------- config

def test_config_json_round_trip_and_partial_dicts(tmp_path):
    config = CurriculumConfig(levels=3, weights={"coherence": 0.3}, stage_step_scale={"semantic": 4.0},
                              mask_ratio=[0.05, 0.3], advance_threshold=2.5)
    assert config.weights == {"reconstruction": 0.7, "consistency": 0.2, "coherence": 0.3}
    assert config.stage_step_scale["semantic"] == 4.0 and config.stage_step_scale["working"] == 1.0
    assert config.mask_ratio == (0.05, 0.3)
    path = tmp_path / "curriculum.json"
    config.to_json(path)
    assert CurriculumConfig.from_json(path) == config


@pytest.mark.parametrize("changes, key", [
    ({"levels": 0}, "levels"),
    ({"weights": {"reconstrution": 1.0}}, "weights.reconstrution"),
    ({"weights": {"coherence": -0.1}}, "weights.coherence"),
    ({"stage_step_scale": {"episodc": 2.0}}, "stage_step_scale.episodc"),
    ({"mask_ratio": (0.1, 0.6)}, "mask_ratio"),
    ({"long_span_mean": (3.0, 8.0)}, "long_span_mean"),   # not above short_span_max=3
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"segment_fraction": (0.0, 1.0)}, "segment_fraction"),
    ({"doc_level": (0, 4)}, "doc_level"),
    ({"plateau_patience": 0}, "plateau_patience"),
    ({"advance_threshold": float("nan")}, "advance_threshold"),
])
def test_config_errors_name_the_key(changes, key):
    with pytest.raises(ConfigError) as error:
        CurriculumConfig.from_dict(changes)
    assert error.value.key == key


# ------------------------------------------------------------------------------- phases

def test_default_phase_table():
    phases = build_phases(CurriculumConfig())
    assert [(p.stage, p.level) for p in phases] == [
        ("working", 0), ("working", 1), ("episodic", 1), ("episodic", 2),
        ("semantic", 2), ("semantic", 3), ("integrated", 3)]
    assert [p.index for p in phases] == list(range(7))
    # levels 0..3 interpolate (easy, hard) at 0, 1/3, 2/3, 1
    by_level = {p.level: p for p in phases}
    assert [by_level[l].mask_ratio for l in range(4)] == pytest.approx([0.10, 0.15, 0.20, 0.25])
    assert [by_level[l].long_span_mean for l in range(4)] == pytest.approx([4.0, 6.0, 8.0, 10.0])
    assert [by_level[l].short_span_fraction for l in range(4)] == pytest.approx([0.6, 0.5, 0.4, 0.3])
    assert [by_level[l].segments_per_doc for l in range(4)] == [2, 4, 6, 8]
    assert [by_level[l].max_doc_level for l in range(4)] == [1, 2, 3, 4]
    assert [by_level[l].segment_tokens(128) for l in range(4)] == [64, 85, 107, 128]  # 128*(0.5, .667, .833, 1)
    assert [p.min_steps for p in phases] == [200, 200, 300, 300, 400, 400, 200]


def test_stages_switch_memory_and_losses():
    on, off = True, False
    expected = {  # stage: (working, episodic, semantic), consistency weight, commitment
        "working": ((on, off, off), 0.0, off),
        "episodic": ((on, on, off), 0.2, off),
        "semantic": ((on, on, on), 0.2, on),
        "integrated": ((on, on, on), 0.2, on),
    }
    for phase in build_phases(CurriculumConfig()):
        memory, consistency, commitment = expected[phase.stage]
        assert (phase.memory["working"], phase.memory["episodic"], phase.memory["semantic"]) == memory
        assert dict(phase.loss_weights) == {"reconstruction": 0.7, "consistency": consistency, "coherence": 0.1}
        assert phase.consistency_commitment == commitment
        with pytest.raises(TypeError):
            phase.memory["semantic"] = True  # read-only: the table is shared
    assert json.loads(json.dumps(build_phases(CurriculumConfig())[4].to_dict()))["memory"]["semantic"] is True


@pytest.mark.parametrize("levels, positions", [
    (1, [("working", 0), ("episodic", 0), ("semantic", 0), ("integrated", 0)]),
    (2, [("working", 0), ("working", 1), ("episodic", 1), ("semantic", 1), ("integrated", 1)]),
    (6, [("working", 0), ("working", 1), ("episodic", 1), ("episodic", 2), ("semantic", 2),
         ("semantic", 3), ("integrated", 3), ("integrated", 4), ("integrated", 5)]),
])
def test_phase_table_for_other_level_counts(levels, positions):
    phases = build_phases(CurriculumConfig(levels=levels))
    assert [(p.stage, p.level) for p in phases] == positions
    assert phases[-1].mask_ratio == pytest.approx(0.25 if levels > 1 else 0.10)


# ------------------------------------------------------------------------------- pacing

def test_threshold_advance_waits_for_the_stage_scaled_minimum():
    curriculum = Curriculum(fast_config(min_steps_per_phase=10, advance_threshold=1.0))
    assert curriculum.observe_validation(5, 0.5) is None          # below threshold but only 5 steps in
    assert curriculum.observe_validation(10, 0.5) == "advance"     # working: 10 steps
    assert curriculum.phase.name == "working-L1"
    assert curriculum.observe_validation(15, 0.5) is None
    assert curriculum.observe_validation(20, 1.5) is None          # above threshold, still improving
    assert curriculum.observe_validation(20, 1.0) == "advance"     # at the threshold counts
    assert curriculum.phase.name == "episodic-L1"                  # episodic minimum: 15 steps
    assert curriculum.observe_validation(34, 0.5) is None
    assert curriculum.observe_validation(35, 0.5) == "advance"
    assert curriculum.events == {"advance": 3, "plateau-advance": 0, "hold": 0}
    assert [t["step"] for t in curriculum.transitions] == [10, 20, 35]


def test_plateau_advance_after_patience_evaluations_without_relative_improvement():
    curriculum = Curriculum(fast_config())   # patience 2, relative threshold 0.1
    assert curriculum.observe_validation(1, 10.0) is None   # best 10
    assert curriculum.observe_validation(2, 9.5) is None    # 5 % better: stale 1
    assert curriculum.observe_validation(3, 8.9) is None    # 11 % better than 10: best 8.9, stale 0
    assert curriculum.observe_validation(4, 8.2) is None    # 7.9 % better than 8.9: stale 1
    assert curriculum.observe_validation(5, 8.1) == "plateau-advance"
    assert curriculum.index == 1
    assert curriculum.observe_validation(6, 8.0) is None    # tracking restarted in the new phase


def test_rise_in_train_loss_steps_back_one_phase():
    curriculum = Curriculum(fast_config(advance_threshold=1.0))  # EMA decay 0.5: warm-up 2 losses
    curriculum.observe_validation(0, 0.5)
    curriculum.observe_validation(0, 0.5)
    assert curriculum.index == 2
    # EMA: 1, 1 (best 1), 0.9 (best 0.9), 1.05 (rise 16.7 % <= 20 %), 1.175 (rise 30.6 %: hold)
    results = [curriculum.observe_train_loss(step, loss)
               for step, loss in zip(range(1, 6), [1.0, 1.0, 0.8, 1.2, 1.3])]
    assert results == [None, None, None, None, "hold"]
    assert curriculum.index == 1 and curriculum.events["hold"] == 1
    assert curriculum.transitions[-1] == {"step": 5, "from": 2, "to": 1, "reason": "hold"}
    # the EMA restarts: a first loss that is high relative to the old phase is no rise
    assert curriculum.observe_train_loss(6, 5.0) is None and curriculum.observe_train_loss(7, 5.0) is None


def test_hold_at_the_first_phase_stays_and_nonfinite_values_are_ignored():
    curriculum = Curriculum(fast_config(ema_decay=0.0))  # EMA = last loss, no warm-up
    assert curriculum.observe_train_loss(1, 1.0) is None
    assert curriculum.observe_train_loss(2, float("nan")) is None
    assert curriculum.observe_train_loss(3, float("inf")) is None
    assert curriculum.observe_validation(3, float("nan")) is None
    assert curriculum.observe_train_loss(4, 1.3) == "hold"
    assert curriculum.index == 0 and curriculum.events["hold"] == 1
    assert curriculum.observe_train_loss(5, 1.3) is None  # tracking restarted from 1.3


def test_finishing_and_step_order():
    curriculum = Curriculum(fast_config(advance_threshold=1.0, levels=1))
    reasons = [curriculum.observe_validation(step, 0.5) for step in range(5)]
    assert reasons == ["advance"] * 4 + [None]
    assert curriculum.finished and curriculum.index == 3
    assert curriculum.transitions[-1] == {"step": 3, "from": 3, "to": None, "reason": "advance"}
    assert curriculum.observe_train_loss(6, 100.0) is None
    with pytest.raises(ValueError, match="step 2 is before the last observed step 6"):
        curriculum.observe_train_loss(2, 1.0)
    with pytest.raises(ValueError, match="integer >= 0"):
        curriculum.observe_validation(-1, 1.0)


def observation_script(seed, steps):
    """A noisy loss run with plateaus and spikes: (kind, step, value) events."""
    rng = np.random.default_rng(seed)
    events, level = [], 3.0
    for step in range(steps):
        level *= 0.995
        spike = 2.0 if rng.random() < 0.02 else 1.0
        events.append(("train", step, level * spike * (1 + 0.05 * rng.standard_normal())))
        if step % 5 == 4:
            events.append(("validation", step, level * (1 + 0.05 * rng.standard_normal())))
    return events


def run(curriculum, events):
    trace = []
    for kind, step, value in events:
        observe = curriculum.observe_train_loss if kind == "train" else curriculum.observe_validation
        trace.append((observe(step, value), curriculum.index, curriculum.finished))
    return trace


def test_resume_from_json_state_continues_identically():
    config = fast_config(min_steps_per_phase=8, ema_decay=0.8, advance_threshold=0.9, plateau_patience=3,
                         plateau_threshold=0.02, rise_tolerance=0.1)
    events = observation_script(seed=7, steps=600)
    straight = run(Curriculum(config), events)
    outcomes = {result for result, _, _ in straight}
    assert {"advance", "plateau-advance", "hold"} <= outcomes  # the script exercises every rule

    for cut in (37, len(events) // 2, len(events) - 3):
        first = Curriculum(config)
        head = run(first, events[:cut])
        resumed = Curriculum(config)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
        tail = run(resumed, events[cut:])
        assert head + tail == straight
        assert resumed.state_dict() == run_to_end_state(config, events)


def run_to_end_state(config, events):
    curriculum = Curriculum(config)
    run(curriculum, events)
    return curriculum.state_dict()


def test_state_from_another_config_is_refused():
    state = Curriculum(CurriculumConfig(levels=4)).state_dict()
    with pytest.raises(ValueError, match="saved with 7 phases, this config has 5"):
        Curriculum(CurriculumConfig(levels=2)).load_state_dict(state)
    del state["ema"]
    with pytest.raises(ValueError, match=r"missing \['ema'\]"):
        Curriculum().load_state_dict(state)


# ------------------------------------------------------------------------------ span sampler

def phase_with(**changes):
    settings = dict(levels=1, mask_ratio=(0.15, 0.15), short_span_fraction=(0.5, 0.5), short_span_max=3,
                    long_span_mean=(8.0, 8.0))
    settings.update(changes)
    return build_phases(CurriculumConfig(**settings))[0]


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
        phase = phase_with(mask_ratio=(mask_ratio, mask_ratio))
        for length in list(range(0, 20)) + [64, 257]:
            for max_span_len in (1, 2, 5, 16):
                for _ in range(5):
                    assert_valid(sample_spans(length, phase, rng, max_span_len), length, max_span_len)


def test_same_seed_same_spans():
    phase = phase_with()
    draws = [sample_spans(200, phase, np.random.default_rng(42), 16) for _ in range(2)]
    assert draws[0] == draws[1]
    assert draws[0] != sample_spans(200, phase, np.random.default_rng(43), 16)


def test_coverage_follows_the_mask_ratio():
    rng = np.random.default_rng(1)
    for mask_ratio, length in ((0.10, 128), (0.25, 128), (0.15, 512), (0.10, 32), (0.5, 64)):
        phase = phase_with(mask_ratio=(mask_ratio, mask_ratio))
        covered = [sum(end - start for start, end in sample_spans(length, phase, rng, 16)) for _ in range(400)]
        assert np.mean(covered) / length == pytest.approx(mask_ratio, abs=0.01)


def test_span_lengths_follow_the_short_long_mixture():
    """Histogram of span lengths on long segments (where the budget's last-span rule barely
    matters) against the mixture: uniform 1..3 with weight 0.5, else 4 + Poisson(8 - 4)
    clipped to 12."""
    short_fraction, short_max, long_mean, max_span_len = 0.5, 3, 8.0, 12
    phase = phase_with(short_span_fraction=(short_fraction, short_fraction), long_span_mean=(long_mean, long_mean))
    rng = np.random.default_rng(2)
    lengths = np.concatenate([[end - start for start, end in sample_spans(4000, phase, rng, max_span_len)]
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
    phase = phase_with(mask_ratio=(0.3, 0.3))
    rng = np.random.default_rng(3)
    draws = [sample_spans(10, phase, rng, 4) for _ in range(300)]
    assert any(spans[0][0] == 0 for spans in draws) and any(spans[-1][1] == 10 for spans in draws)


def test_max_span_len_must_be_positive():
    with pytest.raises(ValueError, match="max_span_len"):
        sample_spans(10, phase_with(), np.random.default_rng(0), 0)
