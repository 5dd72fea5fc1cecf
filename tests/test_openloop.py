"""Open-loop trace replay: matching and timing statistics on synthetic tables, and real replays
between two namespaces joined by a veth pair (root)."""

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from netemu.traffic import openloop
from netemu.errors import TraceError
from conftest import ROOT

ADDR_A, ADDR_B, PORT = "10.99.0.1", "10.99.0.2", 9710
OPENLOOP = [sys.executable, "-m", "netemu.traffic.openloop"]


# --- pure helpers ---------------------------------------------------------------------------


def _sent(idx, src=None, dst=None):
    idx = np.asarray(idx, dtype=np.int64)
    out = {"idx": idx, "due_ns": 1_000_000 + idx * 1000, "sent_ns": 1_000_100 + idx * 1000,
           "failed": np.zeros(len(idx), bool)}
    if src is not None:
        out["src"], out["dst"] = np.asarray(src), np.asarray(dst)
    return out


def _received(order):
    order = np.asarray(order, dtype=np.int64)
    return {"idx": order, "recv_ns": 2_000_000 + np.arange(len(order)) * 500,
            "size_bytes": np.full(len(order), 64, dtype=np.int32)}


def test_reordering_counts_first_arrivals_behind_a_higher_idx_rfc4737():
    # 3 overtakes 2; 7 overtakes 5 and 6; the late copy of 4 is a duplicate, not a reordering
    m = openloop.match(_sent(range(10)), _received([0, 1, 3, 2, 4, 7, 5, 6, 8, 4]))
    assert m["idx"].tolist() == list(range(10))
    assert m.loc[m["reordered"], "idx"].tolist() == [2, 5, 6]
    assert m.loc[m["lost"], "idx"].tolist() == [9]
    assert np.isnan(m.loc[9, "recv_ns"]) and np.isnan(m.loc[9, "owd_ms"])
    assert m["duplicates"].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert m.loc[4, "recv_ns"] == 2_000_000 + 4 * 500       # the first copy counts
    assert m.loc[0, "owd_ms"] == pytest.approx((2_000_000 - 1_000_100) / 1e6)


def test_reordering_is_per_flow():
    # interleaved flows: idx falls across flows but rises within each
    sent = _sent(range(6), src=["a"] * 6, dst=["x", "y", "x", "y", "x", "y"])
    m = openloop.match(sent, _received([1, 0, 3, 2, 5, 4]))
    assert not m["reordered"].any()
    one_flow = openloop.match(_sent(range(6)), _received([1, 0, 3, 2, 5, 4]))
    assert one_flow.loc[one_flow["reordered"], "idx"].tolist() == [0, 2, 4]


def test_arrival_order_comes_from_receive_times():
    rec = {"idx": np.array([2, 0, 1]), "recv_ns": np.array([300, 100, 200])}
    m = openloop.match(_sent(range(3)), rec)
    assert not m["reordered"].any()


def test_send_failures_are_not_network_loss_and_strays_are_counted():
    sent = _sent(range(4))
    sent["failed"][1] = True
    m = openloop.match(sent, _received([0, 2, 99]))
    assert m["send_failed"].tolist() == [False, True, False, False]
    assert m["lost"].tolist() == [False, False, False, True]
    assert m.attrs["unmatched"] == 1


def test_match_rejects_an_idx_sent_twice():
    with pytest.raises(TraceError, match="idx 3 twice"):
        openloop.match(_sent([1, 3, 3]), _received([1]))


def test_timing_stats_recover_a_known_drift():
    rng = np.random.default_rng(7)
    n = 100_000
    due = 10_000_000_000_000 + np.arange(n, dtype=np.int64) * 10_000      # 100,000 packets/s for 1 s
    t_s = (due - due[0]) / 1e9
    err_us = 3.0 + 2.5 * t_s + rng.normal(0, 1.0, n)
    st = openloop.timing_stats({"due_ns": due, "sent_ns": due + np.rint(err_us * 1e3).astype(np.int64)})
    assert st["packets"] == n
    assert st["drift_us_per_s"] == pytest.approx(2.5, abs=0.05)
    assert st["drift_binned_us_per_s"] == pytest.approx(2.5, abs=0.1)
    assert st["error_first10_us"] == pytest.approx(3.0 + 2.5 * 0.05, abs=0.05)
    assert st["error_last10_us"] == pytest.approx(3.0 + 2.5 * 0.95, abs=0.05)
    assert st["error_median_us"] == pytest.approx(3.0 + 2.5 * 0.5, abs=0.05)
    assert st["due_pps"] == pytest.approx(100_000, rel=1e-4)
    assert st["gap_error_p50_us"] == pytest.approx(np.sqrt(2) * 0.6745, abs=0.05)   # |N(0, 2)| median


