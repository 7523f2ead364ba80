"""The measured cases of benchmark.py, each a function returning a dict of figures; benchmark.py
runs each in a fresh process so that its peak memory is its own.

Every case times the work after warm-up (Numba compiles there) and reports the median, then
runs the work once more under tracemalloc for the peak of NumPy allocations of one call (Numba's
own allocations are not traced; the process's peak RSS, taken by benchmark.py, covers them).
The model is the default config's shape (05-training/config.json) with random weights: speed
does not depend on what the weights learned.
"""
from __future__ import annotations

import importlib.resources
import json
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from mlot.architecture import ModelConfig, no_grad
from mlot.memory.benchmark_retrieval import numpy_topk
from mlot.memory.kernels import topk_cosine
from mlot.model.generation import fill_span, prepare_prompt
from mlot.model.infilling import make_infill_batch
from mlot.model.masking import sample_spans
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenized_data import TokenizedData, TokenizedSplit
from mlot.training.curriculum import Curriculum
from mlot.training.distributed import World
from mlot.training.pretrain_stage import PretrainConfig, PretrainStage
from mlot.training.training_loop import Trainer, TrainConfig

DEFAULT_CONFIG = importlib.resources.files("mlot.training") / "config.json"  # package data: found when installed too
VOCAB = 4096


def default_model_config(vocab_size: int = VOCAB) -> ModelConfig:
    values = json.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))["model"]
    return ModelConfig.from_dict({**values, "vocab_size": vocab_size})


def timed(work, steps: int, warmup: int) -> dict:
    """Median seconds of `steps` calls after `warmup` calls, and the traced peak of one more."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    work()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"seconds_median": statistics.median(times), "traced_peak_mb": round(traced_peak / 2 ** 20, 1)}


def synthetic_split(rng, vocab_size: int, documents: int = 64, length: int = 1024) -> TokenizedSplit:
    """Random-token documents (framing ids 1 and 2, text ids from 9 up)."""
    tokens = rng.integers(9, vocab_size, (documents, length)).astype(np.uint16)
    tokens[:, 0], tokens[:, -1] = 1, 2
    return TokenizedSplit(tokens.ravel(), np.arange(documents, dtype=np.int64) * length)


def case_train(steps: int, warmup: int, batch_size: int = 8, config: ModelConfig | None = None) -> dict:
    """Trainer.train_step at the curriculum's last phase (every memory tier read and written, full
    segments): forward, losses, backward, AdamW, memory write, consolidation when due."""
    config = config or default_model_config()
    split = synthetic_split(np.random.default_rng(0), config.vocab_size)
    model, train = MLoTSpark(config, seed=0), TrainConfig(batch_size=batch_size, max_steps=10 ** 6, warmup_steps=1)
    stage = PretrainStage(model, TokenizedData(Path("."), {}, split, split), train, PretrainConfig(), World())
    stage.curriculum.index = len(stage.curriculum.phases) - 1
    trainer = Trainer(model, stage, train)
    before = trainer.tokens
    figures = timed(trainer.train_step, steps, warmup)
    tokens_per_step = (trainer.tokens - before) / (steps + warmup + 1)
    return {**figures, "tokens_per_s": tokens_per_step / figures["seconds_median"],
            "shape": {"batch": batch_size, "seq_len": config.segment_len}}


def case_eval(steps: int, warmup: int, batch_size: int = 8, config: ModelConfig | None = None) -> dict:
    """A no-grad forward of a batch of full segments with spans masked as at the last phase,
    reading a memory filled by a few earlier segments; tokens/s counts the segments' tokens."""
    config = config or default_model_config()
    rng = np.random.default_rng(0)
    model = MLoTSpark(config, seed=0)
    model.eval()
    model.reset_memory(batch_size=batch_size)
    last_scales = Curriculum().phases[-1].span_scales
    for _ in range(4):
        model.write_memory(list(rng.integers(9, config.vocab_size, (batch_size, config.segment_len))))
    segments = list(rng.integers(9, config.vocab_size, (batch_size, config.segment_len)))
    batch = make_infill_batch(segments, [sample_spans(len(s), last_scales, rng, config.max_span_len)
                                         for s in segments], model.special)

    def forward():
        with no_grad():
            model.logits(model(batch, record_access=False).hidden)

    figures = timed(forward, steps, warmup)
    return {**figures, "tokens_per_s": batch_size * config.segment_len / figures["seconds_median"],
            "shape": {"batch": batch_size, "seq_len": config.segment_len}}


def case_retrieval(size: int, steps: int, warmup: int, queries: int = 16, dim: int = 64, k: int = 8) -> dict:
    """Exact top-k cosine over `size` episodic keys (the kernel the episodic store searches with,
    live mask included) against 02-memory's NumPy brute force, and whether they agree."""
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((size, dim)).astype(np.float32)
    query = rng.standard_normal((queries, dim)).astype(np.float32)
    live = np.ones(size, dtype=bool)
    ours = timed(lambda: topk_cosine(query, keys, k, live), steps, warmup)
    reference = timed(lambda: numpy_topk(query, keys, k), steps, warmup)
    same = np.array_equal(np.sort(topk_cosine(query, keys, k, live)[0], axis=1),
                          np.sort(numpy_topk(query, keys, k)[0], axis=1))
    return {**ours, "numpy_seconds_median": reference["seconds_median"],
            "numpy_traced_peak_mb": reference["traced_peak_mb"], "same_top_k": bool(same),
            "shape": {"entries": size, "queries": queries, "dim": dim, "k": k}}


class NoEndSampler:
    """Greedy, but never [EOP]: every run generates exactly the tokens asked for."""
    def __init__(self, eop: int):
        self.eop = eop

    def __call__(self, logits):
        logits = logits.copy()
        logits[self.eop] = -np.inf
        return int(np.argmax(logits))


def case_generate(use_cache: bool, steps: int, warmup: int, new_tokens: int = 32, prompt_tokens: int = 96,
                  config: ModelConfig | None = None) -> dict:
    """Generate new_tokens after a prompt (prefill included), with or without the KV cache."""
    config = config or default_model_config()
    model = MLoTSpark(config, seed=0)
    model.eval()
    prompt = np.random.default_rng(0).integers(9, config.vocab_size, prompt_tokens)
    model.reset_memory(batch_size=1)
    part_a = np.append(prepare_prompt(model, prompt), config.mask_id)
    sampler = NoEndSampler(config.eop_id)

    def generate():
        tokens = list(fill_span(model, part_a, len(part_a) - 1, max_new_tokens=new_tokens, sampler=sampler,
                                use_cache=use_cache))
        assert len(tokens) == new_tokens

    figures = timed(generate, steps, warmup)
    return {**figures, "tokens_per_s": new_tokens / figures["seconds_median"],
            "shape": {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}}
