"""Dispatch and queueing servers in a real emulation (root; CI): a 4-satellite cluster with a
ground station under it, one inference workload per dispatch policy (tests/data/dispatch.toml).
The plan's power table is edited before the run so the policies must differ: the entry node in
Earth's shadow at 40 % charge, one other satellite at 90 %, the rest at 70 %."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.emulate.playback import oracle_rtt_ms
from netemu.traffic.batching import BatchServer
from netemu.traffic.workloads import dispatch_setup

DATA = Path(__file__).resolve().parent / "data"
START_S, DURATION_S = 24.0, 6.0


@pytest.fixture(scope="module")
def dispatch_run(root_env, tmp_path_factory):
    sc = netemu.load_scenario(DATA / "dispatch.toml")
    plan = netemu.make_plan(sc, workers=1)
    entry, cands, hops = dispatch_setup(plan, sc.workloads[0], 25.0)
    best = sorted(c for c in cands if c != entry)[1]
    p = plan.power.copy()
    node = p["node"].astype(str)
    p.loc[node == entry, ["sunlit", "soc_pct"]] = [0.0, 40.0]
    p.loc[node == best, "soc_pct"] = 90.0
    p.loc[~node.isin([entry, best]), "soc_pct"] = 70.0
    plan = dataclasses.replace(plan, power=p)
    out = tmp_path_factory.mktemp("dispatch")
    netemu.run(plan, out, start_s=START_S, duration_s=DURATION_S)
    jobs = pd.read_csv(out / "jobs.csv")
    events = pd.concat([pd.read_json(f, lines=True) for f in sorted((out / "workloads").glob("*.jsonl"))])
    return plan, out, entry, best, cands, hops, jobs, events


def _served(jobs, wl):
    j = jobs[(jobs["workload"] == wl) & (jobs["status"] == "done")]
    assert len(j) >= 5, jobs[jobs["workload"] == wl]
    return j


@pytest.mark.root
def test_each_policy_sends_requests_where_specified(dispatch_run):
    plan, out, entry, best, cands, hops, jobs, events = dispatch_run
    assert hops[cands.index(entry)] == 0 and entry == "c-03"        # the GSL's satellite
    assert set(_served(jobs, "near")["server"]) == {entry}              # fewest hops: the entry itself
    assert set(_served(jobs, "soc")["server"]) == {best}                # highest state of charge
    lit = set(_served(jobs, "lit")["server"])
    assert entry not in lit and len(lit) >= 2                          # the entry is in shadow
    least = _served(jobs, "least")
    assert len(set(least["server"])) >= 3
    d = events[(events["ev"] == "dispatch") & (events["wl"] == "least")]
    assert len(d) >= len(least)
    for server, loads, slots in zip(d["server"], d["loads"], d["slots"]):
        share = np.array(loads) / np.array(slots)
        assert share[cands.index(server)] == share.min()
    s = json.loads((out / "summary.json").read_text())["workloads"]
    assert s["soc"]["dispatch"] == "power-aware" and s["soc"]["served_by"] == {best: int((jobs["workload"] == "soc").sum())}


@pytest.mark.root
def test_requests_reach_other_satellites_through_the_entry(dispatch_run):
    """A request served by another satellite arrived there from the entry's address, over the
    cluster's lasers; its time in the network is at least the light-time of client → entry →
    server both ways, twice (connect, then request and first byte)."""
    plan, out, entry, best, cands, hops, jobs, events = dispatch_run
    entry_addr = json.loads((out / "workloads" / f"{entry}.spec.json").read_text())["address"]
    req = events[(events["ev"] == "request") & (events["node"] != entry)]
    assert len(req) >= 10 and (req["peer"] == entry_addr).all()
    done = jobs[jobs["status"] == "done"]
    rtt = np.array([oracle_rtt_ms(plan.schedule, plan.routes.routes, "g-under", s, np.array([t]))[0]
                    for s, t in zip(done["server"], done["t_start_s"])])
    far = (done["server"] != entry).to_numpy()
    via = np.array([oracle_rtt_ms(plan.schedule, plan.routes.routes, "g-under", entry, np.array([t]))[0]
                    for t in done["t_start_s"]])
    assert far.sum() >= 10 and (rtt[far] > via[far]).all() and np.allclose(rtt[~far], via[~far])
    for s, t in zip(done["server"][far], done["t_start_s"][far]):
        assert plan.routes.path_at("g-under", s, t)[1] == entry       # the hop from the entry is in the path
    excess = done["network_ms"].to_numpy() - 2 * rtt
    assert (excess > -0.5).all(), excess                          # never faster than light
    assert np.median(excess) < 4.0, excess                           # the programs' own time (ms)


@pytest.mark.root
def test_server_times_follow_the_compute_model(dispatch_run):
    """Prefill 1,000 tokens at 10,000 tokens/s, 20 tokens after the first at 100 tokens/s; the
    entry (2 slots, 4 requests/s of the `near` workload plus the others' share) queues some, and
    its waits are what the pure model gives for the arrivals the server logged."""
    plan, out, entry, best, cands, hops, jobs, events = dispatch_run
    done = jobs[jobs["status"] == "done"]
    assert np.allclose(done["prefill_ms"], 100.0) and np.allclose(done["decode_ms"], 200.0)
    assert (done[done["workload"] == "near"]["eclipse"] == True).all()          # noqa: E712
    assert (done[done["workload"] == "soc"]["eclipse"] == False).all()          # noqa: E712
    s = events[(events["ev"] == "served") & (events["wl"] == "near")].sort_values("t_arrival")
    assert (s["queue_s"] > 0).any()
    model = BatchServer(10_000, 100, queue_limit=2, slots=2, t0=float(s["t_arrival"].min()) - 1)
    reqs = [model.arrive(t, j, 1000, 21) for t, j in zip(s["t_arrival"], s["job"])]
    model.advance(float("inf"))
    assert np.allclose([r.queue_s for r in reqs], s["queue_s"], atol=1e-6)


def test_dispatch_needs_every_cluster_satellite_as_an_endpoint(tmp_path):
    text = (DATA / "dispatch.toml").read_text() + '\n[endpoints]\nnodes = ["g-under", "c-00"]\n'
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(netemu.ScenarioError) as e:
        netemu.load_scenario(p)
    assert e.value.key == "workloads[0].dispatch" and "'c-01' is not one (3 missing)" in str(e.value)


def test_dispatch_setup_picks_the_entry_on_the_ground_path():
    sc = netemu.load_scenario(DATA / "dispatch.toml")
    plan = netemu.make_plan(sc, workers=1)
    entry, cands, hops = dispatch_setup(plan, sc.workloads[0], 25.0)
    assert cands == ["c-00", "c-01", "c-02", "c-03"]
    assert plan.routes.path_at("g-under", "c-00", 25.0) == ["g-under", entry, "c-00"]
    assert hops == [0 if c == entry else 1 for c in cands]          # a laser mesh: one hop to each


@pytest.mark.root
def test_report_shows_power_capacity_and_policies(dispatch_run):
    """The run's report: the power figure under the latency plots, and per policy the
    requests per satellite and TTFB in and out of eclipse, as in summary.json."""
    from test_report import check_report
    from netemu.report import _fmt, compute_rows
    plan, out, entry, best, cands, hops, jobs, events = dispatch_run
    c = check_report(out / "report.html")
    names = [Path(s).name for s in c.imgs]
    assert "power.png" in names and names.index("power.png") > names.index("jobs_over_time.png")
    rows = compute_rows(json.loads((out / "summary.json").read_text()))
    assert {r[1] for r in rows} == {"nearest", "least-loaded", "sunlit-first", "power-aware"}
    for row in rows:
        i = c.cells.index(row[0], c.cells.index("requests per satellite"))
        assert c.cells[i:i + len(row)] == [_fmt(v) for v in row]
    near = next(r for r in rows if r[0] == "near")
    assert near[7] is not None and near[6] is None                      # every `near` request in eclipse


def test_compare_shows_policy_and_eclipse_figures(tmp_path):
    from netemu.report import build_compare
    runs = []
    for name, policy, ecl in (("a", "nearest", 180.0), ("b", "power-aware", 120.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"workloads": {"chat": {
            "kind": "inference", "jobs": 10, "done": 9, "refused": 1, "ttfb_ms_p50": 100.0, "ttfb_ms_p99": ecl,
            "completion_ms_p50": 300.0, "completion_ms_p99": 400.0, "dispatch": policy, "queue_ms_p50": 0.0,
            "queue_ms_p99": 50.0, "network_ms_p50": 13.0, "served_by": {"c-00": 9}, "ttfb_ms_sunlit_p99": 110.0,
            "ttfb_ms_eclipse_p99": ecl}}}))
        runs.append(d)
    for d, soc, lit in ((runs[0], [80.0, 60.0], [1.0, 0.0]), (runs[1], [100.0, 100.0], [1.0, 1.0])):
        pd.DataFrame({"t_s": [0.0, 0.0, 5.0, 5.0], "node": ["c-00", "c-01"] * 2, "sunlit": lit * 2,
                      "soc_pct": soc * 2, "power_w": 1.0, "active_accelerators": [8, 4, 8, 0]}
                     ).to_parquet(d / "power.parquet")
        (d / "run.json").write_text(json.dumps({"window": {"t0_s": 0.0, "t_end_s": 5.0}}))
    build_compare(runs, tmp_path / "cmp")
    t = pd.read_csv(tmp_path / "cmp" / "compare.csv").set_index("metric")
    assert list(t.loc["chat: dispatch"]) == ["nearest", "power-aware"]
    assert list(t.loc["chat: TTFB p99 in eclipse (ms)"].astype(float)) == [180.0, 120.0]
    assert list(t.loc["chat: TTFB p99 sunlit (ms)"].astype(float)) == [110.0, 110.0]
    assert list(t.loc["chat: refused"].astype(int)) == [1, 1]
    assert list(t.loc["compute: state of charge min (%)"].astype(float)) == [60.0, 100.0]
    assert list(t.loc["compute: share of satellite-steps in eclipse"].astype(float)) == [0.5, 0.0]
    assert list(t.loc["compute: active accelerators min / max (cluster)"]) == ["8 / 12", "8 / 12"]
