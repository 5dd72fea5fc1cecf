"""The fidelity verdict of a run: how far its probes' RTTs were from the light-time of the planned
paths, and, when that was too far, why and what to do (pure: tables in, a dict out; the runner
writes it as `fidelity.json` and the report shows it).

Probes that a link-engine stall pushed past the threshold (the host took the engine's CPU: a VM's
hypervisor pauses vCPUs for 0.3-25 ms, from once a second to hundreds of times a second) are
counted apart, as are those straddling a path change; too many of them makes the run not faithful.

The causes looked at are the link engine's lateness (frames that left late), its stalls, the route-apply lag
(route changes installed after their instant), the host's load (the pilot's drift: the engine's
per-traversal cost measured on links of its own while the run plays) and the run's own traffic
(probes queueing behind workload, replay or iperf traffic).

Besides the whole run, the verdict looks at every window of emulated time (a minute; 10 s in
runs shorter than two minutes): a bad minute inside a good run makes the run not faithful.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..emulate.playback import fidelity, in_stall, straddling

__all__ = ["assess", "window_width_s", "FIDELITY_P99_MS", "ENGINE_LATE_SHARE", "APPLY_LAG_P99_MS", "HOST_DRIFT_US",
           "MANY_PAIRS", "MIN_WINDOW_PROBES", "STALL_SHARE"]

FIDELITY_P99_MS = 0.5       # |measured − oracle| RTT at p99 that counts as faithful
ENGINE_LATE_SHARE = 0.01    # share of frames leaving the engine > 0.5 ms late that marks it overloaded
APPLY_LAG_P99_MS = 20.0     # route changes installed later than this (p99, emulated ms) shift RTTs
HOST_DRIFT_US = 10.0        # pilot drift (µs per traversal, either way) that marks changing host load
MANY_PAIRS = 16             # more probe pairs than this load the host noticeably
WORST = 3                   # pairs, instants and windows named in a reason
MIN_WINDOW_PROBES = 100     # compared probes a window needs for its own verdict (a p99 of fewer is noise)
# Share of the answered probes that link-engine stalls pushed past the threshold above which the
# run is not faithful: more than that means a host too busy to emulate on (a 2-vCPU VM here
# pauses the engine's vCPU from once a second, touching a few % of a 20-Hz pair's probes, to
# hundreds of times a second when its physical host is loaded).
STALL_SHARE = 0.10


def window_width_s(span_s: float) -> float:
    """Width (emulated s) of the windows fidelity is summarised over: a minute, or 10 s in runs
    shorter than two minutes."""
    return 60.0 if span_s >= 120 else 10.0


def assess(probes: pd.DataFrame, change_t_s: dict[tuple[str, str], np.ndarray], *, guard_s: float,
           timeout_s: float, threshold_p99_ms: float = FIDELITY_P99_MS, loaded: bool = False,
           engine: list[dict] | None = None, apply_lag_ms: np.ndarray | None = None,
           pilot_drift: pd.DataFrame | None = None, t0_s: float | None = None,
           t_end_s: float | None = None, dilation: float = 1.0, stalls: pd.DataFrame | None = None) -> dict:
    """The verdict on `probes` (`t_s, src, dst, rtt_ms, oracle_rtt_ms`; rtt NaN = lost, oracle
    NaN = no planned path), with `netemu.emulate.playback.fidelity`'s overall and per-pair figures.

    `change_t_s`, `guard_s`, `timeout_s`: as for `fidelity` (probes straddling a path change are
    counted apart). What the run measured besides, each optional: `loaded` (the probes shared
    the network with traffic), `engine` (per engine process `frames`, `late_frames`, as
    `EngineLinks.status` gives), `apply_lag_ms` (emulated ms each route step was installed after
    its instant), `pilot_drift` (`t_s, drift_us`: the pilot's reading of the engine's
    per-traversal cost minus its start-up baseline), `t0_s`/`t_end_s` (the run's window; default
    the probes' span), `stalls` (`t_start_s, t_end_s`, optionally `pairs`: the link engines'
    stalls, when the host kept an engine from its links, and the probe pairs whose path crossed
    a link they delayed; answered probes in flight during one of their pair's, whose error it
    explains, are counted apart as `overlapping_engine_stall`, and more than STALL_SHARE of them
    makes the run not faithful).

    The run is summarised per window too (`window_width_s`): `windows` lists t_start_s, t_end_s,
    n (probes compared), p50_ms (median RTT − oracle), p99_ms (|RTT − oracle| at p99),
    lost_while_reachable, pilot_drift_us_max_abs (when known) and a verdict ("faithful", "not
    faithful", or "too few probes" under `MIN_WINDOW_PROBES`); a window with enough probes that
    is not faithful makes the run not faithful, and the verdict names it.

    Returns a dict: overall, pairs, verdict ("faithful", "not faithful", "not faithful (under
    traffic: …)" or "not assessed: …"), reasons (why, then what to do; never empty unless
    faithful), causes (short keys of what was found: error, loss, engine_late, engine_stall, apply_lag,
    host_load, traffic, many_pairs, window), why (the gist of the reasons in one sentence, when
    not faithful), worst_instants, windows, window_s, engine, apply_lag_ms,
    host, engine_stalls, threshold_p99_ms, loaded.
    """
    probes = probes.astype({"t_s": float, "rtt_ms": float, "oracle_rtt_ms": float})
    fid = fidelity(probes, change_t_s, guard_s=guard_s, timeout_s=timeout_s, stalls=stalls,
                   stall_slack_ms=threshold_p99_ms)
    o = fid["overall"]
    straddle = straddling(probes, change_t_s, guard_s, timeout_s)
    stalled = in_stall(probes, stalls, threshold_p99_ms)
    compared = probes[probes["oracle_rtt_ms"].notna() & probes["rtt_ms"].notna() & ~straddle & ~stalled]
    err = compared["rtt_ms"] - compared["oracle_rtt_ms"]
    worst = compared.assign(err_ms=err).reindex(err.abs().sort_values(ascending=False).index).head(WORST)
    out = {**fid, "threshold_p99_ms": threshold_p99_ms, "loaded": loaded,
           "worst_instants": [{"t_s": round(float(r.t_s), 3), "pair": f"{r.src}>{r.dst}",
                               "error_ms": round(float(r.err_ms), 3)} for r in worst.itertuples(index=False)],
           "engine": _engine(engine), "apply_lag_ms": _lag(apply_lag_ms), "host": _host(pilot_drift),
           "engine_stalls": _stalls(stalls, o)}
    t_lo = float(probes["t_s"].min()) if t0_s is None and len(probes) else float(t0_s or 0.0)
    t_hi = float(probes["t_s"].max()) if t_end_s is None and len(probes) else float(t_end_s or t_lo)
    out["window_s"] = width = window_width_s(t_hi - t_lo)
    out["windows"] = _windows(probes, straddle, stalled, t_lo, t_hi, width, threshold_p99_ms, pilot_drift)
    bad_windows = [w for w in out["windows"] if w["verdict"] == "not faithful"]
    if not o["compared"]:
        out.update(verdict="not assessed: no probes compared", causes=["no_probes"], reasons=[
            f"no probe could be compared with the oracle: {o['probes']:,} sent, {o['unreachable']:,} while the "
            f"plan had no path, {o['straddling_path_change']:,} straddling a path change, "
            f"{o['lost_while_reachable']:,} lost while the path was up",
            "what to do: probe pairs that the plan connects during the window (see paths.parquet), or a longer "
            "window"])
        return out
    ok = (o.get("abs_error_p99_ms", np.inf) <= threshold_p99_ms and o["lost_while_reachable"] == 0
          and out["engine_stalls"].get("probe_share", 0.0) <= STALL_SHARE)
    if ok and not bad_windows:
        out.update(verdict="faithful", reasons=[], causes=[])
        return out
    verdict = "not faithful"
    if ok:      # the run as a whole passed: name the window(s) that did not
        verdict += f" in t = {bad_windows[0]['t_start_s']:g}–{bad_windows[0]['t_end_s']:g} s" + (
            f" and {len(bad_windows) - 1} other window(s)" if len(bad_windows) > 1 else "")
    out["verdict"] = verdict + (" (under traffic: queueing and host load included)" if loaded else "")
    out["causes"], out["reasons"], out["why"] = _why(out, threshold_p99_ms, dilation)
    return out


def _windows(probes: pd.DataFrame, straddle: np.ndarray, stalled: np.ndarray, t0_s: float, t_end_s: float,
             width_s: float, threshold_p99_ms: float, drift: pd.DataFrame | None) -> list[dict]:
    t = probes["t_s"].to_numpy(float)
    reach = probes["oracle_rtt_ms"].notna().to_numpy() & ~straddle
    answered = probes["rtt_ms"].notna().to_numpy()
    err = (probes["rtt_ms"] - probes["oracle_rtt_ms"]).to_numpy(float)
    out = []
    starts = np.arange(t0_s, t_end_s, width_s) if t_end_s > t0_s else np.array([t0_s])
    for i, a in enumerate(starts):
        b = min(a + width_s, t_end_s) if t_end_s > t0_s else t0_s
        last = i == len(starts) - 1
        m = (t >= a) & ((t <= b) if last else (t < b))
        e = err[m & reach & answered & ~stalled]
        w = {"t_start_s": round(float(a), 3), "t_end_s": round(float(b), 3), "n": int(len(e)),
             "p50_ms": round(float(np.median(e)), 4) if len(e) else None,
             "p99_ms": round(float(np.percentile(np.abs(e), 99)), 4) if len(e) else None,
             "lost_while_reachable": int((m & reach & ~answered).sum())}
        if drift is not None and len(drift):
            d = drift["drift_us"].to_numpy(float)[drift["t_s"].between(a, b).to_numpy()]
            w["pilot_drift_us_max_abs"] = round(float(np.abs(d).max()), 1) if len(d) else None
        if len(e) < MIN_WINDOW_PROBES:
            w["verdict"] = "too few probes"
        else:
            w["verdict"] = ("faithful" if w["p99_ms"] <= threshold_p99_ms and not w["lost_while_reachable"]
                            else "not faithful")
        out.append(w)
    return out


def _engine(status: list[dict] | None) -> dict:
    if not status:
        return {}
    frames = int(sum(s.get("frames", 0) for s in status))
    late = int(sum(s.get("late_frames", 0) for s in status))
    return {"frames": frames, "late_frames": late, "late_share": round(late / frames, 5) if frames else 0.0}


def _stalls(stalls: pd.DataFrame | None, overall: dict) -> dict:
    """The engines' stalls: how many, total and longest (ms), and the share of answered probes
    that overlapped one."""
    if stalls is None:
        return {}
    ms = (stalls["t_end_s"] - stalls["t_start_s"]).to_numpy(float) * 1e3
    n = overall["compared"] + overall["overlapping_engine_stall"]
    return {"count": int(len(ms)), "total_ms": round(float(ms.sum()), 3),
            "max_ms": round(float(ms.max()), 3) if len(ms) else 0.0,
            "probes": overall["overlapping_engine_stall"],
            "probe_share": round(overall["overlapping_engine_stall"] / n, 4) if n else 0.0}


def _lag(lag_ms) -> dict:
    v = np.asarray([] if lag_ms is None else lag_ms, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {}
    return {"median": round(float(np.median(v)), 3), "p99": round(float(np.percentile(v, 99)), 3),
            "max": round(float(v.max()), 3)}


def _host(drift: pd.DataFrame | None) -> dict:
    if drift is None or not len(drift):
        return {}
    d = drift["drift_us"].to_numpy(float)
    i = int(np.argmax(np.abs(d)))
    return {"pilot_readings": int(len(d)), "pilot_drift_us_median": round(float(np.median(d)), 1),
            "pilot_drift_us_max_abs": round(float(abs(d[i])), 1),
            "pilot_drift_us_worst_t_s": round(float(drift["t_s"].iloc[i]), 1)}


def _why(f: dict, threshold_p99_ms: float, dilation: float = 1.0) -> tuple[list[str], list[str], str]:
    """The causes found, the reasons in words (what was off, where, why, what to do) and the gist
    in one sentence (the first of them, the bad windows, losses and causes found, what to do)."""
    o, causes, reasons, todo, gist_at = f["overall"], [], [], [], []
    p99 = o.get("abs_error_p99_ms")
    if p99 is not None and p99 > threshold_p99_ms:
        causes.append("error")
        reasons.append(f"|RTT − oracle| was {p99:.3f} ms at p99 over {o['compared']:,} probes, above the "
                       f"{threshold_p99_ms:g} ms threshold (median {o.get('error_median_ms', 0):+.3f} ms)")
        bad = sorted(((k, v) for k, v in f["pairs"].items() if v.get("abs_error_p99_ms", 0) > threshold_p99_ms),
                     key=lambda kv: -kv[1]["abs_error_p99_ms"])
        if bad:
            reasons.append(f"{len(bad)} of {len(f['pairs'])} pair(s) above the threshold; worst: " + ", ".join(
                f"{k} {v['abs_error_p99_ms']:.3f} ms at p99 ({v['compared']:,} probes)" for k, v in bad[:WORST]))
        if f["worst_instants"]:
            reasons.append("largest errors at " + ", ".join(
                f"t = {w['t_s']:g} s ({w['pair']}, {w['error_ms']:+.3f} ms)" for w in f["worst_instants"]))
    bad = [w for w in f["windows"] if w["verdict"] == "not faithful"]
    if bad:
        causes.append("window")
        worst = sorted(bad, key=lambda w: -w["p99_ms"])[:WORST]
        passed = p99 is not None and p99 <= threshold_p99_ms
        named = [f"t = {w['t_start_s']:g}–{w['t_end_s']:g} s (p99 {w['p99_ms']:.3f} ms over {w['n']:,} probes"
                 + (f", {w['lost_while_reachable']:,} lost" if w["lost_while_reachable"] else "") + ")" for w in worst]
        gist_at.append(len(reasons))
        reasons.append(f"{len(bad)} of {len(f['windows'])} windows of {f['window_s']:g} s not faithful"
                       + (f" although the whole run's p99 was {p99:.3f} ms" if passed else "") + ": "
                       + ", ".join(named))
        loaded_windows = [w for w in bad if (w.get("pilot_drift_us_max_abs") or 0) > HOST_DRIFT_US]
        if loaded_windows:
            if "host_load" not in causes:
                causes.append("host_load")
            gist_at.append(len(reasons))
            reasons.append("host load in " + ", ".join(
                f"t = {w['t_start_s']:g}–{w['t_end_s']:g} s (pilot drift {w['pilot_drift_us_max_abs']:g} µs per "
                "traversal)" for w in loaded_windows[:WORST]) + ": the host was busier there than at the start")
    if o["lost_while_reachable"]:
        causes.append("loss")
        lost = [(k, v["lost_while_reachable"]) for k, v in f["pairs"].items() if v.get("lost_while_reachable")]
        lost.sort(key=lambda kv: -kv[1])
        gist_at.append(len(reasons))
        reasons.append(f"{o['lost_while_reachable']:,} probe(s) lost while the planned path was up: " + ", ".join(
            f"{k} ({n:,})" for k, n in lost[:WORST]) + (", …" if len(lost) > WORST else ""))
    found = False
    eng = f["engine"]
    if eng.get("frames"):
        if eng["late_share"] >= ENGINE_LATE_SHARE:
            found = True
            gist_at.append(len(reasons))
            causes.append("engine_late")
            reasons.append(f"the link engine fell behind: {eng['late_frames']:,} of {eng['frames']:,} frames "
                           f"({100 * eng['late_share']:.1f} %) left more than 0.5 ms late")
            todo.append("raise --dilation (e.g. --dilation 2) or give the engine more cores (--shards)")
        else:
            reasons.append(f"the link engine kept up ({100 * eng['late_share']:.2f} % of {eng['frames']:,} frames "
                           "left late)")
    st = f.get("engine_stalls") or {}
    if st.get("count"):
        if st["probe_share"] > STALL_SHARE:
            found = True
            gist_at.append(len(reasons))
            causes.append("engine_stall")
            reasons.append(f"the host stalled the link engine {st['count']:,} times ({st['total_ms']:,.1f} ms in all, "
                           f"up to {st['max_ms']:,.1f} ms): {100 * st['probe_share']:.1f} % of the answered probes "
                           "were in flight during a stall (counted apart), above the "
                           f"{100 * STALL_SHARE:g} % a faithful run allows")
            todo.append("run on a host with idle CPUs (a VM's vCPUs are paused by its hypervisor; other runs and "
                        "builds take CPUs) or raise --dilation")
        else:
            reasons.append(f"the link engine stalled {st['count']:,} times (up to {st['max_ms']:,.1f} ms); "
                           f"{st['probes']:,} probes in flight then were counted apart")
    lag = f["apply_lag_ms"]
    if lag:
        if lag["p99"] > APPLY_LAG_P99_MS:
            found = True
            gist_at.append(len(reasons))
            causes.append("apply_lag")
            reasons.append(f"route changes were installed late: {lag['p99']:,.1f} ms at p99, up to "
                           f"{lag['max']:,.1f} ms (emulated) after their instant, so probes around path changes "
                           "took the old path")
            todo.append("raise --dilation so route changes keep up")
        else:
            reasons.append(f"route changes were installed in time ({lag['p99']:,.1f} ms at p99)")
    host = f["host"]
    if host:
        if host["pilot_drift_us_max_abs"] > HOST_DRIFT_US:
            found = True
            gist_at.append(len(reasons))
            if "host_load" not in causes:
                causes.append("host_load")
            reasons.append(f"host load: the pilot measured the engine's cost per traversal drift by up to "
                           f"{host['pilot_drift_us_max_abs']:g} µs from its start-up value (at t = "
                           f"{host['pilot_drift_us_worst_t_s']:g} s): other processes or the run's own traffic "
                           "competed for the CPUs")
            todo.append("stop other load on this machine (other runs, builds, browsers) or raise --dilation")
        else:
            reasons.append(f"host load was steady (pilot drift at most {host['pilot_drift_us_max_abs']:g} µs per "
                           "traversal)")
    if f["loaded"]:
        found = True
        gist_at.append(len(reasons))
        causes.append("traffic")
        reasons.append("the probes shared links, queues and CPUs with the run's workload, replay or iperf traffic: "
                       "queueing delay is part of the error")
        todo.append("to check the emulator alone, run without traffic (probes only)")
    n_pairs = len(f["pairs"])
    if n_pairs > MANY_PAIRS:
        causes.append("many_pairs")
        todo.append(f"probe fewer pairs (--probe SRC:DST; {n_pairs} were probed)")
    if not found:
        gist_at.append(len(reasons))
        looked = [what for what, have in (("the engine counters", eng.get("frames")), ("the route-apply lag", lag),
                                          ("the pilot's host-load reading", host)) if have]
        reasons.append("no single cause stood out in " + ", ".join(looked) if looked else
                       "no engine counters, route-apply lag or pilot readings were there to find a cause in")
        todo.append(f"re-run with --dilation {2 * dilation:g} (this run: {dilation:g}): if the error shrinks, the "
                    "host was too slow for this dilation")
    reasons.append("what to do: " + "; ".join(dict.fromkeys(todo)))
    gist = "; ".join([reasons[0], *(reasons[i] for i in gist_at if i != 0), reasons[-1]])
    return causes, reasons, gist
