"""Faults in the planner: `[[faults]]` validated at load, applied to the schedule exactly in their
windows (links.parquet says why a link is down), and routes that react after a detection delay."""

import numpy as np
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
    # what an emulation installs: next hops from the routing view still lead into the dead relay
    from netemu.plan.routing import next_hop_changes
    assert healthy.routing_schedule is healthy.schedule
    nh = next_hop_changes(slow.routing_schedule, slow.scenario.endpoints, steps=(13, 16))
    names = slow.schedule.node_names
    dead = names.index("w09-03")
    prev, c00 = names.index("w09-02"), slow.scenario.endpoints.index("c00")   # w09-02 forwards to w09-03 toward c00

    def hop(table, k):
        rows = table[(table["step"] <= k) & (table["node"] == prev) & (table["dst"] == c00)]
        return int(rows["next_hop"].iloc[-1])
    assert hop(nh, 13) == dead and hop(nh, 14) == dead and hop(nh, 15) != dead
    instant_nh = next_hop_changes(slow.schedule, slow.scenario.endpoints, steps=(12, 16))
    assert hop(instant_nh, 12) == dead and hop(instant_nh, 13) != dead   # the link states know at once
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
    # the detour's delay penalty, measured against the healthy network at the fault's steps
    d = instant.summary()["faults"]["detour"]
    assert d["sampled_steps"] == 30 and d["pair_steps_detoured"] > 0              # 130 … 420 s
    assert d["added_delay_ms_max"] >= round(r0[150.0] - rh[150.0], 3) - 1e-3 > 0
    assert d["added_delay_ms_mean"] <= d["added_delay_ms_p99"] <= d["added_delay_ms_max"]


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


# --------------------------------------------------------------------------- stochastic and correlated faults

import math  # noqa: E402

from scipy import stats  # noqa: E402

from netemu.plan.faults import expand_group_faults, radiation_resets, region_multiplier, renewal_windows  # noqa: E402
from netemu.plan.scenario import Region, group_node_names  # noqa: E402


def _up_down(u, start, dur):
    """Up times (from t = 0 or the last repair to the next failure) and down times per unit."""
    order = np.lexsort((start, u))
    u, start, dur = u[order], start[order], dur[order]
    prev_end = np.where(np.r_[True, u[1:] != u[:-1]], 0.0, np.r_[0.0, (start + dur)[:-1]])
    return start - prev_end, dur


def test_exponential_failures_match_their_mtbf_and_mttr():
    u, start, dur = renewal_windows(np.random.default_rng(1), 200, 2e7, 10_000.0, 1_000.0)
    up, down = _up_down(u, start, dur)
    assert len(up) > 300_000
    assert up.mean() == pytest.approx(10_000.0, rel=0.01) and down.mean() == pytest.approx(1_000.0, rel=0.01)
    # exponential: standard deviation = mean, and the KS test does not reject it
    assert up.std() == pytest.approx(10_000.0, rel=0.02)
    assert stats.kstest(down, stats.expon(scale=1_000.0).cdf).pvalue > 1e-3
    assert (start < 2e7).all() and set(np.unique(u)) == set(range(200))


def test_weibull_failures_match_their_distribution():
    shape, mtbf = 2.5, 5_000.0
    u, start, dur = renewal_windows(np.random.default_rng(2), 100, 1e7, mtbf, 300.0, "weibull", shape)
    up, _ = _up_down(u, start, dur)
    assert up.mean() == pytest.approx(mtbf, rel=0.01)
    scale = mtbf / math.gamma(1 + 1 / shape)                        # 5000 / Γ(1.4) = 5000 / 0.887264 = 5635.3 s
    assert scale == pytest.approx(5635.3, abs=0.1)
    assert stats.kstest(up[:20_000], stats.weibull_min(shape, scale=scale).cdf).pvalue > 1e-3
    # and an exponential of the same mean is rejected: the test can tell them apart
    assert stats.kstest(up[:20_000], stats.expon(scale=mtbf).cdf).pvalue < 1e-6


