"""Learning-rate schedules: warm-up + cosine, constant, and reduce-on-plateau.

Every param group holds ``base_lr``, ``lr_factor`` (owned by the shape schedules WarmupCosine /
ConstantLR) and ``lr_scale`` (owned by ReduceLROnPlateau); each scheduler re-applies
``lr = base_lr * lr_factor * lr_scale`` after changing its own key, so a shape schedule and a
plateau scheduler on the same group compose in any call order. State dicts are JSON-able.
"""
import math

from mlot.architecture.optim import _require_float, _require_int

def _apply_lr_rule(group):
    group["lr"] = group["base_lr"] * group["lr_factor"] * group["lr_scale"]


def _select_groups(optimizer, group):
    """The param group dicts a scheduler drives: all (None), one by index, or one by name."""
    groups = optimizer.param_groups
    if group is None:
        return list(groups)
    if isinstance(group, str):
        for candidate in groups:
            if candidate["name"] == group:
                return [candidate]
        raise ValueError(f"no param group named {group!r}; groups: {[g['name'] for g in groups]}")
    index = _require_int("group", group, 0)
    if index >= len(groups):
        raise ValueError(f"group index {index} out of range: the optimizer has {len(groups)} groups")
    return [groups[index]]


def _checked_schedule_state(state, kind, keys):
    """``state`` as saved by a scheduler of class ``kind`` with exactly ``keys``."""
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"scheduler state is for {found!r}, expected {kind!r}")
    expected = {"kind", *keys}
    if set(state) != expected:
        raise ValueError(f"{kind} state: missing {sorted(expected - set(state))}, "
                         f"unexpected {sorted(set(state) - expected)}")
    return state


class _ShapeSchedule:
    """Sets ``lr_factor`` of its groups from the number of optimizer steps taken.

    Call order as in PyTorch: ``optimizer.step(); scheduler.step()``. After ``t`` calls to
    ``step()`` the groups hold the rate of optimizer step ``t + 1`` (1-based), given by
    ``lr_factor(t + 1)``; construction applies step 1's rate.
    Subclasses define ``HYPERPARAMETERS``, ``_configure(**values)`` and ``lr_factor(step)``.
    """

    HYPERPARAMETERS = ()

    def __init__(self, optimizer, group, **hyperparameters):
        self._configure(**hyperparameters)
        self.groups = _select_groups(optimizer, group)
        self.last_step = 0
        self._apply()

    def _apply(self):
        factor = self.lr_factor(self.last_step + 1)
        for group in self.groups:
            group["lr_factor"] = factor
            _apply_lr_rule(group)

    def step(self):
        """Advance one optimizer step and set the rate of the next one."""
        self.last_step += 1
        self._apply()

    def get_lr(self):
        """The current lr of each driven group."""
        return [group["lr"] for group in self.groups]

    def state_dict(self):
        return {"kind": type(self).__name__, "last_step": self.last_step,
                **{name: getattr(self, name) for name in self.HYPERPARAMETERS}}

    def load_state_dict(self, state):
        """Restore the step count and hyperparameters, and re-apply the rate at that step."""
        state = _checked_schedule_state(state, type(self).__name__, ("last_step", *self.HYPERPARAMETERS))
        last_step = _require_int("last_step", state["last_step"], 0)
        self._configure(**{name: state[name] for name in self.HYPERPARAMETERS})
        self.last_step = last_step
        self._apply()


class WarmupCosine(_ShapeSchedule):
    """Linear warm-up to ``base_lr``, then a half cosine down to ``min_lr_ratio * base_lr``.

    For 1-based optimizer step k with W = warmup_steps, T = total_steps:
    k <= W: k / W;  W < k <= T: m + (1 - m) * (1 + cos(pi * (k - W) / (T - W))) / 2;  k > T: m.
    The first step already moves (rate base/W), and step T ends exactly at the floor.
    """

    HYPERPARAMETERS = ("warmup_steps", "total_steps", "min_lr_ratio")

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.1, group=None):
        super().__init__(optimizer, group, warmup_steps=warmup_steps, total_steps=total_steps,
                         min_lr_ratio=min_lr_ratio)

    def _configure(self, warmup_steps, total_steps, min_lr_ratio):
        self.warmup_steps = _require_int("warmup_steps", warmup_steps, 0)
        self.total_steps = _require_int("total_steps", total_steps, self.warmup_steps + 1)
        self.min_lr_ratio = _require_float("min_lr_ratio", min_lr_ratio, 0.0, 1.0)

    def lr_factor(self, step):
        if step <= self.warmup_steps:
            return step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr_ratio
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ConstantLR(_ShapeSchedule):
    """``base_lr`` throughout, after an optional linear warm-up (step k of W runs at k/W)."""

    HYPERPARAMETERS = ("warmup_steps",)

    def __init__(self, optimizer, warmup_steps=0, group=None):
        super().__init__(optimizer, group, warmup_steps=warmup_steps)

    def _configure(self, warmup_steps):
        self.warmup_steps = _require_int("warmup_steps", warmup_steps, 0)

    def lr_factor(self, step):
        return min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0


