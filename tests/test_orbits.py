"""Orbits against skyfield's own EarthSatellite/wgs84 computations."""

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from sgp4.api import Satrec
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs

from netemu.errors import TLEError
from netemu.plan.orbits import (elevation_deg, formation_satrecs, ltan_raan_deg, parse_tle_text, propagate,
                           sso_inclination_deg, station_ecef_km, sun_right_ascension_deg, walker_satrecs)
from netemu.plan.planner import satellite_track
from conftest import TOPOLOGIES

TS = load.timescale(builtin=True)
TLE_FILE = TOPOLOGIES / "tle" / "starlink_2026-01-31.tle"


def _skyfield_itrs_km(satrec, epoch, t_s):
    t = TS.utc(epoch.year, epoch.month, epoch.day, epoch.hour, epoch.minute, epoch.second + t_s)
    return EarthSatellite.from_satrec(satrec, TS).at(t).frame_xyz(itrs).km.T


def test_tle_positions_match_skyfield():
    recs = parse_tle_text(TLE_FILE.read_text())
    rng = np.random.default_rng(1)
    chosen = [recs[i] for i in rng.choice(len(recs), 25, replace=False)]
    sats = [Satrec.twoline2rv(r.line1, r.line2) for r in chosen]
    epoch = datetime(2026, 1, 31, 0, 30, tzinfo=timezone.utc)
    t_s = np.linspace(0, 5400, 37)
    track = propagate(sats, [r.name for r in chosen], epoch, t_s)
    for i, s in enumerate(sats):
        ref = _skyfield_itrs_km(s, epoch, t_s)
        ok = track.ok[:, i]
        assert ok.sum() > 30
        assert np.abs(track.xyz_km[ok, i] - ref[ok]).max() < 1e-3  # 1 m


def test_walker_positions_match_skyfield(small_scenario):
    track = satellite_track(small_scenario, np.array([0.0, 600.0, 1200.0]))
    shell = small_scenario.group("shell")
    sats = walker_satrecs(shell, small_scenario.epoch)
    for i in (0, 13, 143):
        ref = _skyfield_itrs_km(sats[i], small_scenario.epoch, track.t_s)
        assert np.abs(track.xyz_km[:, i] - ref).max() < 1e-3


def test_walker_geometry(small_scenario):
    shell = small_scenario.group("shell")
    track = satellite_track(small_scenario, np.array([0.0]))
    r = np.linalg.norm(track.xyz_km[0, :144], axis=1)
    # Altitude above the equatorial radius: the orbit radius is 6928 km ± SGP4's short-period terms.
    assert np.all(np.abs(r - (6378.137 + 550)) < 15)
    inc = [math.degrees(s.inclo) for s in walker_satrecs(shell, small_scenario.epoch)]
    assert np.allclose(inc, 53.0)
    raan = sorted({round(math.degrees(s.nodeo), 6) for s in walker_satrecs(shell, small_scenario.epoch)})
    assert len(raan) == 12 and np.allclose(np.diff(raan), 30.0)


def test_sso_inclination_matches_domain_facts():
    # shared domain facts §3.4: 550 km → 97.6°, 750 km → 98.4°, 1400 km → 101.4°
    assert sso_inclination_deg(550) == pytest.approx(97.6, abs=0.05)
    assert sso_inclination_deg(750) == pytest.approx(98.4, abs=0.05)
    assert sso_inclination_deg(1400) == pytest.approx(101.4, abs=0.05)


def test_sun_right_ascension_against_skyfield_free_reference():
    # At the March equinox the Sun's RA is ~0°; at the June solstice ~90°.
    assert min(sun_right_ascension_deg(datetime(2026, 3, 20, 14, 46, tzinfo=timezone.utc)) % 360,
               360 - sun_right_ascension_deg(datetime(2026, 3, 20, 14, 46, tzinfo=timezone.utc)) % 360) < 0.05
    assert sun_right_ascension_deg(datetime(2026, 6, 21, 8, 24, tzinfo=timezone.utc)) == pytest.approx(90, abs=0.05)
    # dawn-dusk: ascending node 6 hours (90°) east of the Sun for LTAN 18:00
    e = datetime(2026, 3, 20, 14, 46, tzinfo=timezone.utc)
    assert (ltan_raan_deg(e, 18.0) - sun_right_ascension_deg(e)) % 360 == pytest.approx(90)


