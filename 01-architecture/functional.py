"""Neural-network functions: fused forward/backward pairs backed by the Numba kernels.

Each fused function is one `Function` whose backward is a kernel too, so that a layer norm or
a softmax-cross-entropy is one node in the graph instead of a dozen. Their composed twins
(softmax written with exp/sum/div, ...) serve as references in the tests.
"""
from __future__ import annotations

import math

import numpy as np

from mlot.architecture import kernels
from mlot.architecture.ops import Mul
from mlot.architecture.tensor import Function, Tensor


def _rows(array: np.ndarray) -> np.ndarray:
    """(..., C) -> (N, C) C-contiguous, without a copy when already contiguous."""
    return np.ascontiguousarray(array).reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)


# --- softmax family ----------------------------------------------------------------------------
class _Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        moved = np.moveaxis(x, axis, -1)
        self.out = kernels.softmax_forward(_rows(moved)).reshape(moved.shape)
        return np.moveaxis(self.out, -1, axis)

    def backward(self, grad):
        moved = _rows(np.moveaxis(grad, self.axis, -1))
        dx = kernels.softmax_backward(_rows(self.out), moved).reshape(self.out.shape)
        return np.moveaxis(dx, -1, self.axis)


class _LogSoftmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        moved = np.moveaxis(x, axis, -1)
        self.out = kernels.log_softmax_forward(_rows(moved)).reshape(moved.shape)
        return np.moveaxis(self.out, -1, axis)

    def backward(self, grad):
        moved = _rows(np.moveaxis(grad, self.axis, -1))
        dx = kernels.log_softmax_backward(_rows(self.out), moved).reshape(self.out.shape)
        return np.moveaxis(dx, -1, self.axis)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return _Softmax.apply(x, axis=axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return _LogSoftmax.apply(x, axis=axis)


# --- activations ---------------------------------------------------------------------------
class _Gelu(Function):
    def forward(self, x):
        self.x = np.ascontiguousarray(x)
        return kernels.gelu_forward(self.x)

    def backward(self, grad):
        return kernels.gelu_backward(self.x, np.ascontiguousarray(grad))


def gelu(x: Tensor) -> Tensor:
    """GELU with the tanh approximation (GPT-2's, PyTorch's `approximate="tanh"`)."""
    return _Gelu.apply(x)


def relu(x: Tensor) -> Tensor:
    return x.relu()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


# --- normalisation ---------------------------------------------------------------------------
class _LayerNorm(Function):
    def forward(self, x, weight, bias, eps=1e-5):
        _check_last_dim("layer_norm", x, weight, bias)
        self.x = _rows(x)
        self.weight = weight
        y, self.mean, self.rstd = kernels.layer_norm_forward(self.x, weight, bias, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        dx, dweight, dbias = kernels.layer_norm_backward(_rows(grad), self.x, self.mean, self.rstd, self.weight)
        return dx.reshape(grad.shape), dweight, dbias


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Normalise the last axis to zero mean and unit (biased) variance, then scale and shift."""
    return _LayerNorm.apply(x, weight, bias, eps=eps)


class _RMSNorm(Function):
    def forward(self, x, weight, eps=1e-6):
        _check_last_dim("rms_norm", x, weight)
        self.x, self.weight = _rows(x), weight
        y, self.rstd = kernels.rms_norm_forward(self.x, weight, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        dx, dweight = kernels.rms_norm_backward(_rows(grad), self.x, self.rstd, self.weight)
        return dx.reshape(grad.shape), dweight


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """Scale the last axis by 1/sqrt(mean(x^2) + eps), then by `weight` (no centring)."""
    return _RMSNorm.apply(x, weight, eps=eps)


def _check_last_dim(op: str, x: np.ndarray, *params: np.ndarray) -> None:
    for p in params:
        if p.shape != (x.shape[-1],):
            raise ValueError(f"{op}: parameter of shape {p.shape} does not match the last axis of input {x.shape}")


# --- embedding and loss ----------------------------------------------------------------------
def _as_ids(ids, num_embeddings: int, op: str) -> np.ndarray:
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: token ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_embeddings):
        raise ValueError(f"{op}: ids must lie in [0, {num_embeddings}), got min {ids.min()} max {ids.max()}")
    return ids.astype(np.int64, copy=False)


class _Embedding(Function):
    def forward(self, weight, ids):
        self.ids, self.num = ids, weight.shape[0]
        return weight[ids]

    def backward(self, grad):
        flat = _rows(grad)  # (N, C)
        return kernels.embedding_backward(self.ids.reshape(-1), flat, self.num)


def embedding(ids, weight: Tensor) -> Tensor:
    """Rows of `weight` picked by integer `ids` (any shape); backward is a scatter-add."""
    return _Embedding.apply(weight, ids=_as_ids(ids, weight.shape[0], "embedding"))


class _CrossEntropy(Function):
    def forward(self, logits, targets, ignore_index=-100):
        self.logits = _rows(logits)  # (N, V)
        self.shape, self.targets, self.ignore_index = logits.shape, targets, ignore_index
        loss_sum, self.count, self.lse = kernels.cross_entropy_forward(self.logits, targets, ignore_index)
        return np.asarray(loss_sum / max(self.count, 1), dtype=logits.dtype)

    def backward(self, grad):
        scale = float(grad) / max(self.count, 1)
        dlogits = kernels.cross_entropy_backward(self.logits, self.targets, self.lse, self.ignore_index, scale)
        return dlogits.reshape(self.shape)


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """Mean negative log-likelihood of `targets` under softmax(logits), fused and stable.

    logits: (..., V); targets: integer array of the leading shape. Targets equal to
    `ignore_index` do not count; when all are ignored the loss is 0 with zero gradient.
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets of shape {targets.shape} for logits of shape {logits.shape}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
    return _CrossEntropy.apply(logits, targets=targets.reshape(-1).astype(np.int64), ignore_index=ignore_index)


def target_nll(logits, targets) -> np.ndarray:
    """-log softmax(logits)[target] of each row, in float64, without autograd (for scoring:
    validation, bits per byte, per-token surprise). logits (N, V), targets (N,) -> (N,).

    float64 so that sums over millions of targets and differences of nearly equal logits keep
    their digits; the row maximum is subtracted before exp (log-sum-exp)."""
    z = np.asarray(logits.data if isinstance(logits, Tensor) else logits, dtype=np.float64)  # (N, V)
    targets = np.asarray(targets, dtype=np.int64)
    if z.ndim != 2 or targets.shape != z.shape[:1]:
        raise ValueError(f"target_nll: targets of shape {targets.shape} for logits of shape {z.shape}")
    peak = z.max(axis=1, keepdims=True)  # (N, 1)
    log_norm = peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1))
    return log_norm - z[np.arange(len(targets)), targets]


