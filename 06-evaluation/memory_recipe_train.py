"""The memory recipe's second training stage: recall practice with the loss on the answer only.

    python 06-evaluation/memory_recipe_train.py --base CKPT --output FILE.pt [--steps 3000] [--batch_size 16]

`train.py`'s random-span objective spends nearly all of its loss on filler, and a model trained
with it alone never learned to copy a pass key (06-evaluation/README.md). Here every step is
what the benchmark asks, on training seeds (from TRAINING_SEED_BASE, never the benchmark's):
each row reads the context of a task case into memory segment by segment (`write_memory`, the
working cache on, as in the benchmark), then Part A is the question with the answer masked,
and the cross-entropy covers the answer span only. Every parameter trains (from --base). The
output is a checkpoint `load_trained_model` and `memory_benchmarks.py` read.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture.optim import AdamW, WarmupCosine, clip_grad_norm_
from mlot.evaluation.memory_tasks import associative_recall_case, fact_case, passkey_case
from mlot.model.infilling import make_infill_batch
from mlot.architecture.checkpoint_file import CheckpointError, save_arrays
from mlot.training.loss_functions import reconstruction_loss
from mlot.training.trained_model import load_trained_model

TRAINING_SEED_BASE = 2 * 10 ** 9   # apart from the benchmark (< 10^9) and the corpus (10^9 + index)
MAX_WINDOWS = 4
WARMUP_STEPS = 50


def practice_case(index: int, window: int, count_tokens) -> dict:
    """Case `index` of the practice stream: a task of 1..MAX_WINDOWS working windows."""
    seed = TRAINING_SEED_BASE + index
    rng = np.random.default_rng([seed, 0])
    n_tokens = int(rng.integers(1, MAX_WINDOWS + 1)) * window
    kind = rng.random()
    if kind < 0.4:
        return passkey_case(seed, float(rng.random()), n_tokens, count_tokens)
    if kind < 0.8:
        return associative_recall_case(seed, int(rng.integers(2, 7)), n_tokens, bool(rng.random() < 0.3),
                                       count_tokens)
    return fact_case(seed, int(rng.integers(1, 4)), n_tokens, count_tokens=count_tokens)


def practice_batch(model, tokenizer, first: int, batch_size: int):
    """Read each case's context into its memory row; return the question batch (answers masked)."""
    count = lambda text: len(tokenizer.encode(text))  # noqa: E731
    cases = [practice_case(first + i, model.config.working_cache_len, count) for i in range(batch_size)]
    contexts = [np.asarray(tokenizer.encode(case["context"]), dtype=np.int64) for case in cases]
    segment = model.config.segment_len
    model.reset_memory(batch_size=batch_size)
    for start in range(0, max(map(len, contexts)), segment):
        model.write_memory([context[start:start + segment] for context in contexts])
    model.flush_memory()
    questions, spans = [], []
    for case in cases:
        query = tokenizer.encode(case["query"])
        answer = tokenizer.encode(" " + case["answer"])
        questions.append(np.asarray(query + answer, dtype=np.int64))
        spans.append([(len(query), len(query) + len(answer))])
    return make_infill_batch(questions, spans, model.special)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the checkpoint to start from (train.py's)")
    parser.add_argument("--output", type=Path, required=True, help="the checkpoint to write")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
            raise ValueError(f"--steps and --batch_size must be >= 1 and --lr > 0, got {args.steps}, "
                             f"{args.batch_size} and {args.lr}")
        if args.output.exists():
            raise ValueError(f"{args.output} exists; choose another --output")
        trained = load_trained_model(args.base)
    except (ValueError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model, tokenizer = trained.model, trained.tokenizer
    model.train()
    groups = model.parameter_groups()
    optimizer = AdamW([{"params": groups["backbone"] + groups["episodic"] + groups["semantic"], "lr": args.lr,
                        "weight_decay": 0.0},
                       {"params": groups["gates"], "lr": 10 * args.lr, "weight_decay": 0.0}])
    # a constant rate let the answer loss swing (0.6 -> 1.6 nats from one 100 steps to the next)
    schedule = WarmupCosine(optimizer, min(WARMUP_STEPS, args.steps - 1), args.steps)
    model.set_memory(working=True, episodic=True, semantic=False)
    started, losses = time.perf_counter(), []
    for step in tqdm(range(args.steps), desc="recall practice", disable=args.no_progress):
        batch = practice_batch(model, tokenizer, step * args.batch_size, args.batch_size)
        loss = reconstruction_loss(model, model(batch), batch)[0]
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.data))
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: answer loss {np.mean(losses[-100:]):.3f}", file=sys.stderr)
    model.eval()
    meta = {**trained.meta, "step": int(trained.meta.get("step") or 0) + args.steps, "recall_practice": {
        "base": str(trained.path), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "seconds": round(time.perf_counter() - started, 1)}}
    save_arrays(args.output, {f"model.{name}": array for name, array in model.state_dict().items()}, meta)
    print(f"wrote {args.output} after {args.steps} steps ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
