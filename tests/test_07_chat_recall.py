"""The chat loop recalls a fact told in turn 1 when asked for it turns later, after the turns in
between pushed turn 1 out of the working window, so only episodic memory still holds it.

A tiny model is trained here on synthetic dialogues laid out exactly as ChatSession lays out
and archives turns (16-token turns "[USER] ... [MODEL] ack", a working cache of one turn), to
answer "[USER] KEY k [MODEL]" with the value told in turn 1.
The test then talks to it through ChatSession, one batch-1 session per dialogue, and compares
with episodic memory switched off (chance is 1/8).

Measured when written (seed 0, 120 steps of 32 dialogues): 0.96 with memory, 0.12 without. The
fact lies inside one chunk, so the model reads the retrieved entries alone (retrieval_continuation
0; now 0.98 / 0.12): with each hit's continuation read too (the default), the same 120 steps gave
0.21 with memory, as twice the entries to attend to slow this model without a copy head down.
"""
import contextlib

import numpy as np

from mlot.architecture import ModelConfig
from mlot.architecture import functional as F
from mlot.architecture.optim import AdamW
from mlot.inference.chat_session import ChatSession
from mlot.model.infilling import make_infill_batch
from mlot.model.model import MLoTSpark

TURN, CHUNK, N_KEYS, VOCAB = 16, 4, 8, 128
USER, MODEL, KEY_MARK, ACK = 7, 8, 9, 10
KEY0, VALUE0, FILLER0 = 12, 20, 32
N_TURNS = 3  # the fact, then fillers; the question comes after them

try:  # BLAS threads only fight over these tiny products (4x slower on a busy 2-core machine)
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = contextlib.nullcontext


def dialogues(rng, n):
    """User tokens of N_TURNS turns (n, N_TURNS, TURN - 3), the fact (KEY_MARK k v) inside one
    memory chunk of turn 1; and the keys and values (n,)."""
    keys, values = rng.integers(0, N_KEYS, n), rng.integers(0, N_KEYS, n)
    users = rng.integers(FILLER0, VOCAB, (n, N_TURNS, TURN - 3))
    where = rng.choice([0, 3, 4, 7, 8], n)  # turn position 1 + where .. 3 + where stays within a chunk
    rows = np.arange(n)
    users[rows, 0, where], users[rows, 0, where + 1], users[rows, 0, where + 2] = KEY_MARK, KEY0 + keys, VALUE0 + values
    return users, keys, values


def archived_turns(users):
    """(n, N_TURNS, TURN) turns as ChatSession archives them: [USER] text [MODEL] ACK."""
    n = len(users)
    return np.concatenate([np.full((n, N_TURNS, 1), USER), users, np.full((n, N_TURNS, 1), MODEL),
                           np.full((n, N_TURNS, 1), ACK)], axis=2)


def train(model, steps=120, batch=32):
    groups = model.parameter_groups()
    optimizer = AdamW([{"params": groups["backbone"] + groups["episodic"], "lr": 3e-3, "weight_decay": 0.0},
                       {"params": groups["gates"], "lr": 3e-2, "weight_decay": 0.0}])
    rng = np.random.default_rng(0)
    for _ in range(steps):
        users, keys, values = dialogues(rng, batch)
        turns = archived_turns(users)
        model.reset_memory(batch_size=batch)
        for turn in range(N_TURNS):  # as ChatSession archives a turn
            model.write_memory(list(turns[:, turn]))
        asked = np.stack([np.full(batch, USER), np.full(batch, KEY_MARK), KEY0 + keys, np.full(batch, MODEL),
                          VALUE0 + values], axis=1)  # "[USER] KEY k [MODEL]" and the reply to learn
        infill = make_infill_batch(list(asked), [[(4, 5)]] * batch, model.special)
        out = model(infill)
        loss = F.cross_entropy(model.logits(out.hidden), infill.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def chat_recall(model, n=48):
    """Fraction of held-out dialogues whose chat reply starts with the value told in turn 1."""
    users, keys, values = dialogues(np.random.default_rng(99), n)
    session = ChatSession(model, USER, MODEL, max_reply_tokens=2)
    correct = 0
    for row in range(n):
        session.forget()
        for turn in range(N_TURNS):
            session.archive(users[row, turn], [ACK])
        reply = session.turn([KEY_MARK, KEY0 + keys[row]])
        correct += bool(reply) and reply[0] == VALUE0 + values[row]
    return correct / n, session


def test_chat_recalls_turn_one_after_it_left_the_working_window():
    config = ModelConfig.from_dict(dict(
        vocab_size=VOCAB, d_model=48, n_layers=2, n_heads=4, segment_len=TURN, max_span_len=2, chunk_len=CHUNK,
        working_cache_len=TURN, episodic_capacity=16, retrieval_top_k=2, semantic=False, retriever_dim=16,
        memory_layers=[1], gate_init=1.0, retrieval_continuation=0))
    model = MLoTSpark(config, seed=0)
    with threadpool_limits(1):
        train(model)
        with_memory, session = chat_recall(model)
    memory = session.model.memory
    assert memory.working.lengths.max() == TURN  # the window holds the latest turn only...
    assert session.turns == N_TURNS + 1
    texts = [list(tokens) for tokens in memory.entry_tokens[0][memory.episodic[0].live]]
    assert any(KEY_MARK in tokens for tokens in texts)  # ...turn 1's fact is an episodic entry
    model.set_memory(episodic=False)
    with threadpool_limits(1):
        without_memory, _ = chat_recall(model)
    print(f"chat recall: episodic memory on {with_memory:.2f}, off {without_memory:.2f}")
    assert with_memory >= 0.6 and without_memory <= 0.35, (with_memory, without_memory)
