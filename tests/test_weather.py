"""Rain on ground links against published values (ITU-R P.838-3 Table 5) and hand computations
(ITU-R P.618-13 § 2.2.1.1), and the link budget's rate steps."""

import math

import numpy as np
import pytest

from netemu.plan.weather import (budget_rate_mbps, rain_coefficients, slant_path_rain_attenuation_db,
                                 specific_attenuation_db_per_km)


# ITU-R P.838-3 Table 5 (published k and α at selected frequencies): f, kH, αH, kV, αV
TABLE5 = [(1, 0.0000259, 0.9691, 0.0000308, 0.8592),
          (10, 0.01217, 1.2571, 0.01129, 1.2156),
          (12, 0.02386, 1.1825, 0.02455, 1.1216),
          (20, 0.09164, 1.0568, 0.09611, 0.9847),
          (30, 0.2403, 0.9485, 0.2291, 0.9129),
          (100, 1.3671, 0.6815, 1.3680, 0.6765)]


@pytest.mark.parametrize("f, kh, ah, kv, av", TABLE5)
def test_p838_regression_matches_the_published_table(f, kh, ah, kv, av):
    k, a = rain_coefficients(f, "horizontal", 0.0)
    assert float(k) == pytest.approx(kh, rel=5e-4) and float(a) == pytest.approx(ah, abs=6e-5)
    k, a = rain_coefficients(f, "vertical", 0.0)
    assert float(k) == pytest.approx(kv, rel=5e-4) and float(a) == pytest.approx(av, abs=6e-5)


def test_circular_polarisation_combines_h_and_v_by_eq_4_5():
    # τ = 45°: cos 2τ = 0, so k = (kH + kV)/2 and α = (kH αH + kV αV)/(2k) at any elevation
    k, a = rain_coefficients(20.0, "circular", 30.0)
    assert float(k) == pytest.approx((0.09164 + 0.09611) / 2, rel=5e-4)               # 0.093875
    assert float(a) == pytest.approx((0.09164 * 1.0568 + 0.09611 * 0.9847) / (2 * 0.093875), abs=1e-4)  # 1.01989
    assert float(specific_attenuation_db_per_km(25.0, 20.0, "circular", 30.0)) == pytest.approx(
        0.093875 * 25.0 ** 1.0198917, rel=5e-4)                                         # 2.50206 dB/km


def test_slant_path_attenuation_by_hand_tropical_station():
    """f = 20 GHz, circular, R = 25 mm/h, θ = 30°, φ = 18.3° (Sanya), h_s = 0, h_R = 5 km.

    k = 0.093875, α = 1.019892 (Table 5 values combined, τ = 45°);  γ_R = k R^α = 2.502058 dB/km
    L_s = 5 / sin 30° = 10.0 km;  L_G = 10 cos 30° = 8.660254 km
    r = 1 / (1 + 0.78 √(8.660254 · 2.502058 / 20) − 0.38 (1 − e^(−17.32051))) = 0.698381
    ζ = atan(5 / (8.660254 · 0.698381)) = 39.5805° > θ  ⇒  L_R = 8.660254 · 0.698381 / cos 30° = 6.983809 km
    χ = 36 − 18.3 = 17.7°
    v = 1 / (1 + √(sin 30°) (31 (1 − e^(−30/18.7)) √(6.983809 · 2.502058) / 400 − 0.45)) = 1.156301
    L_E = 6.983809 · 1.156301 = 8.075387 km;  A = 2.502058 · 8.075387 = 20.2051 dB
    """
    a = float(slant_path_rain_attenuation_db(25.0, 20.0, 30.0, 18.3, station_alt_km=0.0, rain_height_km=5.0,
                                             polarization="circular"))
    assert a == pytest.approx(20.2051, abs=0.005)


def test_slant_path_attenuation_by_hand_vertical_branch_high_latitude():
    """f = 12 GHz, horizontal, R = 5 mm/h, θ = 60°, φ = 52.97° (Mohe), h_s = 0.3 km, h_R = 3 km.

    cos²θ cos 2τ = 0.25;  k = (0.02386 + 0.02455 + (0.02386 − 0.02455)·0.25)/2 = 0.02411875
    α = (0.02386·1.1825 + 0.02455·1.1216 + (0.02386·1.1825 − 0.02455·1.1216)·0.25)/(2k) = 1.159254
    γ_R = 0.02411875 · 5^1.159254 = 0.155826 dB/km
    L_s = 2.7 / sin 60° = 3.117691 km;  L_G = 1.558846 km
    r = 1 / (1 + 0.78 √(1.558846 · 0.155826 / 12) − 0.38 (1 − e^(−3.117691))) = 1.337268
    ζ = atan(2.7 / (1.558846 · 1.337268)) = 52.3293° ≤ θ  ⇒  L_R = 2.7 / sin 60° = 3.117691 km
    χ = 0 (|φ| ≥ 36°)
    v = 1 / (1 + √(sin 60°) (31 (1 − e^(−60)) √(3.117691 · 0.155826) / 144 − 0.45)) = 1.387223
    L_E = 4.324932 km;  A = 0.155826 · 4.324932 = 0.67393 dB
    """
    a = float(slant_path_rain_attenuation_db(5.0, 12.0, 60.0, 52.97, station_alt_km=0.3, rain_height_km=3.0,
                                             polarization="horizontal"))
    assert a == pytest.approx(0.67393, abs=0.0005)


