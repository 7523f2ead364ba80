"""Pretraining: documents read segment by segment with memory written after every step and
consolidated on schedule, the curriculum deciding difficulty, memory tiers and loss terms.

One step, for `batch_size` rows each reading its own document:
  1. rows whose document ended are consolidated, reset and given a new one; every row's next
     segment, spans to mask drawn at the curriculum's scales;
  2. forward (reads working cache, episodic entries, semantic slots) and the losses;
  (the loop: backward, update)
  3. the clean segments written to memory, each token carrying its reconstruction loss;
  4. consolidation when due; the curriculum sees the loss.
Validation reads held-out documents the same way (04-model/validation.py) at the phase's scales.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from mlot.architecture.config import JsonConfig, check
from mlot.memory.consolidation import ConsolidationConfig
from mlot.model.infilling import make_infill_batch
from mlot.model.masking import sample_spans
from mlot.model.validation import validate
from mlot.training.batching import DocumentStream
from mlot.training.curriculum import Curriculum, CurriculumConfig
from mlot.training.distributed import take_rows
from mlot.training.loss_functions import training_losses
from mlot.training.stages import Stage, StepLoss
from mlot.training.training_loop import arrays_under, stream_rng, stream_seed


@dataclasses.dataclass
class PretrainConfig(JsonConfig):
    """The `pretrain` section: memory groups' rates, validation size, curriculum, consolidation."""
    episodic_lr: float = 3e-3       # retriever and memory injection blocks
    semantic_lr: float = 3e-3       # GNN
    gate_lr: float = 3e-2           # memory gates: own group, no weight decay (they must be free to open)
    eval_batches: int = 4           # validation batches of batch_size held-out documents
    # > 0: long documents (books) are read whole, in visits of up to this many tokens per epoch, each going
    # on where the last stopped; 0: each document once per epoch from its start (batching.DocumentStream)
    document_window: int = 0
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    consolidation: ConsolidationConfig = dataclasses.field(default_factory=ConsolidationConfig)

    def validate(self):
        check(self.eval_batches > 0, "eval_batches", f"must be > 0, got {self.eval_batches}")
        check(self.document_window >= 0, "document_window", f"must be >= 0 tokens, got {self.document_window}")
        for key in ("episodic_lr", "semantic_lr", "gate_lr"):
            check(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, key,
                  f"must be a finite number > 0, got {getattr(self, key)}")

    def scaled(self, factor: float) -> dict:
        """Values for a run `factor` times as long: phase lengths and the consolidation interval scale."""
        values = self.to_dict()
        curriculum, consolidation = values["curriculum"], values["consolidation"]
        curriculum["min_steps_per_phase"] = round(curriculum["min_steps_per_phase"] * factor)
        consolidation["interval"] = round(consolidation["interval"] * factor)
        return values


