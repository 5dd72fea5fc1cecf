"""Faults in the planner: `[[faults]]` validated at load, applied to the schedule exactly in their
windows (links.parquet says why a link is down), and routes that react after a detection delay."""

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.errors import ScenarioError
from netemu.plan.orbits import station_ecef_km
from netemu.plan.planner import satellite_track
from netemu.plan.topology import build_schedule
from conftest import DATA, write_scenario

SMALL = (DATA / "small.toml").read_text()


def _scenario(tmp_path, faults: str, name="f.toml"):
    return netemu.load_scenario(write_scenario(tmp_path, SMALL + "\n" + faults, name))


def _schedule(sc):
    st = sc.ground_stations
    xyz, up = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    return build_schedule(sc, satellite_track(sc), xyz, up)


@pytest.fixture(scope="module")
def base_links():
    sc = netemu.load_scenario(DATA / "small.toml")
    return _schedule(sc).links


def _key(L):
    return list(zip(L["step"], L["a"].astype(str), L["b"].astype(str)))


def test_down_reason_explains_every_down_link_of_a_healthy_plan(base_links):
    L = base_links
    assert (L["down_reason"][L["up"]] == "").all()
    down = L[~L["up"]]
    assert len(down) > 0
    # lasers still acquiring, ground links in their handover gap: nothing else in a healthy plan
    assert set(down["down_reason"][down["kind"] == "isl"]) == {"acquisition"}
    assert set(down["down_reason"][down["kind"] == "gsl"]) == {"handover"}


def test_node_fault_removes_exactly_its_links_for_exactly_its_window(tmp_path, base_links):
    sat = "w03-05"
    sc = _scenario(tmp_path, f'[[faults]]\nkind = "node"\nnode = "{sat}"\nt_s = 300\nduration_s = 200\n')
    L = _schedule(sc).links
    B = base_links
    assert _key(L) == _key(B)                     # the same present links: selection unchanged
    touches = ((L["a"] == sat) | (L["b"] == sat)).to_numpy()
    inside = ((L["t_s"] >= 300) & (L["t_s"] < 500)).to_numpy()
    hit = touches & inside
    assert hit.sum() >= 4 * 20                    # its 4 lasers over 20 steps of 10 s (at least)
    assert not L["up"][hit].any() and (L["down_reason"][hit] == "fault").all()
    # everything else exactly as without the fault (including the satellite's own links at 500 s,
    # which never stopped being present, so they do not re-acquire)
    assert (L["up"][~hit].to_numpy() == B["up"][~hit].to_numpy()).all()
    assert (L["down_reason"][~hit].astype(str).to_numpy() == B["down_reason"][~hit].astype(str).to_numpy()).all()
    assert L["up"][touches & (L["t_s"] == 500).to_numpy()].all()


def test_permanent_link_and_terminal_faults(tmp_path, base_links):
    B = base_links
    isl = B[(B["kind"] == "isl") & (B["step"] == 0)]
    a, b = str(isl["a"].iloc[0]), str(isl["b"].iloc[0])
    sc = _scenario(tmp_path, f'[[faults]]\nkind = "link"\na = "{b}"\nb = "{a}"\nt_s = 100\n'
                             '[[faults]]\nkind = "link"\nnode = "g-paris"\nterminal = "gsl"\nt_s = 0\nduration_s = 600\n')
    L = _schedule(sc).links
    link = ((L["a"] == a) & (L["b"] == b)).to_numpy()
    late = (L["t_s"] >= 100).to_numpy()
    assert link[late].any() and not L["up"][link & late].any()
    assert L["up"][link & ~late].all()
    paris = ((L["b"] == "g-paris") & (L["t_s"] < 600)).to_numpy()
    assert paris.any() and (L["down_reason"][paris] == "fault").all()
    other = ~(link & late) & ~paris
    assert (L["up"][other].to_numpy() == B["up"][other].to_numpy()).all()


