"""Dialogue files {"U1", "M1", "U2", "M2"}: every bad line named with its number, M1's neutral default,
and the encoded example whose M2 starts right after the last [MODEL] token."""
import json

import pytest

from mlot.architecture.cli import UserError
from mlot.tokenization import train
from mlot.tokenization.dialogue_triplets import (NEUTRAL_ACKNOWLEDGEMENT, Triplet, TripletDataError, encode_triplets,
                                                 read_triplets)

DIALOGUES = [
    {"U1": "I am Ann.", "M1": "Noted.", "U2": "Who am I?", "M2": "You are Ann."},
    {"U1": "My cat is Tom.", "U2": "Name my cat?", "M2": "Tom."},  # M1 left out: the neutral one
    {"U1": "I live in Ely.", "M1": "Got it.", "U2": "Where do I live?", "M2": "In Ely."},
]


@pytest.fixture(scope="module")
def tokenizer():
    """A small BPE with every special token, [USER] and [MODEL] included."""
    texts = [text for dialogue in DIALOGUES for text in dialogue.values()] * 3
    return train(texts, 300)


@pytest.fixture
def dialogue_file(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DIALOGUES), encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["U1", "U2"]', "expected a JSON object"),
    ('{"U1": "a", "U2": "b"}', "missing M2"),
    ('{"U1": "a", "U2": "b", "M2": 7}', "M2 must be a non-empty string"),
    ('{"U1": "", "U2": "b", "M2": "c"}', "U1 must be a non-empty string"),
])
def test_a_bad_line_is_named_with_its_number(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(DIALOGUES[0]) + "\n\n" + line + "\n")
    with pytest.raises(TripletDataError, match=f"line 3: {message}"):
        read_triplets(path)


def test_a_missing_or_empty_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_triplets(tmp_path / "absent.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="holds no dialogues"):
        read_triplets(tmp_path / "blank.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"U1": "caf\xe9", "U2": "b", "M2": "c"}\n')
    with pytest.raises(UserError, match="line 1: not UTF-8 text"):
        read_triplets(tmp_path / "latin1.jsonl")


def test_m1_defaults_to_a_neutral_acknowledgement(dialogue_file):
    triplets = read_triplets(dialogue_file)
    assert NEUTRAL_ACKNOWLEDGEMENT == "Noted."
    assert triplets[1] == Triplet(2, "My cat is Tom.", "Noted.", "Name my cat?", "Tom.")
    assert [t.line for t in triplets] == [1, 2, 3] and triplets[2].m1 == "Got it."


def test_an_example_decodes_to_its_dialogue_with_m2_after_the_model_token(tokenizer, dialogue_file):
    examples = encode_triplets(tokenizer, read_triplets(dialogue_file), 64, source=str(dialogue_file))
    for example, dialogue in zip(examples, DIALOGUES):
        assert tokenizer.decode(example.context) == f"[USER] {dialogue['U1']} [MODEL] {dialogue.get('M1', 'Noted.')}"
        assert tokenizer.decode(example.dialogue[:example.m2_start]) == f"[USER] {dialogue['U2']} [MODEL]"
        assert tokenizer.decode(example.dialogue[example.m2_start:]).strip() == dialogue["M2"]
        assert example.dialogue[example.m2_start - 1] == tokenizer.token_to_id("[MODEL]")


def test_special_token_text_in_a_field_is_refused(tokenizer):
    triplet = Triplet(5, "I am [MODEL] Ann.", "Noted.", "Who?", "Ann.")
    with pytest.raises(TripletDataError, match=r"line 5: U1 contains the special token \[MODEL\]"):
        encode_triplets(tokenizer, [triplet], 64)


def test_a_dialogue_longer_than_a_segment_is_refused(tokenizer):
    triplet = Triplet(9, "a", "b", "word " * 40, "c")
    with pytest.raises(TripletDataError, match="line 9: U2 and M2 take .* the model's segment of 16"):
        encode_triplets(tokenizer, [triplet], 16)


def test_a_tokenizer_without_chat_tokens_is_refused():
    plain = train(["I am Ann. Who am I?"] * 3, 270, special_tokens=["<pad>", "<bos>", "<eos>"])
    with pytest.raises(TripletDataError, match=r"no \[USER\] / \[MODEL\] tokens"):
        encode_triplets(plain, [Triplet(1, "a", "b", "c", "d")], 64)