class PretrainStage(Stage):
    """Everything pretraining adds to the loop: curriculum, document streams, consolidator, the
    rows' previous segment states (coherence pairs) and the span RNG.

    Under MPI (`world`) this process trains the rows `self.rows` of the global batch; the data
    position, RNG draws and state it saves are those of the global batch."""

    name = "pretrain"
    config_class = PretrainConfig
    plateau_metric = "val_loss"

    def __init__(self, model, data, train, config: PretrainConfig, world):
        super().__init__(model, config)
        self.data, self.train_config, self.world = data, train, world
        self.rows = world.rows(train.batch_size)  # this process's slice of the global rows
        self.curriculum = Curriculum(config.curriculum)
        self.consolidator = world.consolidator(config.consolidation, train.batch_size)
        self.stream = DocumentStream(data.train.tokens, data.train.doc_starts, train.batch_size, train.seed,
                                     n_levels=max(phase.max_doc_level for phase in self.curriculum.phases),
                                     window_tokens=config.document_window)
        self.rng = stream_rng(train.seed, "spans")
        local_rows = self.rows.stop - self.rows.start
        self.previous_states = np.zeros((local_rows, model.config.d_model), dtype=np.float32)
        self.has_previous = np.zeros(local_rows, dtype=bool)
        self.pending = None   # what after_step needs from loss()
        model.reset_memory(batch_size=local_rows)
        world.shard_dropout(model, train.batch_size)

    def parameter_groups(self, train) -> list:
        rates = {"backbone": train.lr, "episodic": self.config.episodic_lr, "semantic": self.config.semantic_lr,
                 "gates": self.config.gate_lr}
        return [{"name": name, "params": params, "lr": rates[name],
                 "weight_decay": 0.0 if name == "gates" else train.weight_decay}
                for name, params in self.model.parameter_groups().items() if any(p.requires_grad for p in params)]

    def segment_tokens(self) -> int:
        phase = self.curriculum.phase
        return max(self.model.config.chunk_len, phase.segment_tokens(self.model.config.segment_len))

    def loss(self, step: int) -> StepLoss:
        model, phase, world = self.model, self.curriculum.phase, self.world
        ending = self.stream.ending(phase.segments_per_doc)
        if ending.any():  # global rows; each process resets its own
            self.consolidator.consolidate(model.memory, rows=np.flatnonzero(ending), reason="document_end")
            if ending[self.rows].any():
                model.reset_memory(rows=np.flatnonzero(ending[self.rows]))
            self.has_previous[ending[self.rows]] = False
        segments, _, doc_ids = self.stream.next_segments(self.segment_tokens(), phase.segments_per_doc,
                                                         phase.max_doc_level)
        spans = [sample_spans(len(segment), phase.span_scales, self.rng, model.config.max_span_len)
                 for segment in segments]
        batch = take_rows(make_infill_batch(segments, spans, model.special), self.rows)
        model.set_memory(**dict(phase.memory))
        swapped = (self.rng.random(self.train_config.batch_size) < 0.5)[self.rows]
        tokens = int(sum(len(s) for s in segments))
        segments, spans, doc_ids = segments[self.rows], spans[self.rows], doc_ids[self.rows]
        semantic_before = world.semantic_reads(model.memory)
        out = model(batch)
        weights = world.loss_weights(dict(phase.loss_weights), batch, self.has_previous)
        losses = training_losses(model, out, batch, weights, self.previous_states, self.has_previous, swapped,
                                 use_consistency=phase.loss_weights["consistency"] > 0,
                                 use_commitment=phase.consistency_commitment)
        self.pending = (segments, spans, doc_ids, out, losses, semantic_before)
        return StepLoss(losses.total, losses.terms, tokens)

    def after_step(self, step: int, terms: dict) -> dict:
        segments, spans, doc_ids, out, losses, semantic_before = self.pending
        self.pending = None
        memory = self.model.memory
        self.model.write_memory(segments, surprise=token_surprise(segments, spans, losses.target_losses),
                                doc_ids=doc_ids)
        self.world.merge_semantic_reads(memory, semantic_before)
        self.previous_states = out.segment_states.data.astype(np.float32)
        self.has_previous[:] = True
        consolidation = self.consolidator.step(memory, step)
        self.curriculum.observe_train_loss(step, terms["loss_reconstruction"])
        return {"coherence_correct": losses.coherence_correct, "coherence_count": losses.coherence_count,
                "consolidated": consolidation is not None}

    def validate(self) -> dict:
        """Held-out documents read as in training (up to the phase's segments per document, each
        masked at its scales, memory written after each); the training rows' memory is kept."""
        phase, B = self.curriculum.phase, self.train_config.batch_size
        figures = validate(self.model, self.data.val, phase.span_scales, self.segment_tokens(), phase.segments_per_doc,
                           batch_size=B, max_documents=self.config.eval_batches * B,
                           seed=stream_seed(self.train_config.seed, "validation"), memory=dict(phase.memory))
        return {key: figures[key] for key in ("val_loss", "val_span_accuracy", "coherence_score")}

    def observe_validation(self, step: int, figures: dict, plateau: bool) -> None:
        event = self.curriculum.observe_validation(step, figures["val_loss"])
        self.consolidator.step(self.model.memory, step, plateau=plateau or event is not None)

    def log_fields(self, step_result: dict) -> dict:
        phase = self.curriculum.phase
        return {"curriculum_stage": phase.stage, "curriculum_phase": phase.index,
                **self.world.memory_stats(self.model.memory),
                "consolidations": self.consolidator.totals.get("events", 0),
                "consolidation": dict(self.consolidator.totals)}

    def progress_fields(self) -> dict:
        return {"phase": self.curriculum.phase.name}

    def identity(self) -> dict:
        """The dataset (for --resume and the tokenizer) and how validation reads at the current
        phase, so that evaluation can measure the same quantity without the curriculum."""
        phase = self.curriculum.phase
        return {"dataset": str(self.data.folder),
                "validation": {"phase": phase.name, "span_scales": phase.span_scales._asdict(),
                               "segment_tokens": self.segment_tokens(), "segments_per_doc": phase.segments_per_doc}}

    def state(self) -> tuple[dict, dict]:
        memory = self.world.gather_memory(self.model.memory, self.model.config)  # rows of the global batch
        arrays = {**{f"memory.{k}": v for k, v in memory.items()},
                  **{f"data.{k}": v for k, v in self.stream.state_dict().items()},
                  "pretrain.previous_states": self.world.gather_rows(self.previous_states),
                  "pretrain.has_previous": self.world.gather_rows(self.has_previous)}
        meta = {"curriculum": self.curriculum.state_dict(), "consolidator": self.consolidator.state_dict(),
                "rng": self.rng.bit_generator.state}
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        self.model.memory.load_state_dict(self.world.local_memory(arrays_under(arrays, "memory."), self.model.config,
                                                                  self.train_config.batch_size))
        self.stream.load_state_dict(arrays_under(arrays, "data."))
        self.curriculum.load_state_dict(meta["curriculum"])
        self.consolidator.load_state_dict(meta["consolidator"])
        self.rng.bit_generator.state = meta["rng"]
        self.previous_states = np.array(self.world.local_rows(arrays["pretrain.previous_states"]), dtype=np.float32)
        self.has_previous = np.array(self.world.local_rows(arrays["pretrain.has_previous"]), dtype=bool)


def token_surprise(segments, spans, target_losses):
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
