"""Reading and writing `tokenizer.json` in the Hugging Face `tokenizers` format (byte-level BPE).

The file holds a BPE model (vocab string -> id, merges "left right" in rank order), the
ByteLevel pre-tokenizer (GPT-2 split, add_prefix_space=False) and decoder, and the special
tokens as added tokens. HF writes token strings through GPT-2's byte -> character map (each
byte becomes one printable character, e.g. the space becomes "Ġ"), which is why a token
string never contains a space and a merge can be written as two strings joined by a space.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from mlot.architecture.atomic import atomic_write_text
from mlot.architecture.cli import UserError


class TokenizerFileError(UserError, ValueError):
    """A tokenizer.json that is unreadable or describes a tokenizer this codec cannot run."""


def _byte_characters() -> list[str]:
    """GPT-2's byte -> character map: printable Latin-1 bytes stand for themselves, the other 68
    bytes take the characters U+0100, U+0101, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    printable_set = set(printable)
    characters = []
    next_extra = 256
    for byte in range(256):
        if byte in printable_set:
            characters.append(chr(byte))
        else:
            characters.append(chr(next_extra))
            next_extra += 1
    return characters


BYTE_TO_CHAR = _byte_characters()
CHAR_TO_BYTE = {char: byte for byte, char in enumerate(BYTE_TO_CHAR)}

_PRE_TOKENIZER = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def token_string(token: bytes) -> str:
    """The vocab string HF uses for the byte string `token`."""
    return "".join(BYTE_TO_CHAR[byte] for byte in token)


def token_bytes_of(string: str) -> bytes | None:
    """Inverse of token_string; None when the string has a character outside the byte map."""
    try:
        return bytes(CHAR_TO_BYTE[char] for char in string)
    except KeyError:
        return None


@dataclass
class TokenizerSpec:
    """What a tokenizer.json defines: id -> byte string, special token -> id, and the merges in
    rank order as (left id, right id, id of the merged token)."""
    token_bytes: list[bytes]
    special_ids: dict[str, int]
    merges: list[tuple[int, int, int]]


def write_tokenizer_json(path, spec: TokenizerSpec) -> None:
    """Write spec as an HF tokenizer.json, atomically."""
    special_by_id = {token_id: content for content, token_id in spec.special_ids.items()}
    strings = [special_by_id.get(token_id) or token_string(token) for token_id, token in enumerate(spec.token_bytes)]
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": token_id, "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for token_id, content in sorted(special_by_id.items())
        ],
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZER,
        "post_processor": None,
        "decoder": _DECODER,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {string: token_id for token_id, string in enumerate(strings)},
            "merges": [f"{strings[left]} {strings[right]}" for left, right, _ in spec.merges],
        },
    }
    atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")


def _require(condition: bool, path, problem: str) -> None:
    if not condition:
        raise TokenizerFileError(f"tokenizer file {path}: {problem}")


def _check_pipeline(document: dict, path) -> None:
    """Refuse the parts of the HF pipeline this codec does not implement (they would change ids)."""
    _require(document.get("normalizer") is None, path, "a normalizer is not supported")
    pre = document.get("pre_tokenizer") or {}
    _require(pre.get("type") == "ByteLevel", path, f"pre_tokenizer must be ByteLevel, found {pre.get('type')!r}")
    _require(pre.get("use_regex", True) is True and pre.get("add_prefix_space", True) is False, path,
             "the ByteLevel pre_tokenizer must have use_regex=true and add_prefix_space=false")
    model = document.get("model") or {}
    _require(model.get("type", "BPE") == "BPE", path, f"model must be BPE, found {model.get('type')!r}")
    _require(not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"), path,
             "continuing_subword_prefix / end_of_word_suffix are not supported")
    _require(not model.get("ignore_merges") and not model.get("byte_fallback") and model.get("dropout") is None,
             path, "ignore_merges, byte_fallback and dropout are not supported")
    _require(isinstance(model.get("vocab"), dict) and isinstance(model.get("merges"), list), path,
             "model.vocab must be an object and model.merges a list")


def _merge_strings(entry, path) -> tuple[str, str]:
    """A merge entry as its two token strings ("a b" or ["a", "b"])."""
    if isinstance(entry, str):
        parts = entry.split(" ")
    else:
        parts = entry if isinstance(entry, list) else []
    _require(len(parts) == 2 and all(isinstance(p, str) for p in parts), path, f"malformed merge {entry!r}")
    return parts[0], parts[1]


def read_tokenizer_json(path) -> TokenizerSpec:
    """Parse and check an HF byte-level BPE tokenizer.json."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerFileError(f"tokenizer file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerFileError(f"tokenizer file {path} is not readable JSON: {error}") from None
    _require(isinstance(document, dict), path, "top level must be a JSON object")
    _check_pipeline(document, path)
    id_of = dict(document["model"]["vocab"])
    special_ids = {}
    for added in document.get("added_tokens") or []:
        _require(isinstance(added, dict) and isinstance(added.get("content"), str)
                 and isinstance(added.get("id"), int), path, f"malformed added token {added!r}")
        _require(added.get("special", False) is True, path,
                 f"added token {added['content']!r} is not special; only special added tokens are supported")
        id_of[added["content"]] = added["id"]
        special_ids[added["content"]] = added["id"]
    n_tokens = len(id_of)
    token_bytes: list[bytes | None] = [None] * n_tokens
    for string, token_id in id_of.items():
        _require(isinstance(token_id, int) and 0 <= token_id < n_tokens and token_bytes[token_id] is None,
                 path, f"ids must be 0..{n_tokens - 1}, each used once (token {string!r} has id {token_id!r})")
        as_bytes = string.encode("utf-8") if string in special_ids else token_bytes_of(string)
        _require(as_bytes is not None, path, f"token {string!r} is not a byte-level string")
        token_bytes[token_id] = as_bytes
    for byte in range(256):
        _require(BYTE_TO_CHAR[byte] in id_of, path, f"the vocabulary lacks the byte token for byte {byte}")
    merges = []
    for entry in document["model"]["merges"]:
        left, right = _merge_strings(entry, path)
        _require(left in id_of and right in id_of and left + right in id_of, path,
                 f"merge {left!r} + {right!r} uses a token missing from the vocabulary")
        merges.append((id_of[left], id_of[right], id_of[left + right]))
    return TokenizerSpec(token_bytes=token_bytes, special_ids=special_ids, merges=merges)
