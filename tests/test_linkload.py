"""Link load over a run (emulate.linkload): the pure aggregation by hand, and the engine's samples
of real flows over a rate-limited link (root)."""

import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from netemu.emulate.linkload import LINK_LOAD_COLUMNS, RAW_COLUMNS, LoadSampler, link_load


def _raw(rows):
    return pd.DataFrame(rows, columns=["sample", "shard", *RAW_COLUMNS])


def test_aggregation_by_hand():
    # link l (10 Mbps engine rate) on shard 0, link m (unlimited) on shard 1; time dilation 2, speed 1
    rate = 10e6 / 8
    raw = _raw([
        (-1, -1, "l", "ab", 5, 500, 5, 500, 0, 0, 0, 0, 0.0),        # base counters (calibration traffic)
        (-1, -1, "m", "ab", 0, 0, 0, 0, 0, 0, 0, 0, 0.0),
        (0, 0, "l", "ab", 5, 500, 5, 500, 0, 0, 0, 0, rate),          # sample 0: nothing new
        (1, 0, "l", "ab", 105, 100_500, 95, 90_500, 2, 1, 10_000, 12_000, rate),
        (1, 1, "m", "ab", 10, 1_000, 10, 1_000, 0, 0, 0, 0, 0.0),
        # sample 2: m absent (idle); l drains its queue
        (2, 0, "l", "ab", 105, 100_500, 102, 97_500, 2, 1, 0, 10_000, rate),
        (3, 1, "m", "ab", 14, 1_400, 14, 1_400, 0, 0, 0, 0, 0.0),
        (1, 0, "_pilot0", "ab", 3, 300, 3, 300, 0, 0, 0, 0, 0.0),     # not one of the run's links
    ])
    ticks = pd.DataFrame([(n, s, 100.0 + 0.2 * n + 0.001 * s) for n in range(4) for s in (0, 1)],
                         columns=["sample", "shard", "t_mono"])
    t = link_load(raw, ticks, origin_mono=100.0, t0_s=50.0, scale=2.0, dilation=2.0, links=["l", "m"])
    assert list(t.columns) == LINK_LOAD_COLUMNS
    assert set(t["link"]) == {"l", "m"}
    l_ = t[t["link"] == "l"].set_index("sample")
    m_ = t[t["link"] == "m"].set_index("sample")
    assert list(l_.index) == [1, 2] and list(m_.index) == [1, 3]
    # sample 1 of l: 90,000 bytes out in 0.2 s wall = 0.1 s of the network's time (dilation 2)
    assert l_.loc[1, "t_s"] == pytest.approx(50.1)
    assert l_.loc[1, "dt_s"] == pytest.approx(0.1)
    assert l_.loc[1, "tx_bytes"] == 90_000 and l_.loc[1, "tx_frames"] == 90 and l_.loc[1, "in_bytes"] == 100_000
    assert l_.loc[1, "rate_mbps"] == pytest.approx(90_000 * 8 / 0.1 / 1e6)
    assert l_.loc[1, "link_rate_mbps"] == pytest.approx(20.0)        # 10 Mbps wall × dilation 2
    assert l_.loc[1, "utilisation"] == pytest.approx(90_000 / (0.2 * rate))
    assert l_.loc[1, "utilisation"] == pytest.approx(l_.loc[1, "rate_mbps"] / l_.loc[1, "link_rate_mbps"])
    assert (l_.loc[1, "drops"], l_.loc[1, "drop_queue"]) == (3, 2)
    assert (l_.loc[1, "queue_bytes"], l_.loc[1, "queue_max_bytes"]) == (10_000, 12_000)
    assert (l_.loc[2, "tx_bytes"], l_.loc[2, "drops"], l_.loc[2, "queue_bytes"]) == (7_000, 0, 0)
    # m: unlimited (no utilisation); its sample 3 counts from its last listing (sample 1), over
    # the engine's own interval 2 → 3
    assert np.isnan(m_.loc[1, "utilisation"]) and np.isnan(m_.loc[1, "link_rate_mbps"])
    assert (m_.loc[1, "tx_bytes"], m_.loc[3, "tx_bytes"]) == (1_000, 400)
    assert m_.loc[3, "t_s"] == pytest.approx(50.0 + (0.6 + 0.001) / 2)
    # summed over samples: the counters' change since the base, exactly
    assert l_["tx_bytes"].sum() == 97_500 - 500 and m_["tx_bytes"].sum() == 1_400
    # a direction first seen after the base had zero counters before
    t2 = link_load(raw[raw["sample"] >= 0], ticks, origin_mono=100.0, t0_s=50.0, scale=2.0, dilation=2.0)
    assert t2.set_index(["link", "sample"]).loc[("_pilot0", 1), "tx_bytes"] == 300
    # no samples: an empty table of the same columns
    assert list(link_load(raw.iloc[:0], ticks.iloc[:0], origin_mono=0, t0_s=0, scale=1, dilation=1).columns) \
        == LINK_LOAD_COLUMNS


class _FakeLinks:
    """counters() and sample() of an engine whose one direction sends 1,000 bytes per sample."""

    def __init__(self):
        self.n = 0

    def counters(self):
        return pd.DataFrame([{"link": "x", "direction": "ab", "frames_in": 0, "bytes_in": 0, "frames_out": 0,
                              "bytes_out": 0, "drop_down": 0, "drop_loss": 0, "drop_queue": 0, "drop_error": 0}])

    def sample(self):
        self.n += 1
        b = 1_000 * self.n
        return [(0, time.monotonic(), 1e-6, [("x", "ab", self.n, b, self.n, b, 0, 0, 0, 0, 1e6)])]


