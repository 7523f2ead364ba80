"""Chat benchmark: the scripts (deterministic, the fact told once and asked for, held-out seeds),
the scoring against hand-written replies, the three settings against a stand-in reply whose right
answers are known, and the command end to end on a tiny random checkpoint."""
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlot.architecture.config import ModelConfig, read_json_object
from mlot.inference import chat_benchmark
from mlot.inference.chat_benchmark import (MAX_CASES, SEEDS, SETTINGS, ChatBenchmark, answered, build_cases,
                                            case_seed, format_table, summarize)
from mlot.inference import chat_session
from mlot.inference.memory_file import LoadedMemory
from mlot.inference.memory_listing import episodic_entries
from mlot.memory.consolidation import MemoryConsolidator
from mlot.model.model import MLoTSpark
from mlot.tokenization import memory_training_corpus
from mlot.tokenization.chat_scripts import CHAT_STREAM, HELD_OUT_SEEDS, KINDS, chat_script
from mlot.tokenization.generate_corpus import generate_corpus
from mlot.training import recall_stage
from mlot.training.checkpointing import CheckpointManager
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "05-training" / "configs" / "tiny.json"


def says(text: str, answer: str) -> bool:
    """Reference whole-word test: the answer's words are a run of the text's lower-cased words."""
    words, wanted = re.findall(r"\w+", text.lower()), re.findall(r"\w+", answer.lower())
    return any(words[i:i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))


# --- the scripts ------------------------------------------------------------------------------------

def test_a_script_is_a_function_of_its_seed():
    assert chat_script(123, "pet", 9) == chat_script(123, "pet", 9)
    assert build_cases(4, 16, 8) == build_cases(4, 16, 8)
    scripts = [chat_script(seed, "code") for seed in range(20)]
    assert len({script.fact_turn[0] for script in scripts}) > 15  # codes differ from seed to seed
    assert [script.kind for script in build_cases(0, 10, 8)] == [*KINDS, "name", "pet"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_fact_is_told_once_then_only_asked_for(kind):
    for seed in range(300):
        script = chat_script(seed, kind, other_turns=20)
        assert len(script.other_turns) == 20 and script.answer_words
        others = [script.fact_turn[1], script.question, *(text for turn in script.other_turns for text in turn)]
        for word in script.answer_words:
            assert says(script.fact_turn[0], word), (script.fact_turn, word)
            assert not any(says(text, word) for text in others), (seed, word)
        assert script.question.endswith("?")


def test_scripts_say_what_a_person_would():
    script = chat_script(5, "object", other_turns=8)
    thing, place = re.fullmatch(r"(?:I left my|Just so you know, my) (\w+) (?:in|is in) the ([\w ]+)\.",
                                script.fact_turn[0]).groups()
    assert script.answer_words == (place,) and thing in script.question
    assert len(set(script.other_turns)) == 8  # no exchange twice in one chat


def test_benchmark_seeds_are_never_training_seeds(tmp_path, monkeypatch):
    largest = case_seed(SEEDS - 1, MAX_CASES - 1)
    assert case_seed(0, 0) in HELD_OUT_SEEDS and largest in HELD_OUT_SEEDS
    assert case_seed(1, 0) > case_seed(0, MAX_CASES - 1)  # seeds of one --seed never meet another's
    # per-case training seeds start above the held-out range
    assert memory_training_corpus.TRAINING_SEED_BASE >= HELD_OUT_SEEDS.stop
    assert recall_stage.TRAINING_SEED_BASE >= HELD_OUT_SEEDS.stop
    # the corpus generator (documents, dialogues, recall cases, world) never draws from a held-out chat stream
    streams = []

    class Recorded(random.Random):
        def __init__(self, seed=None):
            streams.append(seed)
            super().__init__(seed)

    monkeypatch.setattr(random, "Random", Recorded)
    generate_corpus(tmp_path / "corpus", seed=0, size_bytes=20_000, progress=False)
    corpus_streams = list(streams)
    build_cases(0, 3, 8)
    chat_seeds = [int(str(stream).rpartition("-")[2]) for stream in corpus_streams
                  if str(stream).startswith(CHAT_STREAM)]
    assert corpus_streams and not any(seed in HELD_OUT_SEEDS for seed in chat_seeds)
    assert streams[len(corpus_streams):] == [f"{CHAT_STREAM}{kind}-{seed}" for seed, kind in enumerate(KINDS[:3])]


# --- scoring ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, words, right", [
    ("Your parrot is called Bramble.", ["Bramble"], True),
    ("bramble!", ["Bramble"], True),                       # case does not matter
    ("Brambles everywhere.", ["Bramble"], False),          # a whole word, not a prefix
    ("The code is 40705.", ["4070"], False),
    ("It is 4070.", ["4070"], True),
    ("You cooked.", ["cook"], False),
    ("You are a cook", ["cook"], True),
    ("Your birthday is on 7 October.", ["7", "October"], True),
    ("Your birthday is on 17 October.", ["7", "October"], False),  # every answer word is needed
    ("October, I think.", ["7", "October"], False),
    ("You live in juniper  cross.", ["Juniper Cross"], True),      # a two-word town
    ("You live in Juniper.", ["Juniper Cross"], False),
    ("", ["Pip"], False),
])
def test_a_reply_is_right_when_it_says_every_answer_word(reply, words, right):
    assert answered(reply, words) is right


