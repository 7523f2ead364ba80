"""Memory-aware batching: `batch_size` rows each read one document segment by segment.

A step takes the next segment of every row, so a row's memory holds its own document's past.
When a row's document ends, the row takes the next document of the epoch order. The order is
shuffled, then sorted by length within blocks of `batch_size * BUCKET_BLOCKS` documents (length
buckets): rows read documents of similar segment counts side by side, so their documents end
at about the same step and few rows idle or reset out of step. The position is a handful of
integer arrays, saved in checkpoints, and global (not tied to the number of rows that read it).

Long documents (books): a row leaves its document after the curriculum's segments per document,
and by default the next visit starts it again from the beginning, so the rest of a book would
never be read. With `window_tokens` > 0 a document appears in each epoch's order once per
started window of that many tokens, and each visit goes on from where the last one stopped
(from the start again after its end): every token is read about once per epoch, a long book as
often per token as a short one. (A document two rows take at once, at an epoch boundary of a
corpus with few documents, is read from the same place by both.)

Vocabulary rarity, the curriculum's last difficulty axis, is measured on the token stream
itself: a document's rarity is the mean self-information -log p(token) of its tokens under the
corpus's unigram distribution, and its level (1..n) is its rarity quantile (by rank). Early phases read
only the commoner documents.
"""
from __future__ import annotations

import numpy as np

from mlot.training.training_loop import stream_rng

BUCKET_BLOCKS = 8


def rarity_levels(tokens: np.ndarray, doc_starts: np.ndarray, n_levels: int) -> np.ndarray:
    """(documents,) int in 1..n_levels: the quantile of each document's mean token self-information."""
    ids = np.asarray(tokens, dtype=np.int64)
    counts = np.bincount(ids)
    information = -np.log(counts / counts.sum(), where=counts > 0, out=np.zeros(len(counts)))
    lengths = np.diff(np.append(doc_starts, len(ids)))
    rarity = np.add.reduceat(information[ids], doc_starts) / lengths
    levels = np.empty(len(rarity), dtype=np.int64)
    levels[np.argsort(rarity, kind="stable")] = 1 + (np.arange(len(rarity)) * n_levels) // len(rarity)
    return levels  # by rank, so level 1 is never empty


class DocumentStream:
    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, batch_size: int, seed: int, n_levels: int = 1,
                 window_tokens: int = 0):
        if len(doc_starts) == 0:
            raise ValueError("the dataset has no documents")
        self.tokens, self.batch_size, self.seed = tokens, batch_size, seed
        self.doc_starts = np.asarray(doc_starts, dtype=np.int64)
        self.doc_ends = np.append(self.doc_starts[1:], len(tokens))
        self.doc_levels = rarity_levels(tokens, self.doc_starts, n_levels)
        lengths = self.doc_ends - self.doc_starts
        self.window_tokens = window_tokens
        self.visits = -(-lengths // window_tokens) if window_tokens else np.ones_like(lengths)  # per epoch
        self.visit_lengths = np.minimum(lengths, window_tokens) if window_tokens else lengths
        self.doc_resume = np.zeros(len(lengths), dtype=np.int64)  # where the next visit starts (window_tokens > 0)
        self.epoch = 0
        self.order = self._epoch_order(0)
        self.next_index = 0                                      # next position in `order`
        self.row_doc = np.full(batch_size, -1, dtype=np.int64)   # document each row reads
        self.row_offset = np.zeros(batch_size, dtype=np.int64)   # tokens of it already read
        self.row_segment = np.zeros(batch_size, dtype=np.int64)  # segments of it already read

    def _epoch_order(self, epoch: int) -> np.ndarray:
        order = stream_rng(self.seed, "data_order", epoch).permutation(np.repeat(np.arange(len(self.visits)),
                                                                                 self.visits))
        lengths = self.visit_lengths[order]
        block = self.batch_size * BUCKET_BLOCKS
        for start in range(0, len(order), block):
            part = slice(start, start + block)
            order[part] = order[part][np.argsort(lengths[part], kind="stable")]
        return order

    def _take_document(self, max_level: int | None) -> int:
        """The next document of the epoch order at or below max_level (documents above it are passed over)."""
        while True:
            if self.next_index == len(self.order):
                self.epoch += 1
                self.order = self._epoch_order(self.epoch)
                self.next_index = 0
            self.next_index += 1
            doc = int(self.order[self.next_index - 1])
            if max_level is None or self.doc_levels[doc] <= max_level:
                return doc

    def next_segments(self, segment_len: int, max_segments: int | None = None, max_level: int | None = None):
        """Each row's next segment; rows whose document ended (or reached max_segments) first take a new
        one, of rarity level at most max_level. Returns (segments: list of int64 arrays, new_document:
        (B,) bool, the rows that started a new document with this segment, doc_ids: (B,) int64)."""
        new_document, segments = self.ending(max_segments) | (self.row_doc < 0), []
        for row in range(self.batch_size):
            if new_document[row]:
                self._leave_document(row)
                doc = self._take_document(max_level)
                self.row_doc[row], self.row_offset[row], self.row_segment[row] = doc, self.doc_resume[doc], 0
            start = self.doc_starts[self.row_doc[row]] + self.row_offset[row]
            end = min(start + segment_len, self.doc_ends[self.row_doc[row]])
            segments.append(np.asarray(self.tokens[start:end], dtype=np.int64))
            self.row_offset[row] += end - start
            self.row_segment[row] += 1
        return segments, new_document, self.row_doc.copy()

    def _leave_document(self, row: int) -> None:
        """With windows, remember where the row stopped in its document (0 once it reached the end)."""
        doc = self.row_doc[row]
        if self.window_tokens and doc >= 0:
            stopped = self.doc_starts[doc] + self.row_offset[row]
            self.doc_resume[doc] = self.row_offset[row] if stopped < self.doc_ends[doc] else 0

    def ending(self, max_segments: int | None = None) -> np.ndarray:
        """(B,) bool: rows whose document has no further segment to read."""
        at_end = self.doc_starts[self.row_doc] + self.row_offset >= self.doc_ends[self.row_doc]
        if max_segments is not None:
            at_end |= self.row_segment >= max_segments
        return at_end & (self.row_doc >= 0)

    def state_dict(self) -> dict:
        return {"epoch": np.array(self.epoch), "next_index": np.array(self.next_index), "row_doc": self.row_doc.copy(),
                "row_offset": self.row_offset.copy(), "row_segment": self.row_segment.copy(),
                "doc_resume": self.doc_resume.copy()}

    def load_state_dict(self, state: dict) -> None:
        if state["row_doc"].shape != (self.batch_size,):
            raise ValueError(f"data position saved for {len(state['row_doc'])} rows, this run has {self.batch_size}")
        self.epoch, self.next_index = int(state["epoch"]), int(state["next_index"])
        self.order = self._epoch_order(self.epoch)
        for name in ("row_doc", "row_offset", "row_segment"):
            setattr(self, name, np.array(state[name], dtype=np.int64))
        # checkpoints written before windows existed hold no doc_resume: every document at its start
        self.doc_resume = np.array(state.get("doc_resume", np.zeros_like(self.doc_resume)), dtype=np.int64)
