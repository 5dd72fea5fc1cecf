"""Faults: which link-steps a scenario's `[[faults]]` take down, and why.

Pure, vectorised: `fault_reasons` maps the schedule's present links (one entry per link per step,
node indices) and the faults to a reason per link-step: "" (untouched), "fault" (an end is dark,
the link or the terminal has failed) or "acquisition" (after a reboot, the link re-acquires for
its model's acquisition time). Faults do not change which links the patterns select (terminals
stay assigned); they only make those links unusable, so the planner marks them `up = False`.

Fault windows are half-open in scenario time: a link-step at time t is down when
`t_s <= t < t_s + duration_s` (to the end when `duration_s` is absent). After a reboot ending at
`e`, a link whose acquisition time is `acq > 0` is down for `e <= t < e + acq`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .scenario import Fault

__all__ = ["fault_reasons", "DOWN_REASONS", "believed_up", "blackholed", "fault_events", "failure_times",
           "renewal_windows", "region_multiplier", "radiation_resets", "expand_group_faults",
           "expand_group_faults_in_blocks"]

DOWN_REASONS = ("", "acquisition", "handover", "fault", "rain", "cloud")
"""Values of the links table's `down_reason` ("" while the link is up)."""

_EPS = 1e-9


def fault_reasons(faults: tuple[Fault, ...] | list[Fault], names: list[str], t_s: np.ndarray,
                  step: np.ndarray, a: np.ndarray, b: np.ndarray, is_isl: np.ndarray,
                  acquisition_s: np.ndarray) -> np.ndarray:
    """Reason per link-step (object array of "", "fault", "acquisition"), "fault" winning.

    `t_s` is the step grid; `step`, `a`, `b` (node indices), `is_isl` (laser or ground link) and
    `acquisition_s` (of the link's model) have one entry per link-step."""
    n = len(step)
    out = np.full(n, "", dtype=object)
    if n == 0 or not faults:
        return out
    index = {x: i for i, x in enumerate(names)}
    t = np.asarray(t_s, np.float64)[np.asarray(step, np.int64)]
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    # Rows by node (either end), so that each fault touches only its node's rows.
    ends = np.concatenate([a, b])
    order = np.argsort(ends, kind="stable") % n
    bounds = np.searchsorted(np.sort(ends), np.arange(len(names) + 1))
    dark = np.zeros(n, bool)
    acq = np.zeros(n, bool)
    for f in faults:
        i = index[f.a if f.kind == "link" and f.a is not None else f.node]
        rows = order[bounds[i]:bounds[i + 1]]
        if f.kind == "link" and f.a is not None:
            ia, ib = sorted((index[f.a], index[f.b]))
            rows = rows[(a[rows] == ia) & (b[rows] == ib)]
        elif f.kind == "link":
            rows = rows[is_isl[rows] if f.terminal == "isl" else ~is_isl[rows]]
        tr, end = t[rows], f.end_s
        dark[rows[(tr >= f.t_s - _EPS) & (tr < end - _EPS)]] = True
        if f.kind == "reboot":
            acq[rows[(tr >= end - _EPS) & (tr < end + acquisition_s[rows] - _EPS)]] = True
    out[acq] = "acquisition"
    out[dark] = "fault"
    return out


# --------------------------------------------------------------------------- routing's view


