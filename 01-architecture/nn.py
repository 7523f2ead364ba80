"""Modules: parameter containers with PyTorch's names, so that users feel at home.

Attributes that are `Parameter`s or `Module`s register themselves in assignment order, which
fixes the order of `parameters()` and the keys of `state_dict()` ("blocks.0.attn.qkv.weight").
Initialisation draws from an explicit `np.random.Generator`; without one a module draws from
fresh OS entropy, like an unseeded PyTorch run.
"""
from __future__ import annotations

import numpy as np

from mlot.architecture import functional as F
from mlot.architecture.ops import concat
from mlot.architecture.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that a Module owns and an optimizer updates (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class Module:
    """Base class: register parameters and sub-modules by assigning them as attributes."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # --- traversal -----------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{name}.")

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix: str = ""):
        """(dotted name, parameter) pairs; a parameter shared by two modules appears once."""
        seen = set()
        for module_prefix, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield module_prefix + name, param

    def parameters(self):
        return [param for _, param in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Name -> a copy of the parameter array."""
        return {name: param.data.copy() for name, param in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters, checking names, shapes and dtypes first."""
        params = dict(self.named_parameters())
        missing = [name for name in params if name not in state]
        unexpected = [name for name in state if name not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        for name, param in params.items():
            if name not in state:
                continue
            array = np.asarray(state[name])
            if array.shape != param.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {array.shape}, the model expects {param.shape}")
            if array.dtype.kind != "f":
                raise TypeError(f"load_state_dict: '{name}' has dtype {array.dtype}, expected a float array")
        for name, param in params.items():
            if name in state:
                param.data = np.array(state[name], dtype=param.dtype, order="C")

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter of this module."""
        for param in self.parameters():
            param.requires_grad = flag
        return self

    def to_dtype(self, dtype) -> "Module":
        """Cast every parameter (float64 for gradient checks, float32 for training)."""
        for param in self.parameters():
            param._data = param.data.astype(dtype)
            param._version += 1
            param.grad = None
        return self

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None


class ModuleList(Module):
    """An indexable list of sub-modules, registered as "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def _rng(rng):
    return rng if rng is not None else np.random.default_rng()


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features); W ~ N(0, init_std^2), b = 0."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None, init_std: float = 0.02):
        super().__init__()
        _check_positive(Linear, in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_rng(rng).normal(0.0, init_std, (out_features, in_features)).astype(np.float32))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of shape {x.shape}")
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A table of `num_embeddings` vectors of size `embedding_dim`, N(0, init_std^2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, rng=None, init_std: float = 0.02):
        super().__init__()
        _check_positive(Embedding, num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.weight = Parameter(_rng(rng).normal(0.0, init_std, (num_embeddings, embedding_dim)).astype(np.float32))

    def forward(self, ids) -> Tensor:
        return F.embedding(ids, self.weight)


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        _check_positive(LayerNorm, dim=dim)
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        _check_positive(RMSNorm, dim=dim)
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, self.eps)


class Dropout(Module):
    """Inverted dropout with its own generator (its state belongs in a checkpoint)."""

    def __init__(self, p: float = 0.1, *, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p, self.rng = p, _rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.rng, self.training)


class MLP(Module):
    """Linear(d, d_ff) -> GELU -> Linear(d_ff, d) -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, *, rng=None, out_init_std: float = 0.02):
        super().__init__()
        rng = _rng(rng)
        self.fc = Linear(dim, hidden_dim, rng=rng)
        self.proj = Linear(hidden_dim, dim, rng=rng, init_std=out_init_std)
        self.dropout = Dropout(dropout, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class MultiHeadAttention(Module):
    """Multi-head attention, self (one fused q/k/v projection) or cross (`context_dim` given).

    forward(x, context=None, causal=False, prefix_len=None, past=None) -> (y, present):
    `past` is an optional (keys, values) pair of arrays (B, H, Tpast, D) from earlier positions
    (a KV cache, or a working-memory cache) prepended to this call's keys and values;
    `present` is the pair of arrays this call attended to, for the next call.
    """

    def __init__(self, dim: int, n_heads: int, context_dim: int | None = None, dropout: float = 0.0, *,
                 rng=None, out_init_std: float = 0.02):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"MultiHeadAttention: dim={dim} is not divisible by n_heads={n_heads}")
        rng = _rng(rng)
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.q_proj = Linear(dim, dim, rng=rng)
            self.kv_proj = Linear(context_dim, 2 * dim, rng=rng)
        else:
            self.qkv = Linear(dim, 3 * dim, rng=rng)
        self.out_proj = Linear(dim, dim, rng=rng, init_std=out_init_std)
        self.dropout = Dropout(dropout, rng=rng)

    def _heads(self, x: Tensor, parts: int):
        """(B, T, parts*dim) -> `parts` tensors of shape (B, H, T, D)."""
        B, T, _ = x.shape
        x = x.reshape(B, T, parts, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (parts, B, H, T, D)
        return [x[i] for i in range(parts)]

    def forward(self, x: Tensor, context: Tensor | None = None, causal: bool = False, prefix_len=None, past=None):
        B, T, _ = x.shape
        if self.is_cross:
            if context is None:
                raise ValueError("MultiHeadAttention: a cross-attention module needs `context`")
            (q,) = self._heads(self.q_proj(x), 1)
            k, v = self._heads(self.kv_proj(context), 2)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
        if past is not None:
            k = concat([Tensor(past[0]), k], axis=2)  # (B, H, Tpast + T, D)
            v = concat([Tensor(past[1]), v], axis=2)
        y = F.scaled_dot_product_attention(q, k, v, prefix_len=prefix_len, causal=causal)  # (B, H, T, D)
        y = y.permute(0, 2, 1, 3).reshape(B, T, self.dim)
        return self.dropout(self.out_proj(y)), (k.data, v.data)


def _check_positive(cls, **sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{cls.__name__}: {name} must be a positive integer, got {value!r}")
