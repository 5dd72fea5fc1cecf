"""Planning in blocks of steps, the plan's files written as the blocks complete.

`stream_plan` plans a scenario's window a block of `block_steps` steps at a time and writes each
block's rows at once (Parquet row groups, events appended to events.csv), so that memory is
bounded by the block, not the window. What crosses a block's edge is carried
(`netemu.plan.topology.BlockCarry`): links still acquiring (their run's first step), the
selections of terminal-limited patterns and policies (sticky links kept first), the paths at
the block's last step (a route row is written only where a pair's path changed), and the links
of the block's last step (link events at the next block's first step). The longest-visible
ground policy ranks satellites by when their visibility ends, which lies ahead: a first pass
over the window finds every visibility run (`VisibilityRuns`, small) before planning.

The files are byte for byte those `write_plan(make_plan(...))` writes, whatever the block size:
the Parquet files get the same row groups (`planner.PARQUET_ROW_GROUP` rows each) and summary.json the
same figures (medians and percentiles of path delays found exactly by counting values in
buckets as blocks complete, then reading back only the rows of the buckets that hold them). Its
`timings_s` are the stages' times summed over blocks.

[[compute]] power: each block's batteries start from the state of charge the block before left
(`plan_power(..., carry=)`). Deterministic faults: each block applies them to its own steps;
routing's view (`believed_up`) looks back `failure_detection_s` into the links of the blocks before
(kept: those steps' link states only); blackholed pair-steps are found against the paths
installed before the block (pair → path, carried); the faults section's counts add up over
blocks; the detour figures (`detour_figures`) are computed at the end, at the steps the whole
planner samples (`detour_steps` of the steps found with a fault), their links and paths read
back from the files. Group faults are drawn before planning by a pass over the window a block of
steps at a time (`expand_group_faults_in_blocks`: the same Fault list, the track held a block at a
time); each block is given only the faults that may touch its steps or events.

Every scenario can be planned in blocks today; `not_streamable` (why one cannot, or None) stays
for the planner's fallback to `make_plan`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import PlanError
from . import planner as _planner
from .orbits import station_ecef_km, time_grid_s
from .planner import (LinkCounts, WarningCounts, check_plan_memory, detour_figures, detour_steps,
                      drop_blackholed, fault_summary_dict, plan_memory_bytes, satellite_track, summary_dict)
from .faults import believed_up, blackholed, expand_group_faults_in_blocks, fault_events
from .routing import Routes, assemble_routes, path_events, route_chunk, route_jobs, routing_pool
from .scenario import Scenario, group_node_names
from .topology import BlockCarry, LinkSet, Schedule, VisibilityRuns, build_schedule, link_events, visible_pairs

__all__ = ["stream_plan", "not_streamable", "default_block_steps", "check_block_memory", "BLOCK_BYTES"]

BLOCK_BYTES = 256 * 2**20
"""Memory a block of steps may take by `plan_memory_bytes`' per-step parts (orbits, links,
paths): the default block is the most steps that fit (at least 16). Starlink shell 1 with 100
cities takes about 0.9 MB a step: ~290 steps a block."""

MIN_BLOCK_STEPS = 16

ROUTE_CHUNK_STEPS = 128
"""Steps per routing job: a job's first step routes every tree afresh, the next keep most."""


