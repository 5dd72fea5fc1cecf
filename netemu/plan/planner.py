"""The planner: scenario → orbits → topology → routing, and the plan's files.

`make_plan` is pure (no files written, no root); `write_plan` writes the output contract:

- `nodes.csv`: name, kind (satellite|ground|compute), group, norad_id
- `links.parquet`: t_s, a, b, kind (isl|gsl), distance_km, delay_ms, rate_mbps, up (+ step, loss_pct)
- `paths.parquet`: t_s, src, dst, delay_ms, hops (+ step), reachable pairs only
- `routes.parquet`: t_s, src, dst, path (+ step), at t = 0 and whenever a pair's path changes
- `events.csv`: t_s, event (link_up|link_down|handover|path_change), a, b, detail
- `power.parquet` (only for a scenario with `[[compute]]`): t_s, node, sunlit, soc_pct, power_w,
  active_accelerators of every modelled compute satellite at every step
- `summary.json`, and `scenario.toml` (a copy of the input)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .. import __version__
from ..errors import PlanError
from .orbits import (Track, formation_satrecs, propagate, station_ecef_km, sun_ecef_km, time_grid_s,
                     walker_satrecs)
from .power import energy_balance, energy_balance_from, power_table, sunlit_fraction
from .routing import Routes, compute_routes, path_events, routing_pool
from .scenario import Formation, Scenario, TLEGroup, WalkerShell, group_node_names
from .faults import believed_up, blackholed, expand_group_faults, fault_events
from .topology import Schedule, build_schedule, plus_grid_pairs

__all__ = ["Plan", "make_plan", "write_plan", "read_plan", "satellite_track", "plan_power", "PLAN_FILES",
           "plan_memory_bytes", "check_plan_memory"]

PLAN_FILES = ("nodes.csv", "links.parquet", "paths.parquet", "routes.parquet", "events.csv", "summary.json")


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    track: Track
    station_xyz_km: np.ndarray
    schedule: Schedule
    routes: Routes
    events: pd.DataFrame
    timings_s: dict
    warnings: tuple[str, ...] = ()
    """Problems that do not stop planning but make results doubtful (also in summary.json)."""
    power: pd.DataFrame | None = None
    """`power.parquet`'s rows when the scenario has [[compute]] sections, else None."""
    blackholed: pd.DataFrame | None = None
    """With faults: `step, src, dst` where the pair's installed path crossed a failed link not yet
    detected (`netemu.plan.faults.blackholed`); those pair-steps are absent from the paths."""
    faults: tuple = ()
    """Every fault applied: the scenario's deterministic ones, then those its group faults drew."""
    detour: dict | None = None
    """With faults: `detour_penalty`'s figures (summary.json's faults.detour)."""
    routing_view: Schedule | None = None
    """With faults: the schedule as routing knows it (`netemu.plan.faults.believed_up`)."""

    @property
    def routing_schedule(self) -> Schedule:
        """The schedule routes are computed from: `schedule`, except that with faults a failed
        link stays up until `failure_detection_s` has passed. Next hops installed in an emulation
        (`routing.next_hop_changes`) should come from this one, the link states from `schedule`."""
        return self.routing_view if self.routing_view is not None else self.schedule

    def summary(self) -> dict:
        return plan_summary(self)

    def _facts(self) -> list[tuple[str, str]]:
        sc, L = self.scenario, self.schedule.links
        kinds = self.schedule.nodes["kind"].value_counts()
        return [
            ("scenario", sc.name),
            ("nodes", f"{int(kinds.get('satellite', 0)):,} satellites, {int(kinds.get('compute', 0)):,} compute, "
                      f"{int(kinds.get('ground', 0)):,} ground stations"),
            ("time", f"{len(self.track.t_s):,} steps of {sc.step_s:g} s from "
                     f"{sc.epoch.isoformat().replace('+00:00', 'Z')}"),
            ("links", f"{len(L):,} link-steps ({int((L['kind'] == 'isl').sum()):,} ISL)"),
            ("paths", f"{len(sc.endpoints)} endpoints, {len(self.routes.paths):,} reachable pair-steps"),
            ("warnings", str(len(self.warnings))),
        ]

    def __repr__(self) -> str:
        return "<netemu Plan " + "; ".join(f"{k}: {v}" for k, v in self._facts()) + ">"

    def _repr_html_(self) -> str:
        import html
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self._facts())
        return f"<div><b>netemu Plan</b><table>{rows}</table></div>"


def satellite_track(scenario: Scenario, t_s: np.ndarray | None = None) -> Track:
    """Propagate every satellite of the scenario (groups in order) over its time grid."""
    from sgp4.api import Satrec
    if t_s is None:
        t_s = time_grid_s(scenario.duration_s, scenario.step_s)
    satrecs, names = [], []
    for g in scenario.satellites:
        if isinstance(g, WalkerShell):
            satrecs += walker_satrecs(g, scenario.epoch, len(satrecs) + 1)
        elif isinstance(g, Formation):
            satrecs += formation_satrecs(g, scenario.epoch, len(satrecs) + 1)
        elif isinstance(g, TLEGroup):
            satrecs += [Satrec.twoline2rv(r.line1, r.line2) for r in g.records]
        names += group_node_names(g)
    return propagate(satrecs, names, scenario.epoch, t_s)


