"""The byte-level BPE codec: text <-> token ids, and its tokenizer.json in the HF `tokenizers` format.

Every string is encoded as UTF-8 bytes, so any text (and, through `encode_bytes`, any byte
string) round-trips exactly. Ids agree with HF `tokenizers` loading the same file: the same
pre-split (see pretokenize.py), the same merge order, and special tokens matched in the text
only when asked (`allow_special=True`, which is what HF always does).
"""
import re
from pathlib import Path

import numpy as np

from mlot.tokenization.bpe_kernels import build_merge_table, encode_segments, gather_token_bytes
from mlot.tokenization.hashing import table_capacity
from mlot.tokenization.hf_json import TokenizerSpec, read_tokenizer_json, token_string, write_tokenizer_json
from mlot.tokenization.pretokenize import codepoint_classes
from mlot.tokenization.special_tokens import SPECIAL_TOKEN_ATTRIBUTES


class _WordCache:
    """Bounded map word bytes -> ids, updated in place by the encode kernel (layout in bpe_kernels)."""

    def __init__(self, max_words: int = 1 << 16):
        self.slots = np.full(2 * max_words, -1, dtype=np.int64)
        self.entries = np.zeros((max_words, 5), dtype=np.int64)  # hash, key start, key len, ids start, ids len
        self.keys = np.zeros(24 * max_words, dtype=np.uint8)
        self.ids = np.zeros(6 * max_words, dtype=np.int32)
        self.fill = np.zeros(3, dtype=np.int64)

    def arrays(self):
        """The arrays in the order encode_segments takes them."""
        return self.slots, self.entries, self.keys, self.ids, self.fill


