"""The report's time view: its data against the plan it comes from (positions, live links, paths,
RTTs, decimation), and the page in headless Chromium: it loads offline without console errors,
the slider moves, and what is drawn at two instants differs as the plan says."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.report import build_report
from netemu.plan.views import VIEW_POSITIONS_FILE, frame_steps, view_positions_of_dir, view_positions_of_plan
from netemu.timeview import VIEW_DIR, timeview_data

from browser import Page, chromium
from test_report import DATA, synthetic_run  # noqa: F401  (the fixture: a real plan, fabricated measurements)


@pytest.fixture(scope="module")
def plan():
    return netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)


def test_frame_steps_decimate_within_budget():
    steps = np.arange(100, 2100)                       # 2,000 steps (S1: 200 s at 0.1 s)
    shown, every = frame_steps(steps, per_frame_values=6_600, max_values=400_000)
    assert every == 34 and shown[0] == 100 and shown[-1] == 2099
    assert len(shown) * 6_600 <= 400_000 + 6_600     # within budget (the last step is always kept)
    assert np.all(np.diff(shown)[:-1] == 34)
    shown, every = frame_steps(np.arange(17), per_frame_values=100)
    assert every == 1 and list(shown) == list(range(17))


def test_data_is_the_plans(synthetic_run, plan):  # noqa: F811
    d = timeview_data(synthetic_run)
    json.dumps(d, allow_nan=False)
    assert d["window_s"] == [330.0, 346.0] and d["t_s"] == list(np.arange(330.0, 347.0))
    assert d["decimation"]["every_steps"] == 1 and "every step" in d["decimation"]["note"]
    names = d["nodes"]["name"]
    assert names[:d["n_sat"]] == list(plan.track.names)
    # positions: the plan's track at the frame's step, to 0.01°
    for f in (0, 9, 16):
        k = int(np.searchsorted(plan.track.t_s, d["t_s"][f]))
        xyz = plan.track.xyz_km[k]
        lat = np.degrees(np.arcsin(xyz[:, 2] / np.linalg.norm(xyz, axis=1)))
        lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        assert np.allclose(np.array(d["lat"][f][:d["n_sat"]]) / 100, lat, atol=0.006)
        assert np.allclose(np.array(d["lon"][f][:d["n_sat"]]) / 100, lon, atol=0.006)
        # live links: exactly the plan's up links at that step, with their delays
        L = plan.schedule.links
        L = L[(L["step"] == k) & L["up"]]
        want = {(str(a), str(b)): dl for a, b, dl in zip(L["a"], L["b"], L["delay_ms"])}
        got = {(names[d["links"]["a"][i]], names[d["links"]["b"][i]]): dl / 100
               for i, dl in zip(d["up"][f], d["delay"][f])}
        assert got.keys() == want.keys()
        assert all(abs(got[k2] - want[k2]) <= 0.006 for k2 in want)
    st = {n: (la / 100, lo / 100) for n, la, lo in zip(names[d["n_sat"]:], d["lat"][0][d["n_sat"]:],
                                                         d["lon"][0][d["n_sat"]:])}
    beijing = next(s for s in plan.scenario.ground_stations if s.name == "g-beijing")
    assert st["g-beijing"] == pytest.approx((beijing.lat_deg, beijing.lon_deg), abs=0.006)
    # the probed pair: its planned path before, during and after Beijing's handover gap (338-340 s)
    (pair,) = d["pairs"]
    assert (pair["src"], pair["dst"]) == ("g-sanya", "g-beijing")
    path = {t: ([names[i] for i in p] if p else None) for t, p in zip(d["t_s"], pair["path"])}
    # routes.parquet: g-beijing>w03-00>w03-05>g-sanya from t = 259 s, none from 338 s, then
    # g-beijing>w02-01>w03-01>w03-00>w03-05>g-sanya from 340 s (the probes go the other way)
    assert path[332.0] == ["g-sanya", "w03-05", "w03-00", "g-beijing"]
    assert path[338.0] is None and path[339.0] is None
    assert path[344.0] == ["g-sanya", "w03-05", "w03-00", "w03-01", "w02-01", "g-beijing"]
    # the RTT shown at a frame is the median of that step's probes
    pr = pd.read_parquet(synthetic_run / "probes.parquet")
    f = d["t_s"].index(335.0)
    assert pair["rtt_ms"][f] == pytest.approx(pr[(pr["t_s"] >= 335) & (pr["t_s"] < 336)]["rtt_ms"].median(), abs=1e-3)
    assert pair["rtt_ms"][d["t_s"].index(339.0)] is None
    assert pair["planned_rtt_ms"][f] == pytest.approx(2 * plan.routes.paths.query(
        "step == 335 and src == 'g-beijing' and dst == 'g-sanya'")["delay_ms"].iloc[0], abs=1e-3)
    assert "handover" in d["events"]["event"] and 338.0 in d["events"]["t_s"]


def test_positions_from_the_scenario_copy_are_the_plans(synthetic_run, plan, tmp_path):  # noqa: F811
    a = pd.read_parquet(synthetic_run / VIEW_POSITIONS_FILE)
    b = view_positions_of_dir(synthetic_run)
    assert list(a["name"]) == list(b["name"]) and list(a["step"]) == list(b["step"])
    assert np.allclose(a[["lat_deg", "lon_deg", "alt_km"]], b[["lat_deg", "lon_deg", "alt_km"]], atol=1e-6)
    # a plan directory (no run.json): the whole plan, decimated (401 steps)
    plan_dir = tmp_path / "plan"
    netemu.write_plan(plan, plan_dir)
    c = view_positions_of_dir(plan_dir, max_values=10_000)
    steps = np.sort(c["step"].unique())
    assert steps[0] == 0 and steps[-1] == 400 and 2 < len(steps) < 401
    assert len(c) == len(steps) * (len(plan.track.names) + len(plan.scenario.ground_stations))


def test_big_plans_are_decimated_and_say_so(synthetic_run, plan, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    view_positions_of_plan(plan, 330.0, 346.0, max_values=600).to_parquet(run / VIEW_POSITIONS_FILE, index=False)
    d = timeview_data(run)
    dec = d["decimation"]
    assert dec["every_steps"] > 1 and dec["frames"] == len(d["t_s"]) < dec["steps"] == 17
    assert f"one step in {dec['every_steps']} shown" in dec["note"]
    assert d["t_s"][0] == 330.0 and d["t_s"][-1] == 346.0


def _need_browser():
    if chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (scripts/setup-machine.sh --with-browser installs it)")
        pytest.skip("needs chromium (Debian package chromium)")


def test_view_in_headless_chromium(synthetic_run, tmp_path):  # noqa: F811
    _need_browser()
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    report = build_report(run)
    text = report.read_text()
    assert f"<script src='{VIEW_DIR}/plotly.min.js'>" in text and "http" not in text.split("<h2>Time view")[1].split("</p>")[1]
    assert (run / VIEW_DIR / "plotly.min.js").stat().st_size > 1_000_000
    data = timeview_data(run)
    with Page(report.as_uri(), 1200, 1000) as page:
        page.wait_for("window.netemuView", 60)

        def move_slider(t_s: float) -> dict:
            f = data["t_s"].index(t_s)
            page.eval(f"(function(){{var s=document.getElementById('nv-slider');s.value='{f}';"
                      "s.dispatchEvent(new Event('input'));})()")
            return page.eval("netemuView.state()")

        a, b = move_slider(332.0), move_slider(339.0)
        shot_b = page.screenshot(tmp_path / "b.png", "#nv-map")
        c = move_slider(344.0)
        shot_c = page.screenshot(tmp_path / "c.png", "#nv-map")
        assert page.eval("document.getElementById('nv-time').textContent").startswith("t = 344 s")
        errors = list(page.errors)
    assert not errors, errors
    assert (a["frame"], a["slider"], a["t_s"]) == (2, 2, 332)
    # the probed pair's drawn path: the plan's route, none in the handover gap, the new one after
    key = "g-sanya>g-beijing"
    assert a["paths"][key]["nodes"] == ["g-sanya", "w03-05", "w03-00", "g-beijing"]
    assert a["paths"][key]["name"].startswith("g-sanya → g-beijing: RTT ")
    assert b["paths"][key]["nodes"] == [] and "no path" in b["paths"][key]["name"]
    assert c["paths"][key]["nodes"] == ["g-sanya", "w03-05", "w03-00", "w03-01", "w02-01", "g-beijing"]
    # the drawn links are the plan's up links at each instant (Beijing's GSL is down in the gap)
    links = pd.read_parquet(run / "links.parquet")
    for s, t in ((a, 332.0), (b, 339.0), (c, 344.0)):
        up = links[(links["t_s"] == t) & links["up"]]
        assert s["links"] == {"isl": int((up["kind"] == "isl").sum()), "gsl": int((up["kind"] == "gsl").sum())}
        f = data["t_s"].index(t)
        j = data["nodes"]["name"].index("w03-00")
        assert s["nodes"]["w03-00"] == [data["lon"][f][j] / 100, data["lat"][f][j] / 100]
    assert b["links"]["gsl"] < a["links"]["gsl"]
    assert a["nodes"]["w03-00"] != c["nodes"]["w03-00"]
    import matplotlib.image
    ib, ic = matplotlib.image.imread(shot_b), matplotlib.image.imread(shot_c)
    assert ib.shape == ic.shape and np.abs(ib - ic).max() > 0.1


def test_cli_report_of_a_plan_directory_has_the_view(plan, tmp_path):
    from netemu.cli import main
    d = tmp_path / "plan"
    netemu.write_plan(plan, d)
    assert main(["report", str(d)]) == 0
    pos = pd.read_parquet(d / VIEW_POSITIONS_FILE)
    assert set(pos["name"]) == set(plan.track.names) | {s.name for s in plan.scenario.ground_stations}
    text = (d / "report.html").read_text()
    assert "id='nv-slider'" in text and (d / VIEW_DIR / "timeview-data.js").exists()
    data = json.loads((d / VIEW_DIR / "timeview-data.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert data["window_s"] == [0.0, 400.0] and data["t_s"][0] == 0.0 and data["t_s"][-1] == 400.0


def test_timeline_events_are_the_pairs_and_the_faults(synthetic_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    ev = pd.read_csv(run / "events.csv")
    extra = pd.DataFrame({"t_s": [333.0, 335.0, 336.0], "event": ["fault_start", "fault_end", "path_change"],
                          "a": ["w01-02", "w01-02", "w00-00"], "b": ["w01-03", "w01-03", "w02-02"],
                          "detail": ["isl", "isl", "3 hops"]})
    pd.concat([ev, extra]).sort_values("t_s").to_csv(run / "events.csv", index=False)
    e = pd.DataFrame(timeview_data(run)["events"])
    assert {"fault_start", "fault_end", "handover", "path_change"} == set(e["event"])
    assert e[e["event"] == "fault_start"]["t_s"].tolist() == [333.0]
    # path changes: only the probed pair's (g-sanya, g-beijing in either order), inside the window
    pc = e[e["event"] == "path_change"]
    assert len(pc) and all({a, b} == {"g-sanya", "g-beijing"} for a, b in zip(pc["a"], pc["b"]))
    assert pc["t_s"].between(330, 346).all()
