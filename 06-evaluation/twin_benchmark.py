"""Side by side with what a user would pick instead: the PyTorch twin trained for as long as a run of
ours trained, on the same training tokens, both scored on the same held-out bytes.

    python 06-evaluation/twin_benchmark.py --checkpoint RUN/latest_checkpoint.pt [--seconds S] [--max_docs N] [--max_segments N]

The twin (../shared/bench/torch_twin.py: a plain GPT of the checkpoint's width, depth and heads over
windows of its segment_len tokens, no memory; PyTorch is never a dependency, `pip install
torch==2.13.0`) is trained here for the wall-clock time the run's metrics.jsonl records (or
--seconds), run it on the machine the run trained on, idle as it was: batches of the run's size of
random windows of the run's train split, AdamW at the run's peak rate, weight decay and gradient
clipping, linear warm-up over the run's warm-up steps, then cosine decay over the time budget.
Then both are scored on the same text tokens of the held-out documents (the first --max_docs, each
up to --max_segments segments), in bits per UTF-8 byte:
  ours  read as bits_by_position.py reads them, with full memory (its "all" figure)
  twin  windows of segment_len tokens sliding by half a window; each token scored once, in the
        first window that has at least half a window before it (the document's first window
        scores all of its tokens)
and the ratio ours / twin printed (issue 17 asks for at most 1.05).
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError, documented_parser, positive_float, positive_int, run_command
from mlot.architecture.threads import fit_threads_to_load
from mlot.evaluation.benchmark import TORCH_HINT, TWIN
from mlot.evaluation.bits_by_position import (bucket_labels, bucket_ratios, by_bucket, model_bits_by_segment,
                                              text_bytes_by_segment)
from mlot.evaluation.bits_per_byte import LN2, held_out_text
from mlot.evaluation.evaluate import SETTINGS
from mlot.tokenization.tokenized_data import TokenizedData
from mlot.training.monitor import metrics_path, parse_metrics, training_seconds
from mlot.training.trained_model import load_trained_model


def load_twin():
    """(torch, the twin's module), or UserError with the install line."""
    try:
        import torch
    except ImportError:
        raise UserError(f"the twin needs PyTorch: {TORCH_HINT}") from None
    if not TWIN.is_file():
        raise UserError(f"no PyTorch twin at {TWIN}")
    spec = importlib.util.spec_from_file_location("torch_twin", TWIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return torch, module


def train_twin(torch, twin, train_tokens: np.ndarray, model_config, train_config: dict, seconds: float,
               progress: bool = False):
    """The twin trained for `seconds` of wall-clock time; returns (model, steps)."""
    torch.manual_seed(train_config["seed"])
    T = model_config.segment_len
    model = twin.GPT(model_config.vocab_size, model_config.d_model, model_config.n_layers, model_config.n_heads, T,
                     True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config["lr"], weight_decay=train_config["weight_decay"])
    rng = np.random.default_rng(train_config["seed"])
    model.train()
    step, started = 0, time.perf_counter()
    with tqdm(total=round(seconds), unit="s", desc="twin", disable=not progress) as bar:
        while (elapsed := time.perf_counter() - started) < seconds:
            torch.set_num_threads(fit_threads_to_load())
            warm = min(1.0, (step + 1) / max(train_config["warmup_steps"], 1))
            for group in optimizer.param_groups:
                group["lr"] = train_config["lr"] * warm * 0.5 * (1 + math.cos(math.pi * elapsed / seconds))
            starts = rng.integers(0, len(train_tokens) - T, train_config["batch_size"])
            windows = torch.from_numpy(np.stack([train_tokens[s:s + T + 1] for s in starts]).astype(np.int64))
            optimizer.zero_grad(set_to_none=True)
            model(windows[:, :-1].contiguous(), windows[:, 1:].contiguous()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config["grad_clip"])
            optimizer.step()
            step += 1
            bar.update(round(time.perf_counter() - started) - bar.n)
    return model.eval(), step


def twin_bits_by_segment(torch, model, documents: list, is_text: list, segment_len: int) -> list:
    """Per document, (segments,) bits of its text tokens under the twin, windows sliding by half a window."""
    half, result = segment_len // 2, []
    with torch.no_grad():
        for doc, mask in zip(documents, is_text):
            bits = np.zeros(-(-len(doc) // segment_len))
            for start in range(0, max(len(doc) - 1 - half, 1), half):
                idx = torch.from_numpy(doc[start:start + segment_len + 1].astype(np.int64))[None]
                inputs, targets = idx[:, :-1], idx[0, 1:]
                x = model.wte(inputs) + model.wpe(torch.arange(inputs.shape[1]))
                for block in model.blocks:
                    x = block(x)
                log_probs = torch.log_softmax((model.ln_f(x) @ model.wte.weight.t())[0].double(), dim=-1)
                nll = -log_probs[torch.arange(len(targets)), targets].numpy() / LN2
                first = 0 if start == 0 else segment_len - half  # predictions before it belong to an earlier window
                positions = start + 1 + np.arange(first, len(targets))  # the target tokens' places in the document
                np.add.at(bits, positions // segment_len, np.where(mask[positions], nll[first:], 0.0))
            result.append(bits)
    return result


def main(argv=None) -> None:
    parser = documented_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the run's checkpoint (.pt) beside its metrics")
    parser.add_argument("--dataset", type=Path, help="tokenized_data folder (default: the one the run trained on)")
    parser.add_argument("--seconds", type=positive_float,
                        help="train the twin this long (default: the run's training time from its metrics.jsonl)")
    parser.add_argument("--max_docs", type=positive_int, help="the first N held-out documents (default: all)")
    parser.add_argument("--max_segments", type=positive_int,
                        help="score at most N segments of each document (default: all of it)")
    parser.add_argument("--report", type=Path, help="write the JSON report here (atomically)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    progress = not args.no_progress and sys.stderr.isatty()
    torch, twin = load_twin()
    trained = load_trained_model(args.checkpoint, dataset=args.dataset, semantic_memory=True)
    seconds, timed_by = args.seconds, "--seconds"
    if seconds is None:
        timed_by = "the run's metrics.jsonl"
        records, _ = parse_metrics(metrics_path(trained.path.parent).read_text(encoding="utf-8"))
        seconds = training_seconds(records)
        if seconds is None:
            raise UserError(f"{metrics_path(trained.path.parent)} gives no training time; pass --seconds")
    data = TokenizedData.load(args.dataset or Path(trained.meta.get("dataset") or "."))
    if len(data.val) == 0:
        raise UserError(f"dataset {data.folder} has no held-out (val) documents")
    model, config = trained.model, trained.model.config
    twin_model, twin_steps = train_twin(torch, twin, np.asarray(data.train.tokens), config,
                                        trained.meta["train_config"], seconds, progress)
    text = held_out_text(data.val, trained.tokenizer, args.max_docs)
    keep = slice(None) if args.max_segments is None else slice(0, args.max_segments * config.segment_len)
    documents, is_text = [doc[keep] for doc in text.documents], [mask[keep] for mask in text.is_text]
    token_bytes = np.array([len(trained.tokenizer.decode_bytes([i])) for i in range(config.vocab_size)])
    n_bytes = by_bucket(text_bytes_by_segment(documents, is_text, token_bytes, config.segment_len))
    model.set_memory(**SETTINGS["full"])
    ours = by_bucket(model_bits_by_segment(model, documents, is_text, progress=progress, desc="ours"))
    theirs = by_bucket(twin_bits_by_segment(torch, twin_model, documents, is_text, config.segment_len))
    report = {"checkpoint": str(trained.path), "step": trained.meta.get("step"), "dataset": str(data.folder),
              "documents": len(documents), "max_segments": args.max_segments, "seconds": round(seconds, 1),
              "twin_steps": twin_steps, "twin_tokens": twin_steps * trained.meta["train_config"]["batch_size"]
              * config.segment_len, "buckets": bucket_labels(), "bytes": n_bytes.astype(int).tolist(),
              "ours_bits_per_byte": float(ours.sum() / n_bytes.sum()),
              "twin_bits_per_byte": float(theirs.sum() / n_bytes.sum()),
              "ours_by_bucket": bucket_ratios(ours, n_bytes), "twin_by_bucket": bucket_ratios(theirs, n_bytes)}
    report["ratio"] = report["ours_bits_per_byte"] / report["twin_bits_per_byte"]
    print(f"held-out: {int(n_bytes.sum()):,} bytes in {len(documents)} documents; both trained {seconds:.0f} s "
          f"(time from {timed_by}; ours: step {report['step']}; the twin, here: {twin_steps} steps)")
    print(f"{'bits per byte':26}" + "".join(f"{label:>9}" for label in report["buckets"]) + f"{'all':>9}")
    for label, name in (("MLoT-Spark (full memory)", "ours"), ("PyTorch twin", "twin")):
        cells = ["-" if v is None else f"{v:.3f}" for v in report[f"{name}_by_bucket"]]
        print(f"{label:26}" + "".join(f"{cell:>9}" for cell in cells) + f"{report[f'{name}_bits_per_byte']:9.3f}")
    print(f"ratio ours / twin: {report['ratio']:.3f} (issue 17: at most 1.05)")
    if args.report is not None:
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_command(main))
