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
from .rtnl import Rtnl

__all__ = ["Forwarding"]


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

    # ------------------------------------------------------------------ steps

    def changes_at(self, k: int) -> int:
        """Next-hop entries that change at schedule step k (all of them at the window's first)."""
        g = self._nh_by_step.get(k)
        return 0 if g is None else len(g)

    def stage(self, k: int) -> None:
        """Pack step k's route changes into netlink requests ahead of its instant."""
        self._staged[k] = self._pack(k)

    def apply(self, k: int) -> int:
        """Send step k's route changes (staged beforehand if `stage(k)` was called); returns how
        many entries changed and sets `routes_in_force_at` (monotonic) when there were any."""
        staged = self._staged.pop(k, None)
        count, items = staged if staged is not None else self._pack(k)
        with self.lock:
            t0 = time.monotonic()
            for nl, st in items:
                nl.send(st)
            self.routes_in_force_at = t1 = time.monotonic()
            for nl, st in items:
                nl.finish(st)
        self.last_apply = {"namespaces": len(items), "send_ms": (t1 - t0) * 1e3,
                           "ack_ms": (time.monotonic() - t1) * 1e3}
        return count

    def _pack(self, k: int):
        g = self._nh_by_step.get(k)
        if g is None:
            return 0, []
        with self.lock:
            return self._route_requests(g["node"].tolist(), g["dst"].tolist(), g["next_hop"].tolist())

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

    # ------------------------------------------------------------------ use

    def installed_routes(self, node: str) -> list[dict]:
        """netemu's routes in `node` now (from the kernel): dst, gateway, oif, type."""
        with self.lock:
            return self._rtnl[node].routes()

    def close(self) -> None:
        for nl in self._rtnl.values():
            nl.close()
        self._rtnl.clear()
