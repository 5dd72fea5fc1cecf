"""Several emulation "hosts" on one machine, for tests and benchmarks (kernel edge; root).

Each host is a network namespace with its own stack, joined to the others by an underlay (a
veth from each into a bridge that lives in a namespace of its own), running a `dask worker`
(root, no nanny: a killed worker stays dead); the Dask scheduler runs in another namespace. The
coordinator (this process) reaches the underlay through one veth from the root namespace.

    with NamespaceHosts(3) as lab:
        em = ClusterEmulation(plan, lab.scheduler, ...)

Everything is named `nxh<id>…` and removed by `close()` (also after a failure): the processes
this object started (by their pids) and the namespaces and veths it made.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ..errors import EmulationError

__all__ = ["NamespaceHosts"]

SCHEDULER_PORT = 8786


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise EmulationError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r


def _free_subnet() -> str:
    used = _ip("-o", "-4", "addr", "show", check=False).stdout + _ip("-4", "route", check=False).stdout
    for x in range(200, 250):
        if f"10.{x}." not in used:
            return f"10.{x}.0"
    raise EmulationError("no free 10.x.0.0/24 subnet for the test underlay")


class NamespaceHosts:
    """`n` hosts h0…h{n-1} at {net}.1…, the scheduler at {net}.100, the coordinator at {net}.254."""

    def __init__(self, n: int = 3, mtu: int = 1500, start_timeout_s: float = 60.0):
        if os.geteuid() != 0:
            raise EmulationError("namespace hosts need root")
        self.id = secrets.token_hex(2)
        self.prefix = f"nxh{self.id}"
        self.n, self.mtu = n, mtu
        self.net = _free_subnet()
        self.names = [f"h{i}" for i in range(n)]
        self.ip = {h: f"{self.net}.{i + 1}" for i, h in enumerate(self.names)}
        self.ip["s"] = f"{self.net}.100"
        self.scheduler = f"tcp://{self.ip['s']}:{SCHEDULER_PORT}"
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.tmp = tempfile.mkdtemp(prefix=self.prefix)
        self._root_dev = f"{self.prefix}c"
        try:
            self._underlay()
            self._start_processes(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _underlay(self) -> None:
        br = self.ns("br")
        _ip("netns", "add", br)
        self.namespaces.append(br)
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        _ip("-n", br, "link", "set", "lo", "up")
        for name in [*self.names, "s"]:
            ns = self.ns(name)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            dev = f"{self.prefix}{name}"
            _ip("link", "add", dev, "netns", ns, "mtu", str(self.mtu), "type", "veth", "peer", "name", dev + "b",
                "netns", br, "mtu", str(self.mtu))
            _ip("-n", br, "link", "set", dev + "b", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.ip[name]}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", self._root_dev, "mtu", str(self.mtu), "type", "veth", "peer", "name", self._root_dev + "b",
            "netns", br, "mtu", str(self.mtu))
        _ip("-n", br, "link", "set", self._root_dev + "b", "master", "br0", "up")
        _ip("addr", "add", f"{self.net}.254/24", "dev", self._root_dev)
        _ip("link", "set", self._root_dev, "up")

    def _env(self) -> dict:
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        self.procs[name] = subprocess.Popen(["ip", "netns", "exec", self.ns(name), sys.executable, "-m", *args],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self._env(), start_new_session=True, cwd=self.tmp)
        log.close()

    def start_worker(self, name: str) -> None:
        self._spawn(name, ["distributed.cli.dask_worker", self.scheduler, "--name", name, "--host", self.ip[name],
                           "--nthreads", "1", "--no-nanny", "--memory-limit", "0", "--no-dashboard",
                           "--death-timeout", "30", "--local-directory", os.path.join(self.tmp, name)])

    def _start_processes(self, timeout_s: float) -> None:
        self._spawn("s", ["distributed.cli.dask_scheduler", "--host", self.ip["s"], "--port", str(SCHEDULER_PORT),
                          "--no-dashboard"])
        for h in self.names:
            self.start_worker(h)
        self.wait_for_workers(self.names, timeout_s)

    def wait_for_workers(self, names: list[str], timeout_s: float = 60.0) -> None:
        from distributed import Client
        from .cluster import workers_by_name
        end = time.monotonic() + timeout_s
        client = None
        try:
            while time.monotonic() < end:
                for name, p in self.procs.items():
                    if p.poll() is not None:
                        raise EmulationError(f"{name} exited ({p.returncode}): {self.log(name)[-2000:]}")
                try:
                    client = client or Client(self.scheduler, timeout=5, set_as_default=False)
                    got = set(workers_by_name(client))
                    if set(names) <= got:
                        return
                except (OSError, TimeoutError):
                    pass
                time.sleep(0.3)
            raise EmulationError(f"workers {names} did not join the scheduler within {timeout_s:g} s")
        finally:
            if client is not None:
                client.close()

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.tmp, f"{name}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def exited(self) -> dict[str, str]:
        """The lab's processes that have exited: name → their exit code and the end of their log
        (what a lost host said before it went)."""
        return {name: f"exit {p.returncode}: {self.log(name)[-3000:]}"
                for name, p in self.procs.items() if p.poll() is not None}

    def kill_worker(self, name: str) -> int:
        """SIGKILL host `name`'s worker process (a host lost mid-run); returns its pid."""
        p = self.procs[name]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        return p.pid

    def close(self) -> None:
        # (killed outright: a worker's graceful shutdown takes seconds, and an agent still
        # holding a run leaves it to that run's guard, as for any lost host)
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
        for name, p in list(self.procs.items()):
            p.wait(10)
        self.procs.clear()
        _ip("link", "del", self._root_dev, check=False)
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "NamespaceHosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
