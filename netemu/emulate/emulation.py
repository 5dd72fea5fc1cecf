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
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from .addressing import address_plan
from .engine import default_queue_bytes
from ..errors import EmulationError, NetemuError
from .links import EngineLinks, KernelLinks, LinkEnd, LinkParams, veth_reference_rtt_ms
from .netns import Namespaces, entered, running_as_root
from .playback import LinkStates, Window, link_states, scope_nodes, window
from .player import Player
from .rtnl import Rtnl
from ..plan.routing import next_hop_changes

__all__ = ["Emulation", "emulate", "RouterNode"]


def _router_node_class():
    """Mininet's Node, imported late: netemu's planning side does not need Mininet."""
    try:
        from mininet.node import Node
    except ImportError as e:
        raise EmulationError(f"Mininet's Python module is missing ({e}); install it with "
                             "`pip install mininet==2.3.0.dev6` (make setup does)") from None

    class RouterNode(Node):
        """A Mininet node living in a namespace netemu made (`netns`, a namespace file).

        Behaves as any Mininet node (cmd, popen, sendCmd, the CLI); its shell joins the existing
        namespace instead of creating one, and with `lazy` starts at the first command. `IP()`
        is the node's loopback, the address other endpoints reach it at."""

        def __init__(self, name: str, netns: str, loopback: str, lazy: bool = False, **params):
            self.netns, self.loopback, self._lazy = netns, loopback, lazy
            super().__init__(name, inNamespace=True, **params)

        def startShell(self, mnopts=None):
            if self._lazy:
                return
            super().startShell(mnopts)

        def _popen(self, cmd, **params):
            # Mininet starts the shell with `mnexec -..n` (a new namespace): join ours instead.
            if not self.shell and cmd and cmd[0] == "mnexec" and cmd[1].startswith("-") and cmd[1].endswith("n"):
                cmd = ["mnexec", cmd[1][:-1], "nsenter", f"--net={self.netns}", *cmd[2:]]
            return super()._popen(cmd, **params)

        def _ensure_shell(self):
            if self.shell is None and self._lazy:
                self._lazy = False
                self.startShell()

        def cmd(self, *args, **kwargs):
            self._ensure_shell()
            return super().cmd(*args, **kwargs)

        def sendCmd(self, *args, **kwargs):
            self._ensure_shell()
            return super().sendCmd(*args, **kwargs)

        def popen(self, *args, **kwargs):
            self._ensure_shell()
            return super().popen(*args, **kwargs)

        def write(self, data):
            self._ensure_shell()
            return super().write(data)

        def IP(self, intf=None):
            return self.loopback if intf is None else super().IP(intf)

        def terminate(self):
            if self.shell is not None:
                super().terminate()

    return RouterNode


RouterNode = None  # set on first use (see _router_node_class)


def _center(rtts_ms: list[float]) -> float:
    """Centre of a set of RTTs: the 20 %-trimmed mean (robust to the wake-up outliers, and
    steadier than the median for the same number of echoes)."""
    from scipy.stats import trim_mean
    return float(trim_mean(np.asarray(rtts_ms, float), 0.2))


