"""The report's interactive time view: a map of the constellation with a time slider and a play
button (satellites, ground stations, the live ISLs and ground links of each shown step coloured by
delay, by the run's mean load or by the load at each step (from `link_load.parquet`), the current
path of each probed pair with its RTT, the plan's events on a timeline; hovering a node or a
link shows its name and figures).

`timeview_data(directory)` builds the view's data (a JSON-able dict) from a run or plan directory:
the plan's tables (`links.parquet`, `routes.parquet`, `paths.parquet`, `events.csv`, `nodes.csv`),
the run's `probes.parquet` and `link_counters.csv` when present, and the nodes' positions at the
shown steps (`view_positions.parquet`, written by `netemu run`, or by `netemu report` from the
scenario copy: netemu/plan/views.py). Those steps are the decimation: for big plans every k-th
step of the window (an S1 window of 200 s at 0.1-s steps shows about one step in 30, keeping the
data within a few MB); the view says so.

`write_timeview(directory)` writes `report_files/` beside the report: Plotly's offline bundle
(`plotly.min.js`, from the plotly package), the data (`timeview-data.js`) and the page script
(`timeview.js`), and returns the HTML fragment the report embeds (relative `<script src>`; the
page needs no network). The page exposes `window.netemuView` (`setFrame(i)`, `state()`) so a
browser test can read what is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import NetemuError

__all__ = ["timeview_data", "write_timeview", "coastline_xy", "VIEW_DIR", "VIEW_POSITIONS_FILE"]

VIEW_DIR = "report_files"
VIEW_POSITIONS_FILE = "view_positions.parquet"    # as netemu.plan.views writes it
MAX_PAIRS = 6
MAX_EVENTS = 400
_R_EARTH_KM = 6371.0


_COAST: tuple | None = None


def coastline_xy(res_deg: float = 0.5) -> tuple[list, list]:
    """Coastlines as one polyline (lon, lat lists, None between pieces), rounded to 0.1°: the 0.5
    contour of the global-land-mask package's land mask on a `res_deg` grid."""
    global _COAST
    if _COAST is None:
        import contourpy
        from global_land_mask import globe   # lazy: a large land mask, read once
        lat = np.arange(-90 + res_deg / 2, 90, res_deg)
        lon = np.arange(-180 + res_deg / 2, 180, res_deg)
        LO, LA = np.meshgrid(lon, lat)
        land = globe.is_land(LA, LO).astype(float)
        xs, ys = [], []
        for line in contourpy.contour_generator(lon, lat, land).lines(0.5):
            if len(line) < 4:
                continue
            xs += [round(float(v), 1) for v in line[:, 0]] + [None]
            ys += [round(float(v), 1) for v in line[:, 1]] + [None]
        _COAST = (xs, ys)
    return _COAST


def _read(d: Path, name: str):
    p = d / name
    if not p.exists():
        return None
    if name.endswith(".parquet"):
        return pd.read_parquet(p)
    if name.endswith(".csv"):
        return pd.read_csv(p)
    return json.loads(p.read_text())


def _window(d: Path, summary: dict) -> tuple[float, float]:
    w = (_read(d, "run.json") or {}).get("window")
    if w:
        return float(w["t0_s"]), float(w["t_end_s"])
    return 0.0, float(summary.get("duration_s", 0.0))


def _pairs(probes: pd.DataFrame | None, routes: pd.DataFrame | None) -> list[tuple[str, str]]:
    """The probed pairs (first MAX_PAIRS, in the probes' order), else the plan's endpoint pairs."""
    if probes is not None and len(probes):
        p = probes[["src", "dst"]].astype(str).drop_duplicates()
        return list(p.itertuples(index=False, name=None))[:MAX_PAIRS]
    if routes is not None and len(routes):
        seen: dict = {}
        for s, t in zip(routes["src"].astype(str), routes["dst"].astype(str)):
            if (t, s) not in seen:
                seen.setdefault((s, t), None)
        return list(seen)[:MAX_PAIRS]
    return []


