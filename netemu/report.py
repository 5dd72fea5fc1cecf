"""Reports of run directories: `report.html` with its PNG figures beside it (`figures/`), readable
offline; and side-by-side comparisons of several runs (edge: reads a run directory, writes files).

Everything is read from the run directory (`run.json`, `summary.json`, `fidelity.json`,
`probes.parquet`, `links.parquet`, `routes.parquet`, `paths.parquet`, `events.csv`, `nodes.csv`,
`positions.parquet`, `jobs.csv`, `throughput.csv`, `link_counters.csv`, `packets.parquet`,
`injections.csv`);
a missing file only leaves its section out. Plots are matplotlib (Agg), tables pandas, and the
coastlines of the map come from the `global-land-mask` data package (no download at run time).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import NetemuError

__all__ = ["build_report", "build_compare", "compare_pairs", "compare_table", "positions_table", "probe_status",
           "REPORT_FILE", "fault_timeline", "fault_effects", "faults_summary", "TIMELINE_COLUMNS"]

REPORT_FILE = "report.html"
FIG_DIR = "figures"
MAP_INSTANTS = 3
MAX_PAIRS = 6
BUSIEST_LINKS = 12
_DPI = 110

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d232b;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #d6dbe1;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #d6dbe1;padding:.25em .6em;
text-align:right}th{background:#f1f4f7}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #e3e7eb;margin:.5em 0}.say{background:#f6f8fa;border-left:4px solid #3a6ea5;
padding:.6em 1em;margin:1em 0}.verdict-ok{color:#1a7f37;font-weight:600}.verdict-bad{color:#b42318;font-weight:600}
.meta{color:#57606a;font-size:.9em}
.nv-bar{display:flex;gap:.8em;align-items:center;flex-wrap:wrap}#nv-slider{flex:1;min-width:200px}
"""


# --------------------------------------------------------------------------- data


def positions_table(plan, t_s: list[float], track_window: tuple[float, float] | None = None,
                    track_points: int = 240) -> pd.DataFrame:
    """Where every node is at the grid steps nearest to `t_s` (`instant` True; each step once), plus, over
    `track_window`, the ground tracks of the compute satellites (`instant` False, about
    `track_points` points each): `step, t_s, name, kind, lat_deg, lon_deg, alt_km, instant`
    (geocentric latitude, enough for a map)."""
    sched, track = plan.schedule, plan.track
    kinds = dict(zip(sched.nodes["name"], sched.nodes["kind"]))
    names = np.array(track.names)
    sat_kinds = np.array([kinds.get(n, "satellite") for n in track.names])

    def at(k: int, sel: np.ndarray, instant: bool) -> pd.DataFrame:
        xyz = track.xyz_km[k][sel]
        r = np.linalg.norm(xyz, axis=1)
        lat = np.degrees(np.arcsin(np.clip(xyz[:, 2] / np.where(r > 0, r, 1), -1, 1)))
        lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        return pd.DataFrame({"step": k, "t_s": float(track.t_s[k]), "name": names[sel], "kind": sat_kinds[sel],
                             "lat_deg": lat, "lon_deg": lon, "alt_km": r - 6371.0, "instant": instant})

    def step_of(t: float) -> int:
        return int(np.clip(np.searchsorted(track.t_s, t, side="right") - 1, 0, len(track.t_s) - 1))

    rows = []
    g = plan.scenario.ground_stations
    every = np.ones(len(names), bool)
    for k in dict.fromkeys(step_of(t) for t in t_s):     # instants in one step: one map, not copies
        rows.append(at(k, every, True))
        rows.append(pd.DataFrame({"step": k, "t_s": float(track.t_s[k]), "name": [st.name for st in g],
                                  "kind": "ground", "lat_deg": [st.lat_deg for st in g],
                                  "lon_deg": [st.lon_deg for st in g], "alt_km": [st.alt_m / 1e3 for st in g],
                                  "instant": True}))
    compute = sat_kinds == "compute"
    if track_window is not None and compute.any():
        k0, k1 = step_of(track_window[0]), step_of(track_window[1])
        for k in np.unique(np.linspace(k0, k1, track_points).astype(int)):
            rows.append(at(int(k), compute, False))
    return pd.concat(rows, ignore_index=True)


class _Run:
    """A run directory's tables, read on first use (None when the file is missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise NetemuError(f"{self.path}: not a run directory (it does not exist)")
        self._cache: dict = {}

    def get(self, name: str):
        if name in self._cache:
            return self._cache[name]
        p = self.path / name
        val = None
        if p.exists():
            if name.endswith(".json"):
                val = json.loads(p.read_text())
            elif name.endswith(".parquet"):
                val = pd.read_parquet(p)
            elif name.endswith(".csv"):
                val = pd.read_csv(p)
        self._cache[name] = val
        return val

    @property
    def name(self) -> str:
        return self.path.name

    def window(self) -> tuple[float, float]:
        w = (self.get("run.json") or {}).get("window")
        if w:
            return float(w["t0_s"]), float(w["t_end_s"])
        pr = self.get("probes.parquet")
        if pr is not None and len(pr):
            return float(pr["t_s"].min()), float(pr["t_s"].max())
        return 0.0, float((self.get("summary.json") or {}).get("duration_s", 0.0))

    def events(self) -> pd.DataFrame:
        ev = self.get("events.csv")
        if ev is None:
            return pd.DataFrame(columns=["t_s", "event", "a", "b", "detail"])
        t0, t1 = self.window()
        return ev[(ev["t_s"] >= t0) & (ev["t_s"] <= t1)]


def _plt():
    import matplotlib   # lazy: only figures need it, and the Agg backend is chosen before pyplot loads
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / name, dpi=_DPI, bbox_inches="tight")
    _plt().close(fig)
    return f"{FIG_DIR}/{name}"


def _as_run(run) -> "_Run":
    """A report `_Run` from a run directory's path, a `netemu.load_run` result or a `_Run`."""
    if isinstance(run, _Run):
        return run
    return _Run(getattr(run, "path", run))


def _legend_below(where, handles: list, labels: list, ncol: int = 4) -> None:
    """One legend under the plot (off the data), duplicates merged: under an Axes, or at the
    bottom of a Figure (constrained layout makes room for it)."""
    uniq = dict(zip(labels, handles))
    if not uniq:
        return
    if hasattr(where, "plot"):       # an Axes
        where.legend(uniq.values(), uniq.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.18),
                     ncol=min(ncol, len(uniq)), fontsize=8, frameon=False)
    else:
        where.legend(uniq.values(), uniq.keys(), loc="outside lower center", ncol=min(ncol, len(uniq)),
                     fontsize=8, frameon=False)


# --------------------------------------------------------------------------- figures
# Each fig_* takes a run directory (a path, a `netemu.load_run` result or a `_Run`) and returns a
# matplotlib Figure, or None when the run has nothing to show; build_report saves them.


_COAST: tuple | None = None
MAP_ONE_BELOW_S = 600.0
"""Windows shorter than this get one map (satellites move under 40° in it), not MAP_INSTANTS."""


def _coastlines():
    """Land mask on a 0.5° grid (from the global-land-mask package), for a contour."""
    global _COAST
    if _COAST is None:
        from global_land_mask import globe   # lazy: a large land mask, read once for the map
        lat = np.arange(-89.75, 90, 0.5)
        lon = np.arange(-179.75, 180, 0.5)
        LO, LA = np.meshgrid(lon, lat)
        _COAST = (lon, lat, globe.is_land(LA, LO).astype(float))
    return _COAST


def drawn_pairs(run) -> list[tuple[str, str, str]]:
    """The pairs whose paths the map draws: (src, dst, what) for each probed pair ("probed") and
    each workload's client-server pair ("workload NAME"), at most MAX_PAIRS."""
    run = _as_run(run)
    out: dict = {}
    pr = run.get("probes.parquet")
    if pr is not None and len(pr):
        for s, d in pr[["src", "dst"]].astype(str).drop_duplicates().itertuples(index=False):
            out.setdefault((s, d), "probed")
    jobs = run.get("jobs.csv")
    if jobs is not None and len(jobs) and {"client", "server"} <= set(jobs):
        # (an all-reduce's jobs have no client-server pair: their rows carry none)
        for wl, c, s in jobs[["workload", "client", "server"]].dropna().astype(str).drop_duplicates().itertuples(index=False):
            if (c, s) not in out and (s, c) not in out:
                out[(c, s)] = f"workload {wl}"
    return [(s, d, w) for (s, d), w in list(out.items())[:MAX_PAIRS]]


