"""Primitive ops against central finite differences (float64), and the graph's own rules."""
import numpy as np
import pytest

from mlot.architecture import Tensor, concat, gradcheck, no_grad, stack, where


def rand(*shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed + sum(shape)).uniform(low, high, shape)


def leaf(array):
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True)


def away_from_zero(*shape, seed=0):
    """Inputs kept away from the kinks of relu/abs and the poles of log/div."""
    x = rand(*shape, seed=seed)
    return np.where(x >= 0, x + 0.2, x - 0.2)


# name -> (function of tensors, list of input arrays); each runs through gradcheck
CASES = {
    "add_broadcast": (lambda a, b: a + b, [rand(3, 4), rand(4)]),
    "add_scalar_shape": (lambda a, b: a + b, [rand(2, 3), rand(1, 1)]),
    "radd_constant": (lambda a: 2.0 + a, [rand(3)]),
    "sub_broadcast": (lambda a, b: a - b, [rand(2, 1, 3), rand(4, 1)]),
    "rsub_constant": (lambda a: 1.0 - a, [rand(3)]),
    "mul_broadcast": (lambda a, b: a * b, [rand(2, 3, 4), rand(3, 1)]),
    "div": (lambda a, b: a / b, [rand(2, 3), away_from_zero(2, 3)]),
    "rdiv_constant": (lambda a: 1.0 / a, [away_from_zero(5)]),
    "neg": (lambda a: -a, [rand(4)]),
    "pow_square": (lambda a: a ** 2, [rand(3, 2)]),
    "pow_fractional": (lambda a: a ** 1.5, [rand(3, 2, low=0.5, high=2.0)]),
    "sqrt": (lambda a: a.sqrt(), [rand(4, low=0.5, high=2.0)]),
    "exp": (lambda a: a.exp(), [rand(2, 3)]),
    "log": (lambda a: a.log(), [rand(2, 3, low=0.3, high=3.0)]),
    "tanh": (lambda a: a.tanh(), [rand(2, 3)]),
    "relu": (lambda a: a.relu(), [away_from_zero(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), [rand(3, 4, low=-5, high=5)]),
    "sum_all": (lambda a: a.sum(), [rand(2, 3)]),
    "sum_axis": (lambda a: a.sum(axis=1), [rand(2, 3, 4)]),
    "sum_axes_keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [rand(2, 3, 4)]),
    "mean_all": (lambda a: a.mean(), [rand(3, 5)]),
    "mean_negative_axis": (lambda a: a.mean(axis=-1), [rand(2, 3, 4)]),
    "mean_keepdims": (lambda a: a.mean(axis=0, keepdims=True), [rand(3, 2)]),
    "max_all": (lambda a: a.max(), [rand(3, 4)]),
    "max_axis": (lambda a: a.max(axis=1), [rand(3, 4, 2)]),
    "max_keepdims": (lambda a: a.max(axis=-1, keepdims=True), [rand(2, 5)]),
    "reshape": (lambda a: a.reshape(6, 2) * Tensor(rand(6, 2, seed=9)), [rand(3, 4)]),
    "permute": (lambda a: a.permute(2, 0, 1), [rand(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(0, 1), [rand(2, 3, 4)]),
    "T": (lambda a: a.T, [rand(2, 3)]),
    "slice": (lambda a: a[1:, ::2], [rand(3, 5)]),
    "int_index": (lambda a: a[1], [rand(3, 4)]),
    "ellipsis_newaxis": (lambda a: a[..., None, 0], [rand(2, 3)]),
    "fancy_repeated": (lambda a: a[np.array([0, 2, 0, 0])], [rand(3, 2)]),
    "boolean_mask": (lambda a: a[np.array([True, False, True])], [rand(3, 2)]),
    "concat": (lambda a, b: concat([a, b, a], axis=1), [rand(2, 3), rand(2, 1)]),
    "stack": (lambda a, b: stack([a, b], axis=-1), [rand(2, 3), rand(2, 3, seed=1)]),
    "where": (lambda a, b: where(np.array([[True, False, True]]), a, b), [rand(2, 3), rand(2, 1)]),
    "masked_fill": (lambda a: a.masked_fill(np.array([True, False]), -3.0), [rand(3, 2)]),
    "matmul_2d": (lambda a, b: a @ b, [rand(3, 4), rand(4, 5)]),
    "matmul_batched_by_matrix": (lambda a, b: a @ b, [rand(2, 3, 4), rand(4, 2)]),
    "matmul_broadcast_batch": (lambda a, b: a @ b, [rand(2, 1, 3, 4), rand(3, 4, 2)]),
    "matmul_vector_right": (lambda a, b: a @ b, [rand(3, 4), rand(4)]),
    "matmul_vector_left": (lambda a, b: a @ b, [rand(4), rand(2, 4, 3)]),
    "matmul_dot": (lambda a, b: a @ b, [rand(4), rand(4, seed=2)]),
    "scalar_shape": (lambda a: (a * a).sum(), [rand()]),
    "composite": (lambda a, b: ((a @ b).tanh() * a.sum(axis=1, keepdims=True)).mean(axis=0),
                  [rand(3, 4), rand(4, 2)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_finite_differences(name):
    fn, arrays = CASES[name]
    assert gradcheck(fn, [leaf(a) for a in arrays])


@pytest.mark.parametrize("name", ["add_broadcast", "mul_broadcast", "matmul_broadcast_batch", "sum_axis",
                                  "fancy_repeated", "concat", "where"])
def test_float32_forward_keeps_dtype(name):
    fn, arrays = CASES[name]
    inputs = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    out = fn(*inputs)
    assert out.dtype == np.float32
    out.sum().backward()
    assert all(t.grad.dtype == np.float32 and t.grad.shape == t.shape for t in inputs)


def test_gradcheck_catches_a_wrong_backward():
    from mlot.architecture.tensor import Function

    class WrongSquare(Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, grad):
            return grad * self.a  # should be 2 * a

    with pytest.raises(AssertionError, match="gradcheck failed"):
        gradcheck(lambda x: WrongSquare.apply(x), [leaf(rand(3))])


def test_gradient_accumulates_over_uses_and_calls():
    x = Tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    (x * x + x).sum().backward()  # d/dx = 2x + 1
    np.testing.assert_array_equal(x.grad, [3.0, 5.0, 7.0])
    (x * 2.0).sum().backward()  # accumulates
    np.testing.assert_array_equal(x.grad, [5.0, 7.0, 9.0])


def test_shared_gradient_arrays_are_not_aliased():
    a = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (a + b).sum().backward()  # Add hands the same array to both inputs
    a.grad *= 10.0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])


def test_no_grad_and_detach_cut_the_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        y = x * 3.0
    assert not y.requires_grad and y.is_leaf
    z = (x * 2.0).detach()
    assert not z.requires_grad
    w = x * 2.0 + z * 5.0
    w.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_in_place_change_of_saved_input_is_detected():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = Tensor(np.array([3.0, 4.0]))
    y = (x * c).sum()
    c[0] = 10.0  # Mul saved c for the gradient of x
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_in_place_change_of_saved_output_is_detected():
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    e = x.exp()  # Exp saves its output
    y = (e * 2.0).sum()
    with no_grad():
        e[1] = 0.0
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_in_place_assignment_into_graph_is_refused():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        x[0] = 2.0


def test_second_backward_needs_retain_graph():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [8.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_needs_scalar_or_explicit_gradient():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="single-element"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.full((2, 2), 0.5))
    np.testing.assert_array_equal(x.grad, np.ones((2, 2)))


def test_backward_is_deterministic():
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(np.float32)
    grads = []
    for _ in range(2):
        a, b = Tensor(a0, requires_grad=True), Tensor(b0, requires_grad=True)
        h = (a @ b).tanh()
        (h * h + h.sum(axis=0) + (a @ b)).mean().backward()
        grads.append((a.grad.copy(), b.grad.copy()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 3\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="permutation"):
        Tensor(np.ones((2, 3))).permute(0, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        Tensor(np.ones(2, dtype=np.complex64))


def test_integer_input_becomes_float32():
    t = Tensor([1, 2, 3])
    assert t.dtype == np.float32
