"""The planner end to end: output contract, golden plan, CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import netemu
from conftest import DATA, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_golden import golden_tables  # noqa: E402

GOLDEN = DATA / "golden-small"


def test_golden_plan(small_plan):
    """Rebuild with scripts/make_golden.py after a deliberate change."""
    for name, df in golden_tables(small_plan).items():
        want = pd.read_csv(GOLDEN / name, keep_default_na=False)
        got = pd.read_csv(__import__("io").StringIO(df.to_csv(index=False, float_format="%.6f")), keep_default_na=False)
        assert list(got.columns) == list(want.columns), name
        assert len(got) == len(want), name
        for col in want.columns:
            if want[col].dtype.kind == "f":
                assert np.allclose(got[col], want[col], atol=2e-6, rtol=0), (name, col)
            else:
                assert (got[col].astype(str) == want[col].astype(str)).all(), (name, col)


def test_write_plan_contract(small_plan, tmp_path):
    summary = netemu.write_plan(small_plan, tmp_path)
    nodes = pd.read_csv(tmp_path / "nodes.csv")
    assert list(nodes.columns[:4]) == ["name", "kind", "group", "norad_id"]
    assert set(nodes["kind"]) == {"satellite", "compute", "ground"}
    assert nodes["name"].str.len().max() <= 10
    links = pd.read_parquet(tmp_path / "links.parquet")
    assert {"t_s", "a", "b", "kind", "distance_km", "delay_ms", "rate_mbps", "up"} <= set(links.columns)
    assert set(links["kind"].astype(str)) == {"isl", "gsl"} and links["up"].dtype == bool
    paths = pd.read_parquet(tmp_path / "paths.parquet")
    assert {"t_s", "src", "dst", "delay_ms", "hops"} <= set(paths.columns)
    routes = pd.read_parquet(tmp_path / "routes.parquet")
    assert {"t_s", "src", "dst", "path"} <= set(routes.columns)
    E = len(small_plan.scenario.endpoints)
    assert len(routes[routes["t_s"] == 0]) == E * (E - 1) // 2   # every pair at t = 0
    events = pd.read_csv(tmp_path / "events.csv")
    assert list(events.columns) == ["t_s", "event", "a", "b", "detail"]
    assert set(events["event"]) == {"link_up", "link_down", "handover", "path_change"}
    assert (events["t_s"] > 0).all() and events["t_s"].is_monotonic_increasing
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["events"]["path_change"] == (events["event"] == "path_change").sum()
    assert on_disk["endpoint_pairs"] == E * (E - 1) // 2
    read = netemu.read_plan(tmp_path)
    assert len(read["links"]) == len(small_plan.schedule.links)


def test_handover_events_pair_old_and_new(small_plan):
    ev = small_plan.events
    ho = ev[ev["event"] == "handover"]
    L = small_plan.schedule.links
    g = L[L["kind"] == "gsl"]
    present = set(zip(g["step"], g["a"].astype(str), g["b"].astype(str)))
    for r in ho.itertuples(index=False):
        k = int(round(r.t_s / small_plan.scenario.step_s))
        old = r.detail.removeprefix("from ")
        assert (k, r.b, r.a) in present and (k - 1, r.b, r.a) not in present
        assert (k - 1, old, r.a) in present and (k, old, r.a) not in present


def test_read_plan_rejects_other_directories(tmp_path):
    with pytest.raises(netemu.PlanError, match="not a plan directory"):
        netemu.read_plan(tmp_path)


def test_cli_plan_writes_files_and_summary(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(DATA / "small.toml"), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for f in netemu.plan.planner.PLAN_FILES + ("scenario.toml",):
        assert (out / f).exists(), f
    assert "Scenario small: 144 satellites, 4 compute satellites, 4 ground stations" in r.stdout
    assert "routing:" in r.stderr and "orbits:" in r.stderr  # progress, one line per stage
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(DATA / "small.toml"), "-o", str(out), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert json.loads(r.stdout)["scenario"] == "small"


def test_default_scenario_plan(tmp_path):
    """`netemu plan` with no scenario plans the orbital data centre (shortened window)."""
    sc = netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc.toml")
    import dataclasses
    plan = netemu.make_plan(dataclasses.replace(sc, duration_s=120.0), workers=2)
    s = netemu.write_plan(plan, tmp_path)
    assert s["nodes"] == {"satellite": 192, "compute": 16, "ground": 6}
    assert s["links"]["isl"]["links_per_step_min"] > 400
    assert s["links"]["gsl"]["links_per_step_min"] >= 6
    assert s["reachable_pair_fraction_mean"] > 0.9
    # compute-compute paths stay inside the cluster: kilometres, microseconds
    assert s["path_delay_ms_by_pair_kind"]["compute-compute"]["max"] < 0.05
    assert 2.0 < s["path_delay_ms_by_pair_kind"]["compute-ground"]["min"]


@pytest.mark.parametrize("name", ["starlink-s1", "kuiper-k1", "telesat-t1", "starlink-tle"])
def test_shipped_scenarios_plan(name):
    """Each shipped scenario plans (three steps): full +Grid/nearest-k meshes, most pairs reachable."""
    import dataclasses
    sc = netemu.load_scenario(ROOT / "topologies" / f"{name}.toml")
    plan = netemu.make_plan(dataclasses.replace(sc, duration_s=2 * sc.step_s), workers=1)
    s = plan.summary()
    n_sat = s["nodes"]["satellite"]
    assert s["links"]["isl"]["links_per_step_min"] >= 1.9 * n_sat
    assert s["links"]["gsl"]["links_per_step_min"] >= 95
    assert s["reachable_pair_fraction_min"] > 0.9
    assert 20 < s["path_delay_ms"]["median"] < 120


def test_plan_memory_is_checked_before_allocating(small_scenario):
    from netemu.errors import PlanError
    from netemu.plan.planner import check_plan_memory, plan_memory_bytes
    need = plan_memory_bytes(small_scenario)
    assert need["total"] == sum(v for k, v in need.items() if k != "total") + 300 * 2**20
    assert check_plan_memory(small_scenario, available_bytes=need["total"] + 1) == need["total"]
    with pytest.raises(PlanError, match=r"small.toml: planning needs about 0\.\d GiB of memory .*more than the "
                                        r"0\.1 GiB available; shorten duration_s, raise step_s"):
        check_plan_memory(small_scenario, available_bytes=2**27)


def test_plan_memory_estimate_is_within_a_factor_of_the_measured_peak():
    # Peak RSS of the planner and of its largest routing process, in a fresh interpreter. The
    # planner's own peak is VmHWM: ru_maxrss would keep the high-water mark of the pytest process
    # it was forked from (Linux carries it across exec).
    code = ("import re, resource, netemu\n"
            "from netemu.plan.planner import plan_memory_bytes\n"
            f"sc = netemu.load_scenario({str(DATA / 'small.toml')!r})\n"
            "netemu.make_plan(sc, workers=2)\n"
            "hwm_kb = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "print(plan_memory_bytes(sc, workers=2)['total'], "
            "(hwm_kb + 2 * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    est, measured = map(int, out.stdout.split())
    assert measured / 1.5 <= est <= 4 * measured, (est, measured)


def test_broken_routing_pool_is_a_plan_error(small_scenario, monkeypatch):
    from netemu.plan import routing
    from netemu.errors import PlanError
    monkeypatch.setattr(routing, "ProcessPoolExecutor", _PoolThatDies)
    with pytest.raises(PlanError, match="a routing process died .*out of memory"):
        netemu.make_plan(small_scenario, workers=2)


class _PoolThatDies:
    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future
        f = Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, wait=True):
        pass

    def map(self, fn, jobs):
        from concurrent.futures.process import BrokenProcessPool
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")


_UNWORKABLE = """
[scenario]
epoch = 2026-03-20T00:00:00Z
duration_s = 600
step_s = 10

