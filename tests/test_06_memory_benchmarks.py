"""Memory benchmarks: the task generators checked by hand, the settings switch what they say,
the cross-session save/load is exact, and the CLI prints every row on a tiny trained checkpoint."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.architecture import ModelConfig
from mlot.evaluation.memory_benchmarks import (SETTINGS, UPPER_BOUND, Row, build_rows, format_table, report,
                                               run_rows, save_and_reload_memory)
from mlot.tokenization.memory_tasks import associative_recall_case, fact_case, passkey_case
from mlot.tokenization.memory_training_corpus import write_corpus
from mlot.model.infilling import make_infill_batch
from mlot.model.model import MLoTSpark
from mlot.tokenization.tokenize_data import tokenize_corpus
from mlot.memory.consolidation import ConsolidationConfig, MemoryConsolidator

ROOT = Path(__file__).resolve().parents[1]


def words(text: str) -> list:
    """Reference token count: words and punctuation runs, split here independently of the generators."""
    return re.findall(r"\w+|[^\w\s]+", text)


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_passkey_sits_at_the_requested_depth(depth):
    case = passkey_case(seed=7, depth=depth, n_tokens=400)
    context, key = case["context"], case["answer"]
    assert re.fullmatch(r"[1-9]\d", key)
    assert re.findall(r"\d+", context) == [key, key]  # stated once (twice in its sentence), nowhere else
    total = len(words(context))
    assert abs(total - 400) <= 8
    before = len(words(context[:context.index("The pass key is")]))
    fact = len(words(f"The pass key is {key}. Remember it. {key} is the pass key."))
    assert abs(before - depth * (total - fact)) <= 8  # within about one filler sentence
    assert key not in case["query"]


def test_passkey_upper_bound_twin_keeps_the_key():
    long, short = passkey_case(3, 0.6, 600), passkey_case(3, 0.6, 40)
    assert long["answer"] == short["answer"] and len(words(short["context"])) < 50


def codes_in_order(context: str) -> list:
    """(colour, container, value) of every code statement, in reading order."""
    return re.findall(r"The code of the (\w+) (\w+) (?:is|was changed to) (\d+)\.", context)


@pytest.mark.parametrize("seed", range(5))
def test_overwrite_answer_is_the_newest_value(seed):
    case = associative_recall_case(seed, n_pairs=6, n_tokens=300, overwrite=True)
    colour, container = re.fullmatch(r"The code of the (\w+) (\w+) is", case["query"]).groups()
    values = [v for c, k, v in codes_in_order(case["context"]) if (c, k) == (colour, container)]
    assert len(values) == 2 and values[0] != values[1]
    assert case["answer"] == values[-1]
    first_change = case["context"].index("was changed")
    assert all(case["context"].index(f"is {v}.") < first_change for c, k, v in codes_in_order(case["context"])[:6])


def test_associative_recall_answer_is_the_only_value_of_its_key():
    case = associative_recall_case(11, n_pairs=8, n_tokens=300)
    colour, container = re.fullmatch(r"The code of the (\w+) (\w+) is", case["query"]).groups()
    stated = codes_in_order(case["context"])
    assert len(stated) == 8 and len({(c, k) for c, k, _ in stated}) == 8
    assert [v for c, k, v in stated if (c, k) == (colour, container)] == [case["answer"]]


def solve_babi(context: str, query: str):
    """A reference reader: who holds what, who is where; returns (answer, facts used)."""
    location, holder, facts = {}, {}, re.findall(r"[A-Z][a-z]+ (?:went to|picked up|gave) [^.]*\.", context)
    for fact in facts:
        if m := re.fullmatch(r"(\w+) went to the (\w+)\.", fact):
            location[m[1]] = m[2]
        elif m := re.fullmatch(r"(\w+) picked up the (\w+)\.", fact):
            holder[m[2]] = m[1]
        elif m := re.fullmatch(r"(\w+) gave the (\w+) to (\w+)\.", fact):
            holder[m[2]] = m[3]
    if m := re.fullmatch(r"Where is (\w+)\? \1 is in the", query):
        entities = {m[1]}
        answer = location[m[1]]
    else:
        thing = re.fullmatch(r"Where is the (\w+)\? The \1 is in the", query)[1]
        entities = {thing, holder[thing]}
        entities |= {m[1] for f in facts if (m := re.fullmatch(rf"(\w+) gave the {thing} to \w+\.", f))}
        answer = location[holder[thing]]
    used = [f for f in facts if any(re.search(rf"\b{e}\b", f) for e in entities)]
    return answer, used


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_babi_needs_exactly_k_supporting_facts(k, seed):
    case = fact_case(seed, k, n_tokens=250)
    answer, used = solve_babi(case["context"], case["query"])
    assert answer == case["answer"]
    assert len(used) == k and used == case["supporting"]
    assert len(words(case["context"])) >= 200  # scattered through filler


def test_same_seed_same_cases():
    count = lambda text: len(words(text))  # noqa: E731
    first = build_rows(5, 3, window=32, segment_len=32, count_tokens=count)
    again = build_rows(5, 3, window=32, segment_len=32, count_tokens=count)
    other = build_rows(6, 3, window=32, segment_len=32, count_tokens=count)
    assert [(r.name, r.cases, r.upper) for r in first] == [(r.name, r.cases, r.upper) for r in again]
    assert [r.cases for r in first] != [r.cases for r in other]


def test_a_long_segment_gets_4_and_8_pairs_and_the_cross_session_row_asks_the_4_pair_cases():
    count = lambda text: len(words(text))  # noqa: E731
    rows = {r.name: r for r in build_rows(5, 3, window=128, segment_len=128, count_tokens=count)}
    four, eight = rows["associative recall (4 pairs)"], rows["associative recall (8 pairs)"]
    assert [len(c["all_questions"]) for c in four.cases + eight.cases] == [4] * 3 + [8] * 3
    crossed = rows["cross-session recall (4 pairs)"]
    assert crossed.cross_session and crossed.cases == four.cases and not four.cross_session


# --- the model side: a tiny untrained model ---------------------------------------------------------

def tiny_model():
    config = ModelConfig.from_dict(dict(vocab_size=64, d_model=16, n_layers=2, n_heads=2, segment_len=16,
                                        max_span_len=4, working_cache_len=16, chunk_len=4, episodic_capacity=32,
                                        retrieval_top_k=2, semantic_slots=8, semantic_top_k=2, retriever_dim=8,
                                        memory_layers=[1], gate_init=1.0, pad_id=0, mask_id=1, sop_id=2, eop_id=3))
    model = MLoTSpark(config, seed=0)
    model.eval()
    return model


def read_query(model, seed=0):
    """What one forward over a query reads after a 64-token document, under the current switches."""
    rng = np.random.default_rng(seed)
    model.reset_memory(batch_size=1)
    model.read_document(rng.integers(10, 64, 64))
    out = model(make_infill_batch([rng.integers(10, 64, 8)], [[]], model.special))
    return out


def test_settings_switch_what_they_say():
    model = tiny_model()
    model.reset_memory(batch_size=1)
    model.read_document(np.random.default_rng(1).integers(10, 64, 96))
    MemoryConsolidator(ConsolidationConfig()).consolidate(model.memory, rows=[0], reason="document_end")
    assert model.memory.semantic.size > 0
    for name, switches in SETTINGS.items():
        model.set_memory(**switches)
        out = read_query(model)
        semantic_tokens = model.config.semantic_top_k if switches["semantic"] else 0
        episodic_tokens = model.memory.episodic[0].gather(out.read.retrieved[0])[1] if switches["episodic"] else 0
        assert int(out.read.count[0]) == semantic_tokens + episodic_tokens, name
        assert (episodic_tokens > 0) == switches["episodic"]
        assert (out.frame.n_cache > 0) == switches["working"], name


class RecordingTokenizer:
    """Token ids are characters; decode joins them."""
    def encode(self, text, allow_special=False):
        return [1] if text == "[MASK]" else [10 + (ord(c) % 50) for c in text][:16]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_run_rows_scores_each_setting_with_its_switches(monkeypatch):
    model = tiny_model()
    seen = []

    def infill(ids, max_span_tokens=16):
        seen.append((model.use_working, model.use_episodic, model.use_semantic))
        return [[ord("7")]] if model.use_episodic else [[ord("0")]]  # "7" is right

    monkeypatch.setattr(model, "infill", infill)
    case = {"context": "abc", "query": "q", "answer": "7"}
    row = Row("stub", [case, case], [case], chance=0.5)
    run_rows(model, RecordingTokenizer(), [row], progress=False)
    assert row.results["memory off"]["exact_match"] == 0.0
    assert row.results["episodic only"]["exact_match"] == 1.0
    assert row.results[UPPER_BOUND]["total"] == 1
    expected = [tuple(SETTINGS[name].values()) for name in SETTINGS for _ in range(2)]
    assert seen[:6] == expected


def test_cross_session_round_trip_is_exact(tmp_path):
    document = np.random.default_rng(2).integers(10, 64, 70)
    query = list(np.random.default_rng(3).integers(10, 64, 6)) + [1]  # [MASK] is id 1
    one_session = tiny_model()
    one_session.read_document(document)
    expected = one_session.infill(query, 4)

    model = tiny_model()
    model.read_document(document)
    before = {name: np.array(array, copy=True) for name, array in model.memory.state_dict().items()}
    old_memory = model.memory
    save_and_reload_memory(model, tmp_path)
    assert model.memory is not old_memory
    after = model.memory.state_dict()
    assert sorted(after) == sorted(before)
    for name in before:
        assert after[name].dtype == before[name].dtype and np.array_equal(after[name], before[name]), name
    assert model.infill(query, 4) == expected


# --- the CLI on a tiny trained checkpoint --------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    write_corpus(folder / "tasks.jsonl", documents=60, window=32, progress=False)
    tokenize_corpus([folder / "tasks.jsonl"], folder / "data", vocab_size=400, progress=False)
    subprocess.run([sys.executable, str(ROOT / "05-training" / "train.py"), "--no_progress", "--model_config",
                    str(ROOT / "05-training" / "configs" / "tiny.json"), "--dataset", str(folder / "data"),
                    "--max_steps", "6", "--checkpoint_dir", str(folder / "run")], check=True, capture_output=True)
    return folder / "run" / "latest_checkpoint.pt"


def benchmark(*args):
    return subprocess.run([sys.executable, str(ROOT / "06-evaluation" / "memory_benchmarks.py"), "--no_progress",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_cli_prints_every_row_and_writes_the_report(checkpoint, tmp_path):
    result = benchmark("--checkpoint", checkpoint, "--cases", 1, "--report", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    rows = ["passkey 1x", "passkey 2x", "passkey 4x", "passkey 8x", "passkey 16x", "associative recall",
            "associative overwrite", "facts, 1 supporting", "facts, 2 supporting", "facts, 3 supporting",
            "cross-session recall"]
    lines = result.stdout.splitlines()
    for row in rows:
        assert any(line.startswith(row) for line in lines), row
    assert all(name in lines[1] for name in (*SETTINGS, UPPER_BOUND))
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rows"]) == len(rows)
    assert all(set(row["results"]) == {*SETTINGS, UPPER_BOUND} for row in report["rows"])
    assert all(row["results"]["memory off"]["total"] == 1 for row in report["rows"])
    for row in report["rows"]:  # the table shows the report's counts: 1 case, so 0.0 % or 100.0 %
        line = next(line for line in lines if line.startswith(row["task"]))
        shown = re.findall(r"(\d+\.\d)%", line)[:4]
        assert shown == [f"{100.0 * row['results'][name]['correct']:.1f}" for name in (*SETTINGS, UPPER_BOUND)]
        assert all(r["exact_match"] == r["correct"] / r["total"] for r in row["results"].values())


def test_recall_practice_writes_a_checkpoint_the_benchmark_reads(checkpoint, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "05-training" / "train.py"), "--no_progress", "--stage", "recall",
                             "--base", str(checkpoint), "--checkpoint_dir", str(tmp_path / "recall"), "--max_steps", "2",
                             "--batch_size", "2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert benchmark("--checkpoint", tmp_path / "recall" / "latest_checkpoint.pt", "--cases", 1).returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--cases", "0"], "argument --cases: must be >= 1"),
    (["--cases", "10001"], "argument --cases: must be <= 10000"),
    (["--seed", "1000"], "argument --seed: must lie in [0, 1000)"),
    (["--report", "/nonexistent/r.json"], "folder /nonexistent does not exist"),
    (["--memory_weights", "/nonexistent/memory_weights.pt"], "/nonexistent/memory_weights.pt"),
])
def test_user_mistakes_give_one_line(checkpoint, args, message):
    result = benchmark("--checkpoint", checkpoint, *args)
    assert result.returncode == 2 and result.stderr.startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_checkpoint_gives_one_line(tmp_path):
    result = benchmark("--checkpoint", tmp_path / "none.pt")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz ?"


class AlphabetTokenizer:
    """One token per character of ALPHABET (ids 10..48, inside the tiny model's vocabulary); [MASK] is 1."""
    def encode(self, text, allow_special=False):
        return [1] if text == "[MASK]" else [10 + ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(ALPHABET[i - 10] for i in ids)


def test_table_and_report_count_the_stub_answers_by_hand(monkeypatch):
    """A stub whose answers are known: per setting, which of four cases it gets right."""
    model = tiny_model()
    tokenizer = AlphabetTokenizer()
    right = {"memory off": {"q1"}, "episodic only": {"q1", "q2"}, "episodic + semantic": {"q1", "q2", "q3", "q4"},
             UPPER_BOUND: {"u1", "u2", "u4"}}
    switches = {tuple(values.values()): name for name, values in SETTINGS.items()}

    def infill(ids, max_span_tokens=16):
        query = tokenizer.decode(ids[:-1])
        setting = UPPER_BOUND if query.startswith("u") else switches[
            (model.use_working, model.use_episodic, model.use_semantic)]
        answer = query[1]  # a query "qN" or "uN" is answered by its digit N
        return [tokenizer.encode(answer if query in right[setting] else "0")]

    monkeypatch.setattr(model, "infill", infill)
    cases = [{"context": "abc", "query": f"q{n}", "answer": str(n)} for n in range(1, 5)]
    upper = [{"context": "", "query": f"u{n}", "answer": str(n)} for n in range(1, 5)]
    row = Row("stub row", cases, upper, chance=0.1)
    run_rows(model, tokenizer, [row], progress=False)
    # hand counts: 1, 2, 4 and 3 of 4 cases right
    line = format_table([row]).splitlines()[1]
    assert line.startswith("stub row")
    assert re.findall(r"(\d+\.\d)%", line) == ["25.0", "50.0", "100.0", "75.0", "10.0"] and line.endswith(" 4")
    results = report([row], {"seed": 0})["rows"][0]["results"]
    assert {name: (r["correct"], r["total"]) for name, r in results.items()} == {
        "memory off": (1, 4), "episodic only": (2, 4), "episodic + semantic": (4, 4), UPPER_BOUND: (3, 4)}