def plan_power(scenario: Scenario, track: Track, carry: dict | None = None) -> pd.DataFrame | None:
    """Sunlight, state of charge, power and active accelerators of every satellite of the
    scenario's [[compute]] groups over the track's steps (None without [[compute]]).

    With `carry` (a dict, empty before the first block), the track holds one block of the
    window's steps: each [[compute]] section's state of charge after the block is kept there and
    the next block starts from it (`netemu.plan.stream`)."""
    if not scenario.compute:
        return None
    offs, off = {}, 0
    for g in scenario.satellites:
        offs[g.name] = (off, off + g.count)
        off += g.count
    sun = sun_ecef_km(track.epoch, track.t_s)
    parts = []
    for i, c in enumerate(scenario.compute):
        lo, hi = offs[c.group]
        f = sunlit_fraction(track.xyz_km[:, lo:hi], sun)
        if carry is None:
            soc, power, active = energy_balance(c, f, scenario.step_s)
        else:
            start = carry.get(i, np.full(hi - lo, c.initial_soc_pct))
            soc, power, active, carry[i] = energy_balance_from(c, f, scenario.step_s, start)
        parts.append((list(track.names[lo:hi]), f, soc, power, active))
    names = [n for p in parts for n in p[0]]
    cat = [np.concatenate([p[i] for p in parts], axis=1) for i in range(1, 5)]
    return power_table(track.t_s, names, *cat)


def plan_memory_bytes(scenario: Scenario, workers: int | None = None) -> dict[str, int]:
    """Peak memory (bytes) planning `scenario` will need, by part, estimated before allocating.

    Parts: `orbits` (SGP4 output and the Earth-fixed track, ~80 B per satellite-step), `lasers`
    (candidate pairs of mesh patterns, evaluated a step block at a time), `links` (link-steps
    expected from the patterns and the ground model, ~150 B each through the link table),
    `routing` (each routing process holds [endpoints × nodes] trees and the pairs' padded
    paths), `routes` (every pair's path as node lists, then text, at t = 0: ~120 B per hop) and
    `paths` (~60 B per endpoint pair per step, the path table and its copies). Paths are taken
    as 32 hops long, or a formation's rows + columns where that is more (its mesh lasers are
    short). `total` is their sum plus the interpreter's ~300 MiB. Measured (peak RSS of parent
    and the largest routing process, which has a sibling): a 1,500-satellite formation mesh
    over 7 steps 11.4 + 3.6 GB against 14.0 GB estimated; starlink-s1 over 60 s 0.76 + 0.43 GB
    against 0.85 GB; beijing-orbital-dc 0.50 + 0.39 GB against 1.08 GB.
    """
    T = scenario.n_steps
    sizes = {g.name: g.count for g in scenario.satellites}
    N = sum(sizes.values())
    G = len(scenario.ground_stations)
    E = len(scenario.endpoints)
    pairs = E * (E - 1) // 2
    lasers = 0
    link_steps = 0
    for m in scenario.isls:
        n = [sizes[g] for g in m.groups]
        if m.pattern in ("cluster-mesh",):
            L = n[0] * (n[0] - 1) // 2 if len(n) == 1 else n[0] * n[1]
            # index pairs, then per block of steps: two endpoint positions, distance and masks
            lasers = max(lasers, L * 48 + max(L, 4_000_000) * 80)
            link_steps += T * min(L, sum(n) * (m.terminals or 12))
        elif m.pattern == "explicit":
            link_steps += T * len(m.pairs)
        elif m.pattern == "plus-grid":
            link_steps += T * 2 * n[0]
        else:
            link_steps += T * (m.terminals or m.k) * sum(n) // 2
    if scenario.gsl is not None:
        per_station = scenario.gsl.terminals if scenario.gsl.policy != "all" else 8
        link_steps += T * G * per_station
    hops = max([32] + [math.ceil(g.count / g.columns) + g.columns for g in scenario.satellites
                        if isinstance(g, Formation)])
    V = N + 2 * G
    procs = max(1, min(workers or os.cpu_count() or 1, T))
    parts = {
        "orbits": T * N * 80,
        "lasers": lasers,
        "links": link_steps * 150,
        "routing": procs * (E * V * 12 + pairs * (hops * 8 * 2 + 64)),
        "routes": pairs * hops * 120,
        "paths": T * pairs * 60,
    }
    parts["total"] = sum(parts.values()) + 300 * 2**20
    return parts


