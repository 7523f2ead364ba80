"""Throughput and peak memory of training steps, evaluation, episodic retrieval and generation,
each beside a reference measured in the same run.

    python 06-evaluation/benchmark.py [--cases train eval retrieval generate] [--sizes 1000 ... 1000000]
                                      [--json] [--report FILE.json] [--no_torch]

Each case runs in a fresh process (benchmark_cases.py) so that its peak RSS is its own (shown
beside the RSS the imports alone took); the traced figure is the peak of NumPy allocations
during one call. References:
  train     the PyTorch twin (../shared/bench/torch_twin.py, a plain GPT of the same width, depth,
            heads, sequence length, batch and vocabulary, no memory) training step
  eval      the same twin's forward (--fwd_only)
  retrieval 02-memory's NumPy brute force (full score matrix + argpartition), same queries
  generate  the same generation without the KV cache (the whole sequence recomputed per token)
Every ratio ("speed x") is our speed over the reference's: above 1, ours is faster.
The twin needs PyTorch, which is not a dependency: without it the ratios are left out
(install it with `pip install torch==2.13.0`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from mlot.architecture import OMP_WAIT_POLICY_WAS_SET
from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import documented_parser, positive_int

TWIN = Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_twin.py"
TORCH_HINT = "pip install torch==2.13.0"
CASES = ("train", "eval", "retrieval", "generate")
DEFAULT_SIZES = (10 ** 3, 10 ** 4, 10 ** 5, 10 ** 6)
STEPS = {"train": (3, 2), "eval": (5, 2), "retrieval": (5, 1), "generate": (3, 1), "generate_nocache": (2, 1)}


def run_in_child(spec: str) -> dict:
    """Inside the child process: one case's figures plus this process's peak RSS."""
    from mlot.evaluation import benchmark_cases as cases
    from mlot.training.training_loop import rss_mb
    name, _, argument = spec.partition(":")
    steps, warmup = STEPS[name]
    start_rss_mb = round(rss_mb(), 1)  # the imports' share
    if name in ("train", "eval"):
        figures = (cases.case_train if name == "train" else cases.case_eval)(steps, warmup)
    elif name == "retrieval":
        figures = cases.case_retrieval(int(argument), steps, warmup)
    else:
        figures = cases.case_generate(name == "generate", steps, warmup)
    model = cases.default_model_config()
    return {**figures, "model": {key: getattr(model, key) for key in ("d_model", "n_layers", "n_heads", "vocab_size")},
            "start_rss_mb": start_rss_mb, "peak_rss_mb": round(rss_mb(), 1)}


def figures_of(command: list, env=None) -> dict:
    """The JSON figures a measuring process prints last, or its last error line."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(spec: str) -> dict:
    """One case in a fresh process."""
    return figures_of([sys.executable, str(Path(__file__).resolve()), "--child", spec])


def measure_twin(name: str, ours: dict) -> dict:
    """The PyTorch twin at the shape of `ours`, in its own process, with the user's OpenMP setting."""
    model, shape, (steps, warmup) = ours["model"], ours["shape"], STEPS[name]
    command = [sys.executable, str(TWIN), "--d_model", str(model["d_model"]), "--n_layers", str(model["n_layers"]),
               "--n_heads", str(model["n_heads"]), "--seq_len", str(shape["seq_len"]), "--batch", str(shape["batch"]),
               "--vocab", str(model["vocab_size"]), "--steps", str(max(steps, 5)), "--warmup", str(warmup),
               "--threads", str(os.cpu_count() or 1)] + (["--fwd_only"] if name == "eval" else [])
    env = dict(os.environ)
    if not OMP_WAIT_POLICY_WAS_SET:  # mlot sets it on import; PyTorch runs with the user's environment
        env.pop("OMP_WAIT_POLICY", None)
    return figures_of(command, env)