# --- attention ---------------------------------------------------------------------------------
_NO_PREFIX = np.zeros(1, dtype=np.int64)


class _Attention(Function):
    """softmax(q k^T / sqrt(D), masked) v; the two products go to BLAS, the softmax to a kernel."""

    def forward(self, q, k, v, mode, prefix_len, q_offset, key_start):
        self.q, self.k, self.v = (np.ascontiguousarray(a) for a in (q, k, v))
        self.scale = 1.0 / math.sqrt(q.shape[-1])
        scores = self.q @ np.swapaxes(self.k, -1, -2)  # (B, H, Tq, Tk)
        self.probs = kernels.attention_softmax_forward(scores, self.scale, mode, prefix_len, q_offset, key_start)
        return self.probs @ self.v  # (B, H, Tq, D)

    def backward(self, grad):
        grad = np.ascontiguousarray(grad)
        dprobs = grad @ np.swapaxes(self.v, -1, -2)  # (B, H, Tq, Tk)
        dscores = kernels.attention_softmax_backward(self.probs, dprobs, self.scale)
        dq = dscores @ self.k if self.needs_input_grad[0] else None
        dk = np.swapaxes(dscores, -1, -2) @ self.q if self.needs_input_grad[1] else None
        dv = np.swapaxes(self.probs, -1, -2) @ grad if self.needs_input_grad[2] else None
        return dq, dk, dv


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, prefix_len=None, causal: bool = False,
                                 q_offset: int | None = None, key_start=None) -> Tensor:
    """Multi-head attention on (B, H, T, D) arrays with scale 1/sqrt(D).

    Masks (key j, query i at absolute position i + q_offset):
      prefix_len (one int per batch row): prefix-LM, j < prefix_len[b] or j <= i + q_offset;
      causal=True: j <= i + q_offset;  neither: every key is visible (cross-attention).
    key_start (one int per batch row) also hides keys j < key_start[b] (a left-padded cache).
    q_offset defaults to Tk - Tq: the queries are the last Tq positions (a KV cache in front);
    a negative one hides the causal part (prefix_len then acts as a key-padding mask).
    A query that sees no key gets a zero output.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention: q, k, v must be (B, H, T, D), got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
    if prefix_len is not None and causal:
        raise ValueError("attention: give either prefix_len or causal=True, not both")
    if q_offset is None:
        q_offset = k.shape[2] - q.shape[2]
    if prefix_len is not None:
        prefix_len = np.asarray(prefix_len.data if isinstance(prefix_len, Tensor) else prefix_len)
        prefix_len = np.broadcast_to(prefix_len, (q.shape[0],)).astype(np.int64)
        mode = kernels.ATTENTION_PREFIX_LM
    else:
        prefix_len, mode = _NO_PREFIX, (kernels.ATTENTION_CAUSAL if causal else kernels.ATTENTION_FULL)
    key_start = np.zeros(q.shape[0], np.int64) if key_start is None else \
        np.broadcast_to(np.asarray(key_start), (q.shape[0],)).astype(np.int64)
    return _Attention.apply(q, k, v, mode=mode, prefix_len=prefix_len, q_offset=int(q_offset), key_start=key_start)


# --- rotary positions ---------------------------------------------------------------------------
def rotary_tables(positions: np.ndarray, head_dim: int, base: float = 10000.0, dtype=np.float32):
    """cos and sin of shape positions.shape + (head_dim // 2,) for RoPE at integer `positions`.

    Rotating queries and keys by their positions makes q.k depend only on the distance between
    them (RoFormer), so cached keys of earlier segments stay valid with any offset.
    """
    if head_dim % 2:
        raise ValueError(f"rotary: head_dim must be even, got {head_dim}")
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    angles = np.asarray(positions, dtype=np.float64)[..., None] * inv_freq
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


class _Rotary(Function):
    """x (..., D) rotated pairwise: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), halves split."""

    def forward(self, x, cos, sin):
        self.cos, self.sin = cos, sin
        return _rotate(x, cos, sin)

    def backward(self, grad):
        return _rotate(grad, self.cos, -self.sin)  # the inverse rotation is the adjoint


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = np.empty_like(x)
    np.multiply(x1, cos, out=out[..., :half])
    out[..., :half] -= x2 * sin
    np.multiply(x2, cos, out=out[..., half:])
    out[..., half:] += x1 * sin
    return out


def rotary(x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
    """Apply rotary position embedding to x (B, H, T, D) with tables (B or 1, 1, T, D/2)."""
    if cos.shape != sin.shape or cos.shape[-1] * 2 != x.shape[-1]:
        raise ValueError(f"rotary: tables {cos.shape} do not fit input {x.shape}")
    return _Rotary.apply(x, cos=cos.astype(x.dtype, copy=False), sin=sin.astype(x.dtype, copy=False))


# --- regularisation ---------------------------------------------------------------------------
def dropout(x: Tensor, p: float, rng: np.random.Generator, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = rng.random(x.shape, dtype=np.float32) >= p
    return Mul.apply(x, keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p)))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight^T + bias, with weight stored (out_features, in_features) as in PyTorch."""
    y = x @ weight.T
    return y if bias is None else y + bias
