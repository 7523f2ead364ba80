"""The one training loop. Every way of training — pretraining, memory fine-tuning, dialogue, recall
practice — runs through `Trainer`; what differs is a small *stage* object (stages.py's `Stage`):
its parameter groups, the loss of a step's batch, what follows a step, its validation, its state.

A non-finite loss or gradient skips the update (counted, never reaching the weights). Validation
(printed, and in metrics.jsonl), metrics lines and checkpoints come on their intervals, and a last
checkpoint at the end (or on SIGINT/SIGTERM).

`state()` / `load_state()` give and take everything — model, optimizer, schedules, every RNG
(dropout included), the stage's own state — so a resumed run's losses equal an uninterrupted run's.

    python 05-training/training_loop.py --monitor --checkpoint_dir checkpoints/   # (= monitor.py)
"""
from __future__ import annotations

import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture.atomic import atomic_output
from mlot.architecture.config import JsonConfig, check
from mlot.architecture.optim import AdamW, ReduceLROnPlateau, WarmupCosine, clip_grad_norm_, grads_are_finite
from mlot.training.distributed import World

RNG_STREAMS = ("data_order", "spans", "validation", "batches", "replay")


def stream_seed(seed: int, stream: str, *index: int) -> list:
    """The seed of one named stream (and index, e.g. an epoch): streams never share draws."""
    return [seed, 1 + RNG_STREAMS.index(stream), *index]


def stream_rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, stream, *index))


