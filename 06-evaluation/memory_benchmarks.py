"""Synthetic memory benchmarks, exactly scored, each in three memory settings from the same run.

    python 06-evaluation/memory_benchmarks.py --checkpoint CKPT [--seed S] [--cases N] [--report FILE.json]
                                              [--memory_weights FILE]

Tasks (`memory_tasks.py`, cases drawn from --seed): passkey retrieval at depths 0 %..100 % of
contexts 1x..16x the working window (model.config.working_cache_len tokens); multi-query
associative recall with 4 and 8 pairs (those that fit one segment with the question; at the
start, the question after filler) and its overwrite variant (the newest value must win);
bAbI-style questions needing 1, 2 or 3 supporting facts; the first associative row's cases
again across sessions (the memory after reading is saved to disk, loaded into a fresh memory,
and only then is the question asked).

Protocol (`recall.score_recall`): reset memory, read the context, fill `query [MASK]` greedily,
exact match of the stripped span. Settings (`model.set_memory`, for reading and writing):
  memory off           nothing read: no working cache, no episodic entries, no semantic slots
  episodic only        working cache + episodic store
  episodic + semantic  everything, with the semantic slots the checkpoint consolidated in training
and the upper bound: the same case with a haystack short enough that context and query fit
one segment, read directly (no memory needed). Each setting of a row scores the same cases.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError, documented_parser, existing_file, positive_int
from mlot.tokenization.memory_tasks import NUMBERS, PLACES, associative_recall_case, fact_case, passkey_case
from mlot.evaluation.recall import score_recall
from mlot.architecture.checkpoint_file import load_checkpoint, save_arrays
from mlot.training.trained_model import load_trained_model

SETTINGS = {
    "memory off": dict(working=False, episodic=False, semantic=False),
    "episodic only": dict(working=True, episodic=True, semantic=False),
    "episodic + semantic": dict(working=True, episodic=True, semantic=True),
}
UPPER_BOUND = "upper bound"
LENGTHS = (1, 2, 4, 8, 16)          # passkey context lengths, in working windows
DEPTHS = tuple(i / 10 for i in range(11))
RECALL_WINDOWS = 4                  # context length of the other tasks, in working windows
MAX_SPAN_TOKENS = 8
MAX_CASES = 10 ** 4                 # case seeds of different rows must not meet


@dataclass
class Row:
    """One table row: its cases and their upper-bound twins (same facts, short haystack)."""
    name: str
    cases: list
    upper: list
    chance: float                 # exact match of guessing uniformly among the possible answers
    cross_session: bool = False
    results: dict = field(default_factory=dict)   # setting -> RecallResult.to_dict()


def case_seed(seed: int, task: int, index: int) -> int:
    """Benchmark case seeds stay below 10^9; the training corpus starts at 10^9."""
    return (seed % 1000) * 10 ** 6 + task * 10 ** 4 + index


def build_rows(seed: int, n_cases: int, window: int, segment_len: int, count_tokens) -> list[Row]:
    """Every row's cases. `window` sizes the contexts; `segment_len` bounds the upper-bound text."""
    def drawn(task, make, context_tokens=RECALL_WINDOWS * window):
        """n_cases cases `make(seed, index, haystack tokens)`, and their twins with a haystack that
        leaves room for the question and the [MASK] in one segment, read directly."""
        cases, uppers = [], []
        for i in range(n_cases):
            s = case_seed(seed, task, i)
            cases.append(make(s, i, context_tokens))
            short = make(s, i, max(segment_len - 2 - count_tokens(" " + cases[-1]["query"]), 1))
            uppers.append({"context": "", "query": f"{short['context']} {short['query']}", "answer": short["answer"],
                           "kind": short.get("kind", "all")})
        return cases, uppers

    def passkey(s, i, tokens):
        depth = DEPTHS[i % len(DEPTHS)]
        return {**passkey_case(s, depth, tokens, count_tokens), "kind": f"depth {round(depth * 100)}%"}

    def associative(pairs, overwrite):
        return lambda s, i, tokens: associative_recall_case(s, pairs, tokens, overwrite, count_tokens)

    def facts(k):
        return lambda s, i, tokens: fact_case(s, k, tokens, count_tokens=count_tokens)

    most_pairs = min(max((segment_len - 16) // 10, 2), 8)   # the pairs and a question fit one segment
    pair_counts = [n for n in (4, 8) if n <= most_pairs] or [most_pairs]
    n_changed_pairs = min(max((segment_len - 16) // 16, 2), 4)
    rows = [Row(f"passkey {length}x", *drawn(task, passkey, length * window), 1 / len(NUMBERS))
            for task, length in enumerate(LENGTHS)]
    rows += [Row(f"associative recall ({n} pairs)", *drawn(10 + 2 * index, associative(n, False)), 1 / len(NUMBERS))
             for index, n in enumerate(pair_counts)]
    rows.append(Row("associative overwrite", *drawn(11, associative(n_changed_pairs, True)), 1 / len(NUMBERS)))
    rows += [Row(f"facts, {k} supporting", *drawn(20 + k, facts(k)), 1 / len(PLACES)) for k in (1, 2, 3)]
    # the first associative row's very cases, the memory saved to disk and loaded between reading and asking
    rows.append(Row(f"cross-session recall ({pair_counts[0]} pairs)", *drawn(10, associative(pair_counts[0], False)),
                    1 / len(NUMBERS), cross_session=True))
    return rows


def save_and_reload_memory(model, folder: Path) -> None:
    """End the session: write the memory to a checkpoint file, start a fresh memory, load it back."""
    path = save_arrays(Path(folder) / "session_memory.pt", model.memory.state_dict())
    batch = model.memory.batch
    model.memory = None
    model.reset_memory(batch_size=batch)
    model.memory.load_state_dict(load_checkpoint(path).arrays)


class SessionSplit:
    """The model as score_recall sees it, with a session boundary between reading and asking."""

    def __init__(self, model, folder: Path):
        self.model, self.folder = model, folder

    def __getattr__(self, name):  # reset_memory, infill: the model's own
        return getattr(self.model, name)

    def read_document(self, token_ids) -> None:
        self.model.read_document(token_ids)
        save_and_reload_memory(self.model, self.folder)


def run_rows(model, tokenizer, rows: list[Row], progress: bool = True) -> None:
    """Score every row in every setting and the upper bound; fills row.results. Each (row, setting)
    starts from the semantic slots model.memory holds now (reading updates their usage statistics,
    which must not leak from one setting into the next)."""
    model.reset_memory(batch_size=1)
    semantic = model.memory.semantic.state_dict()
    with tempfile.TemporaryDirectory(prefix="mlot_sessions_") as folder:
        session_model = SessionSplit(model, Path(folder))
        jobs = [(row, name) for row in rows for name in (*SETTINGS, UPPER_BOUND)]
        for row, name in tqdm(jobs, desc="memory benchmarks", unit="row", disable=not progress):
            model.reset_memory(batch_size=1)
            model.memory.semantic.load_state_dict(semantic)
            model.set_memory(**SETTINGS.get(name, SETTINGS["episodic + semantic"]))
            reader = session_model if row.cross_session and name != UPPER_BOUND else model
            cases = row.upper if name == UPPER_BOUND else row.cases
            row.results[name] = score_recall(reader, tokenizer, cases, MAX_SPAN_TOKENS).to_dict()
    model.set_memory(**SETTINGS["episodic + semantic"])


def format_table(rows: list[Row]) -> str:
    """Exact match in percent, settings as columns."""
    columns = (*SETTINGS, UPPER_BOUND)
    width = max(len(row.name) for row in rows) + 2
    lines = ["task".ljust(width) + "".join(f"{name:>21}" for name in columns) + f"{'chance':>9}{'cases':>7}"]
    for row in rows:
        cells = "".join(f"{100 * row.results[name]['exact_match']:>20.1f}%" for name in columns)
        lines.append(row.name.ljust(width) + cells + f"{100 * row.chance:>8.1f}%{len(row.cases):>7}")
    return "\n".join(lines)


def report(rows: list[Row], meta: dict) -> dict:
    return {**meta, "settings": {**{k: dict(v) for k, v in SETTINGS.items()}, UPPER_BOUND: "short context in window"},
            "rows": [{"task": row.name, "cases": len(row.cases), "chance": row.chance, "results": row.results}
                     for row in rows]}


def parse_args(argv):
    parser = documented_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (*.pt)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which cases (0..999); training data never uses them (default: %(default)s)")
    parser.add_argument("--cases", type=positive_int, default=22, help=f"cases per row, at most {MAX_CASES} "
                        "(passkey depths cycle through them; default: %(default)s)")
    parser.add_argument("--report", type=Path, help="write the full results as JSON here (atomically)")
    parser.add_argument("--memory_weights", type=existing_file, help="memory-only weights to load onto the checkpoint")
    parser.add_argument("--dataset", type=Path, help="the tokenized_data folder with the tokenizer "
                                                     "(default: the one the checkpoint was trained on)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.cases > MAX_CASES:
        parser.error(f"argument --cases: must be <= {MAX_CASES}, got {args.cases}")
    if not 0 <= args.seed < 1000:
        parser.error(f"argument --seed: must lie in [0, 1000), got {args.seed}")
    if args.report is not None and not args.report.parent.is_dir():
        parser.error(f"argument --report: folder {args.report.parent} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        trained = load_trained_model(args.checkpoint, dataset=args.dataset, memory_weights=args.memory_weights,
                                     semantic_memory=True)
    except (UserError, OSError, ValueError) as error:  # CheckpointError is a UserError
        print(f"error: {error}", file=sys.stderr)
        return 2
    model, tokenizer, config = trained.model, trained.tokenizer, trained.model.config
    rows = build_rows(args.seed, args.cases, config.working_cache_len, config.segment_len,
                      lambda text: len(tokenizer.encode(text)))
    run_rows(model, tokenizer, rows, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    print(f"memory benchmarks of {trained.path} (step {trained.meta.get('step')}), seed {args.seed}, "
          f"working window {config.working_cache_len} tokens; exact match:")
    print(format_table(rows))
    print(f"({seconds:.0f} s)")
    if args.report is not None:
        meta = {"checkpoint": str(trained.path), "step": trained.meta.get("step"), "seed": args.seed,
                "cases": args.cases, "working_window": config.working_cache_len,
                "memory_weights": None if args.memory_weights is None else str(args.memory_weights),
                "seconds": round(seconds, 1)}
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            json.dump(report(rows, meta), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
