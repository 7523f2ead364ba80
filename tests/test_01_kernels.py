"""Tests of mlot.architecture.kernels against plain NumPy references written here.

Values: each kernel against a float64 NumPy reference of the same formula. Gradients: each
backward kernel against central finite differences of that reference (float64), so no
expected value comes from the kernels themselves. Every case runs in float32 and float64,
on odd sizes (C=1, 7, 67, 130: the SIMD loops and their scalar tails).
"""

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from numba import njit

from mlot.architecture import kernels as K

DTYPES = [np.float32, np.float64]
VALUE_TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}
# finite differences in float64 are good to ~1e-9; float32 kernels to ~1e-6 relative
GRAD_TOL = {np.float32: dict(rtol=1e-3, atol=1e-4), np.float64: dict(rtol=1e-6, atol=1e-8)}
EPS = 1e-5


def rounded(values, dtype):
    """(kernel input in dtype, the same numbers in float64 for the reference)."""
    in_dtype = np.ascontiguousarray(values, dtype=dtype)
    return in_dtype, in_dtype.astype(np.float64)


def numerical_gradient(loss, target, step=1e-6):
    """Central differences of the scalar loss() with respect to the float64 array target,
    perturbed in place one element at a time."""
    grad = np.zeros_like(target)
    flat, grad_flat = target.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        original = flat[k]
        flat[k] = original + step
        up = loss()
        flat[k] = original - step
        down = loss()
        flat[k] = original
        grad_flat[k] = (up - down) / (2 * step)
    return grad


# ---------------------------------------------------------------------------------------
# NumPy references (float64)


def ref_softmax(x):
    """Row softmax; a row that is all -inf gives zeros (the kernels' documented rule)."""
    row_max = x.max(axis=-1, keepdims=True, initial=-np.inf)
    empty = np.isneginf(row_max)
    e = np.exp(x - np.where(empty, 0.0, row_max))
    return np.where(empty, 0.0, e / np.where(empty, 1.0, e.sum(axis=-1, keepdims=True)))


def ref_log_softmax(x):
    row_max = x.max(axis=-1, keepdims=True)
    return x - row_max - np.log(np.exp(x - row_max).sum(axis=-1, keepdims=True))


def ref_layer_norm(x, weight, bias):
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def ref_rms_norm(x, weight):
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + EPS) * weight


def ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# ---------------------------------------------------------------------------------------
# the vectorisable exp under every kernel


@njit
def exp_each(values):
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = K._exp(values[i])
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_exp_matches_numpy_within_two_eps_and_saturates(dtype):
    values = np.linspace(-87.0, 88.0, 30001).astype(dtype)
    expected = np.exp(values.astype(np.float64))
    np.testing.assert_allclose(exp_each(values), expected, rtol=2 * np.finfo(dtype).eps, atol=0)
    edges = np.array([-87.5, -1e4, -np.inf, 88.5, 1e4, np.inf, np.nan], dtype)
    np.testing.assert_array_equal(exp_each(edges), [0, 0, 0, np.inf, np.inf, np.inf, np.nan])


# ---------------------------------------------------------------------------------------
# row operations: one table drives value and gradient tests


@dataclass(frozen=True)
class RowOp:
    name: str
    params: tuple  # names of the (C,) parameter arrays after x
    reference: Callable  # (x, *params) float64 -> y
    forward: Callable  # kernel (x, *params) -> y
    backward: Callable  # kernel (x, *params, dy) -> grads of (x, *params)


def _layer_norm_backward(x, weight, bias, dy):
    _, mean, rstd = K.layer_norm_forward(x, weight, bias, EPS)
    return K.layer_norm_backward(dy, x, mean, rstd, weight)


def _rms_norm_backward(x, weight, dy):
    _, rstd = K.rms_norm_forward(x, weight, EPS)
    return K.rms_norm_backward(dy, x, rstd, weight)