def _mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_plan_memory(scenario: Scenario, available_bytes: int | None = None, workers: int | None = None) -> int:
    """Raise `PlanError` if planning `scenario` needs more memory than is available (default: the
    machine's MemAvailable). Returns the estimated need (bytes)."""
    need = plan_memory_bytes(scenario, workers)
    avail = _mem_available_bytes() if available_bytes is None else available_bytes
    if avail is not None and need["total"] > avail:
        worst = max((k for k in need if k != "total"), key=need.get)
        gib = 2**30
        raise PlanError(
            f"{scenario.path}: planning needs about {need['total'] / gib:,.1f} GiB of memory "
            f"(most for {worst}: {need[worst] / gib:,.1f} GiB; {sum(g.count for g in scenario.satellites):,} "
            f"satellites × {scenario.n_steps:,} steps, {len(scenario.endpoints):,} endpoints), more than "
            f"the {avail / gib:,.1f} GiB available; shorten duration_s, raise step_s, or name fewer "
            "endpoints in [endpoints] nodes")
    return need["total"]


def make_plan(scenario: Scenario, workers: int | None = None,
              progress: Callable[[str], None] | None = None) -> Plan:
    """Compute the whole plan of a scenario: track, schedule, routes and events.

    Raises `PlanError` before allocating anything when the estimated memory need
    (`plan_memory_bytes`) exceeds the memory available.
    """
    check_plan_memory(scenario, workers=workers)
    pool = routing_pool(workers) if scenario.n_steps > 1 else None
    try:
        return _make_plan(scenario, workers, progress, pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _make_plan(scenario: Scenario, workers: int | None, progress: Callable[[str], None] | None,
               pool) -> Plan:
    say = progress or (lambda msg: None)
    warnings = list(scenario.warnings)
    for w in warnings:
        say(f"warning: {w}")
    timings = {}
    t0 = time.perf_counter()
    track = satellite_track(scenario)
    st = scenario.ground_stations
    xyz, up = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    timings["orbits"] = time.perf_counter() - t0
    n_bad = int((~track.ok).any(axis=0).sum())
    say(f"orbits: {len(track.names):,} satellites × {len(track.t_s):,} steps "
        f"({timings['orbits']:.1f} s{f', {n_bad} failed to propagate' if n_bad else ''})")

    t0 = time.perf_counter()
    faults = tuple(scenario.faults)
    if scenario.group_faults:
        offs, off, by_group = {}, 0, {}
        for g in scenario.satellites:
            offs[g.name], by_group[g.name] = off, group_node_names(g)
            off += g.count
        faults += tuple(expand_group_faults(scenario.group_faults, by_group, offs, track.t_s, track.xyz_km,
                                            scenario.duration_s))
        say(f"faults: {len(faults) - len(scenario.faults):,} drawn from {len(scenario.group_faults)} group fault model(s)")
    schedule = build_schedule(scenario, track, xyz, up, progress=lambda m: say("  " + m), faults=faults)
    timings["topology"] = time.perf_counter() - t0
    say(f"topology: {len(schedule.links):,} link-steps ({timings['topology']:.1f} s)")

    t0 = time.perf_counter()
    last = [0.0]

    def route_progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 2.0 or done == total:
            last[0] = now
            say(f"  routing: {done:,}/{total:,} steps ({100 * done / total:.0f} %)")

    # With faults, routes follow the network as the control plane knows it: a failed link stays
    # in use for failure_detection_s, and pairs whose path crosses it are unreachable meanwhile.
    view, believed, lost = schedule, None, None
    if faults:
        believed = believed_up(schedule.links, schedule.t_s, len(schedule.nodes),
                               scenario.routing.failure_detection_s)
        view = Schedule(schedule.nodes, schedule.t_s, schedule.links.assign(up=believed))
    routes = compute_routes(view, scenario.endpoints, scenario.routing.metric,
                            scenario.routing.ground_relay, workers=workers, progress=route_progress, pool=pool)
    if believed is not None:
        lost = blackholed(routes.routes, schedule.links, believed)
        if len(lost):
            routes = Routes(routes.endpoints, drop_blackholed(routes.paths, lost), routes.routes)
    detour = detour_penalty(scenario, schedule, routes, workers=workers) if faults else None
    timings["routing"] = time.perf_counter() - t0
    say(f"routing: {len(routes.paths):,} pair-steps, {len(routes.routes):,} route rows "
        f"({timings['routing']:.1f} s)")

    for w in plan_warnings(scenario, schedule, routes):
        say(f"warning: {w}")
        warnings.append(w)

    t0 = time.perf_counter()
    parts = [schedule.changes(), path_events(routes)]
    if faults:
        parts.append(fault_events(faults, schedule.t_s, scenario.duration_s,
                                  scenario.routing.failure_detection_s, parts[1]))
    events = pd.concat(parts, ignore_index=True)
    events = events.sort_values(["t_s", "event"], kind="stable", ignore_index=True)
    timings["events"] = time.perf_counter() - t0
    power = None
    if scenario.compute:
        t0 = time.perf_counter()
        power = plan_power(scenario, track)
        timings["power"] = time.perf_counter() - t0
        say(f"power: {power['node'].nunique():,} compute satellites × {len(track.t_s):,} steps "
            f"({timings['power']:.1f} s)")
    return Plan(scenario, track, xyz, schedule, routes, events, timings, tuple(warnings), power, lost, faults, detour,
                view if believed is not None else None)


def drop_blackholed(paths: pd.DataFrame, lost: pd.DataFrame) -> pd.DataFrame:
    """The paths without the pair-steps `lost` (`netemu.plan.faults.blackholed`)."""
    drop = paths[["step", "src", "dst"]].astype({"src": str, "dst": str}).merge(
        lost.astype({"step": paths["step"].dtype}), how="left", indicator=True)["_merge"].eq("both").to_numpy()
    return paths[~drop].reset_index(drop=True)


LINK_SHORTFALL = 0.5
"""Warn when a laser pattern gives fewer than this share of the links it is built to make."""
REACHABLE_AT_LEAST = 0.5
"""Warn when a workload's pair of nodes is reachable at fewer than this share of the steps."""
_SAMPLED_STEPS = 24


def plan_warnings(scenario: Scenario, schedule: Schedule, routes: Routes) -> list[str]:
    """What makes a plan doubtful though it computed: laser patterns that give far fewer links
    than they are built to (neighbours beyond line of sight or range), satellite groups their
    own lasers leave in pieces, and workload node pairs that are never or rarely reachable."""
    counts = WarningCounts(scenario, len(schedule.nodes), len(schedule.t_s))
    counts.add(schedule.links, routes.paths, 0, len(schedule.t_s))
    return counts.messages()


class WarningCounts:
    """What `plan_warnings` counts, gathered a block of steps at a time (`add`: the links and
    paths of steps [k0, k1) of the window, steps counted in the window), then `messages`."""

    def __init__(self, scenario: Scenario, n_nodes: int, n_steps: int):
        self.sc, self.n, self.T = scenario, n_nodes, n_steps
        self.offs, off = {}, 0
        for g in scenario.satellites:
            self.offs[g.name] = (off, off + g.count)
            off += g.count
        n = n_nodes
        self.in_group = {g: (np.arange(n) >= lo) & (np.arange(n) < hi) for g, (lo, hi) in self.offs.items()}
        self.got = [[0, 0] for _ in scenario.isls]   # per model (plus-grid: intra-, cross-plane)
        self.sampled = np.unique(np.linspace(0, n_steps - 1, min(n_steps, _SAMPLED_STEPS)).astype(int))
        self.groups = list(dict.fromkeys(m.groups[0] for m in scenario.isls if len(m.groups) == 1))
        self.split = {g: [] for g in self.groups}
        self.smallest = {g: self.offs[g][1] - self.offs[g][0] for g in self.groups}
        E = len(scenario.endpoints)
        self.reach = np.zeros(E * E, np.int64) if scenario.workloads else None

    def add(self, L: pd.DataFrame, paths: pd.DataFrame, k0: int, k1: int) -> None:
        sc, n, offs, in_group = self.sc, self.n, self.offs, self.in_group
        is_isl = (L["kind"] == "isl").to_numpy()
        a = L["a"].cat.codes.to_numpy()[is_isl].astype(np.int64)
        b = L["b"].cat.codes.to_numpy()[is_isl].astype(np.int64)
        key = a * n + b
        for i, m in enumerate(sc.isls):
            if m.pattern == "plus-grid":
                shell = sc.group(m.groups[0])
                pa, pb, cross = plus_grid_pairs(shell, offs[shell.name][0], m.isl_shift)
                for j, sel in enumerate((~cross, cross)):
                    self.got[i][j] += int(np.isin(key, pa[sel] * n + pb[sel]).sum())
                continue
            if len(m.groups) == 1:
                mask = in_group[m.groups[0]][a] & in_group[m.groups[0]][b]
            else:
                g0, g1 = in_group[m.groups[0]], in_group[m.groups[1]]
                mask = (g0[a] & g1[b]) | (g1[a] & g0[b])
            self.got[i][0] += int(mask.sum())
        # Groups their own lasers leave in pieces (at sampled steps; only up links).
        up = L["up"].to_numpy()[is_isl]
        steps = L["step"].to_numpy()[is_isl]
        here = self.sampled[(self.sampled >= k0) & (self.sampled < k1)]
        for gname in self.groups:
            lo, hi = offs[gname]
            if hi - lo < 2:
                continue
            inside = up & in_group[gname][a] & in_group[gname][b]
            for k in here:
                sel = inside & (steps == k)
                graph = sp.csr_matrix((np.ones(int(sel.sum())), (a[sel] - lo, b[sel] - lo)), shape=(hi - lo, hi - lo))
                parts, label = connected_components(graph, directed=False)
                if parts > 1:
                    self.split[gname].append(parts)
                    self.smallest[gname] = min(self.smallest[gname], int(np.bincount(label).max()))
        if self.reach is not None:
            E = len(sc.endpoints)
            self.reach += np.bincount(paths["src"].cat.codes.to_numpy().astype(np.int64) * E
                                      + paths["dst"].cat.codes.to_numpy().astype(np.int64), minlength=E * E)

    def messages(self) -> list[str]:
        sc, T, offs = self.sc, self.T, self.offs
        out: list[str] = []
        for i, m in enumerate(sc.isls):
            where = f"isl[{i}] {m.pattern} {'+'.join(m.groups)}"
            if m.pattern == "plus-grid":
                shell = sc.group(m.groups[0])
                _, _, cross = plus_grid_pairs(shell, offs[shell.name][0], m.isl_shift)
                for j, (label, sel) in enumerate((("intra-plane", ~cross), ("cross-plane", cross))):
                    want = int(sel.sum())
                    if want == 0:
                        continue
                    got = self.got[i][j] / T
                    if got < LINK_SHORTFALL * want:
                        out.append(f"{where}: {got:,.1f} of {want:,} {label} lasers per step on average "
                                   f"({100 * got / want:.0f} %): neighbours beyond line of sight (grazing altitude "
                                   f"{m.grazing_altitude_km:g} km) or range; more satellites per plane or planes, "
                                   "or a higher shell")
                continue
            if len(m.groups) == 1:
                sizes = [offs[m.groups[0]][1] - offs[m.groups[0]][0]]
            else:
                sizes = [offs[g][1] - offs[g][0] for g in m.groups]
            got = self.got[i][0] / T
            if m.pattern == "explicit":
                want = len(m.pairs)
            elif m.pattern == "nearest-k":
                per = min(m.k, m.terminals or m.k)
                want = per * sizes[0] // 2 if len(sizes) == 1 else per * min(sizes)
            else:  # cluster-mesh: range decides; warn only when nothing links
                want = 1
            if got < LINK_SHORTFALL * want:
                out.append(f"{where}: {got:,.1f} lasers per step on average, expected about {want:,} "
                           f"({100 * got / want:.0f} %): satellites beyond line of sight or max_range_km")
        for gname in self.groups:
            lo, hi = offs[gname]
            split = self.split[gname]
            if split:
                out.append(f"group {gname}: its lasers leave it in up to {max(split):,} disconnected parts at "
                           f"{len(split)} of {len(self.sampled)} sampled steps (the largest part down to "
                           f"{self.smallest[gname]:,} of {hi - lo:,} satellites)")
        # Workload node pairs (client-server, allreduce ring neighbours) and how often they are reachable.
        if sc.workloads:
            ep = {e: i for i, e in enumerate(sc.endpoints)}
            E = len(ep)
            for w in sc.workloads:
                if w.server is not None:
                    pairs = [(c, w.server) for c in w.clients]
                else:
                    pairs = [(w.clients[j], w.clients[(j + 1) % len(w.clients)]) for j in range(len(w.clients))]
                for x, y in pairs:
                    i, j = sorted((ep[x], ep[y]))
                    share = self.reach[i * E + j] / T
                    if share < REACHABLE_AT_LEAST:
                        how = "never" if share == 0 else f"at only {100 * share:.0f} % of the steps"
                        out.append(f"workload {w.name}: {x} and {y} are {how} reachable from each other")
        return out


class LinkCounts:
    """summary.json's `links` figures, gathered a block of steps at a time (`add`: link rows,
    steps counted in the window). A kind's mean length is the sum of per-step sums over the
    link-steps, whatever the blocks."""

    def __init__(self, n_steps: int):
        self.T = n_steps
        self.kinds: dict[str, list] = {}

    def add(self, L: pd.DataFrame) -> None:
        T = self.T
        kind_code = L["kind"].cat.codes.to_numpy()
        step, dist_all, up = L["step"].to_numpy(), L["distance_km"].to_numpy(), L["up"].to_numpy()
        for code, kind in enumerate(L["kind"].cat.categories):
            sel = kind_code == code
            dist = dist_all[sel]
            acc = self.kinds.setdefault(kind, [np.zeros(T, np.int64), np.zeros(T), None, 0])
            acc[0] += np.bincount(step[sel], minlength=T)
            acc[1] += np.bincount(step[sel], weights=dist, minlength=T)
            if len(dist):
                acc[2] = dist.max() if acc[2] is None else max(acc[2], dist.max())
            acc[3] += int(np.count_nonzero(up[sel]))

    def by_kind(self) -> dict:
        T, out = self.T, {}
        for kind, (per_step, dist_sum, dist_max, n_up) in self.kinds.items():
            n = int(per_step.sum())
            out[kind] = {
                "links_per_step_mean": round(float(per_step.mean()), 2) if T else 0.0,
                "links_per_step_min": int(per_step.min()) if T else 0,
                "links_per_step_max": int(per_step.max()) if T else 0,
                "distance_km_mean": round(float(dist_sum.sum() / n), 1) if n else None,
                "distance_km_max": round(float(dist_max), 1) if n else None,
                "up_fraction": round(n_up / n, 4) if n else None,
            }
        return out


def plan_summary(plan: Plan) -> dict:
    sc, sched, routes = plan.scenario, plan.schedule, plan.routes
    T = len(sched.t_s)
    links = LinkCounts(T)
    links.add(sched.links)
    p = routes.paths
    reach = np.bincount(p["step"].to_numpy(), minlength=T)
    delay = {
        "min": round(float(p["delay_ms"].min()), 3) if len(p) else None,
        "median": round(float(p["delay_ms"].median()), 3) if len(p) else None,
        "max": round(float(p["delay_ms"].max()), 3) if len(p) else None,
    }
    hops_median = float(p["hops"].median()) if len(p) else None
    ev = plan.events["event"].value_counts()
    events = {e: int(ev.get(e, 0)) for e in ("link_up", "link_down", "handover", "path_change")}
    failed = int((~plan.track.ok).any(axis=0).sum())
    s = summary_dict(sc, sched.nodes, T, links, reach, delay, hops_median,
                     _delay_by_pair_kind(p, sched.nodes, sc.endpoints), events, failed, plan.timings_s,
                     plan.warnings)
    return s | ({"faults": _fault_summary(plan)} if plan.faults else {})


def summary_dict(sc: Scenario, nodes: pd.DataFrame, T: int, links: LinkCounts, reach_per_step: np.ndarray,
                 delay: dict, hops_median: float | None, by_pair_kind: dict, events: dict, failed: int,
                 timings_s: dict, warnings) -> dict:
    """summary.json from its figures (`plan_summary`; `netemu.plan.stream` gathers them block by block)."""
    E = len(sc.endpoints)
    n_pairs = E * (E - 1) // 2
    reach = pd.Series(reach_per_step / max(n_pairs, 1))
    kinds = nodes["kind"].value_counts()
    return {
        "netemu_version": __version__,
        "scenario": sc.name,
        "scenario_file": sc.path.name,
        "epoch": sc.epoch.isoformat().replace("+00:00", "Z"),
        "duration_s": sc.duration_s,
        "step_s": sc.step_s,
        "steps": T,
        "nodes": {"satellite": int(kinds.get("satellite", 0)), "compute": int(kinds.get("compute", 0)),
                  "ground": int(kinds.get("ground", 0))},
        "satellites_failed_to_propagate": failed,
        "links": links.by_kind(),
        "endpoints": E,
        "endpoint_pairs": n_pairs,
        "reachable_pair_fraction_mean": round(float(reach.mean()), 4) if T else 0.0,
        "reachable_pair_fraction_min": round(float(reach.min()), 4) if T else 0.0,
        "path_delay_ms": delay,
        "path_hops_median": hops_median,
        "path_delay_ms_by_pair_kind": by_pair_kind,
        "events": events,
        "routing_metric": sc.routing.metric,
        "timings_s": {k: round(v, 3) for k, v in timings_s.items()},
        "warnings": list(warnings),
    }


DETOUR_SAMPLED_STEPS = 64
"""Steps with faults at which the healthy network is routed too, to measure the detours."""


def detour_penalty(scenario: Scenario, schedule: Schedule, routes: Routes, workers: int | None = None,
                   samples: int = DETOUR_SAMPLED_STEPS) -> dict:
    """The path-delay penalty of faults: at up to `samples` steps where a fault holds a link down
    (evenly spread), route the network without the faults (links down for a fault taken as up)
    and compare each pair's delay with the plan's. Returns the sampled steps, the pair-steps
    compared (reachable in both), those on a longer path and the added delay (ms): mean over the
    detoured ones, p99 and max; and pair-steps reachable only without the faults."""
    L = schedule.links
    fault = (L["down_reason"] == "fault").to_numpy()
    pick = detour_steps(L["step"].to_numpy()[fault], samples)
    return detour_figures(scenario, schedule.nodes, schedule.t_s, pick, L[L["step"].isin(pick)],
                          routes.paths[routes.paths["step"].isin(pick)], workers)


def detour_steps(fault_steps: np.ndarray, samples: int = DETOUR_SAMPLED_STEPS) -> np.ndarray:
    """The steps `detour_penalty` samples: up to `samples` of the steps where a fault holds a
    link down (`fault_steps`, any order, repeats allowed), evenly spread."""
    steps = np.unique(fault_steps)
    if len(steps) == 0:
        return steps.astype(np.int64)
    return np.unique(steps[np.linspace(0, len(steps) - 1, min(len(steps), samples)).round().astype(int)])


def detour_figures(scenario: Scenario, nodes: pd.DataFrame, t_s: np.ndarray, pick: np.ndarray,
                   links: pd.DataFrame, paths: pd.DataFrame, workers: int | None = None) -> dict:
    """`detour_penalty`'s figures from the links and paths of its sampled steps `pick` only
    (window steps; the plan's links and paths at those steps, in the plan's order)."""
    out = {"sampled_steps": 0, "pair_steps_compared": 0, "pair_steps_detoured": 0, "added_delay_ms_mean": None,
           "added_delay_ms_p99": None, "added_delay_ms_max": None, "pair_steps_cut_off": 0}
    if len(pick) == 0:
        return out
    sub = links
    new_step = np.searchsorted(pick, sub["step"].to_numpy()).astype(np.int32)
    healthy_links = sub.assign(step=new_step, up=sub["up"].to_numpy() | (sub["down_reason"] == "fault").to_numpy())
    healthy = compute_routes(Schedule(nodes, t_s[pick], healthy_links.reset_index(drop=True)),
                             scenario.endpoints, scenario.routing.metric, scenario.routing.ground_relay,
                             workers=min(workers or 1, 2))
    p = paths
    got = p.assign(step=np.searchsorted(pick, p["step"].to_numpy()))[["step", "src", "dst", "delay_ms"]]
    both = healthy.paths[["step", "src", "dst", "delay_ms"]].merge(got, on=["step", "src", "dst"], how="left",
                                                                   suffixes=("_healthy", ""))
    reach = both["delay_ms"].notna().to_numpy()
    added = (both["delay_ms"] - both["delay_ms_healthy"]).to_numpy()[reach]
    longer = added[added > 1e-9]
    out.update(sampled_steps=int(len(pick)), pair_steps_compared=int(reach.sum()),
               pair_steps_detoured=int(len(longer)), pair_steps_cut_off=int((~reach).sum()))
    if len(longer):
        out.update(added_delay_ms_mean=round(float(longer.mean()), 3),
                   added_delay_ms_p99=round(float(np.percentile(longer, 99)), 3),
                   added_delay_ms_max=round(float(longer.max()), 3))
    return out


FAULT_SUMMARY_PAIRS = 50
"""Pairs listed in summary.json's faults section (most time unreachable first)."""


def _fault_summary(plan: Plan) -> dict:
    """Faults by kind, link-steps they took down, and per endpoint pair the time it spent
    unreachable (from every cause) and the part of it lost to undetected failures."""
    sc, sched, p = plan.scenario, plan.schedule, plan.routes.paths
    E = len(sc.endpoints)
    reach = np.bincount(p["src"].cat.codes.to_numpy().astype(np.int64) * E
                        + p["dst"].cat.codes.to_numpy().astype(np.int64), minlength=E * E)
    lost = plan.blackholed if plan.blackholed is not None else pd.DataFrame({"src": [], "dst": []})
    lost_n = lost.groupby(["src", "dst"]).size().to_dict() if len(lost) else {}
    return fault_summary_dict(sc, plan.faults, len(sched.t_s), reach, lost_n, len(lost),
                              int((sched.links["down_reason"] == "fault").sum()), plan.detour)


def fault_summary_dict(sc: Scenario, faults, T: int, reach: np.ndarray, lost_n: dict, n_lost: int,
                       link_steps_down: int, detour: dict | None) -> dict:
    """summary.json's faults section from its figures: `reach[src·E + dst]` the pair-steps each
    endpoint pair (codes) is reachable, `lost_n[(src, dst)]` its blackholed pair-steps (names),
    `n_lost` their total (`_fault_summary`; `netemu.plan.stream` counts them block by block)."""
    E = len(sc.endpoints)
    kinds = pd.Series([f.source or f.kind for f in faults], dtype=object).value_counts()
    rows = []
    for i in range(E):
        for j in range(i + 1, E):
            down = T - int(reach[i * E + j])
            if down:
                x, y = sc.endpoints[i], sc.endpoints[j]
                rows.append((down, f"{x}|{y}", lost_n.get((x, y), 0)))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return {
        "count": len(faults),
        "by_kind": {k: int(v) for k, v in kinds.items()},
        "failure_detection_s": sc.routing.failure_detection_s,
        "link_steps_down": int(link_steps_down),
        "blackholed_pair_steps": int(n_lost),
        "pairs_ever_unreachable": len(rows),
        "detour": detour,
        "unreachable_s_by_pair": {
            key: {"unreachable_s": round(down * sc.step_s, 6), "blackholed_s": round(n * sc.step_s, 6)}
            for down, key, n in rows[:FAULT_SUMMARY_PAIRS]},
    }


def _delay_by_pair_kind(paths: pd.DataFrame, nodes: pd.DataFrame, endpoints) -> dict:
    """Path delay statistics per kind of pair (e.g. ground-compute), over all steps."""
    kind_of = dict(zip(nodes["name"], nodes["kind"]))
    ep_kind = np.array([kind_of[e] for e in endpoints], dtype=object)
    src, dst = paths["src"].cat.codes.to_numpy(), paths["dst"].cat.codes.to_numpy()
    labels = np.array(["-".join(sorted((x, y))) for x in ep_kind for y in ep_kind], dtype=object)
    code = src.astype(np.int64) * len(endpoints) + dst
    out = {}
    for label in sorted(set(labels[np.unique(code)])) if len(code) else []:
        mask = np.isin(code, np.nonzero(labels == label)[0])
        d = paths["delay_ms"].to_numpy()[mask]
        out[label] = {"min": round(float(d.min()), 3), "median": round(float(np.median(d)), 3),
                      "p99": round(float(np.percentile(d, 99)), 3), "max": round(float(d.max()), 3)}
    return out


def summary_text(s: dict) -> str:
    """The summary in plain words, a few lines."""
    n = s["nodes"]
    isl, gsl = s["links"]["isl"], s["links"]["gsl"]
    lines = [
        f"Scenario {s['scenario']}: {n['satellite']} satellites, {n['compute']} compute satellites, "
        f"{n['ground']} ground stations; {s['steps']:,} steps of {s['step_s']:g} s from {s['epoch']}.",
        f"Laser ISLs: {isl['links_per_step_mean']:g} per step on average (min {isl['links_per_step_min']}, "
        f"max {isl['links_per_step_max']}), mean length {isl['distance_km_mean'] or 0:g} km.",
        f"Ground links: {gsl['links_per_step_mean']:g} per step on average (min {gsl['links_per_step_min']}, "
        f"max {gsl['links_per_step_max']}).",
        f"Endpoints: {s['endpoints']} ({s['endpoint_pairs']:,} pairs); on average "
        f"{100 * s['reachable_pair_fraction_mean']:.1f} % of pairs reachable (worst step "
        f"{100 * s['reachable_pair_fraction_min']:.1f} %).",
    ]
    d = s["path_delay_ms"]
    if d["median"] is not None:
        lines.append(f"One-way path delay: min {d['min']:g} ms, median {d['median']:g} ms, max {d['max']:g} ms; "
                     f"median {s['path_hops_median']:g} hops.")
    for label, st in s["path_delay_ms_by_pair_kind"].items():
        lines.append(f"  {label} pairs: median {st['median']:g} ms, p99 {st['p99']:g} ms, max {st['max']:g} ms.")
    e = s["events"]
    lines.append(f"Events: {e['link_up']:,} link up, {e['link_down']:,} link down, {e['handover']:,} handovers, "
                 f"{e['path_change']:,} path changes.")
    if s["satellites_failed_to_propagate"]:
        lines.append(f"Warning: {s['satellites_failed_to_propagate']} satellites failed to propagate at some step "
                     "(their links are absent there).")
    if "faults" in s:
        f = s["faults"]
        worst = next(iter(f["unreachable_s_by_pair"].items()), None)
        lines.append(f"Faults: {f['count']} ({', '.join(f'{v} {k}' for k, v in f['by_kind'].items())}); "
                     f"{f['link_steps_down']:,} link-steps down; {f['blackholed_pair_steps']:,} pair-steps lost "
                     f"before detection ({f['failure_detection_s']:g} s)"
                     + (f"; longest unreachable: {worst[0]} {worst[1]['unreachable_s']:g} s." if worst else "."))
        d = f.get("detour") or {}
        if d.get("pair_steps_detoured"):
            lines.append(f"  Detours: {d['pair_steps_detoured']:,} of {d['pair_steps_compared']:,} pair-steps compared "
                         f"(at {d['sampled_steps']} sampled steps) take longer paths: +{d['added_delay_ms_mean']:g} ms "
                         f"mean, +{d['added_delay_ms_max']:g} ms max; {d['pair_steps_cut_off']:,} cut off.")
    lines += [f"Warning: {w}" for w in s.get("warnings", [])]
    return "\n".join(lines)


def write_plan(plan: Plan, out_dir: str | Path) -> dict:
    """Write the plan's files into `out_dir` (created if needed). Returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sched, routes = plan.schedule, plan.routes
    # Parquet encoding releases the GIL: the large tables are written side by side.
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(write_parquet, sched.links, out / "links.parquet"),
                pool.submit(write_parquet, routes.paths, out / "paths.parquet"),
                pool.submit(write_parquet, routes.routes, out / "routes.parquet")]
        if plan.power is not None:
            jobs.append(pool.submit(write_parquet, plan.power, out / "power.parquet"))
        sched.nodes.to_csv(out / "nodes.csv", index=False)
        plan.events.to_csv(out / "events.csv", index=False, float_format="%.6f")
        shutil.copyfile(plan.scenario.path, out / "scenario.toml")
        summary = plan.summary()
        for j in jobs:
            j.result()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


PARQUET_ROW_GROUP = 1 << 20
"""Rows per Parquet row group (pyarrow's default, so the files are those `to_parquet` writes)."""


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """`df.to_parquet(path, index=False)`, byte for byte, one row group at a time: only one row
    group's Arrow copy is held, not the whole table's."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    writer = None
    try:
        for lo in range(0, max(len(df), 1), PARQUET_ROW_GROUP):
            table = pa.Table.from_pandas(df.iloc[lo:lo + PARQUET_ROW_GROUP], preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def read_plan(out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read a plan directory's tables back (nodes, links, paths, routes, events, and power when
    the plan has `power.parquet`)."""
    out = Path(out_dir)
    missing = [f for f in PLAN_FILES if not (out / f).exists()]
    if missing:
        raise PlanError(f"{out}: not a plan directory; expected {', '.join(PLAN_FILES)}, missing {', '.join(missing)}")
    tables = {
        "nodes": pd.read_csv(out / "nodes.csv", dtype={"norad_id": "Int64"}),
        "links": pd.read_parquet(out / "links.parquet"),
        "paths": pd.read_parquet(out / "paths.parquet"),
        "routes": pd.read_parquet(out / "routes.parquet"),
        "events": pd.read_csv(out / "events.csv"),
    }
    if (out / "power.parquet").exists():
        tables["power"] = pd.read_parquet(out / "power.parquet")
    return tables