# --- the settings, with a stand-in reply ----------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory):
    """A random tiny model saved as a checkpoint of the tiny dataset (its tokenizer has [USER], [MODEL])."""
    meta = json.loads((tiny_dataset / "meta.json").read_text())
    special = meta["special_tokens"]
    values = {**read_json_object(TINY)["model"], "vocab_size": meta["vocab_size"], "pad_id": special["<pad>"],
              "mask_id": special["[MASK]"], "sop_id": special["[SOP]"], "eop_id": special["[EOP]"],
              "episodic_capacity": 64}
    model = MLoTSpark(ModelConfig.from_dict(values), seed=3)
    folder = tmp_path_factory.mktemp("chat_checkpoint")
    CheckpointManager(folder).save(1, {f"model.{k}": v for k, v in model.state_dict().items()},
                                   {"model_config": model.config.to_dict(), "dataset": str(tiny_dataset)})
    return folder / "latest_checkpoint.pt"


def reciter(asked_questions):
    """A stand-in for the model's reply (chat_session's Continuation): for a question it knows, it
    recites every token the memory holds, oldest first (episodic entries, the chunk waiting to be
    stored, the working cache), when the model may read memory, and nothing otherwise; for other
    questions nothing. So a reply is right exactly when the fact is in the memory the model reads."""
    class Reciter:
        def __init__(self, model, context_ids, sampler, stop_ids=()):
            self.model, self.context = model, list(context_ids)

        def tokens(self, max_new_tokens, max_spans=None):
            memory, model = self.model.memory, self.model
            if self.context[1:-1] not in asked_questions or not (model.use_working or model.use_episodic):
                return
            for entry in episodic_entries(memory):
                yield from entry["tokens"]
            yield from memory.side_chunks.pending[0, :int(memory.side_chunks.pending_lengths[0]), 0].astype(int).tolist()
            yield from memory.side.states[0, 0, :int(memory.side.lengths[0, 0]), 0].astype(int).tolist()

        def unwritten(self):
            return self.context

    return Reciter


def transcript(script) -> str:
    """What the chat said before the question, as the memory should hold it (user text is sent as
    " text ", a reply follows as " reply": two spaces between them)."""
    return " ".join(f"{user}  {reply}" for user, reply in (script.fact_turn, *script.other_turns))


