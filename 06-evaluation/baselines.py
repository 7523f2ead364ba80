"""Reference code lengths for the same held-out text the model is scored on (bits per byte):

  unigram  each token costs -log2 p(token), p fitted on the train split's tokens with add-one
           (Laplace) smoothing over the whole vocabulary: p(t) = (count(t) + 1) / (N + V).
           What a model knowing only token frequencies achieves with this tokenizer.
  xz       the LZMA compressor at its strongest setting (preset 9 | PRESET_EXTREME), .xz
           container included: 8 * compressed bytes / text bytes. A general-purpose compressor
           that sees the whole held-out text at once.
"""
from __future__ import annotations

import lzma

import numpy as np

XZ_PRESET = 9 | lzma.PRESET_EXTREME


def unigram_bits_per_byte(train_tokens: np.ndarray, vocab_size: int, text_tokens: np.ndarray, n_bytes: int) -> dict:
    """Code length of text_tokens under the add-one smoothed unigram of train_tokens, over n_bytes."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    if counts.shape[0] != vocab_size:
        raise ValueError(f"unigram: token ids reach {counts.shape[0] - 1}, beyond a vocabulary of {vocab_size}")
    log2_probs = np.log2(counts + 1.0) - np.log2(counts.sum() + vocab_size)  # (V,)
    total_bits = float(-log2_probs[np.asarray(text_tokens, dtype=np.int64)].sum())
    return {"bits_per_byte": total_bits / n_bytes if n_bytes else float("nan"), "total_bits": total_bits,
            "tokens": int(len(text_tokens)), "bytes": int(n_bytes)}


def xz_bits_per_byte(text: bytes) -> dict:
    """Compressed size of `text` with xz at its strongest preset, in bits per input byte."""
    compressed = len(lzma.compress(text, preset=XZ_PRESET))
    return {"bits_per_byte": 8.0 * compressed / len(text) if text else float("nan"),
            "compressed_bytes": compressed, "bytes": len(text)}
