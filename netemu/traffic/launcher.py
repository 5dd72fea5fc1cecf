"""Workloads in a live emulation (kernel edge): start one agent per node that has a role, stop
them at the end of the run, and turn their event logs into `jobs.csv`, `throughput.csv` and the
per-workload section of `summary.json`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from . import agent as agent_program
from .workloads import Clock, agent_specs, jobs_table, read_events, ring_ideal_ms, summarise, throughput_table

__all__ = ["WorkloadRunner", "WORKLOAD_FILES", "terminate", "kill_all", "update_summary"]

WORKLOAD_FILES = ("jobs.csv", "throughput.csv", "summary.json")


class WorkloadRunner:
    """The scenario's workloads in emulation `em`; event logs go to `out/workloads/`.

    Agents start at once and wait for their instants, so create this after `em.start()` has
    fixed the clock's origin."""

    def __init__(self, em, out: Path, workloads=None):
        self.em, self.out = em, Path(out)
        self.workloads = tuple(em.plan.scenario.workloads if workloads is None else workloads)
        w = em.window
        self.clock = Clock(t0_s=w.t0_s, t_end_s=w.t_end_s, origin_mono=em.player.origin, scale=em.scale,
                           dilation=em.dilation)
        self.log_dir = self.out / "workloads"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.specs = agent_specs(self.workloads, self.clock, em.loopback, self.log_dir, speed=em.speed)
        self.procs: dict[str, subprocess.Popen] = {}
        for node, spec in self.specs.items():
            path = self.log_dir / f"{node}.spec.json"
            path.write_text(json.dumps(spec))
            self.procs[node] = em.popen(node, [sys.executable, "-m", agent_program.__name__, str(path)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.log_dir / f"{node}.stderr", "w"))

    def stop(self) -> None:
        terminate(list(self.procs.values()))

    def kill(self) -> None:
        kill_all(list(self.procs.values()))

    def failures(self) -> list[str]:
        """Agents that died on their own (exit code ≠ 0 and not our SIGTERM), with their stderr."""
        bad = []
        for node, p in self.procs.items():
            if p.returncode not in (0, None, -signal.SIGTERM):
                err = (self.log_dir / f"{node}.stderr").read_text().strip().splitlines()[-3:]
                bad.append(f"agent in {node} exited with {p.returncode}: {' / '.join(err)}")
        return bad

    def write_results(self) -> dict:
        """Analyse the event logs; write jobs.csv, throughput.csv, summary.json; return the summary."""
        events = read_events(sorted(self.log_dir.glob("*.jsonl")))
        plan = self.em.plan
        ideal = lambda w, t: ring_ideal_ms(plan.schedule, plan.routes, w, t)   # noqa: E731
        jobs = jobs_table(events, self.workloads, self.clock, ideal)
        jobs.to_csv(self.out / "jobs.csv", index=False)
        throughput_table(events, self.workloads, self.clock).to_csv(self.out / "throughput.csv", index=False)
        summary = {"workloads": summarise(jobs, self.workloads, self.clock),
                   "workload_units": "t_s scenario seconds; *_ms emulated milliseconds; *_mbps emulated Mbit/s",
                   "agent_failures": self.failures()}
        update_summary(self.out, summary)
        return summary


def terminate(procs: list[subprocess.Popen], timeout_s: float = 10.0) -> None:
    """SIGTERM every process still running, then wait for each; kill those that outlast
    `timeout_s`."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def update_summary(out: Path, extra: dict) -> None:
    """Add `extra`'s keys to the run directory's summary.json (the plan's summary)."""
    path = Path(out) / "summary.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(extra)
    path.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(o):
    try:
        return o.item()
    except AttributeError:
        return str(o)
