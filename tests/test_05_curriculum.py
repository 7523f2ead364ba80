"""Curriculum: phase table against hand-written tables, pacing rules on hand-computed loss
sequences, exact resume after a JSON save/load, and the span scales a phase hands to the span
sampler (tested in test_04_masking.py)."""
import json

import numpy as np
import pytest

from mlot.architecture.config import ConfigError
from mlot.model.masking import SpanScales
from mlot.training.curriculum import Curriculum, CurriculumConfig, build_phases


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


# ------------------------------------------------------------------------------ span scales

def test_span_scales_are_the_phase_settings():
    last = build_phases(CurriculumConfig())[-1]  # level 3 of 4: the (easy, hard) pairs' hard ends
    assert last.span_scales == SpanScales(mask_ratio=pytest.approx(0.25), short_span_fraction=pytest.approx(0.3),
                                          short_span_max=3, long_span_mean=pytest.approx(10.0))