@dataclasses.dataclass
class TrainConfig(JsonConfig):
    """How the loop runs, whatever the stage: the `training` section of a config file."""
    batch_size: int = 8             # rows read side by side
    max_steps: int = 1000
    lr: float = 1e-3                # peak learning rate of the stage's main group (other groups: the stage's section)
    weight_decay: float = 0.01
    warmup_steps: int = 50          # linear warm-up, then cosine decay to max_steps
    grad_clip: float = 1.0
    eval_interval: int = 100        # steps between validations
    log_interval: int = 10          # steps between metrics.jsonl lines
    save_interval: int = 100        # steps between checkpoints
    keep_checkpoints: int = 3
    full_checkpoint_every: int = 5  # every this-many saves is a full (not incremental) checkpoint
    seed: int = 0

    def validate(self):
        for key in ("batch_size", "max_steps", "eval_interval", "log_interval", "save_interval",
                    "keep_checkpoints", "full_checkpoint_every"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        for key in ("lr", "grad_clip"):
            check(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key,
                  f"must be a finite number > 0, got {getattr(self, key)}")
        check(0 <= self.warmup_steps < self.max_steps, "warmup_steps",
              f"must lie in [0, max_steps={self.max_steps}), got {self.warmup_steps}")
        check(0 <= self.weight_decay < 1, "weight_decay", f"must lie in [0, 1), got {self.weight_decay}")


def rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Model, stage, optimizer, schedules and counters: one run of one stage.

    Under MPI (`world`, see distributed.py) every process runs the same loop; the stage trains
    its rows, gradients and loss terms are averaged across processes, the first one writes."""

    def __init__(self, model, stage, config: TrainConfig, world: World | None = None):
        self.model, self.stage, self.config = model, stage, config
        self.world = world or World()
        self.optimizer = AdamW(stage.parameter_groups(config))
        self.schedules = [WarmupCosine(self.optimizer, config.warmup_steps, config.max_steps, group=group["name"])
                          for group in self.optimizer.param_groups]
        self.plateaus = [ReduceLROnPlateau(self.optimizer, group=group["name"]) for group in self.optimizer.param_groups
                         if stage.plateau_metric is not None]
        self.step = self.tokens = self.skipped = 0
        self.first_validation: dict = {}   # before the first step, for stages that report before/after
        self.plan: dict | None = None      # train.py's stages still to run after this one (saved with it)
        self.last_validation: dict = {}

    # --- one step -----------------------------------------------------------------------------------
    def train_step(self) -> dict:
        self.model.train()
        result = self.stage.loss(self.step)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.optimizer.zero_grad()
        finite = math.isfinite(result.terms["loss"])
        learns = result.total is not None and result.total.requires_grad  # False: nothing trainable was used
        if finite and learns:
            result.total.backward()
            finite = grads_are_finite(params)
        finite, terms = self.world.average_gradients(params, finite, result.terms)
        grad_norm = float("nan")
        if not finite:
            self.skipped += 1
        elif learns:
            grad_norm = clip_grad_norm_(params, self.config.grad_clip)
            self.optimizer.step()
        for schedule in self.schedules:
            schedule.step()
        self.step += 1
        self.tokens += result.tokens
        return {**terms, "grad_norm": grad_norm, **self.stage.after_step(self.step, terms)}

    def validate(self) -> dict:
        self.model.eval()
        figures = self.stage.validate()
        self.model.train()
        self.last_validation = figures
        reductions = [plateau.step(figures[self.stage.plateau_metric]) for plateau in self.plateaus]
        self.stage.observe_validation(self.step, figures, plateau=any(reductions))
        return figures

    # --- the run --------------------------------------------------------------------------------------------
    def run(self, checkpoints, metrics_path: Path, progress: bool = True, should_stop=lambda: False) -> None:
        """Train to max_steps, logging, validating and saving on their intervals; a final checkpoint
        when it stops (the end, or should_stop() turning true after a step)."""
        config, root = self.config, self.world.is_root
        if self.step == 0 and self.stage.validate_before_training and not self.first_validation:
            self.first_validation = self.validate()
            if root:
                append_metrics(metrics_path, {"step": 0, **self.first_validation})
        bar = tqdm(total=config.max_steps, initial=self.step, unit="step", desc=self.stage.name,
                   disable=not progress or not root, dynamic_ncols=True)
        window_tokens, window_start = self.tokens, time.perf_counter()  # where the tokens/s window starts
        try:
            while self.step < config.max_steps and not self.world.any(should_stop()):
                result = self.train_step()
                last = self.step == config.max_steps  # the run's last figures are of its last step
                validation = self.validate() if self.step % config.eval_interval == 0 or last else None
                elapsed = time.perf_counter() - window_start
                tokens_per_s = (self.tokens - window_tokens) / elapsed if elapsed > 0 else 0.0
                if self.step % config.log_interval == 0 or validation is not None:
                    record = {**self.metrics(result, tokens_per_s), **(validation or {})}
                    if root:
                        append_metrics(metrics_path, record)
                    window_tokens, window_start = self.tokens, time.perf_counter()
                if validation is not None and root:
                    bar.write(f"step {self.step}: " + format_figures(validation), file=sys.stderr)
                if self.step % config.save_interval == 0:
                    self.save(checkpoints)
                bar.update(1)
                bar.set_postfix(loss=f"{result['loss']:.3f}", tok_s=f"{tokens_per_s:.0f}",
                                **self.stage.progress_fields())
        finally:
            bar.close()
        if self.step % config.save_interval != 0:
            self.save(checkpoints)

    def save(self, checkpoints) -> None:
        state = self.state()  # every process takes part in gathering it; the first one writes it
        if self.world.is_root:
            checkpoints.save(self.step, *state)

    def metrics(self, step_result: dict, tokens_per_s: float) -> dict:
        return {"step": self.step, "tokens": self.tokens,
                **{k: round(float(v), 6) for k, v in step_result.items() if k.startswith("loss")},
                "grad_norm": round(float(step_result["grad_norm"]), 4),
                "lr": {group["name"]: group["lr"] for group in self.optimizer.param_groups},
                "tokens_per_s": round(tokens_per_s, 1), "rss_mb": round(rss_mb(), 1),
                **self.stage.log_fields(step_result), "skipped_steps": self.skipped}

    # --- state ----------------------------------------------------------------------------------------------
    def dropout_modules(self) -> list:
        return [module for _, module in self.model.named_modules() if hasattr(module, "rng")]

    def state(self) -> tuple[dict, dict]:
        """(arrays, meta): everything needed to continue exactly, for the checkpoint writer."""
        stage_arrays, stage_meta = self.stage.state()
        optimizer = self.optimizer.state_dict()
        arrays = {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                  **{f"optim.{k}": v for k, v in optimizer["arrays"].items()}, **stage_arrays}
        meta = {"stage": self.stage.name, **self.stage.identity(), "model_config": self.model.config.to_dict(),
                "train_config": self.config.to_dict(), "stage_config": self.stage.config.to_dict(),
                "step": self.step, "tokens": self.tokens, "skipped": self.skipped,
                "optimizer": optimizer["meta"], "schedules": [s.state_dict() for s in self.schedules],
                "plateaus": [p.state_dict() for p in self.plateaus],
                "dropout_rngs": [m.rng.bit_generator.state for m in self.dropout_modules()],
                "first_validation": self.first_validation, "last_validation": self.last_validation,
                "stage_state": stage_meta, "plan": self.plan}
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        self.model.load_state_dict(arrays_under(arrays, "model."))
        self.optimizer.load_state_dict({"meta": meta["optimizer"], "arrays": arrays_under(arrays, "optim.")})
        for schedule, state in zip(self.schedules + self.plateaus, meta["schedules"] + meta["plateaus"]):
            schedule.load_state_dict(state)
        for module, state in zip(self.dropout_modules(), meta["dropout_rngs"]):
            module.rng.bit_generator.state = state
        self.step, self.tokens, self.skipped = meta["step"], meta["tokens"], meta["skipped"]
        self.first_validation, self.last_validation = meta["first_validation"], meta["last_validation"]
        self.stage.load_state(arrays, meta["stage_state"])


def format_figures(figures: dict) -> str:
    """One line of validation figures: `val_loss 2.371, coherence_score 0.642, ...`."""
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


def arrays_under(arrays: dict, prefix: str) -> dict:
    """The arrays whose names start with `prefix` ("model.", "optim.", ...), the prefix taken off."""
    return {name[len(prefix):]: array for name, array in arrays.items() if name.startswith(prefix)}


def append_metrics(path: Path, record: dict) -> None:
    """One JSON line per logged step, flushed at once (a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop the lines an interrupted run logged after the checkpoint it resumes from."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    with atomic_output(path, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in kept))


def main(argv=None) -> int:
    """`training_loop.py --monitor ...` is the monitor (monitor.py), as the spec names it."""
    from mlot.training.monitor import main as monitor_main
    return monitor_main(argv, monitor_flag=True)


if __name__ == "__main__":
    sys.exit(main())
