"""Validation reconstruction loss, span accuracy and coherence score, as the training loop
measures them (Trainer.evaluate), but over as many held-out documents as asked, with a seed of
its own, and without touching anything but the model's memory (saved and restored).

For each batch of documents: a fresh memory; the first segment (the phase's length) masked at
the phase's span scales (curriculum.sample_spans) and reconstructed; then the first segments are
written to memory and the second segments read, and the segment-order head judges each
(first, second) pair shown in order or swapped at random (loss_functions.coherence_loss).
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from mlot.architecture import no_grad
from mlot.model.infilling import IGNORE_INDEX, make_infill_batch
from mlot.training.curriculum import Curriculum, sample_spans
from mlot.training.loss_functions import coherence_loss
from mlot.training.training_loop import TrainConfig


def checkpoint_phase(meta: dict):
    """The curriculum phase a training checkpoint was in (its span scales and segment length)."""
    curriculum = Curriculum(TrainConfig.from_dict(meta["train_config"]).curriculum)
    curriculum.load_state_dict(meta["curriculum"])
    return curriculum.phase


def validate(model, val_split, phase, batch_size: int = 8, max_documents: int | None = None, seed: int = 0,
             progress: bool = False) -> dict:
    """{"val_loss" (nats per target, [EOP] included as in training), "val_span_accuracy",
    "coherence_score", "targets", "pairs", "documents"} over the first max_documents documents."""
    count = len(val_split) if max_documents is None else min(max_documents, len(val_split))
    rng = np.random.default_rng(seed)
    length = max(model.config.chunk_len, phase.segment_tokens(model.config.segment_len))
    saved_batch = model.memory.batch
    saved = model.memory.state_dict()
    loss, correct, targets, order_correct, order_count = 0.0, 0, 0, 0, 0
    with no_grad():
        for first_doc in tqdm(range(0, count, batch_size), desc="validation", unit="batch", disable=not progress,
                              leave=False):
            docs = [np.asarray(val_split.document(i), dtype=np.int64)
                    for i in range(first_doc, min(first_doc + batch_size, count))]
            B = len(docs)
            model.reset_memory(batch_size=B)
            first, second = [doc[:length] for doc in docs], [doc[length:2 * length] for doc in docs]
            spans = [sample_spans(len(segment), phase, rng, model.config.max_span_len) for segment in first]
            batch = make_infill_batch(first, spans, model.special)
            out = model(batch)
            rows, cols = np.nonzero(batch.targets != IGNORE_INDEX)
            logits = model.output_logits(out.hidden[rows, cols], out.read, rows).data.astype(np.float64)  # (N, V)
            wanted = batch.targets[rows, cols]
            peak = logits.max(axis=1)
            log_norm = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))
            loss += float((log_norm - logits[np.arange(len(wanted)), wanted]).sum())
            correct += int((logits.argmax(axis=1) == wanted).sum())
            targets += len(wanted)
            has_second = np.array([len(segment) > 0 for segment in second])
            if has_second.any():
                model.write_memory(first)
                later = [s if len(s) else f for s, f in zip(second, first)]
                out_later = model(make_infill_batch(later, [[]] * B, model.special))
                swapped = rng.random(B) < 0.5
                _, pair_correct, pairs = coherence_loss(model, out_later.segment_states.data, out.segment_states.data,
                                                        has_second, swapped)
                order_correct += pair_correct
                order_count += pairs
    model.reset_memory(batch_size=saved_batch)
    model.memory.load_state_dict(saved)
    return {"val_loss": loss / max(targets, 1), "val_span_accuracy": correct / max(targets, 1),
            "coherence_score": order_correct / max(order_count, 1), "targets": targets, "pairs": order_count,
            "documents": count}
