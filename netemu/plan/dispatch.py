"""Where a request goes: the cluster's dispatch policies as one pure function.

An entry node forwards each inference request to one compute satellite of its cluster. At the
instant a request arrives the entry node knows, per candidate satellite, its hops from the entry
node, its load (busy batch slots of its slots), whether it is sunlit and its state of charge.
`choose_server` picks one by policy:

- `nearest`: fewest hops; then the lighter load; then the name.
- `least-loaded`: the smallest share of busy slots; then fewest hops; then the name.
- `sunlit-first`: a sunlit satellite before one in shadow; among them fewest hops, then the
  lighter load, then the name.
- `power-aware`: the highest state of charge; then fewest hops, then the lighter load, then
  the name.

Satellites without slots (refusing work: no active accelerators) are chosen by no policy unless
no candidate has any (then the policy's order applies to all: the request queues or is refused
there). Ties end at the node name, so the choice never depends on the candidates' order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["DISPATCH_POLICIES", "choose_server"]

DISPATCH_POLICIES = ("nearest", "least-loaded", "sunlit-first", "power-aware")


def choose_server(policy: str, names: Sequence[str], hops, busy_slots, slots, sunlit, soc_pct) -> int | None:
    """Index into `names` of the satellite the request goes to, or None without candidates.

    hops[K] (hops from the entry node), busy_slots[K] and slots[K] (batch slots in use and in
    all, at the active accelerators), sunlit[K] (true or a sunlit fraction: sunlit from 0.5,
    the Sun's centre above the Earth's limb) and soc_pct[K]."""
    if policy not in DISPATCH_POLICIES:
        raise ValueError(f"unknown dispatch policy {policy!r}; expected one of {', '.join(DISPATCH_POLICIES)}")
    K = len(names)
    if K == 0:
        return None
    hops = np.asarray(hops, dtype=np.float64)
    busy = np.asarray(busy_slots, dtype=np.float64)
    slots = np.asarray(slots, dtype=np.float64)
    lit = np.asarray(sunlit, dtype=np.float64) >= 0.5
    soc = np.asarray(soc_pct, dtype=np.float64)
    for a in (hops, busy, slots, lit, soc):
        if a.shape != (K,):
            raise ValueError(f"expected {K} values per candidate, found shape {a.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        load = np.where(slots > 0, busy / slots, np.inf)
    name_rank = np.argsort(np.argsort(np.asarray(names, dtype=object)))
    closed = ~(slots > 0)
    if closed.all():
        closed[:] = False
    # np.lexsort sorts by the last key first.
    keys = {
        "nearest": (name_rank, busy, load, hops),
        "least-loaded": (name_rank, hops, load),
        "sunlit-first": (name_rank, load, hops, ~lit),
        "power-aware": (name_rank, load, hops, -soc),
    }[policy]
    order = np.lexsort((*keys, closed))
    return int(order[0])
