"""Numba kernels for the hot paths of a training step.

Everything here is a plain function over C-contiguous NumPy arrays; matrix products stay
in BLAS (NumPy), these kernels do the element-wise, row-reduction, attention-softmax,
scatter-add and optimizer work around them. Each kernel works for float32 (training; run
on all Numba threads) and float64 (gradient checks; run serially) and returns arrays of its
input dtype.

Numerical rules, shared by all kernels:

* Row reductions (softmax sums, norm statistics, dot products inside a row) accumulate in
  the input dtype. The row loops are compiled with ``reassoc`` so LLVM splits each sum into
  8 to 32 SIMD partial sums, which keeps float32 error well below a plain running sum's.
* Reductions across rows (dweight, dbias, the loss sum, ``sum_of_squares``) accumulate in
  float64, over fixed-size blocks combined in a fixed order, so results do not depend on
  the number of threads.
* No ``nnan``/``ninf`` fast-math flags anywhere: -inf scores, NaN propagation and
  ``all_finite`` keep IEEE semantics. A NaN input makes the affected outputs NaN; it never
  disappears silently.
* ``exp`` is a polynomial with an explicit exponent-field scale (``_exp``) because libm's
  exp is a scalar call that stops loops from vectorising; it is accurate to about one ulp
  in both dtypes and is exactly 0 below -87 and +inf above 88.

Everything also runs with ``NUMBA_DISABLE_JIT=1`` (slowly), for debugging.
"""

import functools
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Flags for loops with reductions: reassoc lets sums vectorise; no nnan/ninf (see above).
_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
# _exp is compiled without reassoc, which would merge its two-part ln2 reduction (also kept apart: _fma).
_EXP_FASTMATH = {"nsz", "arcp", "contract"}

_ROWS_PER_BLOCK = 64  # rows per partial sum of a cross-row reduction (dweight, dbias)
_COLS_PER_BLOCK = 64  # embedding-gradient columns owned by one parallel task
_FLAT_CHUNK = 1 << 14  # elements per parallel task of the flat kernels


