"""The link engine for real: namespaces, TAPs, ping, iperf3 (root; runs in CI)."""

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import pytest

from netemu.errors import EmulationError
from netemu.emulate.links import (EngineLinks, KernelLinks, LinkEnd, LinkParams, build_chain, icmp_medians_ms,
                          netem_available)
from netemu.emulate.netns import Namespaces, clean

pytestmark = [pytest.mark.root, pytest.mark.timing]


@pytest.fixture(scope="module")
def engine(root_env):
    # One busy-polling shard: frames never wait for the engine to wake up (on this 2-core VM a
    # halted vCPU takes 30-80 µs to wake, and that varies run to run); the other core is left
    # to the namespaces' own work. scripts/bench_links.py reports the sleeping mode's figures.
    with EngineLinks(shards=1, busy_poll=True) as eng:
        eng.calibration = eng.calibrate()
        print("calibration:", eng.calibration)
        yield eng


def _pair(ns, engine, params, link="l", net="10.9.0"):
    pa, pb = ns.add("a"), ns.add("b")
    engine.add_link(link, LinkEnd(pa, "eth0"), LinkEnd(pb, "eth0"), params)
    for name, i in (("a", 0), ("b", 1)):
        ns.run(name, ["ip", "addr", "add", f"{net}.{i}/31", "dev", "eth0"])
        ns.run(name, ["ip", "link", "set", "eth0", "up"])
    return f"{net}.1"


def _icmp_median_ms(ns, src, dst, count=60):
    """Median RTT from netemu.emulate.probe's ICMP echo (kernel timestamps, not rounded like ping's)."""
    return icmp_medians_ms(ns, src, [dst], count, interval_s=0.02)[0]


def _ping_median_ms(ns, src, dst, count=40):
    r = ns.run(src, ["ping", "-n", "-c", str(count), "-i", "0.02", dst])
    return statistics.median(float(v) for v in re.findall(r"time=([0-9.]+) ms", r.stdout)[1:])


@pytest.mark.parametrize("delay_ms", [1, 10, 50])
def test_rtt_over_one_link_is_twice_the_delay(netns, engine, delay_ms):
    dst = _pair(netns, engine, LinkParams(delay_ms=delay_ms), link=f"rtt{delay_ms}")
    try:
        rtt = _icmp_median_ms(netns, "a", dst)
        assert abs(rtt - 2 * delay_ms) <= 0.2, (rtt, engine.calibration)
        if delay_ms < 50:  # ping prints 3 significant digits: fine enough below 100 ms
            assert abs(_ping_median_ms(netns, "a", dst) - 2 * delay_ms) <= 0.2
    finally:
        engine.remove_link(f"rtt{delay_ms}")


def _chain(netns, engine, delay_ms, tag):
    names = [f"r{i}" for i in range(5)]
    for n in names:
        netns.add(n)
    links = [f"{tag}{delay_ms}-{i}" for i in range(4)]
    return links, build_chain(engine, netns, names, links, LinkParams(delay_ms=delay_ms))


@pytest.mark.parametrize("delay_ms", [1, 10, 50])
def test_chain_of_routers_carries_the_sum_of_its_delays(netns, engine, delay_ms):
    """Across 4 engine links and 3 forwarding routers the median RTT is 8 × delay within
    0.2 ms, and over the first link alone 2 × delay within 0.2 ms: the routers' forwarding,
    done inside the engine's writes, does not add up along the chain."""
    links, addrs = _chain(netns, engine, delay_ms, "c")
    try:
        one, rtt = icmp_medians_ms(netns, "r0", [addrs[1], addrs[-1]], 120, interval_s=0.02)
        assert abs(rtt - 8 * delay_ms) <= 0.2, (rtt, engine.calibration)
        assert abs(one - 2 * delay_ms) <= 0.2, (one, engine.calibration)
    finally:
        for link in links:
            engine.remove_link(link)


