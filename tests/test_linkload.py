"""Link load over a run (emulate.linkload): the pure aggregation by hand, and the engine's samples
of real flows over a rate-limited link (root)."""

import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from netemu.emulate.linkload import LINK_LOAD_COLUMNS, RAW_COLUMNS, LoadSampler, link_load, merge_cut_links


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


def test_a_sampler_given_an_origin_samples_at_its_whole_intervals():
    """Hosts of one cluster run sample at the shared origin plus whole intervals, whenever
    each started its sampler."""
    links = _FakeLinks()
    origin = time.monotonic() + 0.12
    s = LoadSampler(links, interval_s=0.05, scale=2.0, origin_mono=origin).start()
    time.sleep(0.6)
    s.stop()
    _, ticks = s.raw()
    t = ticks.sort_values("sample")["t_mono"].to_numpy()[1:-1]     # between the first and the last
    k = (t - origin) / 0.1
    assert len(t) >= 3 and k.min() >= 0.99 and np.abs(k - np.rint(k)).max() < 0.2, k


def _host_rows(host, rows):
    cols = ["t_s", "link", "direction", "dt_s", "tx_frames", "tx_bytes", "in_bytes", "rate_mbps", "link_rate_mbps",
            "queue_bytes", "queue_max_bytes", "drops", "drop_queue"]
    df = pd.DataFrame(rows, columns=cols)
    df.insert(1, "sample", np.arange(1, len(df) + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        df["utilisation"] = df["rate_mbps"] / df["link_rate_mbps"]
    return df[LINK_LOAD_COLUMNS].assign(host=host)


def test_a_cut_links_halves_are_joined_per_sample():
    """Cut link c: a→b admitted (queued, rate-limited, dropped) on h0 and delivered on h1, b→a
    the other way round; link w lies whole on h0. One row per direction and sample slot, in
    bytes and queues from the sender, tx from the receiver, drops from both; sums unchanged."""
    h0 = _host_rows("h0", [
        # t_s, link, direction, dt_s, tx_frames, tx_bytes, in_bytes, rate, link rate, queue, queue max, drops, drop_queue
        (10.1, "c", "ab", 0.1, 0, 0, 125_000, 0.0, 10.0, 3_000, 4_000, 2, 2),
        (10.2, "c", "ab", 0.1, 0, 0, 100_000, 0.0, 10.0, 0, 3_000, 0, 0),
        (10.1, "w", "ab", 0.1, 10, 10_000, 10_000, 0.8, np.nan, 0, 0, 0, 0),
        (10.2002, "c", "ba", 0.1, 5, 5_000, 0, 0.4, np.nan, 0, 0, 1, 0),         # delivered here
    ])
    h1 = _host_rows("h1", [
        (10.1003, "c", "ab", 0.1, 100, 110_000, 0, 8.8, np.nan, 0, 0, 0, 0),
        (10.2003, "c", "ab", 0.1, 100, 112_000, 0, 8.96, np.nan, 0, 0, 0, 0),
        (10.3003, "c", "ab", 0.1, 3, 3_000, 0, 0.24, np.nan, 0, 0, 0, 0),         # the queue's last frames
        (10.2, "c", "ba", 0.1, 0, 0, 5_000, 0.0, 100.0, 0, 1_500, 0, 0),
    ])
    tables = pd.concat([h0, h1], ignore_index=True)
    senders = {("c", "ab"): "h0", ("c", "ba"): "h1"}
    m = merge_cut_links(tables, senders, 0.1)
    assert list(m.columns) == [*LINK_LOAD_COLUMNS, "host"]
    ab = m[(m["link"] == "c") & (m["direction"] == "ab")].reset_index(drop=True)
    assert list(ab["sample"]) == [101, 102, 103] and list(ab["host"]) == ["h0"] * 3
    assert list(ab["t_s"]) == [10.1, 10.2, 10.3003]                 # the sender's instants; rx-only slot: the receiver's
    assert list(ab["tx_bytes"]) == [110_000, 112_000, 3_000] and list(ab["in_bytes"]) == [125_000, 100_000, 0]
    assert list(ab["queue_max_bytes"]) == [4_000, 3_000, 0] and list(ab["drops"]) == [2, 0, 0]
    assert list(ab["link_rate_mbps"]) == [10.0, 10.0, 10.0]
    assert ab["utilisation"].to_numpy() == pytest.approx([0.88, 0.896, 0.024])
    ba = m[(m["link"] == "c") & (m["direction"] == "ba")]
    assert len(ba) == 1 and ba["host"].iloc[0] == "h1" and ba["tx_bytes"].iloc[0] == 5_000
    assert ba["drops"].iloc[0] == 1 and ba["utilisation"].iloc[0] == pytest.approx(0.004)
    w = m[m["link"] == "w"]
    assert len(w) == 1 and w["host"].iloc[0] == "h0" and w["tx_bytes"].iloc[0] == 10_000
    for c in ("tx_bytes", "tx_frames", "in_bytes", "drops", "drop_queue"):
        assert m[c].sum() == tables[c].sum(), c
    assert len(merge_cut_links(tables.iloc[:0], senders, 0.1)) == 0


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
    from netemu.emulate.engine import default_queue_bytes
    from netemu.emulate.links import EngineLinks, LinkParams
    wire = 1200 + 8 + 20 + 14        # an iperf3 datagram of 1,200 bytes as the link carries it
    qbytes = 30_000
    with EngineLinks(shards=1) as eng:
        # (first the default queue, 100 ms at the rate: iperf3 catching up after a pause of the
        # host sends bursts that a 12-ms queue would not hold)
        dst = _pair(netns, eng, LinkParams(delay_ms=2, rate_mbps=20), "u")
        sampler = LoadSampler(eng, interval_s=0.1).start()
        # below the rate: 10 Mbps of payload is 10 × 1242/1200 Mbps of frames, half of 20 Mbps
        _udp_flow(netns, dst, 10, 2)
        time.sleep(0.3)                        # let the queue drain: every frame is counted
        t_below = sampler.samples[-1][2] - sampler.samples[0][2]   # (t_s counts from sample 0)
        # above it: 40 Mbps into 20 Mbps: the queue fills to its bound and overflows
        eng.set_params({"u": {"queue_bytes": qbytes}})
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
    # (iperf3 sends in bursts: a few frames queue behind each other, far from the bound; more
    # when it catches up after the host paused it)
    assert (inner["drops"] == 0).all() and inner["queue_max_bytes"].max() < default_queue_bytes(20) / 2
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


# --------------------------------------------------------------------------- the report

from test_report import synthetic_run  # noqa: E402,F401  (a real plan, fabricated measurements)


def _synthetic_load(run):
    """Link L1 (g-sanya–w03-00, 20 Mbps) saturated from sample 40 to 79, its queue full and
    dropping; L2 (w03-00–w03-01, unlimited) carrying a little both ways; L3 less still."""
    rows = []
    for n in range(1, 161):
        t = 330 + 0.1 * n
        if 20 <= n < 100:
            full = 40 <= n < 80
            rows.append((t, n, "L1", "ab", 250_000 if full else 125_000, 20.0, 1.0 if full else 0.5,
                         29_000 if full else 0, 30_000 if full else 2_500, 50 if full else 0))
        if n % 2 == 0:
            rows.append((t, n, "L2", "ab", 20_000, np.nan, np.nan, 0, 0, 0))
            rows.append((t, n, "L2", "ba", 10_000, np.nan, np.nan, 0, 0, 0))
        if n == 5:
            rows.append((t, n, "L3", "ab", 1_000, np.nan, np.nan, 0, 0, 0))
    t = pd.DataFrame(rows, columns=["t_s", "sample", "link", "direction", "tx_bytes", "link_rate_mbps", "utilisation",
                                    "queue_bytes", "queue_max_bytes", "drops"])
    t = t.assign(dt_s=0.1, tx_frames=t["tx_bytes"] // 1250, in_bytes=t["tx_bytes"], drop_queue=t["drops"],
                 rate_mbps=t["tx_bytes"] * 8 / 0.1 / 1e6)[LINK_LOAD_COLUMNS]
    t.to_parquet(run / "link_load.parquet", index=False)
    pd.DataFrame([("L1", "ab", "g-sanya", "w03-00", "gsl", 1, 1), ("L2", "ab", "w03-00", "w03-01", "isl", 1, 1),
                  ("L3", "ab", "w03-01", "w03-02", "isl", 1, 1)],
                 columns=["link", "direction", "a", "b", "kind", "bytes_out", "frames_out"]).to_csv(
        run / "link_counters.csv", index=False)
    return t


def test_link_load_series_and_figure(synthetic_run, tmp_path):  # noqa: F811
    import shutil
    import netemu
    from netemu.report import fig_link_load, link_load_series
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    table = _synthetic_load(run)
    assert netemu.load_run(run).link_load.equals(table)
    s = link_load_series(table, n=2)
    assert s["links"] == ["L1", "L2"]                   # by bytes; L3 left out
    assert list(s["t_s"].index) == list(range(2, 161)) and s["t_s"][7] == pytest.approx(330.7)
    u, q = s["utilisation"], s["queue_max_bytes"]
    assert list(u.columns) == [("L1", "ab"), ("L2", "ab"), ("L2", "ba")]
    assert u[("L1", "ab")][50] == 1.0 and u[("L1", "ab")][30] == 0.5 and u[("L1", "ab")][10] == 0.0  # idle: 0
    assert u[("L2", "ab")].isna().all()                 # no rate: no utilisation
    assert s["rate_mbps"][("L2", "ab")][3] == 0.0 and s["rate_mbps"][("L2", "ab")][4] == pytest.approx(1.6)
    assert q[("L1", "ab")][79] == 30_000 and q[("L1", "ab")][80] == 2_500 and s["drops"][("L1", "ab")].sum() == 2000
    fig = fig_link_load(run, n=2)
    rate_ax, util_ax, queue_ax = fig.axes
    names = {"g-sanya→w03-00", "w03-00→w03-01", "w03-01→w03-00"}
    assert {ln.get_label() for ln in rate_ax.get_lines()} - {"GSL handover"} == names
    i30 = list(s["t_s"].index).index(30)
    rates = {ln.get_label(): ln.get_ydata() for ln in rate_ax.get_lines()}
    l1 = rates["g-sanya→w03-00"]
    assert max(l1) == pytest.approx(20.0) and l1[i30] == pytest.approx(10.0)
    lines = {ln.get_label(): ln for ln in util_ax.get_lines()}
    assert set(lines) - {"GSL handover"} == {"g-sanya→w03-00"}   # only L1 has a rate to be a fraction of
    y = lines["g-sanya→w03-00"].get_ydata()
    assert max(y) == 100.0 and y[i30] == 50.0
    queue_lines = {ln.get_label() for ln in queue_ax.get_lines()} - {"GSL handover"}
    assert queue_lines == {"g-sanya→w03-00", "samples with drops"}
    drops = [ln for ln in queue_ax.get_lines() if ln.get_label() == "samples with drops"]
    assert len(drops) == 1 and len(drops[0].get_xdata()) == 40
    assert min(drops[0].get_xdata()) == pytest.approx(334.0)
    assert fig.legends and not fig.legends[0].get_window_extent().overlaps(queue_ax.get_window_extent())
    fig.savefig(tmp_path / "link_load.png")
    # (report.html shows it: test_a_run_writes_its_link_load, on a real run's report)
    # without the table: no figure (and no section)
    (run / "link_load.parquet").unlink()
    assert fig_link_load(run) is None


@pytest.mark.root
def test_a_run_writes_its_link_load(ring_run):
    """The ring run (tests/conftest.py): its apps' pings cross r00-00–r00-01 both ways."""
    out, info = ring_run["out"], ring_run["info"]
    load = pd.read_parquet(out / "link_load.parquet")
    counters = pd.read_csv(out / "link_counters.csv").set_index(["link", "direction"])
    assert info["link_load"]["samples"] >= 0.9 * 6 / 0.1 and not info["link_load"].get("error")
    assert info["link_load"]["engine_sample_us_max"] < 2000
    assert set(load["link"]) <= set(counters.index.get_level_values(0))
    assert not load["link"].str.startswith("_").any()    # the pilot's and calibration's links are not the run's
    sums = load.groupby(["link", "direction"])[["tx_bytes", "tx_frames"]].sum()
    for key, row in sums.iterrows():      # the samples count from the run's start, the counters from bring-up
        assert row["tx_bytes"] <= counters.loc[key, "bytes_out"] and row["tx_frames"] <= counters.loc[key, "frames_out"]
    c = counters.reset_index()
    link = c[(c["a"] == "r00-00") & (c["b"] == "r00-01")]["link"].iloc[0]
    ping = load[load["link"] == link]
    assert set(ping["direction"]) == {"ab", "ba"}
    assert ping.groupby("direction")["tx_frames"].sum().min() >= 5      # 5 echoes and their replies
    assert load["dt_s"].median() == pytest.approx(0.1, abs=0.01)
    assert (load["utilisation"] < 0.01).all()     # pings on 1-Gbit/s links
    html = (out / "report.html").read_text()
    assert "figures/link_load.png" in html and (out / "figures" / "link_load.png").exists()


def test_time_view_colours_links_by_their_load_at_each_step(synthetic_run, tmp_path):  # noqa: F811
    import shutil
    from netemu.timeview import timeview_data
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    links = pd.read_parquet(run / "links.parquet")
    up = links[(links["t_s"] == 332.0) & links["up"]]
    a, b = str(up["a"].iloc[0]), str(up["b"].iloc[0])
    # the link's ends given the other way round (b, a): the view finds it either way
    pd.DataFrame([("X", "ab", b, a, "isl", 1, 1)],
                 columns=["link", "direction", "a", "b", "kind", "bytes_out", "frames_out"]).to_csv(
        run / "link_counters.csv", index=False)
    rows = [(332.05 + 0.1 * i, i + 1, "X", d, n) for i in range(10) for d, n in (("ab", 125_000), ("ba", 50_000))]
    t = pd.DataFrame(rows, columns=["t_s", "sample", "link", "direction", "tx_bytes"])
    for c in LINK_LOAD_COLUMNS:
        if c not in t:
            t[c] = 0
    t[LINK_LOAD_COLUMNS].to_parquet(run / "link_load.parquet", index=False)
    d = timeview_data(run)
    names = d["nodes"]["name"]
    f = d["t_s"].index(332.0)

    def load_of(frame):
        return {(names[d["links"]["a"][i]], names[d["links"]["b"][i]]): v / 100
                for i, v in zip(d["up"][frame], d["load"][frame])}
    at = load_of(f)
    # its busier direction: 10 × 125 kB in the second from 332 s: 10 Mbit/s; every other link idle
    assert at[(a, b)] == pytest.approx(10.0) and sum(at.values()) == pytest.approx(10.0)
    assert sum(load_of(f + 1).values()) == 0
    assert all(len(lo) == len(u) for lo, u in zip(d["load"], d["up"]))
    (run / "link_load.parquet").unlink()
    assert timeview_data(run)["load"] is None


def test_time_view_load_in_headless_chromium(synthetic_run, tmp_path):  # noqa: F811
    from test_timeview import _need_browser
    _need_browser()
    from browser import Page
    from netemu.timeview import write_timeview
    test_time_view_colours_links_by_their_load_at_each_step(synthetic_run, tmp_path)
    run = tmp_path / "run"
    t = pd.DataFrame([(332.5, 1, "X", "ab", 125_000)], columns=["t_s", "sample", "link", "direction", "tx_bytes"])
    for c in LINK_LOAD_COLUMNS:
        if c not in t:
            t[c] = 0
    t[LINK_LOAD_COLUMNS].to_parquet(run / "link_load.parquet", index=False)
    page_html = run / "view.html"
    page_html.write_text("<!doctype html><html><body>" + write_timeview(run) + "</body></html>")
    assert "<option value='load_t'>" in page_html.read_text()
    with Page(page_html.as_uri(), 1200, 1000) as page:
        page.wait_for("window.netemuView", 60)
        f = page.eval("netemuView.data.t_s.indexOf(332)")
        page.eval("(function(){var s=document.getElementById('nv-colour');s.value='load_t';"
                  "s.dispatchEvent(new Event('change'));})()")
        page.eval(f"netemuView.setFrame({f})")
        st = page.eval("netemuView.state()")
        errors = list(page.errors)
    assert not errors, errors
    # the one loaded link in the top colour bin, the rest in the lowest
    kind = next(k for k, v in st["bins"].items() if k.endswith(":4"))
    assert st["bins"][kind] == 1 and sum(st["bins"].values()) == sum(st["links"].values())
    assert all(k.endswith(":0") or k.endswith(":4") for k in st["bins"])


def test_a_sample_in_chunks_visits_every_busy_direction_once():
    import socket
    from netemu.emulate.engine import DelayProfile, Direction, Engine
    a, _b = socket.socketpair()
    e = Engine(a)
    ds = [Direction(f"l{i}", "ab", -1, -1, DelayProfile(), i) for i in range(10)]
    for i, d in enumerate(ds):
        d.configure({"rate_mbps": 8.0})          # 1 byte/µs
        d.admit(time.monotonic(), 1000 * (i + 1))
        e.touched.add(d)
    got, left, calls = [], None, 0
    while left != 0:
        _, _, rows, left = e.cmd_sample(4)
        got += rows
        calls += 1
    assert calls == 3 and sorted(r[0] for r in got) == sorted(d.link for d in ds)
    assert all(r[5] == 0 and r[3] == 1000 * (int(r[0][1:]) + 1) for r in got)   # bytes in; none out yet
    assert all(0 < r[8] <= r[9] == r[3] for r in got)    # the backlog now ≤ its largest (the frame)
    # the next sample lists them again, counters unchanged: each had a queue at the last one
    _, _, rows, left = e.cmd_sample(0)
    assert left == 0 and sorted(r[0] for r in rows) == sorted(d.link for d in ds)
    assert all(r[2:8] == g[2:8] for r, g in zip(sorted(rows), sorted(got)))
    time.sleep(0.011)                               # every backlog drained (10 ms at most)
    e.cmd_sample(0)
    assert e.cmd_sample(0)[2] == [] and not e.touched


def test_link_load_series_cover_the_window():
    from netemu.report import link_load_series
    t = pd.DataFrame({"t_s": [10.3, 10.5], "sample": [3, 5], "link": "L", "direction": "ab", "tx_bytes": [100, 200]})
    for c in LINK_LOAD_COLUMNS:
        if c not in t:
            t[c] = 0.0
    s = link_load_series(t, window=(10.0, 11.0))
    assert list(s["t_s"].index) == list(range(1, 11))       # sample 0 is the base, never a row
    assert s["t_s"][10] == pytest.approx(11.0) and s["t_s"][1] == pytest.approx(10.1)
    assert s["rate_mbps"][("L", "ab")].sum() == 0.0 and list(s["queue_bytes"][("L", "ab")]) == [0.0] * 10
    assert link_load_series(t)["t_s"].index.tolist() == [3, 4, 5]
