"""What faults did to a run's traffic (pure analysis of a run directory's tables; the report's
and `netemu compare`'s faults figures).

A run's faults are the scenario's planned ones in its window (`events.csv`: `fault_start`,
`reroute`, `fault_end`; the reroute as played where `injections.csv` has its `planned_reroute`
row) and the live injections (`injections.csv`, emulate.inject). Per fault:
- `t_start_s`, `t_repair_s` (routes moved around it: the reroute; NaN when no path changed),
  `t_end_s` (the fault ended; the window's end when it did not);
- `time_to_repair_s` = t_repair − t_start (the detection delay as played);
- `probes_lost`: probes without an answer sent from one RTT before the fault (those on the wire
  when it struck) until it was repaired (until its end when it never was);
- jobs before (ended by the fault's start), during (running at some instant of the fault) and
  after (started after its end): counts, median completion, failures during; all-reduce steps
  stalled (during, and slower than twice the median before, or not done);
- `goodput_lost_mbit`: for transfer workloads, the goodput below each workload's median before
  the fault, summed over the fault's seconds (emulated Mbit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["fault_timeline", "fault_effects", "faults_summary", "TIMELINE_COLUMNS"]

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
