"""Sunlight of satellites (conical shadow model) against skyfield's own `is_sunlit`, with the
JPL DE430 excerpt skyfield ships for its tests (2015-02-26 to 2015-03-06)."""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import skyfield
from skyfield.api import EarthSatellite, load, load_file

from netemu.plan.orbits import _satrec, propagate, sso_inclination_deg, sun_ecef_km
from netemu.plan.power import eclipse_windows, sunlit_fraction

TS = load.timescale(builtin=True)
DE430 = Path(skyfield.__file__).parent / "tests" / "data" / "de430-2015-03-02.bsp"
EPOCH = datetime(2015, 3, 2, 6, 0, tzinfo=timezone.utc)
ORBITS = [  # (altitude_km, inclination_deg, raan_deg): eclipses every revolution
    (550.0, 53.0, 40.0),
    (750.0, sso_inclination_deg(750.0), 330.0),
    (1200.0, 87.9, 120.0),
]


@pytest.fixture(scope="module")
def eph():
    if not DE430.exists():
        pytest.skip("skyfield's test ephemeris de430-2015-03-02.bsp is not installed")
    return load_file(str(DE430))


def _skyfield_sunlit(sat, eph, t_s):
    t = TS.utc(EPOCH.year, EPOCH.month, EPOCH.day, EPOCH.hour, EPOCH.minute, EPOCH.second + t_s)
    return EarthSatellite.from_satrec(sat, TS).at(t).is_sunlit(eph)


def test_eclipse_entry_and_exit_match_skyfield(eph):
    t_s = np.arange(0.0, 3 * 6600.0, 1.0)
    sats = [_satrec(i + 1, EPOCH, alt, inc, raan, 0.0) for i, (alt, inc, raan) in enumerate(ORBITS)]
    track = propagate(sats, [f"s{i}" for i in range(len(sats))], EPOCH, t_s)
    f = sunlit_fraction(track.xyz_km, sun_ecef_km(EPOCH, t_s))
    for i, sat in enumerate(sats):
        ref = _skyfield_sunlit(sat, eph, t_s)
        ours = eclipse_windows(t_s, f[:, i])
        theirs = eclipse_windows(t_s, ref.astype(float))
        assert len(theirs) >= 2 and len(ours) == len(theirs), (i, ours, theirs)
        for (a0, a1), (b0, b1) in zip(ours, theirs):
            # skyfield's windows come from 1 s booleans (±1 s); the shadow model's midpoint is the
            # Sun centre's line of sight, which is what is_sunlit tests.
            if a0 > t_s[0]:
                assert abs(a0 - b0) < 1.5, (i, a0, b0)
            if a1 < t_s[-1]:
                assert abs(a1 - b1) < 1.5, (i, a1, b1)
        # Away from the boundaries the two agree at every sampled instant.
        clear = (f[:, i] == 0.0) | (f[:, i] == 1.0)
        assert clear.mean() > 0.99
        assert np.array_equal(f[clear, i] == 1.0, ref[clear])


def test_penumbra_is_a_few_seconds_and_monotonic():
    t_s = np.arange(0.0, 6000.0, 0.1)
    track = propagate([_satrec(1, EPOCH, 550.0, 53.0, 40.0, 0.0)], ["s"], EPOCH, t_s)
    f = sunlit_fraction(track.xyz_km, sun_ecef_km(EPOCH, t_s))[:, 0]
    partial = (f > 0) & (f < 1)
    assert partial.any()
    # Each penumbra passage in low orbit lasts seconds (Sun's 0.53° disc swept at ~4°/min
    # relative to the Earth's limb, stretched by the grazing geometry): between 2 and 30 s.
    edges = np.flatnonzero(np.diff(partial.astype(int)))
    runs = (edges[1::2] - edges[::2]) * 0.1
    assert len(runs) >= 2 and (runs > 2).all() and (runs < 30).all(), runs
    seg = f[edges[0] + 1: edges[1] + 1]
    d = np.diff(seg)
    assert (d <= 1e-12).all() or (d >= -1e-12).all()


def test_sun_position_matches_de430(eph):
    t_s = np.linspace(0, 86_400 * 3, 50)
    ours = sun_ecef_km(EPOCH, t_s)
    from skyfield.framelib import itrs
    t = TS.utc(EPOCH.year, EPOCH.month, EPOCH.day, EPOCH.hour, EPOCH.minute, EPOCH.second + t_s)
    ref = (eph["sun"] - eph["earth"]).at(t).frame_xyz(itrs).km.T
    cosang = np.einsum("tk,tk->t", ours, ref) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.degrees(np.arccos(np.minimum(cosang, 1))).max() < 0.02   # almanac: ±0.01°
    assert np.abs(np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1) - 1).max() < 1e-4


