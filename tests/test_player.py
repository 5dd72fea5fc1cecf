"""The player against fakes of the live network (no root): which link updates go to the backend
for which instants, and each step's routes staged before their instant and applied at it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from netemu.emulate.clock import Clock
from netemu.emulate.playback import LinkStates, Window
from netemu.emulate.player import APPLY_COLUMNS, FEED_GUARD_S, Player
from netemu.errors import EmulationError
from netemu.testing import FakeForwarding, RecordingLinks

STEP_S = 0.1
T0_S = 300.0


def _states(steps: int = 8) -> LinkStates:
    """Three links over `steps` steps from T0_S: link 0 moves (delay grows 0.1 ms per step), link
    1 goes down at step 3 and up again at step 5, link 2 halves its rate at step 4."""
    t = T0_S + STEP_S * np.arange(steps)
    delay = np.stack([2.0 + 0.1 * np.arange(steps), np.full(steps, 5.0), np.full(steps, 7.0)], axis=1)
    rate = np.full((steps, 3), 100.0)
    rate[4:, 2] = 50.0
    up = np.ones((steps, 3), bool)
    up[3:5, 1] = False
    return LinkStates(k0=10, t_s=t, delay_ms=delay, rate_mbps=rate, loss_pct=np.zeros((steps, 3)), up=up)


def _play(dilation: float = 1.0, engine: bool = True, steps: int = 8):
    states = _states(steps)
    w = Window(10, 10 + steps - 1, T0_S, T0_S + STEP_S * (steps - 1))
    grid = np.concatenate([T0_S - STEP_S * np.arange(10, 0, -1), states.t_s])   # schedule steps 0..k1
    links, fw = RecordingLinks(), FakeForwarding({11: 3, 13: 40, 15: 1})
    clock = Clock(w.t0_s, w.t_end_s, dilation=dilation)
    pl = Player(clock, w, grid, links, fw, states, np.array(["l0", "l1", "l2"]), engine=engine)
    pl.start(lead_s=0.2)
    assert pl.wait(timeout_s=10 + steps * STEP_S * dilation)
    return pl, links, fw, states


def test_routes_are_staged_ahead_and_applied_at_their_instant():
    pl, links, fw, _ = _play()
    applied = dict((k, t) for t, k in fw.applied)
    assert sorted(applied) == list(range(11, 18))             # every step after the first, once
    staged = {}
    for t, k in fw.staged:
        staged.setdefault(k, t)
    for k, t_applied in applied.items():
        due = pl.clock.mono(T0_S + STEP_S * (k - 10))
        assert t_applied >= due - 1e-4, f"step {k} applied before its instant"
        assert t_applied - due < 0.05, f"step {k} applied {1e3 * (t_applied - due):.1f} ms late"
        assert staged.get(k, float("inf")) < due, f"step {k} was not staged before its instant"
    log = pl.apply_log()
    assert log["routes"].tolist() == [3, 0, 40, 0, 1, 0, 0]
    assert (log["lag_ms"] >= 0).all()
    # where each step's time went (apply.csv)
    assert list(log.columns) == APPLY_COLUMNS
    assert log["namespaces"].tolist() == [1, 0, 1, 0, 1, 0, 0]
    assert (log["start_late_ms"] >= 0).all() and (log["start_late_ms"] <= log["lag_ms"] + 1e-6).all()
    assert log["feed_ms"].sum() == pytest.approx(sum(pl.feed_ms))   # every engine call counted once
    assert (log["cpu_wait_ms"].dropna() >= 0).all()


def test_the_engine_gets_the_clock_and_link_changes_at_their_instants():
    pl, links, fw, states = _play(steps=25)                     # 2.5 s: three feeds of up to 1 s
    (t_clock, (origin, scale)), = links.of("set_clock")
    assert scale == 1.0 and origin == pytest.approx(pl.clock.origin_mono - T0_S)
    # the first feed holds every link's delays; later feeds only the link that moves
    feeds = [pts for _, (pts,) in links.of("set_delay_points")]
    assert set(feeds[0]) == {"l0", "l1", "l2"} and len(feeds) >= 3
    assert all(set(f) == {"l0"} for f in feeds[1:])
    got = sorted(p for f in feeds for p in f["l0"])            # every step's delay point, once
    assert [t for t, _ in got] == pytest.approx(list(states.t_s))
    assert [d for _, d in got] == pytest.approx(list(states.delay_ms[:, 0]))
    # rate/loss/up changes scheduled at their steps' instants (emulated seconds)
    params = [(at, upd) for _, (upd, at) in links.of("set_params")]
    by_t = {round(at, 6): upd for at, upd in params}
    assert set(by_t) == {round(T0_S + 0.3, 6), round(T0_S + 0.4, 6), round(T0_S + 0.5, 6)}
    assert by_t[round(T0_S + 0.3, 6)]["l1"]["up"] is False
    assert by_t[round(T0_S + 0.4, 6)]["l2"]["rate_mbps"] == 50.0
    assert by_t[round(T0_S + 0.5, 6)]["l1"]["up"] is True
    # everything the engine needed for a step was there before the step's instant
    log = pl.apply_log()
    assert (log["link_lead_ms"].dropna() > 0).all()


def test_dilation_stretches_the_clock_and_divides_rates():
    K = 3.0
    pl, links, fw, states = _play(dilation=K, steps=5)
    (_, (origin, scale)), = links.of("set_clock")
    assert scale == K
    applied = dict((k, t) for t, k in fw.applied)
    assert applied[14] - applied[11] == pytest.approx(3 * STEP_S * K, abs=0.03)
    for _, (pts,) in links.of("set_delay_points"):
        for t_s, d in pts["l0"]:
            i = int(round((t_s - T0_S) / STEP_S))
            assert d == pytest.approx(states.delay_ms[i, 0] * K)
    upd = [u for _, (u, at) in links.of("set_params") if "l2" in u]
    assert upd[0]["l2"]["rate_mbps"] == pytest.approx(50.0 / K)


def test_the_kernel_backend_gets_each_step_with_the_routes():
    pl, links, fw, states = _play(engine=False, steps=6)
    assert not links.of("set_clock") and not links.of("set_delay_points")
    updates = links.of("set_params")
    assert len(updates) == 5                                   # every step moves link 0
    for (t, (upd, at)), k in zip(updates, range(11, 16)):
        assert at is None and upd["l0"]["delay_ms"] == pytest.approx(states.delay_ms[k - 10, 0])
        assert t <= dict((kk, tt) for tt, kk in fw.applied)[k] + 1e-3


def test_a_player_must_start_before_it_is_waited_for_and_only_once():
    states = _states(3)
    w = Window(10, 12, T0_S, T0_S + 0.2)
    grid = np.concatenate([np.zeros(10), states.t_s])
    pl = Player(Clock(w.t0_s, w.t_end_s), w, grid, RecordingLinks(), FakeForwarding(), states,
                np.array(["l0", "l1", "l2"]), engine=True)
    with pytest.raises(EmulationError, match="not started"):
        pl.wait(0.1)
    pl.start(lead_s=0.05)
    with pytest.raises(EmulationError, match="started already"):
        pl.start()
    assert pl.wait(5)
    assert time.monotonic() >= pl.end_mono()


class _SlowEngine(RecordingLinks):
    """A link engine whose every call takes `call_s` (a busy one)."""

    def __init__(self, call_s: float):
        super().__init__()
        self.call_s = call_s

    def set_delay_points(self, points) -> None:
        super().set_delay_points(points)
        time.sleep(self.call_s)


def test_feeds_never_sit_in_front_of_a_route_step():
    """500 moving links fed in chunks of 64 calls, 15 ms each: the loop sends them between
    steps, but never starts one just before a route step's instant (FEED_GUARD_S, 20 ms:
    checked at 10 ms, a call's start lags its decision by a little)."""
    assert FEED_GUARD_S >= 0.01
    steps, n = 50, 500
    t = T0_S + STEP_S * np.arange(steps)
    delay = 2.0 + 0.01 * np.arange(steps)[:, None] + np.zeros((steps, n))
    states = LinkStates(k0=10, t_s=t, delay_ms=delay, rate_mbps=np.full((steps, n), 100.0),
                        loss_pct=np.zeros((steps, n)), up=np.ones((steps, n), bool))
    w = Window(10, 10 + steps - 1, T0_S, float(t[-1]))
    grid = np.concatenate([T0_S - STEP_S * np.arange(10, 0, -1), t])
    links, fw = _SlowEngine(0.015), FakeForwarding()
    pl = Player(Clock(w.t0_s, w.t_end_s), w, grid, links, fw, states, np.array([f"l{j}" for j in range(n)]),
                engine=True)
    pl.start(lead_s=0.2)
    assert pl.wait(timeout_s=30)
    dues = np.array([pl.clock.mono(x) for x in t[1:]])
    later = [c for c, _ in links.of("set_delay_points") if c > pl.clock.origin_mono]
    assert len(later) >= 8                                      # feeds while the window plays
    for c in later:
        ahead = dues - c
        assert not ((ahead > 0) & (ahead < 0.01)).any(), \
            f"an engine call started {1e3 * ahead[ahead > 0].min():.1f} ms before a route step"