ROW_OPS = [
    RowOp("softmax", (), ref_softmax, K.softmax_forward,
          lambda x, dy: (K.softmax_backward(K.softmax_forward(x), dy),)),
    RowOp("log_softmax", (), ref_log_softmax, K.log_softmax_forward,
          lambda x, dy: (K.log_softmax_backward(K.log_softmax_forward(x), dy),)),
    RowOp("layer_norm", ("weight", "bias"), ref_layer_norm,
          lambda x, w, b: K.layer_norm_forward(x, w, b, EPS)[0], _layer_norm_backward),
    RowOp("rms_norm", ("weight",), ref_rms_norm,
          lambda x, w: K.rms_norm_forward(x, w, EPS)[0], _rms_norm_backward),
    RowOp("gelu", (), ref_gelu, K.gelu_forward, lambda x, dy: (K.gelu_backward(x, dy),)),
]
ROW_SHAPES = [(1, 1), (3, 7), (4, 67), (2, 130)]  # (N, C)


def row_op_inputs(op, shape, dtype, seed):
    """x scaled to exercise the nonlinearity, (C,) params, dy: each as (dtype, float64)."""
    rng = np.random.default_rng(seed)
    arrays = [rounded(2.0 * rng.standard_normal(shape), dtype)]
    arrays += [rounded(1.0 + 0.5 * rng.standard_normal(shape[1]), dtype) for _ in op.params]
    dy = rounded(rng.standard_normal(shape), dtype)
    return arrays, dy


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("op", ROW_OPS, ids=lambda op: op.name)
def test_row_op_matches_reference(op, shape, dtype):
    arrays, _ = row_op_inputs(op, shape, dtype, seed=1)
    y = op.forward(*(a for a, _ in arrays))
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, op.reference(*(r for _, r in arrays)), **VALUE_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("op", ROW_OPS, ids=lambda op: op.name)
def test_row_op_gradient_matches_finite_differences(op, shape, dtype):
    arrays, (dy, dy_ref) = row_op_inputs(op, shape, dtype, seed=2)
    grads = op.backward(*(a for a, _ in arrays), dy)
    references = [r for _, r in arrays]
    for name, grad, target in zip(("x",) + op.params, grads, references):
        expected = numerical_gradient(lambda: np.sum(op.reference(*references) * dy_ref), target)
        assert grad.dtype == dtype, name
        np.testing.assert_allclose(grad, expected, err_msg=f"{op.name} d{name}", **GRAD_TOL[dtype])


@pytest.mark.parametrize("op", ROW_OPS, ids=lambda op: op.name)
def test_row_op_accepts_zero_rows(op):
    arrays, (dy, _) = row_op_inputs(op, (0, 5), np.float32, seed=3)
    assert op.forward(*(a for a, _ in arrays)).shape == (0, 5)
    grads = op.backward(*(a for a, _ in arrays), dy)
    assert grads[0].shape == (0, 5)
    for grad in grads[1:]:
        np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_softmax_all_neg_inf_row_is_zero_and_nan_propagates(dtype):
    x = np.zeros((3, 9), dtype)
    x[0] = -np.inf
    x[1, 4] = np.nan
    x[2, :3] = -np.inf  # partly -inf: an ordinary row
    y = K.softmax_forward(x)
    np.testing.assert_array_equal(y[0], 0.0)
    assert np.isnan(y[1]).all()
    np.testing.assert_allclose(y[2], [0.0] * 3 + [1 / 6] * 6, **VALUE_TOL[dtype])
    log_y = K.log_softmax_forward(x)
    assert np.isneginf(log_y[0]).all() and np.isnan(log_y[1]).all()


def test_softmax_extreme_logits_are_stable():
    x = np.array([[1e4, 0.0, -1e4], [-3e38, -3e38, -3e38]], np.float32)
    np.testing.assert_allclose(K.softmax_forward(x), [[1, 0, 0], [1 / 3] * 3], rtol=1e-6)
    np.testing.assert_allclose(K.log_softmax_forward(x)[0], [0, -1e4, -2e4], rtol=1e-6)