def map_extent(lon_deg, lat_deg, pad_deg: float = 12.0, min_span_deg: float = 40.0) -> tuple[float, float, float, float]:
    """(lon0, lon1, lat0, lat1) of the region that holds the points (padded, at least
    `min_span_deg` wide, 2:1 like the world map), or the whole world when the points span most
    of it or straddle the date line."""
    lon, lat = np.asarray(lon_deg, float), np.asarray(lat_deg, float)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return -180.0, 180.0, -90.0, 90.0
    lon, lat = lon[ok], lat[ok]
    lo0, lo1, la0, la1 = lon.min() - pad_deg, lon.max() + pad_deg, lat.min() - pad_deg, lat.max() + pad_deg
    w = max(lo1 - lo0, min_span_deg, 2 * (la1 - la0))
    h = w / 2
    if w >= 240:
        return -180.0, 180.0, -90.0, 90.0
    cx, cy = (lo0 + lo1) / 2, (la0 + la1) / 2
    lo0, lo1 = cx - w / 2, cx + w / 2
    la0, la1 = max(-90.0, cy - h / 2), min(90.0, cy + h / 2)
    if lo0 < -180 or lo1 > 180:
        shift = (-180 - lo0) if lo0 < -180 else (180 - lo1)
        lo0, lo1 = lo0 + shift, lo1 + shift
    return float(max(lo0, -180)), float(min(lo1, 180)), float(la0), float(la1)


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> list:
    """Label each point where its text overlaps no label placed before (tries four offsets; a
    label that fits nowhere is left out). Returns the texts drawn."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed, texts = [], []
    offsets = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"))
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for x, y, name in points:
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            continue
        for dx, dy, ha, va in offsets:
            t = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha, va=va,
                            zorder=7, bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7))
            bb = t.get_window_extent(renderer)
            if not any(bb.overlaps(p) for p in placed):
                placed.append(bb)
                texts.append(t)
                break
            t.remove()
    return texts


def fig_map(run):
    """Nodes, live links and the probed and workload pairs' planned paths at one instant (short
    windows) or up to MAP_INSTANTS of them, zoomed to the region that holds the pairs' endpoints
    and the ground stations they use."""
    run = _as_run(run)
    pos, links = run.get("positions.parquet"), run.get("links.parquet")
    if pos is None or not len(pos):
        return None
    plt = _plt()
    from .timeview import _route_at
    if "instant" not in pos:
        pos = pos.assign(instant=True)
    tracks = pos[~pos["instant"]]
    pos = pos[pos["instant"]]
    steps = sorted(pos["step"].unique())[:MAP_INSTANTS]
    t0, t1 = run.window()
    if t1 - t0 < MAP_ONE_BELOW_S:
        steps = steps[:1]
    pairs = drawn_pairs(run)
    routes = run.get("routes.parquet")
    fig, axes = plt.subplots(len(steps), 1, figsize=(10, 5.4 * len(steps)), squeeze=False, constrained_layout=True)
    lon_c, lat_c, land = _coastlines()
    style = {"ground": dict(marker="^", s=46, c="#1f5fbf", zorder=5, label="ground station"),
             "compute": dict(marker="o", s=22, c="#d1495b", zorder=4, label="compute satellite"),
             "relay": dict(marker=".", s=9, c="#6c757d", zorder=3, label="satellite")}
    colours = ["#e8590c", "#7048e8", "#0ca678", "#d6336c", "#1c7ed6", "#f59f00"]
    for ax, k in zip(axes[:, 0], steps):
        p = pos[pos["step"] == k].drop_duplicates("name")   # runs written before one map per step
        where = p.set_index("name")[["lon_deg", "lat_deg"]]
        routes_k = {(s, d): (_route_at(routes, s, d, np.array([k]))[0] if routes is not None else None)
                    for s, d, _ in pairs}
        # the region: the pairs' endpoints and path nodes, or every ground station when nothing is drawn
        focus = {n for (s, d), r in routes_k.items() for n in ([s, d] + (r or [])) if isinstance(n, str)}
        if not focus:
            focus = set(p.loc[p["kind"] == "ground", "name"])
        f = where.reindex(sorted(focus)).dropna()
        ext = map_extent(f["lon_deg"], f["lat_deg"]) if len(f) else (-180.0, 180.0, -90.0, 90.0)
        ax.contour(lon_c, lat_c, land, levels=[0.5], colors="#9aa5b1", linewidths=0.6)
        for i, (_, tr) in enumerate(tracks.groupby("name")):
            lon, lat = tr["lon_deg"].to_numpy(), tr["lat_deg"].to_numpy()
            cut = np.flatnonzero(np.abs(np.diff(lon)) > 180) + 1       # break the line at the date line
            for seg_lon, seg_lat in zip(np.split(lon, cut), np.split(lat, cut)):
                ax.plot(seg_lon, seg_lat, color="#d1495b", lw=0.8, alpha=0.5, zorder=1,
                        label="compute satellites' ground track" if i == 0 else None)
        if links is not None:
            live = links[(links["step"] == k) & links["up"]]
            for kind, color, lw in (("isl", "#adb5bd", 0.4), ("gsl", "#2b9348", 1.4)):
                sel = live[live["kind"].astype(str) == kind]
                a = where.reindex(sel["a"].astype(str)).to_numpy()
                b = where.reindex(sel["b"].astype(str)).to_numpy()
                ok = ~np.isnan(a).any(axis=1) & ~np.isnan(b).any(axis=1) & (np.abs(a[:, 0] - b[:, 0]) < 180)
                if ok.any():
                    xs = np.stack([a[ok, 0], b[ok, 0], np.full(ok.sum(), np.nan)], axis=1).ravel()
                    ys = np.stack([a[ok, 1], b[ok, 1], np.full(ok.sum(), np.nan)], axis=1).ravel()
                    ax.plot(xs, ys, color=color, lw=lw, zorder=2, label=f"{kind.upper()} (live)")
        for i, (s, d, what) in enumerate(pairs):
            r = routes_k[(s, d)]
            label = f"{s} → {d} ({what})" + ("" if r else ": no path")
            xy = where.reindex(r).to_numpy() if r else np.zeros((0, 2))
            if len(xy) >= 2:
                xs, ys = [xy[0, 0]], [xy[0, 1]]
                for (xa, ya), (xb, yb) in zip(xy[:-1], xy[1:]):
                    if abs(xb - xa) > 180:         # do not draw across the whole map at the date line
                        xs.append(np.nan)
                        ys.append(np.nan)
                    xs.append(xb)
                    ys.append(yb)
                ax.plot(xs, ys, color=colours[i % len(colours)], lw=3.2 - 0.3 * i, alpha=0.85, zorder=6,
                        solid_capstyle="round", label=label)
            else:
                ax.plot([], [], color=colours[i % len(colours)], lw=3, ls=":", label=label)
        for kind, st in style.items():
            q = (p[p["kind"].astype(str) == kind] if kind != "relay"
                 else p[~p["kind"].astype(str).isin(["ground", "compute"])])
            if len(q):
                ax.scatter(q["lon_deg"], q["lat_deg"], **st)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_aspect("equal")
        ax.set_title(f"t = {p['t_s'].iloc[0]:g} s" + ("" if ext == (-180.0, 180.0, -90.0, 90.0) else
                                                       " (zoomed to the drawn pairs' region)"))
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        g = p[p["kind"] == "ground"]
        ends = {n for s, d, _ in pairs for n in (s, d)}
        # endpoints first (they win a crowded spot), then the other stations, then path satellites
        first = sorted(g.itertuples(), key=lambda r: (r.name not in ends, r.name))
        pts = [(r.lon_deg, r.lat_deg, r.name) for r in first]
        path_sats = [n for r in routes_k.values() if r for n in r[1:-1]]
        sats = where.reindex(list(dict.fromkeys(path_sats))).dropna()
        pts += [(x, y, n) for n, (x, y) in zip(sats.index, sats.to_numpy())]
        place_labels(ax, pts)
    _legend_below(axes[-1, 0], *_merged_handles(fig), ncol=3)
    return fig


def _merged_handles(fig) -> tuple[list, list]:
    handles, labels = [], []
    for ax in fig.axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    return handles, labels


def _change_times(run: _Run, src: str, dst: str) -> np.ndarray:
    r = run.get("routes.parquet")
    if r is None:
        return np.array([])
    t0, t1 = run.window()
    m = (((r["src"] == src) & (r["dst"] == dst)) | ((r["src"] == dst) & (r["dst"] == src))) & (r["t_s"] > t0) & (r["t_s"] <= t1)
    return r.loc[m, "t_s"].to_numpy(float)


def probe_status(probes: pd.DataFrame) -> pd.Series:
    """Per probe: "answered", "lost" (no echo while the plan had a path) or "unreachable" (sent
    while the plan had no path: oracle NaN; not a loss of the emulator's)."""
    st = np.where(probes["rtt_ms"].notna(), "answered", "lost")
    st = np.where(probes["oracle_rtt_ms"].isna() & probes["rtt_ms"].isna(), "unreachable", st)
    return pd.Series(st, index=probes.index)


def _cdf(ax, values, **kw) -> bool:
    v = np.sort(np.asarray(values, float)[np.isfinite(np.asarray(values, float))])
    if not len(v):
        return False
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", **kw)
    return True


def fig_rtt(run):
    """Per probed pair: measured RTT over time against the path's light-time (path changes,
    handovers and losses marked), and beside it the two CDFs."""
    run = _as_run(run)
    pr = run.get("probes.parquet")
    if pr is None or not len(pr):
        return None
    plt = _plt()
    pairs = list(pr.groupby(["src", "dst"], sort=False).groups)[:MAX_PAIRS]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 2.7 * len(pairs) + 0.8), squeeze=False, sharex="col",
                             gridspec_kw={"width_ratios": [3, 1]}, constrained_layout=True)
    hand = run.events()
    hand = hand[hand["event"] == "handover"]
    for (ax, cx), (s, d) in zip(axes, pairs):
        g = pr[(pr["src"] == s) & (pr["dst"] == d)]
        ax.plot(g["t_s"], g["oracle_rtt_ms"], color="#1d232b", lw=1.2, label="light-time of the path (oracle)")
        ax.scatter(g["t_s"], g["rtt_ms"], s=4, color="#d1495b", label="measured RTT", zorder=3)
        y = float(np.nanmin(g["oracle_rtt_ms"])) if g["oracle_rtt_ms"].notna().any() else 0.0
        status = probe_status(g)
        lost = g[status == "lost"]
        if len(lost):
            ax.scatter(lost["t_s"], np.full(len(lost), y), marker="x", s=10, color="#b42318",
                       label="lost (planned path up)")
        unreach = g[status == "unreachable"]
        if len(unreach):
            ax.scatter(unreach["t_s"], np.full(len(unreach), y), marker="|", s=12, color="#adb5bd",
                       label="unreachable (no planned path)")
        for i, t in enumerate(_change_times(run, s, d)):
            ax.axvline(t, color="#3a6ea5", ls="--", lw=0.8, label="path change" if i == 0 else None)
        for i, t in enumerate(hand[(hand["a"] == s) | (hand["a"] == d)]["t_s"]):
            ax.axvline(t, color="#f4a261", lw=2, alpha=0.6, label="GSL handover" if i == 0 else None)
        _mark_faults(ax, run)
        ax.set_ylabel("RTT (ms)")
        ax.set_title(f"{s} → {d}", fontsize=10)
        _cdf(cx, g["oracle_rtt_ms"], color="#1d232b", lw=1.2)
        _cdf(cx, g["rtt_ms"], color="#d1495b", lw=1.2)
        cx.set_ylabel("fraction of probes")
        cx.set_title("CDF", fontsize=10)
        cx.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("scenario time t (s)")
    axes[-1, 1].set_xlabel("RTT (ms)")
    _legend_below(fig, *_merged_handles(fig), ncol=3)
    return fig


