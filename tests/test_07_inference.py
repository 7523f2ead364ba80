"""07-inference: streaming decode, span-chained continuation, the chat memory file, /memory
listing, and the generate / chat commands on a tiny checkpoint trained here by train.py."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlot.inference.chat_session import ChatSession
from mlot.inference.continuation import Continuation
from mlot.inference.memory_file import load_memory_file, save_memory_file
from mlot.inference.memory_listing import episodic_entries
from mlot.inference.streaming import TextStream
from mlot.model.generation import Sampler, generate
from mlot.architecture.checkpoint_file import CheckpointError
from mlot.training.trained_model import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "05-training" / "configs" / "tiny.json"
SINGLE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # BLAS threads only fight over tiny products


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset):
    """A tiny model (configs/tiny.json) trained for 6 steps on a 150 kB corpus: the real file path."""
    folder = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, str(ROOT / "05-training" / "train.py"), "--no_progress",
                    "--model_config", str(TINY), "--dataset", str(tiny_dataset), "--max_steps", "6",
                    "--checkpoint_dir", str(folder / "run")],
                   check=True, capture_output=True, cwd=ROOT, env=SINGLE_THREAD)
    return folder / "run" / "latest_checkpoint.pt"


@pytest.fixture
def trained(checkpoint):
    return load_trained_model(checkpoint)


def command(script, *args, stdin=""):
    return subprocess.run([sys.executable, str(ROOT / "07-inference" / script), *map(str, args)], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, env=SINGLE_THREAD)


# --- streaming -------------------------------------------------------------------------------------

def test_streamed_text_equals_decoding_the_whole(trained):
    tokenizer = trained.tokenizer
    ids = tokenizer.encode("naïve café — 日本語 🙂 done")
    pieces_of_one = [tokenizer.decode([token]) for token in ids]
    assert any("\ufffd" in piece for piece in pieces_of_one)  # some token does end inside a character
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids) == "naïve café — 日本語 🙂 done"
    assert not any("\ufffd" in piece for piece in pieces)  # no half character was ever printed

    rng = np.random.default_rng(0)
    for _ in range(20):  # any ids, invalid UTF-8 included: the same replacement characters as decode
        ids = rng.integers(0, tokenizer.vocab_size, rng.integers(1, 30)).tolist()
        stream = TextStream(tokenizer)
        assert "".join([stream.push(token) for token in ids] + [stream.finish()]) == tokenizer.decode(ids)


# --- sampling ----------------------------------------------------------------------------------------

def test_top_p_samples_the_smallest_head_in_proportion():
    probabilities = np.array([0.05, 0.5, 0.15, 0.3])
    sampler = Sampler(temperature=1.0, top_p=0.7, seed=0)  # head: 0.5 + 0.3 reaches 0.7
    draws = np.array([sampler(np.log(probabilities)) for _ in range(4000)])
    assert set(draws.tolist()) == {1, 3}
    assert abs((draws == 1).mean() - 0.5 / 0.8) < 0.03
    assert Sampler(temperature=0.0)(np.log(probabilities)) == 1
    assert Sampler(temperature=5.0, top_k=1, seed=1)(np.log(probabilities)) == 1


# --- continuation ------------------------------------------------------------------------------------

def memory_token_stream(memory):
    """Every token id memory holds, in reading order: episodic entries by write, then the working cache."""
    entries = [entry["tokens"] for entry in episodic_entries(memory)]
    side, lengths = memory.side.read(0)  # (1, L, channels): token id, surprise
    return [token for tokens in entries for token in tokens] + np.rint(side[0, :lengths[0], 0]).astype(int).tolist()


def test_continuation_writes_every_token_to_memory_once(trained):
    model = trained.model
    window = model.config.segment_len
    prompt = np.random.default_rng(1).integers(20, 300, 3 * window + 5).tolist()  # beyond the window
    continuation = Continuation(model, prompt, Sampler(temperature=1.0, seed=3))
    generated = list(continuation.tokens(40))
    assert len(generated) <= 40 and continuation.ids == prompt + generated
    assert continuation.written > 0  # the overflow went into memory before reading the window
    model.read_document(continuation.unwritten())  # the rest, then the pending chunk flushed
    assert memory_token_stream(model.memory) == continuation.ids


def test_first_span_of_a_greedy_continuation_is_generate(trained, checkpoint):
    model = trained.model
    prompt = trained.tokenizer.encode("The keeper of the old")
    reference = list(generate(load_trained_model(checkpoint).model, prompt, 20, temperature=0.0))
    continued = list(Continuation(model, prompt, Sampler(temperature=0.0)).tokens(20))
    assert continued[:len(reference)] == reference


# --- memory file and the /memory listing -------------------------------------------------------------

def chatted_session(trained, turns=6):
    tokenizer = trained.tokenizer
    session = ChatSession(trained.model, tokenizer.user_id, tokenizer.model_id, max_reply_tokens=6,
                          sampler=Sampler(temperature=1.0, seed=0))
    said = []
    for turn in range(turns):
        user = tokenizer.encode(f" turn {turn}: the lighthouse keeper counted {turn * 7} boats ")
        reply = session.turn(user)
        said += session.prompt(user) + reply
    return session, said


def test_chat_turns_reach_episodic_memory_in_order(trained):
    session, said = chatted_session(trained)
    session.model.flush_memory()  # the part of a chunk still pending
    memory = session.model.memory
    assert memory.episodic[0].size > 0
    assert memory_token_stream(memory) == said  # every turn archived once, in order
    entries = episodic_entries(memory)
    assert [entry["turn"] for entry in entries] == sorted(entry["turn"] for entry in entries)
    assert all(entry["age"] >= 0 and entry["turn"] >= 1 for entry in entries)


def test_memory_file_round_trip_is_exact(trained, checkpoint, tmp_path):
    session, _ = chatted_session(trained)
    path = tmp_path / "memory.pt"
    save_memory_file(path, session.model, session.turns, session.consolidator.state_dict())
    before = session.model.memory.state_dict()

    other = load_trained_model(checkpoint).model
    loaded = load_memory_file(path, other)
    after = other.memory.state_dict()
    assert loaded.turns == session.turns and loaded.same_model
    assert loaded.consolidator == session.consolidator.state_dict()
    assert sorted(after) == sorted(before)
    for name in before:
        assert after[name].dtype == before[name].dtype and np.array_equal(after[name], before[name]), name


def test_a_damaged_or_foreign_memory_file_is_refused(trained, checkpoint, tmp_path):
    session, _ = chatted_session(trained, turns=2)
    path = tmp_path / "memory.pt"
    save_memory_file(path, session.model, session.turns)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged.pt"):
        load_memory_file(damaged, load_trained_model(checkpoint).model)
    with pytest.raises(CheckpointError, match="not a chat memory file"):
        load_memory_file(checkpoint, load_trained_model(checkpoint).model)


# --- commands ----------------------------------------------------------------------------------------

def test_generate_command_streams_a_continuation(trained, checkpoint):
    prompt = "The keeper of the old"
    result = command("generate.py", "--checkpoint", checkpoint, "--prompt", prompt, "--temperature", 0,
                     "--max_new_tokens", 12)
    assert result.returncode == 0, result.stderr
    first_span = generate(trained.model, trained.tokenizer.encode(prompt), 12, temperature=0.0)
    assert result.stdout.startswith(prompt + trained.tokenizer.decode(list(first_span)))


def test_infill_command_fills_the_mask(trained, checkpoint):
    result = command("generate.py", "--checkpoint", checkpoint, "--infill", "The [MASK] sat on the mat",
                     "--temperature", 0, "--max_new_tokens", 6)
    assert result.returncode == 0, result.stderr
    tokenizer = trained.tokenizer
    span, = trained.model.infill(tokenizer.encode("The[MASK] sat on the mat", allow_special=True), 6)
    assert result.stdout == f"The{tokenizer.decode(span)} sat on the mat\nspans: {[tokenizer.decode(span)]}\n"


@pytest.mark.parametrize("args", [
    ["--checkpoint", "/nonexistent/latest_checkpoint.pt", "--prompt", "x"],
    ["--prompt", "x", "--top_p", "1.5"],
    ["--prompt", "x", "--max_new_tokens", "0"],
    ["--prompt", "x", "--infill", "y [MASK]"],
    ["--infill", "no blank here"],
])
def test_generate_mistakes_give_one_line(args, checkpoint):
    args = args if "--checkpoint" in args else ["--checkpoint", checkpoint, *args]
    result = command("generate.py", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_chat_command_keeps_memory_between_sessions(checkpoint, tmp_path):
    memory_file = tmp_path / "chat.pt"
    talk = "".join(f"the lighthouse keeper counted {n} boats in the harbour today\n" for n in range(5))
    first = command("chat.py", "--checkpoint", checkpoint, "--memory_file", memory_file, "--seed", 0,
                    stdin=talk + "/memory\n/exit\nnot read\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("model> ") == 5 and "retention" in first.stdout  # a table of entries
    assert memory_file.is_file()

    second = command("chat.py", "--checkpoint", checkpoint, "--memory_file", memory_file, stdin="/memory\n/forget\n")
    assert second.returncode == 0 and "memory: 5 earlier turns" in second.stderr
    assert "memory cleared" in second.stdout
    third = command("chat.py", "--checkpoint", checkpoint, "--memory_file", memory_file, stdin="/bogus\n")
    assert "memory: 0 earlier turns" in third.stderr and "unknown command /bogus" in third.stdout

    memory_file.write_bytes(memory_file.read_bytes()[:-50])
    damaged = command("chat.py", "--checkpoint", checkpoint, "--memory_file", memory_file, stdin="")
    assert damaged.returncode == 2 and damaged.stderr.startswith("error:") and "Traceback" not in damaged.stderr