def test_radiation_resets_follow_their_rate_and_region_multiplier():
    T, N = 2_000, 1_000
    t = np.arange(T, dtype=float)                                   # 1 s steps
    lat = np.where(np.arange(N) < N // 2, -25.0, 40.0) * np.ones((T, 1))   # half the satellites over the SAA box
    lon = np.full((T, N), -40.0)
    saa = Region(lat_deg=(-50.0, 0.0), lon_deg=(-90.0, 40.0), multiplier=10.0)
    rate = 2e-5 * region_multiplier(lat, lon, [saa])                # per s
    u, ts = radiation_resets(np.random.default_rng(3), t, rate, reboot_s=1.0)
    inside, outside = (u < N // 2).sum(), (u >= N // 2).sum()
    # expected: N/2 · T · λ · Δt (p = 1 − e^(−λΔt) ≈ λΔt): 500·2000·2e-4 = 200 inside, 20 outside
    assert abs(inside - 200 * (1 - math.exp(-2e-4)) / 2e-4) < 5 * math.sqrt(200)
    assert abs(outside - 20) < 5 * math.sqrt(20)
    # a satellite rebooting ignores further resets
    u2, ts2 = radiation_resets(np.random.default_rng(4), t, np.full((T, 4), 0.5), reboot_s=100.0)
    for k in range(4):
        assert (np.diff(ts2[u2 == k]) >= 100.0).all()


GROUP_FAULTS = '''
[[faults]]
kind = "random"
group = "shell"
mtbf_s = 3000
mttr_s = 200
seed = {seed}

[[faults]]
kind = "storm"
group = "shell"
t_s = 600
fraction = 0.1
duration_s = 120
seed = {seed}

[[faults]]
kind = "radiation"
group = "shell"
rate_per_day = 50
reboot_s = 20
regions = [{{lat_deg = [-50, 0], lon_deg = [-90, 40], multiplier = 10}}]
seed = {seed}
'''


def _drawn(tmp_path, seed, name):
    sc = _scenario(tmp_path, GROUP_FAULTS.format(seed=seed), name)
    track = satellite_track(sc)
    offs, off, by = {}, 0, {}
    for g in sc.satellites:
        offs[g.name], by[g.name] = off, group_node_names(g)
        off += g.count
    return sc, expand_group_faults(sc.group_faults, by, offs, track.t_s, track.xyz_km, sc.duration_s)


def test_group_faults_repeat_with_their_seed(tmp_path):
    sc, a = _drawn(tmp_path, 11, "a.toml")
    _, b = _drawn(tmp_path, 11, "b.toml")
    _, c = _drawn(tmp_path, 12, "c.toml")
    assert a == b and a != c
    storm = [f for f in a if f.source == "storm shell"]
    assert len(storm) == round(0.1 * 144) == len({f.node for f in storm})   # 14 distinct satellites
    assert all(f.t_s == 600 and f.duration_s == 120 for f in storm)
    assert [f for f in a if f.source == "random shell"] and [f for f in a if f.source == "radiation shell"]
    # the plan applies them: a storm satellite's links are down for its 120 s
    plan = netemu.make_plan(sc, workers=1)
    L = plan.schedule.links
    n = storm[0].node
    hit = ((L["a"] == n) | (L["b"] == n)) & (L["t_s"] >= 600) & (L["t_s"] < 720)
    assert hit.any() and (L["down_reason"][hit] == "fault").all()
    s = plan.summary()["faults"]
    assert s["by_kind"]["storm shell"] == 14 and s["count"] == len(plan.faults) == len(a)


def test_region_storm_takes_every_satellite_inside_the_box(tmp_path):
    sc = _scenario(tmp_path, '[[faults]]\nkind = "storm"\ngroup = "shell"\nt_s = 0\n'
                             'region = {lat_deg = [-90, 90], lon_deg = [-180, 180]}\n', "w.toml")
    track = satellite_track(sc)
    by = {g.name: group_node_names(g) for g in sc.satellites}
    f = expand_group_faults(sc.group_faults, by, {"shell": 0, "cluster": 144}, track.t_s, track.xyz_km, sc.duration_s)
    assert len(f) == 144
    north = _scenario(tmp_path, '[[faults]]\nkind = "storm"\ngroup = "shell"\nt_s = 0\n'
                                'region = {lat_deg = [0, 90], lon_deg = [-180, 180]}\n', "n.toml")
    f = expand_group_faults(north.group_faults, by, {"shell": 0, "cluster": 144}, track.t_s, track.xyz_km, 1200.0)
    z = track.xyz_km[0, :144, 2]
    assert {x.node for x in f} == {by["shell"][i] for i in np.nonzero(z >= 0)[0]}


@pytest.mark.parametrize("faults, key, words", [
    ('kind = "random"\ngroup = "shel"\nmtbf_s = 10\nmttr_s = 1', "faults[0].group", "did you mean 'shell'"),
    ('kind = "random"\ngroup = "shell"\nmtbf_s = 10\nmttr_s = 1\nshape = 2', "faults[0].shape", "weibull"),
    ('kind = "random"\ngroup = "shell"\nmtbf_s = -10\nmttr_s = 1', "faults[0].mtbf_s", "positive"),
    ('kind = "storm"\ngroup = "shell"\nt_s = 5\nfraction = 0.1\nregion = {lat_deg = [0, 1], lon_deg = [0, 1]}',
     "faults[0].fraction", "exactly one of"),
    ('kind = "storm"\ngroup = "shell"\nt_s = 5000\nfraction = 0.1', "faults[0].t_s", "[0, 1200)"),
    ('kind = "radiation"\ngroup = "shell"\nrate_per_day = 1\nreboot_s = 5\nregions = [{lat_deg = [10, 0], lon_deg = [0, 1]}]',
     "faults[0].regions", "lo < hi"),
])
def test_bad_group_faults_give_one_clear_error(tmp_path, faults, key, words):
    e = _error(tmp_path, "[[faults]]\n" + faults + "\n")
    assert e.key == key and words in e.message, str(e)


def test_cli_exits_2_naming_the_fault(tmp_path):
    import subprocess
    import sys
    p = write_scenario(tmp_path, SMALL + '\n[[faults]]\nkind = "node"\nnode = "w03-55"\nt_s = 10\n', "cli.toml")
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(p), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "cli.toml" in r.stderr and "faults[0].node" in r.stderr and "did you mean" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if "faults[0]" in ln]) == 1


def test_random_terminal_failures_take_only_that_terminal_kind(tmp_path):
    sc = _scenario(tmp_path, '[[faults]]\nkind = "random"\ngroup = "shell"\nmtbf_s = 2000\nmttr_s = 300\n'
                             'terminal = "isl"\nseed = 4\n', "t.toml")
    track = satellite_track(sc)
    by = {g.name: group_node_names(g) for g in sc.satellites}
    f = expand_group_faults(sc.group_faults, by, {"shell": 0, "cluster": 144}, track.t_s, track.xyz_km, sc.duration_s)
    assert f and all(x.kind == "link" and x.terminal == "isl" and x.source == "random shell" for x in f)
    # about 144 satellites × 1200 s / (2000 + 300) s ≈ 75 failures (at most one cycle more each)
    assert 40 < len(f) < 120
    st = sc.ground_stations
    xyz, upv = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    L = build_schedule(sc, track, xyz, upv, faults=tuple(f)).links
    hit = (L["down_reason"] == "fault").to_numpy()
    assert hit.any() and (L["kind"][hit] == "isl").all()
