"""06-evaluation: evaluate.py end to end on a tiny trained checkpoint, exact-match recall scoring on
hand-made cases, batched bits per byte against token-by-token decoding, and the baselines
against hand-computed values and the xz command."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture import ModelConfig
from mlot.evaluation.baselines import unigram_bits_per_byte, xz_bits_per_byte
from mlot.evaluation.bits_per_byte import HeldOutText, model_bits_per_byte
from mlot.evaluation.evaluate import main as evaluate_main
from mlot.evaluation.recall import RecallCase, score_recall
from mlot.model.generation import fill_span
from mlot.model.model import MLoTSpark
from mlot.model.memory_weights import save_memory_weights
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ROOT / "06-evaluation" / "evaluate.py"
TRAIN = ROOT / "05-training" / "train.py"
TINY = ROOT / "05-training" / "configs" / "tiny.json"


# --- evaluate.py end to end ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """(checkpoint, corpus folder) of tiny.json trained 6 steps (its warm-up is 5) on a small generated corpus."""
    folder = tmp_path_factory.mktemp("eval")
    subprocess.run([sys.executable, str(TRAIN), "--no_progress", "--model_config", str(TINY), "--dataset",
                    str(tiny_dataset), "--max_steps", "6", "--checkpoint_dir", str(folder / "ckpt")],
                   check=True, capture_output=True, cwd=ROOT)
    return folder / "ckpt" / "latest_checkpoint.pt", tiny_dataset.parent / "corpus"


def run_evaluate(*args):
    return subprocess.run([sys.executable, str(EVALUATE), "--no_progress", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_evaluate_reports_every_field(trained, tmp_path):
    checkpoint, corpus = trained
    report_path = tmp_path / "report.json"
    result = run_evaluate("--checkpoint", checkpoint, "--recall_file", corpus / "recall.jsonl", "--limit", 2,
                          "--val_documents", 4, "--bpb_documents", 2, "--report", report_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert {"checkpoint", "step", "dataset", "seed", "parameters", "bits_per_byte", "settings"} <= set(report)
    assert report["step"] == 6
    bpb = report["bits_per_byte"]
    for name in ("model", "unigram", "xz"):
        assert math.isfinite(bpb[name]["bits_per_byte"]) and bpb[name]["bits_per_byte"] > 0
    assert bpb["model"]["bytes"] == bpb["unigram"]["bytes"] == bpb["xz"]["bytes"] > 0
    assert bpb["model"]["tokens"] == bpb["unigram"]["tokens"] > 0
    assert set(report["settings"]) == {"full", "episodic_only", "memory_off"}
    recorded = load_trained_model(checkpoint).meta["validation"]
    data = TokenizedData.load(report["dataset"])
    # pairs: each document's segments (of the recorded length, up to the recorded count) less one
    segments = [min(recorded["segments_per_doc"], -(-len(data.val.document(i)) // recorded["segment_tokens"]))
                for i in range(4)]
    for setting in report["settings"].values():
        assert setting["documents"] == 4 and setting["pairs"] == sum(segments) - 4
        assert setting["val_loss"] > 0 and setting["targets"] > 0
        hits, ordered = setting["val_span_accuracy"] * setting["targets"], setting["coherence_score"] * setting["pairs"]
        assert abs(hits - round(hits)) < 1e-6 and abs(ordered - round(ordered)) < 1e-6  # counts over totals
        recall = setting["recall"]
        assert recall["total"] == len(recall["cases"]) == 2
        assert recall["correct"] == sum(case["prediction"] == case["answer"] for case in recall["cases"])
        assert recall["exact_match"] == recall["correct"] / 2
        assert {"working_usage", "episodic_size", "semantic_size"} <= set(setting["memory_stats"])
    settings = report["settings"]
    assert settings["full"]["targets"] == settings["memory_off"]["targets"]  # the same spans, read with memory or not
    assert settings["full"]["val_loss"] != settings["memory_off"]["val_loss"]
    assert report["settings"]["memory_off"]["memory_stats"]["episodic_queries"] == 0
    assert report["settings"]["full"]["memory_stats"]["episodic_queries"] > 0
    for label in ("bits per byte", "val loss", "recall exact match", "episodic_only", "memory_off"):
        assert label in result.stdout


def test_evaluate_no_memory_with_memory_weights_reports_memory_off_only(trained, tmp_path):
    checkpoint, corpus = trained
    save_memory_weights(tmp_path / "memory_weights.pt", load_trained_model(checkpoint).model, base=str(checkpoint))
    code = evaluate_main(["--no_progress", "--checkpoint", str(checkpoint),
                          "--recall_file", str(corpus / "recall.jsonl"), "--limit", "1", "--val_documents", "2",
                          "--bpb_documents", "1", "--no_memory", "--memory_weights", str(tmp_path / "memory_weights.pt"),
                          "--report", str(tmp_path / "r.json")])
    assert code == 0
    assert list(json.loads((tmp_path / "r.json").read_text())["settings"]) == ["memory_off"]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/ckpt.pt"], "does not exist"),
    (["--checkpoint", "CKPT", "--recall_file", "/nonexistent.jsonl"], "recall file"),
    (["--checkpoint", "CKPT", "--limit", "0"], "must be >= 1"),
    (["--checkpoint", "CKPT", "--memory_weights", "/nonexistent.pt"], "--memory_weights: no file /nonexistent.pt"),
])
def test_user_errors_are_one_line_and_exit_2(trained, args, message, capsys):
    try:
        code = evaluate_main([str(trained[0]) if a == "CKPT" else a for a in args])
    except SystemExit as stop:  # a bad option value stops in the parser
        code = stop.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


# --- exact-match recall scoring ------------------------------------------------------------------

class CharTokenizer:
    """One token per character; [MASK] is id 0."""
    def encode(self, text, allow_special=False):
        return [0] if allow_special and text == "[MASK]" else [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class StubModel:
    """Answers each query with a fixed text, and records how it was driven."""
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def reset_memory(self, batch_size=None):
        self.calls.append(("reset", batch_size))

    def read_document(self, ids):
        self.calls.append(("read", "".join(chr(i) for i in ids)))

    def infill(self, ids, max_span_tokens):
        assert ids[-1] == 0 and 0 not in ids[:-1]  # query + one [MASK] at the end
        query = "".join(chr(i) for i in ids[:-1])
        self.calls.append(("infill", query, max_span_tokens))
        return [[ord(c) for c in self.replies[query]]]


def test_exact_match_strips_whitespace_and_nothing_else():
    cases = [RecallCase("ctx A", "q1", " Paris.", "episodic"),   # reply "Paris.\n": correct
             RecallCase("ctx B", "q2", "Paris.", "episodic"),    # reply "paris.": case differs
             RecallCase("ctx C", "q3", " 1940.", "semantic"),    # reply "  1940.  ": correct
             RecallCase("ctx D", "q4", " 1940.", "semantic"),    # reply "1940": punctuation missing
             RecallCase("ctx E", "q5", "Magnus Quill.", "semantic")]  # reply "Magnus  Quill.": inner space
    replies = {"q1": "Paris.\n", "q2": "paris.", "q3": "  1940.  ", "q4": "1940", "q5": "Magnus  Quill."}
    model = StubModel(replies)
    result = score_recall(model, CharTokenizer(), cases, max_span_tokens=7)
    assert [case.correct for case in result.cases] == [True, False, True, False, False]
    assert result.correct == 2 and result.total == 5 and result.exact_match == pytest.approx(0.4)
    assert result.by_kind == {"episodic": {"exact_match": 0.5, "correct": 1, "total": 2},
                              "semantic": {"exact_match": pytest.approx(1 / 3), "correct": 1, "total": 3}}
    assert result.cases[0].prediction == "Paris." and result.cases[0].answer == "Paris."
    expected_calls = []
    for case in cases:
        expected_calls += [("reset", 1), ("read", case.context), ("infill", case.query, 7)]
    assert model.calls == expected_calls


def test_recall_accepts_dicts_and_an_empty_span():
    model = StubModel({"q": ""})
    result = score_recall(model, CharTokenizer(), [{"context": "c", "query": "q", "answer": "  "}])
    assert result.cases[0].correct and result.by_kind["all"]["total"] == 1


# --- bits per byte -----------------------------------------------------------------------------------

def tiny_model():
    config = ModelConfig.from_dict(dict(vocab_size=40, d_model=16, n_layers=2, n_heads=2, segment_len=12,
                                        max_span_len=4, chunk_len=4, working_cache_len=12, episodic_capacity=8,
                                        retrieval_top_k=2, semantic_slots=4, semantic_top_k=2, retriever_dim=8,
                                        memory_layers=[1], gate_init=0.5))
    model = MLoTSpark(config, seed=3)
    model.eval()
    model.reset_memory(batch_size=1)
    return model


def decoded_bits(model, doc, is_text):
    """Token by token: each block of max_span_len tokens decoded with the KV cache behind the
    segment_len - max_span_len tokens before it, the sampler forced to the true token."""
    span, context = model.config.max_span_len, model.config.segment_len - model.config.max_span_len
    bits = []

    class Teacher:
        def __init__(self, block, scored):
            self.block, self.scored, self.i = block, scored, 0

        def __call__(self, logits):
            logits = logits.astype(np.float64)
            log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
            if self.scored[self.i]:
                bits.append(-log_probs[self.block[self.i]] / np.log(2))
            self.i += 1
            return int(self.block[self.i - 1])

    for start in range(1, len(doc), span):
        block = doc[start:start + span]
        part_a = np.append(doc[max(0, start - context):start], model.config.mask_id)
        teacher = Teacher(block, is_text[start:start + span])
        assert list(fill_span(model, part_a, len(part_a) - 1, max_new_tokens=len(block), sampler=teacher)) \
            == list(block)
    return float(np.sum(bits)), len(bits)


def test_batched_bits_per_byte_equals_token_by_token_decoding():
    model = tiny_model()
    model.set_memory(working=False, episodic=False, semantic=False)
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(9, 40, n), [2]]) for n in (29, 6)]  # <bos> text <eos>
    masks = [(doc != 1) & (doc != 2) for doc in docs]
    text = HeldOutText(docs, masks, b"x" * 50)
    reference_bits, reference_tokens = map(sum, zip(*(decoded_bits(model, d, m) for d, m in zip(docs, masks))))
    for batch_size in (1, 5):
        result = model_bits_per_byte(model, text, batch_size=batch_size)
        assert result.n_tokens == reference_tokens == 35
        assert result.total_bits == pytest.approx(reference_bits, rel=1e-4)
        assert result.bits_per_byte == pytest.approx(reference_bits / 50, rel=1e-4)


# --- baselines ------------------------------------------------------------------------------------------

def test_unigram_baseline_by_hand():
    # counts (2, 1, 1, 0) over V = 4 with add-one: p = (3, 2, 2, 1) / 8
    result = unigram_bits_per_byte(np.array([0, 0, 1, 2]), 4, np.array([0, 3, 1]), n_bytes=5)
    expected = -(math.log2(3 / 8) + math.log2(1 / 8) + math.log2(2 / 8))
    assert result["total_bits"] == pytest.approx(expected)
    assert result["bits_per_byte"] == pytest.approx(expected / 5)


@pytest.mark.skipif(shutil.which("xz") is None, reason="the xz command is not installed")
def test_xz_baseline_is_the_xz_command_at_its_strongest_setting():
    """`xz -9e` (documented as preset 9 with --extreme, .xz container, CRC64 check) gives the same size."""
    text = ("The river Hesk runs through Ashford. " * 40 + "Zeno has a goat named Pepper.").encode()
    size = len(subprocess.run(["xz", "-9e", "-c"], input=text, capture_output=True, check=True).stdout)
    result = xz_bits_per_byte(text)
    assert result["compressed_bytes"] == size and result["bytes"] == len(text)
    assert result["bits_per_byte"] == pytest.approx(8 * size / len(text))


def test_xz_baseline_on_known_extremes():
    noise = np.random.default_rng(0).bytes(4096)  # incompressible: the container's bytes come on top
    assert 8.0 < xz_bits_per_byte(noise)["bits_per_byte"] < 8.2
    assert xz_bits_per_byte(b"a" * 100_000)["bits_per_byte"] < 0.02  # one repeated byte: ~150 bytes in all
    assert math.isnan(xz_bits_per_byte(b"")["bits_per_byte"])
