"""CZML export: the document a Cesium viewer opens, checked against the plan it comes from."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from netemu.cli import main
from netemu.errors import PlanError
from netemu.plan.czml import czml_from_dir, up_intervals_s
from netemu.plan.planner import make_plan, write_plan
from netemu.plan.scenario import load_scenario

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    plan = make_plan(load_scenario(DATA / "small.toml"), workers=1)
    out = tmp_path_factory.mktemp("plan")
    write_plan(plan, out)
    return plan, out


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_cli_writes_json_with_unique_ids(planned, tmp_path):
    plan, out = planned
    f = tmp_path / "small.czml"
    assert main(["export", "czml", str(out), "-o", str(f)]) == 0
    doc = json.loads(f.read_text())
    assert doc[0]["id"] == "document" and doc[0]["version"] == "1.0"
    ids = [p["id"] for p in doc]
    assert len(ids) == len(set(ids))
    n_sat, n_st = len(plan.track.names), len(plan.scenario.ground_stations)
    assert sum(1 for p in doc if "cartesian" in p.get("position", {})) == n_sat + n_st
    # the clock spans the scenario's window from its epoch
    start, stop = doc[0]["clock"]["interval"].split("/")
    assert _t(start) == datetime(2026, 3, 20, tzinfo=timezone.utc)
    assert _t(stop) - _t(start) == timedelta(seconds=1200)


def test_positions_are_the_plans(planned):
    plan, out = planned
    doc = {p["id"]: p for p in czml_from_dir(out, sample_s=10.0)}       # every step (10 s)
    sparse = {p["id"]: p for p in czml_from_dir(out, sample_s=25.0)}    # every 3rd step and the last
    for j in (0, 77, len(plan.track.names) - 1):
        name = plan.track.names[j]
        pos = doc[name]["position"]
        assert pos["referenceFrame"] == "FIXED" and _t(pos["epoch"]) == plan.scenario.epoch
        s = np.asarray(pos["cartesian"]).reshape(-1, 4)
        assert np.array_equal(s[:, 0], plan.track.t_s)
        assert np.allclose(s[:, 1:], plan.track.xyz_km[:, j, :] * 1e3, rtol=0, atol=0.051)
        s = np.asarray(sparse[name]["position"]["cartesian"]).reshape(-1, 4)
        k = np.arange(0, 121, 3)                  # 0, 30, ..., 1200 s: the last step is one of them
        assert np.array_equal(s[:, 0], plan.track.t_s[k])
        assert np.allclose(s[:, 1:], plan.track.xyz_km[k, j, :] * 1e3, rtol=0, atol=0.051)
        # Cesium's Lagrange interpolation (degree 5) between the sparse samples meets the plan's
        # positions in between to well under a metre
        mid = 61                                  # t = 610 s, between samples at 600 and 630 s
        near = np.argsort(np.abs(s[:, 0] - plan.track.t_s[mid]))[:6]
        x, y = s[near, 0], s[near, 1:]
        w = np.array([np.prod([(plan.track.t_s[mid] - x[m]) / (x[i] - x[m]) for m in range(6) if m != i])
                      for i in range(6)])
        assert np.linalg.norm(w @ y - plan.track.xyz_km[mid, j, :] * 1e3) < 1.0
        # an independent check of scale: a 550 or 600 km orbit, metres from the Earth's centre
        assert np.all(np.abs(np.linalg.norm(s[:, 1:], axis=1) - (6378.137e3 + 575e3)) < 40e3)
    # a station: Quito (lat -0.18, lon -78.47, 2,850 m) by hand on the WGS84 ellipsoid
    q = np.asarray(doc["g-quito"]["position"]["cartesian"])
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    lat, lon = np.radians(-0.18), np.radians(-78.47)
    n = a / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    hand = [(n + 2850) * np.cos(lat) * np.cos(lon), (n + 2850) * np.cos(lat) * np.sin(lon),
            (n * (1 - e2) + 2850) * np.sin(lat)]
    assert np.allclose(q, hand, atol=0.01)


def test_link_availability_is_the_schedules_up_steps(planned):
    plan, out = planned
    doc = {p["id"]: p for p in czml_from_dir(out)}
    L = plan.schedule.links
    t = plan.schedule.t_s
    links = [p for p in doc.values() if p["id"].startswith("link/")]
    up = L[L["up"]]
    assert len(links) == len(up.groupby(["a", "b"], observed=True))
    checked = 0
    for kind in ("isl", "gsl"):
        # the pairs of this kind with the most up/down changes
        k = L[L["kind"] == kind]
        flips = k.groupby(["a", "b"], observed=True)["up"].apply(lambda s: int((s.diff().fillna(0) != 0).sum()))
        for (a, b) in flips.sort_values(ascending=False).index[:5]:
            want = set(up[(up["a"] == a) & (up["b"] == b)]["step"])
            spans = [tuple((_t(x) - plan.scenario.epoch).total_seconds() for x in iv.split("/"))
                     for iv in doc[f"link/{a}/{b}"]["availability"]]
            got = {i for i, ti in enumerate(t) if any(s <= ti < e or (ti == e == t[-1]) for s, e in spans)}
            assert got == want, (a, b)
            shows = [s for s in doc[f"link/{a}/{b}"]["polyline"]["show"] if s["boolean"]]
            assert [s["interval"] for s in shows] == doc[f"link/{a}/{b}"]["availability"]
            checked += 1
    assert checked == 10


def test_up_intervals_by_hand():
    t = np.arange(0, 60.0, 10)
    assert up_intervals_s(np.array([0, 1, 3, 5]), t, 10.0) == [(0.0, 20.0), (30.0, 40.0), (50.0, 50.0)]
    assert up_intervals_s(np.array([], dtype=int), t, 10.0) == []


def test_not_a_plan_directory(tmp_path):
    with pytest.raises(PlanError, match="not a plan directory"):
        czml_from_dir(tmp_path)