def _kernel(dtype_arg=0):
    """Compile a public kernel twice: with prange threads for float32 (training) and serially
    for other dtypes (float64 gradient checks, where speed does not matter and a parallel
    compile takes about four times as long). The returned function picks by the dtype of
    args[dtype_arg]; the two dispatchers never see the same signature, so they can share
    the function's on-disk cache entry. NumPy's error model: a division by zero gives inf or
    NaN instead of raising, whose check was a branch that kept every loop with a division
    (gelu) from vectorising."""
    def decorate(function):
        threaded = njit(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")(function)
        serial = njit(cache=True, fastmath=_FASTMATH, error_model="numpy")(function)

        @functools.wraps(function)
        def kernel(*args, **kwargs):
            chosen = threaded if args[dtype_arg].dtype == np.float32 else serial
            return chosen(*args, **kwargs)

        return kernel

    return decorate


# ---------------------------------------------------------------------------------------
# exp that vectorises


def _fma(a, b, c):
    """a * b + c rounded once (LLVM's `fma`, a hardware instruction on x86-64 since 2013). It
    keeps the two-part ln2 reduction of `_exp` apart where `_exp` is inlined into a `reassoc`
    kernel, as Numba's parallel kernels loaded from its cache are (without it their exp differed
    in the last bit from the freshly compiled one), and unlike LLVM's `arithmetic.fence`, which
    did the same before, it vectorises. This Python body (rounded twice) runs only under
    NUMBA_DISABLE_JIT."""
    return a * b + c


@intrinsic
def _llvm_fma(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        float_ir = args[0].type
        name = "llvm.fma.f32" if float_ir == ir.FloatType() else "llvm.fma.f64"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(float_ir, [float_ir] * 3), name)
        return builder.call(function, args)

    if not a == b == c or a not in (types.float32, types.float64):
        return None
    return a(a, b, c), codegen


@overload(_fma)
def _fma_typed(a, b, c):
    return lambda a, b, c: _llvm_fma(a, b, c)


def _build_exp(float_t, int_t, mantissa_bits, n_terms, ln2_hi, ln2_lo):
    """Return exp for one float type: exp(v) = 2**k * exp(r), r = v - k*ln2, |r| <= ln2/2.

    ln2 is split into a short ``ln2_hi`` (k * ln2_hi is exact) and a correction ``ln2_lo``
    (Cody-Waite), exp(r) is a Taylor polynomial of degree ``n_terms`` (enough for one ulp
    at |r| <= 0.35), and 2**k is built by writing k into the exponent field.
    """
    exponent_bias = int_t(2 ** (8 * np.dtype(float_t).itemsize - mantissa_bits - 2) - 1)
    shift = int_t(mantissa_bits)
    lowest, highest = float_t(-87.0), float_t(88.0)  # keeps 2**k normal: k in [-126, 127]
    log2e, half = float_t(1.0 / math.log(2.0)), float_t(0.5)
    c_hi, c_lo = float_t(ln2_hi), float_t(ln2_lo)
    zero, one, inf = float_t(0.0), float_t(1.0), float_t(np.inf)
    taylor = tuple(float_t(1.0 / math.factorial(d)) for d in range(n_terms, 0, -1))

    def exp_(v):
        v_clamped = v if v > lowest else lowest  # NaN goes to `lowest`: k stays defined
        v_clamped = v_clamped if v_clamped < highest else highest
        t = v_clamped * log2e
        k = int_t(t + half) if t >= zero else int_t(t - half)  # round half away from 0
        k_float = float_t(k)
        r = _fma(-k_float, c_lo, _fma(-k_float, c_hi, v))  # uses v itself, so NaN propagates
        poly = zero
        for c in taylor:
            poly = (poly + c) * r
        result = (poly + one) * int_t((k + exponent_bias) << shift).view(float_t)
        result = zero if v < lowest else result
        return inf if v > highest else result

    return exp_


_exp_float32 = _build_exp(np.float32, np.int32, 23, 7, 0.693145751953125, 1.428606820309417e-06)
_exp_float64 = _build_exp(np.float64, np.int64, 52, 13, 6.93147180369123816490e-01,
                          1.90821492927058770002e-10)


def _exp(v):
    """exp(v) in v's precision; this Python body runs only under NUMBA_DISABLE_JIT."""
    return _exp_float32(v) if isinstance(v, np.float32) else _exp_float64(v)


@overload(_exp, jit_options={"fastmath": _EXP_FASTMATH})
def _exp_for_type(v):
    return _exp_float32 if v == types.float32 else _exp_float64


# ---------------------------------------------------------------------------------------
# max that vectorises and propagates NaN


def _nan_max(a, b):
    """max(a, b), NaN if either is NaN; this Python body runs only under NUMBA_DISABLE_JIT."""
    return a if (a != a) or (a > b) else b


@intrinsic
def _llvm_maximum(typingctx, a, b):
    """LLVM's `maximum` (NaN-propagating): unlike a compare-and-select, which numba cannot
    tag as NaN-free, LLVM vectorises it as a reduction without any fast-math flag."""
    def codegen(context, builder, signature, args):
        float_ir = args[0].type
        name = "llvm.maximum.f32" if float_ir == ir.FloatType() else "llvm.maximum.f64"
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(float_ir, [float_ir, float_ir]), name)
        return builder.call(function, args)

    if a != b or a not in (types.float32, types.float64):
        return None
    return a(a, b), codegen


@overload(_nan_max)
def _nan_max_typed(a, b):
    return lambda a, b: _llvm_maximum(a, b)


# ---------------------------------------------------------------------------------------
# row helpers shared by several kernels


@njit(cache=True, fastmath=_FASTMATH)
def _row_max(values, scale, n_visible):
    """max of scale * values[:n_visible]; NaN if any of them is NaN (-inf if n_visible=0)."""
    row_max = values.dtype.type(-np.inf)
    for j in range(n_visible):
        row_max = _nan_max(row_max, scale * values[j])
    return row_max