def fig_throughput(run):
    run = _as_run(run)
    th = run.get("throughput.csv")
    if th is None or not len(th):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.4), constrained_layout=True)
    for wl, g in th.groupby("workload"):
        ax.step(g["t_s"], g["mbps"], where="post", label=wl)
    _mark_handovers(ax, run)
    _mark_faults(ax, run)
    ax.set_xlabel("scenario time t (s)")
    ax.set_ylabel("goodput (Mbit/s, emulated)")
    _legend_below(fig, *_merged_handles(fig))
    return fig


def _mark_handovers(ax, run: _Run) -> None:
    ev = run.events()
    for i, t in enumerate(ev[ev["event"] == "handover"]["t_s"]):
        ax.axvline(t, color="#f4a261", lw=2, alpha=0.5, label="GSL handover" if i == 0 else None)


def run_faults(run: _Run) -> pd.DataFrame:
    """The run's faults in its window, planned and live, with what each did (fault_effects)."""
    if "_faults" not in run._cache:
        t0, t1 = run.window()
        tl = fault_timeline(run.get("events.csv"), run.get("injections.csv"), t0, t1)
        run._cache["_faults"] = fault_effects(tl, run.get("probes.parquet"), run.get("jobs.csv"),
                                              run.get("throughput.csv"))
    return run._cache["_faults"]


def _mark_faults(ax, run: _Run) -> None:
    """Faults over a time plot: shaded while they last, a dotted line where routes moved round."""
    f = run_faults(run)
    for i, r in enumerate(f.itertuples(index=False)):
        ax.axvspan(r.t_start_s, r.t_end_s, color="#d1495b", alpha=0.10, lw=0, label="fault" if i == 0 else None)
        if np.isfinite(r.t_repair_s):
            ax.axvline(r.t_repair_s, color="#2a9d8f", ls=":", lw=1.4, label="reroute" if i == 0 else None)


def fig_faults(run):
    """Timeline of faults: unreachable until detected (red), rerouted until they end (pink)."""
    run = _as_run(run)
    f = run_faults(run)
    if not len(f):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.35 * len(f)))
    for y, r in enumerate(f.itertuples(index=False)):
        rep = r.t_repair_s if np.isfinite(r.t_repair_s) else r.t_start_s
        ax.barh(y, rep - r.t_start_s, left=r.t_start_s, color="#b42318", height=0.6,
                label="until detected (routes lead into it)" if y == 0 else None)
        ax.barh(y, r.t_end_s - rep, left=rep, color="#f4a3a8", height=0.6,
                label="rerouted around it" if y == 0 else None)
        ax.text(r.t_end_s, y, f"  {r.probes_lost} probes lost", va="center", fontsize=7)
    ax.set_yticks(range(len(f)), [f"{r.fault}: {r.kind} {r.target}" for r in f.itertuples(index=False)], fontsize=7)
    ax.invert_yaxis()
    t0, t1 = run.window()
    ax.set_xlim(t0, t1)
    ax.set_xlabel("scenario time t (s)")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    return fig


def _faults_table(run: _Run) -> str:
    f = run_faults(run)
    if not len(f):
        return ""
    rows = [(r.fault, f"{r.kind} {r.target}", f"{r.t_start_s:.3f}", r.time_to_repair_s, r.t_end_s, r.probes_lost,
             f"{r.jobs_before} / {r.jobs_during} / {r.jobs_after}",
             " / ".join(_fmt(v) for v in (r.completion_before_ms, r.completion_during_ms, r.completion_after_ms)),
             r.jobs_failed_during, r.allreduce_stalled, r.goodput_lost_mbit) for r in f.itertuples(index=False)]
    return _table(rows, ("fault", "what", "start t (s)", "time to repair (s)", "end t (s)", "probes lost",
                         "jobs before / during / after", "completion p50 before / during / after (ms)",
                         "jobs failed during", "all-reduce steps stalled", "goodput lost (Mbit)"))


def fig_completion(run):
    run = _as_run(run)
    jobs = run.get("jobs.csv")
    if jobs is None or not len(jobs):
        return None
    done = jobs[jobs["status"] == "done"]
    if not len(done):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6), constrained_layout=True)
    for wl, g in done.groupby("workload"):
        v = np.sort(g["completion_ms"].to_numpy(float))
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{wl}: completion")
        if g["ttfb_ms"].notna().any():
            t = np.sort(g["ttfb_ms"].dropna().to_numpy(float))
            ax.step(t, np.arange(1, len(t) + 1) / len(t), where="post", ls="--", label=f"{wl}: time to first byte")
    ax.set_xscale("log")
    ax.set_xlabel("ms (emulated)")
    ax.set_ylabel("fraction of jobs")
    ax.grid(alpha=0.3)
    _legend_below(fig, *_merged_handles(fig))
    return fig


def fig_jobs_time(run):
    run = _as_run(run)
    jobs = run.get("jobs.csv")
    if jobs is None or not len(jobs):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.4), constrained_layout=True)
    for wl, g in jobs.groupby("workload"):
        ok = g[g["status"] == "done"]
        ax.scatter(ok["t_start_s"], ok["completion_ms"], s=8, label=f"{wl} (done)")
        bad = g[g["status"] != "done"]
        if len(bad):
            ax.scatter(bad["t_start_s"], np.full(len(bad), max(1.0, float(ok["completion_ms"].min()) if len(ok) else 1.0)),
                       marker="x", s=16, label=f"{wl} ({', '.join(sorted(set(bad['status'])))})")
    _mark_handovers(ax, run)
    _mark_faults(ax, run)
    ax.set_yscale("log")
    ax.set_xlabel("job start, scenario time t (s)")
    ax.set_ylabel("completion (ms, emulated)")
    _legend_below(fig, *_merged_handles(fig))
    return fig


def power_window(run: _Run) -> pd.DataFrame | None:
    """The plan's power rows (power.parquet) over the run's window, widened to at least the
    steps either side of it; None without a compute model."""
    p = run.get("power.parquet")
    if p is None or not len(p):
        return None
    t0, t1 = run.window()
    t = np.unique(p["t_s"].to_numpy(float))
    lo = t[max(0, int(np.searchsorted(t, t0, side="right")) - 1)]
    hi = t[min(len(t) - 1, int(np.searchsorted(t, t1, side="left")))]
    return p[(p["t_s"] >= lo) & (p["t_s"] <= hi)]


def fig_power(run):
    """The compute satellites' power and capacity over the window: state of charge (median
    and range over the satellites), the share of them in Earth's shadow (shaded), the
    cluster's active accelerators; and, when requests were dispatched, the requests each
    satellite served."""
    run = _as_run(run)
    p = power_window(run)
    if p is None or not len(p):
        return None
    g = p.groupby("t_s")
    t = np.array(sorted(g.groups))
    soc = g["soc_pct"]
    dark = g["sunlit"].apply(lambda x: float((x < 0.5).mean())).to_numpy()
    jobs = run.get("jobs.csv")
    served = None
    if jobs is not None and "queue_ms" in jobs and jobs["queue_ms"].notna().any():
        served = jobs[jobs["queue_ms"].notna()]
    plt = _plt()
    n = 3 if served is not None else 2
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), sharex=True)
    ax = axes[0]
    ax.fill_between(t, soc.min().to_numpy(), soc.max().to_numpy(), alpha=0.25, label="range over satellites")
    ax.plot(t, soc.median().to_numpy(), label="median")
    ax.set_ylabel("state of charge (%)")
    ax.set_ylim(0, 105)
    for a in axes:
        for k in range(len(t) - 1):
            if dark[k] > 0:
                a.axvspan(t[k], t[k + 1], color="0.2", alpha=0.25 * dark[k], lw=0)
    ax.legend(fontsize=8, title=f"{p['node'].nunique()} compute satellites; grey: share in Earth's shadow",
              title_fontsize=8)
    ax = axes[1]
    ax.step(t, g["active_accelerators"].sum().to_numpy(), where="post")
    ax.set_ylabel("active accelerators\n(cluster)")
    ax.set_ylim(bottom=0)
    if served is not None:
        ax = axes[2]
        for (wl, node), h in served.groupby(["workload", "server"]):
            ax.scatter(h["t_start_s"], h["ttfb_ms"], s=6, label=f"{wl} → {node}")
        ax.set_ylabel("time to first byte\n(ms, emulated)")
        ax.legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("scenario time t (s)")
    t0, t1 = run.window()
    for a in axes:
        a.axvline(t0, color="k", lw=0.6, ls=":")
        a.axvline(t1, color="k", lw=0.6, ls=":")
    return fig


def compute_rows(summary: dict) -> list[tuple]:
    """Per inference workload served by queueing servers: policy, requests per serving
    satellite, queue and network time, time to first byte in and out of eclipse, refusals."""
    rows = []
    for name, s in (summary.get("workloads") or {}).items():
        if s.get("kind") != "inference" or "queue_ms_p50" not in s:
            continue
        by = s.get("served_by") or {}
        rows.append((name, s.get("dispatch"), ", ".join(f"{k}: {v}" for k, v in by.items()),
                     s.get("queue_ms_p50"), s.get("queue_ms_p99"), s.get("network_ms_p50"),
                     s.get("ttfb_ms_sunlit_p99"), s.get("ttfb_ms_eclipse_p99"), s.get("refused", 0)))
    return rows


def _compute_table(summ: dict) -> str:
    rows = compute_rows(summ)
    if not rows:
        return ""
    return _table(rows, ("workload", "dispatch", "requests per satellite", "queue p50 ms", "queue p99 ms",
                         "network p50 ms", "TTFB p99 ms (sunlit)", "TTFB p99 ms (eclipse)", "refused"))


