"""A tiny model taken through the default run's stages — pretraining, then recall practice, one
`train.py` plan — recalls a pass key stated two working windows and more before the question with
its memory, and not without it.

The cases are the benchmark's (seeds below 10^9, which training never draws), read and asked as
`06-evaluation/memory_benchmarks.py` does (`recall.score_recall`). Measured when written: 0.650
with memory, 0.000 without (after 150 and after 300 steps of practice alike; the misses are keys
of two digit tokens with one digit wrong: this tokenizer of a 150 kB corpus splits numbers).
"""
import json
import subprocess
import sys
from pathlib import Path

from mlot.architecture.config import read_json_object
from mlot.evaluation.recall import score_recall
from mlot.tokenization.memory_tasks import passkey_case
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
RECALL_STEPS = 300
CASES = 40
ON_AT_LEAST, OFF_AT_MOST = 0.4, 0.1  # chance is 1/90


def test_pretraining_then_recall_practice_gives_a_tiny_model_memory_it_uses(tiny_dataset, tmp_path):
    config = read_json_object(ROOT / "05-training" / "configs" / "tiny.json")
    config["model"]["copy_head"] = True
    config["then"] = [{"stage": "recall",
                       "training": {"batch_size": 8, "max_steps": RECALL_STEPS, "lr": 0.003, "warmup_steps": 10,
                                    "eval_interval": RECALL_STEPS, "save_interval": RECALL_STEPS},
                       "recall": {"passkey_share": 1.0, "max_windows": 2, "val_cases": 8}}]
    (tmp_path / "plan.json").write_text(json.dumps(config))
    subprocess.run([sys.executable, str(ROOT / "05-training" / "train.py"), "--no_progress", "--dataset",
                    str(tiny_dataset), "--model_config", str(tmp_path / "plan.json"),
                    "--checkpoint_dir", str(tmp_path / "run")], check=True, capture_output=True, cwd=ROOT)
    trained = load_trained_model(tmp_path / "run" / "latest_checkpoint.pt")
    model, tokenizer = trained.model, trained.tokenizer
    window = model.config.working_cache_len
    count_tokens = lambda text: len(tokenizer.encode(text))  # noqa: E731
    cases = [passkey_case(seed, depth=0.5 * seed / CASES, n_tokens=4 * window, count_tokens=count_tokens)
             for seed in range(CASES)]  # the key two windows or more before the question
    on = score_recall(model, tokenizer, cases, max_span_tokens=4).exact_match
    model.set_memory(working=False, episodic=False, semantic=False)
    off = score_recall(model, tokenizer, cases, max_span_tokens=4).exact_match
    assert on >= ON_AT_LEAST and off <= OFF_AT_MOST, (on, off)
