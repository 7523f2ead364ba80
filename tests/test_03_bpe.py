"""BPE training and codec against slow, obviously-correct references; round trips; special tokens."""
import random

import numpy as np
import pytest

from mlot.tokenization import SPECIAL_TOKENS, Tokenizer, train
from mlot.tokenization.pretokenize import split_words
from mlot.tokenization.synthetic_documents import compound_document, simple_document, story_document
from mlot.tokenization.synthetic_world import build_world
from mlot.tokenization.tokenizer import _WordCache


def _corpus() -> list[str]:
    world = build_world(0)
    rng = random.Random(1)
    texts = [simple_document(world, rng) for _ in range(20)] + [compound_document(world, rng) for _ in range(10)]
    texts += [story_document(world, rng, 4) for _ in range(3)]
    texts += ["naïve café — ünïcödé 日本語のテキスト 123,456.78 it's they're", "aaaaaaa bbbb aaaa <pad> [MASK]"]
    return texts


CORPUS = _corpus()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train(CORPUS, 420)


# ---- slow references -------------------------------------------------------------------------
def reference_train(texts, vocab_size, special_tokens):
    """Textbook BPE: recount all pairs each step, merge the most frequent (ties: smallest ids),
    reuse the id of an existing string, never form a special token's string."""
    vocab = [s.encode() for s in special_tokens] + [bytes([b]) for b in range(256)]
    id_of = {token: i for i, token in enumerate(vocab) if i >= len(special_tokens)}
    special_bytes = {s.encode() for s in special_tokens}
    word_counts = {}
    for text in texts:
        for word in split_words(text):
            word_counts[word] = word_counts.get(word, 0) + 1
    words = [[len(special_tokens) + b for b in word.encode()] for word in word_counts]
    counts = list(word_counts.values())
    merges, banned = [], set()
    while len(vocab) < vocab_size:
        pair_counts = {}
        for symbols, count in zip(words, counts):
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + count
        candidates = [(-c, pair) for pair, c in pair_counts.items() if pair not in banned]
        if not candidates:
            break
        _, (left, right) = min(candidates)
        merged = vocab[left] + vocab[right]
        if merged in special_bytes:
            banned.add((left, right))
            continue
        if merged not in id_of:
            id_of[merged] = len(vocab)
            vocab.append(merged)
        new = id_of[merged]
        merges.append((left, right, new))
        for index, symbols in enumerate(words):
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == (left, right):
                    out.append(new)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[index] = out
    return merges


