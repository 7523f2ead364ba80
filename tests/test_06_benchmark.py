"""Pieces of 06-evaluation/benchmark.py on tiny shapes: generation yields exactly the tokens asked
for, the retrieval case checks its kernel against the NumPy brute force, the traced peak sees a
known allocation, the median is that of a fake clock, and the driver reports every case with its ratio. No timing is asserted."""
import time

import numpy as np
import pytest

from mlot.architecture import ModelConfig
from mlot.evaluation import benchmark
from mlot.evaluation.benchmark_cases import NoEndSampler, case_generate, case_retrieval, timed

TINY = ModelConfig.from_dict(dict(vocab_size=64, d_model=16, n_layers=2, n_heads=2, segment_len=16, max_span_len=4,
                                  chunk_len=4, working_cache_len=16, episodic_capacity=8, retrieval_top_k=2,
                                  semantic_slots=4, semantic_top_k=2, retriever_dim=8, memory_layers=[1]))


def test_no_end_sampler_is_greedy_but_never_ends():
    sampler = NoEndSampler(eop=2)
    assert sampler(np.array([0.0, 1.0, 5.0, 3.0])) == 3
    assert sampler(np.array([0.0, 4.0, 1.0, 3.0])) == 1


def test_generate_case_yields_the_tokens_asked_for_with_and_without_cache():
    for use_cache in (True, False):
        figures = case_generate(use_cache, steps=1, warmup=0, new_tokens=5, prompt_tokens=20, config=TINY)
        assert figures["tokens_per_s"] == pytest.approx(5 / figures["seconds_median"])
        assert figures["shape"] == {"prompt_tokens": 20, "new_tokens": 5}


def test_retrieval_case_checks_the_kernel_against_numpy_brute_force():
    figures = case_retrieval(200, steps=1, warmup=0, queries=3, dim=8, k=4)
    assert figures["same_top_k"] and figures["seconds_median"] > 0


def test_timed_reports_median_and_traced_peak(monkeypatch):
    """A fake clock that each call advances by a known duration: the median is of the timed calls only."""
    now = [0.0]
    durations = iter([100.0, 100.0, 5.0, 1.0, 3.0, 100.0])  # 2 warm-up calls, 3 timed, 1 traced
    calls = []

    def work():
        calls.append(np.zeros(2 ** 18))  # 2 MiB per call
        now[0] += next(durations)

    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    figures = timed(work, steps=3, warmup=2)
    assert len(calls) == 6 and figures["seconds_median"] == 3.0
    assert 1.9 <= figures["traced_peak_mb"] <= 3


def test_driver_reports_each_case_and_the_torch_hint(monkeypatch):
    fake = {"tokens_per_s": 10.0, "seconds_median": 0.5, "numpy_seconds_median": 1.0, "same_top_k": True,
            "numpy_traced_peak_mb": 2.0, "traced_peak_mb": 1.0, "start_rss_mb": 100.0, "peak_rss_mb": 120.0,
            "shape": {"batch": 8, "seq_len": 16}, "model": {}}
    monkeypatch.setattr(benchmark, "measure", lambda spec: dict(fake, tokens_per_s=5.0) if spec == "generate_nocache"
                        else dict(fake))
    lines = []
    report = benchmark.run(list(benchmark.CASES), [1000, 10000], use_torch=False, show=lines.append)
    assert set(report["cases"]) == {"train", "eval", "retrieval_1000", "retrieval_10000", "generate"}
    assert report["cases"]["retrieval_1000"]["ratio"] == 2.0 and report["cases"]["generate"]["ratio"] == 2.0
    assert "ratio" not in report["cases"]["train"]
    assert any(benchmark.TORCH_HINT in line for line in lines)