def _route_at(routes: pd.DataFrame, src: str, dst: str, steps: np.ndarray) -> list[list[str] | None]:
    """The planned path src → dst at each of `steps` (routes hold the path from the step it changes;
    a reverse-direction row is reversed); None where the plan has no path."""
    r = routes[(routes["src"].astype(str) == src) & (routes["dst"].astype(str) == dst)]
    flip = False
    if not len(r):
        r, flip = routes[(routes["src"].astype(str) == dst) & (routes["dst"].astype(str) == src)], True
    if not len(r):
        return [None] * len(steps)
    r = r.sort_values("step", kind="stable")
    at = np.searchsorted(r["step"].to_numpy(), steps, side="right") - 1
    paths = r["path"].tolist()
    out = []
    for i in at:
        p = paths[i] if i >= 0 else None
        if p is None or (isinstance(p, float) and np.isnan(p)) or p is pd.NA or not str(p):
            out.append(None)
        else:
            nodes = str(p).split(">")
            out.append(nodes[::-1] if flip else nodes)
    return out


def _mean_alt(alt_km: np.ndarray) -> np.ndarray:
    """Each node's mean altitude over the frames (NaN where SGP4 never placed it)."""
    n = np.isfinite(alt_km).sum(axis=0)
    return np.where(n > 0, np.nansum(alt_km, axis=0) / np.maximum(n, 1), np.nan)


