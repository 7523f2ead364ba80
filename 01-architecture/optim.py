"""AdamW and gradient clipping (PyTorch-like names and call order); schedules are in schedules.py.

AdamW is Adam with decoupled weight decay (Loshchilov & Hutter, 2019), with PyTorch's
update rule; the arithmetic is the Numba kernel ``kernels.adamw_update``, run in place on
each parameter's flat float32 buffer.

Parameters are duck-typed: the optimizer uses only ``.data`` (float32, C-contiguous, updated
in place and never rebound), ``.grad`` (same shape, or None), ``.requires_grad`` and
``._version`` (incremented once per in-place update so autograd can detect stale saved
tensors). A parameter that is frozen or has no gradient is skipped and gets no state.

How learning rates compose
--------------------------
Every param group holds, besides ``lr``:

- ``base_lr``   the peak rate the user asked for (``lr`` when the group was added);
- ``lr_factor`` the schedule shape at the current step, owned by WarmupCosine / ConstantLR;
- ``lr_scale``  the product of plateau reductions, owned by ReduceLROnPlateau;

and every scheduler restores the rule ``lr = base_lr * lr_factor * lr_scale`` after it
changes its own key. So a warm-up/cosine schedule and a plateau scheduler on the same group
compose in any call order. Drive each group with at most one shape schedule. The optimizer
reads only ``lr``; setting it by hand works until a scheduler next applies the rule.

Optimizer state format
----------------------
``AdamW.state_dict()`` returns ``{"meta": <JSON-able dict>, "arrays": {str: np.ndarray}}``:
a flat mapping of names to float32 arrays (``"group0.param3.exp_avg"``, ``...exp_avg_sq``,
shaped like the parameter) plus the hyperparameters, parameter shapes and per-parameter step
counts (0 = no state yet) as plain JSON. A checkpoint writer stores the arrays as ``.npy``
and ``meta`` as JSON; nothing is pickled. Scheduler state dicts are JSON-able scalars.
"""
import math

import numpy as np

from mlot.architecture.kernels import adamw_update, all_finite, sum_of_squares

STATE_FORMAT = "mlot.optim.AdamW/1"
_USER_GROUP_KEYS = ("params", "name", "lr", "betas", "eps", "weight_decay")


# ---------------------------------------------------------------- small validation helpers