def test_layer_norm_returns_statistics_of_each_row():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    w, b = np.ones(4), np.zeros(4)
    y, mean, rstd = K.layer_norm_forward(x, w, b, 0.0)
    assert mean[0] == 3.0 and rstd[0] == pytest.approx(1 / math.sqrt(3.5))
    with pytest.raises(ValueError, match="weight/bias"):
        K.layer_norm_forward(x, np.ones(3), b, EPS)


def test_gelu_known_values_and_any_shape():
    x = np.array([0.0, 50.0, -50.0, 1.0])
    gelu_one = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715))
    np.testing.assert_allclose(K.gelu_forward(x), [0.0, 50.0, 0.0, gelu_one], atol=1e-15)
    np.testing.assert_allclose(K.gelu_backward(x, np.ones(4))[:3], [0.5, 1.0, 0.0], atol=1e-15)
    cube = np.random.default_rng(4).standard_normal((2, 3, 5)).astype(np.float32)
    y = K.gelu_forward(cube)
    assert y.shape == cube.shape
    np.testing.assert_allclose(y, ref_gelu(cube.astype(np.float64)), **VALUE_TOL[np.float32])


def test_norm_weight_gradients_do_not_depend_on_thread_count():
    """dweight/dbias are added per fixed row block in a fixed order."""
    numba = pytest.importorskip("numba")
    if numba.config.DISABLE_JIT or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs the compiled kernels and 2 threads")
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 300, 48)).astype(np.float32)
    w, b = rng.standard_normal((2, 48)).astype(np.float32)
    _, mean, rstd = K.layer_norm_forward(x, w, b, EPS)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        results.append(K.layer_norm_backward(dy, x, mean, rstd, w))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for one_thread, two_threads in zip(*results):
        np.testing.assert_array_equal(one_thread, two_threads)


# ---------------------------------------------------------------------------------------
# attention softmax


def visible_keys(n_batch, n_queries, n_keys, mode, prefix_len, q_offset, key_start):
    """(B, Tq, Tk) boolean mask written out from the visibility rules, one entry at a time."""
    mask = np.zeros((n_batch, n_queries, n_keys), bool)
    for b in range(n_batch):
        for i in range(n_queries):
            for j in range(n_keys):
                causal = j <= i + q_offset
                if j < key_start[b]:
                    mask[b, i, j] = False
                elif mode == K.ATTENTION_FULL:
                    mask[b, i, j] = True
                elif mode == K.ATTENTION_CAUSAL:
                    mask[b, i, j] = causal
                else:
                    mask[b, i, j] = causal or j < prefix_len[b]
    return mask


def ref_attention_softmax(scores, scale, mask):
    """softmax of scale*scores over visible keys, zeros elsewhere and in empty rows."""
    visible = mask[:, None]  # (B, 1, Tq, Tk) broadcast over heads
    return np.where(visible, ref_softmax(np.where(visible, scale * scores, -np.inf)), 0.0)


@dataclass(frozen=True)
class AttentionCase:
    shape: tuple  # (B, H, Tq, Tk)
    mode: int
    prefix_len: tuple = (0,)
    q_offset: int = 0
    key_start: tuple = None  # per batch row; None = all zero


