"""mlot.architecture: Tensor and autograd, functional ops, Numba kernels, nn modules, optimizers, config."""
import os

# Numba's OpenMP worker threads otherwise spin after every kernel and starve OpenBLAS's threads
# in the matrix product that follows (a training step measured 10x slower). libgomp reads this
# when the first parallel kernel starts, so it works even if numpy was imported before us.
OMP_WAIT_POLICY_WAS_SET = "OMP_WAIT_POLICY" in os.environ  # the benchmark restores it for PyTorch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mlot.architecture.tensor import Function, Tensor, is_grad_enabled, no_grad
from mlot.architecture.ops import concat, matmul, stack, where
from mlot.architecture import functional, nn, optim
from mlot.architecture.config import ConfigError, ModelConfig
from mlot.architecture.gradcheck import gradcheck

__all__ = ["ConfigError", "Function", "ModelConfig", "Tensor", "concat", "functional", "gradcheck",
           "is_grad_enabled", "matmul", "nn", "no_grad", "optim", "stack", "where"]