def test_binned_drift_ignores_one_stall():
    due = np.arange(100_000, dtype=np.int64) * 10_000
    late_ns = np.full(len(due), 1000)
    late_ns[5000:5300] = np.linspace(3_000_000, 0, 300).astype(np.int64)    # a 3 ms stall, caught up
    st = openloop.timing_stats({"due_ns": due, "sent_ns": due + late_ns})
    assert abs(st["drift_us_per_s"]) > 1.0
    assert st["drift_binned_us_per_s"] == pytest.approx(0.0, abs=1e-9)


def test_timing_stats_of_a_constant_lateness():
    due = np.arange(1000, dtype=np.int64) * 1_000_000
    st = openloop.timing_stats({"due_ns": due, "sent_ns": due + 7000})
    assert st["error_median_us"] == st["error_p99_us"] == st["error_max_us"] == 7.0
    assert st["gap_error_p99_us"] == 0.0 and st["drift_us_per_s"] == pytest.approx(0.0, abs=1e-9)
    assert st["achieved_pps"] == pytest.approx(1000.0)


def test_payload_and_due_times():
    plen, small = openloop.payload_bytes(np.array([1, 35, 36, 64, 1500]))
    assert plen.tolist() == [8, 8, 8, 36, 1472] and small.tolist() == [True, True, False, False, False]
    assert openloop.due_times_ns(np.array([0.0, 0.5, 1.25]), 5_000, dilation=2.0).tolist() == \
        [5_000, 1_000_005_000, 2_500_005_000]


@pytest.mark.parametrize("change, message", [
    ({"t_s": np.array([0.0, 0.2, 0.1])}, "non-decreasing times, found 0.2 then 0.1 at positions 1, 2"),
    ({"size_bytes": np.array([64, 70000, 64])}, "IP sizes 1..65535, found 70000 at position 1"),
    ({"dst": np.array([0, 0, 1])}, "indices 0..0 into dst_addrs, found 1 at position 2"),
    ({"dst": np.array([0, 0])}, "dst: expected shape (3,) like idx"),
])
def test_bad_schedules_are_refused_with_the_place(change, message):
    sched = {"idx": np.arange(3), "t_s": np.array([0.0, 0.1, 0.2]), "size_bytes": np.array([64, 64, 64]),
             "dst": np.zeros(3, int), "dst_addrs": np.array([ADDR_B])}
    with pytest.raises(TraceError, match=re.escape(message)):
        openloop.check_schedule({**sched, **change})


# --- replays between two namespaces (root) --------------------------------------------------


@pytest.fixture
def pair(netns):
    """Namespaces a (ADDR_A) and b (ADDR_B) joined by a veth; removed with `netns`."""
    netns.add("a")
    netns.add("b")
    netns.veth("a", "b", ADDR_A, ADDR_B)
    return netns


def _schedule(sizes, rate_pps):
    n = len(sizes)
    return {"idx": np.arange(1000, 1000 + n, dtype=np.int64), "t_s": np.arange(n) / rate_pps,
            "size_bytes": np.asarray(sizes, dtype=np.int32), "dst": np.zeros(n, np.int32),
            "dst_addrs": np.array([ADDR_B])}


