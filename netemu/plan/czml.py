"""CZML export: a plan (or a run's plan files) as a document Cesium opens in its own viewer.

Packets, in order: the `document` packet (name, clock over the plan's window), one per satellite
(sampled Cartesian positions in metres in Cesium's Earth-fixed frame `FIXED`, every
`DEFAULT_SAMPLE_S` of the plan's time grid from the scenario epoch, Lagrange interpolation), one per ground station (a fixed Cartesian
position) and one per link pair (a polyline between the two nodes' positions, shown only while the
link is up: its `availability` and `polyline.show` intervals are the schedule's up intervals).

A link that is up at steps k..m covers [t_k, t_m + step_s), cut to the plan's end; a satellite
that SGP4 cannot propagate at a step has no sample there. The plan directory holds no positions:
they are recomputed from its copy of the scenario (`satellite_track`), which must still find the
TLE, station and pairs files it names.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlanError, ScenarioError
from .files import atomic_write
from .orbits import Track, station_ecef_km
from .planner import read_plan, satellite_track
from .scenario import load_scenario

__all__ = ["czml_packets", "czml_from_dir", "write_czml", "up_intervals_s", "sample_steps", "DEFAULT_SAMPLE_S"]


def _iso(epoch: datetime, t_s: float = 0.0) -> str:
    t = epoch.astimezone(timezone.utc) + timedelta(seconds=float(t_s))
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def up_intervals_s(steps: np.ndarray, t_s: np.ndarray, step_s: float) -> list[tuple[float, float]]:
    """[start_s, end_s) intervals covered by the sorted, unique up `steps` of one link: a run of
    consecutive steps k..m covers [t_k, t_m + step_s), cut to the grid's last instant (a run ending
    on it covers [t_k, t_last])."""
    steps = np.asarray(steps, dtype=np.int64)
    if len(steps) == 0:
        return []
    breaks = np.nonzero(np.diff(steps) != 1)[0]
    firsts = np.r_[steps[0], steps[breaks + 1]]
    lasts = np.r_[steps[breaks], steps[-1]]
    end = float(t_s[-1])
    return [(float(t_s[a]), min(float(t_s[b]) + step_s, end) if b < len(t_s) - 1 else end)
            for a, b in zip(firsts, lasts)]


DEFAULT_SAMPLE_S = 10.0
"""Satellite positions are written every this many seconds (and at the plan's last instant);
Cesium interpolates between them (Lagrange, degree 5: well under a metre for LEO orbits)."""


def sample_steps(t_s: np.ndarray, sample_s: float) -> np.ndarray:
    """Indices of the steps whose positions are written: every ceil(sample_s / step) steps from
    the first, and the last."""
    T = len(t_s)
    if T < 2:
        return np.arange(T)
    every = max(1, int(math.ceil(sample_s / float(t_s[1] - t_s[0]) - 1e-9)))
    return np.unique(np.r_[np.arange(0, T, every), T - 1])


def czml_packets(name: str, epoch: datetime, step_s: float, track: Track, stations: list[tuple[str, float, float, float]],
                 links: pd.DataFrame, nodes: pd.DataFrame | None = None,
                 sample_s: float = DEFAULT_SAMPLE_S) -> list[dict]:
    """The CZML document as a list of packets.

    `track`: satellite positions [T, N, 3] km, Earth-fixed; `stations`: (name, lat_deg, lon_deg,
    alt_m); `links`: the plan's link table (step, a, b, kind, up, ...); `nodes`: the plan's node
    table (kind and group of each node, put in the packets' `properties`); positions are written
    at `sample_steps(track.t_s, sample_s)`, to 0.1 m."""
    t_s = np.asarray(track.t_s, dtype=np.float64)
    keep = sample_steps(t_s, sample_s)
    start, stop = _iso(epoch, t_s[0]), _iso(epoch, t_s[-1])
    interval = f"{start}/{stop}"
    info = {} if nodes is None else {r.name: (r.kind, r.group) for r in nodes.itertuples(index=False)}
    packets: list[dict] = [{
        "id": "document", "name": name, "version": "1.0",
        "clock": {"interval": interval, "currentTime": start, "multiplier": 60,
                  "range": "LOOP_STOP", "step": "SYSTEM_CLOCK_MULTIPLIER"},
    }]
    xyz_m = np.round(track.xyz_km[keep] * 1e3, 1)
    t_keep, ok_keep = t_s[keep], track.ok[keep]
    for j, sat in enumerate(track.names):
        ok = ok_keep[:, j]
        samples = np.column_stack([t_keep[ok], xyz_m[ok, j, :]]).ravel().tolist()
        kind, group = info.get(sat, ("satellite", ""))
        packets.append({
            "id": sat, "name": sat, "availability": interval,
            "properties": {"kind": kind, "group": group},
            "position": {"epoch": start, "referenceFrame": "FIXED", "interpolationAlgorithm": "LAGRANGE",
                         "interpolationDegree": 5, "cartesian": samples},
            "point": {"pixelSize": 6 if kind == "compute" else 4,
                      "color": {"rgba": [255, 140, 0, 255] if kind == "compute" else [255, 255, 255, 255]}},
            "label": {"text": sat, "show": False},
        })
    if stations:
        st_xyz, _ = station_ecef_km([s[1] for s in stations], [s[2] for s in stations], [s[3] for s in stations])
        for (sname, lat, lon, alt), p in zip(stations, st_xyz * 1e3):
            packets.append({
                "id": sname, "name": sname,
                "properties": {"kind": "ground", "lat_deg": lat, "lon_deg": lon, "alt_m": alt},
                "position": {"cartesian": p.tolist()},
                "point": {"pixelSize": 8, "color": {"rgba": [0, 200, 255, 255]}},
                "label": {"text": sname, "pixelOffset": {"cartesian2": [10, 0]}},
            })
    up = links[links["up"].to_numpy(dtype=bool)]
    if len(up):
        a = up["a"].astype(str).to_numpy()
        b = up["b"].astype(str).to_numpy()
        kind = up["kind"].astype(str).to_numpy()
        steps = up["step"].to_numpy(dtype=np.int64)
        order = np.lexsort((steps, b, a))
        a, b, kind, steps = a[order], b[order], kind[order], steps[order]
        pair = np.char.add(np.char.add(a.astype(str), "\x00"), b.astype(str))
        cut = np.r_[0, np.nonzero(pair[1:] != pair[:-1])[0] + 1, len(pair)]
        for lo, hi in zip(cut[:-1], cut[1:]):
            spans = up_intervals_s(np.unique(steps[lo:hi]), t_s, step_s)
            isl = kind[lo] == "isl"
            packets.append({
                "id": f"link/{a[lo]}/{b[lo]}", "name": f"{a[lo]} – {b[lo]} ({kind[lo]})",
                "availability": [f"{_iso(epoch, s)}/{_iso(epoch, e)}" for s, e in spans],
                "properties": {"kind": str(kind[lo])},
                "polyline": {
                    "positions": {"references": [f"{a[lo]}#position", f"{b[lo]}#position"]},
                    "arcType": "NONE", "width": 1 if isl else 2,
                    "material": {"solidColor": {"color": {"rgba": [255, 80, 80, 160] if isl else [80, 255, 120, 200]}}},
                    "show": [{"interval": interval, "boolean": False}]
                    + [{"interval": f"{_iso(epoch, s)}/{_iso(epoch, e)}", "boolean": True} for s, e in spans],
                },
            })
    return packets


def czml_from_dir(directory: str | Path, sample_s: float = DEFAULT_SAMPLE_S) -> list[dict]:
    """The CZML packets of a plan directory (`netemu plan -o`) or a run directory (which holds the
    same plan files). Satellite positions are recomputed from the directory's scenario copy."""
    d = Path(directory)
    tables = read_plan(d)
    if not (d / "scenario.toml").is_file():
        raise PlanError(f"{d}: expected the plan's scenario copy scenario.toml beside its tables")
    try:
        scenario = load_scenario(d / "scenario.toml")
    except ScenarioError as e:
        raise PlanError(f"{d}/scenario.toml: cannot load the plan's scenario copy to recompute positions "
                        f"({e}); the files it names must sit beside it as they did beside the original") from None
    track = satellite_track(scenario)
    sats = tables["nodes"][tables["nodes"]["kind"] != "ground"]["name"].tolist()
    try:
        steps = json.loads((d / "summary.json").read_text()).get("steps")
    except (OSError, ValueError):
        steps = None
    if list(track.names) != sats or (steps is not None and steps != len(track.t_s)):
        raise PlanError(f"{d}: the scenario copy no longer gives the plan's satellites and time grid "
                        "(edited after planning?); plan it again")
    stations = [(s.name, s.lat_deg, s.lon_deg, s.alt_m) for s in scenario.ground_stations]
    return czml_packets(scenario.name, scenario.epoch, scenario.step_s, track, stations, tables["links"],
                        tables["nodes"], sample_s=sample_s)


def write_czml(packets: list[dict], path: str | Path) -> int:
    """Write the packets as one JSON array; returns the bytes written."""
    text = json.dumps(packets, separators=(",", ":"), allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return len(text)