@njit(cache=True, fastmath=_FASTMATH)
def _softmax_row(scores, probs, scale, n_visible):
    """probs[:n_visible] = softmax(scale * scores[:n_visible]); probs[n_visible:] = 0.

    A row with no visible key, or whose visible scores are all -inf, is all zeros: it is
    how a fully masked row should contribute to attention (nothing), instead of 0/0.
    """
    zero = probs.dtype.type(0)
    row_max = _row_max(scores, scale, n_visible)
    if row_max == -np.inf:
        n_visible = 0
    total = zero
    for j in range(n_visible):
        e = _exp(scale * scores[j] - row_max)
        probs[j] = e
        total += e
    inv_total = probs.dtype.type(1) / total if n_visible > 0 else zero
    for j in range(n_visible):
        probs[j] *= inv_total
    for j in range(n_visible, probs.shape[0]):
        probs[j] = zero


@njit(cache=True, fastmath=_FASTMATH)
def _softmax_backward_row(probs, dprobs, dscores, scale):
    """dscores = scale * probs * (dprobs - <probs, dprobs>): the softmax Jacobian-vector
    product (scale is the chain-rule factor of softmax(scale * scores))."""
    dot = probs.dtype.type(0)
    for j in range(probs.shape[0]):
        dot += probs[j] * dprobs[j]
    for j in range(probs.shape[0]):
        dscores[j] = scale * probs[j] * (dprobs[j] - dot)


@njit(cache=True, fastmath=_FASTMATH)
def _row_logsumexp(values):
    """log(sum(exp(values))) of one row, shifted by the row max; -inf for an all -inf row."""
    row_max = _row_max(values, values.dtype.type(1), values.shape[0])
    if row_max == -np.inf:
        return row_max
    total = values.dtype.type(0)
    for j in range(values.shape[0]):
        total += _exp(values[j] - row_max)
    return row_max + np.log(total)


# ---------------------------------------------------------------------------------------
# softmax, log-softmax


@_kernel()
def softmax_forward(x):
    """y = softmax(x) over the last axis of x (N, C); rows in parallel, all -inf row -> 0."""
    y = np.empty_like(x)
    one = x.dtype.type(1)
    for i in prange(x.shape[0]):
        _softmax_row(x[i], y[i], one, x.shape[1])
    return y


@_kernel()
def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y, row)) for y = softmax(x), all (N, C); rows in parallel."""
    dx = np.empty_like(y)
    one = y.dtype.type(1)
    for i in prange(y.shape[0]):
        _softmax_backward_row(y[i], dy[i], dx[i], one)
    return dx


@_kernel()
def log_softmax_forward(x):
    """y = x - logsumexp(x, row) for x (N, C); rows in parallel; an all -inf row stays -inf."""
    y = np.empty_like(x)
    for i in prange(x.shape[0]):
        lse = _row_logsumexp(x[i])
        shift = lse if lse != -np.inf else x.dtype.type(0)  # all -inf row: y = x = -inf
        for j in range(x.shape[1]):
            y[i, j] = x[i, j] - shift
    return y


@_kernel()
def log_softmax_backward(y, dy):
    """dx = dy - exp(y) * sum(dy, row) for y = log_softmax(x), all (N, C); rows in parallel."""
    dx = np.empty_like(y)
    for i in prange(y.shape[0]):
        dy_sum = y.dtype.type(0)
        for j in range(y.shape[1]):
            dy_sum += dy[i, j]
        for j in range(y.shape[1]):
            dx[i, j] = dy[i, j] - _exp(y[i, j]) * dy_sum
    return dx


# ---------------------------------------------------------------------------------------
# layer norm, RMS norm


@njit(cache=True)
def _check_feature_vector(vector, n_cols):
    if vector.shape[0] != n_cols:
        raise ValueError("norm kernel: weight/bias length must equal the last dim of x")


@njit(cache=True)
def _sum_row_blocks(block_sums, dtype_like):
    """Add the per-block float64 partial sums (n_blocks, C) in block order -> (C,) dtype."""
    total = np.zeros(block_sums.shape[1])
    for b in range(block_sums.shape[0]):
        total += block_sums[b]
    return total.astype(dtype_like.dtype)


@_kernel()
def layer_norm_forward(x, weight, bias, eps):
    """y = (x - mean) * rstd * weight + bias per row of x (N, C), with the biased variance
    (divide by C, as PyTorch) and rstd = 1/sqrt(var + eps). Returns (y, mean, rstd), the
    statistics (N,) in x's dtype and exactly the values y was computed with."""
    n_rows, n_cols = x.shape
    _check_feature_vector(weight, n_cols)
    _check_feature_vector(bias, n_cols)
    t = x.dtype.type
    eps_t, inv_n = t(eps), t(1.0 / n_cols)
    y = np.empty_like(x)
    mean = np.empty(n_rows, x.dtype)
    rstd = np.empty(n_rows, x.dtype)
    for i in prange(n_rows):
        row_sum = t(0)
        for j in range(n_cols):
            row_sum += x[i, j]
        mu = row_sum * inv_n
        sq_sum = t(0)
        for j in range(n_cols):
            d = x[i, j] - mu
            sq_sum += d * d
        r = t(1) / np.sqrt(sq_sum * inv_n + eps_t)
        mean[i], rstd[i] = mu, r
        for j in range(n_cols):
            y[i, j] = (x[i, j] - mu) * r * weight[j] + bias[j]
    return y, mean, rstd


