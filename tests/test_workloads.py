"""AI workloads: scenario validation, arrivals and job tables (pure), and real runs through the
emulated constellation (root; CI): bytes delivered against bytes sent, the stall of inference
requests across a GSL handover, TTFB against the light-time of the path, and a ring all-reduce
against its ideal step time."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.emulate.playback import oracle_rtt_ms
from netemu.plan.scenario import WORKLOAD_PARAMS
from netemu.emulate.clock import Clock
from netemu.traffic.workloads import allreduce_ideal_ms, inference_jobs, jobs_table, summarise, throughput_table

from conftest import write_scenario

DATA = Path(__file__).resolve().parent / "data"
GAP_START_S, GAP_END_S = 338.0, 340.0   # g-beijing's GSL handover gap in workloads.toml

BASE = """
[scenario]
name = "wl"
epoch = 2026-03-20T00:00:00Z
duration_s = 100
step_s = 1
[[satellites]]
name = "shell"
source = "walker"
prefix = "w"
altitude_km = 1500
inclination_deg = 60
planes = 2
sats_per_plane = 4
phasing = 1
compute = true
[[ground_stations]]
name = "g-a"
lat_deg = 40
lon_deg = 116
[[ground_stations]]
name = "g-b"
lat_deg = 18
lon_deg = 109
"""


def _load(tmp_path, text):
    return netemu.load_scenario(write_scenario(tmp_path, BASE + text))


# --------------------------------------------------------------------------- scenario


def test_workload_defaults_come_from_domain_facts(tmp_path):
    s = _load(tmp_path, '[[workloads]]\nkind = "inference"\n[[workloads]]\nkind = "allreduce"\n'
                        '[[workloads]]\nkind = "checkpoint"\ndirection = "down"\n')
    inf, ar, ck = s.workloads
    assert (inf.name, inf.clients, inf.server) == ("inference-0", ("g-a", "g-b"), "w00-00")
    assert inf.p("prompt_tokens") == 1020 and inf.p("output_tokens") == 129 and inf.p("rate_per_s") == 5.5
    assert ar.clients == tuple(f"w0{p}-0{i}" for p in range(2) for i in range(4)) and ar.server is None
    assert ar.p("gradient_mb") == 16000 and ck.p("size_gb") == 16 and ck.p("direction") == "down"
    assert inf.transport == "tcp" and inf.seed == 1 and ar.seed == 2
    assert set(dict(inf.params)) == set(WORKLOAD_PARAMS["inference"])


@pytest.mark.parametrize("text, key, match", [
    ('kind = "inference"\nserver = "w09-09"', "workloads[0].server", "node or group names.*'w09-09'"),
    ('kind = "upload"\nclients = ["g-nowhere"]', "workloads[0].clients", "'g-nowhere'"),
    ('kind = "training"', "workloads[0].kind", "one of inference, upload, checkpoint, allreduce"),
    ('kind = "upload"\nfile_mb = -1', "workloads[0].file_mb", "positive"),
    ('kind = "upload"\nfile_size = 3', "workloads[0].file_size", "unknown key"),
    ('kind = "inference"\nclients = ["w00-00"]', "workloads[0].server", "not also a client"),
    ('kind = "allreduce"\nranks = ["w00-00"]', "workloads[0].ranks", "at least two distinct"),
    ('kind = "checkpoint"\ndirection = "sideways"', "workloads[0].direction", "'up'"),
    ('kind = "upload"\nstart_s = 50\nstop_s = 40', "workloads[0].stop_s", "after start_s"),
    ('kind = "inference"\ntransport = "udp"', "workloads[0].transport", "UDP is implemented for upload and checkpoint"),
    ('kind = "upload"\ntransport = "udp"', "workloads[0].rate_mbps", "a sending rate > 0"),
    ('kind = "upload"\nrate_mbps = 10', "workloads[0].rate_mbps", "no sending rate for transport = 'tcp'"),
])
def test_bad_workloads_name_file_and_key(tmp_path, text, key, match):
    with pytest.raises(netemu.ScenarioError, match=match) as e:
        _load(tmp_path, "[[workloads]]\n" + text + "\n")
    assert e.value.key == key and str(tmp_path / "s.toml") in str(e.value)


def test_workload_nodes_must_be_endpoints(tmp_path):
    text = '[endpoints]\nnodes = ["g-a", "w00-00"]\n[[workloads]]\nkind = "upload"\nclients = ["g-b"]\nserver = "w00-00"\n'
    with pytest.raises(netemu.ScenarioError, match="'g-b' is not one; add it to \\[endpoints\\].nodes"):
        _load(tmp_path, text)


# --------------------------------------------------------------------------- arrivals


def test_inference_arrivals_are_poisson_seeded_and_lognormal(tmp_path):
    w = _load(tmp_path, '[[workloads]]\nkind = "inference"\nrate_per_s = 50\nseed = 3\n').workloads[0]
    a = inference_jobs(w, 0, 0.0, 100.0)
    assert a.equals(inference_jobs(w, 0, 0.0, 100.0))        # seeded
    assert not a["t_s"].equals(inference_jobs(w, 1, 0.0, 100.0)["t_s"])   # per client
    n = len(a)
    assert abs(n - 5000) < 3.5 * np.sqrt(5000)                             # Poisson count, 3.5 sigma
    gaps = np.diff(a["t_s"])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.06)         # exponential gaps: CV 1
    assert (a["t_s"] >= 0).all() and (a["t_s"] < 100).all()
    assert np.median(a["prompt_tokens"]) == pytest.approx(1020, rel=0.05)
    assert np.median(a["output_tokens"]) == pytest.approx(129, rel=0.06)
    p90 = np.percentile(a["prompt_tokens"], 90)
    assert p90 == pytest.approx(2734, rel=0.1)                            # the Azure trace's p90
    assert (a["request_bytes"] == np.round(a["prompt_tokens"] * 4) + 1000).all()
    assert (a["response_bytes_per_token"] == 250).all()


# --------------------------------------------------------------------------- job tables


def _events(rows):
    return pd.DataFrame(rows)


def test_jobs_table_converts_to_emulated_units(tmp_path):
    s = _load(tmp_path, '[[workloads]]\nname = "chat"\nkind = "inference"\nclients = ["g-a"]\n'
                        '[[workloads]]\nname = "eo"\nkind = "upload"\nclients = ["g-b"]\nfile_mb = 1\n')
    clock = Clock(t0_s=10.0, t_end_s=40.0, origin_mono=1000.0, speed=1.0, dilation=4.0)
    ev = _events([
        {"t": 1004.0, "ev": "start", "wl": "chat", "node": "g-a", "job": 0, "request_bytes": 5000, "expected": 1000},
        {"t": 1004.4, "ev": "first_byte", "wl": "chat", "node": "g-a", "job": 0},
        {"t": 1008.0, "ev": "done", "wl": "chat", "node": "g-a", "job": 0, "bytes": 1000},
        {"t": 1010.0, "ev": "start", "wl": "chat", "node": "g-a", "job": 1, "request_bytes": 5000, "expected": 2000},
        {"t": 1010.1, "ev": "error", "wl": "chat", "node": "g-a", "job": 1, "what": "OSError: unreachable"},
        {"t": 1012.0, "ev": "start", "wl": "chat", "node": "g-a", "job": 2, "request_bytes": 5000, "expected": 2000},
        {"t": 1020.0, "ev": "start", "wl": "eo", "node": "g-b", "job": 0, "bytes": 1_000_000},
        {"t": 1024.0, "ev": "progress", "wl": "eo", "node": "w00-00", "job": 0, "bytes": 500_000, "peer": "x"},
        {"t": 1028.0, "ev": "received", "wl": "eo", "node": "w00-00", "job": 0, "bytes": 1_000_000, "peer": "x"},
        {"t": 1028.1, "ev": "done", "wl": "eo", "node": "g-b", "job": 0, "bytes": 1_000_000, "t_received": 1028.0},
    ])
    j = jobs_table(ev, s.workloads, clock).set_index("job")
    r = j.loc["g-a#0"]
    assert r["t_start_s"] == pytest.approx(11.0) and r["t_end_s"] == pytest.approx(12.0)
    assert r["ttfb_ms"] == pytest.approx(100.0) and r["completion_ms"] == pytest.approx(1000.0)
    assert r["status"] == "done" and r["bytes_delivered"] == r["bytes_expected"] == 1000
    assert j.loc["g-a#1", "status"] == "error" and j.loc["g-a#2", "status"] == "incomplete"
    up = j.loc["g-b#0"]
    assert up["completion_ms"] == pytest.approx(2000.0)                  # receiver's last byte, ÷ dilation
    assert up["goodput_mbps"] == pytest.approx(4.0)                      # 8 Mbit in 2 emulated s
    th = throughput_table(ev, s.workloads, clock, bin_s=1.0)
    assert th["mbps"].sum() * 1.0 == pytest.approx(8.0)                  # 8 Mbit over 1-s bins
    summ = summarise(jobs_table(ev, s.workloads, clock), s.workloads, clock)
    assert summ["chat"]["done"] == 1 and summ["chat"]["error"] == 1 and summ["chat"]["incomplete"] == 1
    assert summ["chat"]["completion_ms_p50"] == pytest.approx(1000.0)
    assert summ["eo"]["goodput_mbps_mean"] == pytest.approx(4.0)


def test_allreduce_ideal_formula():
    # 2(K−1)/K · G / rate + 2(K−1) α: 4 ranks, 100 MB at 1 Gbit/s, 5 ms hops
    assert allreduce_ideal_ms(100e6, 4, 1000, 5.0) == pytest.approx(1.5 * 800 + 30)


# --------------------------------------------------------------------------- live runs (root)


@pytest.fixture(scope="module")
def wl_run(root_env, tmp_path_factory):
    plan = netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)
    out = tmp_path_factory.mktemp("wl")
    info = netemu.run(plan, out, start_s=330, duration_s=16)
    return plan, out, info


@pytest.mark.root
@pytest.mark.timing
def test_transfers_deliver_every_byte(wl_run):
    plan, out, info = wl_run
    jobs = pd.read_csv(out / "jobs.csv")
    tr = jobs[jobs["kind"].isin(["upload", "checkpoint"])]
    assert len(tr[tr["workload"] == "eo"]) == 3 and len(tr[tr["workload"] == "ckpt"]) == 1
    assert (tr["status"] == "done").all(), tr
    assert (tr["bytes_delivered"] == tr["bytes_expected"]).all()
    assert (tr[tr["workload"] == "eo"]["bytes_expected"] == 2_000_000).all()
    assert tr[tr["workload"] == "ckpt"]["bytes_expected"].iloc[0] == 20_000_000
    # goodput never above the 100 Mbit/s ground link
    assert (tr["goodput_mbps"] <= 100).all()
    done = jobs[jobs["status"] == "done"]
    assert (done["bytes_delivered"] == done["bytes_expected"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workloads"]["eo"]["done"] == 3 and not summary["agent_failures"]
    assert "routes" in summary or "nodes" in summary                       # the plan's summary kept
    th = pd.read_csv(out / "throughput.csv")
    moved = th.groupby("workload")["mbps"].sum()                           # 1-s bins: Mbit
    assert moved["eo"] == pytest.approx(3 * 16, rel=0.01) and moved["ckpt"] == pytest.approx(160, rel=0.01)
    for f in ("jobs.csv", "throughput.csv", "summary.json"):
        assert (out / f).exists()
    assert sorted(p.name for p in (out / "workloads").glob("*.jsonl")) == [
        "g-beijing.jsonl", "g-sanya.jsonl", "w02-01.jsonl", "w03-00.jsonl"]


@pytest.mark.root
@pytest.mark.timing
def test_udp_upload_is_paced_at_its_rate(wl_run):
    """Over UDP nothing is lost on an idle path, and a file arrives when its last datagram,
    sent at the pacing rate, has crossed the path: (n − 1) gaps + the one-way light-time."""
    from netemu.traffic.agent import _UDP_IP_BYTES, _UDP_PAYLOAD
    plan, out, info = wl_run
    jobs = pd.read_csv(out / "jobs.csv")
    udp = jobs[jobs["workload"] == "eo-udp"]
    assert len(udp) == 2 and (udp["status"] == "done").all()
    assert (udp["bytes_delivered"] == udp["bytes_expected"]).all()
    n = -(-2_000_000 // _UDP_PAYLOAD)
    owd = oracle_rtt_ms(plan.schedule, plan.routes.routes, "g-sanya", "w02-01", udp["t_start_s"].to_numpy()) / 2
    expected_ms = (n - 1) * _UDP_IP_BYTES * 8 / 50e6 * 1e3 + owd
    excess = udp["completion_ms"].to_numpy() - expected_ms
    assert (excess > -0.5).all() and (excess < 5).all(), excess


@pytest.mark.root
@pytest.mark.timing
def test_inference_stalls_across_the_handover_and_ttfb_follows_light_time(wl_run):
    plan, out, info = wl_run
    jobs = pd.read_csv(out / "jobs.csv")
    inf = jobs[jobs["workload"] == "chat"]
    assert len(inf) > 40
    done = inf[inf["status"] == "done"]
    assert (done["bytes_delivered"] == done["bytes_expected"]).all()
    # requests streaming when the gap begins finish only after it ends: their completion
    # stretches by at least the part of the gap they overlapped
    in_flight = done[(done["t_start_s"] < GAP_START_S - 0.5) & (done["t_end_s"] > GAP_START_S)]
    assert len(in_flight) >= 3
    assert (in_flight["t_end_s"] >= GAP_END_S).all(), in_flight
    quiet = done[(done["t_end_s"] < GAP_START_S - 0.5)]
    assert in_flight["completion_ms"].median() > quiet["completion_ms"].median() + 1000
    # nothing started in the gap completes inside it (Beijing has no ground link then)
    assert not ((done["t_start_s"] >= GAP_START_S) & (done["t_end_s"] < GAP_END_S)).any()
    # away from the gap, time to first byte = service time + 2 RTTs (connect, request→first
    # token) of the path's light-time + the request's serialisation on the 100 Mbit/s ground
    # link; what is left is the programs' own (event-loop timers have 1-ms resolution)
    service_ms = plan.scenario.workloads[0].p("service_s") * 1e3
    q = done[(done["t_start_s"] < GAP_START_S - 1)]
    rtt = oracle_rtt_ms(plan.schedule, plan.routes.routes, "g-beijing", "w03-00", q["t_start_s"].to_numpy())
    events = pd.read_json(out / "workloads" / "g-beijing.jsonl", lines=True)
    req_bytes = events[events["ev"] == "start"].set_index("job")["request_bytes"]
    ser_ms = req_bytes.reindex(q["job"].str.split("#").str[1].astype(int)).to_numpy() * 8 / 100e6 * 1e3
    excess = q["ttfb_ms"].to_numpy() - service_ms - 2 * rtt - ser_ms
    assert np.median(excess) == pytest.approx(0.0, abs=3.0), excess
    assert (excess > -0.5).all()                                     # never faster than light
    summary = json.loads((out / "summary.json").read_text())["workloads"]["chat"]
    assert summary["jobs"] == len(inf) and summary["done"] == len(done)
    assert summary["completion_ms_p50"] == pytest.approx(np.percentile(done["completion_ms"], 50), abs=1e-3)
    assert len(summary["windows"]) == 2


@pytest.fixture(scope="module")
def ar_plan(root_env):
    return netemu.make_plan(netemu.load_scenario(DATA / "allreduce.toml"), workers=2)


@pytest.mark.root
@pytest.mark.timing
def test_ring_allreduce_step_time_near_ideal(ar_plan, tmp_path):
    netemu.run(ar_plan, tmp_path, duration_s=8, dilation=2)
    jobs = pd.read_csv(tmp_path / "jobs.csv")
    assert len(jobs) == 4 and (jobs["status"] == "done").all(), jobs
    # every rank sent and received 2(K−1) chunks of G/K per step
    assert (jobs["bytes_delivered"] == 2 * 3 * 2_500_000 * 4).all()
    # 2(K−1)/K · 10 MB at 100 Mbit/s = 1.2 s; the formation's hops are microseconds long
    assert jobs["ideal_ms"].iloc[0] == pytest.approx(1200, abs=0.5)
    assert (jobs["ratio_to_ideal"] >= 1.0).all()                          # nothing beats the link rate
    assert (jobs["ratio_to_ideal"] <= 1.2).all(), jobs[["job", "completion_ms", "ratio_to_ideal"]]
    s = json.loads((tmp_path / "summary.json").read_text())["workloads"]["ring"]
    assert s["done"] == 4 and s["ratio_to_ideal_median"] == pytest.approx(jobs["ratio_to_ideal"].median(), abs=1e-3)


@pytest.mark.root
def test_the_run_writes_its_report(wl_run):
    """The report `netemu.run` writes at the end, on this real run (see tests/test_report.py)."""
    from test_report import check_headline_numbers, check_report
    from netemu.report import _fmt, workload_rows
    plan, out, info = wl_run
    c = check_report(out / "report.html")
    assert {"map.png", "rtt.png", "completion_cdf.png", "jobs_over_time.png", "throughput.png", "topology.png",
            "links.png"} <= {Path(s).name for s in c.imgs}
    summary = json.loads((out / "summary.json").read_text())
    for row in workload_rows(summary):
        i = c.cells.index(row[0])
        assert c.cells[i:i + len(row)] == [_fmt(v) for v in row]
    assert "handover at t = 338 s" in (out / "report.html").read_text()
    check_headline_numbers(out)          # every number of the headline sentences is the run's own


@pytest.mark.parametrize("text, key, match", [
    ('kind = "inference"\nrate_per_s = 1e12', "workloads[0].rate_per_s", r"expected at most 100,000, found float 1000000000000\.0"),
    ('kind = "checkpoint"\nsize_gb = 1e300', "workloads[0].size_gb", r"expected at most 100,000, found float 1e\+300"),
    ('kind = "upload"\nfile_mb = 1e20', "workloads[0].file_mb", "at most 100,000,000, found float 1e\\+20"),
    ('kind = "allreduce"\ngradient_mb = 1e20', "workloads[0].gradient_mb", "at most 100,000,000"),
])
def test_workload_sizes_and_rates_are_bounded_at_load(tmp_path, text, key, match):
    with pytest.raises(netemu.ScenarioError, match=match) as e:
        _load(tmp_path, "[[workloads]]\n" + text + "\n")
    assert e.value.key == key


def test_inference_requests_per_client_are_bounded_at_load(tmp_path):
    text = "[[workloads]]\nkind = \"inference\"\nrate_per_s = 50000\n"
    with pytest.raises(netemu.ScenarioError, match=r"at most 10,000,000 requests per client over the workload's "
                                                   r"86400 s, found rate_per_s = 50000") as e:
        netemu.load_scenario(write_scenario(tmp_path, BASE.replace("duration_s = 100", "duration_s = 86400") + text))
    assert e.value.key == "workloads[0].rate_per_s"


def test_cluster_event_logs_move_onto_one_clock():
    """A cluster run's agent logs come back on their own host's clock: every instant moves by the
    host's shift, except an upload's end, which the server stamped on its host's clock."""
    from netemu.traffic.launcher import _moved_events
    text = "\n".join([
        '{"t":10.0,"ev":"start","wl":"eo","node":"g-a","job":0,"bytes":5}',
        '{"t":11.0,"ev":"done","wl":"eo","node":"g-a","job":0,"bytes":5,"t_received":20.5}',
        '{"t":12.0,"ev":"done","wl":"ckpt","node":"g-a","job":0,"bytes":5,"t_received":12.0}',
        '{"t":13.0,"ev":"served","wl":"chat","node":"g-a","job":1,"t_arrival":12.5}',
        '{"t":14.0,"ev":"flow_start","wl":"r","node":"g-a","job":2,"due":13.5}',
        '{"t":15.0,"ev":"sta',                 # an agent killed mid-write
    ])
    rows = [json.loads(line) for line in _moved_events(text, 100.0, {"eo": -7.0}).splitlines()]
    assert [r["t"] for r in rows] == [110.0, 111.0, 112.0, 113.0, 114.0]
    assert rows[1]["t_received"] == 13.5         # the upload's server shift
    assert rows[2]["t_received"] == 112.0        # a download's end: the client's own clock
    assert rows[3]["t_arrival"] == 112.5 and rows[4]["due"] == 113.5
    assert rows[0]["bytes"] == 5 and rows[1]["wl"] == "eo"
