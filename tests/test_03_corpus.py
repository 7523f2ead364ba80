"""The generated default corpus: deterministic, and shaped for the memory tasks later stages need."""
import json
import re

import pytest

from mlot.tokenization import train
from mlot.architecture.cli import UserError
from mlot.tokenization.generate_corpus import generate_corpus
from mlot.tokenization.synthetic_world import build_world, person_facts

SIZE = 200_000
FILES = ("documents.jsonl", "epoch0_curriculum.jsonl", "recall.jsonl", "manifest.json")


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(folder, seed=1, size_bytes=SIZE, progress=False)
    return folder


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train((d["text"] for d in _read_jsonl(corpus / "documents.jsonl")), 500)


def test_same_seed_same_bytes_other_seed_other_text(corpus, tmp_path):
    again = tmp_path / "again"
    generate_corpus(again, seed=1, size_bytes=SIZE, progress=False)
    for name in FILES:
        assert (again / name).read_bytes() == (corpus / name).read_bytes(), name
    other = tmp_path / "other"
    generate_corpus(other, seed=2, size_bytes=SIZE, progress=False)
    assert (other / "documents.jsonl").read_bytes() != (corpus / "documents.jsonl").read_bytes()


def test_refuses_a_folder_that_holds_data(corpus):
    with pytest.raises(UserError, match="already holds data"):
        generate_corpus(corpus, seed=1, size_bytes=1000, progress=False)


def test_documents_span_the_levels_and_the_requested_size(corpus, tokenizer):
    documents = _read_jsonl(corpus / "documents.jsonl")
    assert sum(len(d["text"].encode()) for d in documents) >= SIZE
    lengths = {level: [len(tokenizer.encode(d["text"])) for d in documents if d["level"] == level]
               for level in (1, 2, 3, 4)}
    assert all(lengths[level] for level in lengths)
    mean = {level: sum(v) / len(v) for level, v in lengths.items()}
    assert mean[1] < mean[2] < mean[3] < mean[4]
    assert min(lengths[3] + lengths[4]) > 128  # stories are longer than a 128-token window


def test_entities_recur_across_documents(corpus):
    documents = [d["text"] for d in _read_jsonl(corpus / "documents.jsonl")]
    text = "\n".join(documents)
    world = build_world(1)
    documents_per_person = sorted((sum(person.name in d for d in documents) for person in world.people), reverse=True)
    assert documents_per_person[100] >= 2  # half the people already appear in several of these 200 KB
    repeated_facts = sum(text.count(fact) >= 2 for person in world.people for fact in person_facts(world, person))
    assert repeated_facts >= 20  # the same fixed facts are restated across documents


def test_recall_cases_are_answerable_and_far_from_their_facts(corpus, tokenizer):
    cases = _read_jsonl(corpus / "recall.jsonl")
    world = build_world(1)
    episodic_distances = []
    assert {case["kind"] for case in cases} == {"episodic", "semantic"}
    for case in cases:
        context, query, answer = case["context"], case["query"], case["answer"]
        assert re.search(r"\w$", query) and answer.startswith(" ") and not context[-1].isspace()
        joined = tokenizer.encode(context + query + answer)
        assert tokenizer.encode(context) + tokenizer.encode(query) + tokenizer.encode(answer) == joined
        span = answer.strip(" .")
        if case["kind"] == "episodic":
            statement_at = context.find(span)
            assert statement_at >= 0, case
            episodic_distances.append(len(tokenizer.encode(context[statement_at:])))
        else:
            assert span not in context
            named = [p for p in world.people if p.name in query]
            assert any(span in fact for p in named for fact in person_facts(world, p)), case
    episodic_distances.sort()
    assert episodic_distances[len(episodic_distances) // 2] > 128


def test_dialogue_answers_depend_on_the_first_turn(corpus):
    dialogues = _read_jsonl(corpus / "epoch0_curriculum.jsonl")
    assert len(dialogues) >= 50 and len({d["kind"] for d in dialogues}) >= 10

    def words(text):
        return set(re.findall(r"[A-Za-z0-9]+", text))

    for d in dialogues:
        assert set(d) >= {"U1", "M1", "U2", "M2"}
        informative = words(d["M2"]) - words(d["U2"]) - words(d["M1"])
        assert informative & words(d["U1"]), d  # M2 repeats something only U1 said
