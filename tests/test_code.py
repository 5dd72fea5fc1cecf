"""Constellation codes (draft-piraux-space-constellation-code): a `source = "code"` group plans as
the Walker shell it names, and `netemu export code` gives the code back."""

from __future__ import annotations

import numpy as np
import pytest

from netemu.cli import main
from netemu.errors import ScenarioError
from netemu.plan.code import format_code, parse_code
from netemu.plan.planner import satellite_track
from netemu.plan.scenario import load_scenario

HEAD = """[scenario]
epoch = 2026-03-20T00:00:00Z
duration_s = 600
step_s = 60

[[ground_stations]]
name = "g-a"
lat_deg = 10
lon_deg = 10

[[ground_stations]]
name = "g-b"
lat_deg = 20
lon_deg = 20
"""


def _write(tmp_path, body: str, name: str = "s.toml"):
    p = tmp_path / name
    p.write_text(HEAD + body)
    return p


def test_the_drafts_examples_by_hand():
    # the draft's table (Iridium, OneWeb, Starlink shell 1, GPS) and the example
    assert parse_code("S:780:86.4:66/6/1") == (180.0, 780.0, 86.4, 6, 11, 1, 0.0)
    assert parse_code("S:1200:87.9:672/12/11") == (180.0, 1200.0, 87.9, 12, 56, 11, 0.0)
    assert parse_code("S:550:53:1584/72/22") == (180.0, 550.0, 53.0, 72, 22, 22, 0.0)
    assert parse_code("D:20180:55:24/6/1") == (360.0, 20180.0, 55.0, 6, 4, 1, 0.0)
    assert parse_code("D:550:53.0:1584/22/17") == (360.0, 550.0, 53.0, 22, 72, 17, 0.0)
    assert parse_code("D:550:53.0:1584/72/1:12.5")[-1] == 12.5         # optional mean anomaly
    assert format_code(360.0, 550.0, 53.0, 22, 72, 17) == "D:550:53.0:1584/22/17"
    assert format_code(180.0, 1200.5, 87.9, 6, 13, 1) == "S:1200.5:87.9:78/6/1"
    assert format_code(360.0, 20180.0, 55.0, 6, 4, 1, 30.0) == "D:20180:55.0:24/6/1:30"


def test_code_group_plans_as_its_walker_group(tmp_path):
    code = _write(tmp_path, """
[[satellites]]
name = "s1"
source = "code"
code = "D:550:53.0:120/10/7"
prefix = "w"
""", "code.toml")
    walker = _write(tmp_path, """
[[satellites]]
name = "s1"
source = "walker"
prefix = "w"
altitude_km = 550
inclination_deg = 53
planes = 10
sats_per_plane = 12
phasing = 7
""", "walker.toml")
    a, b = load_scenario(code), load_scenario(walker)
    assert a.satellites == b.satellites
    ta, tb = satellite_track(a), satellite_track(b)
    assert ta.names == tb.names and len(ta.names) == 120
    assert np.array_equal(ta.xyz_km, tb.xyz_km)
    # Walker's phasing by hand: satellite 0 of plane p has argument of latitude p·F·360°/T (mod 360)
    # at the epoch, in the plane whose node is at p·360°/P
    from sgp4.api import jday
    from netemu.plan.orbits import walker_satrecs
    sats = walker_satrecs(a.satellites[0], a.epoch)
    jd, fr = jday(2026, 3, 20, 0, 0, 0)
    _check_phasing(sats, jd, fr, 0.0)
    # the code's optional mean anomaly: the first satellite of the first plane starts there
    c = load_scenario(_write(tmp_path, """
[[satellites]]
name = "s1"
source = "code"
code = "D:550:53.0:120/10/7:30"
prefix = "w"
""", "code30.toml"))
    _check_phasing(walker_satrecs(c.satellites[0], c.epoch), jd, fr, 30.0)


def _check_phasing(sats, jd, fr, m0_deg):
    for p in (0, 1, 3):
        _, r, _ = sats[p * 12].sgp4(jd, fr)
        r = np.asarray(r)
        node = np.radians(p * 36.0)
        n = np.array([np.cos(node), np.sin(node), 0.0])
        inc = np.radians(53.0)
        m = np.array([-np.sin(node) * np.cos(inc), np.cos(node) * np.cos(inc), np.sin(inc)])
        u = np.degrees(np.arctan2(r @ m, r @ n)) % 360
        want = (m0_deg + p * 7 * 360 / 120) % 360
        assert abs((u - want + 180) % 360 - 180) < 0.3, (p, u, want)


def test_export_round_trip(tmp_path, capsys):
    p = _write(tmp_path, """
[[satellites]]
name = "delta"
source = "walker"
prefix = "d"
altitude_km = 1200.5
inclination_deg = 87.9
planes = 6
sats_per_plane = 13
phasing = 1
raan_spread_deg = 180

[[satellites]]
name = "shell"
source = "code"
prefix = "w"
code = "D:550:53.0:60/6/1:12.5"

[[satellites]]
name = "odd"
source = "walker"
prefix = "o"
altitude_km = 700
inclination_deg = 60
planes = 3
sats_per_plane = 2
raan_spread_deg = 90
""")
    assert main(["export", "code", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "delta: S:1200.5:87.9:78/6/1"
    assert out[1] == "shell: D:550:53.0:60/6/1:12.5"
    assert out[2].startswith("odd: no code:")
    # each printed code, read back as a group, gives the same shell
    sc = load_scenario(p)
    for line, g in zip(out[:2], sc.satellites[:2]):
        again = _write(tmp_path, f'[[satellites]]\nname = "{g.name}"\nsource = "code"\nprefix = "{g.prefix}"\n'
                                 f'code = "{line.split(": ")[1]}"\n', "again.toml")
        assert load_scenario(again).satellites[0] == g


@pytest.mark.parametrize("bad, words", [
    ("D:550:53.0:1584/22", "WALKER:ALTITUDE_KM"),
    ("X:550:53.0:1584/22/17", "WALKER:ALTITUDE_KM"),
    ("D:550:-53.0:1584/22/17", "WALKER:ALTITUDE_KM"),
    ("D:550:53.0:1584/22/17:400", "mean anomaly"),
    ("D:550:53.0:1585/22/17", "multiple of P"),
    ("D:550:53.0:1584/22/22", "phasing"),
    ("D:550:190:1584/22/17", "inclination"),
    ("D:50:53:1584/22/17", "altitude"),
    ("D:550:53.0:1584/22/17+D:540:53.2:1584/72/22", "one shell"),
    ("D:8000/500/90:63.4:12/3/1", "WALKER:ALTITUDE_KM"),
])
def test_bad_codes_one_scenario_error(tmp_path, bad, words):
    p = _write(tmp_path, f'[[satellites]]\nname = "s"\nsource = "code"\nprefix = "w"\ncode = "{bad}"\n')
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert e.value.key == "satellites[s].code" and words in str(e.value) and str(p) in str(e.value)


def test_code_must_be_a_string(tmp_path):
    p = _write(tmp_path, '[[satellites]]\nname = "s"\nsource = "code"\nprefix = "w"\ncode = 550\n')
    with pytest.raises(ScenarioError, match="code: expected a string"):
        load_scenario(p)