def timeview_data(directory: str | Path) -> dict:
    """The time view's data for a run or plan directory (see the module's docstring). Lists, not
    arrays: `json.dumps` takes it as is. Positions are hundredths of a degree (integers), delays
    hundredths of a millisecond."""
    d = Path(directory)
    summary = _read(d, "summary.json") or {}
    links = _read(d, "links.parquet")
    if links is None or not len(links):
        raise NetemuError(f"{d}: no links.parquet; the time view needs the plan's link table")
    pos = _read(d, VIEW_POSITIONS_FILE)
    if pos is None or not len(pos):
        raise NetemuError(f"{d}: no {VIEW_POSITIONS_FILE} (netemu run writes it; `netemu report {d}` writes it "
                          "from the plan's scenario copy)")
    routes, paths, events = _read(d, "routes.parquet"), _read(d, "paths.parquet"), _read(d, "events.csv")
    probes, counters = _read(d, "probes.parquet"), _read(d, "link_counters.csv")
    t0, t1 = _window(d, summary)
    grid = links[["step", "t_s"]].drop_duplicates("step").sort_values("step")
    n_steps = int(((grid["t_s"] >= t0 - 1e-9) & (grid["t_s"] <= t1 + 1e-9)).sum()) or 1
    steps = np.sort(pos["step"].unique())
    every = int(np.diff(steps)[0]) if len(steps) > 1 else 1
    t_s = pos.drop_duplicates("step").set_index("step").loc[steps, "t_s"].to_numpy(float)
    step_s = float(summary.get("step_s") or (np.diff(grid["t_s"].to_numpy()[:2])[0] if len(grid) > 1 else 1.0))
    first = pos[pos["step"] == steps[0]]
    names = first["name"].astype(str).tolist()
    kinds = first["kind"].astype(str).tolist()
    n_sat = sum(k != "ground" for k in kinds)
    nodes = _read(d, "nodes.csv")
    group_of = dict(zip(nodes["name"].astype(str), nodes["group"].astype(str))) if nodes is not None and "group" in nodes else {}
    idx = {n: i for i, n in enumerate(names)}
    P = pos.assign(i=pos["name"].astype(str).map(idx), f=np.searchsorted(steps, pos["step"].to_numpy()))
    lat = np.full((len(steps), len(names)), np.nan)
    lon = np.full((len(steps), len(names)), np.nan)
    alt = np.full((len(steps), len(names)), np.nan)
    lat[P["f"], P["i"]] = P["lat_deg"]
    lon[P["f"], P["i"]] = P["lon_deg"]
    alt[P["f"], P["i"]] = P["alt_km"]

    # links up at the shown steps: one id per node pair ever up there
    L = links[links["step"].isin(steps) & links["up"]]
    a = L["a"].astype(str).map(idx).to_numpy()
    b = L["b"].astype(str).map(idx).to_numpy()
    ok = ~(pd.isna(a) | pd.isna(b))
    L, a, b = L[ok], a[ok].astype(np.int64), b[ok].astype(np.int64)
    key = a * len(names) + b
    uniq, lid = np.unique(key, return_inverse=True)
    la, lb = uniq // len(names), uniq % len(names)
    first = pd.Series(np.arange(len(L))).groupby(lid).first().to_numpy() if len(L) else np.zeros(0, np.int64)
    lkind = L["kind"].astype(str).to_numpy()[first] if len(L) else np.array([], dtype=str)
    rate = L.groupby(lid)["rate_mbps"].max().to_numpy() if len(L) else np.zeros(0)
    frame_of = {s: i for i, s in enumerate(steps)}
    fr = L["step"].map(frame_of).to_numpy()
    delay = np.round(L["delay_ms"].to_numpy(float) * 100).astype(np.int64)
    up_ids: list[list[int]] = [[] for _ in steps]
    up_delay: list[list[int]] = [[] for _ in steps]
    order = np.lexsort((lid, fr))
    for f, i, dl in zip(fr[order], lid[order], delay[order]):
        up_ids[f].append(int(i))
        up_delay[f].append(int(dl))

    load = None
    if counters is not None and len(counters) and "bytes_out" in counters:
        span = max(t1 - t0, 1e-9)
        g = counters.groupby([counters["a"].astype(str), counters["b"].astype(str)])["bytes_out"].sum()
        # both directions' bytes over the window, per direction (as the report's busiest links)
        load = [round(float(g.get((names[x], names[y]), g.get((names[y], names[x]), 0.0))) * 8 / span / 1e6 / 2, 3)
                for x, y in zip(la, lb)]

    up_load = _load_at_frames(_read(d, "link_load.parquet"), counters, names, la, lb, t_s, fr[order], lid[order],
                              every * step_s)

    pairs = []
    for src, dst in _pairs(probes, routes):
        route = _route_at(routes, src, dst, steps) if routes is not None else [None] * len(steps)
        pr = {"src": src, "dst": dst, "path": [[idx[n] for n in p if n in idx] if p else None for p in route]}
        if paths is not None and len(paths):
            P = paths[((paths["src"].astype(str) == src) & (paths["dst"].astype(str) == dst))
                      | ((paths["src"].astype(str) == dst) & (paths["dst"].astype(str) == src))]
            one = P.drop_duplicates("step").set_index("step")["delay_ms"]
            pr["planned_rtt_ms"] = [None if s not in one.index or not np.isfinite(one[s]) else round(2 * float(one[s]), 3)
                                    for s in steps]
        if probes is not None and len(probes):
            g = probes[(probes["src"].astype(str) == src) & (probes["dst"].astype(str) == dst)]
            edges = np.r_[t_s, np.inf]
            k = np.searchsorted(edges, g["t_s"].to_numpy(float), side="right") - 1
            med = g.groupby(k)["rtt_ms"].median()
            pr["rtt_ms"] = [None if f not in med.index or not np.isfinite(med[f]) else round(float(med[f]), 3)
                            for f in range(len(steps))]
            # measured RTT over the window too (the timeline draws every probe, thinned)
            th = g.iloc[:: max(1, len(g) // 2000)]
            pr["probe_t_s"] = [round(float(v), 3) for v in th["t_s"]]
            pr["probe_rtt_ms"] = [None if not np.isfinite(v) else round(float(v), 3) for v in th["rtt_ms"]]
        pairs.append(pr)

    ev_out = {"t_s": [], "event": [], "a": [], "b": [], "detail": []}
    if events is not None and len(events):
        E = events[(events["t_s"] >= t0) & (events["t_s"] <= t1)]
        shown = {frozenset(p) for p in _pairs(probes, routes)}
        ends = set().union(*shown) if shown else set()
        keep = (E["event"].isin(["fault_start", "fault_end", "reroute"])
                | ((E["event"] == "handover") & (E["a"].astype(str).isin(ends) | (len(ends) == 0)))
                | ((E["event"] == "path_change") & np.array([frozenset((str(x), str(y))) in shown for x, y in zip(E["a"], E["b"])], bool)))
        E = E[keep].head(MAX_EVENTS)
        ev_out = {"t_s": [round(float(v), 3) for v in E["t_s"]], "event": E["event"].astype(str).tolist(),
                  "a": E["a"].astype(str).tolist(), "b": E["b"].fillna("").astype(str).tolist(),
                  "detail": E["detail"].fillna("").astype(str).tolist()}

    note = (f"every step of the window shown ({len(steps)} steps of {step_s:g} s)" if every == 1 else
            f"decimated: one step in {every} shown ({len(steps)} of {n_steps} steps of {step_s:g} s, "
            f"one frame per {every * step_s:g} s) to keep the page small")
    coast_x, coast_y = coastline_xy()
    return {
        "version": 1,
        "title": str(summary.get("scenario") or (_read(d, "run.json") or {}).get("scenario") or d.name),
        "window_s": [t0, t1],
        "step_s": step_s,
        "decimation": {"every_steps": int(every), "steps": int(n_steps), "frames": int(len(steps)), "note": note},
        "t_s": [round(float(v), 6) for v in t_s],
        "steps": [int(s) for s in steps],
        "nodes": {"name": names, "kind": kinds, "group": [group_of.get(n, "") for n in names]},
        "n_sat": n_sat,
        "alt_km": [None if not np.isfinite(v) else round(float(v), 1 if i < n_sat else 3)
                   for i, v in enumerate(_mean_alt(alt))],
        "lat": [[None if not np.isfinite(v) else int(round(v * 100)) for v in row] for row in lat],
        "lon": [[None if not np.isfinite(v) else int(round(v * 100)) for v in row] for row in lon],
        "links": {"a": [int(v) for v in la], "b": [int(v) for v in lb], "kind": [str(k) for k in lkind],
                  "rate_mbps": [float(v) for v in rate], "load_mbps": load},
        "up": up_ids,
        "delay": up_delay,
        "load": up_load,
        "pairs": pairs,
        "events": ev_out,
        "coast": [coast_x, coast_y],
    }


def _load_at_frames(load: pd.DataFrame | None, counters: pd.DataFrame | None, names: list[str], la: np.ndarray,
                    lb: np.ndarray, t_s: np.ndarray, fr: np.ndarray, lid: np.ndarray, frame_s: float):
    """Each up link's load at each frame from the run's `link_load.parquet`: the bytes its busier
    direction delivered in the samples between the frame's instant and the next frame's, over
    that time, in hundredths of Mbit/s; lists parallel to `up` (frame `fr`, link id `lid`, in
    that order). None without the table (or the link ends, from `link_counters.csv`)."""
    if load is None or not len(load) or counters is None or not {"a", "b", "link"} <= set(counters.columns):
        return None
    ends = counters.drop_duplicates("link").set_index("link")[["a", "b"]].astype(str)
    idx = {n: i for i, n in enumerate(names)}
    key_of = {}
    for link, a, b in zip(ends.index, ends["a"], ends["b"]):
        if a in idx and b in idx:
            key_of[link] = (idx[a], idx[b])
    pair_id = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(la, lb))}
    k = np.searchsorted(np.r_[t_s, np.inf], load["t_s"].to_numpy(float), side="right") - 1
    L = load.assign(frame=k)[k >= 0]
    per = L.groupby(["link", "direction", "frame"])["tx_bytes"].sum().groupby(["link", "frame"]).max()
    span = np.r_[np.diff(t_s), frame_s] if len(t_s) else np.zeros(0)
    got: dict[tuple[int, int], float] = {}
    for (link, f), nbytes in per.items():
        ab = key_of.get(link)
        if ab is None:
            continue
        i = pair_id.get(ab, pair_id.get((ab[1], ab[0])))
        if i is not None:
            got[(int(f), i)] = got.get((int(f), i), 0.0) + nbytes * 8 / max(span[f], 1e-9) / 1e6
    out: list[list[int]] = [[] for _ in t_s]
    for f, i in zip(fr, lid):
        out[f].append(int(round(got.get((int(f), int(i)), 0.0) * 100)))
    return out


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise NetemuError("the report's time view needs the plotly package (pip install plotly)") from None
    return get_plotlyjs()


