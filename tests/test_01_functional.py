"""Fused functions: gradients against finite differences, values against composed twins."""
import numpy as np
import pytest

from mlot.architecture import Tensor, concat, gradcheck, no_grad, where
from mlot.architecture import functional as F


def rand(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).standard_normal(shape) * scale


def leaf(array):
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True)


# --- composed twins, from primitive ops only ----------------------------------------------------
def composed_softmax(x, axis=-1):
    e = (x - Tensor(x.data.max(axis=axis, keepdims=True))).exp()
    return e / e.sum(axis=axis, keepdims=True)


def composed_log_softmax(x, axis=-1):
    shifted = x - Tensor(x.data.max(axis=axis, keepdims=True))
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def composed_cross_entropy(logits, targets, ignore_index=-100):
    flat = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    keep = targets != ignore_index
    picked = composed_log_softmax(flat)[np.flatnonzero(keep), targets[keep]]
    return -picked.sum() / max(int(keep.sum()), 1)


def composed_attention(q, k, v, mask):
    """mask: boolean (B or 1, 1, Tq, Tk), True where visible; rows with no visible key give 0."""
    scores = (q @ k.transpose()) * (1.0 / np.sqrt(q.shape[-1]))
    scores = where(mask, scores, -1e30)
    probs = composed_softmax(scores)
    probs = where(mask.any(axis=-1, keepdims=True), probs, 0.0)
    return probs @ v


def explicit_mask(B, Tq, Tk, mode, prefix_len=None, q_offset=None, key_start=None):
    q_offset = Tk - Tq if q_offset is None else q_offset
    mask = np.zeros((B, 1, Tq, Tk), dtype=bool)
    for b in range(B):
        for i in range(Tq):
            for j in range(Tk):
                if key_start is not None and j < key_start[b]:
                    mask[b, 0, i, j] = False
                elif mode == "full":
                    mask[b, 0, i, j] = True
                elif mode == "causal":
                    mask[b, 0, i, j] = j <= i + q_offset
                else:
                    mask[b, 0, i, j] = j < prefix_len[b] or j <= i + q_offset
    return mask


# --- gradient checks ------------------------------------------------------------------------------
def attention_case(B, H, Tq, Tk, D, **kw):
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw),
            [rand(B, H, Tq, D), rand(B, H, Tk, D, seed=1), rand(B, H, Tk, D, seed=2)])


