"""Reading a corpus as a stream of documents: files and folders, split by file, blank lines or JSONL lines.

- `*.jsonl` files: one document per non-blank line, the string field `jsonl_field` of a JSON object;
- other files, split="file": the whole file is one document;
- other files, split="blank_line": each block of non-blank lines is one document.
Folders are searched recursively in sorted order, skipping hidden names (starting with a dot).
Files are read as bytes and decoded as strict UTF-8, so documents keep their exact text
(line endings included). Empty documents are skipped. Only one document is in memory at a time.
Each document carries a name saying where it came from (the file, or the file and the line its
record or block starts on), so that a held-out split can say which documents it holds.
"""
import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mlot.architecture.cli import UserError

SPLIT_MODES = ("file", "blank_line")


class CorpusError(UserError):
    """An input that cannot be read as the documents the user described."""


class Document(NamedTuple):
    name: str  # "path" (a whole file) or "path:line" (a JSONL record, a blank-line block)
    text: str


def resolve_inputs(inputs) -> list[Path]:
    """The files named by `inputs` (files or folders), in a fixed order; each must exist."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if not path.exists():
            raise CorpusError(f"input path {name} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
            files.extend(found)
        else:
            files.append(path)
    if not files:
        raise CorpusError(f"no input files found in {', '.join(map(str, inputs))}")
    return files


def _decode(data: bytes, path: Path, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}{where} is not UTF-8 text (bad byte at offset {error.start})") from None


def _jsonl_documents(path: Path, field: str) -> Iterator[Document]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, f" line {number}")
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{where} is not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or field not in record:
                raise CorpusError(f"{where} has no field {field!r} (choose the field with --jsonl_field)")
            if not isinstance(record[field], str):
                raise CorpusError(f"{where}: field {field!r} is not a string")
            yield Document(f"{path}:{number}", record[field])


def _blank_line_documents(path: Path) -> Iterator[Document]:
    block: list[str] = []
    first_line = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, f" line {number}")
            if line.strip():
                first_line = first_line if block else number
                block.append(line)
            elif block:
                yield Document(f"{path}:{first_line}", "".join(block).rstrip("\r\n"))
                block = []
    if block:
        yield Document(f"{path}:{first_line}", "".join(block).rstrip("\r\n"))


def iter_documents(files: list[Path], split: str = "file", jsonl_field: str = "text") -> Iterator[Document]:
    """The non-empty documents of `files`, in order; a whole file stays one document however long."""
    if split not in SPLIT_MODES:
        raise CorpusError(f"split mode {split!r} is not one of {', '.join(SPLIT_MODES)}")
    for path in files:
        if path.suffix == ".jsonl":
            documents = _jsonl_documents(path, jsonl_field)
        elif split == "blank_line":
            documents = _blank_line_documents(path)
        else:
            documents = iter([Document(str(path), _decode(path.read_bytes(), path))])
        for document in documents:
            if document.text:
                yield document