def believed_up(links: pd.DataFrame, t_s: np.ndarray, n_nodes: int, failure_detection_s: float) -> np.ndarray:
    """`up` as the control plane knows it: a link that a fault took down still counts as up at
    step k when it was up at the last step at or before t_k − `failure_detection_s` (the failure
    is not yet detected); every other change (a link coming up, acquisition, handover) is known
    at once. `links` is a schedule's table (sorted by step, a, b). A fault at t = 0 is known at once.

    The plan's resolution is its step: routes move at the first step at or after the fault's
    start + `failure_detection_s`."""
    up = links["up"].to_numpy().astype(bool)
    fault = (links["down_reason"] == "fault").to_numpy()
    if failure_detection_s <= 0 or not fault.any():
        return up.copy()
    step = links["step"].to_numpy(np.int64)
    a = links["a"].cat.codes.to_numpy().astype(np.int64)
    b = links["b"].cat.codes.to_numpy().astype(np.int64)
    key = (step * n_nodes + a) * n_nodes + b          # ascending: rows are sorted by step, a, b
    idx = np.nonzero(fault)[0]
    t = np.asarray(t_s, np.float64)
    j = np.searchsorted(t, t[step[idx]] - failure_detection_s + _EPS, side="right") - 1
    q = (np.maximum(j, 0) * n_nodes + a[idx]) * n_nodes + b[idx]
    pos = np.minimum(np.searchsorted(key, q), len(key) - 1)
    known_up = (j >= 0) & (j < step[idx]) & (key[pos] == q) & up[pos]
    out = up.copy()
    out[idx[known_up]] = True
    return out


def blackholed(routes: pd.DataFrame, links: pd.DataFrame, believed: np.ndarray) -> pd.DataFrame:
    """Pair-steps whose installed path crosses a link that is down but still believed up:
    `step, src, dst` (packets sent that way are lost). `routes` is the routes table (a pair's
    path whenever it changes, as `a>b>c`)."""
    dead = believed & ~links["up"].to_numpy()
    cols = ["step", "src", "dst"]
    if not dead.any():
        return pd.DataFrame({c: [] for c in cols})
    D = links[dead]
    dead_at: dict[int, set[tuple[str, str]]] = {}
    for k, x, y in zip(D["step"].tolist(), D["a"].astype(str).tolist(), D["b"].astype(str).tolist()):
        dead_at.setdefault(k, set()).update(((x, y), (y, x)))
    r = routes.sort_values("step", kind="stable")
    rows = []
    for k, bad in sorted(dead_at.items()):
        cur = r[r["step"] <= k].groupby(["src", "dst"], observed=True, sort=False).tail(1)
        for src, dst, path in zip(cur["src"].astype(str), cur["dst"].astype(str), cur["path"]):
            nodes = path.split(">") if path else []
            if any((u, v) in bad for u, v in zip(nodes[:-1], nodes[1:])):
                rows.append((k, src, dst))
    return pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame({c: [] for c in cols})


def fault_events(faults, t_s: np.ndarray, duration_s: float, failure_detection_s: float,
                 path_events: pd.DataFrame) -> pd.DataFrame:
    """`fault_start` and `fault_end` at the faults' instants, and `reroute` at the first step where
    routing knows of the fault (start + `failure_detection_s`, on the step grid), its detail the
    number of pair paths that changed at that step. Columns as the plan's events."""
    rows = []
    t = np.asarray(t_s, np.float64)
    changed = path_events["t_s"].round(9).value_counts() if len(path_events) else pd.Series(dtype=int)
    for f in faults:
        a, b = (f.a, f.b) if f.a else (f.node, "")
        what = f.terminal if f.kind == "link" and f.terminal else f.kind
        rows.append((f.t_s, "fault_start", a, b, what))
        if f.end_s <= duration_s:
            rows.append((f.end_s, "fault_end", a, b, what))
        k = int(np.searchsorted(t, f.t_s + failure_detection_s - _EPS, side="left"))
        if f.t_s > 0 and k < len(t):
            n = int(changed.get(round(float(t[k]), 9), 0))
            rows.append((float(t[k]), "reroute", a, b, f"{n} pair paths changed ({failure_detection_s:g} s to detect)"))
    return pd.DataFrame(rows, columns=["t_s", "event", "a", "b", "detail"])


# --------------------------------------------------------------------------- group faults


def failure_times(rng: np.random.Generator, n: int, mtbf_s: float, distribution: str = "exponential",
                  shape: float = 1.0) -> np.ndarray:
    """`n` times to failure of mean `mtbf_s`: exponential, or Weibull of shape `shape` with scale
    mtbf_s / Γ(1 + 1/shape) (so that its mean is mtbf_s)."""
    if distribution == "weibull":
        return mtbf_s / math.gamma(1.0 + 1.0 / shape) * rng.weibull(shape, n)
    return rng.exponential(mtbf_s, n)


