"""How many threads to use: the cores this process may run on that nothing else is running on.

A thread pool sized to every core collapses when another program keeps one of them busy: each
BLAS product and each parallel Numba kernel waits at its barrier for the thread that is not
running (a training step measured 9-16x slower beside one busy process, 06-evaluation/README.md).
So the engine sizes both pools from the cores actually free, read from the kernel's count of
runnable tasks (the fourth field of /proc/loadavg, instantaneous, unlike the load averages) minus
this process's own running threads, re-read at most every REFRESH_SECONDS.

MLOT_THREADS=N fixes the count (tests and benchmarks that want a fixed pool); threadpoolctl sets
the BLAS pool (a well-kept library that knows every BLAS build's own call; pyproject.toml).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numba
from threadpoolctl import ThreadpoolController

from mlot.architecture.cli import UserError

REFRESH_SECONDS = 0.5
ENVIRONMENT_VARIABLE = "MLOT_THREADS"

_controller: list = []   # one ThreadpoolController: finding the loaded BLAS libraries costs milliseconds
_last = [-1.0, 1]         # (time read, free cores)
_pools = [0]              # the size fit_threads_to_load last gave both pools (0: never)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _others_running() -> int | None:
    """Runnable tasks of other processes now, or None where /proc does not say (not Linux)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        own = 0
        for task in Path("/proc/self/task").iterdir():
            stat = (task / "stat").read_text()
            own += stat[stat.rindex(")") + 2] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(running - own, 0)


def free_cores() -> int:
    """Threads worth running now: MLOT_THREADS if set, else usable cores minus other runnable tasks (>= 1)."""
    fixed = os.environ.get(ENVIRONMENT_VARIABLE)
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise UserError(f"{ENVIRONMENT_VARIABLE} must be a whole number >= 1, got {fixed!r}")
        return int(fixed)
    now = time.monotonic()
    if now - _last[0] >= REFRESH_SECONDS:
        others = _others_running()
        cores = usable_cores()
        _last[:] = [now, cores if others is None else max(1, cores - others)]
    return _last[1]


def _blas() -> ThreadpoolController:
    if not _controller:
        _controller.append(ThreadpoolController())
    return _controller[0]


@contextlib.contextmanager
def blas_threads(count: int):
    """BLAS products inside the block use `count` threads."""
    with _blas().limit(limits=count, user_api="blas"):
        yield


def fit_threads_to_load() -> int:
    """Size the BLAS and Numba pools to free_cores() (called between training steps); returns it."""
    count = min(free_cores(), numba.config.NUMBA_NUM_THREADS)
    if _pools[0] != count:
        numba.set_num_threads(count)
        _blas().limit(limits=count, user_api="blas")
        _pools[0] = count
    return count
