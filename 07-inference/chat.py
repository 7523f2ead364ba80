"""Chat with a trained MLoT-Spark model; its memory carries the conversation, across sessions too.

    python 07-inference/chat.py --memory_file chat_memory.pt
    printf 'My name is Ann.\\nWhat is my name?\\n/memory\\n' | python 07-inference/chat.py

Each turn "[USER] text [MODEL] reply": the user's text is the query; the model reads it with
its working cache (latest turns) and the episodic entries and semantic slots it retrieves,
writes the reply as it comes, then archives the turn in memory (chat_session.py). Commands:
/memory lists what is stored with its scores, /forget clears the memory (and the file), /exit
ends (so does end of input). With --memory_file the memory is loaded at start (verified) and
saved after every turn and at exit (atomically). Standard input may be a pipe: no prompts
are printed then, one "model> " line per turn.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mlot.inference.chat_session import ChatSession
from mlot.architecture.cli import OneLineParser, documented_parser, run_command
from mlot.inference.cli import add_model_arguments, add_sampling_arguments, load_model, sampler_from
from mlot.inference.memory_file import load_memory_file, model_fingerprint, save_memory_file
from mlot.inference.memory_listing import describe_memory
from mlot.inference.streaming import TextStream

COMMANDS = "/memory /forget /exit"


def build_parser() -> OneLineParser:
    parser = documented_parser(__doc__)
    add_model_arguments(parser)
    parser.add_argument("--memory_file", type=Path, default=None,
                        help="keep the memory here between sessions (created when missing)")
    add_sampling_arguments(parser, max_new_tokens=48)
    return parser


class ChatApp:
    """The text front end of a ChatSession: lines in, streamed replies out, memory file kept."""

    def __init__(self, trained, args):
        self.model, self.tokenizer = trained.model, trained.tokenizer
        special = [self.tokenizer.token_to_id(token) for token in self.tokenizer.special_tokens]
        self.session = ChatSession(self.model, self.tokenizer.user_id, self.tokenizer.model_id, stop_ids=special,
                                   sampler=sampler_from(args), max_reply_tokens=args.max_new_tokens)
        self.memory_file = args.memory_file
        self.fingerprint = model_fingerprint(self.model)
        if self.memory_file is not None and self.memory_file.exists():
            self._load()

    def _load(self) -> None:
        loaded = load_memory_file(self.memory_file, self.model, self.fingerprint)
        self.session.turns = loaded.turns
        if loaded.consolidator is not None:
            self.session.consolidator.load_state_dict(loaded.consolidator)
        if not loaded.same_model:
            print(f"warning: {self.memory_file} was written by a model with other weights; "
                  "its memories may read poorly", file=sys.stderr)
        print(f"memory: {loaded.turns} earlier turns from {self.memory_file}", file=sys.stderr)

    def save(self) -> None:
        if self.memory_file is not None:
            save_memory_file(self.memory_file, self.model, self.session.turns,
                             self.session.consolidator.state_dict(), self.fingerprint)

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the chat should end."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("/"):
            return self._command(text)
        stream = TextStream(self.tokenizer)
        _write("model> ")
        self.session.turn(self.tokenizer.encode(f" {text} "), on_token=lambda token: _write(stream.push(token)))
        _write(stream.finish() + "\n")
        self.save()
        return True

    def _command(self, command: str) -> bool:
        if command == "/exit":
            return False
        if command == "/memory":
            print(describe_memory(self.model, self.tokenizer))
        elif command == "/forget":
            self.session.forget()
            self.save()
            print("memory cleared" + (f" (and {self.memory_file})" if self.memory_file else ""))
        else:
            print(f"unknown command {command} (commands: {COMMANDS})")
        return True


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _lines(interactive: bool):
    """Input lines: prompted with "you> " at a terminal, read plainly from a pipe; ends at EOF."""
    if not interactive:
        yield from sys.stdin
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    app = ChatApp(load_model(args), args)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.checkpoint} (commands: {COMMANDS})", file=sys.stderr)
    try:
        for line in _lines(interactive):
            if not app.handle(line):
                break
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        app.save()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
