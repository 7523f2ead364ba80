"""The pre-split of text into words before BPE, identical to HF `tokenizers`' ByteLevel pre-tokenizer.

BPE merges never cross a word boundary, so the split decides which tokens can exist. The saved
`tokenizer.json` declares HF's ByteLevel pre-tokenizer (use_regex=True, add_prefix_space=False),
so this module must split exactly like GPT-2's pattern run by HF's regex engine (Oniguruma):

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

Read as rules over code points, tried in this order at each position:

1. an apostrophe followed by `s t m d` or `re ve ll` (lowercase ASCII) is a word;
2. an optional single U+0020 space, then a maximal run of letters (\\p{L}), or of numbers
   (\\p{N}), or of "other" characters (neither space, letter nor number), is a word;
3. a run of whitespace followed by the end of the text is a word; a run followed by a
   non-space keeps its last character back (which then starts rule 2 if it is U+0020, or is a
   word on its own otherwise).

Python's `re` has no \\p{L}, so the classes come from a per-code-point table built from
`unicodedata`, and a Numba scanner walks the UTF-8 bytes with it. Bytes that are not valid
UTF-8 (only reachable through `Tokenizer.encode_bytes`) each count as one "other" character.
"""
import functools
import unicodedata

import numpy as np
from numba import njit

CLASS_SPACE = 0   # Oniguruma's \s: U+0009..U+000D, U+0085 and categories Zs, Zl, Zp
CLASS_LETTER = 1  # \p{L}: categories Lu Ll Lt Lm Lo
CLASS_NUMBER = 2  # \p{N}: categories Nd Nl No
CLASS_OTHER = 3   # everything else (punctuation, symbols, marks, controls, unassigned)

# Letters and numbers assigned in Unicode 15.0-16.0, the version HF tokenizers' Oniguruma
# uses. Python 3.11's unicodedata (Unicode 14.0) calls them unassigned; they are applied only
# where the running Python reports category Cn, so a newer Python's own data wins.
# (first code point, last code point, class)
NEWER_UNICODE_RANGES = (
    (0x1C89, 0x1C8A, CLASS_LETTER), (0xA7CB, 0xA7CD, CLASS_LETTER), (0xA7DA, 0xA7DC, CLASS_LETTER),
    (0x105C0, 0x105F3, CLASS_LETTER), (0x10D40, 0x10D49, CLASS_NUMBER),
    (0x10D4A, 0x10D65, CLASS_LETTER), (0x10D6F, 0x10D85, CLASS_LETTER),
    (0x10EC2, 0x10EC4, CLASS_LETTER), (0x1123F, 0x11240, CLASS_LETTER),
    (0x11380, 0x11389, CLASS_LETTER), (0x1138B, 0x1138B, CLASS_LETTER),
    (0x1138E, 0x1138E, CLASS_LETTER), (0x11390, 0x113B5, CLASS_LETTER),
    (0x113B7, 0x113B7, CLASS_LETTER), (0x113D1, 0x113D1, CLASS_LETTER),
    (0x113D3, 0x113D3, CLASS_LETTER), (0x116D0, 0x116E3, CLASS_NUMBER),
    (0x11BC0, 0x11BE0, CLASS_LETTER), (0x11BF0, 0x11BF9, CLASS_NUMBER),
    (0x11F02, 0x11F02, CLASS_LETTER), (0x11F04, 0x11F10, CLASS_LETTER),
    (0x11F12, 0x11F33, CLASS_LETTER), (0x11F50, 0x11F59, CLASS_NUMBER),
    (0x1342F, 0x1342F, CLASS_LETTER), (0x13441, 0x13446, CLASS_LETTER),
    (0x13460, 0x143FA, CLASS_LETTER), (0x16100, 0x1611D, CLASS_LETTER),
    (0x16130, 0x16139, CLASS_NUMBER), (0x16D40, 0x16D6C, CLASS_LETTER),
    (0x16D70, 0x16D79, CLASS_NUMBER), (0x18CFF, 0x18CFF, CLASS_LETTER),
    (0x1B132, 0x1B132, CLASS_LETTER), (0x1B155, 0x1B155, CLASS_LETTER),
    (0x1CCF0, 0x1CCF9, CLASS_NUMBER), (0x1D2C0, 0x1D2D3, CLASS_NUMBER),
    (0x1DF25, 0x1DF2A, CLASS_LETTER), (0x1E030, 0x1E06D, CLASS_LETTER),
    (0x1E4D0, 0x1E4EB, CLASS_LETTER), (0x1E4F0, 0x1E4F9, CLASS_NUMBER),
    (0x1E5D0, 0x1E5ED, CLASS_LETTER), (0x1E5F0, 0x1E5F0, CLASS_LETTER),
    (0x1E5F1, 0x1E5FA, CLASS_NUMBER), (0x2B739, 0x2B739, CLASS_LETTER),
    (0x2EBF0, 0x2EE5D, CLASS_LETTER), (0x31350, 0x323AF, CLASS_LETTER),
)

_UNICODE_SIZE = 0x110000
INVALID_BYTE_CODEPOINT = 0xFFFD  # stands for a byte that is not valid UTF-8 (class "other")
_SPACE_CONTROLS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85)


