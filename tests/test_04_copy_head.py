"""The copy head: its mixture against a slow loop over tokens, its gradients against finite
differences, the memory token ids it points at, and a pass key copied from memory after training."""
import numpy as np
import pytest

from mlot.architecture import Tensor, gradcheck, no_grad
from mlot.architecture.optim import AdamW
from mlot.model.copy_head import MemoryCopyHead, shared_tokens
from mlot.model.infilling import make_infill_batch

from test_04_model import SPECIAL, filled_model, tiny_config  # noqa: F401  (shared tiny model)


def rng(seed=0):
    return np.random.default_rng(seed)


def layer_norm(x, weight, bias):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * weight + bias


def reference_mixture(head, hidden, logits, memory, ids, rows, previous, context, shared):
    """p(w) = (1 - s) softmax(logits)(w) + s * sum of the pointer weights of memory tokens with id w,
    one position and one memory token at a time; a key is its token's, its predecessor's and its
    context's part, and a score gains match_weight per token shared with the text before the position."""
    p_head = {name: p.data for name, p in head.named_parameters()}
    N, d = hidden.shape
    out = np.zeros_like(logits)
    for n in range(N):
        row = rows[n]
        normed = layer_norm(memory[row], p_head["memory_norm.weight"], p_head["memory_norm.bias"])
        before = layer_norm(previous[row], p_head["previous_norm.weight"], p_head["previous_norm.bias"])
        keys = normed @ p_head["k_proj.weight"].T + p_head["k_proj.bias"] \
            + before @ p_head["previous_proj.weight"].T + p_head["previous_proj.bias"] \
            + layer_norm(context[row], p_head["context_norm.weight"], p_head["context_norm.bias"]) \
            @ p_head["context_proj.weight"].T + p_head["context_proj.bias"]
        query = hidden[n] @ p_head["q_proj.weight"].T + p_head["q_proj.bias"]
        valid = [m for m in range(len(ids[row])) if ids[row][m] >= 0]
        vocab = np.exp(logits[n] - logits[n].max())
        vocab /= vocab.sum()
        if not valid:
            out[n] = vocab
            continue
        scores = np.array([query @ keys[m] / np.sqrt(d) + p_head["match_weight"][0] * shared[n, m] for m in valid])
        pointer = np.exp(scores - scores.max())
        pointer /= pointer.sum()
        share = 1 / (1 + np.exp(-(hidden[n] @ p_head["switch.weight"][0] + p_head["switch.bias"][0])))
        out[n] = (1 - share) * vocab
        for weight, m in zip(pointer, valid):
            out[n, ids[row][m]] += share * weight
    return out


def slow_context(run, i, c):
    """The c tokens before run[i], nearest first, -1 past the run's start or past a -1 in it."""
    out = []
    for j in range(1, c + 1):
        token = run[i - j] if i - j >= 0 else -1
        out.append(-1 if token < 0 or (out and out[-1] < 0) else token)
    return out


def head_and_inputs(seed=0, dtype=np.float64):
    head = MemoryCopyHead(6, rng(seed), switch_init=0.3).to_dtype(dtype)
    for p in head.parameters():  # off the symmetric norm start
        p.data = p.data + rng(seed + 1).uniform(-0.3, 0.3, p.shape).astype(dtype)
    hidden = rng(2).standard_normal((4, 6)).astype(dtype)
    logits = rng(3).standard_normal((4, 9)).astype(dtype)
    memory = rng(4).standard_normal((2, 5, 6)).astype(dtype)
    ids = np.array([[-1, 2, 7, 2, -1],          # a slot, a repeated token, padding
                    [-1, -1, -1, -1, -1]])      # a row with nothing to copy
    rows = np.array([0, 1, 0, 0])
    previous = rng(5).standard_normal((2, 5, 6)).astype(dtype)
    context = rng(6).standard_normal((2, 5, 6)).astype(dtype)
    shared = rng(7).integers(0, 4, (4, 5)).astype(dtype)
    return head, hidden, logits, memory, ids, rows, previous, context, shared


def test_mixture_matches_a_token_by_token_reference_and_sums_to_one():
    head, hidden, logits, memory, ids, rows, previous, context, shared = head_and_inputs()
    with no_grad():
        log_p = head(Tensor(hidden), Tensor(logits), Tensor(memory), ids, rows, Tensor(previous), Tensor(context),
                     shared).data
    expected = reference_mixture(head, hidden, logits, memory, ids, rows, previous, context, shared)
    np.testing.assert_allclose(np.exp(log_p), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=1e-12)
    vocab = np.exp(logits[1] - logits[1].max())
    np.testing.assert_allclose(np.exp(log_p[1]), vocab / vocab.sum(), rtol=1e-12)  # nothing to copy: the logits