def test_nan_positions_stay_nan_and_far_side_is_dark():
    sun = np.array([[1.5e8, 0.0, 0.0]])
    sat = np.array([[[7000.0, 0, 0], [-7000.0, 0, 0], [np.nan, np.nan, np.nan], [0, 7000.0, 0]]])
    f = sunlit_fraction(sat, sun)
    assert f[0, 0] == 1.0 and f[0, 1] == 0.0 and np.isnan(f[0, 2]) and f[0, 3] == 1.0


# --------------------------------------------------------------------------- energy balance

from dataclasses import replace

import pandas as pd

import netemu
from netemu.errors import ScenarioError
from netemu.plan.power import active_accelerators, energy_balance
from netemu.plan.scenario import ComputeGroup
from conftest import DATA

GROUP = ComputeGroup(group="c", accelerators_per_satellite=4, prefill_tokens_per_s_per_accelerator=1e4,
                     decode_tokens_per_s_per_sequence=100.0, sequences_per_accelerator=8,
                     accelerator_busy_w=500.0, accelerator_idle_w=100.0, bus_w=200.0, solar_array_w=2400.0,
                     battery_wh=1000.0, initial_soc_pct=60.0, throttle_below_soc_pct=40.0,
                     throttled_accelerators=1, refuse_below_soc_pct=20.0, expected_utilisation=0.5)


def test_energy_balance_by_hand():
    # Per active accelerator 0.5 × 500 + 0.5 × 100 = 300 W; full load 200 + 4 × 300 = 1,400 W.
    # Steps of 30 min (0.5 h); battery 1,000 Wh, so 1 W over a step is 0.05 % of charge.
    sunlit = np.array([[1.0], [0.0], [0.0], [0.0], [0.0], [0.5], [1.0], [1.0]])
    soc, power, active = energy_balance(GROUP, sunlit, 1800.0)
    # k  soc(start)  active  power   solar   change = (solar - power) × 0.05 %
    # 0  60          4       1400    2400    +50  → 100 (clipped)
    # 1  100         4       1400    0       -70  → 30
    # 2  30          1 (<40) 500     0       -25  → 5
    # 3  5           0 (<20) 200     0       -10  → 0 (clipped)
    # 4  0           0       200     0       -10  → 0
    # 5  0           0       200     1200    +50  → 50
    # 6  50          4       1400    2400    +50  → 100
    # 7  100         4       1400    2400
    assert np.allclose(soc[:, 0], [60, 100, 30, 5, 0, 0, 50, 100])
    assert active[:, 0].tolist() == [4, 4, 1, 0, 0, 0, 4, 4]
    assert np.allclose(power[:, 0], [1400, 1400, 500, 200, 200, 200, 1400, 1400])


def test_energy_balance_is_per_satellite_and_nan_is_shadow():
    sunlit = np.array([[1.0, np.nan], [1.0, 0.0]])
    soc, power, _ = energy_balance(replace(GROUP, initial_soc_pct=50.0), sunlit, 360.0)
    # 0.1 h per step: satellite 0 gains (2400 − 1400) × 0.1 Wh = 10 % of charge, satellite 1 loses 14 %.
    assert np.allclose(soc[1], [60.0, 36.0])


def test_thermal_limit_and_no_rules():
    g = replace(GROUP, throttle_below_soc_pct=None, refuse_below_soc_pct=None, thermal_limit_w=1000.0)
    # (1000 − 200) / 300 = 2.67 → 2 accelerators whatever the charge.
    assert active_accelerators(g, np.array([0.0, 50.0, 100.0])).tolist() == [2, 2, 2]
    soc, power, active = energy_balance(g, np.zeros((3, 1)), 1800.0)
    assert active[:, 0].tolist() == [2, 2, 2] and np.allclose(power, 800.0)
    assert np.allclose(soc[:, 0], [60, 20, 0])


COMPUTE = """
[[compute]]
group = "cluster"
accelerators_per_satellite = 4
battery_wh = 2000
solar_array_w = 4000
throttle_below_soc_pct = 50
refuse_below_soc_pct = 20
"""


