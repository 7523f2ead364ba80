"""twin_benchmark.py: the PyTorch twin's sliding-window scoring against the twin's own loss and
against a uniform predictor (every text token scored exactly once), and the command end to end
on a tiny model trained on KJV books. Skipped without PyTorch, which is never a dependency, and
without the twin itself (../shared/bench beside the repository, absent from a clone elsewhere)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlot.evaluation.twin_benchmark import TWIN, load_twin, twin_bits_by_segment  # noqa: E402
from mlot.tokenization.tokenize_data import tokenize_corpus  # noqa: E402

if not TWIN.is_file():
    pytest.skip(f"no PyTorch twin at {TWIN}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
T, VOCAB = 16, 50


def _twin(seed: int):
    torch.manual_seed(seed)
    _, twin = load_twin()
    return twin.GPT(VOCAB, 8, 1, 2, T, True).eval()


def test_a_uniform_twin_costs_log2_vocab_per_text_token_each_scored_once():
    model = _twin(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()  # zero logits: every token costs log2(VOCAB) bits
    rng = np.random.default_rng(1)
    for length in (2, 17, 75):
        document = rng.integers(0, VOCAB, length)
        is_text = rng.random(length) < 0.8
        bits = twin_bits_by_segment(torch, model, [document], [is_text], T)[0]
        scored = is_text.copy()
        scored[0] = False  # the first token has nothing before it: never a target
        counts = np.add.reduceat(scored.astype(np.int64), np.arange(0, length, T))
        np.testing.assert_allclose(bits, counts * math.log2(VOCAB), rtol=1e-12)


def test_a_document_within_one_window_costs_the_twins_own_loss():
    model = _twin(2)
    document = np.random.default_rng(3).integers(0, VOCAB, T + 1)
    bits = twin_bits_by_segment(torch, model, [document], [np.ones(T + 1, bool)], T)[0]
    ids = torch.from_numpy(document)[None]
    with torch.no_grad():
        loss = model(ids[:, :-1].contiguous(), ids[:, 1:].contiguous()).item()  # mean nats per target
    assert bits.sum() == pytest.approx(loss * T / math.log(2), rel=1e-5)


def test_command_prints_both_and_the_ratio(tmp_path):
    tokenize_corpus([ROOT / "tests" / "data" / "kjv"], tmp_path / "data", vocab_size=300, val_fraction=0.34,
                    progress=False)
    subprocess.run([sys.executable, str(ROOT / "05-training" / "train.py"), "--no_progress", "--model_config",
                    str(ROOT / "05-training" / "configs" / "tiny.json"), "--dataset", str(tmp_path / "data"),
                    "--max_steps", "4", "--checkpoint_dir", str(tmp_path / "ckpt")], check=True, capture_output=True)
    result = subprocess.run([sys.executable, str(ROOT / "06-evaluation" / "twin_benchmark.py"), "--checkpoint",
                             str(tmp_path / "ckpt" / "latest_checkpoint.pt"), "--seconds", "1", "--max_segments", "6",
                             "--report", str(tmp_path / "twin.json"), "--no_progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "twin.json").read_text())
    assert "ratio ours / twin" in result.stdout and report["twin_steps"] > 0
    assert report["ratio"] == pytest.approx(report["ours_bits_per_byte"] / report["twin_bits_per_byte"])
    assert sum(report["bytes"]) > 0 and report["bytes"][3] == 0  # 6 segments never reach the 17+ bucket
