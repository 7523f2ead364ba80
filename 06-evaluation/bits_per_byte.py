"""Bits per byte of held-out text: the model's code length for the text under next-token
continuation, divided by the text's UTF-8 byte count, so models with different tokenizers (and
the unigram and xz baselines) are compared on the same footing.

Continuation in this blank-infilling model is Part A = prefix + [MASK] at the end, the span
generated after [SOP]. A document is cut into blocks of `max_span_len` tokens (the longest span
the model was trained on); each block is the span, and the `segment_len - max_span_len` tokens
before it are its prefix (a training segment's shape). Within a block the model is
teacher-forced: token i of the span is predicted from the prefix and span tokens 0..i-1, exactly
as decoding would, but all blocks are scored in batched forward passes. Memory is not read:
the figure measures the transformer over its window. Special tokens (<bos>, <eos>) are context,
never scored, and carry no bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mlot.architecture import no_grad
from mlot.model.infilling import make_infill_batch
from mlot.model.scoring import score_targets

LN2 = float(np.log(2.0))


@dataclass
class HeldOutText:
    """Documents as framed token ids, and which of their tokens are text."""
    documents: list          # per document int64 ids (framing included: context for scoring)
    is_text: list            # per document bool mask: the tokens scored
    text: bytes              # the text tokens' bytes, documents concatenated (what xz compresses)

    def text_tokens(self) -> np.ndarray:
        """All scored token ids, in order (what the unigram baseline scores)."""
        return np.concatenate([np.zeros(0, np.int64)] + [doc[mask] for doc, mask in zip(self.documents, self.is_text)])


@dataclass
class BitsPerByte:
    total_bits: float
    n_tokens: int
    n_bytes: int

    @property
    def bits_per_byte(self) -> float:
        return self.total_bits / self.n_bytes if self.n_bytes else float("nan")

    def to_dict(self) -> dict:
        return {"bits_per_byte": self.bits_per_byte,
                "bits_per_token": self.total_bits / self.n_tokens if self.n_tokens else float("nan"),
                "total_bits": self.total_bits, "tokens": self.n_tokens, "bytes": self.n_bytes}


def held_out_text(split, tokenizer, max_documents: int | None = None) -> HeldOutText:
    """The first `max_documents` documents (all when None) of a TokenizedSplit."""
    special = np.array(sorted(tokenizer.token_to_id(t) for t in tokenizer.special_tokens), dtype=np.int64)
    count = len(split) if max_documents is None else min(max_documents, len(split))
    documents = [np.asarray(split.document(index), dtype=np.int64) for index in range(count)]
    masks = [~np.isin(doc, special) for doc in documents]
    return HeldOutText(documents, masks, b"".join(tokenizer.decode_bytes(d[m]) for d, m in zip(documents, masks)))


def model_bits_per_byte(model, text: HeldOutText, batch_size: int = 16, progress: bool = False) -> BitsPerByte:
    """Teacher-forced continuation code length of `text`'s text tokens, in bits, over its bytes."""
    config = model.config
    span_len = min(config.max_span_len, config.segment_len - 1)
    rows = []  # (segment, (start, end) of the span in it, is_text of the span's tokens)
    for doc, mask in zip(text.documents, text.is_text):
        for start in range(1, len(doc), span_len):  # spans of up to span_len tokens cover tokens 1..
            end = min(start + span_len, len(doc))
            context = max(0, start - (config.segment_len - span_len))  # the prefix: the tokens before the span
            rows.append((doc[context:end], (start - context, end - context), mask[start:end]))
    total_bits, n_tokens = 0.0, 0
    with no_grad():
        for first in tqdm(range(0, len(rows), batch_size), desc="bits/byte", unit="batch", disable=not progress,
                          leave=False):
            group = rows[first:first + batch_size]
            batch = make_infill_batch([segment for segment, _, _ in group], [[span] for _, span, _ in group],
                                      model.special)
            scored = np.zeros_like(batch.targets, dtype=bool)  # (B, L): span tokens that are text
            for row, (_, (start, end), is_text) in enumerate(group):
                first_target = batch.prefix_len[row]  # the [SOP] position: targets are the span, then [EOP]
                scored[row, first_target:first_target + end - start] = is_text
            scores = score_targets(model, model(batch, read_memory=False), batch, where=scored)
            total_bits += float(scores.nll.sum()) / LN2
            n_tokens += scores.count
    return BitsPerByte(total_bits, n_tokens, len(text.text))