GRAD_CASES = {
    "softmax_last": (lambda x: F.softmax(x), [rand(3, 5)]),
    "softmax_axis0": (lambda x: F.softmax(x, axis=0), [rand(4, 3, 2)]),
    "log_softmax": (lambda x: F.log_softmax(x), [rand(2, 3, 7)]),
    "log_softmax_axis1": (lambda x: F.log_softmax(x, axis=1), [rand(2, 3, 4)]),
    "gelu": (lambda x: F.gelu(x), [rand(3, 7, scale=2.0)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [rand(2, 3, 5), rand(5, seed=1), rand(5, seed=2)]),
    "layer_norm_width_1": (lambda x, w, b: F.layer_norm(x, w, b) + x, [rand(4, 1), rand(1), rand(1)]),
    "rms_norm": (lambda x, w: F.rms_norm(x, w), [rand(3, 6), rand(6, seed=3)]),
    "embedding": (lambda w: F.embedding(np.array([[1, 3, 1], [0, 1, 4]]), w), [rand(5, 3)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([[2, 0, 4], [1, -100, 3]])), [rand(2, 3, 5)]),
    "attention_full": attention_case(2, 2, 3, 3, 4),
    "attention_causal": attention_case(1, 3, 5, 5, 2, causal=True),
    "attention_causal_cached": attention_case(2, 1, 2, 5, 3, causal=True),
    "attention_prefix": attention_case(2, 2, 5, 5, 3, prefix_len=np.array([2, 4])),
    "attention_cross": attention_case(2, 2, 3, 7, 4),
    "attention_single_key": attention_case(1, 1, 4, 1, 3),
    "rotary": (lambda x: F.rotary(x, *F.rotary_tables(np.array([[[0, 3, -2]]]), 4, dtype=np.float64)),
               [rand(2, 2, 3, 4)]),
    "dropout": (lambda x: F.dropout(x, 0.4, np.random.default_rng(5)), [rand(4, 5)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [rand(2, 3, 4), rand(5, 4, seed=1), rand(5, seed=2)]),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradient_matches_finite_differences(name):
    fn, arrays = GRAD_CASES[name]
    assert gradcheck(fn, [leaf(a) for a in arrays])


# --- fused against composed (float32, the training dtype) -----------------------------------------
def _values_and_grads(fn, arrays):
    inputs = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    out = fn(*inputs)
    (out * Tensor(rand(*out.shape, seed=11).astype(np.float32))).sum().backward()
    return out.data, [t.grad for t in inputs]


@pytest.mark.parametrize("fused, composed, arrays", [
    (F.softmax, composed_softmax, [rand(6, 33, scale=3)]),
    (F.log_softmax, composed_log_softmax, [rand(4, 2, 17, scale=3)]),
    (lambda x: F.cross_entropy(x, np.array([3, 0, -100, 16, 5])),
     lambda x: composed_cross_entropy(x, np.array([3, 0, -100, 16, 5])), [rand(5, 17, scale=4)]),
])
def test_fused_matches_composed(fused, composed, arrays):
    value, grads = _values_and_grads(fused, arrays)
    ref_value, ref_grads = _values_and_grads(composed, arrays)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("B, H, Tq, Tk, D, mode, prefix, q_offset, key_start", [
    (2, 3, 7, 7, 5, "full", None, None, None),
    (2, 2, 9, 9, 4, "causal", None, None, None),
    (1, 2, 3, 8, 4, "causal", None, None, None),
    (3, 2, 6, 6, 3, "prefix", [0, 3, 6], None, None),
    (2, 1, 4, 10, 6, "full", None, None, None),
    (2, 2, 5, 5, 4, "prefix", [2, 0], -3, None),  # negative offset: early queries of row 1 see no key
    (2, 2, 4, 9, 4, "prefix", [7, 6], 5, [2, 5]),  # a left-padded cache of 5 in front
])
def test_attention_matches_explicit_mask(B, H, Tq, Tk, D, mode, prefix, q_offset, key_start):
    q, k, v = rand(B, H, Tq, D), rand(B, H, Tk, D, seed=1), rand(B, H, Tk, D, seed=2)
    mask = explicit_mask(B, Tq, Tk, mode, prefix, q_offset, key_start)
    kw = {"causal": mode == "causal", "prefix_len": None if prefix is None else np.array(prefix),
          "key_start": key_start}
    if q_offset is not None:
        kw["q_offset"] = q_offset
    if q_offset is not None and q_offset < 0:
        assert not mask.any(axis=-1).all()  # the case really has fully masked rows
    value, grads = _values_and_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw), [q, k, v])
    ref_value, ref_grads = _values_and_grads(lambda q, k, v: composed_attention(q, k, v, mask), [q, k, v])
    np.testing.assert_allclose(value, ref_value, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5)


def test_rotary_scores_depend_only_on_distance():
    q, k = rand(1, 1, 1, 8), rand(1, 1, 1, 8, seed=1)

    def score(i, j):
        rq = F.rotary(Tensor(q), *F.rotary_tables(np.array([[[i]]]), 8, dtype=np.float64))
        rk = F.rotary(Tensor(k), *F.rotary_tables(np.array([[[j]]]), 8, dtype=np.float64))
        return float((rq.data * rk.data).sum())

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-9)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)


def test_cross_entropy_known_value_and_all_ignored():
    logits = Tensor(np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=np.float32)), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 2]))
    assert loss.item() == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2, rel=1e-6)
    none = F.cross_entropy(logits, np.array([-100, -100]))
    none.backward()
    assert none.item() == 0.0 and not logits.grad.any()


def test_dropout_statistics_and_eval_identity():
    x = Tensor(np.ones((200, 200), dtype=np.float32))
    y = F.dropout(x, 0.25, np.random.default_rng(0)).data
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.75)
    assert F.dropout(x, 0.25, np.random.default_rng(0), training=False) is x


def test_concat_past_keys_equals_one_causal_call():
    """Attention of the last 2 queries over 5 cached+new keys equals the last rows of a full call."""
    q, k, v = (Tensor(rand(1, 2, 5, 4, seed=s).astype(np.float32)) for s in range(3))
    with no_grad():
        full = F.scaled_dot_product_attention(q, k, v, causal=True)
        tail = F.scaled_dot_product_attention(q[:, :, 3:], concat([k[:, :, :3], k[:, :, 3:]], axis=2), v,
                                              causal=True)
    np.testing.assert_allclose(tail.data, full.data[:, :, 3:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: F.embedding(np.array([0, 5]), Tensor(np.zeros((5, 2)))), r"\[0, 5\)"),
    (lambda: F.embedding(np.array([0.5]), Tensor(np.zeros((5, 2)))), "integers"),
    (lambda: F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 1, 2])), "targets of shape"),
    (lambda: F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 3])), "3"),
    (lambda: F.layer_norm(Tensor(np.zeros((2, 3))), Tensor(np.ones(4)), Tensor(np.zeros(4))), "last axis"),
    (lambda: F.scaled_dot_product_attention(*(Tensor(np.zeros((2, 3, 4))),) * 3), r"\(B, H, T, D\)"),
    (lambda: F.scaled_dot_product_attention(Tensor(np.zeros((1, 1, 2, 4))), Tensor(np.zeros((1, 1, 2, 3))),
                                            Tensor(np.zeros((1, 1, 2, 3)))), "incompatible"),
    (lambda: F.dropout(Tensor(np.zeros(2)), 1.0, np.random.default_rng()), "dropout"),
])
def test_bad_inputs_say_what_is_wrong(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