[[satellites]]
name = "shell"
source = "walker"
prefix = "w"
altitude_km = 600
inclination_deg = 53
planes = 4
sats_per_plane = 8
phasing = 1
compute = true

[[ground_stations]]
name = "g-beijing"
lat_deg = 40.45
lon_deg = 116.85

[[ground_stations]]
name = "g-paris"
lat_deg = 48.86
lon_deg = 2.35

[[isl]]
groups = ["shell"]
pattern = "plus-grid"
rate_mbps = 10000

[gsl]
min_elevation_deg = 25
rate_mbps = 1000

[endpoints]
nodes = ["g-beijing", "g-paris", "w00-00"]

[[workloads]]
kind = "inference"
server = "w00-00"
"""


def test_a_constellation_that_cannot_work_plans_with_warnings(tmp_path):
    # 8 satellites per plane at 600 km are 45° apart: their lasers would graze below 80 km.
    p = tmp_path / "s.toml"
    p.write_text(_UNWORKABLE)
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(p), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    warnings = json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"]
    assert any(w.startswith("isl[0] plus-grid shell: 0.0 of 32 intra-plane lasers per step") for w in warnings), warnings
    assert any(w.startswith("group shell: its lasers leave it in up to ") for w in warnings), warnings
    for st in ("g-beijing", "g-paris"):
        assert any(w.startswith(f"workload inference-0: {st} and w00-00 are ") and "reachable" in w
                   for w in warnings), warnings
    for w in warnings:
        assert f"warning: {w}" in r.stderr


def test_shipped_small_scenarios_plan_without_warnings(small_plan):
    assert small_plan.warnings == () and small_plan.summary()["warnings"] == []