class ReduceLROnPlateau:
    """Multiply ``lr_scale`` by ``factor`` once a metric has not improved for more than
    ``patience`` consecutive calls to ``step(metric)`` (PyTorch's rule, relative threshold).

    A metric improves when it beats the best so far by the relative ``threshold``
    (``metric < best * (1 - threshold)`` in mode "min", ``> best * (1 + threshold)`` in "max").
    A non-finite metric never improves. ``min_lr`` floors ``base_lr * lr_scale`` (the rate
    the shape schedule works from), not the instantaneous lr that warm-up may take to 0.
    """

    HYPERPARAMETERS = ("factor", "patience", "threshold", "min_lr", "mode")

    def __init__(self, optimizer, factor=0.5, patience=3, threshold=1e-3, min_lr=0.0, mode="min",
                 group=None):
        self._configure(factor, patience, threshold, min_lr, mode)
        self.groups = _select_groups(optimizer, group)
        self.last_step = 0
        self.best = None  # best metric so far; None before the first finite metric
        self.num_bad_steps = 0
        self.num_reductions = 0

    def _configure(self, factor, patience, threshold, min_lr, mode):
        self.factor = _require_float("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = _require_int("patience", patience, 0)
        self.threshold = _require_float("threshold", threshold, 0.0)
        self.min_lr = _require_float("min_lr", min_lr, 0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode

    def _improves(self, metric):
        if not math.isfinite(metric):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best * (1.0 - self.threshold)
        return metric > self.best * (1.0 + self.threshold)

    def step(self, metric):
        """Record one metric value (e.g. a validation loss); returns True when it cut the lr."""
        metric = float(metric)
        self.last_step += 1
        if self._improves(metric):
            self.best = metric
            self.num_bad_steps = 0
            return False
        self.num_bad_steps += 1
        if self.num_bad_steps <= self.patience:
            return False
        self.num_bad_steps = 0
        reduced = False
        for group in self.groups:
            floor = self.min_lr / group["base_lr"] if group["base_lr"] > 0 else 0.0
            new_scale = max(group["lr_scale"] * self.factor, floor)
            if new_scale < group["lr_scale"]:
                group["lr_scale"] = new_scale
                _apply_lr_rule(group)
                reduced = True
        self.num_reductions += reduced
        return reduced

    def get_lr(self):
        """The current lr of each driven group."""
        return [group["lr"] for group in self.groups]

    def state_dict(self):
        return {"kind": type(self).__name__, "last_step": self.last_step, "best": self.best,
                "num_bad_steps": self.num_bad_steps, "num_reductions": self.num_reductions,
                **{name: getattr(self, name) for name in self.HYPERPARAMETERS}}

    def load_state_dict(self, state):
        """Restore counters and hyperparameters; the reductions themselves live in the
        optimizer's groups (``lr_scale``) and come back with the optimizer's state."""
        counters = ("last_step", "best", "num_bad_steps", "num_reductions")
        state = _checked_schedule_state(state, type(self).__name__, (*counters, *self.HYPERPARAMETERS))
        best = state["best"]
        if best is not None:
            best = _require_float("best", best, -math.inf)
        last_step = _require_int("last_step", state["last_step"], 0)
        num_bad_steps = _require_int("num_bad_steps", state["num_bad_steps"], 0)
        num_reductions = _require_int("num_reductions", state["num_reductions"], 0)
        self._configure(*(state[name] for name in self.HYPERPARAMETERS))
        self.last_step, self.best = last_step, best
        self.num_bad_steps, self.num_reductions = num_bad_steps, num_reductions
