"""The memory-aware training loop: documents read segment by segment, memory written after every
step, consolidated on schedule, the curriculum deciding difficulty, memory tiers and loss terms.

One step, for `batch_size` rows each reading its own document:
  1. next segment of every row (a row whose document ended was consolidated, reset and given a
     new one); spans to mask drawn at the curriculum's scales;
  2. forward (reads working cache, episodic entries, semantic slots), losses, backward;
  3. a non-finite loss or gradient skips the update (counted); else clip, AdamW, schedules;
  4. write the clean segments to memory, each token carrying its reconstruction loss;
  5. consolidation when due; validation every eval_interval; a metrics line every log_interval.

    python 05-training/training_loop.py --monitor --checkpoint_dir checkpoints/
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

from mlot.architecture import no_grad
from mlot.architecture.atomic import atomic_output
from mlot.architecture.config import JsonConfig, check
from mlot.architecture.optim import AdamW, ReduceLROnPlateau, WarmupCosine, clip_grad_norm_, grads_are_finite
from mlot.model.infilling import make_infill_batch
from mlot.training.batching import DocumentStream
from mlot.training.curriculum import Curriculum, CurriculumConfig, sample_spans
from mlot.training.distributed import World, take_rows
from mlot.training.loss_functions import coherence_loss, training_losses
from mlot.training.memory_transfer import ConsolidationConfig


@dataclasses.dataclass
class TrainConfig(JsonConfig):
    """How to train (the model's shape is ModelConfig)."""
    batch_size: int = 8             # document streams read side by side
    max_steps: int = 1000
    lr: float = 1e-3                # backbone peak learning rate
    episodic_lr: float = 3e-3       # retriever and memory injection blocks
    semantic_lr: float = 3e-3       # GNN
    gate_lr: float = 3e-2           # memory gates: own group, no weight decay (they must be free to open)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    eval_interval: int = 100        # steps between validations
    eval_batches: int = 4           # validation batches of batch_size documents' first segments
    log_interval: int = 10          # steps between metrics.jsonl lines
    save_interval: int = 100        # steps between checkpoints
    keep_checkpoints: int = 3
    full_checkpoint_every: int = 5
    seed: int = 0
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    consolidation: ConsolidationConfig = dataclasses.field(default_factory=ConsolidationConfig)

    def validate(self):
        for key in ("batch_size", "max_steps", "eval_interval", "eval_batches", "log_interval", "save_interval",
                    "keep_checkpoints", "full_checkpoint_every"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        for key in ("lr", "episodic_lr", "semantic_lr", "gate_lr", "grad_clip"):
            check(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key,
                  f"must be a finite number > 0, got {getattr(self, key)}")
        check(0 <= self.warmup_steps < self.max_steps, "warmup_steps",
              f"must lie in [0, max_steps={self.max_steps}), got {self.warmup_steps}")
        check(0 <= self.weight_decay < 1, "weight_decay", f"must lie in [0, 1), got {self.weight_decay}")


def rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Holds everything a run is: model, optimizer, schedules, curriculum, consolidator, data
    position and RNG; `state()` and `load_state()` give and take all of it as arrays + JSON.

    Under MPI (`world`, see distributed.py) this process trains the rows `self.rows` of the global
    batch; the data position, RNG draws and state it saves are those of the global batch."""

    def __init__(self, model, train_split, val_split, config: TrainConfig, dataset=None, world=None):
        self.model, self.config = model, config
        self.world = world or World()
        self.rows = self.world.rows(config.batch_size)  # this process's slice of the global rows
        self.dataset = None if dataset is None else str(Path(dataset).resolve())  # recorded for --resume
        self.train_split, self.val_split = train_split, val_split
        groups = model.parameter_groups()
        rates = {"backbone": config.lr, "episodic": config.episodic_lr, "semantic": config.semantic_lr,
                 "gates": config.gate_lr}
        self.optimizer = AdamW([{"name": name, "params": params, "lr": rates[name],
                                 "weight_decay": 0.0 if name == "gates" else config.weight_decay}
                                for name, params in groups.items() if any(p.requires_grad for p in params)])
        names = [group["name"] for group in self.optimizer.param_groups]
        self.schedules = [WarmupCosine(self.optimizer, config.warmup_steps, config.max_steps, group=n) for n in names]
        self.plateaus = [ReduceLROnPlateau(self.optimizer, group=n) for n in names]
        self.curriculum = Curriculum(config.curriculum)
        self.consolidator = self.world.consolidator(config.consolidation, config.batch_size)
        self.stream = DocumentStream(train_split.tokens, train_split.doc_starts, config.batch_size, config.seed,
                                     n_levels=max(phase.max_doc_level for phase in self.curriculum.phases))
        self.rng = np.random.default_rng(config.seed)
        self.step = self.tokens = self.skipped = 0
        local_rows = self.rows.stop - self.rows.start
        self.previous_states = np.zeros((local_rows, model.config.d_model), dtype=np.float32)
        self.has_previous = np.zeros(local_rows, dtype=bool)
        self.last_validation: dict = {}
        model.reset_memory(batch_size=local_rows)
        self.world.shard_dropout(model, config.batch_size)

    # --- one step -----------------------------------------------------------------------------------
    def train_step(self) -> dict:
        model, phase, config = self.model, self.curriculum.phase, self.config
        segment_len = max(model.config.chunk_len, phase.segment_tokens(model.config.segment_len))
        ending = self.stream.ending(phase.segments_per_doc)
        if ending.any():  # global rows; each process resets its own
            self.consolidator.consolidate(model.memory, rows=np.flatnonzero(ending), reason="document_end")
            if ending[self.rows].any():
                model.reset_memory(rows=np.flatnonzero(ending[self.rows]))
            self.has_previous[ending[self.rows]] = False
        segments, _, doc_ids = self.stream.next_segments(segment_len, phase.segments_per_doc,
                                                                    phase.max_doc_level)
        spans = [sample_spans(len(segment), phase, self.rng, model.config.max_span_len) for segment in segments]
        batch = take_rows(make_infill_batch(segments, spans, model.special), self.rows)
        model.set_memory(**dict(phase.memory))
        swapped = (self.rng.random(config.batch_size) < 0.5)[self.rows]
        tokens = int(sum(len(s) for s in segments))
        segments, spans, doc_ids = segments[self.rows], spans[self.rows], doc_ids[self.rows]
        semantic_before = self.world.semantic_reads(model.memory)
        out = model(batch)
        weights = self.world.loss_weights(dict(phase.loss_weights), batch, self.has_previous)
        losses = training_losses(model, out, batch, weights, self.previous_states,
                                 self.has_previous, swapped, use_consistency=phase.loss_weights["consistency"] > 0,
                                 use_commitment=phase.consistency_commitment)
        self.optimizer.zero_grad()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        finite = math.isfinite(losses.terms["loss"])
        if finite and losses.total.requires_grad:  # False when no trainable parameter was used (frozen backbone)
            losses.total.backward()
            finite = grads_are_finite(params)
        finite, terms = self.world.average_gradients(params, finite, losses.terms)
        if finite:
            grad_norm = clip_grad_norm_(params, config.grad_clip)
            self.optimizer.step()
        else:
            grad_norm = float("nan")
            self.skipped += 1
        for schedule in self.schedules:
            schedule.step()
        model.write_memory(segments, surprise=_token_surprise(segments, spans, losses.target_losses), doc_ids=doc_ids)
        self.world.merge_semantic_reads(model.memory, semantic_before)
        self.previous_states = out.segment_states.data.astype(np.float32)
        self.has_previous[:] = True
        self.step += 1
        self.tokens += tokens
        consolidation = self.consolidator.step(model.memory, self.step)
        self.curriculum.observe_train_loss(self.step, terms["loss_reconstruction"])
        return {**terms, "grad_norm": grad_norm, "coherence_correct": losses.coherence_correct,
                "coherence_count": losses.coherence_count, "consolidated": consolidation is not None}

    # --- validation -------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Reconstruction loss and span accuracy on held-out documents read as in training (up to
        the phase's segments per document, each masked at its scales, memory written after each),
        and the coherence score over their adjacent segment pairs; the training rows' memory is
        set aside meanwhile."""
        model, phase = self.model, self.curriculum.phase
        saved = model.memory.state_dict()
        rng = np.random.default_rng([self.config.seed, 7])
        totals = {"loss": 0.0, "correct": 0, "targets": 0, "order_correct": 0, "order_count": 0}
        B = self.config.batch_size
        length = max(model.config.chunk_len, phase.segment_tokens(model.config.segment_len))
        with no_grad():
            for index in range(self.config.eval_batches):
                docs = [self.val_split.document((index * B + row) % len(self.val_split)) for row in range(B)]
                model.reset_memory(batch_size=B)
                previous, has_previous = np.zeros((B, model.config.d_model), np.float32), np.zeros(B, bool)
                for position in range(phase.segments_per_doc):
                    segments = [doc[position * length:(position + 1) * length] for doc in docs]
                    present = np.array([len(segment) > 0 for segment in segments])
                    if not present.any():
                        break
                    spans = [sample_spans(len(s), phase, rng, model.config.max_span_len) if len(s) else []
                             for s in segments]
                    batch = make_infill_batch(segments, spans, model.special)
                    out = model(batch)
                    self._score_spans(model, out, batch, totals)
                    _, correct, count = coherence_loss(model, out.segment_states.data, previous, has_previous & present,
                                                       rng.random(B) < 0.5)
                    totals["order_correct"] += correct
                    totals["order_count"] += count
                    model.write_memory(segments)
                    previous, has_previous = out.segment_states.data.astype(np.float32), present
        model.reset_memory(batch_size=len(self.has_previous))  # this process's training rows
        model.memory.load_state_dict(saved)
        result = {"val_loss": totals["loss"] / max(totals["targets"], 1),
                  "val_span_accuracy": totals["correct"] / max(totals["targets"], 1),
                  "coherence_score": totals["order_correct"] / max(totals["order_count"], 1)}
        self.last_validation = result
        event = self.curriculum.observe_validation(self.step, result["val_loss"])
        plateau = any(p.step(result["val_loss"]) for p in self.plateaus)
        self.consolidator.step(model.memory, self.step, plateau=plateau or event is not None)
        return result

    @staticmethod
    def _score_spans(model, out, batch, totals: dict) -> None:
        """Add the batch's summed target cross-entropy, correct argmax count and target count."""
        rows, cols = np.nonzero(batch.targets != -100)
        logits = model.output_logits(out.hidden[rows, cols], out.read, rows).data.astype(np.float64)
        targets = batch.targets[rows, cols]
        peak = logits.max(axis=1)
        lse = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
        totals["loss"] += float((lse - logits[np.arange(len(targets)), targets]).sum())
        totals["correct"] += int((logits.argmax(axis=1) == targets).sum())
        totals["targets"] += len(targets)

    # --- the run --------------------------------------------------------------------------------------------
    def run(self, checkpoints, metrics_path: Path, until_step: int, progress: bool = True, should_stop=lambda: False):
        """Train to `until_step`, logging, validating and saving on their intervals; a final
        checkpoint when it stops (the end, or should_stop() turning true after a step)."""
        config = self.config
        bar = tqdm(total=until_step, initial=self.step, unit="step", desc="train",
                   disable=not progress or not self.world.is_root, dynamic_ncols=True)
        window_tokens, window_start = 0, time.perf_counter()
        try:
            while self.step < until_step and not self.world.any(should_stop()):
                before = self.tokens
                result = self.train_step()
                window_tokens += self.tokens - before
                validation = self.evaluate() if self.step % config.eval_interval == 0 else None
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0
                if self.step % config.log_interval == 0 or validation is not None:
                    record = {**self.metrics(result, tokens_per_s), **(validation or {})}
                    if self.world.is_root:
                        append_metrics(metrics_path, record)
                    window_tokens, window_start = 0, time.perf_counter()
                if self.step % config.save_interval == 0:
                    self._save(checkpoints)
                bar.update(1)
                bar.set_postfix(loss=f"{result['loss']:.3f}", tok_s=f"{tokens_per_s:.0f}",
                                stage=self.curriculum.phase.stage)
        finally:
            bar.close()
        if self.step % config.save_interval != 0:
            self._save(checkpoints)

    def _save(self, checkpoints) -> None:
        state = self.state()  # every process takes part in gathering it; the first one writes it
        if self.world.is_root:
            checkpoints.save(self.step, *state)

    # --- metrics ------------------------------------------------------------------------------------------
    def metrics(self, step_result: dict, tokens_per_s: float) -> dict:
        phase = self.curriculum.phase
        return {"step": self.step, "tokens": self.tokens,
                **{k: round(float(v), 6) for k, v in step_result.items() if k.startswith("loss")},
                "grad_norm": round(float(step_result["grad_norm"]), 4),
                "lr": {group["name"]: group["lr"] for group in self.optimizer.param_groups},
                "tokens_per_s": round(tokens_per_s, 1), "rss_mb": round(rss_mb(), 1),
                "curriculum_stage": phase.stage, "curriculum_phase": phase.index,
                **self.world.memory_stats(self.model.memory),
                "consolidations": self.consolidator.totals.get("events", 0),
                "consolidation": dict(self.consolidator.totals), "skipped_steps": self.skipped}

    # --- state ----------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """(arrays, meta): everything needed to continue exactly, for the checkpoint writer."""
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        arrays.update({f"optim.{k}": v for k, v in optimizer["arrays"].items()})
        memory = self.world.gather_memory(self.model.memory, self.model.config)  # rows of the global batch
        arrays.update({f"memory.{k}": v for k, v in memory.items()})
        arrays.update({f"data.{k}": v for k, v in self.stream.state_dict().items()})
        arrays["trainer.previous_vectors"] = self.world.gather_rows(self.previous_states)  # the states (old name)
        arrays["trainer.has_previous"] = self.world.gather_rows(self.has_previous)
        meta = {"model_config": self.model.config.to_dict(), "train_config": self.config.to_dict(),
                "dataset": self.dataset,
                "step": self.step, "tokens": self.tokens, "skipped": self.skipped,
                "optimizer": optimizer["meta"], "schedules": [s.state_dict() for s in self.schedules],
                "plateaus": [p.state_dict() for p in self.plateaus], "curriculum": self.curriculum.state_dict(),
                "consolidator": self.consolidator.state_dict(), "rng": self.rng.bit_generator.state,
                "dropout_rngs": [m.rng.bit_generator.state for _, m in self.model.named_modules() if hasattr(m, "rng")],
                "last_validation": self.last_validation}
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        restore_model_and_optimizer(self.model, self.optimizer, self.schedules, arrays, meta)
        for plateau, state in zip(self.plateaus, meta["plateaus"]):
            plateau.load_state_dict(state)
        memory = self.world.local_memory(arrays_under(arrays, "memory."), self.model.config, self.config.batch_size)
        self.model.memory.load_state_dict(memory)
        self.stream.load_state_dict(arrays_under(arrays, "data."))
        self.curriculum.load_state_dict(meta["curriculum"])
        self.consolidator.load_state_dict(meta["consolidator"])
        self.rng.bit_generator.state = meta["rng"]
        for (_, module), state in zip([(n, m) for n, m in self.model.named_modules() if hasattr(m, "rng")],
                                      meta["dropout_rngs"]):
            module.rng.bit_generator.state = state
        self.previous_states = np.array(self.world.local_rows(arrays["trainer.previous_vectors"]), dtype=np.float32)
        self.has_previous = np.array(self.world.local_rows(arrays["trainer.has_previous"]), dtype=bool)
        self.step, self.tokens, self.skipped = meta["step"], meta["tokens"], meta["skipped"]
        self.last_validation = meta.get("last_validation", {})


def _token_surprise(segments, spans, target_losses):
    """Per segment token: its reconstruction loss when it was masked, else the row's mean loss."""
    surprise = []
    for segment, row_spans, losses in zip(segments, spans, target_losses):
        values = np.full(len(segment), float(losses.mean()) if len(losses) else 1.0, dtype=np.float32)
        cursor = 0
        for start, end in row_spans:  # Part B targets: each span's tokens, then its [EOP]
            values[start:end] = losses[cursor:cursor + end - start]
            cursor += end - start + 1
        surprise.append(values)
    return surprise


def arrays_under(arrays: dict, prefix: str) -> dict:
    """The arrays whose names start with `prefix` ("model.", "optim.", ...), the prefix taken off."""
    return {name[len(prefix):]: array for name, array in arrays.items() if name.startswith(prefix)}


def restore_model_and_optimizer(model, optimizer, schedules, arrays: dict, meta: dict) -> None:
    """What every training stage saves alike: parameters, optimizer moments, schedules."""
    model.load_state_dict(arrays_under(arrays, "model."))
    optimizer.load_state_dict({"meta": meta["optimizer"], "arrays": arrays_under(arrays, "optim.")})
    for schedule, state in zip(schedules, meta["schedules"]):
        schedule.load_state_dict(state)


def append_metrics(path: Path, record: dict) -> None:
    """One JSON line per logged step, flushed at once (a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


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
    import argparse
    parser = argparse.ArgumentParser(description="The training loop; with --monitor, show a run's progress.")
    parser.add_argument("--monitor", action="store_true", help="show the curves of a run (see monitor.py)")
    args, rest = parser.parse_known_args(argv)
    if not args.monitor:
        parser.error("run training with train.py; this command takes --monitor --checkpoint_dir DIR")
    from mlot.training.monitor import main as monitor_main
    return monitor_main(rest)


if __name__ == "__main__":
    sys.exit(main())