ATTENTION_CASES = [
    AttentionCase((2, 3, 5, 5), K.ATTENTION_FULL),
    AttentionCase((1, 1, 2, 3), K.ATTENTION_FULL),  # cross attention, Tq != Tk
    AttentionCase((2, 2, 4, 4), K.ATTENTION_CAUSAL),
    AttentionCase((1, 2, 3, 7), K.ATTENTION_CAUSAL, q_offset=4),  # KV cache: 4 keys cached
    AttentionCase((2, 1, 3, 9), K.ATTENTION_CAUSAL, q_offset=2),  # keys beyond the last query
    AttentionCase((1, 1, 5, 37), K.ATTENTION_CAUSAL, q_offset=30),  # long rows: SIMD + tails
    AttentionCase((3, 2, 6, 6), K.ATTENTION_PREFIX_LM, prefix_len=(0, 3, 6)),
    AttentionCase((2, 1, 4, 10), K.ATTENTION_PREFIX_LM, prefix_len=(7, 2), q_offset=3),
    AttentionCase((1, 1, 3, 0), K.ATTENTION_CAUSAL),  # no keys at all
    AttentionCase((2, 2, 3, 8), K.ATTENTION_PREFIX_LM, prefix_len=(6, 4), q_offset=4, key_start=(1, 3)),
    AttentionCase((2, 1, 4, 6), K.ATTENTION_PREFIX_LM, prefix_len=(0, 3), q_offset=-4),  # key padding
    AttentionCase((1, 1, 4, 5), K.ATTENTION_CAUSAL, q_offset=-2),  # early rows see nothing
    AttentionCase((2, 1, 2, 5), K.ATTENTION_FULL, key_start=(5, 2)),  # row 0 all hidden
]


def attention_inputs(case, dtype, seed):
    rng = np.random.default_rng(seed)
    scores = rounded(3.0 * rng.standard_normal(case.shape), dtype)
    dprobs = rounded(rng.standard_normal(case.shape), dtype)
    prefix_len = np.array(case.prefix_len if case.mode == K.ATTENTION_PREFIX_LM else (0,), np.int64)
    key_start = np.array(case.key_start or (0,) * case.shape[0], np.int64)
    mask = visible_keys(case.shape[0], case.shape[2], case.shape[3], case.mode, prefix_len,
                        case.q_offset, key_start)
    return scores, dprobs, (prefix_len, key_start), mask


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=repr)
def test_attention_softmax_matches_masked_reference(case, dtype):
    (scores, scores_ref), _, (prefix_len, key_start), mask = attention_inputs(case, dtype, seed=6)
    probs = K.attention_softmax_forward(scores, 0.7, case.mode, prefix_len, case.q_offset, key_start)
    assert probs.dtype == dtype and probs.shape == case.shape
    expected = ref_attention_softmax(scores_ref, 0.7, mask)
    np.testing.assert_allclose(probs, expected, **VALUE_TOL[dtype])
    masked = ~np.broadcast_to(mask[:, None], case.shape)
    assert not probs[masked].any(), "masked probs must be exactly 0"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=repr)
def test_attention_softmax_gradient_matches_finite_differences(case, dtype):
    inputs = attention_inputs(case, dtype, seed=7)
    (scores, scores_ref), (dprobs, dprobs_ref), (prefix_len, key_start), mask = inputs
    probs = K.attention_softmax_forward(scores, 0.7, case.mode, prefix_len, case.q_offset, key_start)
    dscores = K.attention_softmax_backward(probs, dprobs, 0.7)
    expected = numerical_gradient(
        lambda: np.sum(ref_attention_softmax(scores_ref, 0.7, mask) * dprobs_ref), scores_ref)
    assert dscores.dtype == dtype
    np.testing.assert_allclose(dscores, expected, **GRAD_TOL[dtype])
    assert not dscores[~np.broadcast_to(mask[:, None], case.shape)].any()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_attention_row_without_finite_visible_score_is_zero(dtype):
    """A row whose visible scores are all -inf (e.g. an additive padding mask) must give
    zeros, not NaN."""
    scores = np.zeros((1, 2, 3, 4), dtype)
    scores[0, 0, 1, :2] = -np.inf  # causal row 1 sees keys 0..1: both -inf
    scores[0, 1, 2, 1] = np.nan  # a NaN must not vanish
    probs = K.attention_softmax_forward(scores, 1.0, K.ATTENTION_CAUSAL, np.zeros(1, np.int64), 0,
                                        np.zeros(1, np.int64))
    np.testing.assert_array_equal(probs[0, 0, 1], 0.0)
    np.testing.assert_allclose(probs[0, 0, 2], [1 / 3, 1 / 3, 1 / 3, 0.0], **VALUE_TOL[dtype])
    assert np.isnan(probs[0, 1, 2, :3]).all()


