"""The emulated constellation (kernel edge; root): a Mininet network of router namespaces joined
by emulated links, with static routes from the plan, played against the clock.

    with netemu.emulate(plan, duration_s=60) as em:
        em.start()                                   # the player: links, handovers, routes
        print(em["g-beijing"].cmd("ping -c 3", em.loopback("c-odc-00")))
        em.wait()

Build (fast enough for thousands of nodes): namespaces are made from this process (unshare +
bind mount) and configured over batched rtnetlink; links come from the link engine (TAPs created
in place) or the kernel backend; each node gets a /32 loopback, each link a /31 with fixed MACs
and permanent neighbour entries (no ARP on emulated links); routes toward every endpoint's
loopback follow the planner's next hops, with the node's loopback as source address. Endpoints
are Mininet nodes with a shell; relay satellites get their shell at their first command.

Time: emulated schedule time t_s runs from the window's start; one emulated second lasts
`dilation / speed` wall seconds. Time dilation K multiplies delays and divides rates by K, so
links faster than this machine are emulated faithfully; `speed` < 1 slows only the motion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import pandas as pd

from ..errors import EmulationError, NetemuError
from .addressing import address_plan, address_table
from .calibration import Pilot, calibrate_in_place
from .clock import Clock
from .forwarding import Forwarding
from .inject import ControlServer, Injector, socket_path
from .links import (EngineLinks, KernelLinks, LinkBackend, LinkEnd, engine_cpu_policy, link_params,
                    veth_reference_rtt_ms)
from .linkload import LoadSampler
from .live import LiveNetwork
from .netns import Namespaces, running_as_root
from .nodes import mininet_view
from .playback import LinkStates, Window, link_states, scope_nodes, window
from .player import Player, choose_dilation

__all__ = ["Emulation", "emulate"]


class Emulation:
    """A live emulated network of a plan's window. Use `emulate()` (a context manager).

    Composed of named parts, each built by `build()`: the namespaces (`ns`), the link backend
    (`links`), the forwarding (`forwarding`: addresses, next hops, route steps), the calibration
    and its pilot (`calibration`, `pilot`), the Mininet view (`net`) and the `player`."""

    def __init__(self, plan, *, links: str = "engine", scope: str = "auto", speed: float = 1.0,
                 dilation: float | str = 1.0, start_s: float = 0.0, duration_s: float | None = None,
                 shards: int | None = None, busy_poll: bool | None = None, seed: int = 0, calibrate: bool = True,
                 mtu: int = 1500, probe_frames_per_s: float = 0.0,
                 progress: Callable[[str], None] | None = None):
        if not running_as_root():
            raise EmulationError("emulation needs root (namespaces, TAP devices, routes); run with sudo")
        if links not in ("engine", "kernel"):
            raise EmulationError(f"links: expected engine or kernel, found {links!r}")
        self.auto_dilation = dilation == "auto"    # chosen in build(), from the window's work
        if self.auto_dilation:
            dilation = 1.0
        if not (isinstance(speed, (int, float)) and isinstance(dilation, (int, float)) and speed > 0 and dilation >= 1):
            raise EmulationError(f"expected speed > 0 and dilation ≥ 1 (or \"auto\"), found speed={speed!r}, "
                                 f"dilation={dilation!r}")
        if shutil.which("mnexec") is None:
            raise EmulationError("mnexec is missing (Debian package `mininet`); run `netemu doctor`")
        self.plan, self.schedule = plan, plan.schedule
        self.endpoints = tuple(plan.scenario.endpoints)
        self.backend_name, self.scope = links, scope
        self.window: Window = window(self.schedule.t_s, start_s, duration_s)
        self.clock = Clock(self.window.t0_s, self.window.t_end_s, speed=float(speed), dilation=float(dilation))
        self.busy_poll, self.shards = engine_cpu_policy(shards, busy_poll)
        self.seed, self.do_calibrate, self.mtu = seed, calibrate, mtu
        self.probe_frames_per_s = probe_frames_per_s   # the caller's probe traffic, for dilation "auto"
        self.say = progress or (lambda msg: None)
        self.ns = Namespaces()
        self.ns.meta["scenario"] = plan.scenario.name   # for `netemu ps` (registered at build)
        self.run_id = self.ns.run_id
        self.node_names: list[str] = []
        self.loopbacks: dict[str, str] = {}
        self.link_table = pd.DataFrame()
        self.states: LinkStates | None = None
        self.links: LinkBackend | None = None
        self.forwarding: Forwarding | None = None
        self.calibration: dict = {}
        self.pilot: Pilot | None = None
        self.net = None
        self.routers: list = []
        self.player: Player | None = None
        self.dilation_choice: dict = {}
        self.timings_s: dict[str, float] = {}
        self._next_hops: pd.DataFrame | None = None
        self._live: LiveNetwork | None = None
        self.injector: Injector | None = None      # live faults (after start)
        self.control: ControlServer | None = None  # their unix socket, for `netemu inject`
        self.load: LoadSampler | None = None       # the links' load over the run (after start)
        self._saved_affinity: set[int] | None = None
        self._closed = False

    @property
    def speed(self) -> float:
        return self.clock.speed

    @property
    def dilation(self) -> float:
        return self.clock.dilation

    @property
    def scale(self) -> float:
        """Wall seconds per emulated second (dilation / speed)."""
        return self.clock.scale

    # ------------------------------------------------------------------ build

    def build(self) -> "Emulation":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _timed(self, name: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.timings_s[name] = time.perf_counter() - t
        return out

    def _build(self) -> None:
        w, sched = self.window, self.schedule
        self._timed("plan_tables", self.network_tables)
        ground = set(sched.nodes["name"][sched.nodes["kind"] == "ground"])
        n_sat = sum(1 for n in self.node_names if n not in ground)
        self.say(f"network: {len(self.node_names):,} nodes ({n_sat:,} satellites), {len(self.link_table):,} links, "
                 f"steps {w.k0}..{w.k1} (t = {w.t0_s:g}..{w.t_end_s:g} s)")
        if self.auto_dilation:
            self._choose_dilation()
        fw = self.forwarding = Forwarding(self.ns, self.node_names, self.loopbacks, self.link_table, self.endpoints,
                                          self.mtu)
        self._timed("namespaces", self.ns.add_routers, list(self.node_names), fw.open)
        self.say(f"namespaces: {len(self.node_names):,} ({self.timings_s['namespaces']:.1f} s)")
        self._timed("link_backend", self._link_backend)
        self._timed("links", self._add_links)
        self.say(f"links: {len(self.link_table):,} {self.backend_name} links ({self.timings_s['links']:.1f} s)")
        self._timed("addresses", fw.configure_interfaces)
        # next hops as routing knows the network: a failed link is used until its detection delay
        self._timed("next_hops", fw.prepare, self.plan.routing_schedule, self.plan.scenario.routing, w,
                    self._next_hops)
        n = self._timed("routes", fw.apply, w.k0)
        self.say(f"routes: {n:,} installed ({self.timings_s['routes']:.1f} s)")
        if self.backend_name == "engine":
            # engines polling on CPUs of their own send a share of each big step's routes
            self._timed("route_senders", fw.use_senders, self.links.route_senders())
        if self.backend_name == "engine" and self.do_calibrate:
            self._timed("calibration_in_place", self._calibrate)
        self.net, self.routers = self._timed("mininet", mininet_view, self.ns, self.node_names, self.endpoints,
                                             self.loopbacks, self.link_table)
        self.player = Player(self.clock, w, sched.t_s, self.links, fw, self.states,
                             self.link_table["link"].to_numpy(), engine=self.backend_name == "engine")

    def network_tables(self) -> tuple[list[str], pd.DataFrame]:
        """The nodes and links (link, a, b, kind, a_ifname, b_ifname, …) this emulation builds,
        known before `build()` (computed once)."""
        if not self.node_names:
            self._tables()
        return self.node_names, self.link_table

    def _tables(self) -> None:
        w, sched = self.window, self.schedule
        self.node_names = scope_nodes(sched, self.plan.routes.routes, self.endpoints, w, self.scope)
        in_scope = set(self.node_names)
        L = sched.links
        L = L[(L["step"] >= w.k0) & (L["step"] <= w.k1)]
        L = L[L["a"].isin(in_scope) & L["b"].isin(in_scope)]
        loopbacks, self.link_table = address_plan(sched.nodes, L)
        self.loopbacks = dict(zip(loopbacks["name"], loopbacks["loopback"]))
        t = self.link_table
        self.states = link_states(sched, t["a"].to_numpy(), t["b"].to_numpy(), w)

    def _link_backend(self) -> None:
        if self.backend_name == "kernel":
            self.links = KernelLinks(run_id=self.run_id)
            return
        self.links = EngineLinks(shards=self.shards, run_id=self.run_id, seed=self.seed, mtu=self.mtu,
                                 busy_poll=self.busy_poll)
        if self.links.engine_cpus:   # this process, its threads and children stay off them
            self._saved_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.links.other_cpus())
        if self.do_calibrate:
            # what the end hosts cost a round trip; the engine's own overhead is measured on
            # this network's paths once it is built (_calibrate)
            self.calibration = {"reference_rtt_us": round(veth_reference_rtt_ms(self.ns) * 1e3, 1)}

    def _add_links(self) -> None:
        for i, r in enumerate(self.link_table.itertuples(index=False)):
            self.links.add_link(r.link, LinkEnd(self.ns.path(r.a), r.a_ifname), LinkEnd(self.ns.path(r.b), r.b_ifname),
                                link_params(self.states, 0, i, self.dilation))

    def _calibrate(self) -> None:
        ref_us = self.calibration["reference_rtt_us"]
        self.pilot = Pilot(self.links, self.ns, ref_us)
        self.calibration.update(calibrate_in_place(self.links, self.ns, self.plan, self.window, self.loopbacks,
                                                   self.dilation, ref_us, self.pilot))
        self.calibration["pilot_baseline_us"] = round(self.pilot.baseline_us, 1)
        c = self.calibration
        self.say(f"link engine calibrated on {c.get('in_place_pairs', 0)} endpoint paths: overhead per "
                 f"traversal {c['hop_overhead_us']:.0f} µs (residual "
                 f"{c.get('in_place_residual_us', c.get('residual_per_hop_us', 0.0)):+.1f} µs)")

    def _choose_dilation(self) -> None:
        """Pick the smallest dilation this window's work allows (player.choose_dilation)."""
        t0 = time.perf_counter()
        k, self.dilation_choice, self._next_hops = choose_dilation(
            self.plan, self.window, self.node_names, self.states, self.clock.speed,
            self.shards if self.backend_name == "engine" else 1, self.probe_frames_per_s)
        self.timings_s["next_hops_for_dilation"] = time.perf_counter() - t0
        self.clock = replace(self.clock, dilation=k)
        c = self.dilation_choice
        why = f", bound by {c['bound_by']}" if c["bound_by"] else ""
        self.say(f"dilation auto: {k:g} ({c['route_changes_per_step_mean']:.0f} route changes per step, "
                 f"{c['moving_links']:,} moving links{why})")

    # ------------------------------------------------------------------ use

    def __getitem__(self, name: str):
        return self.net[name]

    def loopback(self, name: str) -> str:
        try:
            return self.loopbacks[name]
        except KeyError:
            raise EmulationError(f"unknown node {name!r}") from None

    def start(self, lead_s: float = 0.3) -> None:
        """Start playing the window: emulated t0 is `lead_s` from now."""
        self.player.start(lead_s)
        self.clock = self.player.clock
        if self._live is not None:
            self._live.clock = self.clock
        if self.pilot is not None:
            self.pilot.start()
        if hasattr(self.links, "sample"):   # every 100 ms of emulated time (emulate.linkload)
            self.load = LoadSampler(self.links, scale=self.clock.scale).start()
        self.injector = Injector(self)
        self.injector.schedule_planned()   # the plan's faults rerouted at their detection instant
        try:
            self.control = ControlServer(self, socket_path(self.run_id))
            self.ns.register(control=str(self.control.path))
        except OSError as e:   # the run plays on; only `netemu inject` cannot reach it
            self.say(f"no control socket for `netemu inject` ({e}); em.fail_node() etc. still work")

    # ------------------------------------------------------------------ live faults (emulate.inject)

    def fail_node(self, name: str, duration_s: float | None = None) -> dict:
        """Fail node `name` now: all its links down at once, routes around it after the scenario's
        `failure_detection_s`; for `duration_s` emulated seconds (None: until `restore`). Returns
        the injection's log row (see `injections()`)."""
        return self._injector().fail_node(name, duration_s)

    def fail_link(self, a: str, b: str, duration_s: float | None = None) -> dict:
        """Fail the link between nodes `a` and `b` now (as `fail_node`)."""
        return self._injector().fail_link(a, b, duration_s)

    def reboot(self, name: str, reboot_s: float | None = None) -> dict:
        """Reboot node `name` now: dark at once (routes around it after `failure_detection_s`, as
        `fail_node`), back after `reboot_s` emulated seconds (None: the scenario's reboot time,
        from its reboot or radiation faults), each link then re-acquiring for its model's
        acquisition time before it carries traffic again. Returns the injection's log row."""
        return self._injector().reboot(name, reboot_s)

    def restore(self, a: str | None = None, b: str | None = None) -> list[dict]:
        """End live faults now: all of them, node `a`'s, or link a-b's; links and routes back at once."""
        return self._injector().restore(a, b)

    def injections(self) -> pd.DataFrame:
        """Every live injection so far (emulate.inject: columns INJECTION_COLUMNS)."""
        if self.injector is None:
            from .inject import INJECTION_COLUMNS
            return pd.DataFrame(columns=INJECTION_COLUMNS)
        return self.injector.table()

    def _injector(self) -> Injector:
        if self.injector is None:
            from .inject import InjectError
            raise InjectError("the emulation is not playing yet: call start() before injecting faults")
        return self.injector

    def live(self) -> LiveNetwork:
        """What traffic sources see of this network (after `build()`; its clock runs once
        `start()` has been called)."""
        if self._live is None:
            if self.player is None:
                raise EmulationError("the emulation is not built (call build() first)")
            self._live = LiveNetwork(tuple(self.node_names), dict(self.loopbacks),
                                     {n: self.ns.path(n) for n in self.node_names}, self.clock)
        return self._live

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the player to reach the window's end; True when it has."""
        return self.player.wait(timeout_s)

    def waiting_for(self) -> str:
        """What a run that has not ended waits for: the player's current work and any engine
        request left unanswered for a second or more."""
        parts = [f"the player ({self.player.doing})" if self.player is not None else "the player (not built)"]
        if hasattr(self.links, "in_flight"):
            parts += self.links.in_flight(min_age_s=1.0)
        return "; ".join(parts)

    def engine_stalls(self) -> pd.DataFrame:
        """The link engines' stalls in the window so far: `shard, t_start_s, t_end_s, duration_ms,
        links, start_mono` (schedule s, emulated ms, the link ids delayed, space-separated, and the
        start on this host's CLOCK_MONOTONIC, to match with the host's own logs): intervals in
        which an engine could not serve its links while frames waited or were due
        (EngineLinks.stalls). Empty for backends without an engine."""
        cols = ["shard", "t_start_s", "t_end_s", "duration_ms", "links", "start_mono"]
        if not hasattr(self.links, "stalls") or self.clock.origin_mono is None:
            return pd.DataFrame(columns=cols)
        st = self.links.stalls()
        a, b = self.clock.t_s(st["start_mono"].to_numpy(float)), self.clock.t_s(st["end_mono"].to_numpy(float))
        keep = (b >= self.window.t0_s) & (a <= self.window.t_end_s)
        return pd.DataFrame({"shard": st["shard"].to_numpy()[keep], "t_start_s": a[keep], "t_end_s": b[keep],
                             "duration_ms": (b - a)[keep] * 1e3, "links": st["links"].to_numpy()[keep],
                             "start_mono": st["start_mono"].to_numpy(float)[keep]})[cols]

    def now_t_s(self) -> float:
        """Current emulated schedule time (s)."""
        return self.player.now_t_s()

    def popen(self, node: str, cmd: list[str], **kw) -> subprocess.Popen:
        """A process inside `node` (dies with this one's thread that started it)."""
        return subprocess.Popen(["nsenter", f"--net={self.ns.path(node)}", *cmd], **kw)

    def address_table(self) -> pd.DataFrame:
        """One row per interface: node, ifname, address, prefix_len, mac, link, peer, peer_address, kind."""
        return address_table(self.node_names, self.loopbacks, self.link_table)

    def installed_routes(self, node: str) -> list[dict]:
        """netemu's routes in `node` now (from the kernel): dst, gateway, oif, type."""
        return self.forwarding.installed_routes(node)

    def routes_at_start(self) -> int:
        """Route entries installed at the window's first step."""
        return self.forwarding.changes_at(self.window.k0) if self.forwarding else 0

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Tear everything down: player, node shells, links, namespaces. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        t = time.perf_counter()
        if self.control is not None:
            self.control.close()
        if self.player is not None:
            self.player.stop()
        if self.pilot is not None:
            self.pilot.stop()
        if self.load is not None:
            self.load.stop()
        if self.net is not None:
            for node in list(self.net.nameToNode.values()):
                try:
                    node.terminate()
                except Exception:
                    pass
        if self.forwarding is not None:
            self.forwarding.close()
        if self.links is not None:
            try:
                self.links.stop()
            except NetemuError:
                pass
        self.ns.delete_all()
        if self._saved_affinity:
            os.sched_setaffinity(0, self._saved_affinity)
        self.timings_s["teardown"] = time.perf_counter() - t

    def __enter__(self) -> "Emulation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def emulate(plan, **options) -> Iterator[Emulation]:
    """Build the emulated network of `plan` (options: see `Emulation`), yield it, tear it down."""
    em = Emulation(plan, **options)
    em.build()
    try:
        yield em
    finally:
        em.close()