def _require_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _require_float(name, value, low, high=math.inf, low_open=False, high_open=False):
    """``value`` as a float inside [low, high] (ends opened on request); NaN never passes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if not (above_low and below_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _checked_hyperparameters(source, where):
    """The AdamW hyperparameters of ``source`` validated and as plain Python numbers."""
    betas = source["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
    return {
        "lr": _require_float(f"{where}: lr", source["lr"], 0.0),
        "betas": tuple(_require_float(f"{where}: beta{i + 1}", b, 0.0, 1.0, high_open=True)
                       for i, b in enumerate(betas)),
        "eps": _require_float(f"{where}: eps", source["eps"], 0.0, low_open=True),
        "weight_decay": _require_float(f"{where}: weight_decay", source["weight_decay"], 0.0),
    }


def _flat(array):
    """1-D C-contiguous view of ``array`` (a copy only when it is not contiguous)."""
    return np.ascontiguousarray(array).reshape(-1)  # (numel,)


def _parameter_buffer(param, where):
    """The flat float32 view of ``param.data`` the kernel updates in place."""
    data = getattr(param, "data", None)
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{where}: .data must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        raise TypeError(f"{where}: .data must be C-contiguous float32, got {data.dtype} "
                        f"(C-contiguous: {data.flags.c_contiguous})")
    return data.reshape(-1)  # (numel,) a view, since data is C-contiguous


def _parameter_gradient(param, where):
    grad = param.grad
    if np.shape(grad) != param.data.shape:
        raise ValueError(f"{where}: grad shape {np.shape(grad)} does not match "
                         f"parameter shape {param.data.shape}")
    return np.ascontiguousarray(grad, dtype=np.float32).reshape(-1)  # (numel,)


# ---------------------------------------------------------------------------------- AdamW

class _Moments:
    """AdamW state of one parameter: its own step count (it skips steps without a grad)
    and the first/second moments as flat float32 buffers."""

    __slots__ = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, step, exp_avg, exp_avg_sq):
        self.step = step
        self.exp_avg = exp_avg
        self.exp_avg_sq = exp_avg_sq


class AdamW:
    """AdamW over one or more param groups, each with its own lr, betas, eps and weight decay.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], "name": ...,
    "lr": ..., "betas": ..., "eps": ..., "weight_decay": ...}``; keys a dict omits take the
    constructor's values. Weight decay applies to every parameter of a group whose
    ``weight_decay`` is non-zero, so put biases and norms in a group with 0.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.defaults = _checked_hyperparameters(
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, "AdamW")
        self.param_groups = []
        self._moments = {}  # id(parameter) -> _Moments, created at its first update
        entries = list(params)
        if not entries:
            raise ValueError("AdamW got an empty parameter list")
        group_dicts = [isinstance(entry, dict) for entry in entries]
        if all(group_dicts):
            for group in entries:
                self.add_param_group(group)
        elif any(group_dicts):
            raise TypeError("AdamW params must be all parameters or all group dicts, not a mix")
        else:
            self.add_param_group({"params": entries})

    def add_param_group(self, group):
        """Append a group (e.g. modules unfrozen in a later curriculum stage)."""
        index = len(self.param_groups)
        name = group.get("name", f"group{index}")
        where = f"param group {name!r}"
        unknown = sorted(set(group) - set(_USER_GROUP_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(_USER_GROUP_KEYS)}")
        if "params" not in group:
            raise ValueError(f"{where}: missing 'params'")
        if not isinstance(name, str):
            raise TypeError(f"{where}: name must be a str")
        if any(existing["name"] == name for existing in self.param_groups):
            raise ValueError(f"{where}: another group already has this name")
        params = list(group["params"])
        owned = {id(p) for existing in self.param_groups for p in existing["params"]}
        for position, param in enumerate(params):
            _parameter_buffer(param, f"{where}, parameter {position}")
            if id(param) in owned:
                raise ValueError(f"{where}, parameter {position}: already in an earlier "
                                 "position or group (each parameter may appear once)")
            owned.add(id(param))
        hyperparameters = _checked_hyperparameters({**self.defaults, **group}, where)
        self.param_groups.append({
            "params": params, "name": name, **hyperparameters,
            "base_lr": hyperparameters["lr"], "lr_factor": 1.0, "lr_scale": 1.0,
        })

    def _trainable(self):
        """(group, position, parameter) for each parameter the next step updates."""
        for group in self.param_groups:
            for position, param in enumerate(group["params"]):
                if param.requires_grad and param.grad is not None:
                    yield group, position, param

    def step(self):
        """Apply one AdamW update to every trainable parameter that has a gradient."""
        for group, position, param in self._trainable():
            where = f"param group {group['name']!r}, parameter {position}"
            buffer = _parameter_buffer(param, where)
            grad = _parameter_gradient(param, where)
            moments = self._moments.get(id(param))
            if moments is None:
                moments = _Moments(0, np.zeros_like(buffer), np.zeros_like(buffer))
                self._moments[id(param)] = moments
            moments.step += 1
            beta1, beta2 = group["betas"]
            adamw_update(buffer, grad, moments.exp_avg, moments.exp_avg_sq,
                         float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
                         float(group["weight_decay"]), moments.step)
            param._version += 1

    def zero_grad(self):
        """Drop every gradient (set to None), so the next backward allocates fresh ones."""
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    def state_dict(self):
        """``{"meta": JSON-able, "arrays": {name: float32 array}}``, arrays copied (see module doc)."""
        arrays = {}
        groups_meta = []
        for group_index, group in enumerate(self.param_groups):
            steps = []
            for position, param in enumerate(group["params"]):
                moments = self._moments.get(id(param))
                steps.append(0 if moments is None else moments.step)
                if moments is not None:
                    prefix = f"group{group_index}.param{position}."
                    arrays[prefix + "exp_avg"] = moments.exp_avg.reshape(param.data.shape).copy()
                    arrays[prefix + "exp_avg_sq"] = moments.exp_avg_sq.reshape(param.data.shape).copy()
            groups_meta.append({
                "name": group["name"],
                "lr": float(group["lr"]),
                "betas": [float(beta) for beta in group["betas"]],
                "eps": float(group["eps"]),
                "weight_decay": float(group["weight_decay"]),
                "base_lr": float(group["base_lr"]),
                "lr_factor": float(group["lr_factor"]),
                "lr_scale": float(group["lr_scale"]),
                "param_shapes": [list(param.data.shape) for param in group["params"]],
                "steps": steps,
            })
        return {"meta": {"format": STATE_FORMAT, "groups": groups_meta}, "arrays": arrays}

    def load_state_dict(self, state):
        """Restore moments, step counts and group hyperparameters saved by ``state_dict``.

        The groups must match this optimizer's in number, names, parameter counts and shapes;
        everything is checked before anything changes, so a failed load leaves it intact.
        """
        if not isinstance(state, dict) or set(state) != {"meta", "arrays"}:
            raise ValueError("optimizer state must be a dict with exactly the keys 'meta' and 'arrays'")
        meta, arrays = state["meta"], state["arrays"]
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            raise ValueError(f"optimizer state format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"expected {STATE_FORMAT!r}")
        saved_groups = meta.get("groups")
        if not isinstance(saved_groups, list) or len(saved_groups) != len(self.param_groups):
            saved_count = len(saved_groups) if isinstance(saved_groups, list) else "no"
            raise ValueError(f"optimizer state has {saved_count} param groups, "
                             f"this optimizer has {len(self.param_groups)}")
        new_moments = {}
        new_hyperparameters = []
        used_arrays = set()
        for group_index, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            hyperparameters, moments = _checked_group_state(group_index, group, saved, arrays)
            new_hyperparameters.append(hyperparameters)
            for position, (param, param_moments) in enumerate(zip(group["params"], moments)):
                if param_moments is not None:
                    new_moments[id(param)] = param_moments
                    used_arrays.update(f"group{group_index}.param{position}.{kind}"
                                       for kind in ("exp_avg", "exp_avg_sq"))
        unexpected = sorted(set(arrays) - used_arrays)
        if unexpected:
            raise ValueError(f"optimizer state has arrays no parameter uses: {unexpected[:5]}")
        for group, hyperparameters in zip(self.param_groups, new_hyperparameters):
            group.update(hyperparameters)
        self._moments = new_moments


def _checked_group_state(group_index, group, saved, arrays):
    """One saved group checked against the live ``group``: its hyperparameters, and per
    parameter a fresh ``_Moments`` or None (no state saved)."""
    where = f"optimizer state, param group {group_index} ({group['name']!r})"
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: expected a dict, got {type(saved).__name__}")
    if saved.get("name") != group["name"]:
        raise ValueError(f"{where}: saved group is named {saved.get('name')!r}")
    hyperparameters = _checked_saved_group(saved, where)
    shapes, steps = saved.get("param_shapes"), saved.get("steps")
    for key, listed in (("param_shapes", shapes), ("steps", steps)):
        if not isinstance(listed, list) or len(listed) != len(group["params"]):
            raise ValueError(f"{where}: '{key}' lists {len(listed) if isinstance(listed, list) else 'no'} "
                             f"parameters, the group has {len(group['params'])}")
    moments = []
    for position, param in enumerate(group["params"]):
        param_where = f"{where}, parameter {position}"
        if not isinstance(shapes[position], list) or tuple(shapes[position]) != param.data.shape:
            raise ValueError(f"{param_where}: saved shape {shapes[position]}, parameter shape {param.data.shape}")
        step = _require_int(f"{param_where}: step", steps[position], 0)
        if step == 0:
            moments.append(None)
            continue
        prefix = f"group{group_index}.param{position}."
        moments.append(_Moments(step, *(_checked_moment(arrays, prefix + kind, param.data.shape, param_where)
                                        for kind in ("exp_avg", "exp_avg_sq"))))
    return hyperparameters, moments


def _checked_saved_group(saved, where):
    """Hyperparameters and schedule keys of one saved group, validated."""
    missing = [key for key in ("lr", "betas", "eps", "weight_decay", "base_lr", "lr_factor", "lr_scale")
               if key not in saved]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    return {
        **_checked_hyperparameters(saved, where),
        "base_lr": _require_float(f"{where}: base_lr", saved["base_lr"], 0.0),
        "lr_factor": _require_float(f"{where}: lr_factor", saved["lr_factor"], 0.0),
        "lr_scale": _require_float(f"{where}: lr_scale", saved["lr_scale"], 0.0, low_open=True),
    }


def _checked_moment(arrays, name, shape, where):
    """A saved moment array as a fresh flat float32 buffer, after checking its shape and dtype."""
    if name not in arrays:
        raise ValueError(f"{where}: array {name!r} is missing")
    array = arrays[name]
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != shape:
        described = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{where}: array {name!r} is {described}, expected float32 {shape}")
    return np.array(array, dtype=np.float32, order="C", copy=True).reshape(-1)  # (numel,)


# ------------------------------------------------------------------------- gradient checks

def _gradients(params):
    return [param.grad for param in params if param.grad is not None]


def clip_grad_norm_(params, max_norm):
    """Global L2 norm of all gradients (float64 accumulation); scale them in place to
    ``max_norm`` when above it. Returns the norm before clipping. A non-finite norm (inf or
    nan) is returned as is and nothing is scaled, so the caller can skip the step."""
    max_norm = _require_float("max_norm", max_norm, 0.0, low_open=True)
    grads = _gradients(params)
    total_norm = math.sqrt(sum(float(sum_of_squares(_flat(grad))) for grad in grads))
    if math.isfinite(total_norm) and total_norm > max_norm:
        scale = max_norm / total_norm
        for grad in grads:
            grad *= scale
    return total_norm


def grads_are_finite(params):
    """True when no gradient holds an inf or nan (parameters without a gradient are ignored)."""
    return all(bool(all_finite(_flat(grad))) for grad in _gradients(params))


# the schedules are part of the public `optim` namespace, as in PyTorch
from mlot.architecture.schedules import ConstantLR, ReduceLROnPlateau, WarmupCosine  # noqa: E402,F401
