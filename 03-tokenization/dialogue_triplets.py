"""Two-turn dialogue files: {"U1", "M1" (optional), "U2", "M2"} per JSONL line, M2 answerable only
from what U1 said (the memory and dialogue fine-tuning data, e.g. the default corpus's
epoch0_curriculum.jsonl), read with every fault named by file and line, and encoded for the model.

    triplets = read_triplets("03-tokenization/corpus/epoch0_curriculum.jsonl")
    examples = encode_triplets(tokenizer, triplets, max_tokens=model_config.segment_len, source=path)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mlot.architecture.cli import UserError
from mlot.tokenization.tokenizer import Tokenizer

NEUTRAL_ACKNOWLEDGEMENT = "Noted."  # M1 when a line gives none: it must not repeat the fact


class TripletDataError(UserError):
    """A dialogue file that cannot be used; the message names the file, the line and the fault."""


class Triplet(NamedTuple):
    line: int
    u1: str
    m1: str
    u2: str
    m2: str


class Example(NamedTuple):
    """A dialogue as token ids."""
    context: np.ndarray   # "[USER] U1 [MODEL] M1", read in pass 1
    dialogue: np.ndarray  # "[USER] U2 [MODEL] M2"
    m2_start: int         # where M2 begins in dialogue: after its last [MODEL] token


def read_triplets(path) -> list:
    """The dialogues of a JSONL file, blank lines skipped; a bad line raises TripletDataError."""
    path = Path(path)
    if not path.is_file():
        raise TripletDataError(f"dataset {path} does not exist (expected a JSONL file of "
                               "{\"U1\", \"M1\", \"U2\", \"M2\"} dialogues)")
    triplets = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.strip():
                triplets.append(_parse_line(f"{path}, line {number}", number, raw))
    if not triplets:
        raise TripletDataError(f"dataset {path} holds no dialogues")
    return triplets


def _parse_line(where: str, number: int, raw: bytes) -> Triplet:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TripletDataError(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise TripletDataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise TripletDataError(f"{where}: expected a JSON object with U1, U2, M2 (M1 optional), "
                               f"got a {type(record).__name__}")
    missing = [key for key in ("U1", "U2", "M2") if key not in record]
    if missing:
        raise TripletDataError(f"{where}: missing {', '.join(missing)}")
    for key in ("U1", "M1", "U2", "M2"):
        if key in record and not (isinstance(record[key], str) and record[key].strip()):
            raise TripletDataError(f"{where}: {key} must be a non-empty string, got {record[key]!r}")
    return Triplet(number, record["U1"], record.get("M1", NEUTRAL_ACKNOWLEDGEMENT), record["U2"], record["M2"])


def encode_triplets(tokenizer: Tokenizer, triplets, max_tokens: int, source: str = "dataset") -> list:
    """Examples of the triplets; a field holding a special token's text, or a dialogue longer
    than one segment (max_tokens), raises TripletDataError naming its line."""
    model_id = tokenizer.token_to_id("[MODEL]")
    if model_id is None or tokenizer.token_to_id("[USER]") is None:
        raise TripletDataError("the base's tokenizer has no [USER] / [MODEL] tokens")
    for triplet in triplets:
        for key, text in zip(("U1", "M1", "U2", "M2"), triplet[1:]):
            found = [token for token in tokenizer.special_tokens if token in text]
            if found:
                raise TripletDataError(f"{source}, line {triplet.line}: {key} contains the special token {found[0]}")
    contexts = tokenizer.encode_batch([f"[USER] {t.u1} [MODEL] {t.m1}" for t in triplets], allow_special=True)
    dialogues = tokenizer.encode_batch([f"[USER] {t.u2} [MODEL] {t.m2}" for t in triplets], allow_special=True)
    examples = []
    for triplet, context, dialogue in zip(triplets, contexts, dialogues):
        if len(dialogue) > max_tokens:
            raise TripletDataError(f"{source}, line {triplet.line}: U2 and M2 take {len(dialogue)} tokens, "
                                   f"more than the model's segment of {max_tokens}")
        m2_start = len(dialogue) - dialogue[::-1].index(model_id)
        examples.append(Example(np.array(context, np.int64), np.array(dialogue, np.int64), m2_start))
    return examples