def test_no_rain_or_station_above_rain_height_is_zero_and_more_rain_is_worse():
    assert float(slant_path_rain_attenuation_db(0.0, 20.0, 30.0, 10.0)) == 0.0
    assert float(slant_path_rain_attenuation_db(50.0, 20.0, 30.0, 10.0, station_alt_km=5.5, rain_height_km=5.0)) == 0.0
    a = slant_path_rain_attenuation_db(np.array([1.0, 5.0, 25.0, 100.0]), 20.0, 40.0, 10.0)
    assert (np.diff(a) > 0).all()
    # lower elevation: longer path through the rain
    assert float(slant_path_rain_attenuation_db(25.0, 20.0, 20.0, 10.0)) > float(
        slant_path_rain_attenuation_db(25.0, 20.0, 60.0, 10.0))


def test_budget_picks_the_fastest_step_the_margin_meets_or_an_outage():
    steps = [(0.0, 100.0), (3.0, 500.0), (6.0, 1000.0)]
    # clear-sky margin 10 dB: A = 2 → 8 dB (1000); A = 5 → 5 dB (500); A = 9 → 1 dB (100); A = 11 → −1 dB (outage)
    got = budget_rate_mbps(np.array([0.0, 2.0, 4.0, 5.0, 9.0, 10.0, 11.0]), 10.0, steps)
    assert got.tolist() == [1000.0, 1000.0, 1000.0, 500.0, 100.0, 100.0, 0.0]
    assert math.isclose(float(budget_rate_mbps(20.2051, 25.0, steps)), 500.0)   # 4.79 dB margin left: ≥ 3 dB


# --------------------------------------------------------------------------- in the schedule

import netemu  # noqa: E402
from conftest import DATA, write_scenario  # noqa: E402
from netemu.errors import ScenarioError  # noqa: E402
from netemu.plan.orbits import station_ecef_km  # noqa: E402
from netemu.plan.planner import satellite_track  # noqa: E402
from netemu.plan.topology import build_schedule, visible_pairs  # noqa: E402
from netemu.plan.weather import rain_at, stochastic_rain_mm_per_h  # noqa: E402

SMALL = (DATA / "small.toml").read_text()
RADIO = "[gsl]\nfrequency_ghz = 20\nclear_sky_margin_db = 25\nrate_steps = [[0, 500], [5, 2000], [10, 5000]]\n"


def _rainy(tmp_path, rain: str, csv_text="t_s,rain_mm_per_h\n300,25\n600,150\n900,0\n"):
    (tmp_path / "rain.csv").write_text(csv_text)
    return write_scenario(tmp_path, SMALL.replace("[gsl]\n", RADIO) + "\n" + rain, "r.toml")


def test_rain_sets_ground_link_rates_and_outages(tmp_path):
    sc = netemu.load_scenario(_rainy(tmp_path, '[[rain]]\nstation = "g-sanya"\nfile = "rain.csv"\n'))
    st = sc.ground_stations
    xyz, upv = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    track = satellite_track(sc)
    L = build_schedule(sc, track, xyz, upv).links
    sanya = (L["b"] == "g-sanya").to_numpy()
    t = L["t_s"].to_numpy()
    rate = L["rate_mbps"].to_numpy()
    # dry (before 300 s, from 900 s): the clear-sky margin of 25 dB meets the top step, capped at rate_mbps
    assert sanya[t < 300].any() and (rate[sanya & ((t < 300) | (t >= 900))] == 5000).all()
    # 150 mm/h at 20 GHz: far beyond a 25 dB margin: out, and the links table says why
    storm = sanya & (t >= 600) & (t < 900)
    assert storm.any() and (rate[storm] == 0).all() and not L["up"][storm].any()
    assert (L["down_reason"][storm] == "rain").all()
    # 25 mm/h: each link's rate is what its own elevation's attenuation leaves (elevations from
    # the visibility code), and other stations never see rain
    wet = np.nonzero(sanya & (t >= 300) & (t < 600))[0]
    assert len(wet)
    vis, el = visible_pairs(track, xyz, upv, np.arange(len(track.names)), sc.gsl)
    names = list(track.names)
    el_of = {(int(k), names[a], int(b)): e for k, a, b, e in zip(vis.step, vis.a, vis.b, el)}
    for i in wet:
        e = el_of[(int(L["step"].iat[i]), str(L["a"].iat[i]), 1)]
        att = float(slant_path_rain_attenuation_db(25.0, 20.0, e, 18.3, 0.0, 5.0, "circular"))
        assert rate[i] == float(budget_rate_mbps(att, 25.0, [(0, 500), (5, 2000), (10, 5000)]))
    assert set(rate[wet]) - {0.0, 500.0, 2000.0, 5000.0} == set() and (rate[wet] < 5000).all()
    assert (rate[~sanya & (L["kind"] == "gsl").to_numpy()] == 5000).all()


