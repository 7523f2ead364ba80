"""The one validation (04-model/validation.py) against a slow loop written out by hand over one
document, and known cases: memory off does not see what was written before, full memory differs
from memory off once later segments can read earlier ones, and the model is left as it was."""
import math

import numpy as np
import pytest

from mlot.architecture import no_grad
from mlot.model.infilling import IGNORE_INDEX, make_infill_batch
from mlot.model.masking import SpanScales, sample_spans
from mlot.model.model import MLoTSpark
from mlot.model.validation import validate
from test_04_model import filled_model, tiny_config

SCALES = SpanScales(mask_ratio=0.25, short_span_fraction=0.5, short_span_max=2, long_span_mean=4.0)
FULL = {"working": True, "episodic": True, "semantic": True}
OFF = {"working": False, "episodic": False, "semantic": False}


class Documents:
    def __init__(self, docs):
        self.docs = docs

    def __len__(self):
        return len(self.docs)

    def document(self, index):
        return self.docs[index]


def documents(count=5, seed=1):
    rng = np.random.default_rng(seed)
    return Documents([rng.integers(10, 40, int(n)) for n in rng.integers(20, 40, count)])


def earliness(model, states):
    """The order head's score of segments from their mean Part A states, numpy only: h = w.gelu(W s + b) + c."""
    pre = states.astype(np.float64) @ model.segment_head.weight.data.T + model.segment_head.bias.data
    vector = 0.5 * pre * (1 + np.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
    return (vector @ model.coherence_head.weight.data.T + model.coherence_head.bias.data)[:, 0]


def validate_by_hand(model, doc, segment_tokens, segments_per_doc, seed):
    """One document, one row: every position's logits, softmax by hand, the pair's order by hand."""
    rng = np.random.default_rng(seed)
    model.reset_memory(batch_size=1)
    nll, hits, order = [], [], []
    previous = None
    with no_grad():
        for position in range(segments_per_doc):
            segment = doc[position * segment_tokens:(position + 1) * segment_tokens]
            if len(segment) == 0:
                break
            batch = make_infill_batch([segment], [sample_spans(len(segment), SCALES, rng, model.config.max_span_len)],
                                      model.special)
            out = model(batch)
            logits = model.logits(out.hidden).data[0].astype(np.float64)  # (L, V)
            for col in np.flatnonzero(batch.targets[0] != IGNORE_INDEX):
                z, target = logits[col], batch.targets[0, col]
                nll.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[target])
                hits.append(z.argmax() == target)
            states = out.hidden.data[0, :batch.prefix_len[0]].mean(axis=0, keepdims=True)  # (1, d)
            swapped = rng.random(1)[0] < 0.5
            if previous is not None:
                in_order = earliness(model, previous)[0] - earliness(model, states)[0]
                shown = -in_order if swapped else in_order
                order.append((shown > 0) == (not swapped))
            model.write_memory([segment])
            previous = states
    return np.mean(nll), np.mean(hits), np.mean(order), len(nll), len(order)


def test_validation_equals_the_slow_loop_over_one_document():
    model = MLoTSpark(tiny_config(working_cache_len=12), seed=2)
    doc = documents(1).document(0)
    segments_per_doc = 3
    expected = validate_by_hand(model, doc, 8, segments_per_doc, seed=5)
    model.reset_memory(batch_size=1)
    figures = validate(model, Documents([doc]), SCALES, segment_tokens=8, segments_per_doc=segments_per_doc,
                       batch_size=1, seed=5, memory=FULL)
    assert figures["targets"] == expected[3] and figures["pairs"] == expected[4] == segments_per_doc - 1
    assert figures["val_loss"] == pytest.approx(expected[0], rel=1e-5)
    assert figures["val_span_accuracy"] == pytest.approx(expected[1])
    assert figures["coherence_score"] == pytest.approx(expected[2])
    assert figures["documents"] == 1


def test_memory_off_ignores_what_was_written_and_the_model_is_restored():
    split = documents()
    model = filled_model(batch=2)  # memory full of other text
    model.set_memory(working=True, episodic=False, semantic=True)
    before = {name: array.copy() for name, array in model.memory.state_dict().items()}
    run = dict(scales=SCALES, segment_tokens=8, segments_per_doc=3, batch_size=2, seed=3, memory=OFF)
    after_writing = validate(model, split, **run)
    assert (model.use_working, model.use_episodic, model.use_semantic) == (True, False, True)
    assert model.memory.batch == 2 and model.training
    state = model.memory.state_dict()
    assert sorted(state) == sorted(before) and all(np.array_equal(state[k], before[k]) for k in before)
    assert validate(filled_model(batch=3), split, **run) == after_writing  # same weights, other memory
    again = validate(model, split, **{**run, "seed": 4})
    assert again["val_loss"] != after_writing["val_loss"]  # the seed draws other spans


def test_full_memory_differs_from_memory_off_only_where_memory_can_be_read():
    split = documents(4)
    model = MLoTSpark(tiny_config(working_cache_len=12, gate_init=1.0), seed=0)
    model.reset_memory(batch_size=1)  # no semantic slots: a first segment has nothing to read
    one = dict(scales=SCALES, segment_tokens=8, segments_per_doc=1, batch_size=2, seed=0)
    assert validate(model, split, **one, memory=FULL) == validate(model, split, **one, memory=OFF)
    three = {**one, "segments_per_doc": 3}
    full, off = validate(model, split, **three, memory=FULL), validate(model, split, **three, memory=OFF)
    assert full["targets"] == off["targets"] > 0 and full["pairs"] == off["pairs"] == 8
    assert full["val_loss"] != pytest.approx(off["val_loss"], rel=1e-4)