def renewal_windows(rng: np.random.Generator, n_units: int, horizon_s: float, mtbf_s: float, mttr_s: float,
                    distribution: str = "exponential", shape: float = 1.0):
    """Failure windows of `n_units` units, each new at t = 0, failing after `failure_times` and
    repaired after an exponential time of mean `mttr_s`, again and again until `horizon_s`.
    Returns (unit, start_s, duration_s) arrays of the failures that start before the horizon."""
    units, starts, durs = [], [], []
    t = np.zeros(n_units)
    alive = np.arange(n_units)
    while len(alive):
        fail = t[alive] + failure_times(rng, len(alive), mtbf_s, distribution, shape)
        down = rng.exponential(mttr_s, len(alive))
        inside = fail < horizon_s
        units.append(alive[inside])
        starts.append(fail[inside])
        durs.append(down[inside])
        t[alive] = fail + down
        alive = alive[inside]
    cat = lambda x, d: np.concatenate(x) if x else np.zeros(0, d)  # noqa: E731
    return cat(units, np.int64), cat(starts, np.float64), cat(durs, np.float64)


def region_multiplier(lat_deg: np.ndarray, lon_deg: np.ndarray, regions) -> np.ndarray:
    """Product of the multipliers of the regions (lat/lon boxes) each position lies in."""
    m = np.ones(np.shape(lat_deg))
    for r in regions:
        inside = ((lat_deg >= r.lat_deg[0]) & (lat_deg <= r.lat_deg[1])
                  & (lon_deg >= r.lon_deg[0]) & (lon_deg <= r.lon_deg[1]))
        m = np.where(inside, m * r.multiplier, m)
    return m


def radiation_resets(rng: np.random.Generator, t_s: np.ndarray, rate_per_s: np.ndarray, reboot_s: float):
    """Resets of a Poisson process whose rate `rate_per_s[T, N]` holds over each step (the last
    step's length repeats): a reset at most per step, at the step's time; a satellite still
    rebooting ignores further resets. Returns (unit, t_s) arrays sorted by unit then time."""
    t = np.asarray(t_s, np.float64)
    dt = np.diff(t, append=t[-1] + (t[-1] - t[-2] if len(t) > 1 else 1.0))
    p = 1.0 - np.exp(-rate_per_s * dt[:, None])
    k, u = np.nonzero(rng.random(p.shape) < p)
    return _first_resets(t, k, u, reboot_s)


def _first_resets(t: np.ndarray, k: np.ndarray, u: np.ndarray, reboot_s: float):
    """The resets drawn at steps `k` of units `u` that find their unit up (not still rebooting
    from an earlier one): (unit, t_s) arrays sorted by unit then time."""
    order = np.lexsort((k, u))
    units, times = [], []
    busy_until: dict[int, float] = {}
    for kk, uu in zip(k[order].tolist(), u[order].tolist()):
        if t[kk] >= busy_until.get(uu, -math.inf):
            units.append(uu)
            times.append(float(t[kk]))
            busy_until[uu] = t[kk] + reboot_s
    return np.asarray(units, np.int64), np.asarray(times, np.float64)


