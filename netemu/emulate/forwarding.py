"""Forwarding in the live network (kernel edge; root): interface addresses, the next-hop tables
of a window, and each step's route changes staged ahead of its instant and sent at it.

Every node has one rtnetlink socket, opened once when its namespace is made; a step's changes
are packed into one batched request per node beforehand (`stage`) and sent back to back when
due (`apply`), so the lag of a step is the send time, not the packing.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pandas as pd

from ..plan.routing import next_hop_changes
from .addressing import link_mac
from .netns import Namespaces, entered
from .playback import Window
from ..errors import EmulationError
from .rtnl import Rtnl

__all__ = ["Forwarding"]

# A step touching fewer namespaces than this is sent by the player alone (well under a ms).
SPLIT_MIN_NAMESPACES = 64


class Forwarding:
    """The routes of the nodes `node_names` (in namespaces of `ns`), toward the loopbacks of
    `endpoints`, over the links of `link_table` (addressing.address_plan's table)."""

    def __init__(self, ns: Namespaces, node_names: list[str], loopbacks: dict[str, str],
                 link_table: pd.DataFrame, endpoints: tuple[str, ...], mtu: int = 1500):
        self.ns, self.node_names, self.loopbacks = ns, list(node_names), loopbacks
        self.link_table, self.endpoints, self.mtu = link_table, tuple(endpoints), mtu
        self.lock = threading.Lock()       # the player thread and callers share the sockets
        self.routes_in_force_at = 0.0      # monotonic instant the latest step's routes were sent
        self.last_apply: dict = {}         # the latest step's namespaces, send_ms and ack_ms
        self._rtnl: dict[str, Rtnl] = {}
        self._ifindex: dict[str, dict[str, int]] = {}
        self.next_hops = pd.DataFrame()    # the window's next-hop changes, every node (routing.next_hop_changes)
        self._nh_by_step: dict[int, pd.DataFrame] = {}
        self._staged: dict[int, tuple] = {}
        self._n = 0
        self._hop: dict[int, tuple[int, bytes]] = {}
        self._lo4: dict[int, bytes] = {}
        self._dst4: list[bytes] = []
        self._dst_node: list[int] = []
        self._nl_by_index: dict[int, Rtnl] = {}
        self._index_of_name: list[int] = []
        # routes point at one nexthop object per link end (id = the interface's index) where the
        # kernel has them (≥ 5.3): a route change then costs about half (rtnl.route_nh4)
        self.nexthop_objects: bool | None = None
        # link engines sending a share of each step's changes on their own CPUs (use_senders)
        self._senders: list = []
        self._path_of: dict[int, str] = {}
        self._sender_log: list[tuple] = []
        self._table = np.zeros((0, 0), np.int32)   # next hops installed now [E, n] (−1: none)
        self._in_scope = np.zeros(0, bool)
        self._view = None                  # with live faults: step → next-hop table [E, n] (see reroute)

    # ------------------------------------------------------------------ build

    def open(self, name: str) -> None:
        """Open `name`'s netlink socket (called inside its new namespace, see Namespaces.add_routers)."""
        self._rtnl[name] = Rtnl(self.ns.full(name))

    def configure_interfaces(self) -> None:
        """Loopback /32s, link /31s with fixed MACs, interfaces up, permanent neighbour entries."""
        per_node: dict[str, list[tuple[str, str, str, str, str]]] = {n: [] for n in self.node_names}
        # (a cluster host's table also has its cut links, whose other end is on another host)
        for i, r in enumerate(self.link_table.itertuples(index=False)):
            if r.a in per_node:
                per_node[r.a].append((r.a_ifname, r.a_addr, link_mac(i, 0), r.b_addr, link_mac(i, 1)))
            if r.b in per_node:
                per_node[r.b].append((r.b_ifname, r.b_addr, link_mac(i, 1), r.a_addr, link_mac(i, 0)))
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
            if self.nexthop_objects is not False:
                for ifname, _, _, peer, _ in per_node[name]:
                    nl.nexthop_add(index[ifname], index[ifname], peer)
                try:
                    nl.commit()
                    self.nexthop_objects = True
                except EmulationError:
                    if self.nexthop_objects:      # refused after others took them: a real failure
                        raise
                    nl.batch.clear()
                    self.nexthop_objects = False  # an older kernel: routes name their gateway

    def prepare(self, schedule, routing, w: Window, next_hops: pd.DataFrame | None = None) -> None:
        """The next-hop changes of window `w` (routing.next_hop_changes; computed here unless
        given), kept for the nodes in scope, and what a route needs packed by node index."""
        nh = next_hops if next_hops is not None else next_hop_changes(
            schedule, self.endpoints, routing.metric, routing.ground_relay, steps=(w.k0, w.k1 + 1))
        self.next_hops = nh
        names = schedule.node_names
        pos = {n: i for i, n in enumerate(names)}
        in_scope = np.zeros(len(names), bool)
        in_scope[[pos[n] for n in self.node_names]] = True
        nh = nh[in_scope[nh["node"].to_numpy()]]
        self._nh_by_step = {int(k): g for k, g in nh.groupby("step", sort=True)}
        # (node·n + neighbour) → (interface index at node, neighbour's address on the link)
        n = self._n = len(names)
        for r in self.link_table.itertuples(index=False):
            ia, ib = pos[r.a], pos[r.b]
            if r.a in self._ifindex:
                self._hop[ia * n + ib] = (self._ifindex[r.a][r.a_ifname], socket.inet_aton(r.b_addr))
            if r.b in self._ifindex:
                self._hop[ib * n + ia] = (self._ifindex[r.b][r.b_ifname], socket.inet_aton(r.a_addr))
        self._lo4 = {pos[name]: socket.inet_aton(self.loopbacks[name]) for name in self.node_names}
        self._dst4 = [socket.inet_aton(self.loopbacks[e]) for e in self.endpoints]
        self._dst_node = [pos[e] for e in self.endpoints]
        self._nl_by_index = {pos[name]: self._rtnl[name] for name in self.node_names}
        self._index_of_name = [pos[name] for name in self.node_names]
        self._table = np.full((len(self.endpoints), n), -1, np.int32)
        self._in_scope = in_scope

    # ------------------------------------------------------------------ steps

    def changes_at(self, k: int) -> int:
        """Next-hop entries that change at schedule step k (all of them at the window's first)."""
        g = self._nh_by_step.get(k)
        return 0 if g is None else len(g)

    def use_senders(self, senders: list) -> None:
        """Share each big step's sends with `senders` (links.RouteSender: link engines polling
        on CPUs of their own): node v's changes go to sender v mod (len + 1) − 1, the player
        keeping v mod (len + 1) = 0, so one node's changes always come from one sender, in
        order. Called after `prepare`; opens the senders' sockets."""
        self._senders = list(senders)
        if not senders:
            return
        m = len(senders) + 1
        self._path_of = {v: self.ns.path(self.node_names[i]) for i, v in enumerate(self._index_of_name)}
        for h, sender in enumerate(senders):
            sender.open([p for v, p in self._path_of.items() if v % m == h + 1])

    def stage(self, k: int, due_mono: float | None = None) -> None:
        """Pack step k's route changes into netlink requests ahead of its instant `due_mono`
        (monotonic); with senders (use_senders) and a due instant, theirs go to them now."""
        count, items, rows = self._pack(k)
        remote = 0
        if self._senders and due_mono is not None and len(items) >= SPLIT_MIN_NAMESPACES:
            m = len(self._senders) + 1
            shares: list[list] = [[] for _ in range(m)]
            for v, nl, st in items:
                shares[v % m].append((v, nl, st))
            for h, sender in enumerate(self._senders):
                if shares[h + 1]:
                    sender.schedule(due_mono, k, [(self._path_of[v], [data for data, _ in st]) for v, _, st in shares[h + 1]])
                    remote += len(shares[h + 1])
            items = shares[0]
        self._staged[k] = (count, items, rows, remote, due_mono)

    def apply(self, k: int) -> int:
        """Send step k's route changes (staged beforehand if `stage(k)` was called; the senders'
        share, if any, goes at the same instant from them); returns how many entries changed
        and sets `routes_in_force_at` (monotonic) for the player's share."""
        staged = self._staged.pop(k, None)
        count, items, rows, remote, _ = staged if staged is not None else (*self._pack(k), 0, None)
        with self.lock:
            t0 = time.monotonic()
            for _, nl, st in items:
                nl.send(st)
            self.routes_in_force_at = t1 = time.monotonic()
            for _, nl, st in items:
                nl.finish(st)
            self._installed(rows)
        self.last_apply = {"namespaces": len(items), "send_ms": (t1 - t0) * 1e3,
                           "ack_ms": (time.monotonic() - t1) * 1e3, "sender_namespaces": remote}
        return count

    def sender_log(self) -> pd.DataFrame:
        """The senders' share of each step they sent: step, start and done (monotonic),
        namespaces. Raises EmulationError if the kernel refused any of their requests."""
        for sender in self._senders:
            self._sender_log.extend(sender.log())
        bad = [r for r in self._sender_log if r[4]]
        if bad:
            raise EmulationError(f"netlink: {sum(r[4] for r in bad)} route change(s) refused at steps "
                                 f"{sorted({r[0] for r in bad})[:5]}, first: {bad[0][5]}")
        return pd.DataFrame([r[:4] for r in self._sender_log], columns=["step", "start", "done", "namespaces"])

    def _installed(self, rows) -> None:
        if rows is not None and len(rows[0]):
            node, dst, hop = rows
            self._table[dst, node] = hop

    def _pack(self, k: int):
        if self._view is not None:           # live faults: the step's own repaired table
            table = self._view(k)
            if table is None:                # the view ends here: back to the plan's routes
                self._view = None
                table = self.plan_table(k)
            return self._diff(table)
        g = self._nh_by_step.get(k)
        if g is None:
            return 0, [], None
        node, dst, hop = g["node"].to_numpy(), g["dst"].to_numpy(), g["next_hop"].to_numpy()
        with self.lock:
            return (*self._route_requests(node.tolist(), dst.tolist(), hop.tolist()), (node, dst, hop))

    def _diff(self, table: np.ndarray):
        """Requests that turn the installed next hops into `table` (nodes in scope)."""
        dst, node = np.nonzero((table != self._table) & self._in_scope[None, :])
        hop = table[dst, node]
        with self.lock:
            return (*self._route_requests(node.tolist(), dst.tolist(), hop.tolist()), (node, dst, hop))

    # ------------------------------------------------------------------ live faults

    def plan_table(self, k: int) -> np.ndarray:
        """The window's planned next-hop table at step k (every node)."""
        nh = self.next_hops
        nh = nh[nh["step"] <= k].drop_duplicates(["dst", "node"], keep="last")
        t = np.full(self._table.shape, -1, np.int32)
        t[nh["dst"].to_numpy(), nh["node"].to_numpy()] = nh["next_hop"].to_numpy()
        return t

    def reroute(self, k: int, view) -> tuple[int, float]:
        """Install at once the next hops of step k (the step in force) as `view(k)` gives them
        (a function step → next-hop table [E, n]; None: back to the plan's), and take later steps'
        routes from `view` too, until it returns None for a step (from there, the plan's). Call from the thread that applies the steps (the player's).
        Returns (entries changed, monotonic instant they were in force)."""
        self._view = view
        count, items, rows = self._diff(view(k) if view is not None else self.plan_table(k))
        with self.lock:
            for _, nl, st in items:
                nl.send(st)
            t1 = time.monotonic()
            for _, nl, st in items:
                nl.finish(st)
            self._installed(rows)
        restage = {j: self._staged.pop(j)[4] for j in list(self._staged) if j > k}   # packed against the old routes
        for j in restage:
            for sender in self._senders:     # their share of it too (not begun: its instant is ahead)
                sender.cancel(j)
        for j, due in restage.items():
            self.stage(j, due)
        return count, t1

    def _route_requests(self, nodes: list[int], dsts: list[int], hops: list[int]):
        n, hop, lo4, dst4, dst_node, nl_of = self._n, self._hop, self._lo4, self._dst4, self._dst_node, self._nl_by_index
        nh_objects = bool(self.nexthop_objects)
        touched = {}
        count = 0
        for v, d, u in zip(nodes, dsts, hops):
            if v == dst_node[d]:
                continue
            nl = nl_of[v]
            via = hop.get(v * n + u) if u >= 0 else None
            if via is None:                       # no next hop, or one outside the scope
                nl.route_unreachable4(dst4[d])
            elif nh_objects:
                nl.route_nh4(dst4[d], via[0], lo4[v])
            else:
                nl.route_via4(dst4[d], via[1], via[0], lo4[v])
            touched[v] = nl
            count += 1
        return count, [(v, nl, nl.stage()) for v, nl in touched.items()]

    # ------------------------------------------------------------------ use

    def installed_routes(self, node: str) -> list[dict]:
        """netemu's routes in `node` now (from the kernel): dst, gateway, oif, type."""
        with self.lock:
            return self._rtnl[node].routes()

    def close(self) -> None:
        for nl in self._rtnl.values():
            nl.close()
        self._rtnl.clear()
