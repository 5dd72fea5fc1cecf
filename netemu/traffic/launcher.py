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
from ..errors import EmulationError
from ..plan.files import atomic_write
from .workloads import agent_specs, jobs_table, read_events, ring_ideal_ms, summarise, throughput_table

__all__ = ["WorkloadRunner", "ClusterWorkloads", "WORKLOAD_FILES", "write_workload_results", "terminate", "kill_all",
           "update_summary"]

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
        return write_workload_results(self.plan, self.workloads, self.log_dir, self.clock, out, self.failures())


def write_workload_results(plan, workloads, log_dir: Path, clock, out: Path, failures: list[str]) -> dict:
    """Analyse the agents' event logs in `log_dir` (instants on `clock`'s CLOCK_MONOTONIC); write
    jobs.csv, throughput.csv and summary.json's workload section into `out`; return the summary."""
    out = Path(out)
    events = read_events(sorted(Path(log_dir).glob("*.jsonl")))
    ideal = lambda w, t: ring_ideal_ms(plan.schedule, plan.routes, w, t)   # noqa: E731
    jobs = jobs_table(events, workloads, clock, ideal, power=getattr(plan, "power", None))
    atomic_write(out / "jobs.csv", lambda tmp: jobs.to_csv(tmp, index=False))
    tput = throughput_table(events, workloads, clock)
    atomic_write(out / "throughput.csv", lambda tmp: tput.to_csv(tmp, index=False))
    summary = {"workloads": summarise(jobs, workloads, clock),
               "workload_units": "t_s scenario seconds; *_ms emulated milliseconds; *_mbps emulated Mbit/s",
               "agent_failures": failures}
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


class ClusterWorkloads:
    """The workloads of `plan`'s scenario as agents on the hosts of a cluster run (a started
    emulate.cluster.ClusterEmulation): each agent runs on its node's host, its spec in that
    host's CLOCK_MONOTONIC instants (`host_clock`). At `stop` the agents' files come back to
    `log_dir`, their instants moved onto host 0's clock (`clock`), so one analysis serves all.

    Hosts on different machines share time only through the cluster's measured offsets: an
    instant logged on one host and compared with one logged on another (an upload's end, which
    the client logs in the server's clock) is as good as that offset bound."""

    def __init__(self, plan, log_dir: Path, workloads=None):
        self.plan, self.log_dir = plan, Path(log_dir)
        self.workloads = tuple(plan.scenario.workloads if workloads is None else workloads)
        self.em = None
        self.clock = None
        self.clocks: dict[str, object] = {}
        self.specs: dict[str, dict] = {}
        self.returncodes: dict[str, int | None] = {}
        self._collected = False

    def start(self, em) -> None:
        self.em = em
        self.clocks = {h: em.host_clock(h) for h in em.hosts}
        self.clock = self.clocks[em.hosts[0]]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for h in em.hosts:
            specs = agent_specs(self.workloads, self.clocks[h], em.loopback, Path("."), speed=self.clock.speed,
                                plan=self.plan)
            for node, spec in specs.items():
                if node not in em.host_of:
                    raise EmulationError(f"workload node {node!r} is not in the cluster run")
                if em.host_of[node] != h:
                    continue
                spec["log"] = "events.jsonl"
                self.specs[node] = spec
                (self.log_dir / f"{node}.spec.json").write_text(json.dumps(spec))
                em.spawn(node, f"agent-{node}", ["{python}", "-m", agent_program.__name__, "spec.json"],
                         {"spec.json": json.dumps(spec)})

    def stop(self) -> None:
        if self.em is None or self._collected:
            return
        self._collected = True
        got = self.em.reap()
        em = self.em
        ref = self.clock.origin_mono
        shift = {h: ref - c.origin_mono for h, c in self.clocks.items()}
        for node in self.specs:
            r = got.get(f"agent-{node}")
            if r is None:
                continue
            self.returncodes[node] = r["returncode"]
            (self.log_dir / f"{node}.stderr").write_text(r["files"].get("stderr", ""))
            lines = _moved_events(r["files"].get("events.jsonl", ""), shift[em.host_of[node]],
                                  self._peer_shifts(node, shift))
            atomic_write(self.log_dir / f"{node}.jsonl", lambda tmp: tmp.write_text(lines))

    def _peer_shifts(self, node: str, shift: dict) -> dict[str, float]:
        """Per workload: the shift of the host whose clock an upload's `t_received` is in (the
        server's), for the uploads this node sends."""
        out = {}
        for w in self.workloads:
            if w.kind in ("upload", "checkpoint") and node in w.clients:
                up = w.kind == "upload" or w.p("direction") == "up"
                if up:
                    out[w.name] = shift[self.em.host_of[w.server]]
        return out

    def kill(self) -> None:
        try:
            self.stop()
        except Exception:   # the run is failing already: the hosts remove their agents on close
            pass

    def failures(self) -> list[str]:
        bad = []
        for node, rc in self.returncodes.items():
            if rc not in (0, None, -signal.SIGTERM):
                err = (self.log_dir / f"{node}.stderr").read_text().strip().splitlines()[-3:]
                bad.append(f"agent in {node} (host {self.em.host_of[node]}) exited with {rc}: {' / '.join(err)}")
        return bad

    def write_results(self, out: Path) -> dict:
        self.stop()
        return write_workload_results(self.plan, self.workloads, self.log_dir, self.clock, out, self.failures())


# instants an agent logs on its own clock ("t_received" too, except an upload's: the server's)
_OWN_TIMES = ("t", "t_arrival", "due")


def _moved_events(text: str, own_s: float, upload_server_s: dict[str, float]) -> str:
    """An agent's JSON-lines log with its instants moved by `own_s` seconds (and an upload's
    `t_received` by its server's shift, per workload in `upload_server_s`). A truncated last
    line is dropped, as read_events would."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        for k in _OWN_TIMES:
            if isinstance(rec.get(k), (int, float)):
                rec[k] = round(rec[k] + own_s, 9)
        if isinstance(rec.get("t_received"), (int, float)):
            rec["t_received"] = round(rec["t_received"] + (upload_server_s.get(rec.get("wl"), own_s)
                                                           if rec.get("ev") == "done" else own_s), 9)
        out.append(json.dumps(rec, separators=(",", ":")))
    return "".join(s + "\n" for s in out)