def write_timeview(directory: str | Path, data: dict | None = None) -> str:
    """Write DIRECTORY/report_files/{plotly.min.js, timeview-data.js, timeview.js}; returns the HTML
    fragment that shows the view (scripts by relative path)."""
    d = Path(directory)
    data = timeview_data(d) if data is None else data
    out = d / VIEW_DIR
    out.mkdir(parents=True, exist_ok=True)
    lib = _plotly_js()
    p = out / "plotly.min.js"
    if not p.exists() or p.stat().st_size != len(lib.encode()):
        p.write_text(lib)
    (out / "timeview-data.js").write_text("window.NETEMU_VIEW = " + json.dumps(data, separators=(",", ":"),
                                                                              allow_nan=False) + ";\n")
    (out / "timeview.js").write_text(_JS)
    dec = data["decimation"]
    import html
    return (f"<div id='nv'><div class='nv-bar'><button id='nv-play' type='button'>▶ play</button> "
            f"<input id='nv-slider' type='range' min='0' max='{dec['frames'] - 1}' value='0' step='1' "
            f"aria-label='time step'> <span id='nv-time'></span> "
            f"<label>links coloured by <select id='nv-colour'><option value='delay'>delay</option>"
            + ("<option value='load'>mean load of the run</option>" if data["links"]["load_mbps"] else "")
            + ("<option value='load_t'>load at each step</option>" if data.get("load") else "")
            + f"</select></label></div><p class='meta' id='nv-note'>{html.escape(dec['note'])}.</p>"
            f"<div id='nv-map' style='height:680px'></div><div id='nv-timeline' style='height:230px'></div></div>"
            f"<script src='{VIEW_DIR}/plotly.min.js'></script><script src='{VIEW_DIR}/timeview-data.js'></script>"
            f"<script src='{VIEW_DIR}/timeview.js'></script>")