@_kernel()
def layer_norm_backward(dy, x, mean, rstd, weight):
    """Gradients of layer_norm_forward: returns (dx (N, C), dweight (C,), dbias (C,)).

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight and
    xhat = (x - mean) * rstd. Rows are processed in fixed blocks of _ROWS_PER_BLOCK in
    parallel; each block writes its own float64 partial dweight/dbias row, and the blocks
    are added in order afterwards: race-free and independent of the thread count.
    """
    n_rows, n_cols = x.shape
    _check_feature_vector(weight, n_cols)
    t = x.dtype.type
    inv_n = t(1.0 / n_cols)
    dx = np.empty_like(x)
    n_blocks = (n_rows + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    dweight_blocks = np.empty((n_blocks, n_cols))
    dbias_blocks = np.empty((n_blocks, n_cols))
    for block in prange(n_blocks):
        dweight_part = dweight_blocks[block]
        dbias_part = dbias_blocks[block]
        for j in range(n_cols):
            dweight_part[j] = 0.0
            dbias_part[j] = 0.0
        for i in range(block * _ROWS_PER_BLOCK, min((block + 1) * _ROWS_PER_BLOCK, n_rows)):
            mu, r = mean[i], rstd[i]
            g_sum, g_xhat_sum = t(0), t(0)
            for j in range(n_cols):
                xhat = (x[i, j] - mu) * r
                g = dy[i, j] * weight[j]
                g_sum += g
                g_xhat_sum += g * xhat
                dweight_part[j] += dy[i, j] * xhat
                dbias_part[j] += dy[i, j]
            g_mean, g_xhat_mean = g_sum * inv_n, g_xhat_sum * inv_n
            for j in range(n_cols):
                xhat = (x[i, j] - mu) * r
                dx[i, j] = r * (dy[i, j] * weight[j] - g_mean - xhat * g_xhat_mean)
    return dx, _sum_row_blocks(dweight_blocks, x), _sum_row_blocks(dbias_blocks, x)


@_kernel()
def rms_norm_forward(x, weight, eps):
    """y = x * rstd * weight per row of x (N, C), rstd = 1/sqrt(mean(x^2) + eps) (N,).
    Returns (y, rstd), rstd in x's dtype."""
    n_rows, n_cols = x.shape
    _check_feature_vector(weight, n_cols)
    t = x.dtype.type
    eps_t, inv_n = t(eps), t(1.0 / n_cols)
    y = np.empty_like(x)
    rstd = np.empty(n_rows, x.dtype)
    for i in prange(n_rows):
        sq_sum = t(0)
        for j in range(n_cols):
            sq_sum += x[i, j] * x[i, j]
        r = t(1) / np.sqrt(sq_sum * inv_n + eps_t)
        rstd[i] = r
        for j in range(n_cols):
            y[i, j] = x[i, j] * r * weight[j]
    return y, rstd


@_kernel()
def rms_norm_backward(dy, x, rstd, weight):
    """Gradients of rms_norm_forward: returns (dx (N, C), dweight (C,)).

    dx = rstd * (g - x * rstd^2 * mean(g * x)) with g = dy * weight; dweight = sum over
    rows of dy * x * rstd, in float64 per fixed row block as in layer_norm_backward.
    """
    n_rows, n_cols = x.shape
    _check_feature_vector(weight, n_cols)
    t = x.dtype.type
    inv_n = t(1.0 / n_cols)
    dx = np.empty_like(x)
    n_blocks = (n_rows + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    dweight_blocks = np.empty((n_blocks, n_cols))
    for block in prange(n_blocks):
        dweight_part = dweight_blocks[block]
        for j in range(n_cols):
            dweight_part[j] = 0.0
        for i in range(block * _ROWS_PER_BLOCK, min((block + 1) * _ROWS_PER_BLOCK, n_rows)):
            r = rstd[i]
            g_x_sum = t(0)
            for j in range(n_cols):
                g_x_sum += dy[i, j] * weight[j] * x[i, j]
                dweight_part[j] += dy[i, j] * x[i, j] * r
            correction = r * r * g_x_sum * inv_n
            for j in range(n_cols):
                dx[i, j] = r * (dy[i, j] * weight[j] - x[i, j] * correction)
    return dx, _sum_row_blocks(dweight_blocks, x)


# ---------------------------------------------------------------------------------------
# GELU (tanh approximation): 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = k0 (x + k1 x^3)

_GELU_K0 = math.sqrt(2.0 / math.pi)
_GELU_K1 = 0.044715


@_kernel()
def _gelu_forward_flat(x):
    """gelu over a flat array, in parallel chunks of _FLAT_CHUNK; x / (1 + exp(-2u)) is the
    tanh form rewritten so that large |x| saturates to x or -0 without cancellation."""
    t = x.dtype.type
    k0, k1, one = t(_GELU_K0), t(_GELU_K1), t(1)
    y = np.empty_like(x)
    for chunk in prange((x.size + _FLAT_CHUNK - 1) // _FLAT_CHUNK):
        for i in range(chunk * _FLAT_CHUNK, min((chunk + 1) * _FLAT_CHUNK, x.size)):
            v = x[i]
            u = k0 * (v + k1 * v * v * v)
            y[i] = v / (one + _exp(-(u + u)))
    return y


@_kernel()
def _gelu_backward_flat(x, dy):
    """dx = dy * (s + x s (1 - s) 2 du/dx) with s = sigmoid(2u), over flat arrays."""
    t = x.dtype.type
    k0, k1, one = t(_GELU_K0), t(_GELU_K1), t(1)
    two_k0, three_k1 = t(2 * _GELU_K0), t(3 * _GELU_K1)
    dx = np.empty_like(x)
    for chunk in prange((x.size + _FLAT_CHUNK - 1) // _FLAT_CHUNK):
        for i in range(chunk * _FLAT_CHUNK, min((chunk + 1) * _FLAT_CHUNK, x.size)):
            v = x[i]
            u = k0 * (v + k1 * v * v * v)
            s = one / (one + _exp(-(u + u)))
            du2 = two_k0 * (one + three_k1 * v * v)  # d(2u)/dx
            dx[i] = dy[i] * (s + v * s * (one - s) * du2)
    return dx


def gelu_forward(x):
    """GELU, tanh approximation (PyTorch's GELU(approximate="tanh")), any shape."""
    return _gelu_forward_flat(x.reshape(-1)).reshape(x.shape)


def gelu_backward(x, dy):
    """Gradient of gelu_forward at x for the output gradient dy (same shape as x)."""
    if dy.shape != x.shape:
        raise ValueError(f"gelu_backward: dy shape {dy.shape} differs from x shape {x.shape}")
    return _gelu_backward_flat(x.reshape(-1), dy.reshape(-1)).reshape(x.shape)


# ---------------------------------------------------------------------------------------
# attention softmax

ATTENTION_FULL, ATTENTION_CAUSAL, ATTENTION_PREFIX_LM = 0, 1, 2


@_kernel()
def attention_softmax_forward(scores, scale, mode, prefix_len, q_offset, key_start):
    """probs = softmax over keys of scale * scores (B, H, Tq, Tk), invisible keys exactly 0.

    Query row i sits at absolute position i + q_offset (q_offset > 0 when earlier keys are
    cached; negative offsets hide the causal part, e.g. for a key-padding mask). Key j is
    visible to it when j >= key_start[b] (a left-padded cache) and: mode 0 (full/cross)
    always; mode 1 (causal) j <= i + q_offset; mode 2 (prefix-LM) j < prefix_len[b] or
    j <= i + q_offset. In every mode the visible keys form one range start..end-1 of the row,
    so visibility is two bounds per row computed from indices, never a mask array.
    prefix_len and key_start are int64 (B,) (prefix_len read only in mode 2). A row with no
    visible key, or whose visible scores are all -inf, is all 0. Parallel over B*H*Tq rows.
    """
    n_batch, n_heads, n_queries, n_keys = scores.shape
    if mode < 0 or mode > 2:
        raise ValueError(
            "attention_softmax_forward: mode must be 0 (full), 1 (causal) or 2 (prefix-LM)")
    if mode == ATTENTION_PREFIX_LM and prefix_len.shape[0] != n_batch:
        raise ValueError("attention_softmax_forward: prefix_len must have one entry per batch row")
    if key_start.shape[0] != n_batch:
        raise ValueError("attention_softmax_forward: key_start must have one entry per batch row")
    n_rows = n_batch * n_heads * n_queries
    score_rows = scores.reshape(n_rows, n_keys)  # (B*H*Tq, Tk)
    probs = np.empty_like(scores)
    prob_rows = probs.reshape(n_rows, n_keys)  # (B*H*Tq, Tk)
    scale_t = scores.dtype.type(scale)
    zero = scores.dtype.type(0)
    for row in prange(n_rows):
        batch_row = row // (n_heads * n_queries)
        end = n_keys
        if mode != ATTENTION_FULL:
            causal_visible = row % n_queries + q_offset + 1
            if mode == ATTENTION_PREFIX_LM:
                causal_visible = max(causal_visible, prefix_len[batch_row])
            end = min(n_keys, max(causal_visible, 0))
        start = min(max(key_start[batch_row], 0), end)
        for j in range(start):
            prob_rows[row, j] = zero
        _softmax_row(score_rows[row, start:], prob_rows[row, start:], scale_t, end - start)
    return probs


@_kernel()
def attention_softmax_backward(probs, dprobs, scale):
    """dscores = scale * probs * (dprobs - sum(probs * dprobs, row)) for (B, H, Tq, Tk);
    masked entries come out 0 because their probs are 0. Parallel over rows."""
    n_keys = probs.shape[-1]
    n_rows = probs.size // n_keys if n_keys > 0 else 0
    dscores = np.empty_like(probs)
    prob_rows = probs.reshape(n_rows, n_keys)  # (B*H*Tq, Tk)
    dprob_rows = dprobs.reshape(n_rows, n_keys)
    dscore_rows = dscores.reshape(n_rows, n_keys)
    scale_t = probs.dtype.type(scale)
    for row in prange(n_rows):
        _softmax_backward_row(prob_rows[row], dprob_rows[row], dscore_rows[row], scale_t)
    return dscores


# ---------------------------------------------------------------------------------------
# fused softmax cross-entropy


@njit(cache=True)
def _first_bad_target(targets, n_classes, ignore_index):
    """Index of the first target outside [0, n_classes) that is not ignore_index, or -1."""
    for i in range(targets.shape[0]):
        target = targets[i]
        if target != ignore_index and (target < 0 or target >= n_classes):
            return i
    return -1


def _check_targets(logits, targets, ignore_index, op):
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"{op}: logits must be (N, V) and targets (N,), got {logits.shape} "
                         f"and {targets.shape}")
    bad = _first_bad_target(targets, logits.shape[1], ignore_index)
    if bad >= 0:
        raise ValueError(f"{op}: target {int(targets[bad])} at row {bad} is outside "
                         f"[0, {logits.shape[1]}) and is not ignore_index={ignore_index}")


@_kernel()
def _cross_entropy_rows(logits, targets, ignore_index):
    """Per row: lse = logsumexp(logits[i]) and loss = lse - logits[i, target] (0 for ignored
    rows). Returns (loss sum in float64 added in row order, count of counted rows, lse)."""
    n_rows = logits.shape[0]
    lse = np.empty(n_rows, logits.dtype)
    row_loss = np.empty(n_rows)
    for i in prange(n_rows):
        lse[i] = _row_logsumexp(logits[i])
        row_loss[i] = 0.0
        if targets[i] != ignore_index:
            row_loss[i] = np.float64(lse[i]) - np.float64(logits[i, targets[i]])
    loss_sum, count = 0.0, 0
    for i in range(n_rows):  # serial, in row order: the sum does not depend on threads
        if targets[i] != ignore_index:
            loss_sum += row_loss[i]
            count += 1
    return loss_sum, count, lse


@_kernel()
def _cross_entropy_grad_rows(logits, targets, lse, ignore_index, grad_scale, dlogits):
    """dlogits[i] = grad_scale * (exp(logits[i] - lse[i]) - onehot(targets[i])), written in
    place, one pass per row; ignored rows are 0."""
    t = logits.dtype.type
    scale = t(grad_scale)
    for i in prange(logits.shape[0]):
        if targets[i] == ignore_index:
            for j in range(logits.shape[1]):
                dlogits[i, j] = t(0)
        else:
            shift = lse[i]
            for j in range(logits.shape[1]):
                dlogits[i, j] = scale * _exp(logits[i, j] - shift)
            dlogits[i, targets[i]] -= scale


def cross_entropy_forward(logits, targets, ignore_index):
    """Fused softmax cross-entropy over logits (N, V) with int64 targets (N,).

    Returns (loss_sum: float, count: int, lse (N,) in the logits dtype): the summed
    -log softmax(logits)[target] over rows whose target is not ignore_index, how many rows
    that is, and the per-row log-sum-exp that cross_entropy_backward reuses. Raises
    ValueError naming the first target outside [0, V) that is not ignore_index.
    """
    _check_targets(logits, targets, ignore_index, "cross_entropy_forward")
    loss_sum, count, lse = _cross_entropy_rows(logits, targets, ignore_index)
    return float(loss_sum), int(count), lse


def cross_entropy_backward(logits, targets, lse, ignore_index, grad_scale):
    """dlogits (N, V) = grad_scale * (softmax(logits) - onehot(target)), 0 on ignored rows
    (grad_scale is 1/count for a mean reduction, times the upstream gradient)."""
    _check_targets(logits, targets, ignore_index, "cross_entropy_backward")
    # NumPy puts big arrays on huge pages; a (N, V) buffer from Numba's allocator (plain
    # malloc, mmap from 32 MB on) costs thousands of page faults on every call.
    dlogits = np.empty_like(logits)
    _cross_entropy_grad_rows(logits, targets, lse, ignore_index, grad_scale, dlogits)
    return dlogits


# ---------------------------------------------------------------------------------------
# embedding gradient


@_kernel(dtype_arg=1)
def embedding_backward(ids, dy, num_embeddings):
    """dW (num_embeddings, C): dW[v] = sum of dy[i] over rows i with ids[i] == v.

    Race-free scatter-add: the C columns are split into blocks of _COLS_PER_BLOCK and each
    parallel task owns one block of every row of dW, adding the rows of dy in order (so
    the result is the same for any thread count). dW is zeroed in parallel over rows first
    so that its fresh pages are touched by both threads.
    """
    n_rows, n_cols = dy.shape
    if ids.shape[0] != n_rows:
        raise ValueError("embedding_backward: ids (N,) and dy (N, C) disagree on N")
    for i in range(n_rows):
        if ids[i] < 0 or ids[i] >= num_embeddings:
            raise ValueError("embedding_backward: an id is outside [0, num_embeddings)")
    dweight = np.empty((num_embeddings, n_cols), dy.dtype)
    for v in prange(num_embeddings):
        for j in range(n_cols):
            dweight[v, j] = 0
    for block in prange((n_cols + _COLS_PER_BLOCK - 1) // _COLS_PER_BLOCK):
        start, stop = block * _COLS_PER_BLOCK, min((block + 1) * _COLS_PER_BLOCK, n_cols)
        for i in range(n_rows):
            target_row = dweight[ids[i]]
            for j in range(start, stop):
                target_row[j] += dy[i, j]
    return dweight


# ---------------------------------------------------------------------------------------
# optimizer and gradient statistics


@_kernel()
def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step in place on flat arrays (PyTorch semantics, decoupled weight decay):
    param *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    param -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps). step counts from 1.
    The bias corrections are computed once in float64; the element loop runs in the
    array dtype, in parallel chunks of _FLAT_CHUNK.
    """
    n = param.size
    if grad.size != n or exp_avg.size != n or exp_avg_sq.size != n:
        raise ValueError("adamw_update: param, grad, exp_avg and exp_avg_sq must have equal sizes")
    if step < 1:
        raise ValueError("adamw_update: step counts from 1")
    t = param.dtype.type
    decay = t(1.0 - lr * weight_decay)
    b1, b2 = t(beta1), t(beta2)
    one_minus_b1, one_minus_b2 = t(1.0 - beta1), t(1.0 - beta2)
    step_size = t(lr / (1.0 - beta1 ** step))
    inv_sqrt_bias2 = t(1.0 / math.sqrt(1.0 - beta2 ** step))
    eps_t = t(eps)
    for chunk in prange((n + _FLAT_CHUNK - 1) // _FLAT_CHUNK):
        for i in range(chunk * _FLAT_CHUNK, min((chunk + 1) * _FLAT_CHUNK, n)):
            g = grad[i]
            m = b1 * exp_avg[i] + one_minus_b1 * g
            v = b2 * exp_avg_sq[i] + one_minus_b2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = param[i] * decay - step_size * m / (np.sqrt(v) * inv_sqrt_bias2 + eps_t)


@_kernel()
def sum_of_squares(x):
    """sum(x**2) of a flat array in float64: per-chunk float64 partial sums added in chunk
    order (thread-count independent); inf/NaN in x make the result inf/NaN."""
    n_chunks = (x.size + _FLAT_CHUNK - 1) // _FLAT_CHUNK
    partial = np.empty(n_chunks)
    for chunk in prange(n_chunks):
        acc = 0.0
        for i in range(chunk * _FLAT_CHUNK, min((chunk + 1) * _FLAT_CHUNK, x.size)):
            v = np.float64(x[i])
            acc += v * v
        partial[chunk] = acc
    total = 0.0
    for chunk in range(n_chunks):
        total += partial[chunk]
    return total


@_kernel()
def all_finite(x):
    """True when no element of the flat array x is NaN or +-inf.

    Sums v * 0 per chunk: 0 for every finite v, NaN for inf or NaN, and NaN survives any
    summation order (no nnan/ninf flags, so the compiler may not fold v * 0 to 0).
    """
    n_chunks = (x.size + _FLAT_CHUNK - 1) // _FLAT_CHUNK
    chunk_ok = np.empty(n_chunks, np.bool_)
    zero = x.dtype.type(0)
    for chunk in prange(n_chunks):
        acc = zero
        for i in range(chunk * _FLAT_CHUNK, min((chunk + 1) * _FLAT_CHUNK, x.size)):
            acc += x[i] * zero
        chunk_ok[chunk] = acc == zero
    for chunk in range(n_chunks):
        if not chunk_ok[chunk]:
            return False
    return True
