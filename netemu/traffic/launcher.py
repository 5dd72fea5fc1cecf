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
from ..plan.files import atomic_write
from .workloads import agent_specs, jobs_table, read_events, ring_ideal_ms, summarise, throughput_table

__all__ = ["WorkloadRunner", "WORKLOAD_FILES", "terminate", "kill_all", "update_summary"]

WORKLOAD_FILES = ("jobs.csv", "throughput.csv", "summary.json")


class WorkloadRunner:
    """The workloads of `plan`'s scenario (or `workloads`) as agents in the live network; their
    specs and event logs go to `log_dir` (a traffic source: emulate.live.TrafficSource).

    Agents start at once and wait for their instants, so `start(live)` after the emulation's
    clock has started (its origin fixes the instants)."""

    def __init__(self, plan, log_dir: Path, workloads=None):
        self.plan, self.log_dir = plan, Path(log_dir)
        self.workloads = tuple(plan.scenario.workloads if workloads is None else workloads)
        self.clock = None
        self.specs: dict[str, dict] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, live) -> None:
        self.clock = live.clock
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.specs = agent_specs(self.workloads, self.clock, live.loopback, self.log_dir, speed=self.clock.speed,
                                 plan=self.plan)
        for node, spec in self.specs.items():
            path = self.log_dir / f"{node}.spec.json"
            path.write_text(json.dumps(spec))
            with open(self.log_dir / f"{node}.stderr", "w") as err:
                self.procs[node] = live.popen(node, [sys.executable, "-m", agent_program.__name__, str(path)],
                                              stdout=subprocess.DEVNULL, stderr=err)

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

    def write_results(self, out: Path) -> dict:
        """Analyse the event logs; write jobs.csv, throughput.csv and summary.json's workload
        section into `out`; return the summary."""
        out = Path(out)
        events = read_events(sorted(self.log_dir.glob("*.jsonl")))
        plan = self.plan
        ideal = lambda w, t: ring_ideal_ms(plan.schedule, plan.routes, w, t)   # noqa: E731
        jobs = jobs_table(events, self.workloads, self.clock, ideal, power=getattr(plan, "power", None))
        atomic_write(out / "jobs.csv", lambda tmp: jobs.to_csv(tmp, index=False))
        tput = throughput_table(events, self.workloads, self.clock)
        atomic_write(out / "throughput.csv", lambda tmp: tput.to_csv(tmp, index=False))
        summary = {"workloads": summarise(jobs, self.workloads, self.clock),
                   "workload_units": "t_s scenario seconds; *_ms emulated milliseconds; *_mbps emulated Mbit/s",
                   "agent_failures": self.failures()}
        update_summary(out, summary)
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
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n"))


def _plain(o):
    try:
        return o.item()
    except AttributeError:
        return str(o)
