"""Training-step throughput of the reference GPT on this autograd, beside PyTorch in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python 01-architecture/benchmark.py [--load 2] [--json]

For each config: forward + backward + AdamW update, timed step by step after warm-up; the
median gives tokens/s. Our step sizes its BLAS and Numba pools to the free cores before each
step, as the training loop does (mlot.architecture.threads); PyTorch runs with its defaults, as a
user's would. `--load N` runs N busy single-threaded processes (busy_load.py) while both
engines are measured, a laptop doing something else. FLOPs per token follow the PyTorch twin
(6 N + 12 L T d), so that achieved GFLOP/s and MFU (against an sgemm peak measured here) compare
like with like. When
PyTorch is importable, `../shared/bench/torch_twin.py` runs the same configs in a subprocess.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from mlot.architecture import OMP_WAIT_POLICY_WAS_SET
from mlot.architecture.busy_load import busy_processes
from mlot.architecture.cli import documented_parser, non_negative_int, positive_int
from mlot.architecture.gpt import GPT
from mlot.architecture.optim import AdamW
from mlot.architecture.threads import fit_threads_to_load

CONFIGS = {  # name: (d_model, n_layers, n_heads, seq_len, batch, vocab)
    "tiny": (128, 2, 4, 64, 16, 512),
    "small": (256, 4, 4, 128, 16, 4096),
    "medium": (384, 6, 6, 256, 8, 8192),
}
TWIN = Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_twin.py"


def sgemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best of a few n x n float32 products: the ceiling any training step can approach."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_ours(d, n_layers, n_heads, seq_len, batch, vocab, steps, warmup) -> dict:
    rng = np.random.default_rng(0)
    model = GPT(vocab, d, n_layers, n_heads, seq_len, rng=rng)
    opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    pool = [(rng.integers(0, vocab, (batch, seq_len)), rng.integers(0, vocab, (batch, seq_len))) for _ in range(8)]

    def step(i):
        ids, targets = pool[i % len(pool)]
        fit_threads_to_load()
        opt.zero_grad()
        loss = model.loss(ids, targets)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    times = [_timed(lambda: step(warmup + i)) for i in range(steps)]
    n_params = model.num_parameters()
    flops_per_token = 6 * n_params + 12 * n_layers * seq_len * d
    tokens_per_s = batch * seq_len / statistics.median(times)
    return {"tokens_per_s": round(tokens_per_s, 1), "step_ms_median": round(statistics.median(times) * 1e3, 2),
            "params": n_params, "flops_per_token": flops_per_token,
            "achieved_gflops": round(flops_per_token * tokens_per_s / 1e9, 2)}


def measure_torch(d, n_layers, n_heads, seq_len, batch, vocab, steps, warmup, threads) -> dict | None:
    if not TWIN.exists():
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    command = [sys.executable, str(TWIN), "--d_model", str(d), "--n_layers", str(n_layers), "--n_heads", str(n_heads),
               "--seq_len", str(seq_len), "--batch", str(batch), "--vocab", str(vocab), "--steps", str(steps),
               "--warmup", str(warmup), "--threads", str(threads)]
    env = dict(os.environ)
    if not OMP_WAIT_POLICY_WAS_SET:  # ours set it on import; PyTorch runs with the user's environment
        env.pop("OMP_WAIT_POLICY", None)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def blas_info() -> str:
    rows = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(rows) or "no BLAS found"


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS),
                        help="model sizes to time (default: all)")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per config (default: %(default)s)")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="untimed steps first, Numba compiles here (default: %(default)s)")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch twin")
    parser.add_argument("--load", type=non_negative_int, default=0,
                        help="busy single-threaded processes running during the measurement (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    with busy_processes(args.load):
        return run(args)


def run(args) -> int:
    threads = os.cpu_count() or 1
    warnings = [f"{name} is set; it can slow small matrix products (unset it in this command)"
                for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ]
    peak = sgemm_peak_gflops()
    report = {"blas": blas_info(), "sgemm_peak_gflops": round(peak, 1), "load": args.load, "warnings": warnings,
              "configs": {}}
    if not args.json:
        print(_header(report), flush=True)
    for name in args.configs:
        shape = CONFIGS[name]
        ours = measure_ours(*shape, args.steps, args.warmup)
        ours["mfu"] = round(ours["achieved_gflops"] / peak, 3)
        theirs = None if args.no_torch else measure_torch(*shape, args.steps, args.warmup, threads)
        entry = {"shape": dict(zip(("d_model", "n_layers", "n_heads", "seq_len", "batch", "vocab"), shape)),
                 "ours": ours, "torch": theirs}
        if theirs and "tokens_per_s" in theirs:
            theirs["mfu"] = round(theirs["achieved_gflops"] / peak, 3)
            entry["ratio_vs_torch"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3)
        report["configs"][name] = entry
        if not args.json:
            print(_row(name, entry), flush=True)
    if args.json:
        print(json.dumps(report))
    return 0


def _header(report) -> str:
    lines = [f"BLAS: {report['blas']}", f"sgemm peak: {report['sgemm_peak_gflops']} GFLOP/s",
             f"load: {report['load']} busy single-threaded process(es) beside both engines"]
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines.append(f"{'config':<8} {'ours tok/s':>11} {'GFLOP/s':>8} {'MFU':>6} {'torch tok/s':>12} {'torch MFU':>9} {'ours/torch':>10}")
    return "\n".join(lines)


def _row(name, entry) -> str:
    ours, theirs = entry["ours"], entry["torch"] or {}
    torch_tps = f"{theirs['tokens_per_s']:.0f}" if "tokens_per_s" in theirs else theirs.get("error", "n/a")[:12]
    torch_mfu = f"{theirs['mfu']:.1%}" if "mfu" in theirs else "n/a"
    ratio = f"{entry['ratio_vs_torch']:.2f}x" if "ratio_vs_torch" in entry else "n/a"
    return (f"{name:<8} {ours['tokens_per_s']:>11.0f} {ours['achieved_gflops']:>8.1f} {ours['mfu']:>6.1%} "
            f"{torch_tps:>12} {torch_mfu:>9} {ratio:>10}")


if __name__ == "__main__":
    sys.exit(main())