def fig_topology(run):
    """Links up over the window, link events and endpoint path lengths; a panel with nothing to
    show is left out."""
    run = _as_run(run)
    links = run.get("links.parquet")
    if links is None or not len(links):
        return None
    t0, t1 = run.window()
    L = links[(links["t_s"] >= t0) & (links["t_s"] <= t1) & links["up"]]
    if not len(L):
        return None
    plt = _plt()
    ev = run.events()
    kinds = [k for k in ("link_up", "link_down", "handover") if (ev["event"] == k).any()]
    paths = run.get("paths.parquet")
    P = paths[(paths["t_s"] >= t0) & (paths["t_s"] <= t1)] if paths is not None and len(paths) else None
    panels = ["links"] + (["events"] if kinds else []) + (["hops"] if P is not None and len(P) else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.3 * len(panels) + 0.4), sharex=True, squeeze=False,
                             constrained_layout=True)
    ax_of = dict(zip(panels, axes[:, 0]))
    up = L.groupby(["t_s", L["kind"].astype(str)]).size().unstack(fill_value=0)
    for kind in up.columns:
        ax_of["links"].plot(up.index, up[kind], label=f"{kind.upper()} links up")
    ax_of["links"].set_ylabel("links")
    for name, color in (("link_up", "#2b9348"), ("link_down", "#b42318"), ("handover", "#f4a261")):
        e = ev[ev["event"] == name]
        if len(e):
            c = e.groupby("t_s").size()
            ax_of["events"].bar(c.index, c.values, width=max((t1 - t0) / 400, 0.2), color=color,
                                label=name.replace("_", " "))
    if "events" in ax_of:
        ax_of["events"].set_ylabel("events")
    if "hops" in ax_of:
        h = P.groupby("t_s")["hops"].agg(["median", "max"])
        ax_of["hops"].plot(h.index, h["median"], label="median hops (endpoint pairs)")
        ax_of["hops"].plot(h.index, h["max"], label="max hops", alpha=0.6)
        ax_of["hops"].set_ylabel("hops")
    axes[-1, 0].set_xlabel("scenario time t (s)")
    _legend_below(fig, *_merged_handles(fig), ncol=4)
    return fig


def busiest_links(run) -> pd.DataFrame | None:
    run = _as_run(run)
    c = run.get("link_counters.csv")
    if c is None or not len(c) or "bytes_out" not in c:
        return None
    t0, t1 = run.window()
    span = max(t1 - t0, 1e-9)
    drops = [col for col in c.columns if col.startswith("drop_")]
    g = c.groupby(["link", "a", "b", "kind"], as_index=False)[["bytes_out", "frames_out", *drops]].sum()
    links = run.get("links.parquet")
    if links is not None:
        rate = links.groupby([links["a"].astype(str), links["b"].astype(str)])["rate_mbps"].max()
        g["rate_mbps"] = [rate.get((a, b), np.nan) for a, b in zip(g["a"], g["b"])]
    else:
        g["rate_mbps"] = np.nan
    # both directions' bytes over the window's scenario seconds (at speed 1, emulated seconds)
    g["mbps"] = g["bytes_out"] * 8 / span / 1e6 / 2
    g["utilisation_pct"] = 100 * g["mbps"] / g["rate_mbps"]
    g["drops"] = g[drops].sum(axis=1) if drops else 0
    if "queue_hwm_bytes" in c:      # the fuller direction's peak queue over the run
        g["queue_peak_bytes"] = c.groupby("link")["queue_hwm_bytes"].max().reindex(g["link"]).to_numpy()
    return g.sort_values("bytes_out", ascending=False).head(BUSIEST_LINKS)


def fig_links(run):
    run = _as_run(run)
    g = busiest_links(run)
    if g is None or not len(g) or g["bytes_out"].sum() == 0:
        return None
    plt = _plt()
    queue = "queue_peak_bytes" in g and g["queue_peak_bytes"].notna().any()
    fig, axes = plt.subplots(1, 3 if queue else 2, figsize=(11 if queue else 10, 3.6), constrained_layout=True)
    names = [f"{a}–{b}" for a, b in zip(g["a"], g["b"])]
    axes[0].barh(names, g["mbps"], color="#3a6ea5")
    axes[0].set_xlabel("mean Mbit/s per direction (emulated)")
    axes[1].barh(names, g["drops"], color="#b42318")
    axes[1].set_xlabel("frames dropped (queue, loss, down)")
    if queue:
        axes[2].barh(names, g["queue_peak_bytes"] / 1e3, color="#f08c00")
        axes[2].set_xlabel("peak queue (kB, fuller direction)")
    for ax in axes:
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    return fig


BUSIEST_LOAD_LINKS = 5     # links drawn over time (link_load.png)


def link_load_series(load: pd.DataFrame, n: int = BUSIEST_LOAD_LINKS,
                     window: tuple[float, float] | None = None) -> dict | None:
    """The `n` links that carried most bytes (both directions) in a run's `link_load.parquet`, as
    series over every sample (pure): {"t_s": sample instants, "links": their ids, busiest first,
    and per column of rate_mbps, utilisation, queue_bytes, queue_max_bytes, drops a DataFrame
    indexed by sample with a column per (link, direction)}. Samples where a direction is not
    listed count as idle (nothing sent, queue empty; utilisation 0 where the link has a rate),
    and so do the samples of `window` (t0_s, t_end_s) before the first listed and after the
    last (at the table's median interval). None without any bytes."""
    if load is None or not len(load) or load["tx_bytes"].sum() == 0:
        return None
    total = load.groupby("link")["tx_bytes"].sum()
    links = list(total[total > 0].sort_values(ascending=False, kind="stable").index[:n])
    sel = load[load["link"].isin(links)]
    t_of = load.groupby("sample")["t_s"].median()
    lo, hi = int(t_of.index.min()), int(t_of.index.max())
    if window is not None and len(t_of) > 1:
        step = float(np.median(np.diff(t_of.to_numpy(float)) / np.diff(t_of.index.to_numpy(float))))
        if step > 0:
            lo = max(1, lo - int(max(0.0, t_of.iloc[0] - window[0]) // step))
            hi = hi + int(max(0.0, window[1] - t_of.iloc[-1]) // step)
    samples = np.arange(lo, hi + 1)
    known = t_of.index.to_numpy(float)
    t = np.interp(samples, known, t_of.to_numpy(float))
    if len(known) > 1:      # beyond the listed samples: on at the median interval
        step = float(np.median(np.diff(t_of.to_numpy(float)) / np.diff(known)))
        t = np.where(samples < known[0], t_of.iloc[0] - (known[0] - samples) * step, t)
        t = np.where(samples > known[-1], t_of.iloc[-1] + (samples - known[-1]) * step, t)
    cols = [(k, d) for k in links for d in ("ab", "ba") if ((sel["link"] == k) & (sel["direction"] == d)).any()]
    out = {"t_s": pd.Series(t, index=samples), "links": links}
    limited = sel.groupby(["link", "direction"])["link_rate_mbps"].max()
    for c in ("rate_mbps", "utilisation", "queue_bytes", "queue_max_bytes", "drops"):
        w = sel.pivot_table(index="sample", columns=["link", "direction"], values=c, aggfunc="sum")
        w = w.reindex(index=samples, columns=pd.MultiIndex.from_tuples(cols)).fillna(0.0)
        if c == "utilisation":   # no utilisation where the link has no rate
            for col in cols:
                if not limited.get(col, np.nan) > 0:
                    w[col] = np.nan
        out[c] = w
    return out


def fig_link_load(run, n: int = BUSIEST_LOAD_LINKS):
    """Throughput, utilisation of the configured rate (links that have one) and queue
    occupancy (the largest backlog in each sample) over time of the `n` busiest links, both
    directions (solid a→b, dashed b→a); red crosses: samples with drops. From
    `link_load.parquet`; None without it. Panels with nothing to show are left out."""
    run = _as_run(run)
    s = link_load_series(run.get("link_load.parquet"), n, window=run.window())
    if s is None:
        return None
    plt = _plt()
    c = run.get("link_counters.csv")
    ends = {}
    if c is not None and {"a", "b"} <= set(c.columns):
        ends = {k: (a, b) for k, a, b in zip(c["link"], c["a"], c["b"])}
    limited = [col for col in s["utilisation"].columns if s["utilisation"][col].notna().any()]
    queued = [col for col in s["queue_max_bytes"].columns if (s["queue_max_bytes"][col] > 0).any()]
    panels = ["rate", *(["util"] if limited else []), *(["queue"] if queued else [])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels) + 0.6), sharex=True,
                             constrained_layout=True, squeeze=False)
    ax = dict(zip(panels, axes[:, 0]))
    t = s["t_s"].to_numpy()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, link in enumerate(s["links"]):
        a, b = ends.get(link, ("a", "b"))
        for d, style in (("ab", "-"), ("ba", "--")):
            col = (link, d)
            if col not in s["rate_mbps"].columns:
                continue
            # (where="pre": a sample covers the interval before its instant)
            kw = dict(color=colors[i % len(colors)], ls=style, lw=1.2, where="pre",
                      label=f"{a}→{b}" if d == "ab" else f"{b}→{a}")
            ax["rate"].step(t, s["rate_mbps"][col].to_numpy(), **kw)
            if col in limited:
                ax["util"].step(t, 100 * s["utilisation"][col].to_numpy(), **kw)
            if col in queued:
                ax["queue"].step(t, s["queue_max_bytes"][col].to_numpy() / 1e3, **kw)
            dropped = s["drops"][col].to_numpy() > 0
            if dropped.any():
                where, y = ("queue", s["queue_max_bytes"][col].to_numpy() / 1e3) if col in queued else \
                    ("rate", s["rate_mbps"][col].to_numpy())
                ax[where].plot(t[dropped], y[dropped], "x", color="#b42318", ms=5, label="samples with drops")
    ax["rate"].set_ylabel("Mbit/s (emulated)")
    if "util" in ax:
        ax["util"].set_ylabel("% of the link's rate")
    if "queue" in ax:
        ax["queue"].set_ylabel("queue, peak (kB)")
    for a_ in ax.values():
        _mark_handovers(a_, run)
    axes[-1, 0].set_xlabel("scenario time t (s)")
    _legend_below(fig, *_merged_handles(fig), ncol=4)
    return fig


def fig_replay(run):
    """One-way delay of every replayed packet over time (black: light-time), and its CDF beside."""
    run = _as_run(run)
    pk = run.get("packets.parquet")
    if pk is None or not len(pk):
        return None
    plt = _plt()
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]},
                                 constrained_layout=True)
    for (s, d), g in pk.groupby(["src", "dst"]):
        ax.scatter(g["t_send_s"], g["owd_ms"], s=3, label=f"{s} → {d} one-way delay")
        ax.plot(g["t_send_s"], g["oracle_owd_ms"], lw=1, color="#1d232b")
        _cdf(cx, g["owd_ms"], lw=1.2)
    _cdf(cx, pk["oracle_owd_ms"], color="#1d232b", lw=1, label="light-time of the path")
    ax.plot([], [], color="#1d232b", lw=1, label="light-time of the path")
    ax.set_xlabel("send time, scenario t (s)")
    ax.set_ylabel("ms")
    cx.set_xlabel("one-way delay (ms)")
    cx.set_ylabel("fraction of packets")
    cx.set_title("CDF", fontsize=10)
    cx.grid(alpha=0.3)
    h, lab = ax.get_legend_handles_labels()
    _legend_below(fig, h, lab)
    return fig