def _mac(link_index: int, side: int) -> str:
    v = 2 * link_index + side
    return "02:4e:" + ":".join(f"{(v >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


# The largest engine overhead per traversal a calibration may take off the links' delays. On this
# kind of host it measures 1-5 µs per hop and tens of µs at a process's origin; hundreds of µs
# mean the measurement saw someone else's load (another run, a busy host), and subtracting that
# from every delay would make emulated delays shorter than the light-time (seen: 2 ms per hop,
# RTTs 52 ms below physics).
MAX_OVERHEAD_US = 500.0


def check_calibration(hop_us: float, origin_us: float) -> None:
    """Refuse engine corrections (µs per traversal) above MAX_OVERHEAD_US, saying why."""
    for what, v in (("per hop", hop_us), ("at the origin", origin_us)):
        if not v <= MAX_OVERHEAD_US:
            raise EmulationError(
                f"the link-engine calibration measured {v:.0f} µs of overhead {what} per traversal, above the "
                f"{MAX_OVERHEAD_US:g} µs bound (a quiet host measures 1-5 µs per hop, tens of µs at the origin): "
                f"another run is live (`netemu ps`) or the host is heavily loaded, and taking that off every "
                f"delay would make emulated delays shorter than the light-time; stop the other load and "
                f"run again (or use --no-calibrate)")


class Emulation:
    """A live emulated network of a plan's window. Use `emulate()` (a context manager)."""

    def __init__(self, plan, *, links: str = "engine", scope: str = "auto", speed: float = 1.0,
                 dilation: float = 1.0, start_s: float = 0.0, duration_s: float | None = None,
                 shards: int | None = None, busy_poll: bool | None = None, seed: int = 0, calibrate: bool = True,
                 mtu: int = 1500, probe_frames_per_s: float = 0.0,
                 progress: Callable[[str], None] | None = None):
        if not running_as_root():
            raise EmulationError("emulation needs root (namespaces, TAP devices, routes); run with sudo")
        if links not in ("engine", "kernel"):
            raise EmulationError(f"links: expected engine or kernel, found {links!r}")
        self.auto_dilation = dilation == "auto"
        if self.auto_dilation:
            dilation = 1.0          # chosen in build(), from the window's work (see player.auto_dilation)
        if not (isinstance(speed, (int, float)) and isinstance(dilation, (int, float)) and speed > 0 and dilation >= 1):
            raise EmulationError(f"expected speed > 0 and dilation ≥ 1 (or \"auto\"), found speed={speed!r}, "
                                 f"dilation={dilation!r}")
        if shutil.which("mnexec") is None:
            raise EmulationError("mnexec is missing (Debian package `mininet`); run `netemu doctor`")
        self.plan = plan
        self.schedule = plan.schedule
        self.endpoints = tuple(plan.scenario.endpoints)
        self.backend_name = links
        self.scope = scope
        self.speed, self.dilation = float(speed), float(dilation)
        self.scale = self.dilation / self.speed          # wall seconds per emulated second
        self.window: Window = window(self.schedule.t_s, start_s, duration_s)
        cpus = len(os.sched_getaffinity(0))
        # Busy-polling engines on their own CPUs give the steadiest delays (a sleeping engine
        # waits 30-80 µs for each wake-up here, and that varies); half the CPUs go to them.
        # Only when they can have CPUs of their own: more polling engines than spare CPUs
        # starve everything else (the run's own threads included: `--shards 64` hung).
        self.busy_poll = (cpus >= 2 and (shards is None or shards < cpus)) if busy_poll is None else busy_poll
        self.shards = shards or (max(1, cpus // 2) if self.busy_poll else cpus)
        self.seed, self.do_calibrate, self.mtu = seed, calibrate, mtu
        self.probe_frames_per_s = probe_frames_per_s   # the caller's probe traffic, for dilation "auto"
        self.say = progress or (lambda msg: None)
        self.ns = Namespaces()
        self.ns.meta["scenario"] = plan.scenario.name   # for `netemu ps` (registered at build)
        self.run_id = self.ns.run_id
        self.links: EngineLinks | KernelLinks | None = None
        self.net = None
        self.timings_s: dict[str, float] = {}
        self.calibration: dict = {}
        self._rtnl: dict[str, Rtnl] = {}
        self._ifindex: dict[str, dict[str, int]] = {}
        self.player: Player | None = None
        self._nl_lock = threading.Lock()     # the player thread and callers share the sockets
        self._closed = False
        self._saved_affinity: set[int] | None = None
        self._pilot: _Pilot | None = None

    # ------------------------------------------------------------------ build

    def build(self) -> "Emulation":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        w, sched = self.window, self.schedule
        t = time.perf_counter()
        self.node_names = scope_nodes(sched, self.plan.routes.routes, self.endpoints, w, self.scope)
        in_scope = set(self.node_names)
        L = sched.links
        L = L[(L["step"] >= w.k0) & (L["step"] <= w.k1)]
        L = L[L["a"].isin(in_scope) & L["b"].isin(in_scope)]
        loopbacks, table = address_plan(sched.nodes, L)
        self.loopbacks = dict(zip(loopbacks["name"], loopbacks["loopback"]))
        self.link_table = table
        self.states: LinkStates = link_states(sched, table["a"].to_numpy(), table["b"].to_numpy(), w)
        self.timings_s["plan_tables"] = time.perf_counter() - t
        ground = set(sched.nodes["name"][sched.nodes["kind"] == "ground"])
        n_sat = sum(1 for n in self.node_names if n not in ground)
        self.say(f"network: {len(self.node_names):,} nodes ({n_sat:,} satellites), {len(table):,} links, "
                 f"steps {w.k0}..{w.k1} (t = {w.t0_s:g}..{w.t_end_s:g} s)")
        self.dilation_choice: dict = {}
        if self.auto_dilation:
            self._choose_dilation()

        t = time.perf_counter()

        def open_rtnl(name: str) -> None:
            self._rtnl[name] = Rtnl(self.ns.full(name))
        self.ns.add_routers(list(self.node_names), configure=open_rtnl)
        self.timings_s["namespaces"] = time.perf_counter() - t
        self.say(f"namespaces: {len(self.node_names):,} ({self.timings_s['namespaces']:.1f} s)")

        t = time.perf_counter()
        if self.backend_name == "engine":
            self.links = EngineLinks(shards=self.shards, run_id=self.run_id, seed=self.seed, mtu=self.mtu,
                                     busy_poll=self.busy_poll)
            if self.links.engine_cpus:   # this process, its threads and children stay off them
                self._saved_affinity = os.sched_getaffinity(0)
                os.sched_setaffinity(0, self.links.other_cpus())
            if self.do_calibrate:
                # what the end hosts cost a round trip; the engine's own overhead is measured
                # on this network's paths once it is built (_calibrate_in_place)
                self.calibration = {"reference_rtt_us": round(veth_reference_rtt_ms(self.ns) * 1e3, 1)}
        else:
            self.links = KernelLinks(run_id=self.run_id)
        self.timings_s["link_backend"] = time.perf_counter() - t
        t = time.perf_counter()
        for i, r in enumerate(table.itertuples(index=False)):
            self.links.add_link(r.link, LinkEnd(self.ns.path(r.a), r.a_ifname), LinkEnd(self.ns.path(r.b), r.b_ifname),
                                self._params(0, i))
        self.timings_s["links"] = time.perf_counter() - t
        self.say(f"links: {len(table):,} {self.backend_name} links ({self.timings_s['links']:.1f} s)")

        t = time.perf_counter()
        self._configure_interfaces()
        self.timings_s["addresses"] = time.perf_counter() - t
        t = time.perf_counter()
        self._prepare_routes()
        n = self._apply_routes(w.k0)
        self.timings_s["routes"] = time.perf_counter() - t
        self.say(f"routes: {n:,} installed ({self.timings_s['routes']:.1f} s)")

        if self.backend_name == "engine" and self.do_calibrate:
            t = time.perf_counter()
            self._pilot = _Pilot(self)
            self.calibration.update(self._calibrate_in_place())
            self.timings_s["calibration_in_place"] = time.perf_counter() - t
            self.calibration["pilot_baseline_us"] = round(self._pilot.baseline_us, 1)
            c = self.calibration
            self.say(f"link engine calibrated on {c.get('in_place_pairs', 0)} endpoint paths: overhead per "
                     f"traversal {c['hop_overhead_us']:.0f} µs (residual "
                     f"{c.get('in_place_residual_us', c.get('residual_per_hop_us', 0.0)):+.1f} µs)")
        t = time.perf_counter()
        self._build_mininet()
        self.timings_s["mininet"] = time.perf_counter() - t
        self.player = Player(self, self.window, self.schedule.t_s, self.scale)

    def _choose_dilation(self) -> None:
        """Pick the smallest dilation this window's work allows (player.auto_dilation): its
        route changes per step (the in-scope next-hop changes) and its moving links."""
        from .player import auto_dilation
        sc, w = self.plan.scenario, self.window
        t0 = time.perf_counter()
        self._nh_all = next_hop_changes(self.schedule, self.endpoints, sc.routing.metric, sc.routing.ground_relay,
                                        steps=(w.k0, w.k1 + 1))
        self.timings_s["next_hops_for_dilation"] = time.perf_counter() - t0
        pos = {n: i for i, n in enumerate(self.schedule.node_names)}
        in_scope = np.zeros(len(pos), bool)
        in_scope[[pos[n] for n in self.node_names]] = True
        nh = self._nh_all[in_scope[self._nh_all["node"].to_numpy()]]
        per_step = nh[nh["step"] > w.k0].groupby("step").size().reindex(range(w.k0 + 1, w.k1 + 1), fill_value=0)
        d = self.states.delay_ms
        moving = int((d != d[:1]).any(axis=0).sum()) if len(d) > 1 else 0
        t = self.schedule.t_s
        step_s = float(t[1] - t[0]) if len(t) > 1 else 1.0
        k, self.dilation_choice = auto_dilation(per_step.to_numpy(), step_s / self.speed, moving,
                                                self.shards if self.backend_name == "engine" else 1,
                                                self.probe_frames_per_s * self.speed)
        self.dilation = k
        self.scale = self.dilation / self.speed
        why = f", bound by {self.dilation_choice['bound_by']}" if self.dilation_choice["bound_by"] else ""
        self.say(f"dilation auto: {k:g} ({per_step.mean():.0f} route changes per step, {moving:,} moving links{why})")

    def _calibrate_in_place(self, rounds: int = 3, echoes: int = 30, rate_hz: float = 20.0) -> dict:
        """Measure the engine's per-traversal overhead on this network's own endpoint paths.

        Before the clock starts, links hold their first step's delays, so a path's RTT should
        be 2 × its planned delay plus what the two end hosts' stacks cost (a veth pair's RTT).
        What remains, divided by the path's traversals (2 × hops), is the engine's overhead:
        taken off every delay, then measured again (`rounds` times). The probes follow the
        run's own pattern (every source at once, `rate_hz` echoes per pair): the overhead
        depends on how busy the engine and the hosts are (sparse echoes cost ~10 µs more per
        traversal than dense ones here). Falls back to `EngineLinks.calibrate` when no probe
        pair is reachable at the start. Returns the figures for run.json."""
        from concurrent.futures import ThreadPoolExecutor

        from .probe import icmp_rtts_ms
        from ..plan.pairs import default_probe_pairs
        k0 = self.window.k0
        paths = self.plan.routes.paths
        at = paths[paths["step"] == k0]
        delay = {(str(r.src), str(r.dst)): (r.delay_ms, r.hops) for r in at.itertuples(index=False)}
        by_src: dict[str, list] = {}
        for s, d in default_probe_pairs(self.plan, max_pairs=16):
            key = (s, d) if (s, d) in delay else (d, s)
            if key in delay:
                by_src.setdefault(s, []).append((d, *delay[key]))
        if not by_src:
            res = self.links.calibrate(probes=60, refine=1)
            check_calibration(self.links.hop_overhead_us, self.links.origin_overhead_us)
            return res
        ref_ms = self.calibration["reference_rtt_us"] / 1e3

        def probe(src: str, items: list) -> list:
            dsts = [self.loopbacks[d] for d, _, _ in items]
            return icmp_rtts_ms(dsts, echoes * len(dsts), 1.0 / (rate_hz * len(dsts)), timeout_s=1.0,
                                netns=self.ns.path(src))

        pilot = self._pilot

        def residual_us() -> float:
            # the pilot probes alongside, as it will during the run: its reading in the last
            # round is the baseline its later readings are compared with
            with ThreadPoolExecutor(len(by_src) + 1) as pool:
                pilot_reading = pool.submit(pilot.measure_us) if pilot else None
                results = list(pool.map(lambda kv: probe(*kv), by_src.items()))
                if pilot_reading:
                    pilot.baseline_us = pilot.smoothed_us = pilot_reading.result()
            per_traversal = []
            for (src, items), rtts in zip(by_src.items(), results):
                for i, (d, dl, h) in enumerate(items):
                    got = [r for r in rtts[i::len(items)] if r is not None]
                    if len(got) >= echoes // 2:
                        per_traversal.append((_center(got) - 2 * dl * self.dilation - ref_ms) * 1e3 / (2 * h))
            return float(np.median(per_traversal)) if per_traversal else 0.0

        residuals = []
        for _ in range(rounds):
            r = residual_us()
            residuals.append(r)
            self.links.set_overhead(self.links.hop_overhead_us + r, self.links.origin_overhead_us + r)
            if pilot:   # the pilot's links get the same correction: its reading drops by r
                pilot.baseline_us -= r
                pilot.smoothed_us = pilot.baseline_us
        first, final = residuals[0], residuals[-1]
        check_calibration(self.links.hop_overhead_us, self.links.origin_overhead_us)
        if pilot:
            pilot.base_hop, pilot.base_origin = self.links.hop_overhead_us, self.links.origin_overhead_us
        return {"in_place_pairs": sum(len(v) for v in by_src.values()), "in_place_first_residual_us": round(first, 1),
                "in_place_residual_us": round(final, 1), "hop_overhead_us": round(self.links.hop_overhead_us, 1),
                "origin_overhead_us": round(self.links.origin_overhead_us, 1)}

    def _params(self, i_step: int, j: int, only: tuple[str, ...] | None = None) -> LinkParams | dict:
        s, K = self.states, self.dilation
        rate = float(s.rate_mbps[i_step, j])
        p = {"delay_ms": float(s.delay_ms[i_step, j]) * K, "rate_mbps": rate / K,
             "loss_pct": float(s.loss_pct[i_step, j]), "up": bool(s.up[i_step, j]),
             # the queue holds the same bytes as undilated: 100 ms at the emulated rate
             "queue_bytes": default_queue_bytes(rate) if rate > 0 else None}
        if only is not None:
            return {k: p[k] for k in only}
        return LinkParams(**p)

    def _configure_interfaces(self) -> None:
        table = self.link_table
        per_node: dict[str, list[tuple[str, str, str, str]]] = {n: [] for n in self.node_names}
        for i, r in enumerate(table.itertuples(index=False)):
            per_node[r.a].append((r.a_ifname, r.a_addr, _mac(i, 0), r.b_addr, _mac(i, 1)))
            per_node[r.b].append((r.b_ifname, r.b_addr, _mac(i, 1), r.a_addr, _mac(i, 0)))
        for name in self.node_names:
            with entered(self.ns.path(name)):
                index = {n: i for i, n in socket.if_nameindex()}
            self._ifindex[name] = index
            nl = self._rtnl[name]
            nl.addr_add(1, self.loopbacks[name], 32)
            for ifname, addr, mac, peer, peer_mac in per_node[name]:
                ix = index[ifname]
                nl.link_up(ix, mac=mac, mtu=self.mtu)
                nl.addr_add(ix, addr, 31)
                nl.neigh_add(ix, peer, peer_mac)
            nl.commit()

    def _prepare_routes(self) -> None:
        sc, w = self.plan.scenario, self.window
        t = time.perf_counter()
        self.nh = getattr(self, "_nh_all", None)
        if self.nh is None:
            self.nh = next_hop_changes(self.schedule, self.endpoints, sc.routing.metric, sc.routing.ground_relay,
                                       steps=(w.k0, w.k1 + 1))
        self.timings_s["next_hops"] = time.perf_counter() - t
        names = self.schedule.node_names
        in_scope = np.zeros(len(names), bool)
        pos = {n: i for i, n in enumerate(names)}
        in_scope[[pos[n] for n in self.node_names]] = True
        nh = self.nh[in_scope[self.nh["node"].to_numpy()]]
        self._nh_by_step = {int(k): g for k, g in nh.groupby("step", sort=True)}
        # Packed, by node index, what a route needs: (node·n + neighbour) → (interface index at
        # node, neighbour's address on the link); loopbacks; each node's netlink socket.
        n = len(names)
        self._n = n
        self._hop: dict[int, tuple[int, bytes]] = {}
        for r in self.link_table.itertuples(index=False):
            ia, ib = pos[r.a], pos[r.b]
            self._hop[ia * n + ib] = (self._ifindex[r.a][r.a_ifname], socket.inet_aton(r.b_addr))
            self._hop[ib * n + ia] = (self._ifindex[r.b][r.b_ifname], socket.inet_aton(r.a_addr))
        self._lo4 = {pos[name]: socket.inet_aton(self.loopbacks[name]) for name in self.node_names}
        self._dst4 = [socket.inet_aton(self.loopbacks[e]) for e in self.endpoints]
        self._dst_node = [pos[e] for e in self.endpoints]
        self._nl_by_index = {pos[name]: self._rtnl[name] for name in self.node_names}
        self._staged: dict[int, tuple] = {}
        self.routes_in_force_at = 0.0

    def _apply_routes(self, k: int) -> int:
        """Install step k's next-hop changes (all routes at the window's first step), staged
        beforehand if `_stage_routes(k)` was called. Sets `routes_in_force_at` (monotonic)."""
        staged = self._staged.pop(k, None)
        if staged is None:
            staged = self._stage_routes(k, keep=False)
        count, items = staged
        with self._nl_lock:
            for nl, st in items:
                nl.send(st)
            self.routes_in_force_at = time.monotonic()
            for nl, st in items:
                nl.finish(st)
        return count

    def _stage_routes(self, k: int, keep: bool = True):
        """Pack step k's route changes into netlink requests ahead of its instant."""
        g = self._nh_by_step.get(k)
        if g is None:
            staged = (0, [])
        else:
            with self._nl_lock:
                staged = self._route_requests(g["node"].tolist(), g["dst"].tolist(), g["next_hop"].tolist())
        if keep:
            self._staged[k] = staged
        return staged

    def _route_requests(self, nodes: list[int], dsts: list[int], hops: list[int]):
        n, hop, lo4, dst4, dst_node, nl_of = self._n, self._hop, self._lo4, self._dst4, self._dst_node, self._nl_by_index
        touched = {}
        count = 0
        for v, d, u in zip(nodes, dsts, hops):
            if v == dst_node[d]:
                continue
            nl = nl_of[v]
            via = hop.get(v * n + u) if u >= 0 else None
            if via is None:                       # no next hop, or one outside the scope
                nl.route_unreachable4(dst4[d])
            else:
                nl.route_via4(dst4[d], via[1], via[0], lo4[v])
            touched[v] = nl
            count += 1
        return count, [(nl, nl.stage()) for nl in touched.values()]

    def _build_mininet(self) -> None:
        global RouterNode
        RouterNode = RouterNode or _router_node_class()
        from mininet.link import Intf
        from mininet.net import Mininet
        net = Mininet(topo=None, controller=None, build=False)
        net.built = True
        eps = set(self.endpoints)
        self.routers = []
        for name in self.node_names:
            node = RouterNode(name, netns=self.ns.path(name), loopback=self.loopbacks[name], lazy=name not in eps)
            net.nameToNode[name] = node
            (net.hosts if name in eps else self.routers).append(node)
        no_move = lambda *a, **k: None  # noqa: E731 - interfaces are in place already
        for i, r in enumerate(self.link_table.itertuples(index=False)):
            for side, (name, ifname, addr) in enumerate(((r.a, r.a_ifname, r.a_addr), (r.b, r.b_ifname, r.b_addr))):
                intf = Intf(ifname, node=net.nameToNode[name], moveIntfFn=no_move, up=None)
                intf.ip, intf.prefixLen, intf.mac = addr, 31, _mac(i, side)
        self.net = net

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
        if self._pilot is not None:
            self._pilot.start()

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

    def now_t_s(self) -> float:
        """Current emulated schedule time (s)."""
        return self.player.now_t_s()

    def popen(self, node: str, cmd: list[str], **kw) -> subprocess.Popen:
        """A process inside `node` (dies with this one's thread that started it)."""
        return subprocess.Popen(["nsenter", f"--net={self.ns.path(node)}", *cmd], **kw)

    def address_table(self) -> pd.DataFrame:
        """One row per interface: node, ifname, address, prefix_len, mac, link, peer, peer_address, kind."""
        rows = [(n, "lo", self.loopbacks[n], 32, "", "", "", "", "loopback") for n in self.node_names]
        for i, r in enumerate(self.link_table.itertuples(index=False)):
            rows.append((r.a, r.a_ifname, r.a_addr, 31, _mac(i, 0), r.link, r.b, r.b_addr, r.kind))
            rows.append((r.b, r.b_ifname, r.b_addr, 31, _mac(i, 1), r.link, r.a, r.a_addr, r.kind))
        return pd.DataFrame(rows, columns=["node", "ifname", "address", "prefix_len", "mac", "link", "peer",
                                           "peer_address", "kind"])

    def installed_routes(self, node: str) -> list[dict]:
        """netemu's routes in `node` now (from the kernel): dst, gateway, oif, type."""
        with self._nl_lock:
            return self._rtnl[node].routes()

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Tear everything down: player, node shells, links, namespaces. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        t = time.perf_counter()
        if self.player is not None:
            self.player.stop()
        if self._pilot is not None:
            self._pilot.stop()
        if self.net is not None:
            for node in list(self.net.nameToNode.values()):
                try:
                    node.terminate()
                except Exception:
                    pass
        for nl in self._rtnl.values():
            nl.close()
        self._rtnl.clear()
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


class _Pilot:
    """Tracks the drift of the engine's overhead during a run, on links of its own.

    What a traversal costs beyond the entry times the engine infers (the read latency of frames
    sent by processes, departures delayed by the run's load) drifts with the host's load. A
    chain of `HOPS` engine links between
    namespaces of the run's own, probed at 20 echoes/s like the run's probes, measures that
    cost continuously; the engine's overhead follows its change since the start-up
    calibration (never the user's traffic: the run's probes stay an independent check)."""

    HOPS = 4
    DELAY_MS = 5.0
    ECHOES = 40
    GAIN = 0.5

    def __init__(self, em: "Emulation"):
        from .links import build_chain
        self.em = em
        names = [f"pilot{i}" for i in range(self.HOPS + 1)]
        for n in names:
            em.ns.add(n)
        self.ids = [f"_pilot{i}" for i in range(self.HOPS)]
        build_chain(em.links, em.ns, names, self.ids, LinkParams(delay_ms=self.DELAY_MS), net="10.253")
        self.src, self.dst = em.ns.path(names[0]), f"10.253.{self.HOPS - 1}.1"
        self.base_hop, self.base_origin = em.links.hop_overhead_us, em.links.origin_overhead_us
        self.baseline_us = self.smoothed_us = 0.0   # set by the calibration's last round
        self.adjustments: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def measure_us(self) -> float:
        from .probe import icmp_rtts_ms
        rtts = [r for r in icmp_rtts_ms(self.dst, self.ECHOES, 0.05, timeout_s=1.0, netns=self.src) if r is not None]
        if len(rtts) < self.ECHOES // 2:
            return float("nan")
        ref_ms = self.em.calibration.get("reference_rtt_us", 0.0) / 1e3
        return (_center(rtts) - 2 * self.HOPS * self.DELAY_MS - ref_ms) * 1e3 / (2 * self.HOPS)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netemu-pilot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        links = self.em.links
        while not self._stop.is_set():
            r = self.measure_us()
            if np.isnan(r) or self._stop.is_set():
                continue
            self.smoothed_us += self.GAIN * (r - self.smoothed_us)
            # never past the calibration's bound: a load that large is not the engine's to correct
            drift = min(self.smoothed_us - self.baseline_us, MAX_OVERHEAD_US - max(self.base_hop, self.base_origin))
            try:
                links.set_overhead(self.base_hop + drift, self.base_origin + drift)
            except NetemuError:
                return
            self.adjustments.append((time.monotonic(), round(drift, 1)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@contextmanager
def emulate(plan, **options) -> Iterator[Emulation]:
    """Build the emulated network of `plan` (options: see `Emulation`), yield it, tear it down."""
    em = Emulation(plan, **options)
    em.build()
    try:
        yield em
    finally:
        em.close()