def test_sampler_samples_on_its_interval_and_once_more_at_stop():
    links = _FakeLinks()
    s = LoadSampler(links, interval_s=0.05, scale=1.0).start()
    time.sleep(0.5)
    s.stop()
    s.stop()
    n = links.n
    assert 8 <= n <= 12, n                       # 1 at start, ~9 in 0.5 s, 1 at stop
    raw, ticks = s.raw()
    assert sorted(ticks["sample"]) == list(range(n))
    assert s.stats()["samples"] == n and s.stats()["engine_sample_us_max"] == 1.0


# --------------------------------------------------------------------------- the engine (root)

def _pair(ns, eng, params, link):
    from netemu.emulate.links import LinkEnd
    pa, pb = ns.add("a"), ns.add("b")
    for name in ("a", "b"):       # no IPv6 chatter: only the test's frames cross the link
        ns.run(name, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.run(name, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
    eng.add_link(link, LinkEnd(pa, "eth0"), LinkEnd(pb, "eth0"), params)
    for name, i in (("a", 0), ("b", 1)):
        ns.run(name, ["ip", "addr", "add", f"10.9.0.{i}/31", "dev", "eth0"])
        ns.run(name, ["ip", "link", "set", "eth0", "up"])
    macs = {n: ns.run(n, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() for n in ("a", "b")}
    ns.run("a", ["ip", "neigh", "replace", "10.9.0.1", "lladdr", macs["b"], "dev", "eth0", "nud", "permanent"])
    ns.run("b", ["ip", "neigh", "replace", "10.9.0.0", "lladdr", macs["a"], "dev", "eth0", "nud", "permanent"])
    return "10.9.0.1"


def _udp_flow(ns, dst, mbps, seconds, size=1200):
    srv = ns.popen("b", ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    ns.run("a", ["iperf3", "-c", dst, "-u", "-b", f"{mbps}M", "-t", str(seconds), "-l", str(size)], timeout=30)
    srv.wait(10)


def _load_of(eng, sampler, link):
    from netemu.emulate.clock import Clock
    clock = Clock(0.0, 1e9).started_at(sampler.samples[0][2])
    t = sampler.table(clock, links=[link])
    return t[t["direction"] == "ab"].reset_index(drop=True), eng.counters().set_index(["link", "direction"])


@pytest.mark.root
def test_sampled_utilisation_and_queue_of_real_flows(root_env, netns):
    from netemu.emulate.links import EngineLinks, LinkParams
    wire = 1200 + 8 + 20 + 14        # an iperf3 datagram of 1,200 bytes as the link carries it
    qbytes = 30_000
    with EngineLinks(shards=1) as eng:
        dst = _pair(netns, eng, LinkParams(delay_ms=2, rate_mbps=20, queue_bytes=qbytes), "u")
        sampler = LoadSampler(eng, interval_s=0.1).start()
        # below the rate: 10 Mbps of payload is 10 × 1242/1200 Mbps of frames, half of 20 Mbps
        _udp_flow(netns, dst, 10, 2)
        time.sleep(0.3)                        # let the queue drain: every frame is counted
        t_below = sampler.samples[-1][2] - sampler.samples[0][2]   # (t_s counts from sample 0)
        # above it: 40 Mbps into 20 Mbps: the queue fills to its bound and overflows
        _udp_flow(netns, dst, 40, 1.5)
        time.sleep(0.3)
        sampler.stop()
        load, c = _load_of(eng, sampler, "u")
    print(load.to_string())
    assert sampler.stats()["engine_sample_us_max"] < 1000
    # exact: bytes, frames and drops summed over the samples are the engine's counters
    ab = c.loc[("u", "ab")]
    assert load["tx_bytes"].sum() == ab["bytes_out"] and load["tx_frames"].sum() == ab["frames_out"]
    assert load["drops"].sum() == ab["drop_queue"] + ab["drop_loss"] + ab["drop_down"] + ab["drop_error"]
    assert load["drop_queue"].sum() == ab["drop_queue"] > 1000
    # the flow below the rate: utilisation = sent rate / link rate (samples fully inside the flow)
    t_s = load["t_s"].to_numpy()
    busy = load[(load["tx_bytes"] > 0) & (t_s <= t_below)]
    inner = busy.iloc[2:-2]
    assert len(inner) >= 12, busy
    expected = 10 * wire / 1200 / 20
    assert inner["utilisation"].median() == pytest.approx(expected, rel=0.05)
    assert inner["rate_mbps"].median() == pytest.approx(10 * wire / 1200, rel=0.05)
    # (iperf3 sends in bursts: a few frames queue behind each other, far from the bound)
    assert (inner["drops"] == 0).all() and (inner["queue_max_bytes"] < qbytes / 2).all()
    assert inner["tx_bytes"].sum() / inner["dt_s"].sum() * 8 / 1e6 == pytest.approx(10 * wire / 1200, rel=0.03)
    # the flow above the rate: the link saturates, its queue holds at the bound, the rest drops
    over = load[t_s > t_below]
    full = over[over["drops"] > 0].iloc[1:-1]
    assert len(full) >= 8, over
    assert full["utilisation"].median() == pytest.approx(1.0, abs=0.03)
    assert (full["queue_max_bytes"] <= qbytes).all() and (full["queue_max_bytes"] > qbytes - wire).all()
    assert (full["queue_bytes"] > qbytes / 2).all()
    # what arrived and was neither sent nor dropped is the queue's growth
    assert full["drops"].sum() > 0.3 * full["in_bytes"].sum() / wire
    # and it drains once the flow ends
    assert over["queue_bytes"].iloc[-1] == 0
