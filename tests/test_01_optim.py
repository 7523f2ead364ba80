"""AdamW, gradient clipping and schedules against plain-NumPy references and hand-computed values."""
import io
import json
import math

import numpy as np
import pytest

from mlot.architecture.optim import AdamW, clip_grad_norm_, grads_are_finite
from mlot.architecture.schedules import ConstantLR, ReduceLROnPlateau, WarmupCosine


class FakeParameter:
    """The duck-typed surface the optimizer may use, and nothing else."""

    def __init__(self, data, requires_grad=True):
        self.data = np.array(data, dtype=np.float32)
        self.grad = None
        self.requires_grad = requires_grad
        self._version = 0


def reference_adamw(value, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay):
    """PyTorch's AdamW rule written out in float64; returns the new (value, exp_avg, exp_avg_sq)."""
    beta1, beta2 = betas
    value = value * (1.0 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1.0 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
    corrected_avg = exp_avg / (1.0 - beta1 ** step)
    corrected_sq = exp_avg_sq / (1.0 - beta2 ** step)
    return value - lr * corrected_avg / (np.sqrt(corrected_sq) + eps), exp_avg, exp_avg_sq


def make_groups(rng):
    """Two groups: a decayed backbone and an undecayed head that also holds a frozen parameter."""
    backbone = [FakeParameter(rng.standard_normal((3, 4))), FakeParameter(rng.standard_normal(5))]
    head = [FakeParameter(rng.standard_normal((2, 3))), FakeParameter(rng.standard_normal(4), requires_grad=False)]
    groups = [
        {"params": backbone, "name": "backbone", "lr": 1e-2, "weight_decay": 0.1},
        {"params": head, "name": "head", "lr": 3e-3, "weight_decay": 0.0, "betas": (0.8, 0.99)},
    ]
    return groups, backbone + head


def test_adamw_matches_numpy_reference_across_groups_and_skips():
    rng = np.random.default_rng(0)
    groups, params = make_groups(rng)
    frozen = params[3]
    frozen_before = frozen.data.copy()
    optimizer = AdamW(groups, eps=1e-8)
    settings = {0: (1e-2, (0.9, 0.999), 0.1), 1: (1e-2, (0.9, 0.999), 0.1),
                2: (3e-3, (0.8, 0.99), 0.0)}
    reference = {i: [params[i].data.astype(np.float64), 0.0, 0.0, 0] for i in settings}
    for step in range(5):
        for i, param in enumerate(params):
            param.grad = rng.standard_normal(param.data.shape).astype(np.float32)
        if step == 2:
            params[1].grad = None  # no gradient this step: no update, its step count lags
        optimizer.step()
        for i, (lr, betas, weight_decay) in settings.items():
            if params[i].grad is None:
                continue
            value, exp_avg, exp_avg_sq, count = reference[i]
            value, exp_avg, exp_avg_sq = reference_adamw(
                value, params[i].grad.astype(np.float64), exp_avg, exp_avg_sq, count + 1,
                lr, betas, 1e-8, weight_decay)
            reference[i] = [value, exp_avg, exp_avg_sq, count + 1]
    for i in settings:
        np.testing.assert_allclose(params[i].data, reference[i][0], rtol=1e-5, atol=1e-6)
    assert [params[i]._version for i in range(4)] == [5, 4, 5, 0]
    np.testing.assert_array_equal(frozen.data, frozen_before)
    meta = optimizer.state_dict()["meta"]
    assert [g["steps"] for g in meta["groups"]] == [[5, 4], [5, 0]]
    assert sorted(optimizer.state_dict()["arrays"]) == sorted(
        f"group{g}.param{p}.{kind}" for g, p in [(0, 0), (0, 1), (1, 0)] for kind in ("exp_avg", "exp_avg_sq"))


def test_weight_decay_applies_only_where_set():
    decayed, plain = FakeParameter(np.ones(3)), FakeParameter(np.ones(3))
    optimizer = AdamW([{"params": [decayed]}, {"params": [plain], "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        decayed.grad, plain.grad = np.zeros(3, np.float32), np.zeros(3, np.float32)
        optimizer.step()  # zero gradient: only decoupled decay can move a weight
    np.testing.assert_allclose(decayed.data, (1 - 0.1 * 0.5) ** 3, rtol=1e-6)
    np.testing.assert_array_equal(plain.data, np.ones(3, np.float32))


def test_zero_grad_and_parameter_checks():
    param = FakeParameter(np.zeros((2, 2)))
    param.grad = np.ones((2, 2), np.float32)
    optimizer = AdamW([param])
    optimizer.zero_grad()
    assert param.grad is None
    param.grad = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 2\)"):
        optimizer.step()


@pytest.mark.parametrize("build, message", [
    (lambda p: AdamW([{"params": [p], "weight_decy": 0.1}]), "weight_decy"),
    (lambda p: AdamW([{"params": [p]}, {"params": [p]}]), "already"),
    (lambda p: AdamW([p], lr=-1.0), "lr"),
    (lambda p: AdamW([p], betas=(0.9, 1.0)), "beta2"),
    (lambda p: AdamW([]), "empty"),
    (lambda p: AdamW([{"params": [p], "name": "a"}, {"params": [], "name": "a"}]), "name"),
])
def test_constructor_errors_name_the_problem(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build(FakeParameter(np.zeros(2)))


def test_constructor_rejects_non_float32_data():
    param = FakeParameter(np.zeros(2))
    param.data = np.zeros(2, np.float64)
    with pytest.raises(TypeError, match="float32"):
        AdamW([param])


def through_npy_and_json(state):
    """What a checkpoint writer does: arrays through .npy bytes (no pickle), meta through JSON."""
    arrays = {}
    for name, array in state["arrays"].items():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        buffer.seek(0)
        arrays[name] = np.load(buffer, allow_pickle=False)
    return {"meta": json.loads(json.dumps(state["meta"])), "arrays": arrays}


def build_run(params_data):
    params = [FakeParameter(data) for data in params_data]
    params[3].requires_grad = False
    optimizer = AdamW([{"params": params[:2], "name": "backbone", "lr": 1e-2},
                       {"params": params[2:], "name": "head", "lr": 3e-3, "weight_decay": 0.0}])
    cosine = WarmupCosine(optimizer, warmup_steps=2, total_steps=8, group="backbone")
    plateau = ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    return params, optimizer, cosine, plateau


def advance(params, optimizer, cosine, plateau, grads, metric):
    for param, grad in zip(params, grads):
        param.grad = grad.copy()
    optimizer.step()
    cosine.step()
    plateau.step(metric)


def test_state_dict_round_trip_continues_bit_identically():
    rng = np.random.default_rng(1)
    initial = [rng.standard_normal(shape) for shape in [(3, 4), (5,), (2, 3), (4,)]]
    grads = [[rng.standard_normal(d.shape).astype(np.float32) for d in initial] for _ in range(6)]
    metrics = [3.0, 2.0, 2.5, 1.0, 1.5, 1.6]
    run = build_run(initial)
    for step in range(3):
        advance(*run, grads[step], metrics[step])
    saved = through_npy_and_json(run[1].state_dict())
    saved_cosine = json.loads(json.dumps(run[2].state_dict()))
    saved_plateau = json.loads(json.dumps(run[3].state_dict()))
    saved_data = [p.data.copy() for p in run[0]]
    for step in range(3, 6):  # the uninterrupted run keeps going after the save
        advance(*run, grads[step], metrics[step])

    resumed = build_run(saved_data)
    resumed[1].load_state_dict(saved)
    resumed[2].load_state_dict(saved_cosine)
    resumed[3].load_state_dict(saved_plateau)
    for step in range(3, 6):
        advance(*resumed, grads[step], metrics[step])
    for original, restored in zip(run[0], resumed[0]):
        np.testing.assert_array_equal(original.data, restored.data)
    assert [g["lr"] for g in run[1].param_groups] == [g["lr"] for g in resumed[1].param_groups]
    assert run[3].num_reductions == resumed[3].num_reductions > 0


def mismatched_optimizer(kind):
    params = [FakeParameter(np.zeros((3, 4))), FakeParameter(np.zeros(5))]
    if kind == "groups":
        return AdamW([{"params": params[:1]}, {"params": params[1:]}])
    if kind == "shape":
        params[0] = FakeParameter(np.zeros((4, 3)))
    if kind == "name":
        return AdamW([{"params": params, "name": "other"}])
    return AdamW(params)


@pytest.mark.parametrize("kind, edit, message", [
    ("groups", None, "1 param groups, this optimizer has 2"),
    ("shape", None, r"saved shape \[3, 4\], parameter shape \(4, 3\)"),
    ("name", None, "named 'group0'"),
    ("same", lambda s: s["arrays"].pop("group0.param1.exp_avg"), "'group0.param1.exp_avg' is missing"),
    ("same", lambda s: s["arrays"].__setitem__("group0.param9.exp_avg", np.zeros(1, np.float32)), "no parameter uses"),
    ("same", lambda s: s["arrays"].__setitem__("group0.param0.exp_avg", np.zeros((3, 4))), "float64"),
    ("same", lambda s: s["meta"].__setitem__("format", "other"), "format"),
])
def test_load_state_dict_rejects_mismatches_and_stays_intact(kind, edit, message):
    params = [FakeParameter(np.zeros((3, 4))), FakeParameter(np.zeros(5))]
    source = AdamW(params)
    for param in params:
        param.grad = np.ones(param.data.shape, np.float32)
    source.step()
    state = source.state_dict()
    if edit is not None:
        edit(state)
    target = mismatched_optimizer(kind)
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    assert target.state_dict()["meta"] == before["meta"]


def grads_of(params):
    return np.concatenate([p.grad.astype(np.float64).ravel() for p in params if p.grad is not None])


def clip_setup(rng):
    params = [FakeParameter(np.zeros((4, 3))), FakeParameter(np.zeros(())), FakeParameter(np.zeros(7)),
              FakeParameter(np.zeros(2))]
    params[0].grad = rng.standard_normal((3, 4)).astype(np.float32).T  # non-contiguous view
    params[1].grad = np.array(2.5, np.float32)
    params[2].grad = rng.standard_normal(7).astype(np.float32)
    return params  # params[3] has no gradient and must be ignored


def test_clip_grad_norm_scales_to_max_norm():
    params = clip_setup(np.random.default_rng(2))
    before = grads_of(params)
    expected = np.linalg.norm(before)
    total = clip_grad_norm_(params, max_norm=1.0)
    assert total == pytest.approx(expected, rel=1e-6)
    after = grads_of(params)
    assert np.linalg.norm(after) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(after, before / expected, rtol=1e-5)


def test_clip_grad_norm_below_threshold_leaves_grads_alone():
    params = clip_setup(np.random.default_rng(3))
    before = grads_of(params)
    total = clip_grad_norm_(params, max_norm=1e6)
    assert total == pytest.approx(np.linalg.norm(before), rel=1e-6)
    np.testing.assert_array_equal(grads_of(params), before)
    assert clip_grad_norm_([FakeParameter(np.zeros(2))], 1.0) == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_(params, 0.0)


@pytest.mark.parametrize("bad, check", [(np.inf, math.isinf), (np.nan, math.isnan)])
def test_non_finite_grads_are_reported_and_not_scaled(bad, check):
    params = clip_setup(np.random.default_rng(4))
    assert grads_are_finite(params)
    params[2].grad[3] = bad
    before = grads_of(params)
    assert not grads_are_finite(params)
    assert check(clip_grad_norm_(params, max_norm=1.0))
    np.testing.assert_array_equal(grads_of(params), before)


def lrs_by_step(optimizer, scheduler, steps):
    """The lr each optimizer step (1-based) runs at, under the PyTorch call order."""
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def two_group_optimizer():
    return AdamW([{"params": [FakeParameter(np.zeros(2))], "name": "memory", "lr": 0.01},
                  {"params": [FakeParameter(np.zeros(2))], "name": "base", "lr": 0.5}])


def test_warmup_cosine_hand_computed():
    optimizer = two_group_optimizer()
    schedule = WarmupCosine(optimizer, warmup_steps=4, total_steps=12, min_lr_ratio=0.1, group="memory")
    seen = lrs_by_step(optimizer, schedule, 14)
    expected = {1: 0.0025, 2: 0.005, 4: 0.01, 6: 0.01 * (0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2),
                8: 0.01 * 0.55, 12: 0.001, 14: 0.001}
    for step, lr in expected.items():
        assert seen[step - 1][0] == pytest.approx(lr, rel=1e-12)
        assert seen[step - 1][1] == 0.5  # the other group is not driven
    assert schedule.get_lr() == [seen[-1][0]]


def test_constant_lr_with_and_without_warmup():
    optimizer = two_group_optimizer()
    seen = lrs_by_step(optimizer, ConstantLR(optimizer, warmup_steps=3), 5)
    assert [lr for lr, _ in seen] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01])
    assert [lr for _, lr in seen] == pytest.approx([0.5 / 3, 1.0 / 3, 0.5, 0.5, 0.5])
    optimizer = two_group_optimizer()
    assert lrs_by_step(optimizer, ConstantLR(optimizer, group=1), 2) == [[0.01, 0.5], [0.01, 0.5]]


@pytest.mark.parametrize("build, message", [
    (lambda o: WarmupCosine(o, warmup_steps=5, total_steps=5), "total_steps"),
    (lambda o: WarmupCosine(o, 1, 10, group="decoder"), "decoder"),
    (lambda o: ConstantLR(o, group=2), "out of range"),
    (lambda o: ReduceLROnPlateau(o, factor=1.0), "factor"),
])
def test_schedule_arguments_are_checked(build, message):
    with pytest.raises(ValueError, match=message):
        build(two_group_optimizer())


def test_plateau_reduces_after_patience():
    optimizer = two_group_optimizer()
    plateau = ReduceLROnPlateau(optimizer, factor=0.5, patience=2, threshold=1e-3)
    seen = []
    for metric in [1.0, 0.9, 0.9, 0.8996, 0.9, 0.9, 0.9, 0.9]:  # 0.8996 misses the 0.1% bar
        plateau.step(metric)
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.01] * 4 + [0.005] * 3 + [0.0025])
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.125)
    assert plateau.best == 0.9


