"""What the inference commands share: the model and sampling options, and loading the model they name."""
from __future__ import annotations

import argparse
from pathlib import Path

from mlot.architecture.cli import existing_file, non_negative_float, positive_int, probability
from mlot.model.generation import Sampler
from mlot.training.trained_model import load_trained_model

STAGE_DIR = Path(__file__).resolve().parent
# the run train.py writes by default: in a source checkout under the repository, for an installed package
# under the current directory (train.py's --checkpoint_dir default, `checkpoints`)
DEFAULT_CHECKPOINT = (STAGE_DIR.parent if STAGE_DIR.name == "07-inference" else Path()) / "checkpoints" / \
    "latest_checkpoint.pt"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="a training checkpoint (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="the tokenized_data folder whose tokenizer.json to use (default: the run's)")
    parser.add_argument("--memory_weights", type=existing_file, default=None,
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
    extra = {} if args.memory_weights is None else {"memory_weights": args.memory_weights}
    return load_trained_model(args.checkpoint, dataset=args.dataset, **extra)
