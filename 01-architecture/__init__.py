"""mlot.architecture: Tensor and autograd, functional ops, Numba kernels, nn modules, optimizers, config."""
from mlot.architecture.tensor import Function, Tensor, is_grad_enabled, no_grad
from mlot.architecture.ops import concat, matmul, stack, where
from mlot.architecture import functional, nn
from mlot.architecture.gradcheck import gradcheck

__all__ = ["Function", "Tensor", "concat", "functional", "gradcheck", "is_grad_enabled", "matmul", "nn",
           "no_grad", "stack", "where"]
