"""The addressing plan of an emulated network: one /32 loopback per node, one /31 per link.

Pure: from a Schedule's nodes and links to tables. Every pair of nodes that is linked at some
step gets one link (its interfaces stay for the whole run; up/down follows the schedule), so the
plan is stable across handovers. Sized for large constellations: loopbacks come from
10.128.0.0/9 (8 M nodes), link /31s from 10.0.0.0/9 (4 M links).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from ..errors import PlanError

__all__ = ["address_plan", "address_table", "link_mac", "LOOPBACK_NET", "LINK_NET", "MAX_IFACES_PER_NODE"]

LOOPBACK_NET = ipaddress.IPv4Network("10.128.0.0/9")
LINK_NET = ipaddress.IPv4Network("10.0.0.0/9")
MAX_IFACES_PER_NODE = 1000   # interface names are `<node>-e<k>`: node ≤ 10 chars, k ≤ 3 digits


def _dotted(ints: np.ndarray) -> np.ndarray:
    ints = ints.astype(np.uint32)
    parts = [(ints >> s) & 0xFF for s in (24, 16, 8, 0)]
    return np.char.add(np.char.add(np.char.add(np.char.add(parts[0].astype(str), "."), parts[1].astype(str)),
                                   np.char.add(".", parts[2].astype(str))), np.char.add(".", parts[3].astype(str)))


def address_plan(nodes: pd.DataFrame, links: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loopbacks and links of the network described by a Schedule's `nodes` and `links`.

    Returns (loopbacks: name, loopback), (links: link, a, b, kind, a_ifname, b_ifname, a_addr,
    b_addr, prefix_len) with one row per distinct linked pair, in order of first appearance.
    Raises `PlanError` if the plan does not fit (too many nodes, links or interfaces per node).
    """
    names = nodes["name"].to_numpy()
    if len(names) > LOOPBACK_NET.num_addresses - 2:
        raise PlanError(f"address plan: {len(names):,} nodes exceed the loopback range {LOOPBACK_NET} "
                        f"({LOOPBACK_NET.num_addresses - 2:,} addresses); emulate fewer nodes (--scope paths)")
    lo = pd.DataFrame({"name": names, "loopback": _dotted(int(LOOPBACK_NET.network_address) + 1 + np.arange(len(names)))})
    a = links["a"].cat.codes.to_numpy().astype(np.int64)
    b = links["b"].cat.codes.to_numpy().astype(np.int64)
    n = len(names)
    key, first = np.unique(a * n + b, return_index=True)
    order = np.argsort(first, kind="stable")
    key, first = key[order], first[order]
    la, lb = key // n, key % n
    L = len(key)
    if 2 * L > LINK_NET.num_addresses:
        raise PlanError(f"address plan: {L:,} linked pairs exceed the link range {LINK_NET} "
                        f"({LINK_NET.num_addresses // 2:,} /31 subnets); emulate fewer nodes (--scope paths) "
                        "or a shorter window")
    # k-th interface of each node, numbered in link order
    ends = np.concatenate([la, lb])
    pos = np.empty(2 * L, np.int64)
    srt = np.argsort(ends, kind="stable")
    counts = np.bincount(ends, minlength=n)
    if counts.max(initial=0) > MAX_IFACES_PER_NODE:
        worst = names[int(np.argmax(counts))]
        raise PlanError(f"address plan: node {worst} would have {counts.max():,} interfaces; at most "
                        f"{MAX_IFACES_PER_NODE} (names end in -e0 … -e999); fewer neighbours over the window, "
                        "e.g. a shorter window or fewer terminals")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos[srt] = np.arange(2 * L) - np.repeat(starts, counts)
    base = int(LINK_NET.network_address) + 2 * np.arange(L)
    kinds = links["kind"].astype(str).to_numpy()[first]
    table = pd.DataFrame({
        "link": [f"L{i}" for i in range(L)],
        "a": names[la], "b": names[lb], "kind": kinds,
        "a_ifname": np.char.add(np.char.add(names[la].astype(str), "-e"), pos[:L].astype(str)),
        "b_ifname": np.char.add(np.char.add(names[lb].astype(str), "-e"), pos[L:].astype(str)),
        "a_addr": _dotted(base), "b_addr": _dotted(base + 1), "prefix_len": 31})
    return lo, table


def link_mac(link_index: int, side: int) -> str:
    """The fixed MAC of side 0 or 1 of link `link_index` (locally administered, unique per run)."""
    v = 2 * link_index + side
    return "02:4e:" + ":".join(f"{(v >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def address_table(node_names: list[str], loopbacks: dict[str, str], link_table: pd.DataFrame) -> pd.DataFrame:
    """One row per interface: node, ifname, address, prefix_len, mac, link, peer, peer_address, kind."""
    rows = [(n, "lo", loopbacks[n], 32, "", "", "", "", "loopback") for n in node_names]
    for i, r in enumerate(link_table.itertuples(index=False)):
        rows.append((r.a, r.a_ifname, r.a_addr, 31, link_mac(i, 0), r.link, r.b, r.b_addr, r.kind))
        rows.append((r.b, r.b_ifname, r.b_addr, 31, link_mac(i, 1), r.link, r.a, r.a_addr, r.kind))
    return pd.DataFrame(rows, columns=["node", "ifname", "address", "prefix_len", "mac", "link", "peer",
                                       "peer_address", "kind"])
