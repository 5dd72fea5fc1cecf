"""Scenario loading: shipped scenarios load; every kind of bad input gives one clear ScenarioError."""

import subprocess
import sys

import pytest

import netemu
from netemu.errors import ScenarioError, TLEError
from conftest import DATA, ROOT, TOPOLOGIES, write_scenario

SHIPPED = ["beijing-orbital-dc", "starlink-s1", "kuiper-k1", "telesat-t1", "starlink-tle",
           "beijing-orbital-dc-eclipse", "beijing-orbital-dc-sunlit", "beijing-orbital-dc-faults"]

BASE = """
[scenario]
epoch = 2026-03-20T00:00:00Z
duration_s = 60
step_s = 10

[[satellites]]
name = "shell"
source = "walker"
prefix = "w"
altitude_km = 550
inclination_deg = 53
planes = 4
sats_per_plane = 4

[[ground_stations]]
name = "g-a"
lat_deg = 10
lon_deg = 20

[[ground_stations]]
name = "g-b"
lat_deg = 11
lon_deg = 21

[gsl]
min_elevation_deg = 25
rate_mbps = 1000
"""


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_load(name):
    sc = netemu.load_scenario(TOPOLOGIES / f"{name}.toml")
    assert sc.name == name
    assert len(sc.endpoints) >= 2
    for g in sc.satellites:
        assert g.count > 0


def test_default_scenario_is_the_orbital_data_centre():
    sc = netemu.load_scenario(TOPOLOGIES / "beijing-orbital-dc.toml")
    cluster = sc.group("cluster")
    assert cluster.compute and cluster.count >= 12
    assert 700 <= cluster.altitude_km <= 800
    assert cluster.inclination_deg == pytest.approx(98.4, abs=0.1)       # sun-synchronous
    assert {"cluster-mesh", "plus-grid", "nearest-k"} <= {m.pattern for m in sc.isls}
    names = {st.name for st in sc.ground_stations}
    assert {"g-beijing", "g-kashgar", "g-sanya", "g-jiamusi"} <= names
    assert all(10_000 <= m.rate_mbps for m in sc.isls)
    assert 10_000 <= sc.gsl.rate_mbps <= 100_000
    # endpoints default: every ground station and every compute satellite
    assert len(sc.endpoints) == len(names) + cluster.count


def test_hundred_city_scenarios():
    for name, planes, per_plane, alt, inc, elev in [("starlink-s1", 72, 22, 550, 53, 25),
                                                    ("kuiper-k1", 34, 34, 630, 51.9, 30),
                                                    ("telesat-t1", 27, 13, 1015, 98.98, 10)]:
        sc = netemu.load_scenario(TOPOLOGIES / f"{name}.toml")
        (shell,) = sc.satellites
        assert (shell.planes, shell.sats_per_plane, shell.altitude_km, shell.inclination_deg) == (planes, per_plane, alt, inc)
        assert sc.gsl.min_elevation_deg == elev
        assert len(sc.ground_stations) == 100


def test_tle_scenario_selects_one_shell():
    sc = netemu.load_scenario(TOPOLOGIES / "starlink-tle.toml")
    (g,) = sc.satellites
    assert 1000 < g.count < 2500
    assert all(52.8 <= r.inclination_deg <= 53.3 and 530 <= r.altitude_km <= 565 for r in g.records)


def test_endpoints_by_group_and_node(tmp_path):
    p = write_scenario(tmp_path, BASE + '\n[endpoints]\nnodes = ["g-a", "shell"]\n')
    sc = netemu.load_scenario(p)
    assert sc.endpoints[0] == "g-a" and len(sc.endpoints) == 17


