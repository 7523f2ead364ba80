"""tokenizer.json interoperability: HF `tokenizers` loads our file and gives the same ids, and we load HF's."""
import json
import random

import pytest

from mlot.tokenization import SPECIAL_TOKENS, Tokenizer, train
from mlot.tokenization.hf_json import TokenizerFileError, TokenizerSpec

tokenizers = pytest.importorskip("tokenizers")

from test_03_bpe import CORPUS, random_text, reference_encode  # noqa: E402  (after the importorskip)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = train(CORPUS, 600)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return tok, path


def _samples() -> list[str]:
    rng = random.Random(11)
    samples = CORPUS + [random_text(rng, rng.randint(0, 120)) for _ in range(300)]
    samples += ["", " ", "  leading", "trailing  ", "\n\n\n", "x<pad>y [MASK] [SOP]span[EOP] <eos>"]
    for plane in range(17):  # assigned and unassigned code points of every plane
        samples.append("a " + "".join(chr(plane * 0x10000 + k) for k in range(0, 0x10000, 331)
                                      if not 0xD800 <= plane * 0x10000 + k < 0xE000))
    return samples


def test_hf_loads_our_file_and_encodes_identically(saved):
    ours, path = saved
    theirs = tokenizers.Tokenizer.from_file(str(path))
    assert theirs.get_vocab_size() == ours.vocab_size
    for text in _samples():
        assert theirs.encode(text).ids == ours.encode(text, allow_special=True), repr(text)


def test_hf_decodes_our_ids(saved):
    ours, path = saved
    theirs = tokenizers.Tokenizer.from_file(str(path))
    text = "Mara Voss keeps the blue key in the cellar of Ashford. 日本語 ✓"
    assert theirs.decode(ours.encode(text)) == text


def test_we_load_a_file_trained_and_saved_by_hf(tmp_path):
    from tokenizers import decoders, models, pre_tokenizers, trainers
    model = tokenizers.Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(CORPUS, trainer)
    path = tmp_path / "hf.json"
    model.save(str(path))
    ours = Tokenizer.from_file(path)
    assert ours.vocab_size == model.get_vocab_size()
    assert ours.eos_id == model.token_to_id("<eos>")
    for text in _samples():
        assert ours.encode(text, allow_special=True) == model.encode(text).ids, repr(text)


def test_merges_that_rebuild_an_existing_token(tmp_path):
    """Two merges may produce the same string ('ab'+'cd' and 'abc'+'d'); HF keeps one id for it."""
    base = [s.encode() for s in SPECIAL_TOKENS] + [bytes([b]) for b in range(256)]
    byte_id = {chr(b): len(SPECIAL_TOKENS) + b for b in range(256)}
    extra = [b"ab", b"cd", b"abc", b"abcd", b"bc"]
    ids = {token: len(base) + k for k, token in enumerate(extra)}
    merges = [(byte_id["a"], byte_id["b"], ids[b"ab"]), (byte_id["c"], byte_id["d"], ids[b"cd"]),
              (byte_id["b"], byte_id["c"], ids[b"bc"]), (ids[b"ab"], byte_id["c"], ids[b"abc"]),
              (ids[b"ab"], ids[b"cd"], ids[b"abcd"]), (ids[b"abc"], byte_id["d"], ids[b"abcd"])]
    ours = Tokenizer(TokenizerSpec(token_bytes=base + extra, special_ids={s: i for i, s in enumerate(SPECIAL_TOKENS)},
                                   merges=merges))
    path = tmp_path / "tokenizer.json"
    ours.save(path)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    for text in ["abcd", "abcdabcd", "xabcd", "abcabcd", "aabbccdd", "bcd abc abcd"]:
        assert ours.encode(text) == theirs.encode(text).ids == reference_encode(ours, text)


def test_unsupported_files_are_refused_with_the_reason(tmp_path, saved):
    _, path = saved
    document = json.loads(path.read_text(encoding="utf-8"))
    document["normalizer"] = {"type": "NFC"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="normalizer"):
        Tokenizer.from_file(bad)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not readable JSON"):
        Tokenizer.from_file(bad)
    with pytest.raises(TokenizerFileError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "missing.json")
