"""What a run plays, as data: the window, the nodes in scope, per-step link states and the oracle.

Pure functions from a plan to arrays and tables; `netemu.emulate.emulation` turns them into kernel state
and `netemu.emulate.player` applies them against the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import EmulationError
from ..plan.topology import Schedule

__all__ = ["Window", "window", "scope_nodes", "LinkStates", "link_states", "oracle_rtt_ms", "fidelity",
           "SCOPE_PATHS_ABOVE", "straddling", "in_stall", "stalled_pairs"]

SCOPE_PATHS_ABOVE = 500   # satellites; above this `--scope auto` instantiates only path satellites


@dataclass(frozen=True)
class Window:
    """Steps [k0, k1] of the schedule a run plays: it starts at t_s[k0] and ends at t_end_s."""

    k0: int
    k1: int
    t0_s: float
    t_end_s: float


def window(t_s: np.ndarray, start_s: float = 0.0, duration_s: float | None = None) -> Window:
    """The steps covering [start_s, start_s + duration_s] (default: to the end of the plan)."""
    T = len(t_s)
    if not 0 <= start_s <= t_s[-1]:
        raise EmulationError(f"start: expected 0 ≤ start ≤ {t_s[-1]:g} s (the plan's span), found {start_s:g}")
    k0 = int(np.searchsorted(t_s, start_s + 1e-9, side="right") - 1)
    end = t_s[-1] if duration_s is None else start_s + duration_s
    if duration_s is not None and not (0 < duration_s and end <= t_s[-1] + 1e-9):
        raise EmulationError(f"duration: expected 0 < duration ≤ {t_s[-1] - start_s:g} s (to the plan's end), "
                             f"found {duration_s:g}")
    k1 = min(T - 1, int(np.searchsorted(t_s, end - 1e-9, side="left")))
    return Window(k0, max(k1, k0), float(start_s), float(end))


def scope_nodes(schedule: Schedule, routes_table: pd.DataFrame, endpoints: tuple[str, ...], w: Window,
                scope: str) -> list[str]:
    """Names of the nodes a run instantiates, in schedule order: every node (`all`), or the
    endpoints plus every satellite on some endpoint path during the window (`paths`); `auto`
    is `paths` above `SCOPE_PATHS_ABOVE` satellites."""
    names = schedule.node_names
    if scope == "auto":
        n_sat = int((schedule.nodes["kind"] != "ground").sum())
        scope = "paths" if n_sat > SCOPE_PATHS_ABOVE else "all"
    if scope == "all":
        return names
    if scope != "paths":
        raise EmulationError(f"scope: expected all, paths or auto, found {scope!r}")
    r = routes_table
    in_window = r[(r["step"] > w.k0) & (r["step"] <= w.k1)]
    at_start = r[r["step"] <= w.k0].groupby(["src", "dst"], observed=True).tail(1)
    keep = set(endpoints)
    for p in pd.concat([at_start, in_window])["path"]:
        if p:
            keep.update(p.split(">"))
    return [n for n in names if n in keep]


@dataclass(frozen=True)
class LinkStates:
    """Per step of a window and per link: delay_ms [S, L] (held across absences), rate_mbps,
    loss_pct, up (False where the link is absent or not yet usable). Step i is schedule step
    k0 + i."""

    k0: int
    t_s: np.ndarray
    delay_ms: np.ndarray
    rate_mbps: np.ndarray
    loss_pct: np.ndarray
    up: np.ndarray


def link_states(schedule: Schedule, link_a: np.ndarray, link_b: np.ndarray, w: Window) -> LinkStates:
    """States of the links (a[i], b[i]) (node names) over steps k0..k1 of the window."""
    names = schedule.node_names
    idx = {n: i for i, n in enumerate(names)}
    n = len(names)
    ka = np.array([idx[x] for x in link_a], np.int64)
    kb = np.array([idx[x] for x in link_b], np.int64)
    key = np.minimum(ka, kb) * n + np.maximum(ka, kb)
    order = np.argsort(key)
    L, S = len(key), w.k1 - w.k0 + 1
    rows = schedule.links[(schedule.links["step"] >= w.k0) & (schedule.links["step"] <= w.k1)]
    ra, rb = rows["a"].cat.codes.to_numpy(np.int64), rows["b"].cat.codes.to_numpy(np.int64)
    rkey = np.minimum(ra, rb) * n + np.maximum(ra, rb)
    pos = np.searchsorted(key[order], rkey)
    pos = np.minimum(pos, max(L - 1, 0))
    found = (L > 0) & (key[order][pos] == rkey) if L else np.zeros(len(rkey), bool)
    li = order[pos[found]]
    si = rows["step"].to_numpy(np.int64)[found] - w.k0
    delay = np.full((S, L), np.nan, np.float64)
    rate = np.full((S, L), np.nan, np.float64)
    loss = np.full((S, L), np.nan, np.float64)
    up = np.zeros((S, L), bool)
    delay[si, li] = rows["delay_ms"].to_numpy()[found]
    rate[si, li] = rows["rate_mbps"].to_numpy()[found]
    loss[si, li] = rows["loss_pct"].to_numpy()[found]
    up[si, li] = rows["up"].to_numpy()[found]
    for a in (delay, rate, loss):
        _hold(a)
    return LinkStates(w.k0, schedule.t_s[w.k0:w.k1 + 1], delay, rate, loss, up)


def _hold(a: np.ndarray) -> None:
    """Fill NaNs along axis 0 with the last value before them, then leading NaNs with the first
    value after (a link keeps its parameters while absent); all-NaN columns become 0."""
    if a.shape[0]:
        _hold_forward(a)
        _hold_forward(a[::-1])
        np.nan_to_num(a, copy=False, nan=0.0)


# --------------------------------------------------------------------------- oracle


def _path_delay_series(schedule: Schedule, path: list[str], k_lo: int, k_hi: int) -> np.ndarray:
    """Delay (ms) of `path` at steps k_lo..k_hi: sum of its links' delays (a link absent at a
    step keeps its last delay); NaN where a link of it is not known yet."""
    names = schedule.node_names
    idx = {n: i for i, n in enumerate(names)}
    hops = [(min(idx[u], idx[v]), max(idx[u], idx[v])) for u, v in zip(path, path[1:])]
    links = schedule.links
    sel = links[(links["step"] >= k_lo) & (links["step"] <= k_hi)]
    a, b = sel["a"].cat.codes.to_numpy(np.int64), sel["b"].cat.codes.to_numpy(np.int64)
    key = np.minimum(a, b) * len(names) + np.maximum(a, b)
    total = np.zeros(k_hi - k_lo + 1)
    for u, v in hops:
        m = key == u * len(names) + v
        d = np.full(k_hi - k_lo + 1, np.nan)
        d[sel["step"].to_numpy()[m] - k_lo] = sel["delay_ms"].to_numpy()[m]
        col = d[:, None]
        _hold_forward(col)
        total += col[:, 0]
    return total


def _hold_forward(a: np.ndarray) -> None:
    S = a.shape[0]
    idx = np.where(np.isnan(a), 0, np.arange(S)[:, None])
    np.maximum.accumulate(idx, axis=0, out=idx)
    a[:] = a[idx, np.arange(a.shape[1])]


def oracle_rtt_ms(schedule: Schedule, routes_table: pd.DataFrame, src: str, dst: str,
                  t_s: np.ndarray) -> np.ndarray:
    """The planner's RTT (ms) of src→dst→src for probes sent at `t_s`: twice the delay of the
    path in force then (links are symmetric and shortest paths have equal delay both ways),
    each link's delay linear between steps as the link engine applies it. NaN where the pair
    is unreachable."""
    t_grid = schedule.t_s
    r = routes_table
    pair = r[((r["src"] == src) & (r["dst"] == dst)) | ((r["src"] == dst) & (r["dst"] == src))]
    pair = pair.sort_values("step", kind="stable")
    out = np.full(len(t_s), np.nan)
    if pair.empty:
        return out
    steps = pair["step"].to_numpy()
    k_probe = np.clip(np.searchsorted(t_grid, t_s, side="right") - 1, 0, len(t_grid) - 1)
    seg = np.searchsorted(steps, k_probe, side="right") - 1
    for j in np.unique(seg[seg >= 0]):
        path = pair["path"].iloc[j]
        if not path:
            continue
        m = seg == j
        k_lo = int(k_probe[m].min())
        k_hi = min(int(k_probe[m].max()) + 1, len(t_grid) - 1)
        d = _path_delay_series(schedule, path.split(">"), k_lo, k_hi)
        out[m] = 2 * np.interp(t_s[m], t_grid[k_lo:k_hi + 1], d)
    return out


def fidelity(probes: pd.DataFrame, change_t_s: dict[tuple[str, str], np.ndarray], guard_s: float,
             timeout_s: float, stalls: pd.DataFrame | None = None, stall_slack_ms: float = 0.5) -> dict:
    """Measured − oracle RTT of probes (`t_s, src, dst, rtt_ms, oracle_rtt_ms`; rtt NaN = lost).

    A probe straddles a path change when [t_s − guard_s, t_s + its flight (rtt, or timeout_s
    when lost) + guard_s] holds a change time of its pair (`change_t_s[(src, dst)]`); those are
    counted apart. So are answered probes in flight during a link-engine stall of their pair
    whose error the stall explains (`stalls`, `stall_slack_ms`: see `in_stall`): the host, not
    the emulated network, delayed them; abs_error_p99_with_stalls_ms counts them in. Returns overall and per-pair: probes, answered, lost while
    reachable, straddling, overlapping_engine_stall, unreachable (oracle NaN), and error_ms
    median / p99 / max (signed) and abs_p99 over the others (`compared`).
    """
    probes = probes.astype({"t_s": float, "rtt_ms": float, "oracle_rtt_ms": float})
    straddle = straddling(probes, change_t_s, guard_s, timeout_s)
    probes = probes.assign(straddle=straddle, stalled=in_stall(probes, stalls, stall_slack_ms))

    def summary(p: pd.DataFrame) -> dict:
        reach = p["oracle_rtt_ms"].notna() & ~p["straddle"]
        stalled = reach & p["rtt_ms"].notna() & p["stalled"]
        ok = reach & p["rtt_ms"].notna() & ~p["stalled"]
        err = (p["rtt_ms"] - p["oracle_rtt_ms"])[ok].to_numpy()
        out = {"probes": int(len(p)), "answered": int(p["rtt_ms"].notna().sum()),
               "compared": int(ok.sum()), "lost_while_reachable": int((reach & p["rtt_ms"].isna()).sum()),
               "straddling_path_change": int(p["straddle"].sum()),
               "overlapping_engine_stall": int(stalled.sum()),
               "unreachable": int((p["oracle_rtt_ms"].isna() & ~p["straddle"]).sum())}
        if stalled.any():
            err_all = (p["rtt_ms"] - p["oracle_rtt_ms"])[ok | stalled].to_numpy()
            out["abs_error_p99_with_stalls_ms"] = round(float(np.percentile(np.abs(err_all), 99)), 4)
        if len(err):
            out.update(error_median_ms=round(float(np.median(err)), 4),
                       error_p99_ms=round(float(np.percentile(err, 99)), 4),
                       error_max_ms=round(float(err.max()), 4),
                       error_min_ms=round(float(err.min()), 4),
                       abs_error_p99_ms=round(float(np.percentile(np.abs(err), 99)), 4))
        return out

    pairs = {f"{s}>{d}": summary(g) for (s, d), g in probes.groupby(["src", "dst"], sort=False)}
    return {"overall": summary(probes), "pairs": pairs}


def in_stall(probes: pd.DataFrame, stalls: pd.DataFrame | None, slack_ms: float = 0.5) -> np.ndarray:
    """Per probe (`t_s, src, dst, rtt_ms, oracle_rtt_ms`), whether a link-engine stall explains
    an error beyond `slack_ms` (the fidelity threshold): it was answered, its flight
    [t_s, t_s + rtt] overlaps stalls of `stalls` (`t_start_s, t_end_s` in schedule s; with a
    `pairs` column, "src>dst" names space-separated, only its pair's count), and slack_ms <
    |RTT − oracle| ≤ their total length + slack_ms (a stall delays a frame by at most its
    length: a larger error has another cause and stays)."""
    out = np.zeros(len(probes), bool)
    if stalls is None or not len(stalls) or not len(probes):
        return out
    t0 = probes["t_s"].to_numpy(float)
    t1 = t0 + np.nan_to_num(probes["rtt_ms"].to_numpy(float), nan=-np.inf) / 1e3
    err_ms = np.abs(probes["rtt_ms"].to_numpy(float) - probes["oracle_rtt_ms"].to_numpy(float))
    by_pair = "pairs" in stalls.columns
    keys = (probes["src"] + ">" + probes["dst"]).to_numpy() if by_pair else np.zeros(len(probes), int)
    for key in np.unique(keys):
        st = stalls[stalls["pairs"].fillna("").str.split().map(lambda names: key in names)] if by_pair else stalls
        if not len(st):
            continue
        iv = st[["t_start_s", "t_end_s"]].to_numpy(float)
        iv = iv[np.argsort(iv[:, 0])]
        cum_ms = np.r_[0.0, np.cumsum(iv[:, 1] - iv[:, 0]) * 1e3]
        end_max = np.maximum.accumulate(iv[:, 1])
        m = np.flatnonzero(keys == key)
        # stalls starting before the flight ends, minus those ending before it starts (stalls of
        # one engine do not overlap, so ends ascend with starts)
        hi = np.searchsorted(iv[:, 0], t1[m], side="right")
        lo = np.searchsorted(end_max, t0[m], side="right")
        stall_ms = np.where(hi > lo, cum_ms[hi] - cum_ms[np.minimum(lo, hi)], 0.0)
        out[m] = (stall_ms > 0) & (err_ms[m] > slack_ms) & (err_ms[m] <= stall_ms + slack_ms)
    return out


def stalled_pairs(stalls: pd.DataFrame, routes_table: pd.DataFrame, t_grid_s: np.ndarray,
                  link_ends: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[str]:
    """Per stall (`t_start_s`, `links`: link ids space-separated), the probe pairs ("src>dst",
    space-separated) whose planned path at the stall's start crosses one of its links.
    `link_ends`: `link, a, b`; `routes_table`: `src, dst, step, path` ("a>b>c")."""
    ends = {lid: frozenset((a, b)) for lid, a, b in link_ends[["link", "a", "b"]].itertuples(index=False)}
    r = routes_table
    plans = []
    for src, dst in pairs:
        p = r[((r["src"] == src) & (r["dst"] == dst)) | ((r["src"] == dst) & (r["dst"] == src))]
        p = p.sort_values("step", kind="stable")
        hops = [{frozenset(h) for h in zip(nodes, nodes[1:])} for nodes in (x.split(">") if x else [] for x in p["path"])]
        plans.append((f"{src}>{dst}", p["step"].to_numpy(), hops))
    out = []
    for t, links in zip(stalls["t_start_s"].to_numpy(float), stalls["links"].fillna("")):
        hit = {ends[lid] for lid in links.split() if lid in ends}
        k = min(max(int(np.searchsorted(t_grid_s, t, side="right")) - 1, 0), len(t_grid_s) - 1)
        names = []
        for name, steps, hops in plans:
            j = int(np.searchsorted(steps, k, side="right")) - 1
            if hit and j >= 0 and hops[j] & hit:
                names.append(name)
        out.append(" ".join(names))
    return out


def straddling(probes: pd.DataFrame, change_t_s: dict[tuple[str, str], np.ndarray], guard_s: float,
               timeout_s: float) -> np.ndarray:
    """Per probe (`t_s, src, dst, rtt_ms`), whether [t_s − guard_s, t_s + its flight (rtt, or
    timeout_s when lost) + guard_s] holds a change time of its pair (`change_t_s[(src, dst)]`)."""
    rtt_ms = probes["rtt_ms"].to_numpy(float)
    flight_s = np.where(np.isnan(rtt_ms), timeout_s, rtt_ms / 1e3)
    t = probes["t_s"].to_numpy(float)
    straddle = np.zeros(len(probes), bool)
    for (src, dst), times in change_t_s.items():
        m = ((probes["src"] == src) & (probes["dst"] == dst)).to_numpy()
        if not m.any() or len(times) == 0:
            continue
        times = np.sort(times)
        lo = np.searchsorted(times, t[m] - guard_s, side="left")
        hi = np.searchsorted(times, t[m] + flight_s[m] + guard_s, side="right")
        straddle[np.nonzero(m)[0][hi > lo]] = True
    return straddle