@pytest.mark.parametrize("rate_mbps", [10, 100, 1000])
def test_tcp_throughput_respects_the_rate(netns, engine, rate_mbps):
    dst = _pair(netns, engine, LinkParams(delay_ms=5, rate_mbps=rate_mbps), link=f"tp{rate_mbps}")
    try:
        srv = netns.popen("b", ["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        r = netns.run("a", ["iperf3", "-c", dst, "-t", "4", "-O", "1", "-J"], timeout=30)
        got = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        srv.wait(10)
        assert 0.90 * rate_mbps <= got <= 1.02 * rate_mbps, got
    finally:
        engine.remove_link(f"tp{rate_mbps}")


def _send_udp(ns, src, dst, count, interval=0.0005):
    srv = ns.popen("b", [sys.executable, "-m", "netemu.emulate.probe", "server", "--max-s", "20"])
    time.sleep(0.2)
    out = ns.run(src, [sys.executable, "-m", "netemu.emulate.probe", "client", dst, "--count", str(count),
                       "--interval", str(interval)]).stdout
    srv.kill()
    srv.wait()
    return out


def test_loss_matches_configuration_and_repeats_with_a_seed(root_env):
    p, n = 0.05, 3000
    patterns = []
    for seed in (11, 11, 12):
        with Namespaces() as ns, EngineLinks(shards=1, seed=seed) as eng:
            dst = _pair(ns, eng, LinkParams(loss_pct=100 * p))
            _static_neighbours(ns, "10.9.0")      # no ARP: only the probes cross the link
            eng.record(["l"])
            _send_udp(ns, "a", dst, n)
            rec = eng.take_records()
            ab = rec[rec["direction"] == "ab"]
            assert len(ab) == n
            patterns.append(list(ab["dropped"] == "loss"))
            c = eng.counters().set_index("direction")
            assert c.loc["ab", "drop_loss"] >= sum(patterns[-1])
    lost = sum(patterns[0])
    # binomial 99 % interval (normal approximation, n p = 150)
    half = 2.576 * math.sqrt(n * p * (1 - p))
    assert n * p - half <= lost <= n * p + half, lost
    assert patterns[0] == patterns[1]          # same seed, same frames: same losses
    assert patterns[0] != patterns[2]


def _static_neighbours(ns, net):
    macs = {}
    for name in ("a", "b"):
        info = json.loads(ns.run(name, ["ip", "-j", "link", "show", "eth0"]).stdout)
        macs[name] = info[0]["address"]
    ns.run("a", ["ip", "neigh", "replace", f"{net}.1", "lladdr", macs["b"], "dev", "eth0", "nud", "permanent"])
    ns.run("b", ["ip", "neigh", "replace", f"{net}.0", "lladdr", macs["a"], "dev", "eth0", "nud", "permanent"])


def test_delay_ramp_is_followed_without_reordering(netns, engine):
    dst = _pair(netns, engine, LinkParams(delay_ms=20), link="ramp")
    try:
        netns.run("a", ["ping", "-c", "1", dst])
        origin = engine.set_clock()
        t0 = time.monotonic() - origin + 2.0          # ramp 20 → 5 ms over [t0, t0 + 2 s]

        def ramp_ms(t):
            return 20.0 if t <= t0 else 5.0 if t >= t0 + 2 else 20.0 - 7.5 * (t - t0)

        engine.set_delay_points({"ramp": [(t0, 20.0), (t0 + 2.0, 5.0)]})
        engine.record(["ramp"])
        srv = netns.popen("b", [sys.executable, "-m", "netemu.emulate.probe", "server", "--max-s", "15"])
        time.sleep(0.2)
        out = netns.run("a", [sys.executable, "-m", "netemu.emulate.probe", "client", dst, "--count", "500",
                              "--interval", "0.01"]).stdout
        srv.kill()
        srv.wait()
        rec = engine.take_records()
        ab = rec[rec["direction"] == "ab"]
        # the engine held every frame for the profile's delay at its entry (minus its own overhead)
        held_ms = (ab["t_out_s"] - ab["t_in_s"]) * 1e3
        expect_ms = ab["t_in_s"].map(ramp_ms)
        applied_ms = (expect_ms - ab["compensation_us"] * 1e-3).clip(lower=0.0)
        assert ((held_ms - applied_ms).abs() <= 1e-6).all()
        assert (ab["compensation_us"] < 500).all()
        assert ab["t_out_s"].is_monotonic_increasing               # no frame overtakes another
        # end to end: the one-way delay each probe measured follows the ramp at its send time
        rows = [ln.split(",") for ln in out.splitlines()[1:] if ln.split(",")[3]]
        assert len(rows) >= 490
        err = [float(r[3]) - ramp_ms(float(r[1]) - origin) for r in rows]
        assert statistics.median(err) <= 0.2 and min(err) >= -0.1
        covered = [ramp_ms(float(r[1]) - origin) for r in rows]
        assert max(covered) == 20.0 and min(covered) == 5.0          # the probes spanned the ramp
        seqs = [int(r[0]) for r in rows]
        assert seqs == sorted(seqs)
    finally:
        engine.remove_link("ramp")


def test_link_down_drops_everything_and_up_restores(netns, engine):
    dst = _pair(netns, engine, LinkParams(delay_ms=1), link="updown")
    try:
        assert netns.run("a", ["ping", "-c", "3", "-i", "0.05", "-W", "1", dst], check=False).returncode == 0
        engine.set_params({"updown": {"up": False}})
        r = netns.run("a", ["ping", "-c", "5", "-i", "0.05", "-W", "1", dst], check=False)
        assert " 0 received" in r.stdout
        c = engine.counters().set_index("direction")
        assert c.loc["ab", "drop_down"] >= 5
        engine.set_params({"updown": {"up": True}})
        assert netns.run("a", ["ping", "-c", "3", "-i", "0.05", "-W", "1", dst], check=False).returncode == 0
    finally:
        engine.remove_link("updown")


def test_queue_overflow_is_counted_and_bounded(netns, engine):
    qbytes = 30_000
    dst = _pair(netns, engine, LinkParams(delay_ms=2, rate_mbps=10, queue_bytes=qbytes), link="q")
    try:
        srv = netns.popen("b", ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        netns.run("a", ["iperf3", "-c", dst, "-u", "-b", "40M", "-t", "2", "-l", "1200"], timeout=30)
        srv.wait(10)
        time.sleep(0.2)                     # let the queue drain: every frame is then accounted for
        c = engine.counters().set_index("direction")
        assert c.loc["ab", "drop_queue"] > 1000
        assert 0 < c.loc["ab", "queue_hwm_bytes"] <= qbytes
        assert c.loc["ab", "frames_in"] == (c.loc["ab", "frames_out"] + c.loc["ab", "drop_queue"]
                                            + c.loc["ab", "drop_loss"] + c.loc["ab", "drop_down"]
                                            + c.loc["ab", "drop_error"])
    finally:
        engine.remove_link("q")


def test_pcap_capture(netns, engine, tmp_path):
    dst = _pair(netns, engine, LinkParams(delay_ms=1), link="cap")
    try:
        paths = engine.pcap(["cap"], str(tmp_path))
        netns.run("a", ["ping", "-c", "5", "-i", "0.05", dst])
        engine.remove_link("cap")           # closes the files
        assert [p.rsplit("/", 1)[1] for p in paths] == ["cap-a.pcap", "cap-b.pcap"]
        for path in paths:                  # each end saw every echo and every reply
            with open(path, "rb") as f:
                data = f.read()
            assert data[:4] == bytes.fromhex("4d3cb2a1")    # libpcap with nanosecond stamps
            r = subprocess.run(["tcpdump", "-nr", path], capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.count("ICMP echo request") >= 5
            assert r.stdout.count("ICMP echo reply") >= 5
    except BaseException:
        if "cap" in engine.link_ids:
            engine.remove_link("cap")
        raise


def _tun_devices():
    out = subprocess.run(["ip", "-o", "link", "show", "type", "tun"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ": ne" in ln]


def test_nothing_survives_a_killed_engine(root_env):
    ns = Namespaces()
    try:
        eng = EngineLinks(shards=2)
        _pair(ns, eng, LinkParams(delay_ms=1))
        pids = eng.pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(EmulationError, match="is gone"):
            eng.counters()
        eng.stop()
    finally:
        ns.delete_all()
    assert not _tun_devices()
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(f"netemu-{ns.run_id}")]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_engine_dies_with_its_parent(root_env, tmp_path):
    code = ("import sys, time; from netemu.emulate.links import EngineLinks; e = EngineLinks(shards=2); "
            "print(' '.join(map(str, e.pids)), flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    p.kill()
    p.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)


def test_clean_removes_only_netemu_leftovers(root_env):
    ns = Namespaces()
    ns.add("left")
    mine = f"ne{ns.run_id}r"
    subprocess.run(["ip", "netns", "add", "not-netemu-ns"], check=True)
    subprocess.run(["ip", "link", "add", mine + "a", "type", "veth", "peer", "name", mine + "b"], check=True)
    subprocess.run(["ip", "link", "add", "keepme0", "type", "veth", "peer", "name", "keepme1"], check=True)
    try:
        removed = clean(ns.run_id)
        assert removed["namespaces"] == [ns.full("left")]
        assert set(removed["links"]) <= {mine + "a", mine + "b"} and removed["links"]
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert "keepme0" in links and mine not in links
        assert "not-netemu-ns" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", "not-netemu-ns"])
        subprocess.run(["ip", "link", "del", "keepme0"], capture_output=True)


def test_kernel_backend_is_refused_without_netem(root_env):
    if netem_available():
        pytest.skip("this kernel has sch_netem")
    with pytest.raises(EmulationError, match="sch_netem"):
        KernelLinks()


def test_scheduled_update_does_not_hold_frames_in_flight(netns, engine):
    """An update scheduled (at_t_s) before a frame's departure must not make the engine miss
    that departure: it used to wake for the update, find it not yet due, and sleep past the
    frame until the next arrival (a 40 ms stall in a run)."""
    dst = _pair(netns, engine, LinkParams(delay_ms=20), link="sched")
    other = "sched-other"
    engine.add_link(other, LinkEnd(netns.add("c"), "eth0"), LinkEnd(netns.add("d"), "eth0"), LinkParams(delay_ms=1))
    try:
        _icmp_median_ms(netns, "a", dst, count=4)
        from netemu.emulate.probe import icmp_rtts_ms
        rtts = []
        for _ in range(5):
            t_now = engine.set_clock()      # emulated t = 0 is now
            engine.set_params({other: {"loss_pct": 0.0}}, at_t_s=0.006)   # between send and departure
            rtts += icmp_rtts_ms(dst, count=1, interval_s=0.01, timeout_s=1.0, netns=netns.path("a"))
            assert time.monotonic() > t_now
        assert all(r is not None and abs(r - 40.0) <= 0.5 for r in rtts), rtts
    finally:
        engine.remove_link("sched")
        engine.remove_link("sched-other")



def test_a_stalled_engine_logs_the_stall_and_the_frames_it_delayed(netns, engine):
    # The engine is stopped for 20 ms while pings cross a 5-ms link (as when the hypervisor
    # pauses its vCPU): the stall is logged with its span, and the pings it held show it.
    dst = _pair(netns, engine, LinkParams(delay_ms=5), link="stall")
    try:
        netns.run("a", ["ping", "-c", "1", dst])
        n_before = len(engine.stalls())
        pid = engine.status()[0]["pid"]
        p = netns.popen("a", ["ping", "-i", "0.002", "-c", "250", "-W", "1", dst], stdout=subprocess.PIPE, text=True)
        time.sleep(0.25)
        t_stop = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.02)
        os.kill(pid, signal.SIGCONT)
        t_cont = time.monotonic()
        out, _ = p.communicate(timeout=30)
        new = engine.stalls().iloc[n_before:]
        # (the stop takes hold a little after the signal is sent: the engine sees it begin later)
        # (one stall, or a few back to back when the host also paused the engine around it)
        covering = new[(new["start_mono"] < t_cont) & (new["end_mono"] > t_stop)]
        assert len(covering) >= 1, (t_stop, t_cont, new)
        start, end = covering["start_mono"].min(), covering["end_mono"].max()
        assert t_stop - 0.001 <= start and t_cont <= end <= t_cont + 0.002, (t_stop, t_cont, new)
        span_ms = (end - start) * 1e3
        assert span_ms >= 10 and (covering["end_mono"] - covering["start_mono"]).max() * 1e3 >= 5, new
        st = engine.status()[0]
        assert st["stalls"] >= len(covering) and st["stall_total_ms"] >= (covering["end_mono"] - covering["start_mono"]).sum() * 1e3 - 1e-3
        rtts = [float(x.split("time=")[1].split()[0]) for x in out.splitlines() if "time=" in x]
        assert max(rtts) >= 10 + 0.8 * span_ms       # a ping held through the stall
    finally:
        engine.remove_link("stall")