def reference_encode(tok: Tokenizer, text: str) -> list[int]:
    """Per word: repeatedly merge the adjacent pair of lowest rank, leftmost first."""
    rank = {(left, right): (r, new) for r, (left, right, new) in enumerate(tok.merges)}
    byte_id = {b: tok.token_to_id(tok.id_to_token(i)) for i in range(tok.vocab_size)
               for b in [tok.token_bytes(i)] if len(b) == 1 and i >= len(SPECIAL_TOKENS)}
    ids = []
    for word in split_words(text):
        symbols = [byte_id[bytes([b])] for b in word.encode()]
        while True:
            found = [(rank[pair][0], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in rank]
            if not found:
                break
            _, i = min(found)
            symbols[i:i + 2] = [rank[(symbols[i], symbols[i + 1])][1]]
        ids.extend(symbols)
    return ids


def random_text(rng: random.Random, length: int) -> str:
    """Text mixing corpus words, every Unicode plane (surrogates excluded) and whitespace runs."""
    parts = []
    for _ in range(length):
        roll = rng.random()
        if roll < 0.4:
            parts.append(rng.choice(rng.choice(CORPUS).split(" ")) + rng.choice([" ", "  ", "\n", ""]))
        elif roll < 0.8:
            code = rng.randrange(17) * 0x10000 + rng.randrange(0x10000)
            parts.append(chr(code) if not 0xD800 <= code < 0xE000 else "x")
        else:
            parts.append(rng.choice([" ", "'s", "'ll", "\t", "\r\n", "123", "!!", "<pad>", "[MASK]", "\u3000"]))
    return "".join(parts)


# ---- training --------------------------------------------------------------------------------
def test_training_matches_textbook_bpe(tokenizer):
    assert tokenizer.merges == reference_train(CORPUS, 420, SPECIAL_TOKENS)
    assert tokenizer.vocab_size == 420


def test_training_never_forms_a_special_token_string():
    specials = SPECIAL_TOKENS + ["hello"]  # a special token that ordinary text can spell
    texts = ["hello hello hello, hellos", "say hello"] * 5
    tok = train(texts, 300, specials)
    assert tok.merges == reference_train(texts, 300, specials)
    hello_id = tok.token_to_id("hello")
    assert hello_id == len(SPECIAL_TOKENS)
    assert hello_id not in tok.encode("hello hello")
    assert tok.encode("hello", allow_special=True) == [hello_id]


def test_vocab_size_below_minimum_is_refused():
    with pytest.raises(ValueError, match="below the minimum 265"):
        train(["some text"], 264)


def test_small_corpus_stops_when_pairs_run_out():
    tok = train(["ab"], 1000)
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 256 + 1
    assert tok.encode("ab") == [tok.vocab_size - 1]


# ---- encoding --------------------------------------------------------------------------------
def test_encoder_matches_reference_bpe(tokenizer):
    rng = random.Random(5)
    texts = CORPUS + [random_text(rng, rng.randint(0, 60)) for _ in range(150)]
    for text in texts:
        assert tokenizer.encode(text) == reference_encode(tokenizer, text), repr(text)
    assert tokenizer.encode_batch(texts) == [reference_encode(tokenizer, t) for t in texts]


def test_long_word_without_spaces(tokenizer):
    text = "aaaab" * 500 + "日本語" * 300  # words far longer than the word cache takes
    assert tokenizer.encode(text) == reference_encode(tokenizer, text)


def test_word_cache_overflow_keeps_results_exact():
    tok = train(CORPUS, 330)
    tok._cache = _WordCache(max_words=16)  # a tiny cache: cleared many times below
    rng = random.Random(2)
    text = "".join(" " + "".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(400))
    assert tok.encode(text) == reference_encode(tok, text)
    assert tok.encode(text) == reference_encode(tok, text)  # now partly from the cache


# ---- round trips -----------------------------------------------------------------------------
def test_round_trip_random_bytes(tokenizer):
    rng = np.random.default_rng(0)
    for length in [0, 1, 2, 3, 7, 100, 1000]:
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        ids = tokenizer.encode_bytes(data)
        assert tokenizer.decode_bytes(ids) == data
        assert all(0 <= i < tokenizer.vocab_size for i in ids)
    truncated = "日本".encode()[:-1]  # a cut-off character
    assert tokenizer.decode_bytes(tokenizer.encode_bytes(truncated)) == truncated


def test_round_trip_text_from_every_plane(tokenizer):
    rng = random.Random(9)
    for _ in range(200):
        text = random_text(rng, rng.randint(0, 80))
        assert tokenizer.decode(tokenizer.encode(text)) == text
        assert tokenizer.decode_bytes(tokenizer.encode(text)) == text.encode()
    for plane in range(17):
        chars = [chr(plane * 0x10000 + offset) for offset in range(0, 0x10000, 997)
                 if not 0xD800 <= plane * 0x10000 + offset < 0xE000]
        text = " ".join(chars)
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_empty_inputs(tokenizer):
    assert tokenizer.encode("") == []
    assert tokenizer.encode_batch([]) == []
    assert tokenizer.encode_batch(["", "a", ""]) == [[], tokenizer.encode("a"), []]
    assert tokenizer.decode([]) == ""
    assert tokenizer.encode("", allow_special=True) == []


def test_special_token_look_alikes_are_ordinary_text(tokenizer):
    ordinary_ids = set(range(len(SPECIAL_TOKENS), tokenizer.vocab_size))
    for text in SPECIAL_TOKENS + ["<pad", "[MASK", "<<bos>>", "[[SEP]]", "[mask]", "< pad >", "<eos><bos>"]:
        ids = tokenizer.encode(text)
        assert set(ids) <= ordinary_ids
        assert tokenizer.decode(ids) == text


def test_allow_special_maps_exact_strings_to_their_ids(tokenizer):
    text = "a<pad>b [MASK][SEP]<<bos>>[SOP] x [EOP][USER][MODEL]<eos>"
    ids = tokenizer.encode(text, allow_special=True)
    expected = (tokenizer.encode("a") + [0] + tokenizer.encode("b ") + [3, 4] + tokenizer.encode("<")
                + [1] + tokenizer.encode(">") + [5] + tokenizer.encode(" x ") + [6, 7, 8, 2])
    assert ids == expected
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special=True) == "ab <> x "


def test_special_ids_and_vocabulary_lookups(tokenizer):
    assert [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.mask_id, tokenizer.sep_id,
            tokenizer.sop_id, tokenizer.eop_id, tokenizer.user_id, tokenizer.model_id] == list(range(9))
    assert tokenizer.special_tokens == SPECIAL_TOKENS
    for token_id in range(tokenizer.vocab_size):
        assert tokenizer.token_to_id(tokenizer.id_to_token(token_id)) == token_id
    assert tokenizer.id_to_token(9 + ord("a")) == "a"
    assert tokenizer.id_to_token(9 + ord(" ")) == "Ġ"  # HF's byte-level spelling of the space
    assert tokenizer.id_to_token(tokenizer.vocab_size) is None


def test_decode_rejects_unknown_ids_and_replaces_broken_utf8(tokenizer):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])
    half_character = tokenizer.encode_bytes("é".encode()[:1])
    assert tokenizer.decode(half_character) == "\ufffd"


def test_save_and_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.merges == tokenizer.merges
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.encode_batch(CORPUS) == tokenizer.encode_batch(CORPUS)