def test_reboot_lasers_return_acquisition_s_after_it_ends(tmp_path, base_links):
    # shell lasers: acquisition_s = 30 (3 steps of 10 s); reboot 200 s → 300 s
    sat = "w03-05"
    sc = _scenario(tmp_path, f'[[faults]]\nkind = "reboot"\nnode = "{sat}"\nt_s = 200\nreboot_s = 100\n')
    L = _schedule(sc).links
    isl = ((L["kind"] == "isl") & ((L["a"] == sat) | (L["b"] == sat))).to_numpy()
    shell = isl & L["a"].astype(str).str.startswith("w").to_numpy()
    t = L["t_s"].to_numpy()
    r = L["down_reason"].astype(str).to_numpy()
    assert (r[shell & (t >= 200) & (t < 300)] == "fault").all()
    assert (r[shell & (t >= 300) & (t < 330)] == "acquisition").all()
    assert not L["up"][shell & (t >= 200) & (t < 330)].any()
    back = shell & (t >= 330) & (t < 400)
    assert back.sum() > 0 and L["up"][back].all()
    other = ~((L["a"] == sat) | (L["b"] == sat)).to_numpy()
    assert (L["up"][other].to_numpy() == base_links["up"][other].to_numpy()).all()


def _error(tmp_path, faults: str) -> ScenarioError:
    p = write_scenario(tmp_path, SMALL + "\n" + faults, "bad.toml")
    with pytest.raises(ScenarioError) as e:
        netemu.load_scenario(p)
    assert "bad.toml" in str(e.value)
    return e.value


@pytest.mark.parametrize("faults, key, words", [
    ('kind = "node"\nnode = "w03-55"\nt_s = 10', "faults[0].node", "did you mean"),
    ('kind = "station"\nnode = "w03-05"\nt_s = 10', "faults[0].node", "a ground station"),
    ('kind = "node"\nnode = "w03-05"\nt_s = 1200', "faults[0].t_s", "[0, 1200)"),
    ('kind = "node"\nnode = "w03-05"\nt_s = -5', "faults[0].t_s", "[0, 1200)"),
    ('kind = "node"\nnode = "w03-05"\nt_s = 5\nduration_s = -1', "faults[0].duration_s", "positive"),
    ('kind = "reboot"\nnode = "w03-05"\nt_s = 5', "faults[0].reboot_s", "missing"),
    ('kind = "reboot"\nnode = "g-paris"\nt_s = 5\nreboot_s = 3', "faults[0].node", "a satellite"),
    ('kind = "link"\na = "w03-05"\nb = "w03-05"\nt_s = 5', "faults[0].b", "other than"),
    ('kind = "link"\nnode = "w03-05"\nterminal = "laser"\nt_s = 5', "faults[0].terminal", "'isl'"),
    ('kind = "flood"\nnode = "w03-05"\nt_s = 5', "faults[0].kind", "one of node"),
    ('kind = "node"\nnode = "w03-05"\nt_s = 5\nduraton_s = 3', "faults[0].duraton_s", "did you mean 'duration_s'"),
])
def test_bad_faults_give_one_clear_error(tmp_path, faults, key, words):
    e = _error(tmp_path, "[[faults]]\n" + faults + "\n")
    assert e.key == key and words in e.message, str(e)


def test_contradictory_faults_are_one_error(tmp_path):
    e = _error(tmp_path, '[[faults]]\nkind = "node"\nnode = "w03-05"\nt_s = 100\nduration_s = 100\n'
                         '[[faults]]\nkind = "reboot"\nnode = "w03-05"\nt_s = 150\nreboot_s = 10\n')
    assert e.key == "faults[1].t_s" and "faults[0]" in e.message and "100 s to 200 s" in e.message, str(e)
    e = _error(tmp_path, '[[faults]]\nkind = "node"\nnode = "w03-05"\nt_s = 100\n'
                         '[[faults]]\nkind = "node"\nnode = "w03-05"\nt_s = 900\nduration_s = 10\n')
    assert "to the end" in e.message or "the end" in e.message
    # back to back is not an overlap
    _scenario(tmp_path, '[[faults]]\nkind = "node"\nnode = "w03-05"\nt_s = 100\nduration_s = 100\n'
                        '[[faults]]\nkind = "node"\nnode = "w03-05"\nt_s = 200\nduration_s = 10\n')