# --------------------------------------------------------------------------- words and tables


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return html.escape(str(v))


def _table(rows: list[tuple], head: tuple | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def workload_rows(summary: dict) -> list[tuple]:
    """One row per workload: name, kind, jobs, done, errors+incomplete, then the kind's headline
    metrics (the numbers shown in the report's table, straight from summary.json)."""
    rows = []
    for name, s in (summary.get("workloads") or {}).items():
        if s["kind"] == "inference":
            m = (s.get("ttfb_ms_p50"), s.get("ttfb_ms_p99"), s.get("completion_ms_p50"), s.get("completion_ms_p99"))
        elif s["kind"] == "allreduce":
            m = (s.get("step_ms_p50"), s.get("ideal_ms_median"), s.get("ratio_to_ideal_median"), s.get("ratio_to_ideal_max"))
        else:
            m = (s.get("completion_ms_p50"), s.get("completion_ms_p99"), s.get("goodput_mbps_mean"), s.get("goodput_mbps_min"))
        rows.append((name, s["kind"], s["jobs"], s["done"],
                     s.get("error", 0) + s.get("incomplete", 0) + s.get("short", 0) + s.get("refused", 0), *m))
    return rows


def _sentences(run: _Run) -> list[str]:
    """What the numbers mean, in plain words."""
    out = []
    summ = run.get("summary.json") or {}
    fid = run.get("fidelity.json") or {}
    o = fid.get("overall", {})
    if o.get("compared"):
        out.append(f"Emulated round-trip times were {o.get('error_median_ms', 0):+.3f} ms from the light-time of the "
                   f"planned paths at the median and within {o.get('abs_error_p99_ms', 0):.3f} ms at p99 over "
                   f"{o['compared']:,} probes: the verdict is <b>{html.escape(fid.get('verdict', '?'))}</b>"
                   f" (threshold {fid.get('threshold_p99_ms', 0.5)} ms).")
        why = fid.get("why") or "; ".join((fid.get("reasons") or [])[:2])
        if why and fid.get("verdict") != "faithful":
            out.append("Why: " + html.escape(why) + ".")
        said = []
        if o.get("lost_while_reachable"):
            said.append(f"{o['lost_while_reachable']:,} probe(s) were lost while the planned path was up")
        if o.get("unreachable"):
            said.append(f"{o['unreachable']:,} were sent while the plan had no path (unreachable, not counted as "
                        "lost)")
        if said:
            out.append("; ".join(said) + ".")
    ev = run.events()
    hands = ev[ev["event"] == "handover"]
    for name, s in (summ.get("workloads") or {}).items():
        if s["kind"] == "inference" and s.get("windows"):
            w = pd.DataFrame(s["windows"])
            width = float(w["t_s"].diff().median()) if len(w) > 1 else 0.0
            if "completion_ms_p99" not in w or w["completion_ms_p99"].isna().all():
                continue
            base = float(w["completion_ms_p99"].median())
            for t in hands["t_s"]:
                hit = w[(w["t_s"] <= t) & (w["t_s"] + width > t)]
                if len(hit) and pd.notna(hit["completion_ms_p99"].iloc[0]):
                    out.append(_change(f"p99 completion of <b>{html.escape(name)}</b> requests", base,
                                       float(hit["completion_ms_p99"].iloc[0]), "ms", "(median over windows)")
                               + f" in the window holding the GSL handover at t = {t:g} s.")
            out.append(f"<b>{html.escape(name)}</b>: {s['done']} of {s['jobs']} requests completed; time to "
                       f"first byte {s.get('ttfb_ms_p50', float('nan')):,.0f} ms median, completion "
                       f"{s.get('completion_ms_p50', float('nan')):,.0f} ms median and "
                       f"{s.get('completion_ms_p99', float('nan')):,.0f} ms at p99.")
        elif s["kind"] == "allreduce" and s.get("ratio_to_ideal_median"):
            out.append(f"<b>{html.escape(name)}</b>: all-reduce steps took {s['ratio_to_ideal_median']:.2f}× the "
                       f"ideal time at the median ({s.get('step_ms_p50', 0):,.0f} ms against "
                       f"{s.get('ideal_ms_median', 0):,.0f} ms).")
        elif s["kind"] in ("upload", "checkpoint") and s.get("goodput_mbps_mean"):
            out.append(f"<b>{html.escape(name)}</b>: {s['done']} of {s['jobs']} transfers completed at "
                       f"{s['goodput_mbps_mean']:,.1f} Mbit/s mean goodput ({s.get('completion_ms_p50', 0):,.0f} ms "
                       "median each).")
        if s.get("error"):
            out.append(f"{s['error']} {html.escape(name)} job(s) failed (e.g. a connection refused while a ground "
                       "station had no link).")
    rp = summ.get("replay")
    if rp and rp.get("open_loop"):
        out.append(_replay_sentence(rp["open_loop"]))
    if len(hands):
        out.append(f"{len(hands)} GSL handover(s) in the window, at t = "
                   + ", ".join(f"{t:g}" for t in hands["t_s"].head(8)) + " s.")
    warns = (run.get("run.json") or {}).get("warnings") or []
    for w in warns:
        out.append(f"Warning: {html.escape(str(w))}")
    return out


def _change(what: str, before: float, after: float, unit: str, before_note: str = "") -> str:
    """"WHAT rose from A to B" / "fell from A to B", or "was unchanged at A" when the two agree
    as shown (rounded to whole units)."""
    a, b = f"{before:,.0f}", f"{after:,.0f}"
    note = f" {before_note}" if before_note else ""
    if a == b:
        return f"{what} was unchanged at {a} {unit}{note}"
    return f"{what} {'rose' if after > before else 'fell'} from {a} {unit}{note} to {b} {unit}"


def _replay_sentence(ol: dict) -> str:
    """What became of the open-loop packets: delivered, lost in the network (and how many of those
    while the plan had no path), not sent (no route at the send time, e.g. during a handover gap),
    never attempted (the sender stopped first), reordered."""
    parts = [f"{ol.get('lost', 0):,} lost in the network"
             + (f", of which {ol['lost_no_path']:,} while the plan had no path" if ol.get("lost_no_path") else "")]
    if ol.get("send_failed"):
        parts.append(f"{ol['send_failed']:,} could not be sent, as no route existed at the send time")
    if ol.get("not_attempted"):
        parts.append(f"{ol['not_attempted']:,} never sent, as the sender stopped first")
    parts.append(f"{ol.get('reordered', 0):,} reordered")
    owd = ""
    if ol.get("owd_minus_oracle_ms_p50") is not None:
        owd = (f"; one-way delay − light-time {ol['owd_minus_oracle_ms_p50']} ms median, "
               f"{ol.get('owd_minus_oracle_ms_p99_abs')} ms at p99")
    return (f"The replayed trace delivered {ol['received']:,} of {ol['packets']:,} packets open-loop ("
            + "; ".join(parts) + f"){owd}.")


def build_report(run_dir: str | Path, progress=None) -> Path:
    """Write RUN_DIR/report.html and RUN_DIR/figures/*.png; returns the report's path."""
    say = progress or (lambda m: None)
    run = _Run(run_dir)
    if run.get("run.json") is None and run.get("summary.json") is None:
        raise NetemuError(f"{run.path}: not a run directory (no run.json or summary.json)")
    figs = run.path / FIG_DIR
    info = run.get("run.json") or {}
    summ = run.get("summary.json") or {}
    fid = run.get("fidelity.json") or {}
    t0, t1 = run.window()
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>netemu run: "
             f"{html.escape(str(info.get('scenario', summ.get('scenario', run.name))))}</title><style>{_CSS}</style></head><body>",
             f"<h1>netemu run of {html.escape(str(info.get('scenario', summ.get('scenario', '?'))))}</h1>",
             f"<p class='meta'>{html.escape(str(run.path.name))} · window t = {t0:g}–{t1:g} s</p>"]
    words = _sentences(run)
    if words:
        parts.append("<div class='say'>" + "".join(f"<p>{w}</p>" for w in words) + "</div>")
    versions = info.get("versions", {})
    verdict = fid.get("verdict", "–")
    cls = "verdict-ok" if verdict == "faithful" else "verdict-bad"
    parts.append("<h2>What was run</h2>")
    parts.append(_table([
        ("scenario", info.get("scenario", summ.get("scenario"))),
        ("time window (scenario s)", f"{t0:g} – {t1:g}"),
        ("nodes / links emulated", f"{info.get('nodes', '–')} / {info.get('links', '–')}"),
        ("satellites / compute / ground stations (scenario)", " / ".join(
            str((summ.get("nodes") or {}).get(k, "–")) for k in ("satellite", "compute", "ground"))),
        ("dilation / speed", f"{info.get('dilation', 1)} / {info.get('speed', 1)}"),
        ("up / down (s)", f"{info.get('up_s', '–')} / {info.get('down_s', '–')}"),
        ("netemu / python / kernel", f"{versions.get('netemu', '–')} / {versions.get('python', '–')} / {versions.get('kernel', '–')}"),
    ]))
    parts.append(f"<p>Fidelity verdict: <span class='{cls}'>{html.escape(str(verdict))}</span></p>")
    if fid.get("reasons"):
        parts.append("<ul class='reasons'>" + "".join(f"<li>{html.escape(str(r))}</li>" for r in fid["reasons"])
                     + "</ul>")
    parts.append(_cluster_section(info))
    say("report: time view")
    parts.append(_timeview_section(run))
    sections = [("Constellation", fig_map, "map.png", "Nodes, live links and the planned paths of the probed and "
                 "workload pairs (thick lines) at the window's start (and later instants for long windows), zoomed to "
                 "the region of the drawn pairs; compute satellites' ground tracks; coastlines from the "
                 "global-land-mask package."),
                ("Round-trip times", fig_rtt, "rtt.png", "Measured RTT of each probed pair against the light-time of "
                 "the planned path, and both distributions beside; dashed lines: path changes; orange: GSL handovers "
                 "of the pair's stations."),
                ("Faults", fig_faults, "faults.png", "Each fault of the window (planned in the scenario, or injected "
                 "live): dark while routes still led into it (the detection delay: what was sent that way was lost), "
                 "light once routes moved around it, until it ended. Shaded on the plots below; dotted: reroutes. "
                 "Jobs before / during / after: ended before it, running during it, started after it."),
                ("Workloads: completion", fig_completion, "completion_cdf.png", "Distribution of completion times "
                 "(and time to first byte) of every finished job."),
                ("Workloads: jobs over time", fig_jobs_time, "jobs_over_time.png", "Each job's completion time at "
                 "its start time; crosses: jobs that failed or did not finish."),
                ("Compute: power and capacity", fig_power, "power.png", "The compute satellites' planned state of "
                 "charge, eclipses (grey, darker as more satellites are in Earth's shadow) and active accelerators; "
                 "the requests' time to first byte by the satellite that served them. Dotted: the run's window."),
                ("Workloads: throughput", fig_throughput, "throughput.png", "Goodput of the transfer workloads per "
                 "second of the window."),
                ("Trace replay", fig_replay, "replay_owd.png", "One-way delay of every replayed packet and its "
                 "distribution; black: light-time of the path."),
                ("Topology over time", fig_topology, "topology.png", "Links up, link events (acquisitions, losses, "
                 "handovers) and path lengths between endpoints."),
                ("Busiest links", fig_links, "links.png", "Mean rate per direction, drops and peak queue of the "
                 "links that carried most (totals over the run; their load over time below)."),
                ("Busiest links over time", fig_link_load, "link_load.png", "Utilisation of each direction's "
                 "configured rate (or its throughput, for links without one) and its queue (the largest backlog "
                 "in each sample) over time, for the links that carried most bytes; sampled from the link "
                 "engines every 100 ms of emulated time (link_load.parquet). Solid a→b, dashed b→a; red crosses: "
                 "samples with drops.")]
    tables = {"Workloads: completion": _workload_table(summ), "Round-trip times": _fidelity_table(fid),
              "Compute: power and capacity": _compute_table(summ), "Faults": _faults_table(run)}
    for title, fn, name, caption in sections:
        say(f"report: {title.lower()}")
        fig = fn(run)
        src = _save(fig, figs, name) if fig is not None else None
        extra = tables.get(title, "")
        if src is None and not extra:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if src:
            parts.append(f"<p>{html.escape(caption)}</p><img src='{src}' alt='{html.escape(title)}'>")
        parts.append(extra)
    bl = busiest_links(run)
    if bl is not None and len(bl) and bl["bytes_out"].sum() > 0:
        parts.append(_table([(f"{a}–{b}", k, r, m, u, d) for a, b, k, r, m, u, d in zip(
            bl["a"], bl["b"], bl["kind"], bl["rate_mbps"], bl["mbps"], bl["utilisation_pct"], bl["drops"])],
            ("link", "kind", "rate (Mbit/s)", "mean Mbit/s", "utilisation %", "drops")))
    parts.append(_captures_section(run))
    parts.append(_apps_section(run))
    parts.append("<p class='meta'>Times are scenario seconds; durations and rates are emulated (converted "
                 "back from the run's time dilation). Files: " + ", ".join(
                     f"<code>{html.escape(p.name)}</code>" for p in sorted(run.path.iterdir()) if p.is_file()) + "</p>")
    parts.append("</body></html>")
    out = run.path / REPORT_FILE
    out.write_text("\n".join(parts))
    return out


