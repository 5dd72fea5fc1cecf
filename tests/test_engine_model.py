"""The link engine's per-direction model and delay profiles (pure; no root)."""

import pytest

from netemu.emulate.engine import DelayProfile, Direction
from netemu.emulate.links import LinkEnd, LinkParams, tc_commands
from netemu.errors import EmulationError


def _dir(**params):
    d = Direction("l", "ab", 0, 1, DelayProfile(), seed=1)
    d.configure({"rate_mbps": 0, "loss_pct": 0, **params})
    if "delay_ms" in params:
        d.profile.set_constant(params["delay_ms"] * 1e-3, 0.0)
    return d


def test_serialisation_and_propagation():
    d = _dir(rate_mbps=8, delay_ms=10)           # 8 Mbit/s = 1 byte/µs
    t1 = d.admit(0.0, 1000)
    t2 = d.admit(0.0, 1000)                        # queued behind the first
    assert t1 == pytest.approx(0.001 + 0.010)
    assert t2 == pytest.approx(0.002 + 0.010)
    assert d.admit(1.0, 500) == pytest.approx(1.0 + 0.0005 + 0.010)   # idle link: no queueing


def test_queue_bound_in_bytes_and_packets():
    d = _dir(rate_mbps=8, queue_bytes=3000)
    deps = [d.admit(0.0, 1000) for _ in range(5)]
    assert sum(x > 0 for x in deps) == 3 and deps[3] == -3.0 and d.drop_queue == 2
    assert d.queue_hwm_bytes <= 3000
    d = _dir(rate_mbps=8, queue_packets=2)
    deps = [d.admit(0.0, 100) for _ in range(4)]
    assert [x > 0 for x in deps] == [True, True, False, False]


def test_departures_are_monotonic_unless_reordering_allowed():
    d = _dir()
    d.profile.add_points([(0.0, 0.020), (0.001, 0.005)], now=0.0)   # delay drops 15 ms in 1 ms
    a, b = d.admit(0.0, 100), d.admit(0.001, 100)
    assert a == pytest.approx(0.020) and b == pytest.approx(0.020)    # held behind the first
    d = _dir(reorder=True)
    d.profile.add_points([(0.0, 0.020), (0.001, 0.005)], now=0.0)
    a, b = d.admit(0.0, 100), d.admit(0.001, 100)
    assert b == pytest.approx(0.006) and b < a


def test_delay_profile_interpolates_and_holds():
    p = DelayProfile(0.010, t=4.0)                 # a constant set at t = 4
    p.add_points([(10.0, 0.020), (12.0, 0.005)], now=4.0)
    assert p.at(4.0) == pytest.approx(0.010)
    assert p.at(7.0) == pytest.approx(0.015)       # linear from the last value to the next point
    assert p.at(11.0) == pytest.approx(0.0125)
    assert p.at(12.0) == pytest.approx(0.005)
    assert p.at(99.0) == pytest.approx(0.005)


def test_correction_is_subtracted_never_below_zero():
    d = _dir(delay_ms=1)
    assert d.admit(0.0, 100, comp_s=100e-6) == pytest.approx(0.0009)
    assert d.admit(1.0, 100, comp_s=-50e-6) == pytest.approx(1.00105)    # negative: adds delay
    d = _dir(delay_ms=0.05)
    assert d.admit(0.0, 100, comp_s=100e-6) == 0.0


def test_departure_counts_from_the_entry_time_not_the_read():
    """A frame read 30 µs after it entered (e.g. made inside the engine's previous write)
    leaves delay after its entry; a frame read too late to keep its time is due in the past
    (it leaves at once and the engine counts it late)."""
    d = _dir(delay_ms=1)
    assert d.admit(2.00003, 100, enter=2.0) == pytest.approx(2.001)
    d = _dir(delay_ms=1, rate_mbps=8)                # 100 µs per 100-byte frame
    assert d.admit(3.00005, 100, enter=3.0) == pytest.approx(3.0011)
    assert d.admit(3.00005, 100, enter=3.0) == pytest.approx(3.0012)    # serialised behind it
    d = _dir(delay_ms=0.01)
    assert d.admit(5.001, 100, enter=5.0) == pytest.approx(5.00001)


def test_loss_is_seeded_and_counted():
    def run(seed):
        d = Direction("l", "ab", 0, 1, DelayProfile(), seed=seed)
        d.configure({"loss_pct": 10})
        return [d.admit(i * 1e-3, 100) == -2.0 for i in range(5000)], d

    a, da = run(7)
    b, _ = run(7)
    c, _ = run(8)
    assert a == b and a != c
    assert 400 < sum(a) < 600 and da.drop_loss == sum(a)


def test_down_drops_everything():
    d = _dir()
    d.configure({"up": False})
    assert all(d.admit(0.0, 100) == -1.0 for _ in range(10)) and d.drop_down == 10


def test_tc_commands_for_the_kernel_backend():
    lines = tc_commands("eth0", LinkParams(delay_ms=12.5, loss_pct=1.0, rate_mbps=100))
    assert lines[0] == "qdisc replace dev eth0 root handle 1: netem delay 12.500000ms loss 1.000000% limit 100000"
    assert lines[1] == "qdisc replace dev eth0 parent 1:1 handle 10: tbf rate 100.000000mbit burst 50000 limit 1250000"
    # a change that drops the rate removes the TBF; one without rate before needs none
    assert tc_commands("eth0", LinkParams(delay_ms=3), old=LinkParams(rate_mbps=100)) == [
        "qdisc replace dev eth0 root handle 1: netem delay 3.000000ms limit 100000",
        "qdisc del dev eth0 parent 1:1 handle 10:"]
    assert len(tc_commands("eth0", LinkParams(delay_ms=3), old=LinkParams())) == 1


def test_bad_link_parameters_are_errors():
    with pytest.raises(EmulationError, match="delay_ms"):
        LinkParams(delay_ms=-1)
    with pytest.raises(EmulationError, match="loss_pct"):
        LinkParams(loss_pct=150)
    with pytest.raises(EmulationError, match="ifname"):
        LinkEnd("/var/run/netns/x", "an-interface-name-too-long")


def test_departure_lateness_is_counted_per_bucket():
    """send_due writes every due frame and files each one's lateness (now − due time) in the
    engine's histogram; late (> 0.5 ms) frames and the worst lateness go to the direction."""
    import os
    import socket

    from netemu.emulate.engine import LATE_BUCKETS_S, Engine

    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        eng = Engine(a)
        eng.ns_ws, eng.ns_gen = [0.0], [0]
        d = Direction("l", "ab", 0, w, DelayProfile(), seed=1)
        now = 100.0
        late_us = [3000, 700, 300, 150, 60, 20, 5, 0, -10]     # the last one is not due yet
        for x in late_us:
            d.q.append((now - x * 1e-6, b"x" * 60, 0))
        eng.send_due(d, now)
        assert d.frames_out == 8 and len(d.q) == 1 and len(os.read(r, 4096)) == 8 * 60
        assert dict(zip([f"<{e * 1e6:g}us" for e in LATE_BUCKETS_S] + ["more"], eng.late_hist)) == {
            "<10us": 2, "<50us": 1, "<100us": 1, "<200us": 1, "<500us": 1, "<2000us": 1, "more": 1}
        assert d.late == 2 and d.max_late_s == pytest.approx(3e-3)
    finally:
        for f in (r, w):
            os.close(f)
        a.close()
        b.close()