def run(cases, sizes, use_torch: bool, show) -> dict:
    """Every case's figures and its reference; `show(line)` prints rows as they come."""
    report = {"torch": use_torch, "cases": {}, **({} if use_torch else {"torch_hint": TORCH_HINT})}
    show(HEADER)
    for name in cases:
        if name in ("train", "eval"):
            ours = measure(name)
            entry = {"ours": ours}
            if use_torch and "error" not in ours:
                entry["torch"] = measure_twin(name, ours)
                if "tokens_per_s" in entry["torch"]:
                    entry["ratio"] = ours["tokens_per_s"] / entry["torch"]["tokens_per_s"]
            report["cases"][name] = entry
            show(_row(f"{name} ({'step' if name == 'train' else 'forward'}, B{ours.get('shape', {}).get('batch')})",
                      ours, "tokens_per_s", "tok/s", entry.get("torch", {}).get("tokens_per_s"), "torch",
                      entry.get("ratio")))
        elif name == "retrieval":
            for size in sizes:
                ours = measure(f"retrieval:{size}")
                entry = {"ours": ours}
                if "error" not in ours:
                    entry["ratio"] = ours["numpy_seconds_median"] / ours["seconds_median"]
                report["cases"][f"retrieval_{size}"] = entry
                show(_row(f"retrieval N={size:,}", ours, "seconds_median", "ms", ours.get("numpy_seconds_median"),
                          "numpy", entry.get("ratio"), same=ours.get("same_top_k")))
        else:
            cached, recomputed = measure("generate"), measure("generate_nocache")
            entry = {"ours": cached, "no_cache": recomputed}
            if "error" not in cached and "error" not in recomputed:
                entry["ratio"] = cached["tokens_per_s"] / recomputed["tokens_per_s"]
            report["cases"]["generate"] = entry
            show(_row("generate (KV cache)", cached, "tokens_per_s", "tok/s", recomputed.get("tokens_per_s"),
                      "no cache", entry.get("ratio")))
    if not use_torch:
        show(f"PyTorch is not importable: no twin ratios for train/eval (install it with `{TORCH_HINT}`)")
    return report


HEADER = (f"{'case':<28}{'ours':>16}{'reference':>22}{'speed x':>9}{'RSS MB start>peak':>19}{'traced MB':>11}")


def _row(label, ours, key, unit, reference, reference_name, ratio, same=None) -> str:
    if "error" in ours:
        return f"{label:<28}  error: {ours['error']}"

    def show(value):
        return "n/a" if value is None else f"{value * 1e3:.3f} ms" if unit == "ms" else f"{value:,.0f} {unit}"

    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}x"
    note = "" if same is None else (f"  numpy traced {ours['numpy_traced_peak_mb']:.1f} MB; "
                                    + ("same top-k" if same else "TOP-K DIFFERS"))
    return (f"{label:<28}{show(ours[key]):>16}{reference_name + ' ' + show(reference):>22}{ratio_text:>9}"
            f"{ours['start_rss_mb']:>13.0f} >{ours['peak_rss_mb']:>4.0f}{ours['traced_peak_mb']:>11.1f}{note}")


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="what to time (default: all)")
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=list(DEFAULT_SIZES),
                        help="episodic entries searched in the retrieval case, each at least 8 (default: %(default)s)")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch twin")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--report", type=Path, help="also write the JSON report here (atomically)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_in_child(args.child)))
        return 0
    if min(args.sizes) < 8:
        parser.error(f"argument --sizes: every size must be >= 8 (the k of the retrieval case), got {min(args.sizes)}")
    if args.report is not None and not args.report.resolve().parent.is_dir():
        parser.error(f"argument --report: folder {args.report.parent} does not exist")
    show = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    use_torch = not args.no_torch and importlib.util.find_spec("torch") is not None and TWIN.is_file()
    report = run(args.cases, args.sizes, use_torch, show)
    if args.json:
        print(json.dumps(report, indent=1))
    if args.report is not None:
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