def test_each_setting_gives_the_reply_its_memory_allows(checkpoint, monkeypatch):
    trained = load_trained_model(checkpoint, semantic_memory=True)
    scripts = build_cases(0, 8, other_turns=3)   # one chat of each kind
    answering = {"pet", "colour", "date"}
    benchmark_questions = [trained.tokenizer.encode(f" {s.question} ") for s in scripts if s.kind in answering]
    monkeypatch.setattr(chat_session, "Continuation", reciter(benchmark_questions))
    with tempfile.TemporaryDirectory() as folder:
        benchmark = ChatBenchmark(trained.model, trained.tokenizer, folder)
        records = benchmark.run(scripts, progress=False)
        rows = {row["kind"]: row for row in summarize(records)}
        for record, script in zip(records, scripts):  # each setting's memory held its own chat, nothing else
            recited = [reply for reply in record["replies"].values() if reply]
            assert recited == ([transcript(script)] * 2 if script.kind in answering else [])
        for record in records:  # the fact left the working window: only episodic memory holds it
            assert record["tokens_after_fact"] >= trained.model.config.working_cache_len
        assert rows["all"]["correct"] == {"same session": 3, "second session": 3, "memory off": 0}
        for kind in KINDS:
            expected = int(kind in answering)
            assert rows[kind]["cases"] == 1
            assert rows[kind]["correct"] == {"same session": expected, "second session": expected, "memory off": 0}
        chances = {"name": 1 / 80, "pet": 1 / 20, "code": 1 / 9000, "place": 1 / 40, "colour": 1 / 16, "job": 1 / 40,
                   "object": 1 / 24, "date": 1 / 336 if len(scripts[6].answer_words) == 2 else 1 / 7}
        for kind, chance in chances.items():
            assert rows[kind]["chance"] == pytest.approx(chance)
        assert rows["all"]["chance"] == pytest.approx(sum(chances.values()) / 8)
        table = format_table(summarize(records)).splitlines()
        assert table[-1].split() == ["all", "37.5%", "37.5%", "0.0%", f"{100 * rows['all']['chance']:.1f}%", "8"]

        # a second session that does not load the file remembers nothing: its memory is fresh
        monkeypatch.setattr(chat_benchmark, "load_memory_file", loads_nothing)
        again = summarize(benchmark.run(scripts, progress=False))[-1]
        assert again["correct"] == {"same session": 3, "second session": 0, "memory off": 0}


def loads_nothing(path, model, fingerprint=None):
    """load_memory_file that leaves the fresh memory as it is."""
    assert Path(path).is_file()
    return LoadedMemory(0, MemoryConsolidator().state_dict(), True)


# --- the command ------------------------------------------------------------------------------------

def test_the_command_prints_the_table_of_its_report(checkpoint, tmp_path):
    report_path = tmp_path / "chat.json"
    result = subprocess.run([sys.executable, "07-inference/chat_benchmark.py", "--checkpoint", str(checkpoint),
                             "--cases", "2", "--other_turns", "2", "--seed", "7", "--report", str(report_path),
                             "--no_progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    records = report["records"]
    assert [record["kind"] for record in records] == ["name", "pet"] and report["cases"] == 2
    for record, script in zip(records, build_cases(7, 2, 2)):
        assert record["question"] == script.question and record["answer_words"] == list(script.answer_words)
        assert set(record["replies"]) == set(SETTINGS)
        for setting, reply in record["replies"].items():
            assert record["correct"][setting] == all(says(reply, word) for word in record["answer_words"])
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("kind")))
    printed = [line.split() for line in lines[header + 1:header + 4]]
    assert [row[0] for row in printed] == ["name", "pet", "all"]
    for cells, row in zip(printed, report["rows"]):
        kind_records = [r for r in records if cells[0] in ("all", r["kind"])]
        for cell, setting in zip(cells[1:4], SETTINGS):
            share = sum(r["correct"][setting] for r in kind_records) / len(kind_records)
            assert cell == f"{100 * share:.1f}%" and row["accuracy"][setting] == share
        chance = sum(r["chance"] for r in kind_records) / len(kind_records)
        assert cells[4:] == [f"{100 * chance:.1f}%", str(len(kind_records))]
    assert re.fullmatch(r"\(\d+ s\)", lines[header + 4])