def test_attention_softmax_rejects_bad_arguments():
    scores = np.zeros((2, 1, 3, 3))
    starts = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="mode"):
        K.attention_softmax_forward(scores, 1.0, 3, np.zeros(2, np.int64), 0, starts)
    with pytest.raises(ValueError, match="prefix_len"):
        K.attention_softmax_forward(scores, 1.0, K.ATTENTION_PREFIX_LM, np.zeros(1, np.int64), 0, starts)
    with pytest.raises(ValueError, match="key_start"):
        K.attention_softmax_forward(scores, 1.0, K.ATTENTION_CAUSAL, np.zeros(2, np.int64), 0, starts[:1])


# ---------------------------------------------------------------------------------------
# fused softmax cross-entropy


def ref_cross_entropy(logits, targets, ignore_index):
    """(loss sum, count, lse) with a stable log-sum-exp, in float64."""
    row_max = logits.max(axis=1)
    lse = row_max + np.log(np.exp(logits - row_max[:, None]).sum(axis=1))
    counted = targets != ignore_index
    picked = logits[np.flatnonzero(counted), targets[counted]]
    return float(np.sum(lse[counted] - picked)), int(counted.sum()), lse


@dataclass(frozen=True)
class CrossEntropyCase:
    n_rows: int
    n_classes: int
    ignored_rows: tuple = ()
    ignore_index: int = -100
    logit_scale: float = 2.0


CROSS_ENTROPY_CASES = [
    CrossEntropyCase(5, 7, ignored_rows=(1, 4)),
    CrossEntropyCase(3, 130),
    CrossEntropyCase(4, 1),  # one class: every loss is 0
    CrossEntropyCase(3, 33, ignored_rows=(0, 1, 2)),  # nothing counted
    CrossEntropyCase(6, 9, ignored_rows=(2,), ignore_index=3),  # ignore_index is a class id
    CrossEntropyCase(2, 67, logit_scale=1e3),  # large logits: log-sum-exp must not overflow
]


def cross_entropy_inputs(case, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = rounded(case.logit_scale * rng.standard_normal((case.n_rows, case.n_classes)), dtype)
    targets = rng.integers(0, case.n_classes, case.n_rows)
    targets[targets == case.ignore_index] = (case.ignore_index + 1) % case.n_classes
    targets[list(case.ignored_rows)] = case.ignore_index
    return logits, targets


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CROSS_ENTROPY_CASES, ids=repr)
def test_cross_entropy_matches_reference(case, dtype):
    (logits, logits_ref), targets = cross_entropy_inputs(case, dtype, seed=8)
    loss_sum, count, lse = K.cross_entropy_forward(logits, targets, case.ignore_index)
    ref_loss, ref_count, ref_lse = ref_cross_entropy(logits_ref, targets, case.ignore_index)
    assert isinstance(loss_sum, float) and isinstance(count, int)
    assert count == ref_count
    tol = VALUE_TOL[dtype]
    np.testing.assert_allclose(lse, ref_lse, rtol=tol["rtol"], atol=tol["atol"] * case.logit_scale)
    np.testing.assert_allclose(loss_sum, ref_loss, rtol=tol["rtol"],
                               atol=tol["atol"] * case.logit_scale * case.n_rows)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", [c for c in CROSS_ENTROPY_CASES if c.logit_scale < 10], ids=repr)