def _lat_lon_deg(xyz_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geocentric latitude and longitude of Earth-fixed positions [..., 3] (within 0.2° of
    geodetic at LEO altitudes: enough for region boxes)."""
    x, y, z = xyz_km[..., 0], xyz_km[..., 1], xyz_km[..., 2]
    with np.errstate(invalid="ignore"):
        return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def expand_group_faults(group_faults, names_by_group: dict[str, list[str]], offsets: dict[str, int],
                        t_s: np.ndarray, xyz_km: np.ndarray, duration_s: float) -> list[Fault]:
    """The `Fault`s that a scenario's group faults draw (seeded: the same seed, the same faults).
    `offsets[group]` is the group's first column in `xyz_km` [T, N, 3] (Earth-fixed track)."""
    T = len(t_s)
    return expand_group_faults_in_blocks(group_faults, names_by_group, offsets, t_s,
                                         lambda k0, k1: xyz_km[k0:k1], max(T, 1), duration_s)


def expand_group_faults_in_blocks(group_faults, names_by_group: dict[str, list[str]], offsets: dict[str, int],
                                  t_s: np.ndarray, xyz_block, block_steps: int, duration_s: float) -> list[Fault]:
    """`expand_group_faults`, the same `Fault`s, with the Earth-fixed track given a block of steps
    at a time: `xyz_block(k0, k1)` returns its steps [k0, k1) ([k1 − k0, N, 3]), asked for in
    order, once each, and only when a radiation or regional storm model needs it. The
    radiation draws come a block at a time from the model's generator (the same numbers in the
    same order as one draw over the window); only the steps where a reset is drawn are kept."""
    t = np.asarray(t_s, np.float64)
    T = len(t)
    rngs = [np.random.default_rng(gf.seed) for gf in group_faults]
    drawn: dict[int, list] = {i: [] for i, gf in enumerate(group_faults) if gf.kind == "radiation"}
    storm_k = {i: int(np.clip(np.searchsorted(t, gf.t_s + _EPS, side="right") - 1, 0, T - 1))
               for i, gf in enumerate(group_faults) if gf.kind == "storm" and gf.region is not None}
    storm_hit: dict[int, np.ndarray] = {}
    if drawn or storm_k:
        dt = np.diff(t, append=t[-1] + (t[-1] - t[-2] if T > 1 else 1.0))
        for k0 in range(0, T, block_steps):
            k1 = min(T, k0 + block_steps)
            xyz = xyz_block(k0, k1)
            for i, gf in enumerate(group_faults):
                lo, n = offsets[gf.group], len(names_by_group[gf.group])
                if i in drawn:
                    lat, lon = _lat_lon_deg(xyz[:, lo:lo + n])
                    rate = np.nan_to_num(gf.rate_per_day / 86_400.0 * region_multiplier(lat, lon, gf.regions))
                    p = 1.0 - np.exp(-rate * dt[k0:k1, None])
                    k, u = np.nonzero(rngs[i].random(p.shape) < p)
                    drawn[i].append((k + k0, u))
                elif i in storm_k and k0 <= storm_k[i] < k1:
                    lat, lon = _lat_lon_deg(xyz[storm_k[i] - k0, lo:lo + n])
                    r = gf.region
                    storm_hit[i] = np.nonzero((lat >= r.lat_deg[0]) & (lat <= r.lat_deg[1])
                                              & (lon >= r.lon_deg[0]) & (lon <= r.lon_deg[1]))[0]
            del xyz
    out: list[Fault] = []
    for i, gf in enumerate(group_faults):
        rng = rngs[i]
        names = names_by_group[gf.group]
        src = f"{gf.kind} {gf.group}"
        if gf.kind == "random":
            u, start, dur = renewal_windows(rng, len(names), duration_s, gf.mtbf_s, gf.mttr_s,
                                            gf.distribution, gf.shape)
            for uu, s0, d in zip(u.tolist(), start.tolist(), dur.tolist()):
                if gf.terminal:
                    out.append(Fault("link", s0, d, node=names[uu], terminal=gf.terminal, source=src))
                else:
                    out.append(Fault("node", s0, d, node=names[uu], source=src))
        elif gf.kind == "radiation":
            k = np.concatenate([x[0] for x in drawn[i]] or [np.zeros(0, np.int64)])
            u = np.concatenate([x[1] for x in drawn[i]] or [np.zeros(0, np.int64)])
            units, times = _first_resets(t, k, u, gf.reboot_s)
            out += [Fault("reboot", s0, gf.reboot_s, node=names[uu], source=src)
                    for uu, s0 in zip(units.tolist(), times.tolist())]
        else:  # storm
            if gf.region is not None:
                hit = storm_hit[i]
            else:
                hit = np.sort(rng.choice(len(names), max(1, round(gf.fraction * len(names))), replace=False))
            out += [Fault("node", gf.t_s, gf.duration_s, node=names[j], source=src) for j in hit.tolist()]
    return out