def test_formation_keeps_its_spacing(small_scenario):
    f = small_scenario.group("cluster")
    sats = formation_satrecs(f, small_scenario.epoch)
    t_s = np.arange(0, 6000, 20.0)
    track = propagate(sats, [f"c{i}" for i in range(4)], small_scenario.epoch, t_s)
    x = track.xyz_km
    d = np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)[:, *np.triu_indices(4, 1)]
    # e/i separation: never closer than the 2 km spacing (minus SGP4 short-period noise), never far
    assert d.min() > 1.9
    assert d.max() < 10


def test_station_positions_and_elevation_match_skyfield():
    lat, lon, alt = np.array([40.45, -33.9, 0.0]), np.array([116.85, 18.4, -78.0]), np.array([100.0, 0.0, 2850.0])
    xyz, up = station_ecef_km(lat, lon, alt)
    recs = parse_tle_text(TLE_FILE.read_text())[:200]
    sats = [Satrec.twoline2rv(r.line1, r.line2) for r in recs]
    epoch = datetime(2026, 1, 31, 0, 30, tzinfo=timezone.utc)
    t_s = np.array([0.0, 1800.0])
    track = propagate(sats, [r.name for r in recs], epoch, t_s)
    el = elevation_deg(xyz, up, track.xyz_km)     # [T, G, N]
    t = TS.utc(2026, 1, 31, 0, 30, t_s)
    for g in range(3):
        site = wgs84.latlon(lat[g], lon[g], elevation_m=alt[g])
        assert np.allclose(site.itrs_xyz.km, xyz[g], atol=1e-6)
        for i in (0, 57, 199):
            ref = (EarthSatellite.from_satrec(sats[i], TS) - site).at(t).altaz()[0].degrees
            assert np.abs(el[:, g, i] - ref).max() < 0.01


def test_bad_tle_checksum_is_reported_with_line():
    lines = TLE_FILE.read_text().splitlines()[:6]
    bad = lines[1][:68] + str((int(lines[1][68]) + 1) % 10)
    with pytest.raises(TLEError, match=r"line 2: bad checksum: expected \d in column 69"):
        parse_tle_text("\n".join([lines[0], bad] + lines[2:]), "x.tle")


def test_truncated_tle_is_reported():
    lines = TLE_FILE.read_text().splitlines()[:5]
    with pytest.raises(TLEError, match="3-line format"):
        parse_tle_text("\n".join(lines), "x.tle")


def _with_checksum(line68: str) -> str:
    return line68 + str(sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line68) % 10)


def test_tle_line_must_be_exactly_69_characters():
    lines = TLE_FILE.read_text().splitlines()[:3]
    # Two extra characters inserted in line 2 with a digit in column 69 that passes the checksum:
    # every field after the insertion is shifted.
    shifted = lines[2][:8] + "  " + lines[2][8:66]
    shifted = _with_checksum(shifted[:68]) + "99"
    with pytest.raises(TLEError, match=r"line 3: expected TLE line 2 \(exactly 69 characters.*found 71 characters"):
        parse_tle_text("\n".join([lines[0], lines[1], shifted]), "x.tle")
    with pytest.raises(TLEError, match=r"line 2: .*found 70 characters"):
        parse_tle_text("\n".join([lines[0], lines[1] + "7", lines[2]]), "x.tle")
    # trailing whitespace is not part of the line
    assert len(parse_tle_text("\n".join([lines[0], lines[1] + "   ", lines[2] + "\t"]), "x.tle")) == 1


def test_empty_tle_file_says_empty():
    for text in ("", "\n\n  \n"):
        with pytest.raises(TLEError, match="the file is empty"):
            parse_tle_text(text, "x.tle")
