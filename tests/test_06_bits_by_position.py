"""bits_by_position.py on a tiny model trained on real text (six KJV books in tests/data/kjv, two
held out): its report against a recomputation by hand, one document at a time, from the model's
logits through a float64 log-softmax, and the bytes decoded bucket by bucket."""
import json
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.evaluation.bits_by_position import bucket_labels, bucket_of_segments
from mlot.model.infilling import make_infill_batch
from mlot.tokenization.tokenize_data import tokenize_corpus
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "kjv"
TRAIN = ROOT / "05-training" / "train.py"
TINY = ROOT / "05-training" / "configs" / "tiny.json"
COMMAND = ROOT / "06-evaluation" / "bits_by_position.py"
MAX_SEGMENTS = 30  # the tiny model's episodic store (32 chunks of 8 tokens) fills after 8 segments of 32
SWITCHES = {"full": (True, True, True), "episodic_only": (True, True, False), "memory_off": (False, False, False)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, dataset) of tiny.json trained 6 steps on four KJV books; two books held out."""
    folder = tmp_path_factory.mktemp("kjv")
    tokenize_corpus([SAMPLE], folder / "data", vocab_size=300, val_fraction=0.34, progress=False)
    subprocess.run([sys.executable, str(TRAIN), "--no_progress", "--model_config", str(TINY), "--dataset",
                    str(folder / "data"), "--max_steps", "6", "--checkpoint_dir", str(folder / "ckpt")],
                   check=True, capture_output=True, cwd=ROOT)
    return folder / "ckpt" / "latest_checkpoint.pt", folder / "data"


def test_buckets_are_segments_1_2_to_4_5_to_16_and_17_on():
    assert bucket_labels() == ["1", "2-4", "5-16", "17+"]
    assert bucket_of_segments(20).tolist() == [0, 1, 1, 1] + [2] * 12 + [3] * 4


def _bucket(segment_number: int) -> int:
    return 0 if segment_number == 1 else 1 if segment_number <= 4 else 2 if segment_number <= 16 else 3


def _bits_by_hand(model, semantic, document, is_text, switches) -> np.ndarray:
    """(4,) bits per bucket of one document read alone, segment by segment, memory written after each."""
    model.use_working, model.use_episodic, model.use_semantic = switches
    model.reset_memory(batch_size=1)
    model.reset_memory(rows=[0])
    model.memory.semantic.load_state_dict(semantic)
    L, span = model.config.segment_len, model.config.max_span_len
    bits = np.zeros(4)
    for number in range(1, MAX_SEGMENTS + 1):
        segment, text = document[(number - 1) * L:number * L], is_text[(number - 1) * L:number * L]
        if len(segment) == 0:
            break
        starts = list(range(0, len(segment), span))
        for start in starts:
            end = min(start + span, len(segment))
            batch = make_infill_batch([segment[:end]], [[(start, end)]], model.special)
            out = model(batch, record_access=start == starts[-1])
            cols = batch.prefix_len[0] + np.arange(end - start)  # [SOP] and the span's inputs: predict the span
            rows = np.zeros(len(cols), dtype=np.int64)
            c = model.config.copy_context  # the text before each target: the segment up to it
            before = np.array([[segment[i] if i >= 0 else -1 for i in range(t - 1, t - 1 - c, -1)]
                               for t in range(start, end)])
            logits = model.output_logits(out.hidden[rows, cols], out.read, rows, before).data.astype(np.float64)
            top = logits.max(axis=1, keepdims=True)
            log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
            nll = -log_probs[np.arange(len(cols)), segment[start:end]]
            bits[_bucket(number)] += nll[text[start:end]].sum() / np.log(2)
        model.write_memory([segment])
    return bits


def test_report_matches_a_recomputation_by_hand(trained, tmp_path):
    checkpoint, dataset = trained
    report_path, plot_path = tmp_path / "report.json", tmp_path / "curves.png"
    result = subprocess.run([sys.executable, str(COMMAND), "--checkpoint", str(checkpoint), "--max_segments",
                             str(MAX_SEGMENTS), "--batch_size", "2", "--report", str(report_path), "--plot",
                             str(plot_path), "--no_progress"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "17+" in result.stdout and "memory_off" in result.stdout
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(report_path.read_text())

    data = TokenizedData.load(dataset)
    model = load_trained_model(checkpoint, semantic_memory=True).model
    semantic = {name: array.copy() for name, array in model.memory.semantic.state_dict().items()}
    tokenizer = data.tokenizer()
    special = [tokenizer.token_to_id(token) for token in tokenizer.special_tokens]
    L = model.config.segment_len
    documents = [np.asarray(data.val.document(i), dtype=np.int64)[:MAX_SEGMENTS * L] for i in range(len(data.val))]
    assert len(documents) == 2 and report["documents"] == 2
    assert [Path(name).name for name in report["document_names"]] == ["57_philemon.txt", "64_3_john.txt"]
    is_text = [~np.isin(document, special) for document in documents]
    n_bytes, xz_bits = np.zeros(4), np.zeros(4)
    for document, text in zip(documents, is_text):
        compressed_before = 0
        for bucket, (first, last) in enumerate([(1, 1), (2, 4), (5, 16), (17, MAX_SEGMENTS)]):
            part = slice((first - 1) * L, last * L)
            if len(document[part]) == 0:
                continue
            n_bytes[bucket] += len(tokenizer.decode_bytes(document[part][text[part]].tolist()))
            through = tokenizer.decode_bytes(document[:last * L][text[:last * L]].tolist())
            compressed = len(lzma.compress(through, format=lzma.FORMAT_RAW, filters=[
                {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]))
            xz_bits[bucket] += 8 * (compressed - compressed_before)
            compressed_before = compressed
    assert report["bytes"] == n_bytes.astype(int).tolist() and n_bytes.min() > 0  # every bucket reached
    np.testing.assert_allclose(report["settings"]["xz"]["bits_per_byte"], xz_bits / n_bytes, rtol=1e-12)
    for name, switches in SWITCHES.items():
        bits = sum(_bits_by_hand(model, semantic, document, text, switches)
                   for document, text in zip(documents, is_text))
        setting = report["settings"][name]
        np.testing.assert_allclose(setting["bits_per_byte"], bits / n_bytes, rtol=1e-5)
        np.testing.assert_allclose(setting["all"], bits.sum() / n_bytes.sum(), rtol=1e-5)
    assert report["settings"]["full"]["bits"][3] != report["settings"]["memory_off"]["bits"][3]  # memory was read
