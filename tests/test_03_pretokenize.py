"""The pre-split: hand-worked cases of the GPT-2 rule, and agreement with HF's ByteLevel pre-tokenizer."""
import random

import pytest

from mlot.tokenization.pretokenize import split_words

# Each expected split worked out by hand from the pattern
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
HAND_CASES = [
    ("", []),
    ("Hello world", ["Hello", " world"]),
    ("it's", ["it", "'s"]),
    ("they'll we're I'd", ["they", "'ll", " we", "'re", " I", "'d"]),
    ("'S", ["'", "S"]),  # contractions are lowercase only
    ("x 's", ["x", " '", "s"]),  # the space takes the apostrophe into a punctuation word
    ("a   b", ["a", "  ", " b"]),  # the last space of a run goes with the next word
    ("a\tb", ["a", "\t", "b"]),  # only U+0020 attaches to the next word
    ("a \n\tb", ["a", " \n", "\t", "b"]),
    ("end  ", ["end", "  "]),  # a run at the end stays whole
    ("abc123def", ["abc", "123", "def"]),
    ("x 42!?", ["x", " 42", "!?"]),
    ("été ٣٤ 日本語", ["été", " ٣٤", " 日本語"]),  # letters and numbers of any script
    ("a\u3000b", ["a", "\u3000", "b"]),  # ideographic space is whitespace
    ("a\x1cb", ["a", "\x1c", "b"]),  # U+001C is not whitespace for the regex engine (it is for str.isspace)
    ("x\u0085\u2028y", ["x", "\u0085", "\u2028", "y"]),
]


@pytest.mark.parametrize("text, expected", HAND_CASES)
def test_hand_worked_splits(text, expected):
    assert split_words(text) == expected


def _random_text(rng: random.Random) -> str:
    """Characters from every plane mixed with the characters the rules treat specially."""
    specials = [" ", "  ", "\t", "\n", "'", "s", "ll", "re", "a", "1", "!", "\u3000", "\x85", "é", "٣", "'S"]
    parts = []
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.5:
            parts.append(rng.choice(specials))
        else:
            plane = rng.randrange(17)
            code = plane * 0x10000 + rng.randrange(0x10000)
            if not 0xD800 <= code < 0xE000:
                parts.append(chr(code))
    return "".join(parts)


def test_matches_hf_bytelevel_pretokenizer_on_every_plane():
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    reference = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    rng = random.Random(3)
    for _ in range(2000):
        text = _random_text(rng)
        expected = [text[start:end] for _, (start, end) in reference.pre_tokenize_str(text)]
        assert split_words(text) == expected, repr(text)