def test_copy_head_gradients_match_finite_differences():
    head, hidden, logits, memory, ids, rows, previous, context, shared = head_and_inputs()
    inputs = [Tensor(hidden, requires_grad=True), Tensor(logits, requires_grad=True), Tensor(memory, requires_grad=True),
              Tensor(previous, requires_grad=True), Tensor(context, requires_grad=True), *head.parameters()]
    assert gradcheck(lambda h, z, m, b, c, *params: head(h, z, m, ids, rows, b, c, shared), inputs)


def test_pointer_covers_the_tokens_read_the_working_cache_and_part_a_with_their_predecessors():
    model = filled_model(copy_head=True)
    batch = make_infill_batch([np.arange(10, 22), np.arange(20, 28)], [[(3, 5)], [(1, 2)]], SPECIAL)
    read = model(batch, record_access=False).read
    n_slots = model.config.semantic_top_k
    for row, entries in enumerate(read.retrieved):
        store, tokens = model.memory.episodic[row], model.memory.entry_tokens[row]
        expected = np.concatenate([tokens[e, :store.lengths[e]] for e in entries])  # entry by entry, in order
        np.testing.assert_array_equal(read.token_ids[row, :n_slots], -1)
        np.testing.assert_array_equal(read.token_ids[row, n_slots:n_slots + len(expected)], expected)
        assert (read.token_ids[row, n_slots + len(expected):] == -1).all()
        assert read.count[row] == n_slots + len(expected)
    # the copy head also points at the working cache: the last working_cache_len tokens written
    r = rng(0)
    written = [[r.integers(10, 40, 12) for _ in range(2)] for _ in range(4)]  # as filled_model wrote them
    cache_len = model.config.working_cache_len
    width = read.tokens.shape[1]
    np.testing.assert_array_equal(read.pointer_ids[:, :width], read.token_ids)
    np.testing.assert_array_equal(read.pointer_ids[:, width:width + cache_len],
                                  np.stack([row[-cache_len:] for row in written[-1]]))
    # then Part A without its [MASK]s and padding: row 0 is 10 11 12 [M] 15 ..., row 1 20 [M] 22 ... 27 [PAD] ...
    part_a = read.pointer_ids[:, width + cache_len:]
    np.testing.assert_array_equal(part_a[0], [10, 11, 12, -1, 15, 16, 17, 18, 19, 20, 21])
    np.testing.assert_array_equal(part_a[1], [20, -1, 22, 23, 24, 25, 26, 27, -1, -1, -1])
    c = model.config.copy_context
    for row, entries in enumerate(read.retrieved):  # each token's context in the text written
        stream = np.concatenate([segments[row] for segments in written])
        store, tokens = model.memory.episodic[row], model.memory.entry_tokens[row]
        expected = [[-1] * c] * n_slots
        for e in entries:
            text = tokens[e, :store.lengths[e]]
            start = next(i for i in range(len(stream)) if (stream[i:i + len(text)] == text).all())
            expected += [slow_context(stream, start + i, c) for i in range(len(text))]
        expected += [[-1] * c] * (width - len(expected))
        cache = written[-1][row][-cache_len:]  # a run of its own
        expected += [slow_context(cache, i, c) for i in range(cache_len)]
        np.testing.assert_array_equal(read.pointer_previous_ids[row, :width + cache_len], expected)
    previous_a = read.pointer_previous_ids[:, width + cache_len:]  # runs stop at the start and at a [MASK]
    for row in range(2):
        expected = [slow_context(part_a[row], i, c) if part_a[row, i] >= 0 else [-1] * c
                    for i in range(part_a.shape[1])]
        np.testing.assert_array_equal(previous_a[row], expected)
    np.testing.assert_array_equal(previous_a[0, :, 0], [-1, 10, 11, -1, -1, 15, 16, 17, 18, 19, 20])
    np.testing.assert_array_equal(previous_a[0, 7, :4], [17, 16, 15, -1])
    source = model.memory.working.read(model.source_layer)[0]
    np.testing.assert_allclose(read.pointer_tokens.data[:, width:width + cache_len],
                               source - source.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    with no_grad():
        states = model(batch, record_access=False, collect_layer_inputs=True).layer_inputs[model.source_layer]
    copyable = part_a >= 0
    for row in range(2):
        kept = states[row, :part_a.shape[1]][copyable[row]]
        np.testing.assert_allclose(read.pointer_tokens.data[row, width + cache_len:][copyable[row]],
                                   kept - kept.mean(axis=0), rtol=1e-4, atol=1e-5)
        assert (read.pointer_tokens.data[row, width + cache_len:][~copyable[row]] == 0).all()


@pytest.mark.parametrize("where", ["episodic memory", "the segment itself"])
def test_copy_head_learns_to_copy_a_key(where):
    """Each document states a key (one of 20 tokens) among filler, beyond the working window or in
    the asking segment itself; the question asks for it. Only the copy head can be right far above
    chance (1/20) this fast."""
    config = tiny_config(vocab_size=60, d_model=16, segment_len=8, chunk_len=4, working_cache_len=0,
                         episodic_capacity=8, retrieval_top_k=2, semantic=False, copy_head=True)
    from mlot.model.model import MLoTSpark
    from mlot.training.loss_functions import reconstruction_loss
    model = MLoTSpark(config, seed=0)
    keys, marker, question = np.arange(30, 50), 20, 21

    def batch(seed, size=16):
        r = rng(seed)
        answers = r.choice(keys, size)
        model.reset_memory(batch_size=size)
        if where == "the segment itself":  # filler, "marker key", filler, "question marker [MASK]"
            asked = [np.r_[r.integers(50, 60, 2), marker, key, r.integers(50, 60, 1), question, marker, key]
                     for key in answers]
            return make_infill_batch(asked, [[(7, 8)]] * size, model.special), answers
        for part in range(3):  # filler, the fact "marker key" in the middle, filler
            segments = [r.integers(50, 60, 8) for _ in range(size)]
            if part == 1:
                for segment, key in zip(segments, answers):
                    segment[2:4] = (marker, key)  # one chunk of 4 holds the whole fact
            model.write_memory(segments)
        model.flush_memory()
        asked = [np.array([question, marker, key]) for key in answers]
        return make_infill_batch(asked, [[(2, 3)]] * size, model.special), answers

    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for step in range(250):  # the shared-token match lifts the key's followers too: 150 steps gave 0.80
        b, _ = batch(step)
        loss = reconstruction_loss(model, model(b), b)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    b, answers = batch(10 ** 6, size=64)
    with no_grad():
        out = model(b)
    rows, cols = np.nonzero(b.targets == answers[:, None])
    predicted = model.output_logits(out.hidden[rows, cols], out.read, rows, model.text_before(b, rows, cols)).data.argmax(axis=1)
    assert (predicted == answers).mean() > 0.8


def test_shared_tokens_counts_distinct_tokens_of_each_run_against_python_sets():
    r = rng(8)
    query = r.integers(0, 6, (7, 5))
    query[1, 2] = -1                 # a run ends at its first -1: what follows does not count
    query[2, 0] = -1
    candidates = r.integers(0, 6, (3, 4, 6))
    candidates[0, 1, 3] = -1
    rows = np.array([0, 1, 2, 0, 1, 2, 0])

    def run(ids):
        ids = list(ids)
        return set(ids[:ids.index(-1)] if -1 in ids else ids)

    expected = [[len(run(query[n]) & run(candidates[rows[n], m])) for m in range(4)] for n in range(7)]
    np.testing.assert_array_equal(shared_tokens(query, candidates, rows), expected)


def test_text_before_is_the_span_so_far_then_part_a_before_its_mask():
    model = filled_model(copy_head=True)
    c = model.config.copy_context
    segment = np.arange(10, 30)
    batch = make_infill_batch([segment], [[(2, 4), (12, 15)]], SPECIAL)
    rows, cols = np.nonzero(batch.targets != -100)
    before = model.text_before(batch, rows, cols)
    # the second span's tokens 12, 13, 14, [EOP]: the text before is segment[:12 + t] back to the first span's [MASK]
    second = np.flatnonzero(batch.pos_a[0, cols] == batch.pos_a[0, cols].max())
    for t, n in enumerate(second):
        text = list(segment[4:12 + t][::-1]) + [-1] * c   # segment[2:4] is the first span, behind a [MASK]
        np.testing.assert_array_equal(before[n], text[:c])
    first = np.flatnonzero(batch.pos_a[0, cols] == batch.pos_a[0, cols].min())
    for t, n in enumerate(first):
        text = list(segment[:2 + t][::-1]) + [-1] * c
        np.testing.assert_array_equal(before[n], text[:c])
