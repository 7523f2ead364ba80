"""What the inference commands share: one-line errors, the model and sampling options, loading."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlot.architecture.config import ConfigError
from mlot.model.generation import Sampler
from mlot.architecture.checkpoint_file import CheckpointError
from mlot.training.trained_model import load_trained_model

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "latest_checkpoint.pt"


class UserError(Exception):
    """A mistake of the user's: reported as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line `error: ...` (exit 2) instead of usage + message."""

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="a training checkpoint (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="the tokenized_data folder whose tokenizer.json to use (default: the run's)")
    parser.add_argument("--memory_weights", type=Path, default=None,
                        help="memory modules fine-tuned on the checkpoint's frozen backbone (memory_weights.pt)")


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--max_new_tokens", type=positive_int, default=max_new_tokens,
                        help="tokens to generate at most (default: %(default)s)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.8,
                        help="sampling temperature; 0 is greedy (default: %(default)s)")
    parser.add_argument("--top_k", type=positive_int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--top_p", type=probability, default=None,
                        help="sample among the likeliest tokens whose probabilities sum to p (nucleus)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fresh randomness)")


def sampler_from(args) -> Sampler:
    return Sampler(args.temperature, args.top_k, args.top_p, args.seed)


def load_model(args):
    """The TrainedModel the options name; CheckpointError (one line) when it cannot be loaded."""
    if args.memory_weights is not None and not args.memory_weights.is_file():
        raise UserError(f"memory weights {args.memory_weights} do not exist")
    extra = {} if args.memory_weights is None else {"memory_weights": args.memory_weights}
    return load_trained_model(args.checkpoint, dataset=args.dataset, **extra)


def run(main, argv=None) -> int:
    """Run main(argv); a user's mistake or an unusable file becomes `error: ...` and exit code 2."""
    try:
        return main(argv)
    except (UserError, CheckpointError, ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
