"""Generate text with a trained MLoT-Spark model, printing each piece as it is chosen.

    python 07-inference/generate.py --prompt "The old lighthouse keeper" --max_new_tokens 60
    python 07-inference/generate.py --infill "The [MASK] sat on the mat" --temperature 0

--prompt continues the text span after span (see continuation.py; a prompt longer than the
window is read into memory first); --infill fills every [MASK] of the text in order (at most
--max_new_tokens tokens each), each span seeing the ones before, and lists the spans at the end.
"""
from __future__ import annotations

import sys

import numpy as np

from mlot.architecture.cli import OneLineParser, UserError, documented_parser, run_command
from mlot.inference.cli import add_model_arguments, add_sampling_arguments, load_model, sampler_from
from mlot.inference.continuation import Continuation
from mlot.inference.streaming import TextStream
from mlot.model.generation import infill


def build_parser() -> OneLineParser:
    parser = documented_parser(__doc__)
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument("--prompt", help="text to continue")
    task.add_argument("--infill", help='text with one or more [MASK] to fill, e.g. "The [MASK] sat on the mat"')
    add_model_arguments(parser)
    add_sampling_arguments(parser, max_new_tokens=64)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    trained = load_model(args)
    if args.prompt is not None:
        continue_prompt(trained, args)
    else:
        fill_masks(trained, args)
    return 0


def continue_prompt(trained, args) -> None:
    model, tokenizer = trained.model, trained.tokenizer
    stream = TextStream(tokenizer)
    continuation = Continuation(model, tokenizer.encode(args.prompt), sampler_from(args), stop_ids=[tokenizer.eos_id])
    write(args.prompt)
    for token in continuation.tokens(args.max_new_tokens):
        write(stream.push(token))
    write(stream.finish() + "\n")


def fill_masks(trained, args) -> None:
    model, tokenizer = trained.model, trained.tokenizer
    # a blank replaces whole tokens, and a word token carries its leading space: "The [MASK] sat"
    # means "The" + " cat" + " sat", so the space before a [MASK] belongs to the span
    text = args.infill.replace(" [MASK]", "[MASK]")
    ids = np.array(tokenizer.encode(text, allow_special=True), dtype=np.int64)
    masks = np.flatnonzero(ids == tokenizer.mask_id)
    if len(masks) == 0:
        raise UserError("--infill text has no [MASK] to fill")
    window = model.config.segment_len - 1
    if len(ids) > window:
        raise UserError(f"--infill text is {len(ids)} tokens; this model's window holds {window}")
    pieces = np.split(ids, masks)  # pieces[0], then each piece opens with its [MASK]
    printer = FilledTextPrinter(tokenizer, [pieces[0]] + [piece[1:] for piece in pieces[1:]])
    spans = infill(model, ids, args.max_new_tokens, sampler_from(args), on_token=printer.token)
    printer.finish()
    write(f"spans: {[tokenizer.decode(span) for span in spans]}\n")


class FilledTextPrinter:
    """Prints a text around its blanks while they are filled: the text before blank i goes out
    once a token of blank i (or, after empty spans, of a later blank) arrives."""

    def __init__(self, tokenizer, pieces):
        self.stream = TextStream(tokenizer)
        self.pieces = pieces  # the token ids between blanks: len(pieces) = blanks + 1
        self.printed = 0      # pieces[:printed + 1] are out
        write(self.stream.push_all(pieces[0]))

    def token(self, span: int, token: int) -> None:
        self._reach(span)
        write(self.stream.push(token))

    def finish(self) -> None:
        self._reach(len(self.pieces) - 1)
        write(self.stream.finish() + "\n")

    def _reach(self, span: int) -> None:
        while self.printed < span:
            self.printed += 1
            write(self.stream.push_all(self.pieces[self.printed]))


def write(text: str) -> None:
    """Print a piece of text at once (streaming)."""
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(run_command(main))
