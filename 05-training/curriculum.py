"""Curriculum: what the model is shown and which memory it may use, paced by its own progress.

Two ladders are climbed together. The *difficulty level* (0 .. ``levels - 1``) sets the data:
mask ratio, span lengths (multi-scale: short spans of 1..``short_span_max`` tokens mixed with
long ones whose mean grows), how much of the working window a segment fills, how many segments
of a document are read in a row, and the hardest corpus documents allowed (documents carry a
rarity level 1..4). The *memory stage* sets the model: working memory only, then episodic,
then semantic, then all of them integrated; each stage switches on its memory tier for reading
and its losses (``STAGES``, ``Phase``).

A *phase* is one (stage, level) position. The phase table is a staircase from (working, 0) to
(integrated, ``levels - 1``) that raises the level and then the stage, alternately, while both
can still rise, then whichever can: with 4 levels, working L0, working L1, episodic L1,
episodic L2, semantic L2, semantic L3, integrated L3. A new memory tier is thus never met
together with harder data. Memory switches: working always; episodic from "episodic"; semantic
from "semantic". Losses: reconstruction and coherence always; consistency from "episodic",
its commitment term towards semantic slots from "semantic". "Integrated" has every switch on
and differs from "semantic" by its data (the hardest levels) and its own pacing scale.

Pacing (``Curriculum``) advances on mastery and steps back on trouble:

- ``observe_validation(step, metric)`` (lower is better, e.g. validation reconstruction loss)
  advances once the phase has lasted its minimum number of steps and either the metric is at
  or below ``advance_threshold`` ("advance") or ``plateau_patience`` evaluations in a row failed
  to improve on the best by more than the relative ``plateau_threshold`` ("plateau-advance").
  Advancing from the last phase marks the curriculum finished.
- ``observe_train_loss(step, loss)`` keeps an exponential moving average of the training loss,
  reset at every phase change; after a warm-up of one EMA time constant (``1 / (1 - decay)``
  observations) it tracks the phase's best EMA, and an EMA more than ``rise_tolerance`` (a
  fraction) above that best means the phase is too hard: the curriculum steps back one phase
  ("hold"; at the first phase it stays and restarts its tracking).

``state_dict()`` is plain JSON data; a curriculum restored with ``load_state_dict`` continues
exactly as the uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math
import types

import numpy as np

from mlot.architecture.config import JsonConfig, check
from mlot.model.masking import SpanScales
from mlot.training.loss_functions import DEFAULT_WEIGHTS

STAGES = ("working", "episodic", "semantic", "integrated")
LOSS_NAMES = ("reconstruction", "consistency", "coherence")
EVENTS = ("advance", "plateau-advance", "hold")
DEFAULT_STAGE_STEP_SCALE = {"working": 1.0, "episodic": 1.5, "semantic": 2.0, "integrated": 1.0}
STATE_VERSION = 1


@dataclasses.dataclass
class CurriculumConfig(JsonConfig):
    """Difficulty ranges, memory stages and pacing rules. A ``(easy, hard)`` pair is the value
    at level 0 and at the top level; levels between are interpolated linearly (integers
    rounded half up)."""

    # --- pacing
    levels: int = 4                       # difficulty levels; phases = 3 + levels
    min_steps_per_phase: int = 200        # no advance before this many steps in a phase (x stage scale)
    # memory-specific pacing: a stage's phases last at least min_steps_per_phase * scale steps, as episodic
    # and semantic memory need steps to fill before their metric means anything (missing stages keep defaults)
    stage_step_scale: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_STAGE_STEP_SCALE))
    advance_threshold: float | None = None  # validation metric <= this masters a phase; None: plateau rule only
    plateau_patience: int = 3             # evaluations without enough improvement before a plateau-advance
    plateau_threshold: float = 0.01       # relative improvement on the phase's best that counts as progress
    rise_tolerance: float = 0.2           # train-loss EMA this fraction above the phase's best EMA -> step back
    ema_decay: float = 0.98               # train-loss EMA decay in [0, 1)

    # --- loss weights (before the stage switches losses off): keys of LOSS_NAMES, missing keys keep defaults
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    # --- difficulty ranges (easy, hard)
    mask_ratio: tuple[float, float] = (0.10, 0.25)         # fraction of a segment's tokens masked, in (0, 0.5]
    short_span_fraction: tuple[float, float] = (0.6, 0.3)  # share of spans that are short
    short_span_max: int = 3                                # short spans have 1..short_span_max tokens
    long_span_mean: tuple[float, float] = (4.0, 10.0)      # mean long-span length (> short_span_max)
    segments_per_doc: tuple[int, int] = (2, 8)             # segments of one document read in a row
    segment_fraction: tuple[float, float] = (0.5, 1.0)     # share of segment_len a segment fills, in (0, 1]
    doc_level: tuple[int, int] = (1, 4)                    # hardest corpus document level allowed (>= 1)

    def derive_defaults(self):
        self.weights = {**DEFAULT_WEIGHTS, **self.weights}
        self.stage_step_scale = {**DEFAULT_STAGE_STEP_SCALE, **self.stage_step_scale}

    def validate(self):
        for key, least in (("levels", 1), ("min_steps_per_phase", 0), ("plateau_patience", 1), ("short_span_max", 1)):
            check(getattr(self, key) >= least, key, f"must be >= {least}, got {getattr(self, key)}")
        for stage, scale in self.stage_step_scale.items():
            check(stage in STAGES, f"stage_step_scale.{stage}", f"unknown stage; stages are {', '.join(STAGES)}")
            check(math.isfinite(scale) and scale > 0, f"stage_step_scale.{stage}",
                  f"must be finite and > 0, got {scale}")
        check(self.advance_threshold is None or math.isfinite(self.advance_threshold), "advance_threshold",
              f"must be finite or null, got {self.advance_threshold}")
        check(math.isfinite(self.plateau_threshold) and self.plateau_threshold >= 0, "plateau_threshold",
              f"must be finite and >= 0, got {self.plateau_threshold}")
        check(math.isfinite(self.rise_tolerance) and self.rise_tolerance > 0, "rise_tolerance",
              f"must be finite and > 0, got {self.rise_tolerance}")
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        for name, weight in self.weights.items():
            check(name in LOSS_NAMES, f"weights.{name}", f"unknown loss; losses are {', '.join(LOSS_NAMES)}")
            check(math.isfinite(weight) and weight >= 0, f"weights.{name}", f"must be finite and >= 0, got {weight}")
        for key, is_valid, rule in (("mask_ratio", lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
                                    ("short_span_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
                                    ("long_span_mean", lambda v: math.isfinite(v) and v > self.short_span_max,
                                     f"finite and > short_span_max={self.short_span_max}"),
                                    ("segments_per_doc", lambda v: v >= 1, ">= 1"),
                                    ("segment_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
                                    ("doc_level", lambda v: v >= 1, ">= 1")):
            for value in getattr(self, key):
                check(is_valid(value), key, f"values must be {rule}, got {list(getattr(self, key))}")


# ---------------------------------------------------------------------------------- phases
@dataclasses.dataclass(frozen=True)
class Phase:
    """One curriculum position. The total loss is ``sum(loss_weights[name] * loss[name])``: weights
    are not renormalised when a loss is off, so reconstruction keeps its share."""

    index: int
    stage: str
    level: int
    memory: types.MappingProxyType          # read-only {"working", "episodic", "semantic"} -> bool (reading)
    loss_weights: types.MappingProxyType    # read-only {"reconstruction", "consistency", "coherence"} -> float
    consistency_commitment: bool            # consistency includes its commitment term towards semantic slots
    mask_ratio: float
    short_span_fraction: float
    short_span_max: int
    long_span_mean: float
    segments_per_doc: int
    segment_fraction: float
    max_doc_level: int
    min_steps: int                          # steps before this phase may advance

    @property
    def name(self) -> str:
        return f"{self.stage}-L{self.level}"

    @property
    def span_scales(self) -> SpanScales:
        return SpanScales(self.mask_ratio, self.short_span_fraction, self.short_span_max, self.long_span_mean)

    def segment_tokens(self, segment_len: int) -> int:
        """Tokens per segment at this phase for a model whose working window is ``segment_len``."""
        return max(1, min(segment_len, _round_half_up(self.segment_fraction * segment_len)))

    def to_dict(self) -> dict:
        """JSON-able summary (for metrics.jsonl and checkpoints' meta)."""
        return {**{field.name: getattr(self, field.name) for field in dataclasses.fields(self)},
                "memory": dict(self.memory), "loss_weights": dict(self.loss_weights)}


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _staircase(levels: int) -> list[tuple[int, int]]:
    """(stage index, level) positions: level and stage rise alternately, level first."""
    stage, level, raise_level = 0, 0, True
    positions = [(stage, level)]
    while stage < len(STAGES) - 1 or level < levels - 1:
        if (raise_level and level < levels - 1) or stage == len(STAGES) - 1:
            level += 1
        else:
            stage += 1
        raise_level = not raise_level
        positions.append((stage, level))
    return positions


def build_phases(config: CurriculumConfig) -> tuple[Phase, ...]:
    """The phase table of ``config`` (``3 + config.levels`` phases), easiest first."""
    phases = []
    for index, (stage_index, level) in enumerate(_staircase(config.levels)):
        t = level / (config.levels - 1) if config.levels > 1 else 0.0

        def at_level(pair):
            return pair[0] + (pair[1] - pair[0]) * t

        stage = STAGES[stage_index]
        # no consistency term before episodic memory: nothing to be consistent with
        weights = {**config.weights, "consistency": 0.0} if stage_index < 1 else dict(config.weights)
        phases.append(Phase(
            index=index, stage=stage, level=level,
            memory=types.MappingProxyType(dict(working=True, episodic=stage_index >= 1, semantic=stage_index >= 2)),
            loss_weights=types.MappingProxyType(weights), consistency_commitment=stage_index >= 2,
            mask_ratio=at_level(config.mask_ratio), short_span_fraction=at_level(config.short_span_fraction),
            short_span_max=config.short_span_max, long_span_mean=at_level(config.long_span_mean),
            segments_per_doc=_round_half_up(at_level(config.segments_per_doc)),
            segment_fraction=at_level(config.segment_fraction),
            max_doc_level=_round_half_up(at_level(config.doc_level)),
            min_steps=math.ceil(config.min_steps_per_phase * config.stage_step_scale[stage])))
    return tuple(phases)


# ---------------------------------------------------------------------------------- pacing
class Curriculum:
    """Adaptive pacing over the phase table; see the module docstring for the rules."""

    def __init__(self, config: CurriculumConfig | None = None):
        self.config = config if config is not None else CurriculumConfig()
        self.phases = build_phases(self.config)
        self.index, self.finished = 0, False
        self.events = {event: 0 for event in EVENTS}
        self.transitions: list[dict] = []   # {"step", "from", "to" (None when finishing), "reason"}
        self._last_step = None
        self._reset_phase_tracking(step=0)
        self._ema_warmup = math.ceil(1.0 / (1.0 - self.config.ema_decay) - 1e-9)  # one EMA time constant

    @property
    def phase(self) -> Phase:
        return self.phases[self.index]

    # --- observations
    def observe_train_loss(self, step: int, loss: float) -> str | None:
        """Feed one training loss; returns "hold" when the curriculum stepped back, else None.
        Non-finite losses are ignored (the loop skips those steps)."""
        self._check_step(step)
        if self.finished or not math.isfinite(loss):
            return None
        decay = self.config.ema_decay
        self._ema = loss if self._ema is None else decay * self._ema + (1.0 - decay) * loss
        self._ema_count += 1
        if self._ema_count < self._ema_warmup:
            return None
        if self._best_ema is None or self._ema < self._best_ema:
            self._best_ema = self._ema
            return None
        if self._ema - self._best_ema > self.config.rise_tolerance * abs(self._best_ema):
            self._move(step, max(self.index - 1, 0), "hold")
            return "hold"
        return None

    def observe_validation(self, step: int, metric: float) -> str | None:
        """Feed one validation metric (lower is better); returns "advance" or "plateau-advance"
        when the curriculum moved on (or finished), else None. Non-finite metrics are ignored."""
        self._check_step(step)
        if self.finished or not math.isfinite(metric):
            return None
        best = self._best_validation
        if best is None or metric < best - self.config.plateau_threshold * abs(best):
            self._best_validation, self._stale_evaluations = metric, 0
        else:
            self._stale_evaluations += 1
        if step - self._phase_start_step < self.phase.min_steps:
            return None
        threshold = self.config.advance_threshold
        if threshold is not None and metric <= threshold:
            reason = "advance"
        elif self._stale_evaluations >= self.config.plateau_patience:
            reason = "plateau-advance"
        else:
            return None
        self.finished = self.index == len(self.phases) - 1
        self._move(step, None if self.finished else self.index + 1, reason)
        return reason

    def _check_step(self, step):
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
            raise ValueError(f"curriculum step must be an integer >= 0, got {step!r}")
        if self._last_step is not None and step < self._last_step:
            raise ValueError(f"curriculum step {step} is before the last observed step {self._last_step}")
        self._last_step = int(step)

    def _move(self, step, new_index, reason):
        self.transitions.append({"step": int(step), "from": self.index, "to": new_index, "reason": reason})
        self.events[reason] += 1
        if new_index is not None:
            self.index = new_index
        self._reset_phase_tracking(step)

    def _reset_phase_tracking(self, step):
        self._phase_start_step = int(step)
        self._ema, self._ema_count, self._best_ema = None, 0, None
        self._best_validation, self._stale_evaluations = None, 0

    # --- state
    def state_dict(self) -> dict:
        """JSON-able state (floats are kept exactly by JSON's shortest repr)."""
        return {"version": STATE_VERSION, "num_phases": len(self.phases), "index": self.index,
                "finished": self.finished, "last_step": self._last_step, "phase_start_step": self._phase_start_step,
                "ema": self._ema, "ema_count": self._ema_count, "best_ema": self._best_ema,
                "best_validation": self._best_validation, "stale_evaluations": self._stale_evaluations,
                "events": dict(self.events), "transitions": [dict(t) for t in self.transitions]}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; a state that does not fit this config raises ValueError."""
        def need(condition, what):
            if not condition:
                raise ValueError(f"curriculum state: {what}")

        need(isinstance(state, dict), f"expected an object, got {type(state).__name__}")
        expected = set(self.state_dict())
        need(set(state) == expected, f"keys differ from the expected ones: missing "
             f"{sorted(expected - set(state))}, unknown {sorted(set(state) - expected)}")
        need(state["version"] == STATE_VERSION, f"version {state['version']!r} is not {STATE_VERSION}")
        need(state["num_phases"] == len(self.phases),
             f"saved with {state['num_phases']} phases, this config has {len(self.phases)}")
        need(isinstance(state["index"], int) and 0 <= state["index"] < len(self.phases),
             f"phase index {state['index']!r} out of range")
        need(isinstance(state["events"], dict) and set(state["events"]) == set(EVENTS),
             f"events must have the keys {list(EVENTS)}")
        for key in ("ema", "best_ema", "best_validation"):
            need(state[key] is None or isinstance(state[key], (int, float)), f"{key} must be a number or null")
        self.index, self.finished = state["index"], bool(state["finished"])
        self._last_step, self._phase_start_step = state["last_step"], state["phase_start_step"]
        self._ema, self._ema_count, self._best_ema = state["ema"], state["ema_count"], state["best_ema"]
        self._best_validation, self._stale_evaluations = state["best_validation"], state["stale_evaluations"]
        self.events = {event: int(state["events"][event]) for event in EVENTS}
        self.transitions = [dict(t) for t in state["transitions"]]
