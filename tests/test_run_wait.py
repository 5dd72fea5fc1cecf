"""Waiting for a run's window to end (no root): the watchdog that stops a stuck run."""

import time
from types import SimpleNamespace

import pytest

from netemu.errors import EmulationError
from netemu.runner import _wait_with_progress


class _StuckRun:
    """An emulation whose player never ends: its window (1 s) ended as soon as it started."""

    def __init__(self, ends: bool = False):
        self.window = SimpleNamespace(t0_s=0.0, t_end_s=1.0)
        self.scale = 1.0
        self.ends = ends
        self.started = time.monotonic()
        self.player = SimpleNamespace(end_mono=lambda: self.started, stop=lambda: None)

    def wait(self, timeout_s):
        time.sleep(min(timeout_s, 0.05))
        return self.ends and time.monotonic() - self.started > 0.1

    def now_t_s(self):
        return time.monotonic() - self.started

    def waiting_for(self):
        return "the player (feeding the link engines); link engine 1 (pid 42, running) has not answered 'set' for 3.0 s"


def test_a_run_stuck_past_its_window_stops_with_what_it_waited_for():
    run, said = _StuckRun(), []
    t0 = time.monotonic()
    with pytest.raises(EmulationError) as e:
        _wait_with_progress(run, said.append, grace_s=0.3)
    assert 0.3 <= time.monotonic() - t0 < 2.0
    msg = str(e.value)
    assert "passed the end of its window (t = 1 s)" in msg and "link engine 1" in msg and "'set'" in msg
    assert "\n" not in msg


def test_a_run_that_ends_within_the_grace_is_not_stopped():
    run = _StuckRun(ends=True)
    _wait_with_progress(run, lambda m: None, grace_s=0.3)


def test_the_default_grace_scales_with_the_dilation(monkeypatch):
    import netemu.runner as runner
    monkeypatch.setattr(runner, "WATCHDOG_GRACE_S", 0.1)
    run = _StuckRun()
    run.scale = 5.0                       # 0.5 s of grace
    t0 = time.monotonic()
    with pytest.raises(EmulationError, match=r"by 0.5 s wall"):
        _wait_with_progress(run, lambda m: None)
    assert 0.5 <= time.monotonic() - t0 < 2.0
