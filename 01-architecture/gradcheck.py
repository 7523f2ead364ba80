"""Gradient check: analytic gradients from backward() against central finite differences.

Run in float64: with eps around 1e-6 the truncation error (eps^2) and the round-off error
(1e-16 / eps) are both far below the tolerance, so a mismatch means a wrong backward.
"""
from __future__ import annotations

import numpy as np

from mlot.architecture.tensor import Tensor


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-4, seed: int = 0,
              max_checks: int | None = None) -> bool:
    """Check d(sum(fn(*inputs) * R))/d(input) for every input that requires grad.

    fn: callable on Tensors returning one Tensor. inputs: Tensors (float64; those with
    requires_grad are checked) or other values passed through. R is a fixed random weight so
    that every output element contributes. max_checks: differentiate numerically at most this
    many elements per input (chosen at random, for large models); None checks them all.
    Raises AssertionError naming the input, its shape and the first mismatching values.
    """
    checked = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for x in checked:
        if x.dtype != np.float64:
            raise TypeError(f"gradcheck: inputs must be float64, got {x.dtype} for shape {x.shape}")
    rng = np.random.default_rng(seed)
    output = fn(*inputs)
    weight = rng.standard_normal(output.shape)

    def objective() -> float:
        return float(np.sum(fn(*inputs).data * weight))

    for x in checked:
        x.grad = None
    (output * Tensor(weight)).sum().backward()

    for position, x in enumerate(checked):
        analytic = np.zeros(x.shape) if x.grad is None else x.grad
        numeric = np.zeros(x.shape)
        indices = list(np.ndindex(*x.shape))
        if max_checks is not None and len(indices) > max_checks:
            chosen = np.sort(rng.choice(len(indices), max_checks, replace=False))
            indices = [indices[i] for i in chosen]
            unchecked = np.ones(x.shape, dtype=bool)
            for index in indices:
                unchecked[index] = False
            numeric[unchecked] = analytic[unchecked]  # compared only where differentiated
        for index in indices:
            original = x.data[index]
            x.data[index] = original + eps
            plus = objective()
            x.data[index] = original - eps
            minus = objective()
            x.data[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
        if bad.any():
            where = np.argwhere(bad)[:5]
            raise AssertionError(
                f"gradcheck failed for input {position} of shape {x.shape}: {int(bad.sum())} of {x.size} "
                f"elements differ; first at {where.tolist()}: analytic {analytic[bad][:5]} "
                f"vs numeric {numeric[bad][:5]}")
    return True
