"""Generation speed of a trained model: tokens/s with the KV cache against full recomputation.

    python 07-inference/benchmark.py [--checkpoint CKPT] [--new_tokens 32] [--repeats 3]

Both runs fill the same blank after the same prompt (a window's worth of tokens), greedily with
[EOP] suppressed so that each makes exactly --new_tokens tokens. With the cache the prompt is
processed once and each new token is one step against the cached keys and values; without it
every token re-runs the whole window. Reported: the best of --repeats runs, as tokens/s, and
the time to the first token (the prefill).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from mlot.architecture.cli import documented_parser, positive_int, run_command
from mlot.inference.cli import add_model_arguments, load_model
from mlot.model.generation import fill_span


class GreedyWithoutEnd:
    """Greedy choice that never ends the span, so every run makes the same number of tokens."""

    def __init__(self, eop: int):
        self.eop = eop

    def __call__(self, logits: np.ndarray) -> int:
        logits = logits.copy()
        logits[self.eop] = -np.inf
        return int(np.argmax(logits))


def time_fill(model, part_a, new_tokens: int, use_cache: bool) -> tuple:
    """(seconds to the first token, seconds for all new_tokens, the tokens)."""
    start = time.perf_counter()
    tokens, first = [], None
    for token in fill_span(model, part_a, len(part_a) - 1, max_new_tokens=new_tokens,
                           sampler=GreedyWithoutEnd(model.special.eop), use_cache=use_cache):
        first = time.perf_counter() - start if first is None else first
        tokens.append(token)
    return first, time.perf_counter() - start, tokens


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    add_model_arguments(parser)
    parser.add_argument("--new_tokens", type=positive_int, default=32,
                        help="tokens generated per run, at most the model's window (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="runs of each way, the best is shown (default: %(default)s)")
    args = parser.parse_args(argv)
    model = load_model(args).model
    window = model.config.segment_len - 1
    new_tokens = min(args.new_tokens, model.config.segment_len)
    prompt = np.random.default_rng(0).integers(20, model.config.vocab_size, window)
    part_a = np.append(prompt, model.special.mask)
    results = {}
    for use_cache in (True, False):
        time_fill(model, part_a, 2, use_cache)  # warm-up (Numba, caches)
        runs = [time_fill(model, part_a, new_tokens, use_cache) for _ in range(args.repeats)]
        results[use_cache] = min(runs, key=lambda run_: run_[1])
    assert results[True][2] == results[False][2], "the KV cache changed the tokens"
    print(f"model d={model.config.d_model} layers={model.config.n_layers}; prompt {len(part_a)} tokens, "
          f"{new_tokens} new tokens, best of {args.repeats}")
    for use_cache, label in ((True, "KV cache"), (False, "recompute")):
        first, total, _ = results[use_cache]
        print(f"{label:>10}: {new_tokens / total:8.1f} tokens/s   first token {first * 1000:6.1f} ms")
    print(f"   speed-up: {results[False][1] / results[True][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
