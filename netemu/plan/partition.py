"""Which nodes go on which host when one emulation spreads over several (pure).

`partition(plan, hosts)` follows docs/cluster-design.md §5 (shared design input):
1. atomic units: nodes joined by a link whose shortest delay in the plan is below the cut
   threshold (default 0.5 ms: a cut link carries its frames over the hosts' network, whose
   latency and clock offset must stay small against the link's delay) are one unit, whatever
   the group (a formation cluster, a close relay pass);
2. ground stations go on the coordinator's host (host 0): ground links are ≥ 1.8 ms, always
   cuttable, and handovers then never move a node;
3. Walker shells are placed as contiguous blocks of orbital planes, so only the inter-plane
   links at block edges are cut (Starlink S1 on 4 hosts: 88 of 3,168 lasers); other units
   follow in their groups' order;
4. hosts are balanced on two measures at once, each as a share of its total: expected engine
   load (frames/s through each node's links on the plan's endpoint paths for the run's probes
   and the scenario's workloads) and node count (memory, namespaces, and the routes each step
   rewrites). A unit weighs LOAD_SHARE of its load share plus the rest of its node share, and
   each host takes about 1/hosts of the sum, so neither measure exceeds about 2/hosts on one
   host. (The design input balanced load alone; with only probe traffic that put 2,124 of
   Starlink Gen1's 4,408 nodes on one host of four, 5.3 GiB against 1.9 GiB on another.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import PlanError
from .pairs import default_probe_pairs
from .scenario import WalkerShell, group_node_names

__all__ = ["Partition", "partition", "emulation_memory_mib", "CUT_THRESHOLD_MS", "LOAD_SHARE", "MEMORY_BASE_MIB",
           "MEMORY_PER_NODE_MIB"]

CUT_THRESHOLD_MS = 0.5
# Calibrated on `netemu run` peaks (PSS of the whole process tree plus the growth of the kernel's
# slab, stacks and page tables), 2-core VM: tests/data/small.toml (152 nodes, 303 links) 1.26 GiB,
# the default scenario (214 nodes, 482 links, with workloads) 1.77 GiB, Starlink shell 1 --scope
# all (1,684 nodes, 3,288 links) 4.4 GiB (3.4 GiB of it processes). The base is netemu with its
# plan, the link engines, probes and agents; each node adds its namespace, shell, routes and its
# share of the links (about two per node in these constellations).
MEMORY_BASE_MIB = 1200
MEMORY_PER_NODE_MIB = 2.0
PROBE_FRAMES_PER_S = 2 * 20.0     # a probe pair at the default 20 echoes/s: echo and reply
BASE_FRAMES_PER_S = 1.0           # a node's own share (routes, neighbour upkeep) so idle nodes still weigh
LOAD_SHARE = 0.5                  # a unit's weight: this much of its load share, the rest of its node share


def emulation_memory_mib(nodes: int) -> float:
    """Peak memory of an emulation host running `nodes` nodes (MiB, the calibrated model)."""
    return MEMORY_BASE_MIB + MEMORY_PER_NODE_MIB * nodes


@dataclass(frozen=True)
class Partition:
    """`host_of` node name → host index (0 = the coordinator's host), `cut_threshold_ms`, and
    `hosts`: one row per host (host, nodes, satellites, ground, links, cut_links, cut_isls,
    cut_gsls, load_frames_per_s, memory_mib)."""

    host_of: dict[str, int]
    cut_threshold_ms: float
    hosts: pd.DataFrame

    def text(self) -> str:
        h = self.hosts
        lines = [f"{'host':>4} {'nodes':>7} {'sats':>6} {'ground':>6} {'links':>7} {'cut':>6} "
                 f"{'cut ISL':>8} {'cut GSL':>8} {'load frames/s':>14} {'memory':>9}"]
        for r in h.itertuples(index=False):
            lines.append(f"{r.host:>4} {r.nodes:>7,} {r.satellites:>6,} {r.ground:>6,} {r.links:>7,} {r.cut_links:>6,} "
                         f"{r.cut_isls:>8,} {r.cut_gsls:>8,} {r.load_frames_per_s:>14,.0f} {r.memory_mib / 1024:>7.2f} GiB")
        total_cut = int(h["cut_links"].sum() // 2)
        lines.append(f"cut links: {total_cut:,} (threshold {self.cut_threshold_ms:g} ms: shorter links are never cut)")
        return "\n".join(lines)


def _unions(names: list[str], short: pd.DataFrame) -> dict[str, str]:
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in zip(short["a"], short["b"]):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: find(n) for n in names}


def _load(plan, workload_frames_per_s: float) -> dict[str, float]:
    """Expected frames/s through each node: every probe pair and workload pair's traffic on the
    nodes of its planned path, averaged over the plan's steps."""
    sc = plan.scenario
    pairs = {tuple(sorted(p)): PROBE_FRAMES_PER_S for p in default_probe_pairs(plan)}
    for w in sc.workloads:
        ends = list(w.clients) + ([w.server] if w.server else [])
        for c in w.clients:
            for s in ([w.server] if w.server else [e for e in ends if e != c]):
                key = tuple(sorted((c, s)))
                pairs[key] = pairs.get(key, 0.0) + workload_frames_per_s
    load: dict[str, float] = {}
    r = plan.routes.routes                 # a row per path change of a pair: weight it by how long it holds
    if not len(r) or not pairs:
        return load
    T = len(plan.schedule.t_s)
    r = r.sort_values(["src", "dst", "step"])
    src, dst = r["src"].astype(str).to_numpy(), r["dst"].astype(str).to_numpy()
    steps = r["step"].to_numpy()
    same_next = np.r_[(src[1:] == src[:-1]) & (dst[1:] == dst[:-1]), False]
    held = np.where(same_next, np.r_[steps[1:], T] - steps, T - steps) / T
    want = {f"{a}>{b}": f for (a, b), f in pairs.items()}
    for a_, b_, p, share in zip(src, dst, r["path"].to_numpy(), held):
        f = want.get(f"{min(a_, b_)}>{max(a_, b_)}")
        if f and p:
            for n in p.split(">"):
                load[n] = load.get(n, 0.0) + f * share
    return load


def partition(plan, hosts: int, cut_threshold_ms: float = CUT_THRESHOLD_MS,
              workload_frames_per_s: float = 1000.0) -> Partition:
    """Place the plan's nodes on `hosts` hosts (see the module's docstring). A workload pair is
    taken to carry `workload_frames_per_s` (about 12 Mbit/s of full-size frames) when sizing
    the load."""
    if not isinstance(hosts, int) or hosts < 1:
        raise PlanError(f"hosts: expected a whole number ≥ 1, found {hosts!r}")
    if not cut_threshold_ms >= 0:
        raise PlanError(f"cut threshold: expected ≥ 0 ms, found {cut_threshold_ms!r}")
    sched, sc = plan.schedule, plan.scenario
    nodes = sched.nodes
    kind = dict(zip(nodes["name"], nodes["kind"].astype(str)))
    ground = [n for n in sched.node_names if kind[n] == "ground"]
    L = sched.links
    pair = L.groupby(["a", "b"], observed=True).agg(delay_ms=("delay_ms", "min"), kind=("kind", "first")).reset_index()
    pair["a"], pair["b"] = pair["a"].astype(str), pair["b"].astype(str)
    short = pair[(pair["delay_ms"] < cut_threshold_ms) & (pair["kind"].astype(str) != "gsl")]
    unit_of = _unions(list(sched.node_names), short)
    load = _load(plan, workload_frames_per_s)

    # units in placement order: Walker shells plane by plane, then the other groups' satellites
    order: list[str] = []
    seen: set[str] = set()
    for g in sc.satellites:
        for n in group_node_names(g):
            u = unit_of.get(n, n)
            if u not in seen and kind.get(n) != "ground":
                seen.add(u)
                order.append(u)
    members: dict[str, list[str]] = {}
    for n, u in unit_of.items():
        members.setdefault(u, []).append(n)
    node_load = {n: BASE_FRAMES_PER_S + load.get(n, 0.0) for n in unit_of}
    total_load, total_nodes = sum(node_load.values()), len(unit_of)

    def weight_of(names: list[str]) -> float:
        return (LOAD_SHARE * sum(node_load[n] for n in names) / total_load
                + (1 - LOAD_SHARE) * len(names) / total_nodes)
    weight = {u: weight_of(members[u]) for u in order}
    ground_units = {unit_of[n] for n in ground}
    order = [u for u in order if u not in ground_units]

    host_of = {n: 0 for u in ground_units for n in members[u]}
    acc = weight_of(list(host_of))
    target = (acc + sum(weight[u] for u in order)) / hosts
    h = 0
    for u in order:                       # contiguous blocks, each about a host's share of the load
        if h < hosts - 1 and acc + weight[u] / 2 > target * (h + 1):
            h += 1
        acc += weight[u]
        for n in members[u]:
            host_of[n] = h
    # a Walker shell's boundaries land between whole planes: snap each cut to the nearest plane edge
    host_of = _snap_to_planes(sc, host_of, hosts)

    a, b = pair["a"].map(host_of), pair["b"].map(host_of)
    cut = a != b
    rows = []
    for hh in range(hosts):
        mine = [n for n, x in host_of.items() if x == hh]
        at_a, at_b = a == hh, b == hh
        own = pair[at_a & at_b]
        c = pair[cut & (at_a | at_b)]
        n_ground = sum(1 for n in mine if kind.get(n) == "ground")
        rows.append({"host": hh, "nodes": len(mine), "satellites": len(mine) - n_ground, "ground": n_ground,
                     "links": int(len(own)), "cut_links": int(len(c)),
                     "cut_isls": int((c["kind"].astype(str) != "gsl").sum()),
                     "cut_gsls": int((c["kind"].astype(str) == "gsl").sum()),
                     "load_frames_per_s": round(sum(BASE_FRAMES_PER_S + load.get(n, 0.0) for n in mine), 1),
                     "memory_mib": round(emulation_memory_mib(len(mine)), 0)})
    return Partition(host_of, cut_threshold_ms, pd.DataFrame(rows))


def _snap_to_planes(sc, host_of: dict[str, int], hosts: int) -> dict[str, int]:
    """Within each Walker shell, give every plane the host most of its satellites have (a block
    boundary inside a plane would cut its fore/aft lasers)."""
    out = dict(host_of)
    for g in sc.satellites:
        if not isinstance(g, WalkerShell):
            continue
        names = group_node_names(g)
        S = g.sats_per_plane
        for p in range(g.planes):
            plane = names[p * S:(p + 1) * S]
            hs = [host_of[n] for n in plane if n in host_of]
            if hs:
                h = max(set(hs), key=hs.count)
                for n in plane:
                    out[n] = h
    return out