def _start_receiver(ns, out, until_mono_s):
    p = ns.popen("b", OPENLOOP + ["recv", "--bind", ADDR_B, "--port", str(PORT), "--until-mono", f"{until_mono_s:.9f}",
                                  "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not ns.run("b", ["ss", "-Huln", f"sport = :{PORT}"]).stdout.strip():
        assert p.poll() is None, p.stderr.read().decode()
        assert time.monotonic() < deadline, "receiver did not bind"
        time.sleep(0.05)
    return p


def _send_cmd(sched_path, out, start_s, dilation=1.0):
    return OPENLOOP + ["send", "--schedule", str(sched_path), "--src", ADDR_A, "--port", str(PORT),
                       "--start-mono", f"{start_s:.9f}", "--dilation", str(dilation), "--out", str(out)]


def _replay(ns, tmp_path, sched, receive_s=None, dilation=1.0):
    """Run receiver and sender; returns (sent, received, sender counts, receiver counts). The
    receiver stops `receive_s` after its launch (default: after the whole run)."""
    openloop.save_schedule(tmp_path / "schedule.npz", sched)
    span_s = float(sched["t_s"][-1]) * dilation
    launch_s = time.monotonic()
    until_s = launch_s + (receive_s if receive_s is not None else span_s + 10.0)
    recv = _start_receiver(ns, tmp_path / "recv.npz", until_s)
    try:
        start_s = time.monotonic() + 0.3
        if receive_s is not None:
            assert start_s < until_s < start_s + span_s, "the receiver must leave during the run"
        ns.run("a", _send_cmd(tmp_path / "schedule.npz", tmp_path / "send.npz", start_s, dilation), cwd=ROOT,
               timeout=span_s + 60)
        if receive_s is None:
            time.sleep(0.2)                       # the last datagrams through the veth
            recv.send_signal(signal.SIGTERM)      # all sent: no need to wait for --until-mono
        _, err = recv.communicate(timeout=max(0.0, until_s - time.monotonic()) + 30)
        assert recv.returncode == 0, err.decode()
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    return (openloop.load_sent(tmp_path / "send.npz"), openloop.load_received(tmp_path / "recv.npz"),
            json.loads((tmp_path / "send.json").read_text()), json.loads((tmp_path / "recv.json").read_text()))


@pytest.mark.root
def test_every_packet_arrives_once_with_its_idx_and_ip_size(pair, tmp_path):
    # 1 and 20 bytes are padded to 36; 4000 bytes crosses the veth's 1500-byte MTU as fragments
    sizes = np.resize([1, 20, 35, 36, 37, 64, 576, 1500, 4000], 2700)
    sched = _schedule(sizes, rate_pps=20_000)
    sent, received, sc, rc = _replay(pair, tmp_path, sched)
    assert sc["packets"] == sc["sent"] == sc["attempted"] == len(sizes) and sc["failed"] == 0 and sc["complete"]
    assert sc["small_padded"] == int((sizes < 36).sum()) == 900
    assert rc["datagrams"] == len(sizes) and rc["not_tagged"] == 0 and rc["no_kernel_ts"] == 0
    assert sorted(received["idx"].tolist()) == sched["idx"].tolist()
    by_idx = dict(zip(received["idx"].tolist(), received["size_bytes"].tolist()))
    assert [by_idx[i] for i in sched["idx"].tolist()] == np.maximum(sizes, 36).tolist()
    assert set(received["src"].tolist()) == {ADDR_A} and set(received["dst"].tolist()) == {ADDR_B}
    m = openloop.match(sent, received)
    assert not m["lost"].any() and not m["send_failed"].any() and m["duplicates"].sum() == 0
    assert not m["reordered"].any()     # one veth, one sender: order is kept
    # one shared CLOCK_MONOTONIC: a kernel receive stamp falls after the send stamp
    assert (m["owd_ms"] > 0).all()
    assert (sent["sent_ns"] >= sent["due_ns"]).all()     # never early


@pytest.mark.root
def test_dilated_replay_is_due_at_scale_times_trace_time(pair, tmp_path):
    sched = _schedule(np.full(200, 64), rate_pps=1000)
    sent, received, sc, _ = _replay(pair, tmp_path, sched, dilation=2.5)
    assert sc["dilation"] == 2.5
    expected = openloop.due_times_ns(sched["t_s"], sc["start_mono_ns"], 2.5)
    assert sent["due_ns"].tolist() == expected.tolist()
    assert (sent["sent_ns"] >= sent["due_ns"]).all()
    assert len(received["idx"]) == 200


@pytest.mark.root
def test_packets_sent_while_the_receiver_is_absent_are_lost(pair, tmp_path):
    sched = _schedule(np.full(8000, 200), rate_pps=4000)        # 2 s; the receiver leaves about halfway
    sent, received, sc, rc = _replay(pair, tmp_path, sched, receive_s=1.5)
    m = openloop.match(sent, received)
    assert sc["sent"] == 8000 and sc["failed"] == 0     # an unconnected socket hears no port-unreachable
    assert rc["kernel_drops"] == 0
    got = m.loc[~m["lost"], "idx"]
    # the sender sends in idx order and the receiver keeps all it queued: a prefix arrives
    assert got.tolist() == sched["idx"][:len(got)].tolist()
    assert 0 < len(got) < 8000 and m["lost"].sum() == 8000 - len(got)
    assert m.loc[m["lost"], "recv_ns"].isna().all()


@pytest.mark.root
def test_sigterm_stops_both_ends_and_keeps_what_they_have(pair, tmp_path):
    sched = _schedule(np.full(20_000, 100), rate_pps=1000)       # 20 s, stopped after ~0.5 s
    openloop.save_schedule(tmp_path / "schedule.npz", sched)
    recv = _start_receiver(pair, tmp_path / "recv.npz", time.monotonic() + 120)
    send = None
    try:
        send = pair.popen("a", _send_cmd(tmp_path / "schedule.npz", tmp_path / "send.npz", time.monotonic() + 0.2),
                          cwd=ROOT, stderr=subprocess.PIPE)
        time.sleep(0.8)
        send.send_signal(signal.SIGTERM)
        assert send.wait(10) == 0, send.stderr.read().decode()
        recv.send_signal(signal.SIGTERM)
        assert recv.wait(10) == 0, recv.stderr.read().decode()
    finally:
        for p in (send, recv):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    sc = json.loads((tmp_path / "send.json").read_text())
    rc = json.loads((tmp_path / "recv.json").read_text())
    assert sc["stopped_by_signal"] and not sc["complete"] and 0 < sc["attempted"] < 20_000
    assert rc["stopped_by_signal"] and rc["datagrams"] == sc["sent"]
    sent = openloop.load_sent(tmp_path / "send.npz")
    assert len(sent["idx"]) == sc["attempted"] and (sent["sent_ns"] > 0).all()
