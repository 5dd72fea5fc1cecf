"""`netemu import hypatia`: Hypatia-style inputs become a scenario that plans the same satellites,
ISL pairs, stations and link length limits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from netemu.cli import main
from netemu.errors import ScenarioError
from netemu.plan.hypatia import import_hypatia, short_station_names
from netemu.plan.planner import make_plan
from netemu.plan.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
TLE = ROOT / "topologies" / "tle" / "starlink_2026-01-31.tle"
STATIONS = [("0", "Tokyo", 35.6895, 139.6917, 40.0), ("1", "Rio de Janeiro", -22.9068, -43.1729, 5.0),
            ("2", "Rio de Janeiro (North)", -22.80, -43.25, 12.0)]
MAX_GSL_M, MAX_ISL_M = 1_089_686.4181956202, 5_016_591.2330984278   # Hypatia's Starlink-550 values


def _tles(n: int) -> list[tuple[str, str, str]]:
    lines = TLE.read_text().splitlines()
    return [(lines[i].strip(), lines[i + 1], lines[i + 2]) for i in range(0, 3 * n, 3)]


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "hyp"
    d.mkdir()
    tles = _tles(6)
    order = [3, 0, 5, 1, 4, 2]          # not in catalogue order: indices are file positions
    tles = [tles[i] for i in order]
    (d / "tles.txt").write_text("2 3\n" + "".join(f"{a}\n{b}\n{c}\n" for a, b, c in tles))
    (d / "isls.txt").write_text("0 1\n1 2\n2 0\n3 4\n4 5\n5 3\n0 3\n")
    (d / "ground_stations.txt").write_text("".join(f'{g},{n},{la},{lo},{el}\n' for g, n, la, lo, el in STATIONS))
    (d / "description.txt").write_text(f"max_gsl_length_m={MAX_GSL_M}\nmax_isl_length_m={MAX_ISL_M}\n")
    return d, tles


def test_import_plans_the_same_inputs(inputs, tmp_path, capsys):
    d, tles = inputs
    out = tmp_path / "out" / "imp.toml"
    out.parent.mkdir()
    assert main(["import", "hypatia", str(d), "-o", str(out), "--duration-s", "21600", "--step-s", "60"]) == 0
    assert "3 ground-station names changed" in capsys.readouterr().out
    sc = load_scenario(out)
    assert not sc.warnings
    # satellites: index i of the inputs is the node named by line i's catalogue number
    by_index = [f"s{int(l1[2:7])}" for _, l1, _ in tles]
    assert sorted(sc.satellites[0].records, key=lambda r: r.norad_id) == list(sc.satellites[0].records)
    assert {f"s{r.norad_id}" for r in sc.satellites[0].records} == set(by_index)
    # ISLs: the same pairs, by index
    pairs = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (0, 3)]
    (isl,) = sc.isls
    assert isl.pattern == "explicit" and isl.pairs == tuple((by_index[a], by_index[b]) for a, b in pairs)
    assert isl.max_range_km == pytest.approx(MAX_ISL_M / 1e3) and isl.grazing_altitude_km == 80.0
    # stations: the same places, names shortened, the mapping beside the scenario
    names = [s.name for s in sc.ground_stations]
    assert names == ["g-tokyo", "g-rio-de-j", "g-rio-de-2"]
    assert [(s.lat_deg, s.lon_deg, s.alt_m) for s in sc.ground_stations] == [x[2:] for x in STATIONS]
    with open(out.with_name("imp-station-names.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["hypatia_id"], r["hypatia_name"], r["name"]) for r in rows] == \
        [(g, n, m) for (g, n, *_), m in zip(STATIONS, names)]
    assert sc.gsl.policy == "all" and sc.gsl.max_range_km == pytest.approx(MAX_GSL_M / 1e3)
    assert sc.epoch.strftime("%y%j") == tles[0][1][18:23]        # the first TLE's epoch day

    # the plan: ISLs exactly the listed pairs within range and line of sight; GSLs every
    # satellite within max_gsl_length_m of a station (by hand from the positions)
    plan = make_plan(sc, workers=1)
    L = plan.schedule.links
    xyz = plan.track.xyz_km
    idx = {n: i for i, n in enumerate(plan.track.names)}
    want_pairs = {tuple(sorted(p)) for p in isl.pairs}
    isl_rows = L[L["kind"] == "isl"]
    assert {tuple(sorted((a, b))) for a, b in zip(isl_rows["a"], isl_rows["b"])} <= want_pairs
    n_isl = 0
    for k in range(0, len(plan.track.t_s), 5):
        got = {tuple(sorted((a, b))) for a, b in zip(isl_rows[isl_rows["step"] == k]["a"],
                                                     isl_rows[isl_rows["step"] == k]["b"])}
        hand = set()
        for a, b in want_pairs:
            p, q = xyz[k, idx[a]], xyz[k, idx[b]]
            t = np.clip(-p @ (q - p) / ((q - p) @ (q - p)), 0, 1)
            if np.linalg.norm(p - q) <= MAX_ISL_M / 1e3 and np.linalg.norm(p + t * (q - p)) >= 6378.137 + 80:
                hand.add((a, b))
        assert got == hand, k
        n_isl += len(hand)
    from skyfield.api import wgs84
    gsl_rows = L[L["kind"] == "gsl"]
    n_gsl = 0
    for j, st in enumerate(sc.ground_stations):
        s_xyz = wgs84.latlon(st.lat_deg, st.lon_deg, elevation_m=st.alt_m).itrs_xyz.km
        d_km = np.linalg.norm(xyz - s_xyz, axis=2)                 # [T, N]
        rows = gsl_rows[(gsl_rows["a"] == st.name) | (gsl_rows["b"] == st.name)]
        got = {(int(k), a if b == st.name else b) for k, a, b in zip(rows["step"], rows["a"], rows["b"])}
        hand = {(k, n) for n, i in idx.items() for k in np.nonzero(d_km[:, i] <= MAX_GSL_M / 1e3)[0]}
        assert got == hand, st.name
        n_gsl += len(got)
    assert n_gsl > 0 and n_isl > 0


def test_short_names():
    assert short_station_names(["São Paulo", "Sao Paulo", "Sao-Paulo", "123", "Ho Chi Minh City"]) == \
        ["g-s-o-paul", "g-sao-paul", "g-sao-pa-2", "g-123", "g-ho-chi-m"]
    assert all(len(n) <= 10 for n in short_station_names(["x" * 40] * 12))
    assert len(set(short_station_names(["x" * 40] * 12))) == 12


@pytest.mark.parametrize("fname, text, words", [
    ("tles.txt", None, "header says"),
    ("isls.txt", "0 9\n", "satellite indices in [0, 5]"),
    ("isls.txt", "0 1\n1 0\n", "each satellite pair once"),
    ("ground_stations.txt", "0,A,95,10,0\n1,B,10,10,0\n", "latitude_deg"),
    ("description.txt", "max_gsl_length_m=1000\n", "max_isl_length_m"),
])
def test_bad_inputs_one_error(inputs, tmp_path, fname, text, words):
    d, tles = inputs
    if text is None:
        text = "2 4\n" + (d / "tles.txt").read_text().split("\n", 1)[1]
    (d / fname).write_text(text)
    with pytest.raises(ScenarioError) as e:
        import_hypatia(d, tmp_path / "x.toml")
    assert words in str(e.value) and fname in str(e.value)
    assert not (tmp_path / "x.toml").exists()


def test_refuses_to_overwrite(inputs, tmp_path):
    d, _ = inputs
    import_hypatia(d, tmp_path / "x.toml")
    with pytest.raises(ScenarioError, match="exist"):
        import_hypatia(d, tmp_path / "x.toml")
    import_hypatia(d, tmp_path / "x.toml", overwrite=True)
