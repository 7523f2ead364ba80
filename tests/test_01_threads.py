"""Thread pools sized to the free cores: the count read from /proc, the override, both pools set."""
import time
from pathlib import Path

import numba
import pytest
from threadpoolctl import threadpool_info

from mlot.architecture import threads
from mlot.architecture.busy_load import busy_processes
from mlot.architecture.cli import UserError

linux_only = pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="reads /proc (Linux)")


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@linux_only
def test_busy_processes_count_as_others_and_end_with_the_block():
    with busy_processes(2) as processes:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_state(p.pid) == "R" for p in processes):
            time.sleep(0.05)  # numpy's import first; then they never sleep
        assert all(_state(p.pid) == "R" for p in processes)
        assert threads._others_running() >= 2
    assert all(p.poll() is not None for p in processes)


def test_override_sets_both_pools(monkeypatch):
    monkeypatch.setenv(threads.ENVIRONMENT_VARIABLE, "1")
    monkeypatch.setattr(threads, "_pools", [0])
    before = numba.get_num_threads()
    try:
        assert threads.free_cores() == 1
        assert threads.fit_threads_to_load() == 1
        assert numba.get_num_threads() == 1
        assert all(info["num_threads"] == 1 for info in threadpool_info() if info["user_api"] == "blas")
    finally:
        numba.set_num_threads(before)
        threads._blas().limit(limits=before, user_api="blas")


@linux_only
def test_free_cores_are_usable_cores_minus_others(monkeypatch):
    monkeypatch.delenv(threads.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "_last", [-1.0, 1])
    monkeypatch.setattr(threads, "_others_running", lambda: 1)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.free_cores() == 3
    monkeypatch.setattr(threads, "_last", [-1.0, 1])
    monkeypatch.setattr(threads, "_others_running", lambda: 9)
    assert threads.free_cores() == 1  # never fewer than one
    monkeypatch.setattr(threads, "_others_running", lambda: 0)
    assert threads.free_cores() == 1  # re-read only after REFRESH_SECONDS
    monkeypatch.setattr(threads, "_last", [-1.0, 1])
    assert threads.free_cores() == 4


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_override_is_a_user_error(monkeypatch, value):
    monkeypatch.setenv(threads.ENVIRONMENT_VARIABLE, value)
    with pytest.raises(UserError, match=threads.ENVIRONMENT_VARIABLE):
        threads.free_cores()
