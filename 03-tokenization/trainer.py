"""Training a byte-level BPE from scratch: count the distinct words of the corpus, then learn merges.

The vocabulary starts with the special tokens (ids 0..k-1) and the 256 byte tokens; merges
are learned (train_kernels.learn_merges) until it holds `vocab_size` tokens. Counting is
streaming: texts are consumed in batches of about `batch_bytes`, so memory grows with the
number of distinct words, not with the corpus.
"""
from collections.abc import Iterable

import numpy as np

from mlot.tokenization.hf_json import TokenizerSpec
from mlot.tokenization.pretokenize import codepoint_classes
from mlot.tokenization.special_tokens import SPECIAL_TOKENS
from mlot.tokenization.tokenizer import Tokenizer
from mlot.tokenization.train_kernels import count_words, learn_merges


class WordCounter:
    """Counts of the distinct pre-split words of everything added (in order of first appearance)."""

    def __init__(self, batch_bytes: int = 1 << 23):
        self.batch_bytes = batch_bytes
        self._slots = np.full(1 << 12, -1, dtype=np.int64)
        self._entries = np.zeros((1 << 11, 4), dtype=np.int64)  # hash, key start, key length, count
        self._keys = np.zeros(1 << 14, dtype=np.uint8)
        self._fill = np.zeros(2, dtype=np.int64)  # words, key bytes used
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def add(self, text: str) -> None:
        """Count the words of one text (buffered; counted once about batch_bytes are pending)."""
        data = text.encode("utf-8")
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        lengths = np.array([len(data) for data in self._pending], dtype=np.int64)
        seg_ends = np.cumsum(lengths)
        buffer = np.frombuffer(b"".join(self._pending), dtype=np.uint8)
        self._slots, self._entries, self._keys = count_words(
            buffer, seg_ends - lengths, seg_ends, codepoint_classes(), self._slots, self._entries, self._keys,
            self._fill)
        self._pending = []
        self._pending_bytes = 0

    def words(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(key bytes uint8, key starts int64, key lengths int64, counts int64) of the distinct words."""
        self._flush()
        n_words = int(self._fill[0])
        rows = self._entries[:n_words]
        return self._keys[:int(self._fill[1])], rows[:, 1].copy(), rows[:, 2].copy(), rows[:, 3].copy()

    @property
    def n_distinct(self) -> int:
        self._flush()
        return int(self._fill[0])


def check_training_request(vocab_size: int, special_tokens: list[str]) -> None:
    """Raise ValueError, naming the problem, for a vocabulary size or special-token list training cannot honour."""
    if len(set(special_tokens)) != len(special_tokens) or not all(isinstance(s, str) and s for s in special_tokens):
        raise ValueError(f"special tokens must be distinct non-empty strings, got {special_tokens!r}")
    minimum = 256 + len(special_tokens)
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < minimum:
        raise ValueError(f"vocab_size {vocab_size} is below the minimum {minimum} "
                         f"(256 byte tokens + {len(special_tokens)} special tokens)")


def train_from_counts(counter: WordCounter, vocab_size: int, special_tokens=SPECIAL_TOKENS) -> Tokenizer:
    """A tokenizer whose merges are learned from the word counts in `counter`."""
    special_tokens = list(special_tokens)
    check_training_request(vocab_size, special_tokens)
    base_tokens = [token.encode("utf-8") for token in special_tokens] + [bytes([byte]) for byte in range(256)]
    byte_ids = np.arange(len(special_tokens), len(special_tokens) + 256, dtype=np.int32)
    lengths = np.array([len(token) for token in base_tokens], dtype=np.int64)
    token_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    token_pool = np.frombuffer(b"".join(base_tokens), dtype=np.uint8)
    keys, starts, word_lengths, counts = counter.words()
    merges = learn_merges(keys, starts, word_lengths, counts, byte_ids, token_pool, token_offsets,
                          len(special_tokens), int(vocab_size))
    token_bytes = list(base_tokens)
    for left, right, new in merges.tolist():
        if new == len(token_bytes):
            token_bytes.append(token_bytes[left] + token_bytes[right])
    special_ids = {token: token_id for token_id, token in enumerate(special_tokens)}
    return Tokenizer(TokenizerSpec(token_bytes=token_bytes, special_ids=special_ids,
                                   merges=[tuple(row) for row in merges.tolist()]))


def train(texts: Iterable[str], vocab_size: int, special_tokens=SPECIAL_TOKENS) -> Tokenizer:
    """Train a byte-level BPE on `texts` with `vocab_size` tokens in all (fewer if the corpus runs
    out of pairs). Special tokens take ids 0..k-1 and are never produced from ordinary text."""
    special_tokens = list(special_tokens)
    check_training_request(vocab_size, special_tokens)
    counter = WordCounter()
    for text in texts:
        counter.add(text)
    return train_from_counts(counter, vocab_size, special_tokens)