def _error(tmp_path, text, **files) -> ScenarioError:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    p = write_scenario(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        netemu.load_scenario(p)
    assert str(p) in str(e.value)
    return e.value


@pytest.mark.parametrize("edit, key, expected", [
    (("lat_deg = 10", "lat_deg = 95"), "ground_stations[0].lat_deg", r"\[-90, 90\]"),
    (("altitude_km = 550", "altitude_km = -5"), "satellites[shell].altitude_km", r"\[100, 50000\]"),
    (("step_s = 10", "step_s = 0"), "scenario.step_s", r"\(0, 86400\]"),
    (("planes = 4", "planes = 4.5"), "satellites[shell].planes", "an integer"),
    (("source = \"walker\"", "source = \"keplerian\""), "satellites[shell].source", "one of walker"),
    (("prefix = \"w\"", "prefix = \"Walker\""), "satellites[shell].prefix", "node-name prefix"),
    (("name = \"g-a\"", "name = \"g-a-very-long-name\""), "ground_stations[0].name", "at most 10 characters"),
    (("name = \"g-b\"", "name = \"g-a\""), "ground_stations[1]", "already used"),
    (("epoch = 2026-03-20T00:00:00Z", "epoch = 2026-03-20T00:00:00"), "scenario.epoch", "UTC date-time"),
    (("min_elevation_deg = 25", "min_elevation_deg = 25\nmax_range_km = 1000"), "gsl.min_elevation_deg", "exactly one"),
    (("rate_mbps = 1000", "rate_mbps = 1000\npolicy = \"best\""), "gsl.policy", "one of nearest"),
])
def test_out_of_range_and_wrong_values(tmp_path, edit, key, expected):
    e = _error(tmp_path, BASE.replace(*edit, 1))
    assert e.key == key
    assert __import__("re").search(expected, e.message), e.message


def test_unknown_key(tmp_path):
    e = _error(tmp_path, BASE.replace("planes = 4", "planes = 4\nplanez = 4"))
    assert e.key == "satellites[shell].planez" and "unknown key" in e.message


def test_unknown_table(tmp_path):
    e = _error(tmp_path, BASE + "\n[weather]\nrain = true\n")
    assert e.key == "weather" and "unknown key" in e.message


def test_malformed_toml(tmp_path):
    e = _error(tmp_path, BASE + "\n[isl\n")
    assert "malformed TOML" in e.message


def test_missing_tle_file(tmp_path):
    e = _error(tmp_path, BASE + '\n[[satellites]]\nname = "t"\nsource = "tle"\nprefix = "t"\nfile = "nope.tle"\n')
    assert e.key == "satellites[t].file" and "does not exist" in e.message


def test_tle_with_bad_checksum(tmp_path):
    lines = (TOPOLOGIES / "tle" / "starlink_2026-01-31.tle").read_text().splitlines()[:6]
    lines[4] = lines[4][:68] + str((int(lines[4][68]) + 3) % 10)
    e = _error(tmp_path, BASE + '\n[[satellites]]\nname = "t"\nsource = "tle"\nprefix = "t"\nfile = "x.tle"\n',
               **{"x.tle": "\n".join(lines) + "\n"})
    assert isinstance(e, TLEError)
    assert e.key == "satellites[t].file"
    assert "x.tle line 5: bad checksum: expected" in e.message


def test_isl_references_unknown_group(tmp_path):
    e = _error(tmp_path, BASE + '\n[[isl]]\ngroups = ["nope"]\npattern = "plus-grid"\nrate_mbps = 1\n')
    assert e.key == "isl[0].groups"


def test_plus_grid_needs_a_walker_shell(tmp_path):
    text = BASE + ('\n[[satellites]]\nname = "f"\nsource = "formation"\nprefix = "f"\ncount = 2\naltitude_km = 600\n'
                   'inclination_deg = 97\nalong_track_km = 1\n[[isl]]\ngroups = ["f"]\npattern = "plus-grid"\nrate_mbps = 1\n')
    assert _error(tmp_path, text).key == "isl[0].pattern"


def test_explicit_pairs_file(tmp_path):
    text = BASE + '\n[[isl]]\ngroups = ["shell"]\npattern = "explicit"\npairs_file = "p.csv"\nrate_mbps = 1\n'
    (tmp_path / "p.csv").write_text("a,b\nw00-00,w01-00\nw00-01,w00-02\n")
    sc = netemu.load_scenario(write_scenario(tmp_path, text))
    assert sc.isls[0].pairs == (("w00-00", "w01-00"), ("w00-01", "w00-02"))
    (tmp_path / "p.csv").write_text("a,b\nw00-00,g-a\n")
    e = _error(tmp_path, text)
    assert e.key == "isl[0].pairs_file" and "row 1" in e.message


def test_station_csv_errors_name_the_line(tmp_path):
    e = _error(tmp_path, BASE.replace("step_s = 10", 'step_s = 10\nground_stations_file = "st.csv"'),
               **{"st.csv": "# comment\nname,lat_deg,lon_deg\ng-x,1,2\ng-y,95,2\n"})
    assert e.key == "scenario.ground_stations_file" and "st.csv line 4" in e.message


def test_unreadable_scenario(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        netemu.load_scenario(tmp_path / "missing.toml")


_TLE_LINES = (TOPOLOGIES / "tle" / "starlink_2026-01-31.tle").read_text().splitlines()[:3]
_TLE_GROUP = '\n[[satellites]]\nname = "t"\nsource = "tle"\nprefix = "t"\nfile = "x.tle"\n'


@pytest.mark.parametrize("text, tle", [
    (BASE.replace("lat_deg = 10", "lat_deg = 95"), None),
    (BASE.replace("planes = 4", "planes = 4\nplanez = 4"), None),
    (BASE + "\n[isl\n", None),
    (BASE.replace("altitude_km = 550", "altitude_km = 1e9"), None),
    (BASE + _TLE_GROUP, None),
    (BASE + _TLE_GROUP, "\n".join(_TLE_LINES[:2] + [_TLE_LINES[2][:68] + "0" if _TLE_LINES[2][68] != "0" else "1"])),
])
def test_cli_bad_input_exit_code_2_without_traceback(tmp_path, text, tle):
    if tle is not None:
        (tmp_path / "x.tle").write_text(tle + "\n")
    p = write_scenario(tmp_path, text)
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(p), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(p) in r.stderr
    assert not (tmp_path / "out").exists()  # nothing half-built


def test_cli_bad_flag_exit_code_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(DATA / "small.toml"), "-o", str(tmp_path),
                        "--workers", "zero"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--workers" in r.stderr


def _tle_at(epoch_yyddd: str) -> str:
    """The first TLE of the shipped snapshot with its epoch (YYDDD.DDDDDDDD) replaced."""
    name, l1, l2 = _TLE_LINES
    l1 = l1[:18] + epoch_yyddd + l1[32:68]
    l1 += str(sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in l1) % 10)
    return "\n".join([name, l1, l2]) + "\n"


def test_empty_tle_file_is_reported_as_empty(tmp_path):
    e = _error(tmp_path, BASE + _TLE_GROUP, **{"x.tle": "\n"})
    assert e.key == "satellites[t].file" and "x.tle: the file is empty" in e.message
    assert "name_pattern" not in str(e)


def test_old_tles_warn_past_max_tle_age_days(tmp_path):
    (tmp_path / "x.tle").write_text(_tle_at("26031.25003471"))  # 48 days before the epoch
    sc = netemu.load_scenario(write_scenario(tmp_path, BASE + _TLE_GROUP))
    assert len(sc.warnings) == 1 and "more than 30 days" in sc.warnings[0] and "48 days" in sc.warnings[0]
    sc = netemu.load_scenario(write_scenario(tmp_path, BASE + _TLE_GROUP + "max_tle_age_days = 60\n"))
    assert sc.warnings == ()
    (tmp_path / "x.tle").write_text(_tle_at("26078.50000000"))  # half a day before the epoch
    assert netemu.load_scenario(write_scenario(tmp_path, BASE + _TLE_GROUP)).warnings == ()


def test_decades_old_tle_sgp4_cannot_propagate_is_an_error(tmp_path):
    e = _error(tmp_path, BASE + _TLE_GROUP, **{"x.tle": _tle_at("96031.25003471")})
    assert e.key == "satellites[t].file"
    assert "1 of 1 in x.tle cannot" in e.message and "11,006 days" in e.message


def test_plan_summary_carries_scenario_warnings(tmp_path):
    (tmp_path / "x.tle").write_text(_tle_at("26031.25003471"))
    p = write_scenario(tmp_path, BASE + _TLE_GROUP)
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(p), "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "warning: satellites[t].file: 1 of 1 TLEs" in r.stderr
    import json
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any("more than 30 days" in w for w in s["warnings"])


def test_misspelled_required_key_is_reported_as_unknown_first(tmp_path):
    e = _error(tmp_path, BASE.replace("planes = 4", "plnes = 4"))
    assert e.key == "satellites[shell].plnes" and e.message == "unknown key; did you mean 'planes'?"
    # a key missing with nothing like it in the table stays "missing"
    e = _error(tmp_path, BASE.replace("planes = 4\n", ""))
    assert e.key == "satellites[shell].planes" and e.message.startswith("missing")
    # a valid key read later is not taken for a misspelling (lon_deg is close to lat_deg)
    e = _error(tmp_path, BASE.replace("lat_deg = 10\n", ""))
    assert e.key == "ground_stations[0].lat_deg" and e.message.startswith("missing")


def test_unknown_key_suggests_the_closest(tmp_path):
    e = _error(tmp_path, BASE.replace("planes = 4", "planes = 4\nphasnig = 1"))
    assert e.key == "satellites[shell].phasnig" and "did you mean 'phasing'?" in e.message


def test_singular_ground_station_section_is_an_unknown_section(tmp_path):
    text = BASE.replace("[[ground_stations]]", "[[ground_station]]") + (
        '\n[[workloads]]\nkind = "inference"\n')
    e = _error(tmp_path, text)
    assert e.key == "ground_station"
    assert "top-level section" in e.message and "did you mean 'ground_stations'?" in e.message


def test_unknown_node_gets_did_you_mean(tmp_path):
    e = _error(tmp_path, BASE + '\n[endpoints]\nnodes = ["g-a", "g-bb"]\n')
    assert e.key == "endpoints.nodes" and "did you mean 'g-b'?" in e.message and "'g-bb'" in e.message
    text = BASE.replace("inclination_deg = 53", "inclination_deg = 53\ncompute = true") + \
        '\n[[workloads]]\nkind = "inference"\nclients = ["g-aa"]\n'
    e = _error(tmp_path, text)
    assert e.key == "workloads[0].clients" and "did you mean 'g-a'?" in e.message


@pytest.mark.parametrize("written, shown", [
    ("2026-03-20", "date 2026-03-20"),
    ("2026-03-20T00:00:00", "date-time 2026-03-20T00:00:00"),
])
def test_values_are_quoted_as_written(tmp_path, written, shown):
    e = _error(tmp_path, BASE.replace("epoch = 2026-03-20T00:00:00Z", f"epoch = {written}"))
    assert e.key == "scenario.epoch" and e.message.endswith(f"found {shown}"), e.message
    assert "datetime." not in e.message
    e = _error(tmp_path, BASE.replace("planes = 4", "planes = true"))
    assert e.message == "expected an integer, found boolean true"


def test_known_keys_cover_every_key_the_checker_reads():
    import re
    from netemu.plan import scenario
    src = (ROOT / "netemu" / "plan" / "scenario.py").read_text()
    read = set(re.findall(r'(?:get|has|table|seen\.add|nodes)\("([a-z_0-9]+)"', src))
    read |= set(re.findall(r'(?:_pair\(t|_raan\(t, epoch|_epoch\(s), "([a-z_0-9]+)"', src))
    assert read and read <= scenario._KNOWN_KEYS, read - scenario._KNOWN_KEYS


def _stations_scenario(tmp_path, target: str) -> str:
    return BASE.replace("step_s = 10", f'step_s = 10\nground_stations_file = "{target}"')


@pytest.mark.parametrize("make, found", [
    (lambda d: __import__("os").mkfifo(d / "st.csv"), "is a FIFO (named pipe), not a regular file"),
    (lambda d: (d / "st.csv").symlink_to("/dev/zero"), "is a character device, not a regular file"),
    (lambda d: ((d / "st.csv").symlink_to(d / "loop2"), (d / "loop2").symlink_to(d / "st.csv")),
     "is a symbolic link loop"),
    (lambda d: (d / "st.csv").mkdir(), "is a directory, not a regular file"),
    (lambda d: (d / "st.csv").write_bytes(b"#" * (64 * 2**20 + 1)), "more than the limit of 64.0 MiB"),
])
def test_referenced_files_must_be_regular_and_bounded(tmp_path, make, found):
    make(tmp_path)
    for text in (_stations_scenario(tmp_path, "st.csv"),
                 BASE + _TLE_GROUP.replace("x.tle", "st.csv"),
                 BASE + '\n[[isl]]\ngroups = ["shell"]\npattern = "explicit"\nrate_mbps = 1\npairs_file = "st.csv"\n'):
        e = _error(tmp_path, text)
        assert found in e.message and ("st.csv" in e.message or "/dev/zero" in e.message), e.message


def test_scenario_file_that_is_a_fifo(tmp_path):
    import os
    os.mkfifo(tmp_path / "s.toml")
    with pytest.raises(ScenarioError, match="cannot read the scenario file: .* is a FIFO"):
        netemu.load_scenario(tmp_path / "s.toml")


def test_more_satellites_than_sgp4_can_number(tmp_path):
    e = _error(tmp_path, BASE.replace("planes = 4", "planes = 600").replace("sats_per_plane = 4", "sats_per_plane = 600"))
    assert e.key == "satellites" and "at most 339,999 satellites" in e.message and "found 360,000" in e.message


@pytest.mark.parametrize("row, column, found", [
    ("g-x,nan,10,0", "lat_deg", "'nan'"),
    ("g-x,10,NaN,0", "lon_deg", "'NaN'"),
    ("g-x,10,10,inf", "alt_m", "'inf'"),
    ("g-x,10,10,-1e6", "alt_m", "'-1e6'"),
    ("g-x,95,10,0", "lat_deg", "'95'"),
])
def test_station_csv_numbers_must_be_finite_and_in_range(tmp_path, row, column, found):
    e = _error(tmp_path, _stations_scenario(tmp_path, "st.csv"),
               **{"st.csv": "name,lat_deg,lon_deg,alt_m\ng-y,1,2,0\n" + row + "\n"})
    assert e.key == "scenario.ground_stations_file"
    assert e.message.startswith(f"st.csv line 3, column {column}: expected a finite number in ")
    assert e.message.endswith(f"found {found}")


def test_sun_synchronous_too_high_is_a_scenario_error(tmp_path):
    text = BASE.replace("altitude_km = 550\ninclination_deg = 53", "altitude_km = 8000\nsun_synchronous = true")
    e = _error(tmp_path, text)
    assert e.key == "satellites[shell].sun_synchronous"
    assert "no sun-synchronous orbit exists above about 5,974 km; found altitude_km = 8000" in e.message