def _cluster_section(info: dict) -> str:
    """A cluster run's hosts (run.json's `cluster`): nodes, links, cut links and clock offsets per
    host, and what crossing hosts cost: late frames on cut links, apply skew between hosts."""
    c = info.get("cluster")
    if not c or not c.get("hosts"):
        return ""
    rows = [(h["host"], h.get("nodes"), h.get("links"), h.get("cut_links"),
             f"{h.get('clock_offset_ms', 0):+.3f} ± {h.get('clock_bound_ms', 0):.3f}") for h in c["hosts"]]
    skew = c.get("apply_skew_ms") or {}
    late = f"{c.get('cut_link_late_frames', 0):,} of {c.get('cut_link_frames', 0):,}"
    text = (f"<p>The run was spread over {len(rows)} hosts (Dask scheduler <code>{html.escape(str(c.get('scheduler')))}"
            f"</code>), {c.get('cut_links', 0)} links cut between them. Frames on cut links that arrived after their "
            f"departure instant: {late}. Route steps applied across hosts within {_fmt(skew.get('p99'))} ms of each "
            f"other at p99 (max {_fmt(skew.get('max'))} ms).</p>")
    warn = "".join(f"<li>{html.escape(str(w))}</li>" for w in (c.get("lateness_warnings") or [])
                   + ([c["clock_warning"]] if c.get("clock_warning") else []))
    return ("<h2>Cluster</h2>" + text + _table(rows, ("host", "nodes", "links", "cut links", "clock offset (ms)"))
            + (f"<ul class='reasons'>{warn}</ul>" if warn else ""))


def _timeview_section(run: _Run) -> str:
    """The interactive time view (netemu/timeview.py), or one line saying why there is none."""
    from .timeview import VIEW_DIR, write_timeview
    if run.get("links.parquet") is None:
        return ""
    head = ("<h2>Time view</h2><p>The constellation over the window: drag the slider or press play. Live ISLs and "
            "ground links are coloured by delay (or by the run's mean load); thick lines: the current path of each "
            "probed pair, its RTT in the legend; the timeline marks path changes, handovers and faults (click it "
            "to jump). Hover a node or a link's midpoint for its figures. Offline: the page loads "
            f"<code>{VIEW_DIR}/</code> (Plotly's bundle and the view's data) and nothing else.</p>")
    try:
        return head + write_timeview(run.path)
    except NetemuError as e:
        return f"<h2>Time view</h2><p class='meta'>No time view: {html.escape(str(e))}</p>"


def _captures_section(run: _Run) -> str:
    """Links to the run's pcap files (captures/captures.csv), or nothing."""
    cap = run.get("captures/captures.csv")
    if cap is None or not len(cap):
        return ""
    rows = "".join(f"<tr><td><a href='{html.escape(str(f))}'>{html.escape(str(f))}</a></td><td>{html.escape(str(n))}</td>"
                   f"<td>{html.escape(str(i))}</td><td>{html.escape(str(p))}</td><td>{_fmt(int(k))}</td></tr>"
                   for f, n, i, p, k in zip(cap["file"], cap["node"], cap["ifname"], cap["peer"], cap["frames"]))
    return ("<h2>Packet captures</h2><p>pcap files (Wireshark, tcpdump) of the captured interfaces: what the node "
            "sent there, stamped when it entered the link, and what it received, stamped when it left it; "
            "timestamps are emulated time (the scenario epoch plus scenario seconds).</p>"
            "<table><tr><th>file</th><th>node</th><th>interface</th><th>toward</th><th>frames</th></tr>"
            + rows + "</table>")


def _apps_section(run: _Run) -> str:
    """The scenario's own programs ([[apps]]): apps.csv with links to their outputs, or nothing."""
    apps = run.get("apps.csv")
    if apps is None or not len(apps):
        return ""
    rows = []
    for r in apps.itertuples(index=False):
        outs = " ".join(f"<a href='{html.escape(str(f))}'>{html.escape(Path(str(f)).suffix[1:])}</a>"
                        for f in (r.stdout, r.stderr) if isinstance(f, str) and f)
        rows.append(f"<tr><td>{html.escape(str(r.app))}</td><td>{html.escape(str(r.node))}</td>"
                    f"<td><code>{html.escape(str(r.command))}</code></td><td>{_fmt(r.start_s)}</td>"
                    f"<td>{_fmt(r.end_s)}</td><td>{html.escape(str(r.status))}</td><td>{_fmt(r.exit_code)}</td>"
                    f"<td>{outs}</td></tr>")
    return ("<h2>Your programs</h2><p>The scenario's [[apps]]: each command in its node, from its start to its "
            "stop (scenario seconds), with its exit status and output.</p><table><tr><th>app</th><th>node</th>"
            "<th>command</th><th>start s</th><th>end s</th><th>status</th><th>exit code</th><th>output</th></tr>"
            + "".join(rows) + "</table>")


def _workload_table(summ: dict) -> str:
    rows = workload_rows(summ)
    if not rows:
        return ""
    out = []
    for kind, head in (("inference", ("TTFB p50 ms", "TTFB p99 ms", "completion p50 ms", "completion p99 ms")),
                       ("upload", ("completion p50 ms", "completion p99 ms", "goodput mean Mbit/s", "goodput min Mbit/s")),
                       ("checkpoint", ("completion p50 ms", "completion p99 ms", "goodput mean Mbit/s", "goodput min Mbit/s")),
                       ("allreduce", ("step p50 ms", "ideal ms", "ratio to ideal (median)", "ratio to ideal (max)"))):
        r = [x for x in rows if x[1] == kind]
        if r:
            out.append(_table(r, ("workload", "kind", "jobs", "done", "failed/unfinished", *head)))
    return "\n".join(out)


