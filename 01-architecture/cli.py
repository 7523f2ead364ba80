"""What every command shares: one error type for a user's mistake, and a parser that reports a bad
option as one `error:` line (exit 2) instead of a usage block.

Every error a user can cause by what they type or the files they name (a bad config key, a
damaged checkpoint, a missing dataset) is a `UserError` or a subclass, so `run_command` turns all
of them into one line without a traceback; a bug still shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake in what the user asked for or the files they named: one `error: ...` line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option or value is one line `error: ... (see --help)` and exit code 2."""

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def documented_parser(doc: str) -> OneLineParser:
    """The parser of a command whose module docstring is its manual: the first paragraph is the
    --help description, the rest (examples, notes) the epilog, line breaks kept."""
    summary, _, details = doc.strip().partition("\n\n")
    return OneLineParser(description=summary, epilog=details or None,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def run_command(main, argv=None) -> int:
    """main(argv), with a UserError or a file-system error reported as one line and exit code 2,
    and Ctrl-C outside a training loop (which handles it itself) as one line and exit code 130."""
    try:
        return main(argv)
    except (UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def existing_file(text: str) -> Path:
    """A path that must name a file already there (checked while parsing, so the error names the option)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text}")
    return path


def probability(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value