class Tokenizer:
    """Byte-level BPE tokenizer: `encode`/`decode`, `save`/`from_file`, special-token ids as attributes.

    Attributes pad_id, bos_id, eos_id, mask_id, sep_id, sop_id, eop_id, user_id, model_id hold
    the ids of SPECIAL_TOKENS (None if a loaded tokenizer lacks one). Not safe to share across
    threads that run in parallel (calls hold the GIL, so plain threading is fine).
    """

    def __init__(self, spec: TokenizerSpec):
        self._spec = spec
        self._special_ids = dict(spec.special_ids)
        special_set = set(self._special_ids.values())
        self._id_of_string = {token_string(token): token_id for token_id, token in enumerate(spec.token_bytes)
                              if token_id not in special_set}
        self._id_of_string.update(self._special_ids)
        id_of_bytes = {token: token_id for token_id, token in enumerate(spec.token_bytes)
                       if token_id not in special_set}
        self._byte_ids = np.array([id_of_bytes[bytes([byte])] for byte in range(256)], dtype=np.int32)
        merges = np.array(spec.merges, dtype=np.int32).reshape(-1, 3)  # (n_merges, 3): left, right, new
        self._merge_table = build_merge_table(merges[:, 0].copy(), merges[:, 1].copy(), merges[:, 2].copy(),
                                              table_capacity(len(merges)))
        self._new_by_rank = merges[:, 2].copy()
        lengths = np.array([len(token) for token in spec.token_bytes], dtype=np.int64)
        self._token_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._token_pool = np.frombuffer(b"".join(spec.token_bytes), dtype=np.uint8)
        self._keep_all = np.ones(len(spec.token_bytes), dtype=np.bool_)
        self._keep_ordinary = self._keep_all.copy()
        self._keep_ordinary[list(special_set)] = False
        special_bytes = sorted((content.encode("utf-8") for content in self._special_ids), key=len, reverse=True)
        # alternatives longest first: the regex then finds HF's leftmost-longest match
        self._special_pattern = re.compile(b"|".join(map(re.escape, special_bytes))) if special_bytes else None
        self._special_id_of_bytes = {content.encode("utf-8"): token_id for content, token_id in self._special_ids.items()}
        self._cache = None
        for attribute, content in SPECIAL_TOKEN_ATTRIBUTES.items():
            setattr(self, attribute, self._special_ids.get(content))

    # ---- vocabulary -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._spec.token_bytes)

    @property
    def special_tokens(self) -> list[str]:
        """Special token strings in id order."""
        return sorted(self._special_ids, key=self._special_ids.get)

    @property
    def merges(self) -> list[tuple[int, int, int]]:
        """(left id, right id, merged id) in rank order."""
        return list(self._spec.merges)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string as tokenizer.json writes it (special content, or byte-level form like 'Ġthe')."""
        return self._id_of_string.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of an id (inverse of token_to_id); None outside the vocabulary."""
        if not 0 <= token_id < self.vocab_size:
            return None
        for content, special_id in self._special_ids.items():
            if special_id == token_id:
                return content
        return token_string(self._spec.token_bytes[token_id])

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 text)."""
        return self._spec.token_bytes[token_id]

    # ---- encoding ---------------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`. Special-token strings in the text are ordinary text unless allow_special."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__} (use encode_bytes for bytes)")
        return self.encode_batch([text], allow_special)[0]

    def encode_batch(self, texts, allow_special: bool = False) -> list[list[int]]:
        """encode() of each text, in one kernel call."""
        ids, ends = self.encode_flat(texts, allow_special)
        starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
        return [ids[start:end].tolist() for start, end in zip(starts.tolist(), ends.tolist())]

    def encode_flat(self, texts, allow_special: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids concatenated: (ids int32 (n_ids,), ends int64 (n_texts,)), text i owning
        ids[ends[i-1]:ends[i]]. The bulk form used for datasets."""
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode expects str; item {index} is {type(text).__name__}")
        encoded = [text.encode("utf-8") for text in texts]
        if allow_special and self._special_pattern is not None:
            return self._encode_pieces(encoded)
        lengths = np.array([len(data) for data in encoded], dtype=np.int64)
        seg_ends = np.cumsum(lengths)
        return self._run(b"".join(encoded), seg_ends - lengths, seg_ends, np.full(len(encoded), -1, np.int64))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of an arbitrary byte string (invalid UTF-8 included); no special-token matching."""
        data = bytes(data)
        ids, _ = self._run(data, np.zeros(1, np.int64), np.array([len(data)], np.int64), np.full(1, -1, np.int64))
        return ids.tolist()

    def _encode_pieces(self, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """encode_flat with special tokens matched: each text cut into plain pieces and special ids."""
        seg_starts, seg_ends, seg_special, last_segment = [], [], [], []
        offset = 0
        for data in encoded:
            cursor = 0
            for match in self._special_pattern.finditer(data):
                seg_starts.append(offset + cursor)
                seg_ends.append(offset + match.start())
                seg_special.append(-1)
                seg_starts.append(0)
                seg_ends.append(0)
                seg_special.append(self._special_id_of_bytes[match.group()])
                cursor = match.end()
            seg_starts.append(offset + cursor)
            seg_ends.append(offset + len(data))
            seg_special.append(-1)
            last_segment.append(len(seg_special) - 1)
            offset += len(data)
        ids, seg_id_ends = self._run(b"".join(encoded), np.array(seg_starts, np.int64),
                                     np.array(seg_ends, np.int64), np.array(seg_special, np.int64))
        return ids, seg_id_ends[np.array(last_segment, dtype=np.int64)]

    def _run(self, data: bytes, seg_starts, seg_ends, seg_special):
        if self._cache is None:
            self._cache = _WordCache()
        buffer = np.frombuffer(data, dtype=np.uint8)
        return encode_segments(buffer, seg_starts, seg_ends, seg_special, codepoint_classes(), self._byte_ids,
                               self._merge_table, self._new_by_rank, *self._cache.arrays())

    # ---- decoding ---------------------------------------------------------------------------
    def decode_bytes(self, ids, skip_special: bool = False) -> bytes:
        """The exact bytes the ids stand for (special tokens as their text unless skip_special)."""
        token_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.vocab_size):
            bad = token_ids[(token_ids < 0) | (token_ids >= self.vocab_size)][0]
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        keep = self._keep_ordinary if skip_special else self._keep_all
        return gather_token_bytes(token_ids, self._token_offsets, self._token_pool, keep).tobytes()

    def decode(self, ids, skip_special: bool = False) -> str:
        """Text of the ids; bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    # ---- files ------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write tokenizer.json (HF `tokenizers` format) atomically."""
        write_tokenizer_json(Path(path), self._spec)

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """Load a tokenizer.json written by `save` (or any HF byte-level BPE file this codec supports)."""
        return cls(read_tokenizer_json(path))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._spec.merges)}, special={self.special_tokens})"
