"""Node positions for the report's time view: every node's geocentric latitude, longitude and
altitude at the steps of a window the view shows, decimated for big plans so the page stays small
(every k-th step, k the smallest that keeps positions and per-step link delays within
`MAX_VALUES` numbers; the last step always kept). Written by `netemu run` into the run directory
(`view_positions.parquet`), or by `netemu report` for a directory without it (from the plan's
scenario copy, as the CZML export does)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlanError, ScenarioError

__all__ = ["VIEW_POSITIONS_FILE", "MAX_VALUES", "MAX_FRAMES", "frame_steps", "view_positions",
           "view_positions_of_plan", "view_positions_of_dir"]

VIEW_POSITIONS_FILE = "view_positions.parquet"
MAX_VALUES = 400_000      # numbers the view holds (positions, per-frame link ids and delays): a few MB of JSON
MAX_FRAMES = 300
_R_EARTH_KM = 6371.0


def frame_steps(steps: np.ndarray, per_frame_values: int, max_values: int = MAX_VALUES,
                max_frames: int = MAX_FRAMES) -> tuple[np.ndarray, int]:
    """The window's steps that become frames: every k-th of `steps` (sorted grid indices) from the
    first, with the last always kept, k the smallest that keeps frames × `per_frame_values` within
    `max_values` and the frames within `max_frames`. Returns (steps shown, k)."""
    steps = np.asarray(steps, dtype=np.int64)
    n = len(steps)
    if n == 0:
        return steps, 1
    cap = max(2, min(max_frames, max_values // max(per_frame_values, 1)))
    every = max(1, math.ceil(n / cap))
    keep = np.unique(np.r_[np.arange(0, n, every), n - 1])
    return steps[keep], every


def window_steps(t_s: np.ndarray, t0_s: float, t1_s: float) -> np.ndarray:
    """Grid indices inside [t0_s, t1_s]; for a window shorter than a step, the step holding t0_s."""
    t = np.asarray(t_s, dtype=np.float64)
    k = np.nonzero((t >= t0_s - 1e-9) & (t <= t1_s + 1e-9))[0]
    if not len(k):
        k = np.array([int(np.clip(np.searchsorted(t, t0_s, side="right") - 1, 0, len(t) - 1))])
    return k


def view_positions(names: list[str], kinds: list[str], xyz_km: np.ndarray, t_s: np.ndarray, steps: np.ndarray,
                   stations: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    """`step, t_s, name, kind, lat_deg, lon_deg, alt_km`: satellites from `xyz_km` [len(steps), N, 3]
    (Earth-fixed, geocentric latitude), ground stations (name, lat_deg, lon_deg, alt_m) at every step."""
    r = np.linalg.norm(xyz_km, axis=-1)
    lat = np.degrees(np.arcsin(np.clip(xyz_km[..., 2] / np.where(r > 0, r, 1), -1, 1)))
    lon = np.degrees(np.arctan2(xyz_km[..., 1], xyz_km[..., 0]))
    S, N = len(steps), len(names)
    G = len(stations)
    st = np.array([s[1:] for s in stations], dtype=np.float64).reshape(G, 3)
    return pd.DataFrame({
        "step": np.repeat(np.asarray(steps, np.int32), N + G),
        "t_s": np.repeat(np.asarray(t_s, np.float64), N + G),
        "name": np.tile(np.r_[np.array(names, dtype=object), np.array([s[0] for s in stations], dtype=object)], S),
        "kind": np.tile(np.r_[np.array(kinds, dtype=object), np.full(G, "ground", dtype=object)], S),
        "lat_deg": np.c_[lat, np.tile(st[:, 0], (S, 1))].ravel(),
        "lon_deg": np.c_[lon, np.tile(st[:, 1], (S, 1))].ravel(),
        "alt_km": np.c_[r - _R_EARTH_KM, np.tile(st[:, 2] / 1e3, (S, 1))].ravel(),
    })


def _per_frame(n_nodes: int, links: pd.DataFrame, n_steps: int) -> int:
    return 2 * n_nodes + 2 * int(links["up"].sum() / max(n_steps, 1)) + 8


def view_positions_of_plan(plan, t0_s: float, t1_s: float, max_values: int = MAX_VALUES) -> pd.DataFrame:
    """The view's positions for the window [t0_s, t1_s] of a `Plan` (its track, no recomputing)."""
    track, sched = plan.track, plan.schedule
    kinds = dict(zip(sched.nodes["name"].astype(str), sched.nodes["kind"].astype(str)))
    stations = [(s.name, s.lat_deg, s.lon_deg, s.alt_m) for s in plan.scenario.ground_stations]
    steps, _ = frame_steps(window_steps(track.t_s, t0_s, t1_s),
                           _per_frame(len(track.names) + len(stations), sched.links, len(track.t_s)), max_values)
    return view_positions(list(track.names), [kinds.get(n, "satellite") for n in track.names], track.xyz_km[steps],
                          track.t_s[steps], steps, stations)


def view_positions_of_dir(directory: str | Path, max_values: int = MAX_VALUES) -> pd.DataFrame:
    """The view's positions for a plan or run directory (its window: run.json's, else the whole
    plan), satellites recomputed from the directory's scenario copy at the shown steps only."""
    from .orbits import time_grid_s
    from .planner import satellite_track
    from .scenario import load_scenario
    d = Path(directory)
    try:
        scenario = load_scenario(d / "scenario.toml")
    except (ScenarioError, OSError) as e:
        raise PlanError(f"{d}/scenario.toml: cannot load the plan's scenario copy to place the satellites ({e}); "
                        "the files it names must sit beside it as they did beside the original") from None
    try:
        w = (json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}).get("window")
        links = pd.read_parquet(d / "links.parquet", columns=["step", "up"])
        nodes = pd.read_csv(d / "nodes.csv")
    except (OSError, ValueError) as e:
        raise PlanError(f"{d}: cannot read the plan's tables ({e})") from None
    grid = time_grid_s(scenario.duration_s, scenario.step_s)
    t0, t1 = (float(w["t0_s"]), float(w["t_end_s"])) if w else (float(grid[0]), float(grid[-1]))
    stations = [(s.name, s.lat_deg, s.lon_deg, s.alt_m) for s in scenario.ground_stations]
    sats = nodes[nodes["kind"].astype(str) != "ground"]
    steps, _ = frame_steps(window_steps(grid, t0, t1), _per_frame(len(nodes), links, len(grid)), max_values)
    track = satellite_track(scenario, grid[steps])
    if list(track.names) != sats["name"].astype(str).tolist():
        raise PlanError(f"{d}: the scenario copy no longer gives the plan's satellites (edited after planning?)")
    return view_positions(list(track.names), sats["kind"].astype(str).tolist(), track.xyz_km, grid[steps], steps,
                          stations)
