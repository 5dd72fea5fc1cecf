"""Import of Hypatia-style generated inputs (satgenpy's files) as a netemu scenario.

An input directory holds:

- `tles.txt`: a first line `<orbits> <satellites per orbit>`, then 3-line TLEs; a satellite's
  index (used by the other files) is its position in the file, from 0;
- `isls.txt`: one inter-satellite link per line, `a b` (satellite indices);
- `ground_stations.txt`: `id,name,lat_deg,lon_deg,elevation_m[,x,y,z]` per line (the extended
  form's Cartesian columns are ignored);
- `description.txt`: `key=value` lines, of which `max_gsl_length_m` and `max_isl_length_m`.

They become a scenario file plus the files it references, written beside it: the TLEs (3-line,
without the header), the ISL pairs by netemu node name (pattern `explicit`, `max_range_km` from
`max_isl_length_m`), the stations (names shortened to netemu's limit) and the mapping of the
original station ids and names onto netemu's (CSV). Ground links: every satellite within
`max_gsl_length_m` of a station (GSL `policy = "all"`, `max_range_km`), as in Hypatia where routing
picks among all satellites in range. Satellites are named `s<catalogue number>`; the scenario's
epoch is the first TLE's epoch.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sgp4.api import Satrec

from ..errors import ScenarioError, TLEError
from .files import MAX_TEXT_BYTES, atomic_write, read_input
from .orbits import TLERecord, parse_tle_text, tle_status_at

__all__ = ["HypatiaInputs", "read_hypatia", "import_hypatia", "short_station_names", "HYPATIA_FILES"]

HYPATIA_FILES = ("tles.txt", "isls.txt", "ground_stations.txt", "description.txt")
NAME_MAX_CHARS = 10     # = scenario.NAME_MAX_CHARS (node names: interface names hold 15 characters)
SAT_PREFIX = "s"
STATION_PREFIX = "g-"


@dataclass(frozen=True)
class HypatiaInputs:
    orbits: int
    sats_per_orbit: int
    tles: tuple[TLERecord, ...]
    """In file order: index i is satellite i of the ISL list."""
    isls: tuple[tuple[int, int], ...]
    stations: tuple[tuple[str, str, float, float, float], ...]
    """(id, name, lat_deg, lon_deg, elevation_m) in file order."""
    max_gsl_length_m: float
    max_isl_length_m: float


def _text(path: Path) -> str:
    raw = read_input(path, MAX_TEXT_BYTES, lambda problem: ScenarioError(
        path, "", f"expected a readable Hypatia input file (a regular file of at most {MAX_TEXT_BYTES >> 20} MiB), "
                  f"{problem}"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(path, "", f"expected UTF-8 text ({e})") from None


def read_hypatia(directory: str | Path) -> HypatiaInputs:
    """Read and check the four input files. Raises `ScenarioError` (file, line, expected)."""
    d = Path(directory)
    if not d.is_dir():
        raise ScenarioError(d, "", "expected a directory of Hypatia inputs (" + ", ".join(HYPATIA_FILES) + ")")
    missing = [f for f in HYPATIA_FILES if not (d / f).exists()]
    if missing:
        raise ScenarioError(d, "", f"expected Hypatia's input files {', '.join(HYPATIA_FILES)}; missing "
                                   f"{', '.join(missing)}")
    # TLEs and their header
    p = d / "tles.txt"
    lines = _text(p).splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or not all(x.isdigit() and int(x) > 0 for x in head):
        raise ScenarioError(p, "line 1", f"expected '<orbits> <satellites per orbit>' (two positive integers), "
                                         f"found {lines[0] if lines else ''!r}")
    orbits, per_orbit = int(head[0]), int(head[1])
    try:
        tles = parse_tle_text("\n".join(lines[1:]), p)
    except TLEError as e:
        m = re.match(r"line (\d+)$", e.key)   # lines counted without the header
        key = f"line {int(m[1]) + 1}" if m else e.key
        raise TLEError(p, key, e.message) from None
    if len(tles) != orbits * per_orbit:
        raise ScenarioError(p, "line 1", f"expected {orbits} × {per_orbit} = {orbits * per_orbit} satellites as the "
                                         f"header says, found {len(tles)} TLEs")
    ids = [r.norad_id for r in tles]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ScenarioError(p, "", f"expected distinct catalogue numbers (netemu names satellites by them), "
                                   f"found {dup} {ids.count(dup)} times")
    n = len(tles)
    # ISLs
    p = d / "isls.txt"
    isls, seen = [], set()
    for i, ln in enumerate(_text(p).splitlines(), start=1):
        if not ln.strip():
            continue
        f = ln.split()
        if len(f) != 2 or not all(x.isdigit() for x in f) or int(f[0]) == int(f[1]) or max(map(int, f)) >= n:
            raise ScenarioError(p, f"line {i}", f"expected 'a b', two distinct satellite indices in [0, {n - 1}], "
                                                f"found {ln!r}")
        a, b = sorted((int(f[0]), int(f[1])))
        if (a, b) in seen:
            raise ScenarioError(p, f"line {i}", f"expected each satellite pair once, found {a} {b} again")
        seen.add((a, b))
        isls.append((int(f[0]), int(f[1])))
    # ground stations
    p = d / "ground_stations.txt"
    stations, gids = [], set()
    for i, ln in enumerate(_text(p).splitlines(), start=1):
        if not ln.strip():
            continue
        f = [x.strip() for x in next(csv.reader([ln]))]
        try:
            if len(f) not in (5, 8):
                raise ValueError
            lat, lon, elev = float(f[2]), float(f[3]), float(f[4])
            if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(elev)
                    and -90 <= lat <= 90 and -180 <= lon <= 180 and -500 <= elev <= 9000):
                raise ValueError
        except ValueError:
            raise ScenarioError(p, f"line {i}", "expected id,name,latitude_deg [-90, 90],longitude_deg [-180, 180],"
                                                f"elevation_m [-500, 9000][,x,y,z], found {ln!r}") from None
        if f[0] in gids:
            raise ScenarioError(p, f"line {i}", f"expected distinct station ids, found {f[0]!r} again")
        gids.add(f[0])
        stations.append((f[0], f[1], lat, lon, elev))
    if len(stations) < 2:
        raise ScenarioError(p, "", f"expected at least two ground stations, found {len(stations)}")
    # description
    p = d / "description.txt"
    desc = {}
    for ln in _text(p).splitlines():
        k, sep, v = ln.partition("=")
        if sep:
            desc[k.strip()] = v.strip()
    lengths = {}
    for k in ("max_gsl_length_m", "max_isl_length_m"):
        try:
            lengths[k] = float(desc[k])
            if not (math.isfinite(lengths[k]) and lengths[k] > 0):
                raise ValueError
        except (KeyError, ValueError):
            raise ScenarioError(p, k, f"expected a line {k}=<metres > 0>, found {desc.get(k)!r}") from None
    return HypatiaInputs(orbits, per_orbit, tuple(tles), tuple(isls), tuple(stations),
                         lengths["max_gsl_length_m"], lengths["max_isl_length_m"])


def short_station_names(names: list[str]) -> list[str]:
    """netemu node names for station names: `g-` and the name in lower-case letters, digits and
    '-', cut to 10 characters; repeated names get a number at the end (`g-san-jo-2`)."""
    out, used = [], set()
    for name in names:
        slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-") or "station"
        base = (STATION_PREFIX + slug)[:NAME_MAX_CHARS].rstrip("-")
        cand, k = base, 1
        while cand in used:
            k += 1
            sfx = f"-{k}"
            cand = base[:NAME_MAX_CHARS - len(sfx)].rstrip("-") + sfx
        used.add(cand)
        out.append(cand)
    return out


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tle_epoch(r: TLERecord) -> datetime:
    s = Satrec.twoline2rv(r.line1, r.line2)
    jd = s.jdsatepoch + s.jdsatepochF
    t = datetime(2000, 1, 1, 12, tzinfo=timezone.utc) + timedelta(days=jd - 2451545.0)
    return t.replace(microsecond=0)


def import_hypatia(directory: str | Path, scenario_path: str | Path, *, duration_s: float = 200.0,
                   step_s: float = 1.0, isl_rate_mbps: float = 10_000.0, gsl_rate_mbps: float = 10_000.0,
                   overwrite: bool = False) -> dict:
    """Write `scenario_path` and the files it references (beside it, named after it). Returns
    what was written: {"scenario", "tles", "isls", "stations", "names", "renamed"}."""
    h = read_hypatia(directory)
    out = Path(scenario_path)
    stem = out.stem
    files = {"scenario": out, "tles": out.with_name(f"{stem}-tles.tle"), "isls": out.with_name(f"{stem}-isls.csv"),
             "stations": out.with_name(f"{stem}-stations.csv"), "names": out.with_name(f"{stem}-station-names.csv")}
    if not overwrite:
        there = [str(p) for p in files.values() if p.exists()]
        if there:
            raise ScenarioError(out, "", f"expected new files; {', '.join(there)} exist (--overwrite replaces them)")
    sat = [f"{SAT_PREFIX}{r.norad_id}" for r in h.tles]
    too_long = [n for n in sat if len(n) > NAME_MAX_CHARS]
    if too_long:
        raise ScenarioError(Path(directory) / "tles.txt", "", f"expected catalogue numbers that give node names of at "
                                                              f"most {NAME_MAX_CHARS} characters, found {too_long[0]!r}")
    names = short_station_names([s[1] for s in h.stations])
    epoch = _tle_epoch(h.tles[0])
    ages, _ = tle_status_at(list(h.tles), epoch)
    max_age_days = max(30.0, math.ceil(float(abs(ages).max())) + 1.0)

    tle_text = "".join(f"{r.name}\n{r.line1}\n{r.line2}\n" for r in h.tles)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["a", "b"])
    w.writerows((sat[a], sat[b]) for a, b in h.isls)
    isl_text = buf.getvalue()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "lat_deg", "lon_deg", "alt_m"])
    w.writerows((n, repr(s[2]), repr(s[3]), repr(s[4])) for n, s in zip(names, h.stations))
    station_text = buf.getvalue()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["hypatia_id", "hypatia_name", "name"])
    w.writerows((s[0], s[1], n) for n, s in zip(names, h.stations))
    names_text = buf.getvalue()
    scen_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(directory).resolve().name) or "hypatia"
    isl_block = "" if not h.isls else f"""