_JS = r"""// netemu time view: draws window.NETEMU_VIEW (written by netemu/timeview.py) with Plotly.
(function () {
  "use strict";
  var D = window.NETEMU_VIEW, N = D.nodes.name.length, F = D.t_s.length;
  var mapDiv = document.getElementById("nv-map"), tlDiv = document.getElementById("nv-timeline");
  var slider = document.getElementById("nv-slider"), label = document.getElementById("nv-time");
  var playBtn = document.getElementById("nv-play"), colourSel = document.getElementById("nv-colour");
  var PAIR_COLOURS = ["#e8590c", "#7048e8", "#0ca678", "#d6336c", "#1c7ed6", "#f59f00"];
  var BIN_COLOURS = ["#2b8a3e", "#74b816", "#fab005", "#f76707", "#c92a2a"];
  var cur = 0, timer = null;

  function lat(f, i) { var v = D.lat[f][i]; return v === null ? null : v / 100; }
  function lon(f, i) { var v = D.lon[f][i]; return v === null ? null : v / 100; }
  function fmt(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }

  // colour bins: delay (ms) or mean load (Mbit/s) of the links, over every frame
  function binEdges(mode) {
    var vals = [];
    if (mode === "load") { vals = D.links.load_mbps.slice(); }
    else if (mode === "load_t") {
      for (var g = 0; g < F; g++) for (var i = 0; i < D.load[g].length; i++) vals.push(D.load[g][i] / 100);
    }
    else { for (var f = 0; f < F; f++) for (var j = 0; j < D.delay[f].length; j++) vals.push(D.delay[f][j] / 100); }
    var lo = Infinity, hi = -Infinity, e = [];
    vals.forEach(function (v) { if (v < lo) lo = v; if (v > hi) hi = v; });
    if (!vals.length) { lo = 0; hi = 1; }
    for (var k = 1; k < BIN_COLOURS.length; k++) e.push(lo + k * (hi - lo) / BIN_COLOURS.length);   // equal widths
    return e;
  }
  var edges = {delay: binEdges("delay")};
  if (D.links.load_mbps) edges.load = binEdges("load");
  if (D.load) edges.load_t = binEdges("load_t");
  function binOf(v, e) { var k = 0; while (k < e.length && v > e[k]) k++; return k; }

  // a segment between two nodes, split at the date line
  function seg(xs, ys, x0, y0, x1, y1) {
    if (x0 === null || x1 === null) return;
    if (Math.abs(x1 - x0) > 180) {
      var s = x1 > x0 ? -360 : 360, x1s = x1 + s, xe = s < 0 ? -180 : 180;
      var ym = y0 + (y1 - y0) * (xe - x0) / (x1s - x0);
      xs.push(x0, xe, null, -xe, x1, null); ys.push(y0, ym, null, ym, y1, null);
    } else { xs.push(x0, x1, null); ys.push(y0, y1, null); }
  }

  function linkTraces(f, mode) {
    var e = edges[mode], per = {}, hx = [], hy = [], ht = [], counts = {isl: 0, gsl: 0};
    for (var j = 0; j < D.up[f].length; j++) {
      var id = D.up[f][j], a = D.links.a[id], b = D.links.b[id], kind = D.links.kind[id];
      var dl = D.delay[f][j] / 100, now = D.load ? D.load[f][j] / 100 : null;
      var v = mode === "load" ? D.links.load_mbps[id] : mode === "load_t" ? now : dl;
      var key = kind + ":" + binOf(v, e);
      if (!per[key]) per[key] = {x: [], y: [], n: 0};
      per[key].n++;
      seg(per[key].x, per[key].y, lon(f, a), lat(f, a), lon(f, b), lat(f, b));
      counts[kind] = (counts[kind] || 0) + 1;
      if (lon(f, a) !== null && lon(f, b) !== null && Math.abs(lon(f, a) - lon(f, b)) <= 180) {
        hx.push((lon(f, a) + lon(f, b)) / 2); hy.push((lat(f, a) + lat(f, b)) / 2);
        var t = D.nodes.name[a] + " – " + D.nodes.name[b] + " (" + kind.toUpperCase() + ")<br>delay " + fmt(dl, 2) +
          " ms, rate " + fmt(D.links.rate_mbps[id], 0) + " Mbit/s";
        if (D.links.load_mbps) t += "<br>mean load of the run " + fmt(D.links.load_mbps[id], 3) + " Mbit/s";
        if (D.load) t += "<br>load at this step " + fmt(now, 2) + " Mbit/s (busier direction)";
        ht.push(t);
      }
    }
    var out = [], unit = mode === "load" || mode === "load_t" ? " Mbit/s" : " ms";
    ["isl", "gsl"].forEach(function (kind) {
      for (var k = 0; k < BIN_COLOURS.length; k++) {
        var s = per[kind + ":" + k] || {x: [], y: [], n: 0};
        var lo = k === 0 ? "≤ " + fmt(e[0], 1) : (k === e.length ? "> " + fmt(e[e.length - 1], 1) : fmt(e[k - 1], 1) + "–" + fmt(e[k], 1));
        out.push({type: "scatter", mode: "lines", x: s.x, y: s.y, hoverinfo: "skip", name: kind.toUpperCase() + " " + lo + unit,
                  legendgroup: kind, showlegend: kind === "isl", line: {color: BIN_COLOURS[k], width: kind === "gsl" ? 2.2 : 0.8},
                  meta: {role: "links", kind: kind, bin: k, n: s.n}});
      }
    });
    out.push({type: "scatter", mode: "markers", x: hx, y: hy, text: ht, hoverinfo: "text", showlegend: false,
              marker: {size: 7, color: "rgba(0,0,0,0)"}, meta: {role: "link-hover"}});
    return {traces: out, counts: counts};
  }

  function nodeTraces(f) {
    var kinds = {}, out = [];
    for (var i = 0; i < N; i++) {
      var k = D.nodes.kind[i];
      if (!kinds[k]) kinds[k] = {x: [], y: [], text: [], names: []};
      kinds[k].x.push(lon(f, i)); kinds[k].y.push(lat(f, i)); kinds[k].names.push(D.nodes.name[i]);
      kinds[k].text.push(D.nodes.name[i] + " (" + k + (D.nodes.group[i] ? ", " + D.nodes.group[i] : "") + ")<br>lat " +
        fmt(lat(f, i), 2) + "°, lon " + fmt(lon(f, i), 2) + "°, alt " + fmt(D.alt_km[i], 1) + " km");
    }
    var style = {ground: {symbol: "triangle-up", size: 10, color: "#1f5fbf"}, compute: {symbol: "circle", size: 8, color: "#d1495b"}};
    Object.keys(kinds).forEach(function (k) {
      var s = kinds[k], st = style[k] || {symbol: "circle", size: D.n_sat > 400 ? 3 : 5, color: "#495057"};
      out.push({type: "scatter", mode: k === "ground" && s.x.length <= 30 ? "markers+text" : "markers", x: s.x, y: s.y,
                hovertext: s.text, hoverinfo: "text", name: k === "ground" ? "ground station" : k,
                text: k === "ground" ? s.names : undefined, textposition: "top right", textfont: {size: 9},
                marker: {symbol: st.symbol, size: st.size, color: st.color}, meta: {role: "nodes", kind: k, names: s.names}});
    });
    return out;
  }

  function pathTraces(f) {
    return D.pairs.map(function (p, i) {
      var x = [], y = [], path = p.path[f], names = [];
      if (path) {
        for (var j = 0; j + 1 < path.length; j++) seg(x, y, lon(f, path[j]), lat(f, path[j]), lon(f, path[j + 1]), lat(f, path[j + 1]));
        names = path.map(function (n) { return D.nodes.name[n]; });
      }
      var rtt = p.rtt_ms ? p.rtt_ms[f] : null, plan = p.planned_rtt_ms ? p.planned_rtt_ms[f] : null;
      var what = !path ? "no path" : !p.rtt_ms ? "light-time RTT " + fmt(plan, 2) + " ms" :
        (rtt !== null ? "RTT " + fmt(rtt, 2) + " ms" : "no RTT measured") + (plan !== null ? ", light-time " + fmt(plan, 2) + " ms" : "");
      return {type: "scatter", mode: "lines", x: x, y: y, name: p.src + " → " + p.dst + ": " + what,
              line: {color: PAIR_COLOURS[i % PAIR_COLOURS.length], width: 4}, opacity: 0.85, hoverinfo: "name",
              meta: {role: "path", src: p.src, dst: p.dst, nodes: names, rtt_ms: rtt, planned_rtt_ms: plan}};
    });
  }

  var tlLayout = {margin: {l: 60, r: 10, t: 10, b: 40}, xaxis: {title: {text: "scenario time t (s)"}, range: D.window_s},
                  yaxis: {title: {text: "RTT (ms)"}}, legend: {orientation: "h", y: -0.35}, showlegend: true,
                  shapes: [], hovermode: "closest"};

  function timelineTraces() {
    var out = [];
    D.pairs.forEach(function (p, i) {
      var c = PAIR_COLOURS[i % PAIR_COLOURS.length];
      if (p.probe_t_s) out.push({type: "scatter", mode: "markers", x: p.probe_t_s, y: p.probe_rtt_ms, name: p.src + " → " + p.dst + " RTT",
                                 marker: {size: 3, color: c}});
      if (p.planned_rtt_ms) out.push({type: "scatter", mode: "lines", x: D.t_s, y: p.planned_rtt_ms, line: {color: c, width: 1, dash: "dot"},
                                      name: p.src + " → " + p.dst + " light-time"});
    });
    var ev = D.events, kinds = {};
    for (var i = 0; i < ev.t_s.length; i++) {
      var k = ev.event[i];
      if (!kinds[k]) kinds[k] = {x: [], text: []};
      kinds[k].x.push(ev.t_s[i]); kinds[k].text.push(k.replace("_", " ") + " at t = " + ev.t_s[i] + " s: " + ev.a[i] +
                                                      (ev.b[i] ? " – " + ev.b[i] : "") + (ev.detail[i] ? " (" + ev.detail[i] + ")" : ""));
    }
    var sym = {path_change: ["diamond", "#3a6ea5"], handover: ["triangle-up", "#f08c00"], fault_start: ["x", "#c92a2a"],
               fault_end: ["x-open", "#2b8a3e"], reroute: ["star", "#862e9c"]};
    Object.keys(kinds).forEach(function (k) {
      var s = sym[k] || ["circle", "#495057"];
      out.push({type: "scatter", mode: "markers", x: kinds[k].x, y: kinds[k].x.map(function () { return 0; }), yaxis: "y2",
                text: kinds[k].text, hoverinfo: "text", name: k.replace("_", " "), marker: {symbol: s[0], size: 10, color: s[1]}});
    });
    tlLayout.yaxis2 = {overlaying: "y", range: [-0.5, 10], visible: false};
    return out;
  }

  var mapLayout = {margin: {l: 50, r: 10, t: 36, b: 40}, xaxis: {range: [-180, 180], title: {text: "longitude (°)"}, zeroline: false, constrain: "domain"},
                   yaxis: {range: [-90, 90], scaleanchor: "x", title: {text: "latitude (°)"}, zeroline: false,
                           constrain: "domain"},
                   legend: {orientation: "h", y: -0.12, font: {size: 10}}, hovermode: "closest", uirevision: "keep",
                   plot_bgcolor: "#fbfcfd"};
  var coast = {type: "scatter", mode: "lines", x: D.coast[0], y: D.coast[1], hoverinfo: "skip", showlegend: false,
               line: {color: "#adb5bd", width: 0.7}, meta: {role: "coast"}};
  var lastCounts = {};

  function draw(f) {
    var mode = colourSel ? colourSel.value : "delay";
    var lt = linkTraces(f, mode);
    lastCounts = lt.counts;
    var traces = [coast].concat(lt.traces, pathTraces(f), nodeTraces(f));
    mapLayout.title = {text: D.title + " at t = " + D.t_s[f] + " s", font: {size: 14}};
    Plotly.react(mapDiv, traces, mapLayout, {displaylogo: false, responsive: true});
    tlLayout.shapes = [{type: "line", x0: D.t_s[f], x1: D.t_s[f], yref: "paper", y0: 0, y1: 1, line: {color: "#1d232b", width: 1.5}}];
    Plotly.relayout(tlDiv, {shapes: tlLayout.shapes});
    label.textContent = "t = " + D.t_s[f] + " s (frame " + (f + 1) + " of " + F + "; ISLs up " + (lt.counts.isl || 0) +
      ", ground links up " + (lt.counts.gsl || 0) + ")";
  }

  function setFrame(f) {
    cur = Math.max(0, Math.min(F - 1, f | 0));
    slider.value = String(cur);
    draw(cur);
    return cur;
  }

  Plotly.newPlot(tlDiv, timelineTraces(), tlLayout, {displaylogo: false, responsive: true});
  tlDiv.on("plotly_click", function (ev) {
    if (!ev.points.length) return;
    var t = ev.points[0].x, best = 0;
    for (var f = 0; f < F; f++) if (Math.abs(D.t_s[f] - t) < Math.abs(D.t_s[best] - t)) best = f;
    setFrame(best);
  });
  slider.addEventListener("input", function () { setFrame(+slider.value); });
  if (colourSel) colourSel.addEventListener("change", function () { draw(cur); });
  playBtn.addEventListener("click", function () {
    if (timer) { clearInterval(timer); timer = null; playBtn.textContent = "▶ play"; return; }
    playBtn.textContent = "❚❚ pause";
    timer = setInterval(function () { if (cur >= F - 1) cur = -1; setFrame(cur + 1); }, 400);
  });
  setFrame(0);

  // what is drawn, read back from the plot (for tests and the curious)
  function state() {
    var s = {frame: cur, t_s: D.t_s[cur], slider: +slider.value, links: {isl: 0, gsl: 0}, paths: {}, nodes: {}};
    mapDiv.data.forEach(function (tr) {
      var m = tr.meta || {};
      if (m.role === "links") {
        s.links[m.kind] += m.n;
        if (m.n) (s.bins = s.bins || {})[m.kind + ":" + m.bin] = m.n;   // links per colour bin
      } else if (m.role === "path") {
        s.paths[m.src + ">" + m.dst] = {nodes: m.nodes, rtt_ms: m.rtt_ms, planned_rtt_ms: m.planned_rtt_ms, name: tr.name};
      } else if (m.role === "nodes") {
        for (var j = 0; j < m.names.length; j++) s.nodes[m.names[j]] = [tr.x[j], tr.y[j]];
      }
    });
    s.counts = lastCounts;
    return s;
  }
  window.netemuView = {data: D, setFrame: setFrame, state: state, frame: function () { return cur; }};
})();
"""
