"""A training corpus of memory-task documents (the memory recipe's data).

    python 03-tokenization/memory_training_corpus.py --output DIR/memory_tasks.jsonl [--documents N] [--window 64]

Each document is a memory task of `memory_tasks.py` written out with its answers: a context of
1 to MAX_WINDOWS working windows, then the question(s) answered. Trained with random span masking, the
model meets answers whose facts lie beyond its working window, so it learns to fetch them from
episodic memory. Case seeds start at TRAINING_SEED_BASE, far from the benchmark's seeds (below
10^9), so no benchmark case is trained on. Lines are {"text": ...}; the file is written atomically.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError, documented_parser, positive_int, run_command
from mlot.tokenization.memory_tasks import associative_recall_case, fact_case, passkey_case

TRAINING_SEED_BASE = 10 ** 9
KIND_WEIGHTS = {"passkey": 0.35, "associative": 0.45, "facts": 0.2}
MAX_WINDOWS = 4  # recall reaches as far back at any length (retrieval is by content), so short contexts do


def training_document(index: int, window: int, max_repeats: int = 1) -> str:
    """Document `index` of the corpus: a task case with its answers written in.

    max_repeats > 1 asks the questions again (1..max_repeats rounds, shuffled): more answers per
    document to learn from; a repeat in view can be copied, one further back must be recalled.
    """
    seed = TRAINING_SEED_BASE + index
    rng = np.random.default_rng([seed, 0])
    kind = rng.choice(list(KIND_WEIGHTS), p=list(KIND_WEIGHTS.values()))
    n_tokens = int(rng.integers(1, MAX_WINDOWS + 1)) * window
    if kind == "passkey":
        case = passkey_case(seed, float(rng.random()), n_tokens)
        questions = [(case["query"], case["answer"])]
    elif kind == "associative":
        case = associative_recall_case(seed, int(rng.integers(3, 9)), n_tokens, overwrite=bool(rng.random() < 0.3))
        questions = [case["all_questions"][i] for i in rng.permutation(len(case["all_questions"]))]
    else:
        case = fact_case(seed, int(rng.integers(1, 4)), n_tokens)
        questions = [(case["query"], case["answer"])]
    rounds = int(rng.integers(1, max_repeats + 1))
    asked = [questions[i % len(questions)] for i in rng.permutation(rounds * len(questions))] if rounds > 1 \
        else questions
    return " ".join([case["context"]] + [f"{query} {answer}." for query, answer in asked])


def write_corpus(path: Path, documents: int, window: int, max_repeats: int = 1, progress: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "w", encoding="utf-8") as out:
        for index in tqdm(range(documents), desc="documents", disable=not progress):
            out.write(json.dumps({"text": training_document(index, window, max_repeats)}) + "\n")


def main(argv=None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--output", type=Path, required=True, help="the JSONL file to write")
    parser.add_argument("--documents", type=positive_int, default=12000,
                        help="documents to write (default: %(default)s)")
    parser.add_argument("--window", type=int, default=64,
                        help="the model's working window in tokens, at least 8 (default: %(default)s)")
    parser.add_argument("--max_repeats", type=positive_int, default=1,
                        help="ask each document's questions up to this many times, shuffled (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.window < 8:
        parser.error(f"argument --window: must be >= 8, got {args.window}")
    if args.output.exists() and not args.overwrite:
        raise UserError(f"{args.output} exists; pass --overwrite to replace it")
    write_corpus(args.output, args.documents, args.window, args.max_repeats, progress=not args.no_progress)
    print(f"wrote {args.documents} documents to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
