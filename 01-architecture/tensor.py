"""Tensor and reverse-mode automatic differentiation.

A `Tensor` wraps a NumPy array (float32 by default, float64 for gradient checks). Every
differentiable operation is a `Function` subclass (in `ops.py` and `functional.py`) with its
forward and backward side by side; applying it records the function as the output's
`_ctx`, which keeps the inputs in order. `backward()` walks the recorded graph in a
deterministic topological order (parents in argument order, never a set), so float
accumulation order, and therefore every gradient, is reproducible bit for bit.

In-place changes are versioned: assigning to `t.data` or `t[...]` bumps `t._version`, and a
backward through a function whose saved inputs or output changed since the forward raises
instead of returning a silently wrong gradient (the check PyTorch makes with its version
counters). Writing into `t.data[...]` directly bypasses the check, like PyTorch's `.data`.
"""
from __future__ import annotations

import contextlib

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _GradMode:
    enabled = True


def is_grad_enabled() -> bool:
    return _GradMode.enabled


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded: outputs never require grad."""
    previous = _GradMode.enabled
    _GradMode.enabled = False
    try:
        yield
    finally:
        _GradMode.enabled = previous


def as_float_array(value, dtype=None) -> np.ndarray:
    """Float32 array for anything array-like; float64 arrays are kept (gradient checks)."""
    if dtype is not None:
        return np.asarray(value, dtype=dtype)
    array = np.asarray(value)
    if array.dtype in FLOAT_DTYPES:
        return array
    if array.dtype.kind not in "biuf":
        raise TypeError(f"Tensor holds float32 or float64 data; cannot convert dtype {array.dtype}")
    return array.astype(np.float32)


class Tensor:
    """An array that remembers how it was computed, so that gradients can flow back to it."""

    __slots__ = ("_data", "grad", "requires_grad", "_ctx", "_version")
    __array_ufunc__ = None  # `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self._data = as_float_array(data, dtype)
        if self._data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Tensor holds float32 or float64 data, got {self._data.dtype}")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._version = 0

    # --- data and metadata -----------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value):
        value = as_float_array(value, self._data.dtype)
        if value.shape != self._data.shape:
            raise ValueError(f"cannot assign data of shape {value.shape} to a tensor of shape {self._data.shape}")
        self._data = value
        self._version += 1

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self._data!r}{grad})"

    def numpy(self) -> np.ndarray:
        return self._data

    def item(self) -> float:
        return self._data.item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self._data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only change leaf tensors; use detach() on a computed one")
        self.requires_grad = bool(flag)
        return self

    def __setitem__(self, index, value):
        """In-place assignment, allowed only outside the graph (no grad recorded)."""
        if is_grad_enabled() and (self.requires_grad or self._ctx is not None):
            raise RuntimeError("in-place assignment into a tensor that requires grad is not differentiable; "
                               "use where/masked_fill/concat, or wrap the update in no_grad()")
        self._data[_unwrap_index(index)] = value.data if isinstance(value, Tensor) else value
        self._version += 1

    # --- autograd ----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a single-element output, got shape {self.shape}")
            grad = np.ones_like(self._data)
        else:
            grad = as_float_array(grad.data if isinstance(grad, Tensor) else grad, self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"gradient of shape {grad.shape} for a tensor of shape {self.shape}")
        if self._ctx is None:
            _accumulate_leaf(self, grad)
            return
        pending = {id(self): grad}
        for node in reversed(_topological_order(self)):
            node_grad = pending.pop(id(node), None)
            ctx = node._ctx
            if node_grad is None:
                continue
            ctx.check_versions(node)
            input_grads = ctx.backward(node_grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(ctx.parents):
                raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(input_grads)} gradients "
                                   f"for {len(ctx.parents)} inputs")
            for parent, parent_grad, needed in zip(ctx.parents, input_grads, ctx.needs_input_grad):
                if not needed or parent_grad is None:
                    continue
                if parent_grad.shape != parent.shape:
                    raise RuntimeError(f"{type(ctx).__name__}.backward gave a gradient of shape "
                                       f"{parent_grad.shape} for an input of shape {parent.shape}")
                if parent._ctx is None:
                    _accumulate_leaf(parent, parent_grad)
                elif id(parent) in pending:
                    pending[id(parent)] = pending[id(parent)] + parent_grad
                else:
                    pending[id(parent)] = parent_grad
            if not retain_graph:
                node._ctx = _RELEASED

    # --- operators (defined in ops.py) -------------------------------------------------
    def __add__(self, other): return ops.Add.apply(self, other)
    def __radd__(self, other): return ops.Add.apply(other, self)
    def __sub__(self, other): return ops.Sub.apply(self, other)
    def __rsub__(self, other): return ops.Sub.apply(other, self)
    def __mul__(self, other): return ops.Mul.apply(self, other)
    def __rmul__(self, other): return ops.Mul.apply(other, self)
    def __truediv__(self, other): return ops.Div.apply(self, other)
    def __rtruediv__(self, other): return ops.Div.apply(other, self)
    def __matmul__(self, other): return ops.MatMul.apply(self, other)
    def __rmatmul__(self, other): return ops.MatMul.apply(other, self)
    def __pow__(self, exponent): return ops.Pow.apply(self, exponent=exponent)
    def __neg__(self): return ops.Neg.apply(self)
    def __getitem__(self, index): return ops.GetItem.apply(self, index=_unwrap_index(index))

    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def tanh(self): return ops.Tanh.apply(self)
    def relu(self): return ops.Relu.apply(self)
    def sigmoid(self): return ops.Sigmoid.apply(self)
    def sqrt(self): return ops.Pow.apply(self, exponent=0.5)
    def sum(self, axis=None, keepdims=False): return ops.Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return ops.Mean.apply(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return ops.Reshape.apply(self, shape=tuple(shape))

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return ops.Permute.apply(self, axes=tuple(axes))

    def transpose(self, dim0: int = -2, dim1: int = -1):
        """Swap two axes (PyTorch's `transpose(dim0, dim1)`); defaults to the last two."""
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return ops.Permute.apply(self, axes=tuple(axes))

    @property
    def T(self):
        return ops.Permute.apply(self, axes=tuple(reversed(range(self.ndim))))

    def masked_fill(self, mask, value):
        return ops.where(mask, value, self)


class Function:
    """One differentiable operation: `forward` on arrays, `backward` from the output gradient.

    `apply` lifts non-tensor positional inputs to constant tensors, records the graph only when
    some input requires grad (so no graph is built under no_grad or for constants), and keeps
    `needs_input_grad` so that backward skips gradients nobody needs.
    """

    def __init__(self):
        self.parents: tuple = ()
        self.needs_input_grad: tuple = ()

    @classmethod
    def apply(cls, *inputs, **params):
        like = next((x for x in inputs if isinstance(x, Tensor)), None)
        dtype = like.dtype if like is not None else None
        tensors = tuple(x if isinstance(x, Tensor) else Tensor(x, dtype=dtype) for x in inputs)
        ctx = cls()
        ctx.needs_input_grad = tuple(t.requires_grad for t in tensors)
        requires_grad = is_grad_enabled() and any(ctx.needs_input_grad)
        output = Tensor(ctx.forward(*(t._data for t in tensors), **params), requires_grad=requires_grad)
        if requires_grad:
            ctx.parents = tensors
            ctx.input_versions = tuple(t._version for t in tensors)
            output._ctx = ctx
        return output

    def check_versions(self, output: Tensor) -> None:
        changed = [i for i, (t, v) in enumerate(zip(self.parents, self.input_versions)) if t._version != v]
        if changed or output._version != 0:
            what = f"input {changed[0]}" if changed else "its output"
            raise RuntimeError(f"{type(self).__name__}: {what} was modified in place after the forward pass, "
                               "so its gradient would be wrong")

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError


class _Released(Function):
    """Stands in for a function whose saved arrays were freed by a finished backward."""

    def check_versions(self, output):
        raise RuntimeError("backward through the same graph a second time; pass retain_graph=True the first time")


_RELEASED = _Released()


def _topological_order(root: Tensor) -> list:
    """Nodes with a recorded function, every node after all of its inputs; deterministic."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited or node._ctx is None:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in reversed(node._ctx.parents):
            if id(parent) not in visited:
                stack.append((parent, False))
    return order


def _accumulate_leaf(leaf: Tensor, grad: np.ndarray) -> None:
    if not leaf.requires_grad:
        return
    if leaf.grad is None:
        leaf.grad = np.array(grad, dtype=leaf.dtype, order="C", copy=True)  # owned: the graph may share `grad`
    else:
        leaf.grad += grad


def _unwrap_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


from mlot.architecture import ops  # noqa: E402  (ops needs Tensor and Function defined above)
