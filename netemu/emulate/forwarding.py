"""Forwarding in the live network (kernel edge; root): interface addresses, the next-hop tables
of a window, and each step's route changes staged ahead of its instant and sent at it.

Every node has one rtnetlink socket, opened once when its namespace is made; a step's changes
are packed into one batched request per node beforehand (`stage`) and sent back to back when
due (`apply`), so the lag of a step is the send time, not the packing. A big step (a storm's
reroute: tens of thousands of changes) is put ahead into each namespace's idle routing table
and switched to at its instant with one request per namespace (`prepare_big_step`).
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

__all__ = ["Forwarding", "ALT_TABLE", "FLIP_MIN_STEP_CHANGES"]

# A step touching fewer namespaces than this is sent by the player alone (well under a ms).
SPLIT_MIN_NAMESPACES = 64

# Big steps (a storm: tens of thousands of route changes at one instant) are not sent route by
# route at their instant: ahead of it, each namespace with many changes gets the step's whole
# next-hop table in its idle routing table (main or ALT_TABLE), and at the instant one request
# switches the namespace over (adding or deleting the rule "lookup ALT_TABLE" at
# ALT_RULE_PRIORITY, ahead of main; addresses of the links stay in main, which lookups fall
# through to). A route change costs the kernel 2.5-3.5 µs, a switch 4-9 µs (measured in a
# run's namespaces and in 800 bare ones), whatever the table holds. (Replacing nexthop objects that the
# moving routes were put on ahead was measured too: 11 µs with 100 routes in the table, 67 µs
# with 1,000, as the kernel walks the table for each; no gain.)
MAIN_TABLE, ALT_TABLE, ALT_RULE_PRIORITY = 254, 200, 100
FLIP_MIN_STEP_CHANGES = 5000    # a step with at least this many changes is a big step
FLIP_MIN_NODE_CHANGES = 8       # a namespace switches tables when it has this many changes in it
PREP_CHUNK_ROUTES = 400         # routes put in idle tables per call ahead (~1.5 ms) at most,
PREP_CHUNK_S = 0.001            # and no more namespaces begun after this long (the player
                                # calls it 20 ms or more before a step: it never delays one)


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
        # big steps (FLIP_MIN_STEP_CHANGES): which table is in force per node (True: ALT_TABLE),
        # what each node's idle table holds [E, n] (−2: no route), the big steps' targets
        self._alt = np.zeros(0, bool)
        self._idle = np.zeros((0, 0), np.int32)
        self._own = np.zeros((0, 0), bool)        # [E, n]: the destination is the node itself
        self._flip_target: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # a namespace's first policy rule costs the kernel 4-10 times a later one (18 µs, 48 µs
        # in a Starlink run, against 4 µs): it is added and deleted once ahead, with the tables
        self._warm = np.zeros(0, bool)
        self.applied_k: int | None = None  # the latest step applied

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
        self._alt = np.zeros(n, bool)
        self._warm = np.zeros(n, bool)
        self._idle = np.full((len(self.endpoints), n), -2, np.int32)
        self._own = np.zeros((len(self.endpoints), n), bool)
        self._own[np.arange(len(self.endpoints)), self._dst_node] = True

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
        count, items, rows, *flipped = self._pack(k)
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
        self._staged[k] = (count, items, rows, remote, due_mono, flipped[0] if flipped else None)

    def apply(self, k: int) -> int:
        """Send step k's route changes (staged beforehand if `stage(k)` was called; the senders'
        share, if any, goes at the same instant from them); returns how many entries changed
        and sets `routes_in_force_at` (monotonic) for the player's share."""
        staged = self._staged.pop(k, None)
        if staged is None:
            count, items, rows, *flipped = self._pack(k)
            remote, flipped = 0, flipped[0] if flipped else None
        else:
            count, items, rows, remote, _, flipped = staged
        with self.lock:
            t0 = time.monotonic()
            for _, nl, st in items:
                nl.send(st)
            self.routes_in_force_at = t1 = time.monotonic()
            for _, nl, st in items:
                nl.finish(st)
            if flipped is not None and len(flipped):   # their tables switched: the old one is idle now
                self._idle[:, flipped] = self._table[:, flipped]
                self._alt[flipped] = ~self._alt[flipped]
            self._installed(rows)
            self.applied_k = k
        self.last_apply = {"namespaces": len(items), "send_ms": (t1 - t0) * 1e3,
                           "ack_ms": (time.monotonic() - t1) * 1e3, "sender_namespaces": remote,
                           "switched_namespaces": 0 if flipped is None else len(flipped)}
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
        flip = self._ready_to_switch(k)
        if flip is not None and len(flip):       # a big step: these switch tables, the rest send
            keep = ~np.isin(node, flip)
            with self.lock:
                count, items = self._route_requests(node[keep].tolist(), dst[keep].tolist(), hop[keep].tolist())
                for v in flip.tolist():
                    nl = self._nl_by_index[v]
                    nl.table_rule(ALT_TABLE, ALT_RULE_PRIORITY, add=not self._alt[v])
                    items.append((v, nl, nl.stage()))
            return count + int((~keep & ~self._own[dst, node]).sum()), items, (node, dst, hop), flip
        with self.lock:
            return (*self._route_requests(node.tolist(), dst.tolist(), hop.tolist()), (node, dst, hop))

    def _diff(self, table: np.ndarray):
        """Requests that turn the installed next hops into `table` (nodes in scope)."""
        dst, node = np.nonzero((table != self._table) & self._in_scope[None, :])
        hop = table[dst, node]
        with self.lock:
            return (*self._route_requests(node.tolist(), dst.tolist(), hop.tolist()), (node, dst, hop))

    # ------------------------------------------------------------------ big steps

    def prepare_big_step(self, k: int):
        """For a big step k (at least FLIP_MIN_STEP_CHANGES changes, no live faults): a callable
        that puts step k's next hops into the idle table of each namespace with at least
        FLIP_MIN_NODE_CHANGES changes in it, a chunk of about PREP_CHUNK_ROUTES routes per call,
        returning False when done (the player calls it between steps, ahead of step k). None for
        any other step. The idle table is not in force: nothing forwards differently until the
        namespace switches at step k's instant (`stage` packs the switch of those ready then)."""
        if self.changes_at(k) < FLIP_MIN_STEP_CHANGES or self._view is not None or k in self._flip_target:
            return None
        state: dict = {}

        def work() -> bool:
            if self._view is not None or (self.applied_k is not None and self.applied_k >= k):
                return False                      # live faults, or too late: step k sends its changes
            if not state:                         # first call: step k's table and who switches
                target = self._table.copy()
                for j in range((self.applied_k if self.applied_k is not None else k - 1) + 1, k + 1):
                    g = self._nh_by_step.get(j)
                    if g is not None:
                        target[g["dst"].to_numpy(), g["node"].to_numpy()] = g["next_hop"].to_numpy()
                node = self._nh_by_step[k]["node"].to_numpy()
                counts = np.bincount(node, minlength=self._n)
                who = np.nonzero(counts >= FLIP_MIN_NODE_CHANGES)[0]
                self._flip_target[k] = (target, who)
                state["todo"] = who.tolist()
                return True
            target = self._flip_target[k][0]
            todo, n_routes = state["todo"], 0
            until = time.monotonic() + PREP_CHUNK_S
            with self.lock:
                sent = []
                while todo and n_routes < PREP_CHUNK_ROUTES and time.monotonic() < until:
                    v = todo.pop()
                    col = self._idle[:, v]
                    ds = np.nonzero((col != target[:, v]) & ~self._own[:, v])[0]
                    nl = self._nl_by_index[v]
                    if not self._warm[v] and not self._alt[v]:   # (ALT_TABLE is still empty:
                        nl.table_rule(ALT_TABLE, ALT_RULE_PRIORITY, add=True)   # lookups fall
                        nl.table_rule(ALT_TABLE, ALT_RULE_PRIORITY, add=False)  # through to main)
                        self._warm[v] = True
                    if len(ds):         # (packs the rule requests queued above too, first)
                        idle = MAIN_TABLE if self._alt[v] else ALT_TABLE
                        _, items = self._route_requests([v] * len(ds), ds.tolist(), target[ds, v].tolist(), table=idle)
                        sent += [(v, ds, nl, st) for _, nl, st in items]
                    elif nl.batch:
                        sent.append((v, ds, nl, nl.stage()))
                    n_routes += len(ds) + 1
                for _, _, nl, st in sent:
                    nl.send(st)
                for v, ds, nl, st in sent:
                    nl.finish(st)
                    self._idle[ds, v] = target[ds, v]
            return bool(todo)

        return work

    def _ready_to_switch(self, k: int) -> np.ndarray | None:
        """The nodes that switch tables at big step k: those chosen ahead whose idle table holds
        step k's next hops (None: not a prepared big step, or live faults hold the routes)."""
        prep = self._flip_target.pop(k, None)
        for j in [j for j in self._flip_target if j < k]:
            del self._flip_target[j]
        if prep is None or self._view is not None:
            return None
        target, who = prep
        if not len(who):
            return who
        ok = ((self._idle[:, who] == target[:, who]) | self._own[:, who]).all(axis=0)
        return who[ok]

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

    def _route_requests(self, nodes: list[int], dsts: list[int], hops: list[int], table: int | None = None):
        """Pack route changes (node, destination index, next-hop node; −1: unreachable) into each
        node's batch, in the table in force there (or `table`). Returns (count, [(v, nl, staged)])."""
        n, hop, lo4, dst4, dst_node, nl_of = self._n, self._hop, self._lo4, self._dst4, self._dst_node, self._nl_by_index
        nh_objects = bool(self.nexthop_objects)
        touched = {}
        count = 0
        alt = set(np.nonzero(self._alt)[0].tolist()) if table is None else ()
        for v, d, u in zip(nodes, dsts, hops):
            if v == dst_node[d]:
                continue
            nl = nl_of[v]
            tb = table if table is not None else (ALT_TABLE if v in alt else MAIN_TABLE)
            via = hop.get(v * n + u) if u >= 0 else None
            if via is None:                       # no next hop, or one outside the scope
                nl.route_unreachable4(dst4[d], tb)
            elif nh_objects:
                nl.route_nh4(dst4[d], via[0], lo4[v], tb)
            else:
                nl.route_via4(dst4[d], via[1], via[0], lo4[v], tb)
            touched[v] = nl
            count += 1
        return count, [(v, nl, nl.stage()) for v, nl in touched.items()]

    # ------------------------------------------------------------------ use

    def installed_routes(self, node: str) -> list[dict]:
        """netemu's routes in `node` now (from the kernel): dst, gateway, oif, type."""
        with self.lock:
            v = self._index_of_name[self.node_names.index(node)] if len(self._alt) else None
            return self._rtnl[node].routes(ALT_TABLE if v is not None and self._alt[v] else MAIN_TABLE)

    def close(self) -> None:
        for nl in self._rtnl.values():
            nl.close()
        self._rtnl.clear()