def _scenario(tmp_path, extra, base=None):
    text = (base or (DATA / "small.toml").read_text()) + extra
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("extra, key, words", [
    (COMPUTE.replace("battery_wh = 2000", "battery_wh = -5"), "compute[cluster].battery_wh", "positive"),
    (COMPUTE + "bus_w = -1\n", "compute[cluster].bus_w", "≥ 0"),
    (COMPUTE.replace("accelerators_per_satellite = 4", "accelerators_per_satellite = -2"),
     "compute[cluster].accelerators_per_satellite", "[1, 100000]"),
    ("\n[[compute]]\ngroup = \"cluster\"\nbattery_wh = 1\n", "compute[cluster].battery_wh", "one step's deficit"),
    (COMPUTE.replace('"cluster"', '"shell"'), "compute[0].group", "compute satellites"),
    (COMPUTE.replace('"cluster"', '"clustr"'), "compute[0].group", "did you mean 'cluster'"),
    (COMPUTE.replace("refuse_below_soc_pct = 20", "refuse_below_soc_pct = 60"),
     "compute[cluster].refuse_below_soc_pct", "at most throttle_below_soc_pct"),
    (COMPUTE + "thermal_limit_w = 500\n", "compute[cluster].thermal_limit_w", "more than bus_w"),
    (COMPUTE + "batery_wh = 3\n", "compute[cluster].batery_wh", "unknown key"),
])
def test_bad_compute_sections(tmp_path, extra, key, words):
    with pytest.raises(ScenarioError) as e:
        netemu.load_scenario(_scenario(tmp_path, extra))
    msg = str(e.value)
    assert key in msg and words in msg and "s.toml" in msg and "\n" not in msg, msg


def test_battery_rule_accepts_a_throttling_rule(tmp_path):
    sc = netemu.load_scenario(_scenario(tmp_path, "\n[[compute]]\ngroup = \"cluster\"\nbattery_wh = 1\n"
                                                  "refuse_below_soc_pct = 10\n"))
    assert sc.compute[0].battery_wh == 1.0 and sc.compute[0].accelerators_per_satellite == 8


def test_plan_writes_power_parquet(tmp_path):
    from netemu.plan.planner import make_plan, write_plan
    sc = netemu.load_scenario(_scenario(tmp_path, COMPUTE))
    plan = make_plan(sc, workers=1)
    write_plan(plan, tmp_path / "out")
    p = pd.read_parquet(tmp_path / "out" / "power.parquet")
    assert list(p.columns) == ["t_s", "node", "sunlit", "soc_pct", "power_w", "active_accelerators"]
    assert len(p) == 4 * sc.n_steps and set(p["node"]) == {"c00", "c01", "c02", "c03"}
    assert p["soc_pct"].between(0, 100).all() and (p["active_accelerators"] <= 4).all()
    from netemu.plan.planner import read_plan
    assert read_plan(tmp_path / "out")["power"].equals(p)
    # Without [[compute]] no power file.
    plain = make_plan(netemu.load_scenario(DATA / "small.toml"), workers=1)
    write_plan(plain, tmp_path / "plain")
    assert not (tmp_path / "plain" / "power.parquet").exists()


# --------------------------------------------------------------------------- shipped seasons

from conftest import TOPOLOGIES


def _season(name):
    from netemu.plan.planner import plan_power, satellite_track
    sc = netemu.load_scenario(TOPOLOGIES / f"{name}.toml")
    track = satellite_track(sc)
    p = plan_power(sc, track)
    n = sc.group("cluster").count
    assert len(p) == n * len(track.t_s)
    return sc, track, {k: p[k].to_numpy().reshape(len(track.t_s), n) for k in
                       ("sunlit", "soc_pct", "power_w", "active_accelerators")}


def test_solstice_season_has_eclipses():
    sc, track, p = _season("beijing-orbital-dc-eclipse")
    assert sc.duration_s >= 6000      # at least one 99.8 min orbit
    for i in range(p["sunlit"].shape[1]):
        w = eclipse_windows(track.t_s, p["sunlit"][:, i])
        assert len(w) == 1
        # About 18 min of shadow: the orbit's beta angle is ~58° against the 63.5° limit.
        assert 10 * 60 < w[0][1] - w[0][0] < 25 * 60, w
    # The battery drains in shadow and the throttling rule acts, then the array recharges it.
    assert p["soc_pct"].min() < 60 and (p["active_accelerators"] == 4).any()
    assert (p["soc_pct"][-1] == 100).all()


def test_equinox_season_never_sees_shadow():
    sc, track, p = _season("beijing-orbital-dc-sunlit")
    assert sc.duration_s >= 6000
    assert (p["sunlit"] == 1.0).all()
    assert (p["soc_pct"] == 100).all() and (p["active_accelerators"] == 8).all()
