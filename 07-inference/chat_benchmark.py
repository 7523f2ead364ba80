"""Chat benchmark: does the model answer, turns later, what the user told it once?

    python 07-inference/chat_benchmark.py --checkpoint checkpoints/latest_checkpoint.pt
    python 07-inference/chat_benchmark.py --checkpoint CKPT --cases 22 --report chat_report.json
    python 07-inference/chat_benchmark.py --checkpoint CKPT --memory_weights memory_weights.pt --other_turns 12

Each case is a scripted chat (`mlot.tokenization.chat_scripts`, held-out seeds: case i of --seed
S has seed S * 10^6 + i, below 10^9, where no training generator draws; kinds in turn: name,
pet, code, place, colour, job, date, object). Through the real chat machinery
(`mlot.inference.chat_session.ChatSession`) the fact turn and the --other_turns turns of small
talk are archived as scripted turns, then the question is asked and the model replies greedily
(at most 24 tokens). The reply is right when it holds every answer word of the case as a whole
word, case-insensitively. Settings, each starting from a fresh memory (the checkpoint's
semantic slots):
  same session     the turns and the question in one session;
  second session   the memory saved to a chat memory file after the other talk
                   (`memory_file.save_memory_file`), a fresh memory loaded from it, then asked;
  memory off       the same turns archived, but the model reads no memory when asked.
Chance: a uniform guess among the possible answers of each case (1 / 80 names, 1 / 20 pet
names, 1 / 9000 four-digit codes, 1 / 40 towns, 1 / 16 colours, 1 / 40 jobs, a birthday 1 / 336
or a weekday 1 / 7, 1 / 24 places), averaged over a row's cases. The header says in how many
cases part of the fact turn was still in the working window when the question came (then the
fact needs no episodic memory).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import documented_parser, existing_file, non_negative_int, positive_int, run_command
from mlot.inference.chat_session import ChatSession
from mlot.inference.memory_file import load_memory_file, model_fingerprint, save_memory_file
from mlot.tokenization.chat_scripts import KINDS, chat_script, mentions
from mlot.training.trained_model import load_trained_model

SETTINGS = {
    "same session": "fact, other talk and question in one session",
    "second session": "memory saved to a chat memory file after the other talk, loaded into a fresh memory, then asked",
    "memory off": "the same turns archived; no memory read when asked",
}
MAX_REPLY_TOKENS = 24
SEEDS = 1000                            # --seed lies in [0, SEEDS)
MAX_CASES = 10 ** 6                     # case seeds of different --seed never meet
CHANCE = "a uniform guess among each case's possible answers, averaged over the row's cases"


def case_seed(seed: int, index: int) -> int:
    """Case `index` of benchmark seed `seed`: in HELD_OUT_SEEDS for seed < SEEDS, index < MAX_CASES."""
    return seed * MAX_CASES + index


def build_cases(seed: int, n_cases: int, other_turns: int) -> list:
    """The benchmark's scripts, the kinds taken in turn."""
    return [chat_script(case_seed(seed, index), KINDS[index % len(KINDS)], other_turns) for index in range(n_cases)]


def answered(reply: str, answer_words) -> bool:
    """Every answer word in the reply as a whole word, case-insensitively."""
    return all(mentions(reply, [word]) for word in answer_words)