def test_cross_entropy_gradient_matches_finite_differences(case, dtype):
    (logits, logits_ref), targets = cross_entropy_inputs(case, dtype, seed=9)
    grad_scale = 0.37
    _, _, lse = K.cross_entropy_forward(logits, targets, case.ignore_index)
    dlogits = K.cross_entropy_backward(logits, targets, lse, case.ignore_index, grad_scale)
    def loss():
        return grad_scale * ref_cross_entropy(logits_ref, targets, case.ignore_index)[0]

    expected = numerical_gradient(loss, logits_ref)
    assert dlogits.dtype == dtype
    np.testing.assert_allclose(dlogits, expected, **GRAD_TOL[dtype])
    np.testing.assert_array_equal(dlogits[targets == case.ignore_index], 0.0)


@pytest.mark.parametrize("bad_target", [7, -1, 10 ** 9])
def test_cross_entropy_rejects_targets_out_of_range(bad_target):
    logits = np.zeros((4, 7), np.float32)
    targets = np.array([0, -100, bad_target, 6])
    with pytest.raises(ValueError, match=f"target {bad_target} at row 2"):
        K.cross_entropy_forward(logits, targets, -100)
    with pytest.raises(ValueError, match=f"target {bad_target} at row 2"):
        K.cross_entropy_backward(logits, targets, np.zeros(4, np.float32), -100, 1.0)


def test_cross_entropy_nan_logit_gives_nan_loss():
    logits = np.zeros((2, 5), np.float32)
    logits[1, 3] = np.nan
    loss_sum, count, _ = K.cross_entropy_forward(logits, np.array([0, 1]), -100)
    assert count == 2 and math.isnan(loss_sum)


# ---------------------------------------------------------------------------------------
# embedding gradient


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
# C=130 spans three column blocks of the parallel scatter; N=0 is the empty batch
@pytest.mark.parametrize("n_rows, n_cols, num_embeddings",
                         [(6, 1, 3), (9, 7, 5), (40, 130, 11), (0, 4, 3)])
def test_embedding_backward_scatter_adds_rows(n_rows, n_cols, num_embeddings, dtype):
    rng = np.random.default_rng(10)
    ids = rng.integers(0, num_embeddings, n_rows)
    ids[: min(3, n_rows)] = 1  # duplicates must accumulate
    dy, dy_ref = rounded(rng.standard_normal((n_rows, n_cols)), dtype)
    expected = np.zeros((num_embeddings, n_cols))
    for row, token in enumerate(ids):
        expected[token] += dy_ref[row]
    dweight = K.embedding_backward(ids, dy, num_embeddings)
    assert dweight.dtype == dtype
    np.testing.assert_allclose(dweight, expected, **VALUE_TOL[dtype])


@pytest.mark.parametrize("bad_id", [-1, 5])
def test_embedding_backward_rejects_ids_out_of_range(bad_id):
    with pytest.raises(ValueError, match="outside"):
        K.embedding_backward(np.array([0, bad_id]), np.ones((2, 3)), 5)


# ---------------------------------------------------------------------------------------
# AdamW, gradient statistics


