"""The tokenized_data/ folder (DESIGN §4): writing it atomically and streaming, and reading it back.

    tokenizer.json                 the tokenizer (HF `tokenizers` format)
    train.bin, val.bin             token ids, flat, `dtype` from meta.json (uint16 if the vocabulary fits)
    train_docs.npy, val_docs.npy   int64 start offset of each document in the .bin file
    meta.json                      format version, vocab size, dtype, counts, special-token ids, sources

Each document is stored as <bos> text-ids <eos>, so a document i of a split spans
tokens[docs[i]:docs[i+1]] (the last one ends at the end of the file).
The writer builds everything in a hidden staging folder next to the output and renames it into
place only when complete: an interrupted run leaves the previous output untouched.
"""
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlot.architecture.atomic import atomic_write_text, fsync_path
from mlot.architecture.cli import UserError
from mlot.tokenization.tokenizer import Tokenizer

FORMAT_VERSION = 1
DOCUMENT_FORMAT = "<bos> text <eos>"
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class TokenizedDataError(UserError, ValueError):
    """A tokenized_data folder that is incomplete or inconsistent."""


class TokenizedDataWriter:
    """Streams documents' ids into a staging folder; `commit` moves it onto the output folder.

    Use as a context manager: leaving the block by an exception discards the staging folder.
    """

    def __init__(self, output: Path, tokenizer: Tokenizer, n_documents: dict[str, int], overwrite: bool):
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise TokenizedDataError("the tokenizer has no <bos>/<eos> special tokens to frame documents with")
        self.output = Path(output)
        self.tokenizer = tokenizer
        self.overwrite = overwrite
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        # made by mkdir, not tempfile.mkdtemp, so that the folder gets the umask's mode, not owner-only
        self.staging = self.output.with_name(f".{self.output.name}.partial-{secrets.token_hex(4)}")
        self.staging.mkdir()
        self._bins, self._docs = {}, {}
        try:
            for split in SPLITS:
                self._bins[split] = open(self.staging / f"{split}.bin", "wb")
                self._docs[split] = np.lib.format.open_memmap(self.staging / f"{split}_docs.npy", mode="w+",
                                                              dtype=np.int64, shape=(n_documents[split],))
        except BaseException:
            self._close()
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        self.tokens = {split: 0 for split in SPLITS}
        self.documents = {split: 0 for split in SPLITS}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self._close()
            shutil.rmtree(self.staging, ignore_errors=True)

    def add(self, split: str, ids: np.ndarray) -> None:
        """Append one document (its text ids, without framing) to `split`."""
        if self.documents[split] == self._docs[split].shape[0]:
            raise TokenizedDataError(f"more {split} documents than counted; did the input change while reading?")
        framed = np.empty(ids.shape[0] + 2, dtype=self.dtype)
        framed[0] = self.tokenizer.bos_id
        framed[1:-1] = ids
        framed[-1] = self.tokenizer.eos_id
        self._docs[split][self.documents[split]] = self.tokens[split]
        self._bins[split].write(framed.tobytes())
        self.tokens[split] += framed.shape[0]
        self.documents[split] += 1

    def _close(self) -> None:
        for handle in self._bins.values():
            handle.close()
        for docs in self._docs.values():
            docs.flush()
        self._docs = {}

    def commit(self, meta: dict) -> dict:
        """Finish the files, write tokenizer.json and meta.json, and move the folder into place."""
        for split in SPLITS:
            if self.documents[split] != self._docs[split].shape[0]:
                raise TokenizedDataError(f"fewer {split} documents than counted; did the input change while reading?")
            self._bins[split].flush()
            os.fsync(self._bins[split].fileno())
        self._close()
        self.tokenizer.save(self.staging / "tokenizer.json")
        meta = {
            "format_version": FORMAT_VERSION,
            "vocab_size": self.tokenizer.vocab_size,
            "dtype": self.dtype.name,
            "document_format": DOCUMENT_FORMAT,
            "special_tokens": {token: self.tokenizer.token_to_id(token) for token in self.tokenizer.special_tokens},
            **{split: {"tokens": self.tokens[split], "documents": self.documents[split]} for split in SPLITS},
            **meta,
        }
        atomic_write_text(self.staging / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        for split in SPLITS:
            fsync_path(self.staging / f"{split}_docs.npy")
        fsync_path(self.staging)
        self._swap_into_place()
        return meta

    def _swap_into_place(self) -> None:
        old = None
        if self.output.exists():
            if any(self.output.iterdir()) and not self.overwrite:
                raise TokenizedDataError(f"output folder {self.output} already holds data")
            old = self.output.with_name(f".{self.output.name}.old-{os.getpid()}")
            os.replace(self.output, old)
        os.replace(self.staging, self.output)
        fsync_path(self.output.parent)
        if old is not None:
            shutil.rmtree(old)


@dataclass
class TokenizedSplit:
    """One split: the ids (read-only memmap) and each document's start offset."""
    tokens: np.ndarray
    doc_starts: np.ndarray

    def __len__(self) -> int:
        return self.doc_starts.shape[0]

    def document(self, index: int) -> np.ndarray:
        """Ids of document `index`, framing tokens included."""
        end = self.doc_starts[index + 1] if index + 1 < len(self) else self.tokens.shape[0]
        return self.tokens[self.doc_starts[index]:end]


@dataclass
class TokenizedData:
    """A tokenized_data folder, checked on load: meta, tokenizer path, and both splits."""
    folder: Path
    meta: dict
    train: TokenizedSplit
    val: TokenizedSplit

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / "tokenizer.json"

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(self.tokenizer_path)

    @classmethod
    def load(cls, folder) -> "TokenizedData":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TokenizedDataError(f"{folder}/meta.json is missing or unreadable: {error}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise TokenizedDataError(f"{folder}/meta.json has format_version {meta.get('format_version')!r}, "
                                     f"expected {FORMAT_VERSION}")
        splits = {split: cls._load_split(folder, split, meta) for split in SPLITS}
        return cls(folder=folder, meta=meta, **splits)

    @staticmethod
    def _load_split(folder: Path, split: str, meta: dict) -> TokenizedSplit:
        dtype = np.dtype(meta["dtype"])
        n_tokens, n_docs = meta[split]["tokens"], meta[split]["documents"]
        bin_path = folder / f"{split}.bin"
        if not bin_path.exists() or bin_path.stat().st_size != n_tokens * dtype.itemsize:
            raise TokenizedDataError(f"{bin_path} is missing or does not hold {n_tokens} {dtype.name} tokens")
        tokens = (np.memmap(bin_path, dtype=dtype, mode="r", shape=(n_tokens,)) if n_tokens
                  else np.zeros(0, dtype=dtype))
        doc_starts = np.load(folder / f"{split}_docs.npy", allow_pickle=False)
        if doc_starts.shape != (n_docs,) or (n_docs and (doc_starts[0] != 0 or np.any(np.diff(doc_starts) <= 0)
                                                           or doc_starts[-1] >= n_tokens)):
            raise TokenizedDataError(f"{folder}/{split}_docs.npy does not hold {n_docs} increasing offsets")
        return TokenizedSplit(tokens=tokens, doc_starts=doc_starts)
