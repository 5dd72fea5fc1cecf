"""One host's part of an emulation spread over several hosts (kernel edge; root).

A `HostAgent` lives as long as the run on each emulation host (in a Dask worker there, as an
actor: see netemu.emulate.cluster) and owns everything kernel-side on that host, built with the
single-host code: its nodes' namespaces (Namespaces), addresses and routes over rtnetlink
(Forwarding), one link-engine shard set (EngineLinks) serving the host's own links and its ends
of the cut links (over the engines' UDP wire), and a Player that plays the host's links and
routes against the run's shared clock. It never runs a time-critical loop itself.

Time: the host's clock is `time.time()` (plus `clock_skew_s`, a test knob standing for an
unsynchronised clock). The coordinator measures each host's offset and gives it with the run's
shared instants (wire epoch, start); `local_mono(t_shared)` maps them to this host's
CLOCK_MONOTONIC.

Failure: a guard process (netemu.emulate.hostguard) holds a pipe from this process; if the worker
dies without closing the agent, the guard removes this host's namespaces (their TAPs and
processes with them). The agent also tears itself down when the coordinator's heartbeats stop
for `lease_s`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd

from ..errors import EmulationError, NetemuError
from .forwarding import Forwarding
from .links import EngineLinks, LinkEnd, link_params
from .netns import Namespaces
from .playback import link_states
from .player import Player
from .clock import Clock

__all__ = ["HostAgent", "WIRE_OVERHEAD_BYTES"]

# what the wire adds to a frame on the hosts' network: IPv4 + UDP headers and the wire's own
# header (engine.WIRE_HEADER); a cut link's MTU leaves room for it and for the frame's Ethernet header
WIRE_OVERHEAD_BYTES = 20 + 8 + 13 + 14
ENGINE_RT_PRIORITY = 5


class HostAgent:
    """One emulation host of a cluster run. Methods are called by the coordinator (through Dask),
    in this order: `build_nodes`, `build_links`, `start`, then `cmd`/`probe`/`results` while it
    runs, and `close` (also after a failure; safe to call twice)."""

    def __init__(self, host: str, wire_ip: str, clock_skew_s: float = 0.0, lease_s: float = 10.0,
                 engine_rt: bool = True):
        self.host, self.wire_ip, self.clock_skew_s, self.lease_s = host, wire_ip, float(clock_skew_s), float(lease_s)
        self.engine_rt = bool(engine_rt)
        self.ns: Namespaces | None = None
        self.links: EngineLinks | None = None
        self.forwarding: Forwarding | None = None
        self.player: Player | None = None
        self.load = None                      # the link-load sampler (emulate.linkload), from start
        self.node_names: list[str] = []
        self.loopbacks: dict[str, str] = {}
        self.offset_s = 0.0                   # this host's clock minus the coordinator's (as corrected)
        self.wall_minus_mono = 0.0
        self.wire_epoch_shared = 0.0
        self.timings_s: dict[str, float] = {}
        self._spec: dict = {}
        self._guard: subprocess.Popen | None = None
        self._servers: list[subprocess.Popen] = []
        self._spawned: dict[str, tuple[subprocess.Popen, str]] = {}     # tag -> (process, its work dir)
        self._work_dir: str | None = None
        self._last_beat = time.monotonic()
        self._closed = False
        self._lock = threading.Lock()
        self._watchdog = threading.Thread(target=self._watch, name="netemu-host-lease", daemon=True)
        self._watchdog.start()

    # ------------------------------------------------------------------ time

    async def now(self) -> float:
        """This host's clock (s since the Unix epoch); async: answered on the worker's event
        loop, not behind a long command."""
        return time.time() + self.clock_skew_s

    async def heartbeat(self) -> dict:
        """The coordinator's lease: keeps this host's run alive; returns its state."""
        self._last_beat = time.monotonic()
        p = self.player
        err = ""
        if p is not None and p.finished() and p._error is not None:
            err = f"the player failed: {p._error}"
        # the acknowledgement of the schedule so far: the steps this host has applied, and the
        # latest one's lag after its instant (the full log comes with results())
        log = p.log if p is not None else []
        return {"host": self.host, "closed": self._closed, "finished": bool(p is not None and p.finished()),
                "error": err, "applied_steps": len(log), "last_step": int(log[-1][0]) if log else None,
                "last_lag_ms": float(log[-1][4]) if log else None}

    def set_time_base(self, offset_s: float, wire_epoch_shared: float) -> None:
        """This host's clock minus the coordinator's (`offset_s`; 0: trust the clocks), and the
        shared instant cut-link departure instants count from (given to the engines when they
        start, in build_nodes)."""
        self.offset_s = float(offset_s)
        self.wall_minus_mono = time.time() + self.clock_skew_s - time.monotonic()
        self.wire_epoch_shared = float(wire_epoch_shared)

    def local_mono(self, t_shared: float) -> float:
        """This host's CLOCK_MONOTONIC instant of shared (coordinator) time `t_shared`."""
        return t_shared + self.offset_s - self.wall_minus_mono

    def shared(self, mono: float) -> float:
        return mono + self.wall_minus_mono - self.offset_s

    # ------------------------------------------------------------------ build

    def build_nodes(self, spec: dict) -> dict:
        """Phase 1: namespaces of this host's nodes, the link engine and its wire. `spec`: run_id,
        nodes (this host's), loopbacks (every node's), link_table (the whole run's, so interface
        MACs agree across hosts), endpoints, mtu, shards. Returns the wire's ports by shard."""
        t0 = time.perf_counter()
        self._spec = spec
        self.node_names = list(spec["nodes"])
        self.loopbacks = dict(spec["loopbacks"])
        self.ns = Namespaces(spec["run_id"])
        self._start_guard()
        fw = self.forwarding = Forwarding(self.ns, self.node_names, self.loopbacks, spec["link_table"],
                                          tuple(spec["endpoints"]), spec["mtu"])
        self.ns.add_routers(list(self.node_names), fw.open)
        self._guard_names([self.ns.path(n) for n in self.node_names])
        self.links = EngineLinks(shards=spec.get("shards", 1), run_id=spec["run_id"], seed=spec.get("seed", 0),
                                 mtu=spec["mtu"], busy_poll=False)
        self.links.wire_counters = True
        for pid in self.links.pids if self.engine_rt else ():
            # The engines time every frame: they run ahead of the worker's own Python (its
            # heartbeats and monitors wake every few hundred ms for a millisecond or two, which
            # a sleeping engine waking behind them would add to a frame's delay). Real-time, below
            # the player's step thread; the kernel's RT throttling still bounds them. Not where
            # several hosts share a machine's CPUs under traffic (`engine_rt` False): there the
            # engines' spinning before departures would starve the other hosts' agents and stacks.
            try:
                os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(ENGINE_RT_PRIORITY))
            except (OSError, AttributeError):
                try:
                    os.setpriority(os.PRIO_PROCESS, pid, -10)
                except OSError:
                    pass
        ports = self.links.open_wire(self.wire_ip)
        self.links.set_wire_epoch(self.local_mono(self.wire_epoch_shared))
        self.timings_s["build_nodes"] = time.perf_counter() - t0
        return {"host": self.host, "ports": ports, "pid": os.getpid()}

    def calibrate(self, overhead_us: tuple[float, float] | None = None, probes: int = 100) -> dict:
        """Take the engine's per-traversal overhead off every delay: the given (hop, process) µs,
        or measured here on a throw-away chain (EngineLinks.calibrate)."""
        from .calibration import check_calibration
        t0 = time.perf_counter()
        if overhead_us is None:
            # throw-away namespaces of a run id of their own: hosts sharing a machine (tests) do
            # not collide, and `netemu clean` removes them should this host die meanwhile
            from .netns import new_run_id
            saved, self.links.run_id = self.links.run_id, new_run_id()
            try:
                c = self.links.calibrate(probes=probes, refine=1)
            finally:
                self.links.run_id = saved
        else:
            self.links.set_overhead(*overhead_us)
            c = {"hop_overhead_us": overhead_us[0], "process_overhead_us": overhead_us[1]}
        check_calibration(self.links.hop_overhead_us, self.links.process_overhead_us)
        self.timings_s["calibration"] = time.perf_counter() - t0
        return c

    def build_links(self, spec: dict) -> dict:
        """Phase 2: this host's links and its ends of the cut links (`spec["cut"]`: rows of link,
        wire_id, side, peer ip, peer ports), addresses, next hops and the window's first routes.
        Link states and next hops come with the spec: the whole window's schedule is here before
        the run starts (`spec`: schedule, window, next_hops, dilation, speed, underlay_mtu)."""
        t0 = time.perf_counter()
        sched, w = spec["schedule"], spec["window"]
        table: pd.DataFrame = self._spec["link_table"]
        mine = set(self.node_names)
        a_in, b_in = table["a"].isin(mine).to_numpy(), table["b"].isin(mine).to_numpy()
        served = table[a_in | b_in]
        self.states = link_states(sched, served["a"].to_numpy(), served["b"].to_numpy(), w)
        cut = {r["link"]: r for r in spec["cut"]}
        K = spec["dilation"]
        cut_mtu = min(self._spec["mtu"], spec["underlay_mtu"] - WIRE_OVERHEAD_BYTES)
        for i, r in enumerate(served.itertuples(index=False)):
            p = link_params(self.states, 0, i, K)
            if r.link in cut:
                c = cut[r.link]
                node, ifname = (r.a, r.a_ifname) if c["side"] == "a" else (r.b, r.b_ifname)
                port = c["peer_ports"][c["wire_id"] % len(c["peer_ports"])]
                self.links.add_cut_link(r.link, c["wire_id"], c["side"], LinkEnd(self.ns.path(node), ifname),
                                        (c["peer_ip"], port), p)
            else:
                self.links.add_link(r.link, LinkEnd(self.ns.path(r.a), r.a_ifname), LinkEnd(self.ns.path(r.b), r.b_ifname), p)
        fw = self.forwarding
        fw.configure_interfaces()
        # cut links carry the wire's header on the hosts' network: their MTU leaves room for it
        self.cut_mtu = cut_mtu
        if cut_mtu < self._spec["mtu"]:
            for r in served.itertuples(index=False):
                if r.link in cut:
                    node, ifname = (r.a, r.a_ifname) if cut[r.link]["side"] == "a" else (r.b, r.b_ifname)
                    nl = fw._rtnl[node]
                    nl.link_up(fw._ifindex[node][ifname], mtu=cut_mtu)
                    nl.commit()
        fw.prepare(sched, None, w, spec["next_hops"])
        n_routes = fw.apply(w.k0)
        self.clock = Clock(w.t0_s, w.t_end_s, speed=spec["speed"], dilation=K)
        self.player = Player(self.clock, w, sched.t_s, self.links, fw, self.states, served["link"].to_numpy(), engine=True)
        self.timings_s["build_links"] = time.perf_counter() - t0
        return {"host": self.host, "links": int(len(served)), "cut_links": len(cut), "routes": int(n_routes),
                "cut_mtu": cut_mtu}

    # ------------------------------------------------------------------ run

    def start(self, origin_shared: float) -> dict:
        """Play from shared instant `origin_shared`. Returns the local monotonic instant used
        and how long before it the message came."""
        origin = self.local_mono(origin_shared)
        self.player.start(origin_mono=origin)
        if hasattr(self.links, "sample"):
            # every 100 ms of emulated time from the shared origin: the hosts sample their halves
            # of a cut link at the same instants (ClusterEmulation.link_load joins them)
            from .linkload import LoadSampler
            self.load = LoadSampler(self.links, scale=self.player.clock.scale, origin_mono=origin).start()
        return {"host": self.host, "origin_mono": origin, "lead_s": origin - time.monotonic()}

    def cmd(self, node: str, command: str, timeout_s: float = 30.0) -> str:
        """Run `command` (a shell line) in node `node`; its output (stdout and stderr)."""
        if node not in self.node_names:
            raise EmulationError(f"node {node!r} is not on host {self.host}")
        r = subprocess.run(["nsenter", f"--net={self.ns.path(node)}", "sh", "-c", command], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        return r.stdout

    def probe(self, node: str, dst: str, count: int, interval_s: float) -> dict:
        """ICMP echo RTTs (ms; None where lost) from node `node` to address `dst`, with the
        emulated send time of each echo (s). The echoes come from a probe process of their own
        in the node (netemu.emulate.probe stream), away from this worker's threads."""
        if node not in self.node_names:
            raise EmulationError(f"node {node!r} is not on host {self.host}")
        import tempfile
        with tempfile.TemporaryDirectory(prefix="netemu-probe") as tmp:
            out = os.path.join(tmp, "probe.csv")
            r = subprocess.run(["nsenter", f"--net={self.ns.path(node)}", sys.executable, "-m", "netemu.emulate.probe",
                                "stream", dst, "--interval", str(interval_s), "--out", out,
                                "--max-s", str(count * interval_s - interval_s / 2)],
                               capture_output=True, text=True, timeout=count * interval_s + 30)
            if r.returncode != 0 or not os.path.exists(out):
                raise EmulationError(f"probe from {node} on host {self.host} failed: {r.stderr.strip()[-500:]}")
            df = pd.read_csv(out)
        clock = self.player.clock if self.player is not None else self.clock
        t_s = [clock.t_s(t) if clock.started else np.nan for t in df["t_send_mono_s"]]
        return {"rtt_ms": [None if np.isnan(x) else float(x) for x in df["rtt_ms"]], "t_s": t_s}

    def stalls(self) -> pd.DataFrame:
        """This host's link-engine stalls so far (EngineLinks.stalls) in schedule time: host,
        t_start_s, t_end_s, duration_ms, links."""
        cols = ["host", "t_start_s", "t_end_s", "duration_ms", "links"]
        if self.links is None or self.player is None or not self.player.clock.started:
            return pd.DataFrame(columns=cols)
        st = self.links.stalls()
        a = self.player.clock.t_s(st["start_mono"].to_numpy(float))
        b = self.player.clock.t_s(st["end_mono"].to_numpy(float))
        return pd.DataFrame({"host": self.host, "t_start_s": a, "t_end_s": b, "duration_ms": (b - a) * 1e3,
                             "links": st["links"].to_numpy()})[cols]

    def serve(self, node: str, port: int, max_s: float) -> int:
        """Start a UDP probe server (netemu.emulate.probe server) in node `node` for `max_s`;
        returns its pid (it ends by itself, or with the run)."""
        if node not in self.node_names:
            raise EmulationError(f"node {node!r} is not on host {self.host}")
        p = subprocess.Popen(["nsenter", f"--net={self.ns.path(node)}", sys.executable, "-m", "netemu.emulate.probe",
                              "server", "--port", str(port), "--max-s", str(max_s)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._servers.append(p)
        return p.pid

    def udp_probe(self, node: str, dst: str, port: int, count: int, interval_s: float) -> dict:
        """UDP probes from node `node` to a probe server at `dst`:`port`: per probe the emulated
        send time (s), RTT and the one-way delays there and back (ms, from CLOCK_MONOTONIC at
        both ends: exact only where both ends share one, i.e. hosts on one machine)."""
        if node not in self.node_names:
            raise EmulationError(f"node {node!r} is not on host {self.host}")
        r = subprocess.run(["nsenter", f"--net={self.ns.path(node)}", sys.executable, "-m", "netemu.emulate.probe",
                            "client", dst, "--port", str(port), "--count", str(count), "--interval", str(interval_s)],
                           capture_output=True, text=True, timeout=count * interval_s + 30)
        if r.returncode != 0:
            raise EmulationError(f"probe from {node} on host {self.host} failed: {r.stderr.strip()[-500:]}")
        import io
        df = pd.read_csv(io.StringIO(r.stdout))
        clock = self.player.clock if self.player is not None else self.clock
        df["t_s"] = [clock.t_s(t) if clock.started else np.nan for t in df["t_send_s"]]
        return {c: df[c].tolist() for c in ("t_s", "rtt_ms", "fwd_ms", "rev_ms")}

    def spawn(self, tag: str, node: str, argv: list[str], files: dict[str, str]) -> int:
        """Start `argv` in node `node` (never through a shell) in a work directory of its own
        on this host, holding `files` (name -> text) first; "{python}" in `argv` stands for this
        host's Python. Its stdout and stderr go to files there; `reap` returns them all. Returns
        its pid. This is how the coordinator runs workload agents on any host."""
        if node not in self.node_names:
            raise EmulationError(f"node {node!r} is not on host {self.host}")
        if tag in self._spawned or not tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise EmulationError(f"spawn: tag {tag!r} is used already or not a plain name")
        import tempfile
        if self._work_dir is None:
            self._work_dir = tempfile.mkdtemp(prefix=f"netemu-{self._spec['run_id']}-{self.host}-")
        d = os.path.join(self._work_dir, tag)
        os.mkdir(d)
        for name, text in files.items():
            if os.path.basename(name) != name:
                raise EmulationError(f"spawn: file name {name!r} must be a plain name")
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        argv = [sys.executable if a == "{python}" else a for a in argv]
        with open(os.path.join(d, "stdout"), "w") as out, open(os.path.join(d, "stderr"), "w") as err:
            p = subprocess.Popen(["nsenter", f"--net={self.ns.path(node)}", *argv], cwd=d, stdout=out, stderr=err)
        self._spawned[tag] = (p, d)
        return p.pid

    def reap(self, timeout_s: float = 10.0, terminate: bool = True) -> dict[str, dict]:
        """End what `spawn` started (SIGTERM when `terminate`, SIGKILL after `timeout_s`) and
        return, per tag: returncode and every file of its work directory (name -> text)."""
        import signal
        procs = [p for p, _ in self._spawned.values()]
        for p in procs:
            if terminate and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out = {}
        for tag, (p, d) in self._spawned.items():
            files = {}
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), errors="replace") as f:
                    files[name] = f.read()
            out[tag] = {"returncode": p.returncode, "files": files}
        return out

    def wait(self, timeout_s: float) -> bool:
        return self.player.wait(timeout_s)

    def results(self) -> dict:
        """Counters (per link and direction), the apply log (applied instants in shared time),
        engine status and timings."""
        log = self.player.apply_log() if self.player is not None else pd.DataFrame()
        if len(log) and self.player.origin is not None:
            origin_shared = self.shared(self.player.origin)
            log["applied_shared_s"] = origin_shared + log["applied_s"]
            log["due_shared_s"] = origin_shared + log["due_s"]
        log.insert(0, "host", self.host)
        counters = self.links.counters() if self.links is not None else pd.DataFrame()
        counters.insert(0, "host", self.host)
        return {"host": self.host, "apply": log, "counters": counters, "engines": self.links.status(),
                "timings_s": dict(self.timings_s), "offset_s": self.offset_s}

    def link_load(self) -> dict:
        """This host's links' load over the run (emulate.linkload; its sampling ends here, with
        a last sample): `table` (link_load rows with `host`) and `stats`."""
        if self.load is None or self.player is None:
            return {"table": pd.DataFrame(), "stats": {}}
        self.load.stop()
        served = self._spec["link_table"]
        mine = set(self.node_names)
        served = served[served["a"].isin(mine) | served["b"].isin(mine)]["link"]
        return {"table": self.load.table(self.player.clock, links=served).assign(host=self.host),
                "stats": self.load.stats()}

    # ------------------------------------------------------------------ teardown

    def close(self) -> dict:
        """Remove everything of the run on this host: player, engines, namespaces (their TAPs,
        routes and processes). Safe to call twice."""
        with self._lock:
            if self._closed:
                return {"host": self.host, "closed": True}
            self._closed = True
        t = time.perf_counter()
        if self.player is not None:
            self.player.stop()
        if self.load is not None:
            self.load.stop()
        for p in self._servers + [p for p, _ in self._spawned.values()]:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self._work_dir is not None:
            import shutil
            shutil.rmtree(self._work_dir, ignore_errors=True)
        if self.forwarding is not None:
            self.forwarding.close()
        if self.links is not None:
            try:
                self.links.stop()
            except NetemuError:
                pass
        if self.ns is not None:
            from .netns import _kill_processes_in, _ns_id
            _kill_processes_in({_ns_id(self.ns.path(n)) for n in self.ns.names} - {None})
            self.ns.delete_all()
        self._stop_guard()
        return {"host": self.host, "closed": True, "teardown_s": time.perf_counter() - t}

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(0.5)
            if self.ns is not None and time.monotonic() - self._last_beat > self.lease_s:
                self.close()     # the coordinator is gone: leave nothing behind

    # the guard: removes this host's namespaces if this process dies without closing
    def _start_guard(self) -> None:
        self._guard = subprocess.Popen([sys.executable, "-m", "netemu.emulate.hostguard"], stdin=subprocess.PIPE,
                                       text=True, start_new_session=True)

    def _guard_names(self, paths: list[str]) -> None:
        if self._guard is not None:
            self._guard.stdin.write("".join(p + "\n" for p in paths))
            self._guard.stdin.flush()

    def _stop_guard(self) -> None:
        g, self._guard = self._guard, None
        if g is not None:
            try:
                g.stdin.write("done\n")
                g.stdin.close()
            except OSError:
                pass
            try:
                g.wait(5)
            except subprocess.TimeoutExpired:
                g.kill()