def ref_adamw(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """PyTorch's AdamW step (decoupled weight decay, bias-corrected moments) in float64."""
    param = param * (1 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
    denom = np.sqrt(exp_avg_sq / (1 - beta2 ** step)) + eps
    return param - lr * (exp_avg / (1 - beta1 ** step)) / denom, exp_avg, exp_avg_sq


@pytest.mark.parametrize("size", [1, 7, 2 * K._FLAT_CHUNK + 3])
def test_adamw_update_matches_reference_over_steps(size):
    rng = np.random.default_rng(11)
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    state = [rng.standard_normal(size).astype(np.float32), np.zeros(size, np.float32),
             np.zeros(size, np.float32)]
    ref_state = [a.astype(np.float64) for a in state]
    for step in (1, 2, 3):
        grad = rng.standard_normal(size).astype(np.float32)
        K.adamw_update(state[0], grad, state[1], state[2], step=step, **hyper)
        ref_state = ref_adamw(ref_state[0], grad.astype(np.float64), ref_state[1], ref_state[2],
                              step=step, **hyper)
    for name, got, expected in zip(("param", "exp_avg", "exp_avg_sq"), state, ref_state):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_adamw_first_step_known_answers():
    """Step 1: the bias-corrected update is lr * g / (|g| + eps), about lr * sign(g); a zero
    gradient leaves only the weight decay."""
    param = np.array([1.0, 1.0, 2.0], np.float32)
    grad = np.array([3.0, -0.5, 0.0], np.float32)
    moments = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    K.adamw_update(param, grad, *moments, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                   weight_decay=0.5, step=1)
    np.testing.assert_allclose(param, [0.95 - 0.1, 0.95 + 0.1, 1.9], rtol=1e-6)
    with pytest.raises(ValueError, match="step"):
        K.adamw_update(param, grad, *moments, 0.1, 0.9, 0.999, 1e-8, 0.0, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("size", [0, 1, 7, 3 * K._FLAT_CHUNK + 5])
def test_sum_of_squares_matches_exact_sum(size, dtype):
    values = np.random.default_rng(12).standard_normal(size).astype(dtype)
    expected = math.fsum(float(v) ** 2 for v in values.astype(np.float64))
    result = K.sum_of_squares(values)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, K._FLAT_CHUNK - 1, K._FLAT_CHUNK + 17, -1])
def test_all_finite_detects_nan_and_inf(where, bad, dtype):
    values = np.full(2 * K._FLAT_CHUNK + 9, np.finfo(dtype).max / 2, dtype)  # large but finite
    assert K.all_finite(values)
    values[where] = bad
    assert not K.all_finite(values)


def test_all_finite_of_empty_array_is_true():
    assert K.all_finite(np.zeros(0, np.float32))


@pytest.mark.parametrize("bad, expected",
                         [(np.nan, math.isnan), (np.inf, math.isinf), (-np.inf, math.isinf)])
def test_sum_of_squares_propagates_non_finite(bad, expected):
    values = np.ones(K._FLAT_CHUNK + 3, np.float32)
    values[K._FLAT_CHUNK + 1] = bad
    assert expected(K.sum_of_squares(values))


# --- a kernel computes the same bits whether this process compiled it or loaded it from the cache ---
_KERNEL_BITS = """
import hashlib
import numpy as np
from mlot.architecture import kernels as K
rng = np.random.default_rng(0)
scores = rng.standard_normal((2, 3, 17, 33)).astype(np.float32) * 3
starts = np.zeros(2, np.int64)
probs = K.attention_softmax_forward(scores, 0.25, 2, np.full(2, 5, np.int64), 0, starts)
outputs = [probs, K.attention_softmax_backward(probs, rng.standard_normal(scores.shape).astype(np.float32), 0.25)]
for dtype in (np.float32, np.float64):
    logits = (rng.standard_normal((50, 400)) * 4).astype(dtype)
    targets = rng.integers(0, 400, 50)
    loss, count, lse = K.cross_entropy_forward(logits, targets, -100)
    outputs += [np.array([loss]), lse, K.cross_entropy_backward(logits, targets, lse, -100, 0.02),
                K.softmax_forward(logits), K.log_softmax_forward(logits)]
print(hashlib.sha256(b"".join(o.tobytes() for o in outputs)).hexdigest())
"""


def test_compiled_and_cached_kernels_give_the_same_bits(tmp_path):
    """A process that compiles the kernels and one that loads them from Numba's cache must agree
    bit for bit: a run resumed in a new process (cache warm) continues the losses of the run that
    compiled them. (Numba built parallel kernels loaded from the cache with the caller's fast-math
    flags inside `_exp`, whose last bit then differed: kernels._fence.)"""
    import os
    import subprocess
    import sys
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba_cache")}
    runs = [subprocess.run([sys.executable, "-c", _KERNEL_BITS], capture_output=True, text=True, env=environment,
                           check=True).stdout for _ in range(2)]
    assert len(runs[0]) == 65 and runs[0] == runs[1]
    assert any((tmp_path / "numba_cache").rglob("*.nbc"))  # the second process did read a cache