def test_plateau_improvement_threshold_floor_and_mode():
    optimizer = two_group_optimizer()
    plateau = ReduceLROnPlateau(optimizer, patience=0, threshold=1e-3, min_lr=0.004, group="memory")
    assert not plateau.step(1.0)
    assert not plateau.step(0.998)  # beats 1.0 by more than 0.1%
    assert plateau.step(float("nan"))  # a non-finite metric never improves
    assert plateau.step(0.9985) and optimizer.param_groups[0]["lr"] == pytest.approx(0.004)
    assert not plateau.step(5.0)  # already at the min_lr floor
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.004)
    maximiser = ReduceLROnPlateau(two_group_optimizer(), patience=0, mode="max")
    assert not maximiser.step(0.5) and not maximiser.step(0.6) and maximiser.step(0.55)


def test_plateau_scale_composes_with_warmup_cosine():
    optimizer = two_group_optimizer()
    cosine = WarmupCosine(optimizer, warmup_steps=2, total_steps=6, min_lr_ratio=0.0, group="memory")
    plateau = ReduceLROnPlateau(optimizer, patience=0, factor=0.5, group="memory")
    plateau.step(1.0)
    plateau.step(2.0)  # cut: from now on every scheduled value is halved
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 * 0.5)  # step 1 of warm-up
    root_half = math.sqrt(0.5)  # (1 + cos(pi * (k - 2) / 4)) / 2 after the warm-up
    expected_factor = {2: 1.0, 3: (1 + root_half) / 2, 4: 0.5, 5: (1 - root_half) / 2}
    for step in range(2, 6):
        cosine.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * expected_factor[step] * 0.5, abs=1e-15)


def test_schedule_state_is_json_and_kind_checked():
    optimizer = two_group_optimizer()
    schedule = WarmupCosine(optimizer, 2, 10)
    for _ in range(4):
        schedule.step()
    state = json.loads(json.dumps(schedule.state_dict()))
    other = WarmupCosine(two_group_optimizer(), 5, 50)
    other.load_state_dict(state)
    assert (other.last_step, other.total_steps, other.get_lr()) == (4, 10, schedule.get_lr())
    with pytest.raises(ValueError, match="ConstantLR"):
        ConstantLR(two_group_optimizer()).load_state_dict(state)
