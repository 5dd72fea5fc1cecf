"""Bad inputs at the planner: each is one clear line on stderr, exit code 2, no traceback and no
output directory left behind (`netemu plan SCENARIO -o OUT`, and `netemu trace inspect`)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TOPOLOGIES

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
compute = true

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

_TLE = (TOPOLOGIES / "tle" / "starlink_2026-01-31.tle").read_text().splitlines()[:3]
TLE_GROUP = '\n[[satellites]]\nname = "t"\nsource = "tle"\nprefix = "t"\nfile = "x.tle"\n'
STATIONS = BASE.replace("step_s = 10", 'step_s = 10\nground_stations_file = "st.csv"')
PROGRESS = re.compile(r"^\[\s*\d+\.\d s\] ")


def _checksum(line68: str) -> str:
    return line68 + str(sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line68) % 10)


def _tle(l1: str = _TLE[1], l2: str = _TLE[2]) -> str:
    return "\n".join([_TLE[0], l1, l2]) + "\n"


def _fifo(name):
    return lambda d: os.mkfifo(d / name)


def _link(name, target):
    return lambda d: (d / name).symlink_to(target if str(target).startswith("/") else d / target)


def _loop(name):
    return lambda d: ((d / name).symlink_to(d / (name + ".2")), (d / (name + ".2")).symlink_to(d / name))


def _file(name, text):
    return lambda d: (d / name).write_text(text)


def _csv(row):
    return _file("st.csv", "name,lat_deg,lon_deg,alt_m\ng-c,1,2,0\n" + row + "\n")


# id, scenario text, what to make beside it, a pattern the error line must match
CASES = [
    ("tle-line-too-long", BASE + TLE_GROUP,
     _file("x.tle", _tle(l2=_checksum((_TLE[2][:8] + "  " + _TLE[2][8:66])[:68]) + "99")),
     r"x\.tle line 3: expected TLE line 2 \(exactly 69 characters .*found 71 characters"),
    ("tle-empty", BASE + TLE_GROUP, _file("x.tle", ""), r"x\.tle: the file is empty"),
    ("tle-decades-old", BASE + TLE_GROUP, _file("x.tle", _tle(l1=_checksum(_TLE[1][:18] + "96031.25003471" + _TLE[1][32:68]))),
     r"satellites\[t\]\.file: expected TLEs that SGP4 can propagate to the epoch"),
    ("tle-fifo", BASE + TLE_GROUP, _fifo("x.tle"), r"satellites\[t\]\.file: .*is a FIFO \(named pipe\), not a regular file"),
    ("tle-symlink-loop", BASE + TLE_GROUP, _loop("x.tle"), r"satellites\[t\]\.file: .*is a symbolic link loop"),
    ("stations-dev-zero", STATIONS, _link("st.csv", "/dev/zero"),
     r"ground_stations_file: .*/dev/zero is a character device, not a regular file"),
    ("stations-fifo", STATIONS, _fifo("st.csv"), r"ground_stations_file: .*st\.csv is a FIFO"),
    ("stations-symlink-loop", STATIONS, _loop("st.csv"), r"ground_stations_file: .*st\.csv is a symbolic link loop"),
    ("stations-lat-nan", STATIONS, _csv("g-x,nan,10,0"), r"st\.csv line 3, column lat_deg: expected a finite number"),
    ("stations-lon-nan", STATIONS, _csv("g-x,10,nan,0"), r"st\.csv line 3, column lon_deg: expected a finite number"),
    ("stations-alt-inf", STATIONS, _csv("g-x,10,10,inf"), r"st\.csv line 3, column alt_m: expected a finite number"),
    ("misspelled-required-key", BASE.replace("planes = 4", "plnes = 4"), None,
     r"satellites\[shell\]\.plnes: unknown key; did you mean 'planes'\?"),
    ("singular-ground-station", BASE.replace("[[ground_stations]]", "[[ground_station]]")
     + '\n[[workloads]]\nkind = "inference"\n', None,
     r"ground_station: unknown key \(a top-level section\); did you mean 'ground_stations'\?"),
    ("unknown-node", BASE + '\n[[workloads]]\nkind = "inference"\nclients = ["g-aa"]\n', None,
     r"workloads\[0\]\.clients: .*found string 'g-aa'; did you mean 'g-a'\?"),
    ("epoch-as-date", BASE.replace("epoch = 2026-03-20T00:00:00Z", "epoch = 2026-03-20"), None,
     r"scenario\.epoch: expected a date-time, found date 2026-03-20$"),
    ("sso-too-high", BASE.replace("altitude_km = 550\ninclination_deg = 53", "altitude_km = 8000\nsun_synchronous = true"),
     None, r"sun_synchronous: no sun-synchronous orbit exists above about 5,974 km"),
    ("rate-per-s-1e12", BASE + '\n[[workloads]]\nkind = "inference"\nrate_per_s = 1e12\n', None,
     r"workloads\[0\]\.rate_per_s: expected at most 100,000"),
    ("size-gb-1e300", BASE + '\n[[workloads]]\nkind = "checkpoint"\nsize_gb = 1e300\n', None,
     r"workloads\[0\]\.size_gb: expected at most 100,000"),
    ("app-unknown-node", BASE + '\n[[apps]]\nnode = "g-c"\ncommand = "true"\n', None,
     r"apps\[0\]\.node: expected a node defined in this scenario, found 'g-c'; did you mean 'g-[ab]'\?"),
    ("app-bad-placeholder", BASE + '\n[[apps]]\nnode = "g-a"\ncommand = "ping {adress:g-b}"\n', None,
     r"apps\[0\]\.command: unknown placeholder '\{adress:g-b\}' in '\{adress:g-b\}'; expected \{node\}"),
    ("app-start-after-stop", BASE + '\n[[apps]]\nnode = "g-a"\ncommand = "true"\nstart_s = 30\nstop_s = 20\n', None,
     r"apps\[0\]\.stop_s: expected a time after start_s = 30, found 20"),
    ("compute-negative-capacity", BASE + '\n[[compute]]\ngroup = "shell"\nsequences_per_accelerator = -4\n', None,
     r"compute\[shell\]\.sequences_per_accelerator: expected an integer in \[1, 1000000\], found integer -4"),
    ("compute-battery-below-one-step", BASE + '\n[[compute]]\ngroup = "shell"\nbattery_wh = 10\n', None,
     r"compute\[shell\]\.battery_wh: expected at least one step's deficit in shadow \(11\.4 Wh: bus_w \+ 8 accelerators.*or a throttling "
     r"rule .*found 10"),
    ("compute-group-without-compute-satellites", BASE.replace("compute = true", "compute = false")
     + '\n[[compute]]\ngroup = "shell"\n', None,
     r"compute\[0\]\.group: expected a group of compute satellites .*group 'shell' has 16 satellites, compute = false"),
    # a group of no satellites never reaches [[compute]]: every source refuses an empty group
    ("compute-group-of-no-satellites", BASE + TLE_GROUP.replace('"x.tle"', '"x.tle"\ncompute = true\nname_pattern = "NONE*"')
     + '\n[[compute]]\ngroup = "t"\n', lambda d: (d / "x.tle").write_text(_tle()),
     r"satellites\[t\]\.name_pattern: at least one satellite of x\.tle to match the pattern and ranges; none of 1"),
    ("compute-formation-of-none", BASE + '\n[[satellites]]\nname = "odc"\nsource = "formation"\nprefix = "c"\ncount = 0\n'
     'altitude_km = 600\n\n[[compute]]\ngroup = "odc"\n', None,
     r"satellites\[odc\]\.count: expected a value in \[1, 10000\], found integer 0"),
    ("dispatch-without-compute", BASE + '\n[[workloads]]\nkind = "inference"\ndispatch = "power-aware"\n', None,
     r"workloads\[0\]\.dispatch: a \[\[compute\]\] section for group 'shell'"),
    ("dispatch-unknown-policy", BASE + '\n[[workloads]]\nkind = "inference"\ndispatch = "random"\n', None,
     r"workloads\[0\]\.dispatch: expected .*one of none, nearest, least-loaded, sunlit-first, power-aware"),
    ("more-than-339999-satellites", BASE.replace("planes = 4", "planes = 600").replace("sats_per_plane = 4", "sats_per_plane = 600"),
     None, r"satellites: at most 339,999 satellites in all .*found 360,000"),
    ("formation-of-10000", BASE.replace("compute = true", "compute = false") + (
        '\n[[satellites]]\nname = "odc"\nsource = "formation"\nprefix = "c"\ncount = 10000\naltitude_km = 600\n'
        'inclination_deg = 97.8\ncolumns = 100\nalong_track_km = 1\ncross_track_km = 1\n'
        '\n[[isl]]\ngroups = ["odc"]\npattern = "cluster-mesh"\nrate_mbps = 1000\nmax_range_km = 1.5\n'),
     None, r"planning needs about [\d,.]+ GiB of memory .*more than the [\d,.]+ GiB available; shorten duration_s"),
]


def _check(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith("netemu: error: "), r.stderr
    assert all(PROGRESS.match(ln) for ln in lines[:-1]), r.stderr  # only progress lines before it
    assert re.search(match, lines[-1]), lines[-1]


@pytest.mark.parametrize("text, make, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_bad_input_is_one_clear_line(tmp_path: Path, text, make, match):
    if make is not None:
        make(tmp_path)
    p = tmp_path / "s.toml"
    p.write_text(text)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(p), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    _check(r, match)
    assert str(p) in r.stderr.splitlines()[-1]
    assert not out.exists()


@pytest.mark.parametrize("make, match", [
    (_fifo("x.pcap"), r"x\.pcap: expected a pcap or pcapng capture \(a regular file of at most 4 GiB\): .*is a FIFO"),
    (_link("x.pcap", "/dev/zero"), r"x\.pcap: expected a pcap or pcapng capture .*is a character device"),
    (_loop("x.pcap"), r"x\.pcap: expected a pcap or pcapng capture .*is a symbolic link loop"),
], ids=["pcap-fifo", "pcap-dev-zero", "pcap-symlink-loop"])
def test_trace_inspect_bad_capture_is_one_clear_line(tmp_path: Path, make, match):
    make(tmp_path)
    r = subprocess.run([sys.executable, "-m", "netemu", "trace", "inspect", str(tmp_path / "x.pcap")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    _check(r, match)


@pytest.mark.parametrize("flags, match", [
    (["--iperf", "g-beijing:g-sanya"], r"--iperf: not available with --cluster yet"),
    (["--capture", "g-beijing", "--cli"], r"--capture, --cli: not available with --cluster yet"),
    (["--links", "kernel"], r"--links kernel: not available with --cluster yet"),
], ids=["iperf", "capture-cli", "kernel-links"])
def test_cluster_run_refuses_single_host_flags(tmp_path: Path, flags, match):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "netemu", "run", str(ROOT / "tests" / "data" / "small.toml"), "-o",
                        str(out), "--cluster", "tcp://127.0.0.1:1", *flags],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    _check(r, match)
    assert not out.exists()
