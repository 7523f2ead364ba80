"""The primitive differentiable operations, one class each, forward and backward side by side.

Each forward saves only what its backward needs; each backward is the adjoint of the forward
(sum <-> broadcast, gather <-> scatter-add, concat <-> split). Broadcasting binary ops reduce
their gradients back to each input's shape with `unbroadcast`.
"""
from __future__ import annotations

import numpy as np

from mlot.architecture.tensor import Function, Tensor


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched to reach `shape`."""
    if grad.shape == shape:
        return grad
    leading = grad.ndim - len(shape)
    stretched = tuple(leading + i for i, size in enumerate(shape) if size == 1 and grad.shape[leading + i] != 1)
    reduced = grad.sum(axis=tuple(range(leading)) + stretched, keepdims=True)
    return reduced.reshape(shape)


def _expand_reduced(grad: np.ndarray, shape: tuple, axis, keepdims: bool) -> np.ndarray:
    """Re-insert the axes a reduction removed, so `grad` broadcasts against the input."""
    if axis is None or keepdims:
        return grad.reshape([1] * len(shape)) if axis is None and not keepdims else grad
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    axes = sorted(a % len(shape) for a in axes)
    for a in axes:
        grad = np.expand_dims(grad, a)
    return grad


# --- arithmetic ---------------------------------------------------------------------------
class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, grad):
        return unbroadcast(grad, self.shapes[0]), unbroadcast(grad, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        grad_b = unbroadcast(-grad, self.shapes[1]) if self.needs_input_grad[1] else None
        return unbroadcast(grad, self.shapes[0]), grad_b


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        grad_a = unbroadcast(grad * self.b, self.a.shape) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        grad_a = unbroadcast(grad / self.b, self.a.shape) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(-grad * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


class Pow(Function):
    """a ** exponent for a constant (non-tensor) exponent."""

    def forward(self, a, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("Tensor ** Tensor is not supported; write exp(b * log(a))")
        self.a, self.exponent = a, exponent
        return a ** a.dtype.type(exponent)

    def backward(self, grad):
        e = self.a.dtype.type(self.exponent)
        return grad * e * self.a ** (e - 1)


# --- element-wise functions ---------------------------------------------------------------
class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, grad):
        return grad * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, grad):
        return grad / self.a


class Tanh(Function):
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


class Relu(Function):
    def forward(self, a):
        self.positive = a > 0
        return np.where(self.positive, a, a.dtype.type(0))

    def backward(self, grad):
        return np.where(self.positive, grad, grad.dtype.type(0))


class Sigmoid(Function):
    def forward(self, a):
        # split by sign so that exp never overflows
        e = np.exp(-np.abs(a))
        self.out = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad):
        return grad * self.out * (1 - self.out)


# --- reductions ---------------------------------------------------------------------------
class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return np.asarray(a.sum(axis=axis, keepdims=keepdims))

    def backward(self, grad):
        return np.broadcast_to(_expand_reduced(grad, self.shape, self.axis, self.keepdims), self.shape)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        out = np.asarray(a.mean(axis=axis, keepdims=keepdims))
        self.count = a.size // max(out.size, 1) if a.size else 0
        return out

    def backward(self, grad):
        grad = _expand_reduced(grad, self.shape, self.axis, self.keepdims) / grad.dtype.type(max(self.count, 1))
        return np.broadcast_to(grad, self.shape)


class Max(Function):
    """Maximum along axes; ties share the gradient equally."""

    def forward(self, a, axis=None, keepdims=False):
        out_kept = a.max(axis=axis, keepdims=True)
        self.is_max = a == out_kept
        self.axis, self.keepdims, self.shape = axis, keepdims, a.shape
        return np.asarray(out_kept if keepdims else a.max(axis=axis))

    def backward(self, grad):
        ties = self.is_max.sum(axis=self.axis, keepdims=True)
        return self.is_max * (_expand_reduced(grad, self.shape, self.axis, self.keepdims) / ties)


# --- shape ----------------------------------------------------------------------------------
class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.shape)


class Permute(Function):
    def forward(self, a, axes):
        if sorted(a_ % max(a.ndim, 1) for a_ in axes) != list(range(a.ndim)):
            raise ValueError(f"permute: axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")
        self.inverse = np.argsort([a_ % a.ndim for a_ in axes])
        return a.transpose(axes)

    def backward(self, grad):
        return grad.transpose(self.inverse)


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class GetItem(Function):
    """Indexing and slicing; the backward scatters (and adds, for repeated fancy indices)."""

    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return np.asarray(a[index])

    def backward(self, grad):
        full = np.zeros(self.shape, dtype=self.dtype)
        if _is_basic_index(self.index):
            full[self.index] = grad
        else:
            np.add.at(full, self.index, grad)
        return full


class Concat(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=axis)

    def backward(self, grad):
        return tuple(np.split(grad, self.bounds, axis=self.axis))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis, self.count = axis, len(arrays)
        return np.stack(arrays, axis=axis)

    def backward(self, grad):
        return tuple(np.take(grad, i, axis=self.axis) for i in range(self.count))


class Where(Function):
    """where(condition, a, b); the condition is a constant boolean array."""

    def forward(self, a, b, condition):
        self.condition, self.shapes = condition, (a.shape, b.shape)
        return np.where(condition, a, b)

    def backward(self, grad):
        zero = grad.dtype.type(0)
        grad_a = unbroadcast(np.where(self.condition, grad, zero), self.shapes[0]) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(np.where(self.condition, zero, grad), self.shapes[1]) if self.needs_input_grad[1] else None
        return grad_a, grad_b


# --- matrix product -----------------------------------------------------------------------
def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, folding a's leading axes into one GEMM when b is a plain matrix."""
    if a.ndim > 2 and b.ndim == 2:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
    return a @ b


class MatMul(Function):
    """NumPy matmul semantics (1-D operands promoted, leading axes broadcast); BLAS does the work."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least 1 dimension, got {a.shape} @ {b.shape}")
        if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
        self.a, self.b = a, b
        return _matmul(a, b)

    def backward(self, grad):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a  # (1, n)
        b2 = b[:, None] if b.ndim == 1 else b  # (n, 1)
        g2 = grad
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            grad_a = unbroadcast(_matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            if a2.ndim > 2 and b2.ndim == 2:
                # (n, m) = (n, N) @ (N, m) over all leading positions: one GEMM
                grad_b = a2.reshape(-1, a2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
            else:
                grad_b = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape)
            grad_b = grad_b.reshape(b.shape)
        return grad_a, grad_b


# --- functional forms of the ops above --------------------------------------------------------
def concat(tensors, axis: int = 0) -> Tensor:
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    return Stack.apply(*tensors, axis=axis)


def where(condition, a, b) -> Tensor:
    """Elements of `a` where `condition` holds, else of `b` (both broadcast)."""
    condition = condition.data if isinstance(condition, Tensor) else condition
    return Where.apply(a, b, condition=np.asarray(condition, dtype=bool))


def matmul(a, b) -> Tensor:
    return MatMul.apply(a, b)