@functools.cache
def codepoint_classes() -> np.ndarray:
    """The class (CLASS_*) of every code point, shape (0x110000,) uint8; built once per process."""
    categories = np.array([unicodedata.category(chr(c)) for c in range(_UNICODE_SIZE)])
    major = categories.astype("<U1")
    classes = np.full(_UNICODE_SIZE, CLASS_OTHER, dtype=np.uint8)
    classes[major == "L"] = CLASS_LETTER
    classes[major == "N"] = CLASS_NUMBER
    unassigned = categories == "Cn"
    for first, last, cls in NEWER_UNICODE_RANGES:
        span = slice(first, last + 1)
        classes[span] = np.where(unassigned[span], cls, classes[span])
    classes[major == "Z"] = CLASS_SPACE
    classes[list(_SPACE_CONTROLS)] = CLASS_SPACE
    classes.setflags(write=False)
    return classes


@njit(cache=True)
def _continuation(data, pos):
    """Payload bits of data[pos] if it exists and is a UTF-8 continuation byte, else -1."""
    if pos >= data.shape[0]:
        return -1
    byte = np.int64(data[pos])
    if byte & 0xC0 != 0x80:
        return -1
    return byte & 0x3F


@njit(cache=True)
def codepoint_at(data, pos):
    """(code point, byte length) of the UTF-8 sequence starting at data[pos].

    A byte that does not start a valid, shortest-form sequence counts as one code point of
    class "other" (returned as U+FFFD, length 1), so arbitrary bytes still split into words.
    """
    lead = np.int64(data[pos])
    if lead < 0x80:
        return lead, 1
    if lead < 0xC2 or lead > 0xF4:
        return INVALID_BYTE_CODEPOINT, 1
    if lead < 0xE0:
        c1 = _continuation(data, pos + 1)
        if c1 < 0:
            return INVALID_BYTE_CODEPOINT, 1
        return ((lead & 0x1F) << 6) | c1, 2
    if lead < 0xF0:
        c1 = _continuation(data, pos + 1)
        c2 = _continuation(data, pos + 2)
        cp = ((lead & 0x0F) << 12) | (c1 << 6) | c2
        if c1 < 0 or c2 < 0 or cp < 0x800 or (0xD800 <= cp < 0xE000):
            return INVALID_BYTE_CODEPOINT, 1
        return cp, 3
    c1 = _continuation(data, pos + 1)
    c2 = _continuation(data, pos + 2)
    c3 = _continuation(data, pos + 3)
    cp = ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3
    if c1 < 0 or c2 < 0 or c3 < 0 or cp < 0x10000 or cp > 0x10FFFF:
        return INVALID_BYTE_CODEPOINT, 1
    return cp, 4


@njit(cache=True)
def _run_end(data, pos, end, classes, cls):
    """First byte offset >= pos in [pos, end) whose code point is not of class `cls`."""
    while pos < end:
        cp, width = codepoint_at(data, pos)
        if classes[cp] != cls:
            break
        pos += width
    return pos


@njit(cache=True)
def next_word_end(data, pos, end, classes):
    """Byte offset where the word starting at data[pos] ends, for the segment data[:end].

    Implements the three rules of the module docstring; pos < end is required. The segment end
    acts as the end of the text (HF splits around special tokens before this regex).
    """
    first = data[pos]
    if first == 0x27 and pos + 1 < end:  # rule 1: 's 't 'm 'd 're 've 'll
        second = data[pos + 1]
        if second == 0x73 or second == 0x74 or second == 0x6D or second == 0x64:
            return pos + 2
        if pos + 2 < end:
            third = data[pos + 2]
            if ((second == 0x72 and third == 0x65) or (second == 0x76 and third == 0x65)
                    or (second == 0x6C and third == 0x6C)):
                return pos + 3
    if first == 0x20 and pos + 1 < end:  # rule 2 with the optional leading space
        next_cp, _ = codepoint_at(data, pos + 1)
        next_cls = classes[next_cp]
        if next_cls != CLASS_SPACE:
            return _run_end(data, pos + 1, end, classes, next_cls)
    cp, width = codepoint_at(data, pos)
    cls = classes[cp]
    if cls != CLASS_SPACE:  # rule 2 without a space
        return _run_end(data, pos, end, classes, cls)
    # rule 3: whitespace run; remember where its last character starts
    last_start = pos
    cursor = pos
    while cursor < end:
        cp, width = codepoint_at(data, cursor)
        if classes[cp] != CLASS_SPACE:
            break
        last_start = cursor
        cursor += width
    if cursor == end or last_start == pos:
        return cursor
    return last_start


@njit(cache=True)
def word_ends(data, classes):
    """End byte offsets of the words of the UTF-8 text `data`, in order (int64, one per word)."""
    ends = np.empty(data.shape[0], dtype=np.int64)
    count = 0
    pos = 0
    while pos < data.shape[0]:
        pos = next_word_end(data, pos, data.shape[0], classes)
        ends[count] = pos
        count += 1
    return ends[:count].copy()


def split_words(text: str) -> list[str]:
    """The words BPE sees for `text` (no special-token handling), e.g. 'it's 42!' -> ['it', "'s", ' 42', '!']."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    ends = word_ends(data, codepoint_classes())
    raw = data.tobytes()
    starts = [0] + ends[:-1].tolist()
    return [raw[a:b].decode("utf-8") for a, b in zip(starts, ends.tolist())]
