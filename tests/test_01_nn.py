"""Modules: registration, state, freezing, gradients, and that a transformer built from them learns."""
import numpy as np
import pytest

from mlot.architecture import Tensor, gradcheck, nn, no_grad
from mlot.architecture.gpt import GPT
from mlot.architecture.demo import sorting_batch, sorted_accuracy
from mlot.architecture.optim import AdamW


def rng(seed=0):
    return np.random.default_rng(seed)


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4, rng=rng(1))
        self.norm = nn.LayerNorm(4)
        self.second = nn.Linear(4, 2, bias=False, rng=rng(2))

    def forward(self, x):
        return self.second(self.norm(self.first(x)).relu())


def test_registration_order_and_names():
    names = [name for name, _ in TwoLayer().named_parameters()]
    assert names == ["first.weight", "first.bias", "norm.weight", "norm.bias", "second.weight"]


def test_state_dict_round_trip_and_errors():
    a, b = TwoLayer(), TwoLayer()
    b.first.weight.data = np.zeros((4, 3))
    b.load_state_dict(a.state_dict())
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    state = a.state_dict()
    state["first.weight"] = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"'first.weight' has shape \(3, 4\), the model expects \(4, 3\)"):
        b.load_state_dict(state)
    del state["first.weight"]
    with pytest.raises(KeyError, match="first.weight"):
        b.load_state_dict(state)


def test_state_dict_is_a_copy():
    model = TwoLayer()
    state = model.state_dict()
    state["norm.bias"][:] = 5.0
    assert not model.norm.bias.data.any()


def test_train_eval_reaches_every_module():
    model = TwoLayer().eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_frozen_parameters_get_no_gradient():
    model = TwoLayer()
    model.first.requires_grad_(False)
    model(Tensor(np.ones((2, 3)))).sum().backward()
    assert model.first.weight.grad is None and model.first.bias.grad is None
    assert model.second.weight.grad is not None


def test_shared_parameter_is_listed_once():
    model = GPT(11, 8, 1, 2, 4, rng=rng())
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names)) and names.count("wte.weight") == 1


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Linear(3, 2, rng=rng()), (2, 4, 3)),
    (lambda: nn.LayerNorm(5), (3, 5)),
    (lambda: nn.RMSNorm(5), (3, 5)),
    (lambda: nn.MLP(4, 6, rng=rng()), (2, 4)),
    (lambda: TwoLayer(), (5, 3)),
])
def test_module_gradients_match_finite_differences(make, shape):
    module = make().to_dtype(np.float64)
    for p in module.parameters():  # move norm parameters off their symmetric start
        p.data = p.data + rng(3).uniform(-0.5, 0.5, p.shape)
    x = Tensor(rng(4).standard_normal(shape), requires_grad=True)
    params = module.parameters()
    assert gradcheck(lambda x, *ps: module(x), [x, *params])


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_gradients(causal):
    attn = nn.MultiHeadAttention(6, 2, rng=rng()).to_dtype(np.float64)
    x = Tensor(rng(1).standard_normal((2, 4, 6)), requires_grad=True)
    assert gradcheck(lambda x, *ps: attn(x, causal=causal)[0], [x, *attn.parameters()])


def test_cross_attention_gradients():
    attn = nn.MultiHeadAttention(4, 2, context_dim=3, rng=rng()).to_dtype(np.float64)
    x = Tensor(rng(1).standard_normal((2, 3, 4)), requires_grad=True)
    context = Tensor(rng(2).standard_normal((2, 5, 3)), requires_grad=True)
    assert gradcheck(lambda x, c, *ps: attn(x, context=c)[0], [x, context, *attn.parameters()])


def test_attention_with_past_equals_full_sequence():
    attn = nn.MultiHeadAttention(8, 2, rng=rng())
    x = Tensor(rng(1).standard_normal((1, 6, 8)).astype(np.float32))
    with no_grad():
        full, _ = attn(x, causal=True)
        head, past = attn(x[:, :4], causal=True)
        tail, present = attn(x[:, 4:], causal=True, past=past)
    np.testing.assert_allclose(tail.data, full.data[:, 4:], rtol=1e-5, atol=1e-6)
    assert present[0].shape == (1, 2, 6, 4)


@pytest.mark.parametrize("call, message", [
    (lambda: nn.Linear(0, 3), "in_features must be a positive integer"),
    (lambda: nn.MultiHeadAttention(10, 3), "not divisible"),
    (lambda: nn.Linear(3, 2)(Tensor(np.ones((2, 4)))), r"Linear\(3, 2\): input of shape \(2, 4\)"),
    (lambda: nn.Dropout(1.5), "p must lie"),
])
def test_bad_module_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _train(model, batches, steps, lr):
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(steps):
        ids, targets = batches(step)
        loss = model.loss(ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_two_layer_transformer_overfits_a_fixed_batch():
    data = rng(7).integers(0, 16, size=(4, 12))
    model = GPT(16, 32, 2, 4, 12, rng=rng())
    first = model.loss(data, np.roll(data, -1, axis=1)).item()
    last = _train(model, lambda step: (data, np.roll(data, -1, axis=1)), 150, 1e-2)
    assert first > 2.0 and last < 0.05


def test_tiny_model_learns_to_sort():
    """Stated accuracy: >= 90 % of sorted-half tokens right after 400 steps (d=48, L=2)."""
    length, digits = 6, 6
    model = GPT(digits, 48, 2, 4, 2 * length, rng=rng(1))
    train_rng = rng(2)
    _train(model, lambda step: sorting_batch(train_rng, 64, length, digits), 400, 3e-3)
    accuracy = sorted_accuracy(model, *sorting_batch(rng(99), 256, length, digits))
    assert accuracy >= 0.90, accuracy
