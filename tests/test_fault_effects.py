"""What faults did to a run, from a synthetic run directory (no root): the timeline of planned and
live faults, per fault the probes lost, time to repair, jobs before/during/after and goodput lost
against hand-computed values; the report's faults section; `netemu compare` with and without."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netemu.emulate.inject import INJECTION_COLUMNS
from netemu.report import build_report, fault_effects, fault_timeline, faults_summary
from netemu.traffic.workloads import JOB_COLUMNS


def _run_dir(path: Path, faults: bool) -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"scenario": "synthetic", "window": {"t0_s": 330, "t_end_s": 346},
                                               "dilation": 1.0, "speed": 1.0}))
    t = np.round(np.arange(330, 346, 0.05), 3)
    rtt = np.full(len(t), 40.0)
    if faults:   # sent into the dead relay from the failure (335) until routes moved (335.2), and
        # the two on the wire when it struck (RTT 40 ms: sent at 334.95 and later)
        rtt[(t >= 334.95) & (t < 335.2)] = np.nan
        rtt[(t >= 335.2) & (t < 338)] = 55.0                   # the detour
        rtt[(t >= 340) & (t < 341)] = np.nan                   # the planned reboot, until its reroute at 341
    pd.DataFrame({"t_s": t, "src": "g-a", "dst": "g-b", "rtt_ms": rtt, "oracle_rtt_ms": 40.0}).to_parquet(
        path / "probes.parquet", index=False)
    ev = [(331.0, "handover", "g-a", "w00-01", "from w00-00")]
    if faults:
        ev += [(340.0, "fault_start", "w01-01", "", "reboot"), (341.0, "reroute", "w01-01", "", "1 pair paths changed"),
               (342.0, "fault_end", "w01-01", "", "reboot")]
    pd.DataFrame(ev, columns=["t_s", "event", "a", "b", "detail"]).to_csv(path / "events.csv", index=False)
    if faults:
        rows = [dict(zip(INJECTION_COLUMNS, r)) for r in [
            (1, "fail_node", "w03-00", 335.0, "2026-12-01T00:00:00Z", None, 4, 335.0001, 0.2, 0.2, 335.2, 335.2004,
             0.4, 3, ""),
            (2, "restore", "w03-00", 338.0, "2026-12-01T00:00:03Z", None, 4, 338.0001, 0.2, 0.0, 338.0, 338.001,
             1.0, 3, "")]]
        pd.DataFrame(rows, columns=INJECTION_COLUMNS).to_csv(path / "injections.csv", index=False)
    # jobs: two end before the failure, three run during it (one fails), one starts after it
    jobs = [(331.0, 332.0, "done", 1000.0), (333.0, 334.9, "done", 1900.0), (334.0, 336.0, "done", 2000.0),
            (336.0, 339.0, "failed" if faults else "done", np.nan if faults else 3000.0),
            (337.5, 338.5, "done", 1000.0), (339.0, 339.8, "done", 800.0)]
    pd.DataFrame([{"workload": "chat", "kind": "inference", "job": f"j{i}", "client": "g-a", "server": "g-b",
                   "t_start_s": s, "t_end_s": e, "status": st, "bytes_expected": 1e4, "bytes_delivered": 1e4,
                   "ttfb_ms": c / 10, "completion_ms": c, "goodput_mbps": np.nan, "ideal_ms": np.nan,
                   "ratio_to_ideal": np.nan}
                  for i, (s, e, st, c) in enumerate(jobs)], columns=JOB_COLUMNS).to_csv(path / "jobs.csv", index=False)
    mbps = np.full(16, 100.0)
    if faults:
        mbps[5:8] = 40.0                                       # bins 335, 336, 337: the failure's 3 s
    pd.DataFrame({"t_s": np.arange(330, 346.0), "workload": "eo", "mbps": mbps}).to_csv(path / "throughput.csv",
                                                                                       index=False)
    return path


def test_timeline_and_effects_against_hand_computed_values(tmp_path):
    run = _run_dir(tmp_path / "faulty", faults=True)
    tl = fault_timeline(pd.read_csv(run / "events.csv"), pd.read_csv(run / "injections.csv"), 330, 346)
    assert tl[["source", "kind", "target"]].values.tolist() == [["live", "node", "w03-00"],
                                                                 ["planned", "reboot", "w01-01"]]
    assert tl["t_start_s"].tolist() == [335.0, 340.0] and tl["t_end_s"].tolist() == [338.0, 342.0]
    assert tl["t_repair_s"].tolist() == [335.2004, 341.0]
    e = fault_effects(tl, pd.read_parquet(run / "probes.parquet"), pd.read_csv(run / "jobs.csv"),
                      pd.read_csv(run / "throughput.csv"))
    live, planned = e.iloc[0], e.iloc[1]
    assert live["probes_lost"] == 5 and planned["probes_lost"] == 20          # 334.95..335.15; 340.00..340.95
    assert live["time_to_repair_s"] == pytest.approx(0.2004) and planned["time_to_repair_s"] == 1.0
    assert (live["jobs_before"], live["jobs_during"], live["jobs_after"]) == (2, 3, 1)
    assert live["completion_before_ms"] == 1450.0 and live["completion_during_ms"] == 1500.0
    assert live["completion_after_ms"] == 800.0 and live["jobs_failed_during"] == 1
    assert live["goodput_lost_mbit"] == pytest.approx(3 * 60.0) and planned["goodput_lost_mbit"] == 0.0
    s = faults_summary(e)
    assert s == {"faults": 2, "planned": 1, "live": 1, "probes_lost": 25, "time_to_repair_median_s": 0.6002,
                 "jobs_failed_during": 1, "allreduce_stalled": 0, "goodput_lost_mbit": 180.0}


def test_report_faults_section_and_compare_with_and_without(tmp_path):
    faulty = _run_dir(tmp_path / "faulty", faults=True)
    healthy = _run_dir(tmp_path / "healthy", faults=False)
    text = build_report(faulty).read_text()
    assert "<h2>Faults</h2>" in text and "figures/faults.png" in text
    assert (faulty / "figures" / "faults.png").stat().st_size > 1000
    assert "node w03-00" in text and "reboot w01-01" in text
    assert "<h2>Faults</h2>" not in build_report(healthy).read_text()
    r = subprocess.run([sys.executable, "-m", "netemu", "compare", str(healthy), str(faulty), "-o",
                        str(tmp_path / "cmp")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cmp_ = pd.read_csv(tmp_path / "cmp" / "compare.csv").set_index("metric")
    assert cmp_.loc["faults (planned / live)"].tolist() == ["0 / 0", "1 / 1"]
    assert cmp_.loc["faults: probes lost"].astype(int).tolist() == [0, 25]
    assert cmp_.loc["faults: goodput lost (Mbit)"].astype(float).tolist() == [0.0, 180.0]
    assert cmp_.loc["faults: jobs failed during"].astype(int).tolist() == [0, 1]