[[isl]]
groups = ["hypatia"]
pattern = "explicit"
pairs_file = {_toml_str(files['isls'].name)}
rate_mbps = {isl_rate_mbps!r}
max_range_km = {h.max_isl_length_m / 1e3!r}            # max_isl_length_m
"""
    scenario = f"""# Imported by `netemu import hypatia` from Hypatia-style inputs ({h.orbits} orbits × {h.sats_per_orbit}
# satellites, {len(h.isls)} ISLs, {len(h.stations)} ground stations). Satellite index i of the inputs is node
# s<catalogue number> of line i's TLE; station names as in {files['names'].name}.
[scenario]
name = {_toml_str(scen_name)}
epoch = {epoch.isoformat().replace('+00:00', 'Z')}     # the first TLE's epoch
duration_s = {duration_s!r}
step_s = {step_s!r}
ground_stations_file = {_toml_str(files['stations'].name)}

[[satellites]]
name = "hypatia"
source = "tle"
prefix = "{SAT_PREFIX}"
file = {_toml_str(files['tles'].name)}
max_tle_age_days = {max_age_days!r}
{isl_block}
[gsl]
max_range_km = {h.max_gsl_length_m / 1e3!r}            # max_gsl_length_m
policy = "all"
rate_mbps = {gsl_rate_mbps!r}
"""
    for key, text in (("tles", tle_text), ("isls", isl_text), ("stations", station_text), ("names", names_text),
                      ("scenario", scenario)):
        if key == "isls" and not h.isls:
            continue
        atomic_write(files[key], lambda tmp, text=text: Path(tmp).write_text(text))
    return {**{k: str(v) for k, v in files.items() if k != "isls" or h.isls},
            "renamed": sum(1 for n, s in zip(names, h.stations) if n != s[1])}
