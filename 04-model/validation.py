"""Held-out figures of the model, read the way training reads documents: with memory.

Each batch of documents starts from a fresh memory (the semantic slots the model holds are kept,
and restored for every batch so that no batch depends on the ones before it). Each document is
read segment by segment, up to `segments_per_doc` segments of `segment_tokens` tokens: the
segment's spans are drawn at the given scales (masking.sample_spans) and reconstructed (each
target's nll and greedy hit, scoring.score_targets), the order head judges the (previous,
current) pair of segments shown in order or swapped at random, and the clean segment is then
written to memory, where the next segment reads it. The memory ablations (memory off, episodic
only) are this same reading with other `set_memory` switches.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from mlot.architecture import Tensor, no_grad
from mlot.model.infilling import make_infill_batch
from mlot.model.masking import SpanScales, sample_spans
from mlot.model.scoring import score_targets


def validate(model, split, scales: SpanScales, segment_tokens: int, segments_per_doc: int, batch_size: int,
             max_documents: int | None = None, seed=0, memory: dict | None = None,
             progress: bool = False) -> dict:
    """{"val_loss" (mean nats per Part B target, [EOP] included as in training),
    "val_span_accuracy" (greedy hits per target), "coherence_score" (pairs ordered right),
    "targets", "pairs", "documents"} over the first max_documents documents of `split` (all when
    None; anything with len() and document(i)).

    seed: anything np.random.default_rng takes (an int, a SeedSequence: a named stream of a run).
    memory: set_memory switches ({"working", "episodic", "semantic"} -> bool) for this reading,
    or None for the current ones. The model's memory, switches and train/eval mode are restored
    afterwards; the figures depend only on the model, the documents and `seed`.
    """
    count = len(split) if max_documents is None else min(max_documents, len(split))
    rng = np.random.default_rng(seed)
    saved_switches = (model.use_working, model.use_episodic, model.use_semantic)
    saved_memory = None if model.memory is None else (model.memory.batch, model.memory.state_dict())
    semantic = None if model.memory is None else model.memory.semantic.state_dict()
    was_training = model.training
    model.eval()
    if memory is not None:
        model.set_memory(**memory)
    nll, hits, targets, order_correct, pairs = 0.0, 0, 0, 0, 0
    try:
        with no_grad():
            for first in tqdm(range(0, count, batch_size), desc="validation", unit="batch", disable=not progress,
                              leave=False):
                docs = [np.asarray(split.document(i), dtype=np.int64)
                        for i in range(first, min(first + batch_size, count))]
                model.reset_memory(batch_size=len(docs))
                if semantic is not None:
                    model.memory.semantic.load_state_dict(semantic)
                previous, has_previous = None, np.zeros(len(docs), dtype=bool)
                for position in range(segments_per_doc):
                    segments = [doc[position * segment_tokens:(position + 1) * segment_tokens] for doc in docs]
                    present = np.array([len(segment) > 0 for segment in segments])
                    if not present.any():
                        break
                    spans = [sample_spans(len(s), scales, rng, model.config.max_span_len) for s in segments]
                    batch = make_infill_batch(segments, spans, model.special)
                    out = model(batch)
                    scores = score_targets(model, out, batch)
                    nll += float(scores.nll.sum())
                    hits += int(scores.hits.sum())
                    targets += scores.count
                    swapped = rng.random(len(docs)) < 0.5
                    paired = np.flatnonzero(has_previous & present)
                    if paired.size:
                        # shown as (earlier, later) or swapped; right when the logit's sign says which
                        shown = model.order_logit(Tensor(previous[paired]), out.segment_states[paired]).data
                        shown = np.where(swapped[paired], -shown, shown)
                        order_correct += int(((shown > 0) == ~swapped[paired]).sum())
                        pairs += paired.size
                    model.write_memory(segments)
                    previous, has_previous = out.segment_states.data, present
    finally:
        model.use_working, model.use_episodic, model.use_semantic = saved_switches
        model.train(was_training)
        if saved_memory is None:
            model.memory = None
        else:
            model.reset_memory(batch_size=saved_memory[0])
            model.memory.load_state_dict(saved_memory[1])
    return {"val_loss": nll / max(targets, 1), "val_span_accuracy": hits / max(targets, 1),
            "coherence_score": order_correct / max(pairs, 1), "targets": targets, "pairs": pairs,
            "documents": count}