def _fidelity_table(fid: dict) -> str:
    pairs = fid.get("pairs") or {}
    if not pairs:
        return ""
    rows = [(k, v.get("compared"), v.get("error_median_ms"), v.get("abs_error_p99_ms"), v.get("lost_while_reachable"),
             v.get("unreachable"), v.get("straddling_path_change")) for k, v in pairs.items()]
    out = _table(rows, ("pair", "probes compared", "RTT − oracle median ms", "|RTT − oracle| p99 ms",
                        "lost while reachable", "unreachable (no planned path)", "straddling path changes"))
    return out + _windows_table(fid)


def _windows_table(fid: dict) -> str:
    """Fidelity per window of emulated time (fidelity.json's `windows`)."""
    wins = fid.get("windows") or []
    if not wins:
        return ""
    drift = any("pilot_drift_us_max_abs" in w for w in wins)
    rows = [(f"{w['t_start_s']:g}–{w['t_end_s']:g}", w.get("n"), w.get("p50_ms"), w.get("p99_ms"),
             w.get("lost_while_reachable"), *((w.get("pilot_drift_us_max_abs"),) if drift else ()), w.get("verdict"))
            for w in wins]
    return (f"<p>Per window of {fid.get('window_s', 0):g} s (a window needs enough probes for its own verdict; "
            "any window that is not faithful makes the run not faithful):</p>"
            + _table(rows, ("window t (s)", "probes compared", "RTT − oracle median ms", "|RTT − oracle| p99 ms",
                            "lost while reachable", *(("pilot drift max µs",) if drift else ()), "verdict")))


# --------------------------------------------------------------------------- compare


def probed_pairs(run: _Run) -> list[tuple[str, str]]:
    """The (src, dst) pairs a run probed, in the order its probes first name them."""
    pr = run.get("probes.parquet")
    if pr is None or not len(pr):
        return []
    return [(str(s), str(d)) for s, d in pr[["src", "dst"]].drop_duplicates().itertuples(index=False)]


def compare_pairs(runs: list[_Run], pair: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The probed pairs every run has (in the first run's order), or just `pair` (an error
    naming the runs that did not probe it)."""
    probed = [probed_pairs(r) for r in runs]
    if pair is not None:
        for r, p in zip(runs, probed):
            if tuple(pair) not in p:
                there = ", ".join(f"{s}:{d}" for s, d in p[:6]) + (", …" if len(p) > 6 else "")
                raise NetemuError(f"compare --pair {pair[0]}:{pair[1]}: run {r.path} did not probe this pair "
                                  f"(it probed: {there or 'nothing'})")
        return [tuple(pair)]
    common = set(probed[0]).intersection(*map(set, probed[1:])) if probed else set()
    return [p for p in probed[0] if p in common]


def compare_table(runs: list[_Run], names: list[str], pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per metric (`metric`), one column per run (named by `names`): the runs' headline
    figures, and per compared pair its probes' figures (the same pair in every run)."""
    values: dict[str, list] = {}

    def put(metric: str, i: int, v) -> None:
        values.setdefault(metric, [None] * len(runs))[i] = v

    for i, r in enumerate(runs):
        info, summ, fid = r.get("run.json") or {}, r.get("summary.json") or {}, r.get("fidelity.json") or {}
        o = fid.get("overall", {})
        put("scenario", i, info.get("scenario", summ.get("scenario")))
        t0, t1 = r.window()
        put("window (s)", i, f"{t0:g}–{t1:g}")
        put("dilation", i, info.get("dilation"))
        put("fidelity verdict", i, fid.get("verdict"))
        put("RTT − oracle median (ms)", i, o.get("error_median_ms"))
        put("|RTT − oracle| p99 (ms)", i, o.get("abs_error_p99_ms"))
        ev = r.events()
        put("handovers", i, int((ev["event"] == "handover").sum()))
        put("path changes", i, int((ev["event"] == "path_change").sum()))
        pr = r.get("probes.parquet")
        for s, d in pairs:
            g = pr[(pr["src"] == s) & (pr["dst"] == d)]
            f = (fid.get("pairs") or {}).get(f"{s}>{d}", {})
            put(f"{s} → {d}: probes", i, int(len(g)))
            put(f"{s} → {d}: RTT median (ms)", i,
                float(g["rtt_ms"].median()) if g["rtt_ms"].notna().any() else None)
            put(f"{s} → {d}: RTT − oracle median (ms)", i, f.get("error_median_ms"))
            put(f"{s} → {d}: |RTT − oracle| p99 (ms)", i, f.get("abs_error_p99_ms"))
            status = probe_status(g)
            put(f"{s} → {d}: probes lost (planned path up)", i, int((status == "lost").sum()))
            put(f"{s} → {d}: probes unreachable (no planned path)", i, int((status == "unreachable").sum()))
        pw = power_window(r)
        if pw is not None and len(pw):            # the compute model over the window
            put("compute: state of charge min (%)", i, round(float(pw["soc_pct"].min()), 2))
            put("compute: share of satellite-steps in eclipse", i, round(float((pw["sunlit"] < 0.5).mean()), 4))
            per_step = pw.groupby("t_s")["active_accelerators"].sum()
            put("compute: active accelerators min / max (cluster)", i, f"{int(per_step.min())} / {int(per_step.max())}")
        fs = faults_summary(run_faults(r))
        put("faults (planned / live)", i, f"{fs['planned']} / {fs['live']}")
        put("faults: probes lost", i, fs["probes_lost"])
        put("faults: time to repair median (s)", i, fs["time_to_repair_median_s"])
        put("faults: jobs failed during", i, fs["jobs_failed_during"])
        put("faults: all-reduce steps stalled", i, fs["allreduce_stalled"])
        put("faults: goodput lost (Mbit)", i, fs["goodput_lost_mbit"])
        for row in workload_rows(summ):
            name, kind = row[0], row[1]
            put(f"{name}: jobs done", i, f"{row[3]}/{row[2]}")
            if kind == "inference":
                put(f"{name}: completion p50 (ms)", i, row[7])
                put(f"{name}: completion p99 (ms)", i, row[8])
                s = summ["workloads"][name]
                if "queue_ms_p50" in s:            # queueing servers: policy, queue, eclipse
                    put(f"{name}: dispatch", i, s.get("dispatch"))
                    put(f"{name}: TTFB p99 (ms)", i, s.get("ttfb_ms_p99"))
                    put(f"{name}: TTFB p99 sunlit (ms)", i, s.get("ttfb_ms_sunlit_p99"))
                    put(f"{name}: TTFB p99 in eclipse (ms)", i, s.get("ttfb_ms_eclipse_p99"))
                    put(f"{name}: queue p99 (ms)", i, s.get("queue_ms_p99"))
                    put(f"{name}: refused", i, s.get("refused", 0))
                    put(f"{name}: requests per satellite", i,
                        ", ".join(f"{k}: {v}" for k, v in (s.get("served_by") or {}).items()))
            elif kind == "allreduce":
                put(f"{name}: step / ideal (median)", i, row[7])
            else:
                put(f"{name}: goodput mean (Mbit/s)", i, row[7])
    return pd.DataFrame([(m, *v) for m, v in values.items()], columns=["metric", *names])


def build_compare(run_dirs: list[str | Path], out_dir: str | Path, pair: tuple[str, str] | None = None,
                  warn=None) -> Path:
    """Put runs side by side: OUT/compare.html with a metrics table (also `compare.csv` and
    `compare.json`) and the RTTs of the same probed pairs overlaid (every pair all runs probed,
    or only `pair`), plus completion times. `warn(message)` hears when the runs have no probed
    pair in common (the page says so too)."""
    runs = [_Run(p) for p in run_dirs]
    if len(runs) < 2:
        raise NetemuError("compare: expected at least two run directories")
    say = warn or (lambda m: None)
    out = Path(out_dir)
    figs = out / FIG_DIR
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    pairs = compare_pairs(runs, pair)
    notes = []
    if not pairs:
        probed = [probed_pairs(r) for r in runs]
        if not all(probed):
            msg = "no RTT comparison: " + ", ".join(n for n, p in zip(names, probed) if not p) + " probed no pair"
        else:
            msg = ("no RTT comparison: the runs have no probed pair in common ("
                   + "; ".join(f"{n}: {', '.join(f'{s}:{d}' for s, d in p[:4])}{', …' if len(p) > 4 else ''}"
                               for n, p in zip(names, probed)) + ")")
        notes.append(msg)
        say(msg)
    table = compare_table(runs, names, pairs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    (out / "compare.json").write_text(json.dumps(
        {"runs": dict(zip(names, (str(r.path) for r in runs))), "pairs": [f"{s}>{d}" for s, d in pairs],
         "notes": notes, "metrics": [{"metric": m, "values": dict(zip(names, vals))}
                                     for m, *vals in table.itertuples(index=False)]},
        indent=2, default=_json_value) + "\n")
    shown = pairs[:MAX_PAIRS]
    if len(pairs) > len(shown):
        notes.append(f"RTT plotted for the first {len(shown)} of {len(pairs)} common pairs (all are in the table)")
    panels = [("rtt", p) for p in shown]
    jobs_of = [r.get("jobs.csv") for r in runs]
    if any(j is not None and (j["status"] == "done").any() for j in jobs_of):
        panels.append(("completion", None))
    img = ""
    if panels:
        plt = _plt()
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.0 * len(panels)), squeeze=False)
        for ax, (kind, p) in zip(axes[:, 0], panels):
            if kind == "rtt":
                for r, n in zip(runs, names):
                    pr = r.get("probes.parquet")
                    g = pr[(pr["src"] == p[0]) & (pr["dst"] == p[1])]
                    ax.plot(g["t_s"], g["rtt_ms"], lw=0.8, label=n)
                ax.set_title(f"{p[0]} → {p[1]}", fontsize=10)
                ax.set_xlabel("scenario time t (s)")
                ax.set_ylabel("RTT (ms)")
            else:
                for jobs, n in zip(jobs_of, names):
                    if jobs is None:
                        continue
                    for wl, g in jobs[jobs["status"] == "done"].groupby("workload"):
                        v = np.sort(g["completion_ms"].to_numpy(float))
                        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{n}: {wl}")
                ax.set_xscale("log")
                ax.set_xlabel("completion (ms, emulated)")
                ax.set_ylabel("fraction of jobs")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        src = _save(fig, figs, "compare.png")
        img = f"<h2>Round-trip times of the same pairs, completion times</h2><img src='{src}' alt='compared runs'>"
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>netemu: compare</title><style>{_CSS}"
           f"</style></head><body><h1>netemu runs compared</h1>"
           + "".join(f"<p class='say'>{html.escape(n)}</p>" for n in notes)
           + (f"<p>Probed pairs compared (the same in every run): "
              f"{html.escape(', '.join(f'{s} → {d}' for s, d in pairs))}.</p>" if pairs else "")
           + _table(list(table.itertuples(index=False, name=None)), ("metric", *names))
           + img + "<p class='meta'>The table is also in <code>compare.csv</code> and <code>compare.json</code>.</p>"
           + "</body></html>")
    path = out / "compare.html"
    path.write_text(doc)
    return path