# --------------------------------------------------------------------------- detection delay

RELAY_FAULT = '[[faults]]\nkind = "node"\nnode = "w09-03"\nt_s = 130\nduration_s = 300\n'


def _plan(tmp_path, detection_s: float, name: str):
    text = SMALL.replace("[gsl]", f"[routing]\nfailure_detection_s = {detection_s}\n\n[gsl]") + "\n" + RELAY_FAULT
    return netemu.make_plan(netemu.load_scenario(write_scenario(tmp_path, text, name)), workers=1)


def _reachable_at(plan, src, dst):
    p = plan.routes.paths
    sel = p[(p["src"] == src) & (p["dst"] == dst)]
    return dict(zip(sel["t_s"], sel["delay_ms"]))


def test_detection_delay_gives_the_expected_unreachable_window(tmp_path):
    healthy = netemu.make_plan(netemu.load_scenario(DATA / "small.toml"), workers=1)
    src, dst = "g-beijing", "c00"      # endpoint order (stations first): paths list each pair once
    assert "w09-03" in healthy.routes.path_at(src, dst, 130)       # the pair's path crosses the relay
    instant = _plan(tmp_path, 0.0, "d0.toml")
    slow = _plan(tmp_path, 15.0, "d15.toml")
    r0, r15, rh = (_reachable_at(p, src, dst) for p in (instant, slow, healthy))
    # detected at once: the pair stays reachable on a detour around the relay
    assert all(t in r0 for t in np.arange(130, 170, 10.0))
    assert "w09-03" not in instant.routes.path_at(src, dst, 130)
    assert r0[130.0] > rh[130.0]                                     # the detour is longer
    # 15 s to detect on a 10 s grid: routes still point at the dead relay at 130 s and 140 s
    # (140 − 15 < 130), so the pair is unreachable for 2 steps = 20 s, then back on the detour
    assert 120.0 in r15 and 130.0 not in r15 and 140.0 not in r15 and 150.0 in r15
    assert "w09-03" in slow.routes.path_at(src, dst, 140)
    assert "w09-03" not in slow.routes.path_at(src, dst, 150)
    assert r15[150.0] == pytest.approx(r0[150.0], abs=1e-9)
    assert all(r15[t] == pytest.approx(r0[t], abs=1e-9) for t in r0 if t not in (130.0, 140.0))
    lost = slow.blackholed
    assert set(lost[(lost["src"] == src) & (lost["dst"] == dst)]["step"]) == {13, 14}
    # events and summary
    ev = slow.events
    row = lambda e: ev[(ev["event"] == e) & (ev["a"] == "w09-03")]  # noqa: E731
    assert list(row("fault_start")["t_s"]) == [130.0] and list(row("fault_end")["t_s"]) == [430.0]
    assert list(row("reroute")["t_s"]) == [150.0] and list(instant.events.query("event == 'reroute'")["t_s"]) == [130.0]
    s = slow.summary()["faults"]
    assert s["count"] == 1 and s["by_kind"] == {"node": 1} and s["failure_detection_s"] == 15.0
    assert s["unreachable_s_by_pair"][f"{src}|{dst}"]["blackholed_s"] == 20.0
    assert s["blackholed_pair_steps"] == len(lost)
    assert "faults" not in healthy.summary()


def test_faulted_plan_files_say_why(tmp_path):
    import json
    from netemu.plan.planner import read_plan, write_plan
    plan = _plan(tmp_path, 0.5, "w.toml")
    write_plan(plan, tmp_path / "out")
    t = read_plan(tmp_path / "out")
    L = t["links"]
    hit = ((L["a"] == "w09-03") | (L["b"] == "w09-03")) & (L["t_s"] >= 130) & (L["t_s"] < 430)
    assert hit.any() and (L["down_reason"][hit] == "fault").all() and not L["up"][hit].any()
    assert {"fault_start", "fault_end", "reroute"} <= set(t["events"]["event"])
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["faults"]["link_steps_down"] == int(hit.sum())
