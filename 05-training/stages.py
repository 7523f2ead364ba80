"""What a stage is: the part of training that differs between pretraining, memory fine-tuning,
dialogue and recall practice. The loop (training_loop.Trainer) calls these methods and nothing
else; adding a way of training means writing one subclass, never another loop.

    parameter_groups(train)   optimizer groups: [{"name", "params", "lr", "weight_decay"}]; every
                              parameter not in a group is frozen by the stage
    loss(step)                StepLoss of step `step`'s batch (its forward pass); its batch must be a
                              function of the step and the stage's state, so that a resumed run sees
                              the same batches
    after_step(step, terms)   work after the update (memory writes, consolidation, curriculum);
                              returns extra figures for the log
    validate()                held-out figures (the model is in eval mode meanwhile)
    observe_validation(...)   react to them (curriculum pacing; `plateau`: the rates were just cut)
    state() / load_state()    the stage's own arrays (names prefixed, e.g. "memory.") and JSON meta
    identity()                what the checkpoint's meta must name (dataset, base, validation setup)
    finish(directory, ...)    end-of-run report and files
"""
from __future__ import annotations

from typing import NamedTuple

from mlot.architecture import Tensor


class StepLoss(NamedTuple):
    total: Tensor | None   # None: nothing to learn from this batch (no update)
    terms: dict            # "loss" and every term on its own, as floats
    tokens: int            # tokens this step read (for tokens/s)


class Stage:
    name = "stage"
    validate_before_training = False   # log a validation at step 0 (stages that report before / after)
    plateau_metric = None              # a validation figure (lower is better) whose plateaus halve the rates
    semantic_from_base = False         # a later stage that keeps the semantic slots its base consolidated

    def __init__(self, model, config):
        self.model, self.config = model, config

    def parameter_groups(self, train) -> list:
        raise NotImplementedError

    def loss(self, step: int) -> StepLoss:
        raise NotImplementedError

    def after_step(self, step: int, terms: dict) -> dict:
        return {}

    def validate(self) -> dict:
        return {}

    def observe_validation(self, step: int, figures: dict, plateau: bool) -> None:
        pass

    def log_fields(self, step_result: dict) -> dict:
        return {}

    def progress_fields(self) -> dict:
        return {}

    def state(self) -> tuple[dict, dict]:
        return {}, {}

    def load_state(self, arrays: dict, meta: dict) -> None:
        pass

    def identity(self) -> dict:
        return {}

    def finish(self, directory, first: dict, last: dict) -> None:
        """The end of a run (not a stop): `first` / `last` are the validations before the first
        step (stages with validate_before_training) and after the last."""