class _Done:
    """A result computed at once, where there is no pool, with a future's `result`."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def not_streamable(scenario: Scenario) -> str | None:
    """Why `scenario` cannot be planned in blocks, or None if it can."""
    return None


def default_block_steps(scenario: Scenario, workers: int | None = None) -> int:
    """Steps per block: what `BLOCK_BYTES` holds of the per-step memory `plan_memory_bytes`
    estimates (its parts that grow with the window: orbits, links, paths)."""
    one = plan_memory_bytes(dataclasses.replace(scenario, duration_s=0.0), workers)
    two = plan_memory_bytes(dataclasses.replace(scenario, duration_s=scenario.step_s), workers)
    per_step = sum(two[k] - one[k] for k in ("orbits", "links", "paths"))
    return int(min(scenario.n_steps, max(MIN_BLOCK_STEPS, BLOCK_BYTES // max(per_step, 1))))


def check_block_memory(scenario: Scenario, workers: int | None = None, block_steps: int | None = None) -> int:
    """Steps per block (`block_steps`, default `default_block_steps`, at most the window's);
    raises `PlanError` when planning a block needs more memory than is available."""
    B = min(scenario.n_steps, max(1, int(block_steps or default_block_steps(scenario, workers))))
    check_plan_memory(dataclasses.replace(scenario, duration_s=(B - 1) * scenario.step_s), workers=workers)
    return B


class _ParquetStream:
    """Rows appended block by block, written in row groups of `PARQUET_ROW_GROUP` rows: the file
    `write_parquet` writes of all the rows at once."""

    def __init__(self, path: Path):
        self.path, self.buf, self.n, self.writer, self.empty = path, [], 0, None, None
        # Encoding releases the GIL: row groups are written in a thread of their own, in order.
        self.thread, self.pending = ThreadPoolExecutor(1), []

    def add(self, df: pd.DataFrame) -> None:
        if self.empty is None:
            self.empty = df.iloc[:0]
        if len(df):
            self.buf.append(df)
            self.n += len(df)
        rg = _planner.PARQUET_ROW_GROUP
        while self.n >= rg:
            rows = pd.concat(self.buf, ignore_index=True) if len(self.buf) > 1 else self.buf[0]
            while self.pending and (self.pending[0].done() or len(self.pending) >= 2):
                self.pending.pop(0).result()   # at most two row groups wait: memory stays bounded
            self.pending.append(self.thread.submit(self._write, rows.iloc[:rg]))
            rest = rows.iloc[rg:]
            self.buf, self.n = ([rest] if len(rest) else []), len(rest)

    def _write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        # One chunk per column, as a column made whole has: a string column joined from blocks
        # is chunked, and its Parquet pages would be cut elsewhere.
        table = pa.Table.from_pandas(df, preserve_index=False).combine_chunks()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        try:
            for f in self.pending:
                f.result()
            if self.n or self.writer is None:
                self._write(pd.concat(self.buf, ignore_index=True) if self.buf else self.empty)
        finally:
            self.thread.shutdown()
            if self.writer is not None:
                self.writer.close()


_BUCKET_SHIFT = 40                 # a float64's sign, exponent and 12 bits of mantissa
_LOW_KEY = np.float64(2.0**-10).view(np.int64) >> _BUCKET_SHIFT
_N_BUCKETS = (np.float64(2.0**20).view(np.int64) >> _BUCKET_SHIFT) - _LOW_KEY + 2


def _bucket(v: np.ndarray) -> np.ndarray:
    """Bucket of each (non-negative) value, in value order: 4,096 per octave from 2⁻¹⁰ to 2²⁰,
    below and above those in the first and last."""
    return np.clip((v.view(np.int64) >> _BUCKET_SHIFT) - _LOW_KEY + 1, 0, _N_BUCKETS - 1)


class _OrderStats:
    """Exact order statistics of values arriving in blocks, per label, in bounded memory:
    `add` counts values per bucket; `values_at(ranks, read)` reads the values once more
    (`read()` yields (labels, values) chunks) keeping only those of the buckets that hold the
    wanted ranks, and returns each wanted (label, rank)'s value."""

    def __init__(self, n_labels: int):
        self.L = n_labels
        self.counts = np.zeros(n_labels * _N_BUCKETS, np.int64)

    def add(self, labels: np.ndarray, v: np.ndarray) -> None:
        self.counts += np.bincount(labels.astype(np.int64) * _N_BUCKETS + _bucket(v),
                                   minlength=self.L * _N_BUCKETS)

    def n(self, label: int) -> int:
        return int(self.counts[label * _N_BUCKETS:(label + 1) * _N_BUCKETS].sum())

    def values_at(self, wanted: set[tuple[int, int]], read) -> dict[tuple[int, int], float]:
        where = {}
        for label, rank in wanted:
            cum = np.cumsum(self.counts[label * _N_BUCKETS:(label + 1) * _N_BUCKETS])
            b = int(np.searchsorted(cum, rank, side="right"))
            where[(label, rank)] = (label * _N_BUCKETS + b, rank - (int(cum[b - 1]) if b else 0))
        cells = np.unique([c for c, _ in where.values()])
        found: dict[int, list] = {int(c): [] for c in cells}
        for labels, v in read():
            cell = labels.astype(np.int64) * _N_BUCKETS + _bucket(v)
            hit = np.isin(cell, cells)
            for c in np.unique(cell[hit]):
                found[int(c)].append(v[hit][cell[hit] == c])
        sorted_cells = {c: np.sort(np.concatenate(x)) for c, x in found.items()}
        return {key: float(sorted_cells[c][i]) for key, (c, i) in where.items()}


def _median_ranks(n: int) -> list[int]:
    return [n // 2] if n % 2 else [n // 2 - 1, n // 2]


def _median(n: int, at: Callable[[int], float]) -> float:
    """`np.median` of n values from its order statistics (the mean of the middle two)."""
    r = _median_ranks(n)
    return at(r[0]) if len(r) == 1 else float(np.mean(np.array([at(r[0]), at(r[1])])))


def _percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """`np.percentile`'s (linear method) two ranks and weight for n values."""
    vi = (n - 1) * np.true_divide(q, 100)
    if vi >= n - 1:
        return n - 1, n - 1, float(vi - (n - 1))
    lo = int(math.floor(vi))
    return lo, lo + 1, float(vi - lo)


def _percentile(n: int, q: float, at: Callable[[int], float]) -> float:
    """`np.percentile(values, q)` from the values' order statistics (numpy's `_lerp`)."""
    lo, hi, t = _percentile_ranks(n, q)
    a, b = np.float64(at(lo)), np.float64(at(hi))
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


def _pair_kind_labels(nodes: pd.DataFrame, endpoints) -> tuple[list[str], np.ndarray]:
    """Pair kind names (sorted) and each endpoint pair code's (src·E + dst) index among them."""
    kind_of = dict(zip(nodes["name"], nodes["kind"]))
    ep_kind = [kind_of[e] for e in endpoints]
    labels = ["-".join(sorted((x, y))) for x in ep_kind for y in ep_kind]
    names = sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    return names, np.array([index[x] for x in labels], np.int64)


def _visibility_runs(scenario: Scenario, t_s: np.ndarray, block: int, xyz, up) -> VisibilityRuns:
    """Every (satellite, station) visibility run of the window, a block of steps at a time."""
    offs, off = {}, 0
    for g in scenario.satellites:
        offs[g.name] = (off, off + g.count)
        off += g.count
    gsl = scenario.gsl
    groups = gsl.groups or tuple(g.name for g in scenario.satellites)
    sat_idx = np.concatenate([np.arange(*offs[g]) for g in groups]).astype(np.int64)
    runs = VisibilityRuns(len(scenario.ground_stations))
    for k0 in range(0, len(t_s), block):
        track = satellite_track(scenario, t_s[k0:k0 + block])
        vis, _ = visible_pairs(track, xyz, up, sat_idx, gsl)
        runs.add(LinkSet(vis.step + np.int32(k0), vis.a, vis.b, vis.distance_km))
    return runs.done()


def stream_plan(scenario: Scenario, out_dir: str | Path, workers: int | None = None,
                progress: Callable[[str], None] | None = None, block_steps: int | None = None) -> dict:
    """Plan `scenario` a block of `block_steps` steps at a time (default `default_block_steps`)
    into `out_dir` (which must exist), writing each block's rows as it completes. Returns the
    summary. Raises `ValueError` for a scenario `not_streamable`, `PlanError` when a block
    needs more memory than is available."""
    why = not_streamable(scenario)
    if why:
        raise ValueError(f"{scenario.name}: {why} are not planned in blocks")
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    T = scenario.n_steps
    B = check_block_memory(scenario, workers, block_steps)
    warnings = list(scenario.warnings)
    for w in warnings:
        say(f"warning: {w}")
    t_full = time_grid_s(scenario.duration_s, scenario.step_s)
    st = scenario.ground_stations
    xyz, up = station_ecef_km([s.lat_deg for s in st], [s.lon_deg for s in st], [s.alt_m for s in st])
    timings = {"orbits": 0.0, "topology": 0.0, "routing": 0.0, "events": 0.0, "write": 0.0}
    carry = BlockCarry(t_s=t_full)
    n_blocks = -(-T // B)
    say(f"planning {T:,} steps in {n_blocks:,} block(s) of up to {B:,} steps")
    if scenario.gsl is not None and scenario.gsl.policy == "longest-visible" and st and n_blocks > 1:
        t0 = time.perf_counter()
        carry.run_end = _visibility_runs(scenario, t_full, B, xyz, up)
        timings["topology"] += time.perf_counter() - t0
        say(f"  visibility runs: {len(carry.run_end.key):,} ({time.perf_counter() - t0:.1f} s)")
    elif scenario.gsl is not None and scenario.gsl.policy == "longest-visible":
        carry = None     # one block: the policy looks ahead within it
    route_carry: dict = {}
    faults = tuple(scenario.faults)
    if scenario.group_faults:
        t0 = time.perf_counter()
        offs, off, by_group = {}, 0, {}
        for g in scenario.satellites:
            offs[g.name], by_group[g.name] = off, group_node_names(g)
            off += g.count
        faults += tuple(expand_group_faults_in_blocks(
            scenario.group_faults, by_group, offs, t_full,
            lambda k0, k1: satellite_track(scenario, t_full[k0:k1]).xyz_km, B, scenario.duration_s))
        timings["topology"] += time.perf_counter() - t0
        say(f"faults: {len(faults) - len(scenario.faults):,} drawn from {len(scenario.group_faults)} group fault "
            f"model(s) ({time.perf_counter() - t0:.1f} s)")
    fd = scenario.routing.failure_detection_s
    # Each block is given only the faults that may touch its steps or events.
    f_start = np.array([f.t_s for f in faults], np.float64)
    f_end = np.array([f.end_s for f in faults], np.float64)
    acq_max = max([m.acquisition_s for m in scenario.isls]
                  + ([scenario.gsl.handover_gap_s] if scenario.gsl is not None else []) + [0.0])
    # With faults: the links routing's view looks back to (failure_detection_s), the paths
    # installed after the block before (pair → path), and the faults section's counts.
    flt = {"tail": None, "installed": {}, "steps": np.zeros(T, bool), "down": 0, "lost": {}, "n_lost": 0,
           "reach": None} if faults else None
    endpoints = scenario.endpoints
    E = len(endpoints)
    failed = None
    links_w, paths_w, routes_w = (_ParquetStream(out / f) for f in ("links.parquet", "paths.parquet", "routes.parquet"))
    power_w, power_carry = (_ParquetStream(out / "power.parquet"), {}) if scenario.compute else (None, None)
    if power_w is not None:
        timings["power"] = 0.0
    events_f = open(out / "events.csv", "w", newline="")
    nodes = None
    link_counts = LinkCounts(T)
    warn = None
    reach = np.zeros(T, np.int64)
    ev_counts = dict.fromkeys(("link_up", "link_down", "handover", "path_change"), 0)
    kind_names, kind_of_code = None, None
    stats = None
    acc = {"prev_links": None, "n_links": 0, "n_paths": 0, "n_routes": 0, "dmin": math.inf, "dmax": -math.inf,
           "hops": np.zeros(0, np.int64)}

    def finish(bi: int, k0: int, k1: int, sched: Schedule, futures: list, believed) -> None:
        """Block bi's routes (from its jobs), events, counts and rows to the files."""
        t0 = time.perf_counter()
        try:
            results = [f.result() for f in futures]
        except BrokenProcessPool:
            raise PlanError("a routing process died (most likely out of memory); plan with a smaller block "
                            "or --workers 1") from None
        routes = assemble_routes(results, sched, endpoints, route_carry)
        del results
        timings["routing"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        L = sched.links
        L["step"] = L["step"].to_numpy() + np.int32(k0)
        paths, rrows = routes.paths, routes.routes
        paths["step"] = paths["step"].to_numpy() + np.int32(k0)
        rrows["step"] = rrows["step"].to_numpy() + np.int32(k0)
        if flt is not None:
            paths = _fault_block(flt, L, paths, rrows, believed)
            routes = Routes(routes.endpoints, paths, rrows)
        # Link events of steps [k0, k1): this block's links after the last step of the one before.
        prev = acc["prev_links"]
        both = L if prev is None else pd.concat([prev, L], ignore_index=True)
        lev = link_events(Schedule(nodes, t_full, both))
        del both
        if len(lev):
            tv = lev["t_s"].to_numpy()
            lev = lev[(tv >= t_full[k0]) & (tv <= t_full[k1 - 1])]
        pev = path_events(routes)
        fev = None
        if flt is not None:
            lo = -math.inf if bi == 0 else t_full[k0]
            hi = t_full[k1] if k1 < T else math.inf
            near = (f_start < hi) & (np.maximum(f_end, f_start + fd + 2 * scenario.step_s) >= lo - 1e-6)
            fev = fault_events([faults[i] for i in np.nonzero(near)[0]], t_full, scenario.duration_s, fd, pev)
            tv = fev["t_s"].to_numpy()
            fev = fev[((tv >= t_full[k0]) | (bi == 0)) & ((tv < t_full[k1]) if k1 < T else True)]
        parts = [x for x in (lev, pev, fev) if x is not None and len(x)]
        if parts:
            ev = pd.concat(parts, ignore_index=True).sort_values(["t_s", "event"], kind="stable", ignore_index=True)
            ev.to_csv(events_f, index=False, header=bi == 0, float_format="%.6f")
            for e, c in ev["event"].value_counts().items():
                if e in ev_counts:
                    ev_counts[e] += int(c)
        elif bi == 0:
            events_f.write("t_s,event,a,b,detail\n")
        timings["events"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        acc["prev_links"] = L[L["step"].to_numpy() == k1 - 1]
        link_counts.add(L)
        warn.add(L, paths, k0, k1)
        reach[:] += np.bincount(paths["step"].to_numpy(), minlength=T)
        if len(paths):
            d = paths["delay_ms"].to_numpy()
            acc["dmin"], acc["dmax"] = min(acc["dmin"], float(d.min())), max(acc["dmax"], float(d.max()))
            code = paths["src"].cat.codes.to_numpy().astype(np.int64) * E + paths["dst"].cat.codes.to_numpy()
            stats.add(np.zeros(len(d), np.int64), d)
            stats.add(1 + kind_of_code[code], d)
            h = np.bincount(paths["hops"].to_numpy().astype(np.int64))
            hh = np.pad(acc["hops"], (0, max(0, len(h) - len(acc["hops"]))))
            hh[:len(h)] += h
            acc["hops"] = hh
        links_w.add(L)
        paths_w.add(paths)
        routes_w.add(rrows)
        timings["write"] += time.perf_counter() - t0
        acc["n_links"] += len(L)
        acc["n_paths"] += len(paths)
        acc["n_routes"] += len(rrows)
        say(f"  block {bi + 1:,}/{n_blocks:,}: steps {k0:,}-{k1 - 1:,}, {len(L):,} link-steps, "
            f"{len(paths):,} pair-steps")

    pool = routing_pool(workers) if T > 1 else None
    try:
        # A block's routes are computed in the pool's processes while this process builds the
        # next block's links and writes the block before's rows.
        pending = None
        for bi, k0 in enumerate(range(0, T, B)):
            k1 = min(T, k0 + B)
            t0 = time.perf_counter()
            track = satellite_track(scenario, t_full[k0:k1])
            bad = (~track.ok).any(axis=0)
            failed = bad if failed is None else failed | bad
            timings["orbits"] += time.perf_counter() - t0
            if power_w is not None:
                t0 = time.perf_counter()
                power_w.add(_planner.plan_power(scenario, track, power_carry))
                timings["power"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if carry is not None:
                carry.k0 = k0
            near = (f_start <= t_full[k1 - 1] + 1e-6) & (f_end + acq_max >= t_full[k0] - 1e-6)
            sched = build_schedule(scenario, track, xyz, up, carry=carry,
                                   faults=tuple(faults[i] for i in np.nonzero(near)[0]))
            del track
            timings["topology"] += time.perf_counter() - t0
            if nodes is None:
                nodes = sched.nodes
                warn = WarningCounts(scenario, len(nodes), T)
                kind_names, kind_of_code = _pair_kind_labels(nodes, endpoints)
                stats = _OrderStats(1 + len(kind_names))
            t0 = time.perf_counter()
            believed = None
            view = sched
            if flt is not None:
                believed = _believed(flt, sched.links, k0, k1, t_full, len(nodes), fd)
                view = Schedule(sched.nodes, sched.t_s, sched.links.assign(up=believed))
            jobs = route_jobs(view, endpoints, scenario.routing.metric, scenario.routing.ground_relay,
                              -(-(k1 - k0) // ROUTE_CHUNK_STEPS))
            futures = [pool.submit(route_chunk, j) for j in jobs] if pool is not None else \
                [_Done(route_chunk(j)) for j in jobs]
            del jobs, view
            timings["routing"] += time.perf_counter() - t0
            if pending is not None:
                finish(*pending)
            pending = (bi, k0, k1, sched, futures, believed)
            del sched, futures, believed
        finish(*pending)
        pending = None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        events_f.close()
    dmin, dmax, hops_hist = acc["dmin"], acc["dmax"], acc["hops"]
    n_links, n_paths, n_routes = acc["n_links"], acc["n_paths"], acc["n_routes"]
    say(f"orbits: {int(len(failed)):,} satellites × {T:,} steps ({timings['orbits']:.1f} s"
        f"{f', {int(failed.sum())} failed to propagate' if failed.any() else ''})")
    say(f"topology: {n_links:,} link-steps ({timings['topology']:.1f} s)")
    say(f"routing: {n_paths:,} pair-steps, {n_routes:,} route rows ({timings['routing']:.1f} s)")
    t0 = time.perf_counter()
    for w in (links_w, paths_w, routes_w, power_w):
        if w is not None:
            w.close()
    nodes.to_csv(out / "nodes.csv", index=False)
    shutil.copyfile(scenario.path, out / "scenario.toml")
    for w in warn.messages():
        say(f"warning: {w}")
        warnings.append(w)
    summary = _summary(scenario, nodes, T, out, link_counts, reach, dmin, dmax, hops_hist, stats, kind_names,
                       ev_counts, int(failed.sum()), timings, warnings)
    if flt is not None:
        t1 = time.perf_counter()
        detour = _detour(scenario, nodes, t_full, out, flt["steps"], workers)
        timings["routing"] += time.perf_counter() - t1
        t0 += time.perf_counter() - t1
        reach_pairs = flt["reach"] if flt["reach"] is not None else np.zeros(E * E, np.int64)
        summary["faults"] = fault_summary_dict(scenario, faults, T, reach_pairs, flt["lost"], flt["n_lost"],
                                               flt["down"], detour)
    timings["write"] += time.perf_counter() - t0
    summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _believed(flt: dict, L: pd.DataFrame, k0: int, k1: int, t_s: np.ndarray, n_nodes: int, fd: float) -> np.ndarray:
    """`believed_up` of block [k0, k1)'s links (`L`, steps counted from k0): the failures it
    detects are looked up in the links of the steps `fd` before, which may lie in earlier blocks
    (kept in `flt["tail"]`: their step, ends, up and reason only)."""
    cols = ["step", "a", "b", "up", "down_reason"]
    here = L[cols].assign(step=L["step"].to_numpy().astype(np.int64) + k0)
    both = here if flt["tail"] is None else pd.concat([flt["tail"], here], ignore_index=True)
    believed = believed_up(both, t_s, n_nodes, fd)[len(both) - len(here):]
    if fd > 0 and k1 < len(t_s):
        first = max(0, int(np.searchsorted(t_s, t_s[k1] - fd + 1e-9, side="right")) - 1)
        flt["tail"] = both[both["step"].to_numpy() >= first].reset_index(drop=True)
    return believed


def _fault_block(flt: dict, L: pd.DataFrame, paths: pd.DataFrame, rrows: pd.DataFrame, believed) -> pd.DataFrame:
    """A block's paths without its blackholed pair-steps (`blackholed`, the paths installed
    before the block taken from `flt["installed"]`), and the faults section's counts."""
    dead = believed & ~L["up"].to_numpy()
    if dead.any():
        inst = flt["installed"]
        k0 = int(L["step"].iloc[0])
        dt = rrows["src"].dtype
        before = pd.DataFrame({"step": np.full(len(inst), k0 - 1, np.int32),
                               "src": pd.Categorical([x for x, _ in inst], dtype=dt),
                               "dst": pd.Categorical([y for _, y in inst], dtype=dt),
                               "path": list(inst.values())})
        lost = blackholed(pd.concat([before, rrows[["step", "src", "dst", "path"]]], ignore_index=True), L, believed)
        if len(lost):
            paths = drop_blackholed(paths, lost)
            for key, n in lost.groupby(["src", "dst"]).size().items():
                flt["lost"][key] = flt["lost"].get(key, 0) + int(n)
            flt["n_lost"] += len(lost)
    for x, y, path in zip(rrows["src"].astype(str), rrows["dst"].astype(str), rrows["path"]):
        flt["installed"][(x, y)] = path
    fault = (L["down_reason"] == "fault").to_numpy()
    flt["steps"][L["step"].to_numpy()[fault]] = True
    flt["down"] += int(fault.sum())
    E = len(paths["src"].cat.categories)
    r = np.bincount(paths["src"].cat.codes.to_numpy().astype(np.int64) * E
                    + paths["dst"].cat.codes.to_numpy().astype(np.int64), minlength=E * E)
    flt["reach"] = r if flt["reach"] is None else flt["reach"] + r
    return paths


def _detour(sc: Scenario, nodes: pd.DataFrame, t_s: np.ndarray, out: Path, fault_steps: np.ndarray,
            workers: int | None) -> dict:
    """`detour_penalty`'s figures, its sampled steps' links and paths read back from the files."""
    pick = detour_steps(np.nonzero(fault_steps)[0])
    if len(pick) == 0:
        return detour_figures(sc, nodes, t_s, pick, None, None, workers)
    want = [("step", "in", [int(k) for k in pick])]
    links = pd.read_parquet(out / "links.parquet", filters=want)
    paths = pd.read_parquet(out / "paths.parquet", filters=want)
    names = pd.CategoricalDtype(list(nodes["name"]), ordered=True)
    ep = pd.CategoricalDtype(list(sc.endpoints), ordered=True)
    links = links.astype({"a": names, "b": names})
    paths = paths.astype({"src": ep, "dst": ep})
    return detour_figures(sc, nodes, t_s, pick, links, paths, workers)


def _summary(sc, nodes, T, out, link_counts, reach, dmin, dmax, hops_hist, stats, kind_names, ev_counts, failed,
             timings, warnings) -> dict:
    """summary.json's figures from the blocks' counts; order statistics of path delays by a
    second read of paths.parquet's delays (only the values of the buckets that hold them)."""
    E = len(sc.endpoints)
    n_paths = stats.n(0)
    delay, hops_median, by_kind = {"min": None, "median": None, "max": None}, None, {}
    if n_paths:
        labels = [0] + [1 + i for i in range(len(kind_names)) if stats.n(1 + i)]
        wanted = set()
        for lab in labels:
            n = stats.n(lab)
            wanted |= {(lab, r) for r in _median_ranks(n)}
            if lab:
                lo, hi, _ = _percentile_ranks(n, 99)
                wanted |= {(lab, lo), (lab, hi), (lab, 0), (lab, n - 1)}
        _, kind_of_code = _pair_kind_labels(nodes, sc.endpoints)
        ep_index = {e: i for i, e in enumerate(sc.endpoints)}

        def read():
            import pyarrow.parquet as pq
            f = pq.ParquetFile(out / "paths.parquet")
            for batch in f.iter_batches(batch_size=_planner.PARQUET_ROW_GROUP, columns=["src", "dst", "delay_ms"]):
                codes = []
                for col in ("src", "dst"):
                    c = batch.column(col)
                    lut = np.array([ep_index[x] for x in c.dictionary.to_pylist()], np.int64)
                    codes.append(lut[c.indices.to_numpy(zero_copy_only=False)])
                v = batch.column("delay_ms").to_numpy()
                lab = 1 + kind_of_code[codes[0] * E + codes[1]]
                yield np.zeros(len(v), np.int64), v
                yield lab, v

        got = stats.values_at(wanted, read)
        delay = {"min": round(dmin, 3), "median": round(_median(n_paths, lambda r: got[(0, r)]), 3),
                 "max": round(dmax, 3)}
        cum = np.cumsum(hops_hist)
        hops_at = lambda r: float(np.searchsorted(cum, r, side="right"))   # noqa: E731
        hops_median = float(_median(n_paths, hops_at))
        for lab in labels[1:]:
            n = stats.n(lab)
            at = lambda r, lab=lab: got[(lab, r)]   # noqa: E731
            by_kind[kind_names[lab - 1]] = {"min": round(at(0), 3), "median": round(_median(n, at), 3),
                                            "p99": round(_percentile(n, 99, at), 3), "max": round(at(n - 1), 3)}
    return summary_dict(sc, nodes, T, link_counts, reach, delay, hops_median, by_kind, ev_counts, failed, timings,
                        warnings)
