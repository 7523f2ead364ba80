"""Demo: a tiny GPT learns to sort digits with this autograd, in a few seconds on a laptop CPU.

    python 01-architecture/demo.py [--steps 400] [--seed 0]

Each example is n random digits followed by the same digits sorted; the loss counts only the
sorted half, so a falling loss means the model learned to sort, not to copy.
"""
from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from mlot.architecture import no_grad
from mlot.architecture.cli import documented_parser, positive_int
from mlot.architecture.gpt import GPT
from mlot.architecture.optim import AdamW
from mlot.architecture.schedules import WarmupCosine

IGNORE = -100


def sorting_batch(rng: np.random.Generator, batch: int, length: int, digits: int):
    """(ids, targets) of shape (batch, 2*length): [x, sorted(x)], targets on the sorted half only."""
    x = rng.integers(0, digits, size=(batch, length))
    ids = np.concatenate([x, np.sort(x, axis=1)], axis=1)
    targets = np.full_like(ids, IGNORE)
    targets[:, length - 1:-1] = ids[:, length:]  # position t predicts token t+1
    return ids, targets


def sorted_accuracy(model: GPT, ids: np.ndarray, targets: np.ndarray) -> float:
    with no_grad():
        predicted = model(ids).data.argmax(axis=-1)
    scored = targets != IGNORE
    return float((predicted[scored] == targets[scored]).mean())


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--steps", type=positive_int, default=400, help="training steps (default %(default)s)")
    parser.add_argument("--length", type=int, default=6, help="digits per example, at least 2 (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and examples (default %(default)s)")
    args = parser.parse_args(argv)
    if args.length < 2:
        parser.error(f"argument --length: must be >= 2, got {args.length}")

    digits, rng = 6, np.random.default_rng(args.seed)
    model = GPT(digits, 48, 2, 4, 2 * args.length, rng=rng)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = WarmupCosine(opt, warmup_steps=20, total_steps=args.steps)
    test_ids, test_targets = sorting_batch(np.random.default_rng(args.seed + 1), 512, args.length, digits)
    print(f"sorting {args.length} digits; model of {model.num_parameters():,} parameters; "
          f"accuracy before training {sorted_accuracy(model, test_ids, test_targets):.1%}")
    bar = tqdm(range(1, args.steps + 1), desc="train", unit="step")
    for step in bar:
        ids, targets = sorting_batch(rng, 64, args.length, digits)
        opt.zero_grad()
        loss = model.loss(ids, targets)
        loss.backward()
        opt.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 50 == 0 or step == 1:
            tqdm.write(f"step {step:4d}  loss {loss.item():.4f}")
    print(f"accuracy after {args.steps} steps: {sorted_accuracy(model, test_ids, test_targets):.1%} "
          "of sorted-half tokens on held-out examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
