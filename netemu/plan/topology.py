"""Topology: the usable laser ISLs and ground links at every time step, from a Track and link models.

Pure functions from positions to a `Schedule`. Node indices: satellites first, in the Track's order,
then ground stations in scenario order; a link's ends are ordered `a < b` by that index.

Link life cycle: a link is *present* at a step when its pattern/policy selects it and its geometry
allows it (line of sight above the grazing altitude, range, elevation); a present link is *up* once
it has been present continuously for its acquisition time (`acquisition_s` for lasers,
`handover_gap_s` for ground links). Links present at t = 0 are taken as already acquired (the
network is in steady state when the window opens). Selection with limited terminals is sticky: a
link, once selected, keeps its terminals until its geometry breaks it, as laser terminals are not
re-pointed for a marginally nearer neighbour; free terminals then go to the nearest candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ..constants import C_KM_PER_S, R_EARTH_KM
from .faults import DOWN_REASONS, fault_reasons
from .orbits import Track
from .weather import budget_rate_mbps, rain_at, slant_path_rain_attenuation_db
from .scenario import GSLModel, ISLModel, Scenario, WalkerShell, group_node_names

__all__ = ["Schedule", "LinkSet", "BlockCarry", "build_schedule", "node_table", "clears_earth", "isl_candidates"]

_CHUNK_ELEMS = 4_000_000  # elements of a [steps, pairs] block evaluated at once (memory bound)


@dataclass(frozen=True, slots=True)
class LinkSet:
    """Present links as long arrays (one entry per link per step), all of the same length."""

    step: np.ndarray   # int32 step index
    a: np.ndarray      # int32 node index, a < b
    b: np.ndarray
    distance_km: np.ndarray

    @staticmethod
    def empty() -> "LinkSet":
        z = np.zeros(0, np.int32)
        return LinkSet(z, z, z, np.zeros(0))

    def ordered(self) -> "LinkSet":
        lo, hi = np.minimum(self.a, self.b), np.maximum(self.a, self.b)
        return LinkSet(self.step, lo.astype(np.int32), hi.astype(np.int32), self.distance_km)

    def take(self, mask_or_idx) -> "LinkSet":
        return LinkSet(self.step[mask_or_idx], self.a[mask_or_idx], self.b[mask_or_idx],
                       self.distance_km[mask_or_idx])


@dataclass(frozen=True)
class Schedule:
    """The time-varying network: nodes, the time grid and every present link at every step.

    `links` columns: step, t_s, a, b (categorical node names), kind (isl|gsl), distance_km,
    delay_ms, rate_mbps, loss_pct, up, down_reason (why a present link is not up: "acquisition"
    for a laser still acquiring, "handover" for a ground link in its handover gap, "fault" for a
    scenario fault (`netemu.plan.faults`), "rain" for a ground link rain takes out
    (`netemu.plan.weather`), "cloud" for an optical ground link a station's cloud blocks; "" while up). With `[[rain]]`, a rainy station's ground links carry
    the rate its link budget leaves. Rows are sorted by step, then a, b.
    """

    nodes: pd.DataFrame
    t_s: np.ndarray
    links: pd.DataFrame

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes["name"])

    def step_at(self, t_s: float) -> int:
        """Index of the last step at or before `t_s` (clamped to the window)."""
        return int(np.clip(np.searchsorted(self.t_s, t_s + 1e-9, side="right") - 1, 0, len(self.t_s) - 1))

    def snapshot(self, t_s: float, up_only: bool = True) -> nx.Graph:
        """The network at `t_s` as an undirected networkx graph; edges carry the link columns."""
        k = self.step_at(t_s)
        rows = self.links[self.links["step"] == k]
        if up_only:
            rows = rows[rows["up"]]
        g = nx.Graph()
        for r in self.nodes.itertuples(index=False):
            g.add_node(r.name, kind=r.kind, group=r.group)
        for r in rows.itertuples(index=False):
            g.add_edge(r.a, r.b, kind=r.kind, distance_km=r.distance_km, delay_ms=r.delay_ms,
                       rate_mbps=r.rate_mbps, loss_pct=r.loss_pct, up=r.up)
        return g

    def changes(self) -> pd.DataFrame:
        """Link events after t = 0: `t_s, event (link_up|link_down|handover), a, b, detail`."""
        return link_events(self)


@dataclass
class BlockCarry:
    """What a schedule built a block of steps at a time (`build_schedule(..., carry=)`) carries
    from one block to the next, so that the blocks join into the schedule of the whole window.

    `k0`: the window step of the block's first step (the track holds the block's steps only);
    `t_s`: the whole window's time grid. Updated by each block: `held` (model key → the links a
    terminal-limited pattern or policy selected at the block's last step, kept first at the next
    one), `since` (model key → (link keys a·n + b, first step of their present run) of the links
    present at the block's last step: their acquisition goes on across the edge) and `run_end`
    (ground links of the longest-visible policy: for each (satellite, station) visibility run the
    window step it ends at, found by a pass over the window beforehand: `visibility_runs`).
    """

    t_s: np.ndarray
    k0: int = 0
    last: int = 0
    """The block's last step, counted from its first."""
    held: dict = field(default_factory=dict)
    since: dict = field(default_factory=dict)
    run_end: "VisibilityRuns | None" = None


# --------------------------------------------------------------------------- geometry


def clears_earth(p_km: np.ndarray, q_km: np.ndarray, min_radius_km: float) -> np.ndarray:
    """True where the segment p→q stays at least `min_radius_km` from Earth's centre. [..., 3] → [...]."""
    d = q_km - p_km
    dd = np.einsum("...k,...k->...", d, d)
    u = np.clip(-np.einsum("...k,...k->...", p_km, d) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
    closest = p_km + u[..., None] * d
    return np.einsum("...k,...k->...", closest, closest) >= min_radius_km**2


def _pair_geometry(track: Track, ia: np.ndarray, ib: np.ndarray, model: ISLModel,
                   extra=None) -> LinkSet:
    """Evaluate static candidate pairs over all steps (chunked): range, line of sight, `extra`."""
    T, L = len(track.t_s), len(ia)
    if L == 0:
        return LinkSet.empty()
    parts = []
    chunk = max(1, _CHUNK_ELEMS // L)
    r_min = R_EARTH_KM + model.grazing_altitude_km
    for t0 in range(0, T, chunk):
        p = track.xyz_km[t0:t0 + chunk, ia]
        q = track.xyz_km[t0:t0 + chunk, ib]
        dist = np.linalg.norm(q - p, axis=-1)
        with np.errstate(invalid="ignore"):
            ok = (dist <= model.max_range_km) & clears_earth(p, q, r_min)
        ok &= track.ok[t0:t0 + chunk, ia] & track.ok[t0:t0 + chunk, ib]
        if extra is not None:
            ok &= extra(p, q)
        ts, ls = np.nonzero(ok)
        parts.append(LinkSet((ts + t0).astype(np.int32), ia[ls].astype(np.int32), ib[ls].astype(np.int32),
                             dist[ts, ls]))
    return _concat(parts)


def _concat(parts: list[LinkSet]) -> LinkSet:
    if not parts:
        return LinkSet.empty()
    return LinkSet(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("step", "a", "b", "distance_km")))


# --------------------------------------------------------------------------- ISL patterns


def _group_offsets(scenario: Scenario) -> dict[str, tuple[int, int]]:
    off, out = 0, {}
    for g in scenario.satellites:
        out[g.name] = (off, off + g.count)
        off += g.count
    return out


def plus_grid_pairs(shell: WalkerShell, offset: int, isl_shift: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """+Grid candidate pairs of a Walker shell: (a, b, cross_plane) with a, b node indices.

    Each satellite links to its fore/aft neighbours in its plane and to the satellite `slot +
    isl_shift` of the next plane. A star shell (RAAN spread < 360°) has a seam: no links between
    its last and first planes, whose satellites counter-rotate.
    """
    P, S = shell.planes, shell.sats_per_plane
    idx = np.arange(P * S).reshape(P, S) + offset
    pairs = set()
    if S > 1:
        for a, b in zip(idx.ravel(), np.roll(idx, -1, axis=1).ravel()):
            pairs.add((min(a, b), max(a, b), False))
    last = P if shell.raan_spread_deg >= 360 - 1e-9 else P - 1
    for p in range(last if P > 1 else 0):
        for s in range(S):
            a, b = idx[p, s], idx[(p + 1) % P, (s + isl_shift) % S]
            pairs.add((min(a, b), max(a, b), True))
    arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2].astype(bool)


def isl_candidates(scenario: Scenario, model: ISLModel, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of satellites the model may link (a < b), for mesh/explicit patterns."""
    offs = _group_offsets(scenario)
    ranges = [np.arange(*offs[g]) for g in model.groups]
    if model.pattern == "explicit":
        index = {n: i for i, n in enumerate(names)}
        ab = np.array([(index[a], index[b]) for a, b in model.pairs], dtype=np.int64)
        ab = np.unique(np.sort(ab, axis=1), axis=0)
        return ab[:, 0], ab[:, 1]
    if len(ranges) == 1:
        a, b = np.triu_indices(len(ranges[0]), k=1)
        return ranges[0][a], ranges[0][b]
    a, b = np.meshgrid(ranges[0], ranges[1], indexing="ij")
    a, b = a.ravel(), b.ravel()
    return np.minimum(a, b), np.maximum(a, b)


def _nearest_k(track: Track, scenario: Scenario, model: ISLModel, sticky: dict | None = None) -> LinkSet:
    """nearest-k lasers, step by step: candidates are each satellite's 2k nearest feasible partners
    plus the links held at the previous step (kept while feasible, even if no longer among the
    nearest), then `select_sticky`'s greedy rule with `terminals` per satellite."""
    offs = _group_offsets(scenario)
    sets = [np.arange(*offs[g]) for g in model.groups]
    directions = [(sets[0], sets[0])] if len(sets) == 1 else [(sets[0], sets[1]), (sets[1], sets[0])]
    r_min = R_EARTH_KM + model.grazing_altitude_km
    n = len(track.names)
    cap = model.terminals or model.k
    held = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if sticky is not None and "held" in sticky:
        held = sticky["held"]
    parts = []
    for k in range(len(track.t_s)):
        pos, ok = track.xyz_km[k], track.ok[k]
        a_parts, b_parts = [held[0]], [held[1]]
        for src, dst in directions:
            src, dst = src[ok[src]], dst[ok[dst]]
            q = min(len(dst), 2 * model.k + (1 if len(sets) == 1 else 0))
            if q == 0 or len(src) == 0:
                continue
            dist, j = cKDTree(pos[dst]).query(pos[src], k=q, distance_upper_bound=min(model.max_range_km, 1e7))
            dist, j = dist.reshape(len(src), q), j.reshape(len(src), q)
            valid = np.isfinite(dist)
            a_parts.append(np.repeat(src, q)[valid.ravel()])
            b_parts.append(dst[j[valid]])
        a, b = np.concatenate(a_parts), np.concatenate(b_parts)
        a, b = np.minimum(a, b), np.maximum(a, b)
        pair = np.unique(a * n + b)
        a, b = pair // n, pair % n
        a, b = a[a != b], b[a != b]
        d = np.linalg.norm(pos[b] - pos[a], axis=1)
        with np.errstate(invalid="ignore"):
            feasible = (d <= model.max_range_km) & clears_earth(pos[a], pos[b], r_min) & ok[a] & ok[b]
        cands = LinkSet(np.full(feasible.sum(), k, np.int32), a[feasible].astype(np.int32),
                        b[feasible].astype(np.int32), d[feasible])
        chosen = cands.take(_greedy(cands, n, cap, set(zip(held[0].tolist(), held[1].tolist()))))
        held = (chosen.a.astype(np.int64), chosen.b.astype(np.int64))
        parts.append(chosen)
    if sticky is not None:
        sticky["held"] = held
    return _concat(parts)


def _greedy(c: LinkSet, n_nodes: int, cap, held: set[tuple[int, int]]) -> np.ndarray:
    """One step of terminal-limited selection: held links first, then nearest first."""
    cap_arr = np.broadcast_to(np.asarray(cap), (n_nodes,))
    a, b = c.a.tolist(), c.b.tolist()
    kept = np.fromiter(((x, y) in held for x, y in zip(a, b)), bool, len(a))
    used = np.zeros(n_nodes, np.int32)
    chosen = np.zeros(len(a), bool)
    for i in np.lexsort((c.distance_km, ~kept)).tolist():
        x, y = a[i], b[i]
        if used[x] < cap_arr[x] and used[y] < cap_arr[y]:
            used[x] += 1
            used[y] += 1
            chosen[i] = True
    return chosen


def select_sticky(ls: LinkSet, n_nodes: int, cap: int | np.ndarray, sticky: dict | None = None) -> np.ndarray:
    """Greedy terminal-limited selection, step by step, keeping last step's links first.

    `ls` holds the feasible candidates, sorted by step. Returns a boolean mask over them. At each
    step, links selected at the previous step that are still feasible are taken first, then the
    rest in order of distance, each only if both ends have a free terminal (`cap` per node).
    `sticky["held"]` (a set of (a, b)), when given, is what the step before the first one held;
    it is replaced by what step `sticky["last_step"]` holds.
    """
    chosen = np.zeros(len(ls.step), bool)
    held: set[tuple[int, int]] = sticky.get("held", set()) if sticky is not None else set()
    if len(ls.step) == 0:
        if sticky is not None:
            sticky["held"] = set()
        return chosen
    bounds = np.searchsorted(ls.step, np.arange(ls.step.max() + 2))
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        sel = _greedy(ls.take(slice(lo, hi)), n_nodes, cap, held)
        chosen[lo:hi] = sel
        held = set(zip(ls.a[lo:hi][sel].tolist(), ls.b[lo:hi][sel].tolist()))
    if sticky is not None:
        sticky["held"] = held if ls.step.max() == sticky["last_step"] else set()
    return chosen


def isl_links(track: Track, scenario: Scenario, model: ISLModel, sticky: dict | None = None) -> LinkSet:
    """Present ISLs of one model over the track's steps. `sticky` (a dict kept from one block of
    steps to the next) carries a terminal-limited pattern's selection across blocks."""
    names = list(track.names)
    n = len(names)
    if model.pattern == "plus-grid":
        shell = scenario.group(model.groups[0])
        off = _group_offsets(scenario)[shell.name][0]
        a, b, cross = plus_grid_pairs(shell, off, model.isl_shift)
        extra = None
        if model.polar_cutoff_deg is not None:
            s = math.sin(math.radians(model.polar_cutoff_deg))

            def extra(p, q, cross=cross, s=s):
                high = (np.abs(p[..., 2]) > s * np.linalg.norm(p, axis=-1)) | \
                       (np.abs(q[..., 2]) > s * np.linalg.norm(q, axis=-1))
                return ~(high & cross)
        return _pair_geometry(track, a, b, model, extra)
    if model.pattern == "nearest-k":
        return _nearest_k(track, scenario, model, sticky)
    a, b = isl_candidates(scenario, model, names)
    cands = _pair_geometry(track, a, b, model)
    if model.pattern == "explicit" or model.terminals is None:
        return cands
    order = np.lexsort((cands.b, cands.a, cands.step))
    cands = cands.take(order)
    if sticky is not None:
        sticky["last_step"] = len(track.t_s) - 1
    return cands.take(select_sticky(cands, n, model.terminals, sticky))


# --------------------------------------------------------------------------- ground links


def visible_pairs(track: Track, station_xyz: np.ndarray, station_up: np.ndarray, sat_idx: np.ndarray,
                  gsl: GSLModel) -> tuple[LinkSet, np.ndarray]:
    """Every (step, satellite, station) where the station sees the satellite.

    Returns the visible pairs as a LinkSet with a = satellite index, b = station number (0..G-1),
    and their elevations (deg). Visibility: elevation ≥ min_elevation_deg, or slant range ≤
    max_range_km with the satellite above the horizon.
    """
    G = len(station_xyz)
    if G == 0 or len(sat_idx) == 0:
        return LinkSet.empty(), np.zeros(0)
    st_r = np.linalg.norm(station_xyz, axis=1)
    st_unit = station_xyz / st_r[:, None]
    parts, elevs = [], []
    T = len(track.t_s)
    chunk = max(1, _CHUNK_ELEMS // (G * len(sat_idx)))
    for t0 in range(0, T, chunk):
        pos = track.xyz_km[t0:t0 + chunk][:, sat_idx]             # [t, S, 3]
        ok = track.ok[t0:t0 + chunk][:, sat_idx]
        r = np.linalg.norm(pos, axis=-1)
        # Coarse cut by Earth-central angle (one matmul), exact elevation only on survivors.
        cos_c = (pos / np.where(ok, r, 1.0)[..., None]) @ st_unit.T  # [t, S, G]
        max_c = _max_central_angle_rad(r, st_r.min(), st_r.max(), gsl)  # [t, S]
        with np.errstate(invalid="ignore"):
            ts, ss, gs = np.nonzero((cos_c >= np.cos(max_c)[..., None]) & ok[..., None])
        d = pos[ts, ss] - station_xyz[gs]
        rng = np.linalg.norm(d, axis=1)
        el = np.degrees(np.arcsin(np.einsum("ik,ik->i", d, station_up[gs]) / rng))
        if gsl.min_elevation_deg is not None:
            keep = el >= gsl.min_elevation_deg
        else:
            keep = (rng <= gsl.max_range_km) & (el >= 0)
        parts.append(LinkSet((ts[keep] + t0).astype(np.int32), sat_idx[ss[keep]].astype(np.int32),
                             gs[keep].astype(np.int32), rng[keep]))
        elevs.append(el[keep])
    return _concat(parts), np.concatenate(elevs)


def _max_central_angle_rad(r_sat: np.ndarray, r_st_min: float, r_st_max: float, gsl: GSLModel) -> np.ndarray:
    """Upper bound of the Earth-central angle between a satellite at radius `r_sat` (km) and any
    station with radius in [`r_st_min`, `r_st_max`] (km) that sees it."""
    rs = r_sat
    with np.errstate(invalid="ignore"):
        if gsl.min_elevation_deg is not None:
            # A lower station sees farther at a given elevation: the smallest radius bounds all.
            e = math.radians(max(gsl.min_elevation_deg - 0.5, 0.0))
            # Triangle centre–station–satellite: angle at the satellite from the sine rule.
            nadir = np.arcsin(np.clip(r_st_min * math.cos(e) / rs, -1, 1))
            ang = math.pi / 2 - e - nadir
        else:
            # Law of cosines: cos c = (rs² + r² − R²) / (2 rs r) = (rs² − R²) / (2 rs r) + r / (2 rs),
            # convex in r with its minimum (the widest angle) at r = √(rs² − R²). Near the equator
            # (larger radius) a station reaches farther than at the poles, so the smallest radius
            # is not the bound: take the widest angle over the stations' radius interval.
            r = np.clip(np.sqrt(np.maximum(rs**2 - gsl.max_range_km**2, 0.0)), r_st_min, r_st_max)
            ang = np.arccos(np.clip((rs**2 + r**2 - gsl.max_range_km**2) / (2 * rs * r), -1, 1))
    return np.nan_to_num(ang, nan=math.pi) + 1e-3


def _visibility_run_end(vis: LinkSet) -> np.ndarray:
    """For each visible (step, sat, station): the last step of its continuous visibility."""
    n = len(vis.step)
    order = np.lexsort((vis.step, vis.a, vis.b))
    s, a, b = vis.step[order], vis.a[order], vis.b[order]
    new = np.ones(n, bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (s[1:] != s[:-1] + 1)
    run = np.cumsum(new) - 1
    last_of_run = np.zeros(run[-1] + 1 if n else 0, np.int64)
    last_of_run[run] = s  # later (larger) steps overwrite: the run's last step
    out = np.empty(n, np.int64)
    out[order] = last_of_run[run]
    return out


class VisibilityRuns:
    """Each (satellite, station) visibility run of a window: its first and last step, found a
    block of steps at a time (`add`: a block's visible pairs, steps counted in the window) and
    joined across block edges (`done`). `end_of` gives the last step of the run a visible
    (step, satellite, station) belongs to: what the longest-visible policy ranks by, known only
    by looking ahead, so a plan made in blocks finds the runs first (`visibility_runs`)."""

    def __init__(self, n_stations: int):
        self.G = n_stations
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, vis: LinkSet) -> None:
        if not len(vis.step):
            return
        key = vis.a.astype(np.int64) * self.G + vis.b
        order = np.lexsort((vis.step, key))
        k, s = key[order], vis.step[order].astype(np.int64)
        new = np.ones(len(k), bool)
        new[1:] = (k[1:] != k[:-1]) | (s[1:] != s[:-1] + 1)
        last = np.r_[new[1:], True]
        self.parts.append((k[new], s[new], s[last]))

    def done(self) -> "VisibilityRuns":
        if not self.parts:
            self.key = self.start = self.end = np.zeros(0, np.int64)
            return self
        k, s, e = (np.concatenate(x) for x in zip(*self.parts))
        self.parts = []
        order = np.lexsort((s, k))
        k, s, e = k[order], s[order], e[order]
        # a run a block edge cut in two continues in the next block's first step
        joined = np.r_[False, (k[1:] == k[:-1]) & (s[1:] == e[:-1] + 1)]
        first = np.nonzero(~joined)[0]
        group = np.cumsum(~joined) - 1
        end = np.zeros(len(first), np.int64)
        np.maximum.at(end, group, e)
        self.key, self.start, self.end = k[first], s[first], end
        return self

    def end_of(self, step: np.ndarray, sat: np.ndarray, station: np.ndarray) -> np.ndarray:
        key = sat.astype(np.int64) * self.G + station
        # runs are sorted by (key, start): the run of (key, step) is the last one starting at or before it
        j = np.searchsorted(self.key * 2**31 + self.start, key * 2**31 + step, side="right") - 1
        return self.end[j]


def gsl_links(track: Track, station_xyz: np.ndarray, station_up: np.ndarray, scenario: Scenario,
              carry: BlockCarry | None = None) -> LinkSet:
    """Present ground links, a = satellite index, b = station number (0..G-1). With `carry`,
    the track holds one block of the window's steps (`BlockCarry`)."""
    gsl = scenario.gsl
    offs = _group_offsets(scenario)
    groups = gsl.groups or tuple(g.name for g in scenario.satellites)
    sat_idx = np.concatenate([np.arange(*offs[g]) for g in groups]).astype(np.int64)
    vis, _ = visible_pairs(track, station_xyz, station_up, sat_idx, gsl)
    if gsl.policy == "all" or len(vis.step) == 0:
        return vis
    terms = np.array([st.terminals or gsl.terminals for st in scenario.ground_stations], np.int64)
    if gsl.policy == "nearest":
        order = np.lexsort((vis.distance_km, vis.b, vis.step))
        s, b = vis.step[order], vis.b[order]
        new = np.ones(len(s), bool)
        new[1:] = (s[1:] != s[:-1]) | (b[1:] != b[:-1])
        start = np.maximum.accumulate(np.where(new, np.arange(len(s)), 0))
        rank = np.arange(len(s)) - start
        return vis.take(np.sort(order[rank < terms[b]]))
    # longest-visible: keep serving satellites while visible; fill free terminals with the
    # satellite that stays visible longest (ties: nearest).
    if carry is None:
        end = _visibility_run_end(vis)
    else:   # the window step each run ends at: a constant shift of the block's, same order
        end = carry.run_end.end_of(vis.step + carry.k0, vis.a, vis.b)
    order = np.lexsort((vis.distance_km, -end, vis.b, vis.step))
    vis, end = vis.take(order), end[order]
    keep = np.zeros(len(vis.step), bool)
    bounds = np.searchsorted(vis.step, np.arange(len(track.t_s) + 1))
    serving: set[tuple[int, int]] = carry.held.get("gsl", set()) if carry is not None else set()
    for k in range(len(track.t_s)):
        lo, hi = bounds[k], bounds[k + 1]
        a, b = vis.a[lo:hi].tolist(), vis.b[lo:hi].tolist()
        used = {}
        now = set()
        for i, key in enumerate(zip(b, a)):   # first pass: keep current links
            if key in serving:
                keep[lo + i] = True
                used[key[0]] = used.get(key[0], 0) + 1
                now.add(key)
        for i, key in enumerate(zip(b, a)):   # second pass: longest-visible first (sorted)
            if key not in now and used.get(key[0], 0) < terms[key[0]]:
                keep[lo + i] = True
                used[key[0]] = used.get(key[0], 0) + 1
                now.add(key)
        serving = now
    if carry is not None:
        carry.held["gsl"] = serving
    sel = vis.take(keep)
    return sel.take(np.lexsort((sel.a, sel.b, sel.step)))


# --------------------------------------------------------------------------- assembly


def node_table(scenario: Scenario) -> pd.DataFrame:
    """One row per node: name, kind (satellite|ground|compute), group, norad_id (TLE satellites)."""
    rows = []
    for g in scenario.satellites:
        kind = "compute" if g.compute else "satellite"
        norads = [r.norad_id for r in g.records] if hasattr(g, "records") else [None] * g.count
        rows += [(n, kind, g.name, nid) for n, nid in zip(group_node_names(g), norads)]
    rows += [(st.name, "ground", "ground", None) for st in scenario.ground_stations]
    df = pd.DataFrame(rows, columns=["name", "kind", "group", "norad_id"])
    df["norad_id"] = df["norad_id"].astype("Int64")
    return df


def _up_flags(ls: LinkSet, t_s: np.ndarray, acquisition_s: float, carry: BlockCarry | None = None,
              key: str = "", n_nodes: int = 0) -> np.ndarray:
    """`up` per present link: present continuously for `acquisition_s`, or since t = 0. With
    `carry`, `ls` holds one block's steps (counted from its first) and a link present at the
    block's first step goes on with the run it had at the end of the block before."""
    n = len(ls.step)
    if carry is not None and n == 0:
        carry.since[key] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if n == 0 or acquisition_s <= 0:
        return np.ones(n, bool)
    order = np.lexsort((ls.step, ls.b, ls.a))
    s, a, b = ls.step[order], ls.a[order], ls.b[order]
    new = np.ones(n, bool)
    new[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (s[1:] != s[:-1] + 1)
    start = s[np.maximum.accumulate(np.where(new, np.arange(n), 0))]
    if carry is not None:
        k0 = carry.k0
        start = start.astype(np.int64) + k0
        s = s.astype(np.int64) + k0
        ab = a.astype(np.int64) * n_nodes + b
        old_key, old_start = carry.since.get(key, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        at_edge = np.nonzero(start == k0)[0]
        if k0 > 0 and len(at_edge) and len(old_key):
            pos = np.minimum(np.searchsorted(old_key, ab[at_edge]), len(old_key) - 1)
            hit = old_key[pos] == ab[at_edge]
            start[at_edge[hit]] = old_start[pos[hit]]
        last = s == k0 + carry.last
        o = np.argsort(ab[last], kind="stable")
        carry.since[key] = (ab[last][o], start[last][o])
    up_sorted = (start == 0) | (t_s[s] - t_s[start] >= acquisition_s - 1e-9)
    up = np.empty(n, bool)
    up[order] = up_sorted
    return up


def build_schedule(scenario: Scenario, track: Track, station_xyz: np.ndarray, station_up: np.ndarray,
                   progress=None, faults=None, carry: BlockCarry | None = None) -> Schedule:
    """Every present link at every step, for all ISL models and the GSL model. `faults` (default:
    the scenario's deterministic ones) take links down (`netemu.plan.faults`).

    With `carry` (`BlockCarry`), the track holds one block of the window's steps and the
    schedule is that block's (steps counted from its first): blocks built in order, each with
    the carry the one before left, join into the whole window's schedule (faults hold links
    down by time alone: each block applies them to its own steps)."""
    nodes = node_table(scenario)
    n_sat = len(track.names)
    t_s = track.t_s
    if carry is not None:
        carry.last = len(t_s) - 1
    grid = t_s if carry is None else carry.t_s
    cat = pd.CategoricalDtype(list(nodes["name"]), ordered=True)
    parts = []   # per model: LinkSet, kind code (0 isl, 1 gsl), rate_mbps, loss_pct, up, acquisition_s
    for i, model in enumerate(scenario.isls):
        sticky = None if carry is None else carry.held.setdefault(f"isl{i}", {})
        ls = isl_links(track, scenario, model, sticky).ordered()
        parts.append((ls, 0, np.full(len(ls.step), float(model.rate_mbps)), model.loss_pct,
                      _up_flags(ls, grid, model.acquisition_s, carry, f"isl{i}", len(nodes)), model.acquisition_s))
        if progress:
            progress(f"isl[{i}] {model.pattern} {'+'.join(model.groups)}: {len(ls.step):,} link-steps")
    if scenario.gsl is not None and scenario.ground_stations:
        ls = gsl_links(track, station_xyz, station_up, scenario, carry)
        rate = _rain_rates(scenario, track, station_xyz, station_up, ls, carry)
        ls = LinkSet(ls.step, ls.a, (ls.b + n_sat).astype(np.int32), ls.distance_km)
        g = scenario.gsl
        parts.append((ls, 1, np.full(len(ls.step), float(g.rate_mbps)) if rate is None else rate, g.loss_pct,
                      _up_flags(ls, grid, g.handover_gap_s, carry, "gsl", len(nodes)), g.handover_gap_s))
        if progress:
            progress(f"gsl {g.policy}: {len(ls.step):,} link-steps")
    step = np.concatenate([p[0].step for p in parts] or [np.zeros(0, np.int32)]).astype(np.int32)
    a = np.concatenate([p[0].a for p in parts] or [np.zeros(0, np.int32)]).astype(np.int32)
    b = np.concatenate([p[0].b for p in parts] or [np.zeros(0, np.int32)]).astype(np.int32)
    kind = np.concatenate([np.full(len(p[0].step), p[1], np.int8) for p in parts] or [np.zeros(0, np.int8)])
    dist = np.concatenate([p[0].distance_km for p in parts] or [np.zeros(0)]).astype(np.float64)
    rate = np.concatenate([p[2] for p in parts] or [np.zeros(0)]).astype(np.float64)
    loss = np.concatenate([np.full(len(p[0].step), float(p[3])) for p in parts] or [np.zeros(0)])
    up = np.concatenate([p[4] for p in parts] or [np.zeros(0, bool)]).astype(bool)
    acq = np.concatenate([np.full(len(p[0].step), float(p[5])) for p in parts] or [np.zeros(0)])
    n_models = len(parts)
    del parts
    key = (step.astype(np.int64) * len(nodes) + a) * len(nodes) + b
    if n_models > 1:  # two models may propose the same pair: the first model listed wins
        _, first = np.unique(key, return_index=True)
        keep = np.sort(first)
    else:
        keep = np.arange(len(key))
    order = keep[np.argsort(key[keep], kind="stable")]
    step, a, b, kind, dist, rate, loss, up, acq = (x[order] for x in (step, a, b, kind, dist, rate, loss, up, acq))
    is_isl = kind == 0
    # Why a present link is not up, as codes into DOWN_REASONS.
    code = {r: np.int8(i) for i, r in enumerate(DOWN_REASONS)}
    reason = np.where(up, code[""], np.where(is_isl, code["acquisition"], code["handover"])).astype(np.int8)
    if len(scenario.faults if faults is None else faults):
        hit = fault_reasons(scenario.faults if faults is None else faults, list(nodes["name"]), t_s, step, a, b,
                            is_isl, acq)
        is_fault, is_hit = hit == "fault", hit != ""
        # A fault wins over a link still acquiring; a reboot's re-acquisition only labels links it
        # takes down (one already acquiring keeps its own reason, the same word).
        take = is_fault | (is_hit & up)
        up[is_hit] = False
        reason[take] = np.where(is_fault[take], code["fault"], code["acquisition"])
    # Rain outage: a ground link whose margin meets no rate step (rate 0); a fault still wins.
    out = rate <= 0
    up[out] = False
    reason[out & (reason != code["fault"])] = code["rain"]
    # Cloud over a station blocks its optical ground links; a fault or rain still wins.
    if scenario.clouds:
        st_of = {st.name: i + n_sat for i, st in enumerate(scenario.ground_stations)}
        for c in scenario.clouds:
            sel = np.nonzero(b == st_of[c.station])[0]
            k = np.searchsorted(np.asarray(c.t_s), t_s[step[sel]] + 1e-9, side="right") - 1
            blocked = sel[(k >= 0) & np.asarray(c.blocked, bool)[np.maximum(k, 0)]]
            up[blocked] = False
            reason[blocked[~np.isin(reason[blocked], [code["fault"], code["rain"]])]] = code["cloud"]
    df = pd.DataFrame({
        "step": step, "t_s": t_s[step],
        "a": pd.Categorical.from_codes(a, dtype=cat), "b": pd.Categorical.from_codes(b, dtype=cat),
        "kind": pd.Categorical.from_codes(kind, categories=["isl", "gsl"]),
        "distance_km": dist, "delay_ms": dist / C_KM_PER_S * 1e3, "rate_mbps": rate, "loss_pct": loss, "up": up,
        "down_reason": pd.Categorical.from_codes(reason, categories=list(DOWN_REASONS))})
    return Schedule(nodes=nodes, t_s=t_s, links=df)


def _rain_rates(scenario: Scenario, track: Track, station_xyz: np.ndarray, station_up: np.ndarray,
                ls: LinkSet, carry: BlockCarry | None = None) -> np.ndarray | None:
    """Each ground link's rate under rain (`netemu.plan.weather`), None without `[[rain]]`:
    `rate_mbps`, or the fastest rate step the margin left after rain attenuation (at the link's
    elevation and the station's rain rate) meets; 0 for an outage. `ls.b` is the station number."""
    g = scenario.gsl
    if not scenario.rain or g.frequency_ghz is None:
        return None
    rate = np.full(len(ls.step), float(g.rate_mbps))
    index = {st.name: i for i, st in enumerate(scenario.ground_stations)}
    for r in scenario.rain:
        i = index[r.station]
        sel = np.nonzero(ls.b == i)[0]
        if len(sel) == 0:
            continue
        st = scenario.ground_stations[i]
        d = track.xyz_km[ls.step[sel], ls.a[sel]] - station_xyz[i]
        el = np.degrees(np.arcsin(d @ station_up[i] / np.linalg.norm(d, axis=1)))
        # over the whole window's grid: a stochastic series is drawn along it
        mm_h = (rain_at(r, track.t_s)[ls.step[sel]] if carry is None
                else rain_at(r, carry.t_s)[carry.k0 + ls.step[sel]])
        att = slant_path_rain_attenuation_db(mm_h, g.frequency_ghz, el, st.lat_deg, st.alt_m / 1000.0,
                                             g.rain_height_km, g.polarization)
        rate[sel] = np.minimum(g.rate_mbps, budget_rate_mbps(att, g.clear_sky_margin_db, g.rate_steps))
    return rate


def link_events(schedule: Schedule) -> pd.DataFrame:
    """link_up / link_down (the link becomes usable / stops being usable) and handover events
    (a station starts a ground link while dropping another), after t = 0, sorted by time."""
    L = schedule.links
    t_s = schedule.t_s
    T = len(t_s)
    n = len(L)
    a = L["a"].cat.codes.to_numpy().astype(np.int32)
    b = L["b"].cat.codes.to_numpy().astype(np.int32)
    step = L["step"].to_numpy().astype(np.int32)
    up = L["up"].to_numpy()
    kind_code = L["kind"].cat.codes.to_numpy()
    kind_names = np.asarray(L["kind"].cat.categories, dtype=object)
    names = np.asarray(schedule.node_names, dtype=object)
    rows = []
    # up-runs per link
    u = np.nonzero(up)[0]
    if len(u):
        order = u[np.lexsort((step[u], b[u], a[u]))]
        s, aa, bb = step[order], a[order], b[order]
        new = np.ones(len(order), bool)
        new[1:] = (aa[1:] != aa[:-1]) | (bb[1:] != bb[:-1]) | (s[1:] != s[:-1] + 1)
        last = np.ones(len(order), bool)
        last[:-1] = new[1:]
        starts = order[new & (s > 0)]
        ends = order[last & (s < T - 1)]
        for idx, ev, dstep in ((starts, "link_up", 0), (ends, "link_down", 1)):
            rows.append(pd.DataFrame({"t_s": t_s[step[idx] + dstep], "event": ev, "a": names[a[idx]],
                                      "b": names[b[idx]], "detail": kind_names[kind_code[idx]]}))
    # handovers: a station's ground-link set gains one satellite while losing another
    g = np.nonzero(kind_code == list(kind_names).index("gsl"))[0] if n and "gsl" in list(kind_names) \
        else np.zeros(0, np.int64)
    if len(g):
        cur = pd.DataFrame({"step": step[g], "st": b[g], "sat": a[g]})
        prev = cur.assign(step=cur["step"] + 1)
        added = cur.merge(prev, how="left", indicator=True).query("_merge == 'left_only' and step > 0")
        removed = prev.merge(cur, how="left", indicator=True).query("_merge == 'left_only' and step < @T")
        removed = removed.drop_duplicates(["step", "st"])[["step", "st", "sat"]].rename(columns={"sat": "old"})
        ho = added.drop(columns="_merge").merge(removed, on=["step", "st"])
        if len(ho):
            rows.append(pd.DataFrame({
                "t_s": t_s[ho["step"].to_numpy()], "event": "handover",
                "a": names[ho["st"].to_numpy()], "b": names[ho["sat"].to_numpy()],
                "detail": "from " + pd.Series(names[ho["old"].to_numpy()]).astype(str)}))
    if not rows:
        return pd.DataFrame({"t_s": [], "event": [], "a": [], "b": [], "detail": []})
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["t_s", "event", "a", "b"], kind="stable", ignore_index=True)