def test_stochastic_rain_repeats_with_its_seed_and_has_its_wet_share():
    t = np.arange(0.0, 2e6, 10.0)
    a = stochastic_rain_mm_per_h(t, 7, 3600.0, 600.0, 10.0, 1.0)
    assert np.array_equal(a, stochastic_rain_mm_per_h(t, 7, 3600.0, 600.0, 10.0, 1.0))
    assert not np.array_equal(a, stochastic_rain_mm_per_h(t, 8, 3600.0, 600.0, 10.0, 1.0))
    # wet share → 600 / 4200 = 0.143 over ~475 cycles (sd of the share about 0.01)
    assert (a > 0).mean() == pytest.approx(600 / 4200, abs=0.03)
    assert np.median(a[a > 0]) == pytest.approx(10.0, rel=0.3)


@pytest.mark.parametrize("rain, csv_text, key, words", [
    ('[[rain]]\nstation = "g-sanyo"\nfile = "rain.csv"\n', None, "rain[0].station", "did you mean 'g-sanya'"),
    ('[[rain]]\nstation = "g-sanya"\n', None, "rain[0].file", "exactly one of file"),
    ('[[rain]]\nstation = "g-sanya"\nfile = "rain.csv"\n', "t_s,rain_mm_per_h\n0,5\n0,6\n", "rain[0].file", "row 2"),
    ('[[rain]]\nstation = "g-sanya"\nfile = "rain.csv"\n', "0,-5\n", "rain[0].file", "row 1"),
    ('[[rain]]\nstation = "g-sanya"\nfile = "nothing.csv"\n', None, "rain[0].file", "readable CSV"),
    ('[[rain]]\nstation = "g-sanya"\nseed = 1\n[[rain]]\nstation = "g-sanya"\nseed = 2\n', None,
     "rain[1].station", "one [[rain]] per station"),
])
def test_bad_rain_gives_one_clear_error(tmp_path, rain, csv_text, key, words):
    p = _rainy(tmp_path, rain, csv_text or "t_s,rain_mm_per_h\n0,1\n")
    with pytest.raises(ScenarioError) as e:
        netemu.load_scenario(p)
    assert e.value.key == key and words in e.value.message and "r.toml" in str(e.value), str(e.value)


def test_rain_needs_the_radio_and_steps_must_be_ordered(tmp_path):
    p = write_scenario(tmp_path, SMALL + '\n[[rain]]\nstation = "g-sanya"\nseed = 1\n', "n.toml")
    with pytest.raises(ScenarioError, match="frequency_ghz"):
        netemu.load_scenario(p)
    p = write_scenario(tmp_path, SMALL.replace("[gsl]\n", "[gsl]\nrate_steps = [[5, 10], [1, 20]]\n"), "o.toml")
    with pytest.raises(ScenarioError, match="increasing order"):
        netemu.load_scenario(p)


def test_series_is_held_and_dry_before_its_first_sample():
    from netemu.plan.scenario import Rain
    r = Rain(station="x", t_s=(10.0, 20.0), rain_mm_per_h=(5.0, 7.0))
    assert rain_at(r, np.array([0.0, 9.9, 10.0, 15.0, 20.0, 99.0])).tolist() == [0, 0, 5, 5, 7, 7]


# --------------------------------------------------------------------------- clouds on optical links


def test_cloud_blocks_exactly_its_stations_optical_links_while_blocked(tmp_path):
    (tmp_path / "cloud.csv").write_text("t_s,cloud_blocked\n200,1\n500,0\n800,1\n")
    p = write_scenario(tmp_path, SMALL + '\n[[clouds]]\nstation = "g-paris"\nfile = "cloud.csv"\n', "c.toml")
    sc = netemu.load_scenario(p)
    base = netemu.load_scenario(DATA / "small.toml")
    st = sc.ground_stations
    xyz, upv = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    track = satellite_track(sc)
    L = build_schedule(sc, track, xyz, upv).links
    B = build_schedule(base, track, xyz, upv).links
    t = L["t_s"].to_numpy()
    paris = (L["b"] == "g-paris").to_numpy()
    blocked = paris & (((t >= 200) & (t < 500)) | (t >= 800))
    assert blocked.any() and paris[~blocked].any()
    assert not L["up"][blocked].any() and (L["down_reason"][blocked] == "cloud").all()
    assert (L["up"][~blocked].to_numpy() == B["up"][~blocked].to_numpy()).all()


def test_clouds_need_optical_links_and_a_0_1_series(tmp_path):
    (tmp_path / "cloud.csv").write_text("0,0.5\n")
    p = write_scenario(tmp_path, SMALL + '\n[[clouds]]\nstation = "g-paris"\nfile = "cloud.csv"\n', "c.toml")
    with pytest.raises(ScenarioError, match="cloud_blocked values 0"):
        netemu.load_scenario(p)
    p = _rainy(tmp_path, '[[clouds]]\nstation = "g-paris"\nfile = "rain.csv"\n')
    with pytest.raises(ScenarioError, match="optical"):
        netemu.load_scenario(p)