def _json_value(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    return str(o)


# --------------------------------------------------------------------------- faults

# What faults did to a run's traffic (pure analysis of a run directory's tables; the report's
# and `netemu compare`'s faults figures).
#
# A run's faults are the scenario's planned ones in its window (`events.csv`: `fault_start`,
# `reroute`, `fault_end`; the reroute as played where `injections.csv` has its `planned_reroute`
# row) and the live injections (`injections.csv`, emulate.inject). Per fault:
# - `t_start_s`, `t_repair_s` (routes moved around it: the reroute; NaN when no path changed),
#   `t_end_s` (the fault ended; the window's end when it did not);
# - `time_to_repair_s` = t_repair − t_start (the detection delay as played);
# - `probes_lost`: probes without an answer sent from one RTT before the fault (those on the wire
#   when it struck) until it was repaired (until its end when it never was);
# - jobs before (ended by the fault's start), during (running at some instant of the fault) and
#   after (started after its end): counts, median completion, failures during; all-reduce steps
#   stalled (during, and slower than twice the median before, or not done);
# - `goodput_lost_mbit`: for transfer workloads, the goodput below each workload's median before
#   the fault, summed over the fault's seconds (emulated Mbit).

TIMELINE_COLUMNS = ["fault", "source", "kind", "target", "t_start_s", "t_repair_s", "t_end_s"]


def fault_timeline(events: pd.DataFrame | None, injections: pd.DataFrame | None, t0_s: float,
                   t_end_s: float) -> pd.DataFrame:
    """Faults overlapping the window [t0_s, t_end_s]: planned (events) and live (injections)."""
    rows = []
    ev = events if events is not None else pd.DataFrame(columns=["t_s", "event", "a", "b", "detail"])
    ev = ev.fillna({"a": "", "b": "", "detail": ""})
    played = None
    if injections is not None and len(injections) and "kind" in injections:
        played = injections[injections["kind"] == "planned_reroute"]
    starts = ev[ev["event"] == "fault_start"]
    for i, f in enumerate(starts.itertuples(index=False)):
        same = ev[(ev["a"] == f.a) & (ev["b"] == f.b) & (ev["t_s"] >= f.t_s)]
        rr = same[same["event"] == "reroute"]["t_s"]
        end = same[same["event"] == "fault_end"]["t_s"]
        t_end = float(end.iloc[0]) if len(end) else t_end_s
        if t_end < t0_s or f.t_s > t_end_s:
            continue
        target = f"{f.a}|{f.b}" if f.b else str(f.a)
        rep = _repair(rr, float(f.t_s), t_end)
        if played is not None:   # the emulation rerouted it at its detection instant
            mine = played[(played["t_s"] >= f.t_s - 1e-6) & (played["t_s"] <= t_end)
                          & played["target"].map(lambda s, n=str(f.a): n in str(s).split(", ")).astype(bool)
                          & played["rerouted_at_s"].notna()]
            if len(mine):
                rep = float(mine["rerouted_at_s"].iloc[0])
        rows.append((f"planned {i + 1}", "planned", str(f.detail), target, float(f.t_s), rep, min(t_end, t_end_s)))
    inj = injections if injections is not None else pd.DataFrame(columns=["kind"])
    if len(inj):
        inj = inj.fillna({"target": ""})
        restores = inj[inj["kind"] == "restore"]
        for f in inj[inj["kind"].isin(["fail_node", "fail_link"])].itertuples(index=False):
            later = restores[(restores["t_s"] >= f.t_s)
                             & restores["target"].map(lambda s, t=f.target: t in str(s).split(", ")).astype(bool)]
            t_end = float(later["t_s"].iloc[0]) if len(later) else t_end_s
            rep = float(f.rerouted_at_s) if pd.notna(f.rerouted_at_s) and f.routes > 0 else np.nan
            rows.append((f"live {int(f.id)}", "live", str(f.kind).replace("fail_", ""), str(f.target),
                         float(f.t_s), rep, t_end))
    out = pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
    return out.sort_values("t_start_s", ignore_index=True)


def _repair(t: pd.Series, start: float, end: float) -> float:
    t = t[(t >= start) & (t <= end)]
    return float(t.iloc[0]) if len(t) else np.nan


def fault_effects(timeline: pd.DataFrame, probes: pd.DataFrame | None = None, jobs: pd.DataFrame | None = None,
                  throughput: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per fault of `timeline` (fault_timeline) with what it did (module docstring)."""
    rows = []
    pr = probes if probes is not None else pd.DataFrame(columns=["t_s", "rtt_ms"])
    rtt_s = float(pr["rtt_ms"].max()) / 1e3 if pr["rtt_ms"].notna().any() else 0.0
    for f in timeline.itertuples(index=False):
        upto = f.t_repair_s if np.isfinite(f.t_repair_s) else f.t_end_s
        in_fault = (pr["t_s"] >= f.t_start_s - rtt_s) & (pr["t_s"] <= upto)
        r = {"fault": f.fault, "source": f.source, "kind": f.kind, "target": f.target, "t_start_s": f.t_start_s,
             "t_repair_s": f.t_repair_s, "t_end_s": f.t_end_s, "time_to_repair_s": f.t_repair_s - f.t_start_s,
             "probes_lost": int((in_fault & pr["rtt_ms"].isna()).sum())}
        r.update(_jobs(jobs, f.t_start_s, f.t_end_s))
        r["goodput_lost_mbit"] = _goodput_lost(throughput, f.t_start_s, f.t_end_s)
        rows.append(r)
    cols = ["fault", "source", "kind", "target", "t_start_s", "t_repair_s", "t_end_s", "time_to_repair_s",
            "probes_lost", "jobs_before", "jobs_during", "jobs_after", "completion_before_ms",
            "completion_during_ms", "completion_after_ms", "jobs_failed_during", "allreduce_stalled",
            "goodput_lost_mbit"]
    return pd.DataFrame(rows, columns=cols)


def _jobs(jobs: pd.DataFrame | None, start: float, end: float) -> dict:
    if jobs is None or not len(jobs):
        return {"jobs_before": 0, "jobs_during": 0, "jobs_after": 0, "completion_before_ms": np.nan,
                "completion_during_ms": np.nan, "completion_after_ms": np.nan, "jobs_failed_during": 0,
                "allreduce_stalled": 0}
    t_end = jobs["t_end_s"].fillna(np.inf)
    before = jobs[t_end <= start]
    during = jobs[(jobs["t_start_s"] <= end) & (t_end >= start)]
    after = jobs[jobs["t_start_s"] > end]

    def med(g):
        d = g[g["status"] == "done"]["completion_ms"]
        return float(d.median()) if len(d) else np.nan

    ar_before = before[(before["kind"] == "allreduce") & (before["status"] == "done")]["completion_ms"]
    ar = during[during["kind"] == "allreduce"]
    slow = 2 * float(ar_before.median()) if len(ar_before) else np.inf
    stalled = int(((ar["status"] != "done") | (ar["completion_ms"] > slow)).sum())
    return {"jobs_before": int(len(before)), "jobs_during": int(len(during)), "jobs_after": int(len(after)),
            "completion_before_ms": med(before), "completion_during_ms": med(during),
            "completion_after_ms": med(after), "jobs_failed_during": int((during["status"] != "done").sum()),
            "allreduce_stalled": stalled}


def _goodput_lost(th: pd.DataFrame | None, start: float, end: float) -> float:
    if th is None or not len(th):
        return 0.0
    lost = 0.0
    for _, g in th.groupby("workload"):
        g = g.sort_values("t_s")
        t = g["t_s"].to_numpy(float)
        bin_s = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        base = g[t + bin_s <= start]["mbps"]
        if not len(base):
            continue
        ref = float(base.median())
        # the share of each bin inside the fault
        inside = np.clip(np.minimum(t + bin_s, end) - np.maximum(t, start), 0, None)
        lost += float((np.clip(ref - g["mbps"].to_numpy(float), 0, None) * inside).sum())
    return round(lost, 3)


def faults_summary(effects: pd.DataFrame) -> dict:
    """The compare's figures of a run's faults (zeros without faults)."""
    e = effects
    rep = e["time_to_repair_s"].dropna()
    return {"faults": int(len(e)), "planned": int((e["source"] == "planned").sum()),
            "live": int((e["source"] == "live").sum()), "probes_lost": int(e["probes_lost"].sum()),
            "time_to_repair_median_s": round(float(rep.median()), 4) if len(rep) else None,
            "jobs_failed_during": int(e["jobs_failed_during"].sum()),
            "allreduce_stalled": int(e["allreduce_stalled"].sum()),
            "goodput_lost_mbit": round(float(e["goodput_lost_mbit"].sum()), 3)}
