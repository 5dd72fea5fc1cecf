"""The scenario's own programs (`[[apps]]`, netemu.plan.apps) in a live network: each started in
its node at its `start_s` and stopped at its `stop_s` (emulated time, on the run's one Clock),
its output and exit status kept in the run directory. A traffic source (emulate.live.TrafficSource).

Files: `apps/NODE-NAME.out` and `.err` (the program's stdout and stderr) and `apps.csv`: app,
node, command (as run, placeholders substituted), status (exited: ended by itself; stopped:
ended at its stop_s or the run's end; killed: did not end within STOP_GRACE_S of SIGTERM; failed
to start; not started: outside the run's window, or a group's node left out of the run by its scope), exit_code (negative: the signal that ended
it), start_s and end_s (scenario s; the end is seen within POLL_S wall seconds), stdout, stderr.
Each app leads its own process group: SIGTERM and SIGKILL reach what it started too, and what is
left of a group when the run ends (a forked daemon) is killed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd

from ..emulate.live import Live
from ..errors import EmulationError
from ..plan.apps import App, expand_command
from ..plan.files import atomic_write

__all__ = ["Apps", "APPS_DIR", "APP_COLUMNS", "STOP_GRACE_S"]

APPS_DIR = "apps"
STOP_GRACE_S = 2.0     # wall seconds between SIGTERM and SIGKILL
POLL_S = 0.02          # wall seconds between looks at the running programs
APP_COLUMNS = ["app", "node", "command", "status", "exit_code", "start_s", "end_s", "stdout", "stderr"]


@dataclass
class _Instance:
    """One app in one node."""

    app: App
    node: str
    argv: list[str]
    start_s: float
    stop_s: float
    proc: object = None
    files: list[IO] = field(default_factory=list)
    started_s: float | None = None
    ended_s: float | None = None
    status: str = "pending"
    term_mono: float | None = None

    @property
    def stem(self) -> str:
        return f"{self.node}-{self.app.name}"


def _signal(p, sig: int) -> None:
    """Signal a program and what it started: each app leads its own process group (its own
    session), so a command that forks (a daemon, a pipeline under `sh -c`) stops whole."""
    if isinstance(p, subprocess.Popen):
        try:
            os.killpg(p.pid, sig)
            return
        except ProcessLookupError:
            return
        except PermissionError:
            pass
    p.send_signal(sig)


class Apps:
    """The scenario's apps in a run: `start(live)` once the clock runs (a thread starts and stops
    them at their instants), `stop()` at the window's end, `write_results(out)`."""

    def __init__(self, apps: tuple[App, ...], out_dir: Path):
        self.apps = tuple(apps)
        self.out = Path(out_dir)
        self.instances: list[_Instance] = []
        self.live: Live | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._errors: list[str] = []

    def check(self, node_names) -> None:
        """Every app's node is in the run's network (a scope may leave satellites out)."""
        have = set(node_names)
        for a in self.apps:
            missing = [n for n in a.nodes if n not in have]
            if missing and (a.group is None or len(missing) == len(a.nodes)):
                raise EmulationError(f"app {a.name}: node {missing[0]} is not in this run's network (the run "
                                     f"instantiates only the satellites on endpoint paths; --scope all has them all)")

    def start(self, live: Live) -> None:
        self.live = live
        c = live.clock
        have = set(live.node_names)
        (self.out / APPS_DIR).mkdir(parents=True, exist_ok=True)
        for a in self.apps:
            for node in a.nodes:
                stop = c.t_end_s if a.stop_s is None else min(a.stop_s, c.t_end_s)
                if node not in have:      # a group's satellite left out by the scope
                    self.instances.append(_Instance(a, node, list(a.command), a.start_s, stop,
                                                    status="not started: not in this run's network (scope)"))
                    continue
                argv = expand_command(a.command, node, live.loopback)
                inst = _Instance(a, node, argv, a.start_s, stop)
                if not (c.t0_s <= a.start_s < c.t_end_s):
                    inst.status = "not started: outside the run's window"
                self.instances.append(inst)
        self._thread = threading.Thread(target=self._loop, name="netemu-apps", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the timed loop

    def _loop(self) -> None:
        c = self.live.clock
        todo = sorted((i for i in self.instances if i.status == "pending"), key=lambda i: i.start_s)
        while not self._halt.is_set():
            now = time.monotonic()
            with self._lock:
                while todo and c.mono(todo[0].start_s) <= now:
                    self._launch(todo.pop(0))
                for inst in self.instances:
                    if inst.status == "running":
                        self._watch(inst, now)
            waits = [c.mono(todo[0].start_s) - now] if todo else []
            self._halt.wait(max(0.0, min([POLL_S, *waits])))

    def _launch(self, inst: _Instance) -> None:
        c = self.live.clock
        d = self.out / APPS_DIR
        if shutil.which(inst.argv[0]) is None:    # nodes share this machine's file system
            inst.status = f"failed to start: no program {inst.argv[0]!r} (not on PATH, or not executable)"
            self._errors.append(f"app {inst.app.name} in {inst.node}: {inst.status}")
            return
        try:
            out = open(d / f"{inst.stem}.out", "wb")
            err = open(d / f"{inst.stem}.err", "wb")
            inst.files = [out, err]
            inst.started_s = float(c.t_s(time.monotonic()))
            inst.proc = self.live.popen(inst.node, inst.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True)
            inst.status = "running"
        except (OSError, EmulationError) as e:
            inst.status = f"failed to start: {e}"
            self._errors.append(f"app {inst.app.name} in {inst.node} could not start: {e}")
            self._close(inst)

    def _watch(self, inst: _Instance, now: float) -> None:
        c = self.live.clock
        p = inst.proc
        if p.poll() is not None:
            inst.ended_s = float(c.t_s(now))
            inst.status = "exited" if inst.term_mono is None else "stopped"
            self._close(inst)
        elif inst.term_mono is None and now >= c.mono(inst.stop_s):
            _signal(p, signal.SIGTERM)
            inst.term_mono = now
        elif inst.term_mono is not None and now - inst.term_mono > STOP_GRACE_S:
            _signal(p, signal.SIGKILL)
            p.wait()
            inst.ended_s = float(c.t_s(time.monotonic()))
            inst.status = "killed"
            self._close(inst)

    @staticmethod
    def _close(inst: _Instance) -> None:
        for f in inst.files:
            f.close()
        inst.files = []

    # ------------------------------------------------------------------ the traffic-source protocol

    def stop(self) -> None:
        """Stop the timing thread; programs still running get SIGTERM, then SIGKILL after
        STOP_GRACE_S; programs not yet started never start."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
        c = self.live.clock if self.live else None
        with self._lock:
            running = [i for i in self.instances if i.status == "running"]
            for inst in running:
                if inst.proc.poll() is None and inst.term_mono is None:
                    _signal(inst.proc, signal.SIGTERM)
                    inst.term_mono = time.monotonic()
            deadline = time.monotonic() + STOP_GRACE_S
            for inst in running:
                try:
                    inst.proc.wait(max(0.0, deadline - time.monotonic()))
                    inst.status = "exited" if inst.term_mono is None else "stopped"
                except subprocess.TimeoutExpired:
                    _signal(inst.proc, signal.SIGKILL)
                    inst.proc.wait()
                    inst.status = "killed"
                inst.ended_s = float(c.t_s(time.monotonic()))
                self._close(inst)
            for inst in self.instances:
                if inst.status == "pending":
                    inst.status = "not started: the run ended first"
            self._reap_groups()

    def _reap_groups(self) -> None:
        """SIGKILL what the apps left behind in their process groups (a forked daemon outlives
        its starter; the group's id cannot be reused while a member lives, so this reaches
        only the app's own processes)."""
        for inst in self.instances:
            if isinstance(inst.proc, subprocess.Popen):
                try:
                    os.killpg(inst.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def kill(self) -> None:
        self._halt.set()
        with self._lock:
            for inst in self.instances:
                p = inst.proc
                if p is not None and p.poll() is None:
                    _signal(p, signal.SIGKILL)
                    p.wait()
                self._close(inst)
            self._reap_groups()

    def failures(self) -> list[str]:
        """Warnings for run.json: apps that could not start."""
        return list(self._errors)

    def table(self) -> pd.DataFrame:
        rows = []
        for i in self.instances:
            code = i.proc.returncode if i.proc is not None else None
            ran = i.proc is not None
            rows.append((i.app.name, i.node, shlex.join(i.argv), i.status, code, i.started_s, i.ended_s,
                         f"{APPS_DIR}/{i.stem}.out" if ran else "", f"{APPS_DIR}/{i.stem}.err" if ran else ""))
        return pd.DataFrame(rows, columns=APP_COLUMNS).astype({"exit_code": "Int64"})

    def write_results(self, out: Path) -> dict:
        """`apps.csv` (see the module's docstring); returns {app: {instances, exited, exit_codes}}."""
        t = self.table()
        atomic_write(Path(out) / "apps.csv", lambda tmp: t.to_csv(tmp, index=False))
        return {name: {"instances": len(g), "statuses": g["status"].value_counts().to_dict(),
                       "exit_codes": sorted({int(x) for x in g["exit_code"].dropna()})}
                for name, g in t.groupby("app", sort=False)}