class ChatBenchmark:
    """Plays scripts to a model through ChatSession, each setting from a fresh memory."""

    def __init__(self, model, tokenizer, folder, max_reply_tokens: int = MAX_REPLY_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = [tokenizer.token_to_id(token) for token in tokenizer.special_tokens]
        self.max_reply_tokens = max_reply_tokens
        self.memory_file = Path(folder) / "chat_memory.pt"
        self.fingerprint = model_fingerprint(model)
        if model.memory is None or model.memory.batch != 1:
            model.reset_memory(batch_size=1)
        self.semantic = model.memory.semantic.state_dict()  # the checkpoint's slots: every setting starts from them

    def session(self, turns: int = 0) -> ChatSession:
        return ChatSession(self.model, self.tokenizer.user_id, self.tokenizer.model_id, stop_ids=self.stop_ids,
                           max_reply_tokens=self.max_reply_tokens, turns=turns)

    def user_ids(self, text: str) -> list:
        return self.tokenizer.encode(f" {text} ")  # as chat.py encodes what the user types

    def told(self, script) -> ChatSession:
        """A session on a fresh memory, the fact and the other talk archived."""
        self.model.memory = None
        self.model.reset_memory(batch_size=1)
        self.model.memory.semantic.load_state_dict(self.semantic)
        session = self.session()
        for user, reply in (script.fact_turn, *script.other_turns):
            session.archive(self.user_ids(user), self.tokenizer.encode(f" {reply}"))
        return session

    def tokens_after_fact(self, script) -> int:
        """Tokens archived between the fact turn and the question."""
        layout = self.session()
        return sum(len(layout.prompt(self.user_ids(user))) + len(self.tokenizer.encode(f" {reply}"))
                   for user, reply in script.other_turns)

    def reply(self, script, setting: str) -> str:
        """The model's reply to the script's question in `setting`."""
        session = self.told(script)
        if setting == "second session":
            save_memory_file(self.memory_file, self.model, session.turns, session.consolidator.state_dict(),
                             self.fingerprint)
            self.model.memory = None
            self.model.reset_memory(batch_size=1)
            loaded = load_memory_file(self.memory_file, self.model, self.fingerprint)
            session = self.session(loaded.turns)
            session.consolidator.load_state_dict(loaded.consolidator)
        elif setting == "memory off":
            self.model.set_memory(working=False, episodic=False, semantic=False)
        try:
            reply = session.turn(self.user_ids(script.question))
        finally:
            self.model.set_memory(working=True, episodic=True, semantic=True)
        return self.tokenizer.decode(reply, skip_special=True).strip()

    def run(self, scripts, progress: bool = True) -> list:
        """Every script in every setting: one record per case."""
        records = [{"seed": script.seed, "kind": script.kind, "fact": script.fact_turn[0],
                    "question": script.question, "answer_words": list(script.answer_words),
                    "chance": 1 / script.possible_answers, "tokens_after_fact": self.tokens_after_fact(script),
                    "replies": {}, "correct": {}} for script in scripts]
        jobs = [(script, record, setting) for script, record in zip(scripts, records) for setting in SETTINGS]
        for script, record, setting in tqdm(jobs, desc="chat benchmark", unit="chat", disable=not progress):
            text = self.reply(script, setting)
            record["replies"][setting] = text
            record["correct"][setting] = answered(text, script.answer_words)
        return records


def summarize(records: list) -> list:
    """One row per kind present, then "all": cases, chance and correct count and fraction per setting."""
    groups = [(kind, [r for r in records if r["kind"] == kind]) for kind in KINDS] + [("all", records)]
    rows = []
    for name, group in groups:
        if group:
            correct = {setting: sum(r["correct"][setting] for r in group) for setting in SETTINGS}
            rows.append({"kind": name, "cases": len(group), "chance": sum(r["chance"] for r in group) / len(group),
                         "correct": correct, "accuracy": {s: count / len(group) for s, count in correct.items()}})
    return rows


def format_table(rows: list) -> str:
    """Percent right per setting, settings as columns."""
    lines = ["kind    " + "".join(f"{setting:>16}" for setting in SETTINGS) + f"{'chance':>9}{'cases':>7}"]
    for row in rows:
        cells = "".join(f"{100 * row['accuracy'][setting]:>15.1f}%" for setting in SETTINGS)
        lines.append(f"{row['kind']:<8}{cells}{100 * row['chance']:>8.1f}%{row['cases']:>7}")
    return "\n".join(lines)


def _seed(text: str) -> int:
    seed = non_negative_int(text)
    if seed >= SEEDS:
        raise argparse.ArgumentTypeError(f"must lie in [0, {SEEDS}), got {text}")
    return seed


def _cases(text: str) -> int:
    cases = positive_int(text)
    if cases > MAX_CASES:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_CASES}, got {text}")
    return cases


def _new_file(text: str) -> Path:
    """A file to write, in a folder that exists."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path


def parse_args(argv):
    parser = documented_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (*.pt)")
    parser.add_argument("--memory_weights", type=existing_file, help="memory-only weights to load onto the checkpoint")
    parser.add_argument("--cases", type=_cases, default=110, help="chats to play, the kinds in turn (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help=f"which chats (0..{SEEDS - 1}); training data never uses them (default: %(default)s)")
    parser.add_argument("--other_turns", type=non_negative_int, default=8,
                        help="turns of small talk between the fact and the question (default: %(default)s)")
    parser.add_argument("--report", type=_new_file, help="write every case's question, answer words and replies "
                                                         "as JSON here (atomically)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    trained = load_trained_model(args.checkpoint, memory_weights=args.memory_weights, semantic_memory=True)
    scripts = build_cases(args.seed, args.cases, args.other_turns)
    with tempfile.TemporaryDirectory(prefix="mlot_chat_benchmark_") as folder:
        benchmark = ChatBenchmark(trained.model, trained.tokenizer, folder)
        records = benchmark.run(scripts, progress=not args.no_progress)
    rows = summarize(records)
    seconds = time.perf_counter() - started
    window = trained.model.config.working_cache_len
    in_window = sum(record["tokens_after_fact"] < window for record in records)
    print(f"chat benchmark of {trained.path} (step {trained.meta.get('step')}), seed {args.seed}, {args.cases} chats, "
          f"{args.other_turns} turns of other talk between fact and question")
    print(f"fact turn still in the working window ({window} tokens) when asked: {in_window} of {args.cases} chats; "
          "right: the reply holds every answer word")
    print(format_table(rows))
    print(f"({seconds:.0f} s)")
    if args.report is not None:
        report = {"checkpoint": str(trained.path), "step": trained.meta.get("step"), "seed": args.seed,
                  "cases": args.cases, "other_turns": args.other_turns, "max_reply_tokens": MAX_REPLY_TOKENS,
                  "working_window": window, "fact_in_window": in_window,
                  "memory_weights": None if args.memory_weights is None else str(args.memory_weights),
                  "seconds": round(seconds, 1), "settings": SETTINGS, "chance": CHANCE, "rows": rows,
                  "records": records}
        with atomic_output(args.report, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
