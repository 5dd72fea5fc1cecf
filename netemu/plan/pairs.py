"""Which endpoint pairs a run probes by default, and what probing them costs (pure)."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_PROBE_PAIRS", "default_probe_pairs", "spread_stations", "probe_frames_per_s"]

DEFAULT_PROBE_PAIRS = 10   # default probe pairs at most: each is a process at 20 echoes/s (the
                           # 99 of a 100-city scenario loaded the host and started seconds late)


def default_probe_pairs(plan, max_pairs: int = DEFAULT_PROBE_PAIRS) -> list[tuple[str, str]]:
    """Ground stations to the first compute satellite (to the first endpoint if there is no
    compute satellite): all of them up to `max_pairs`, else `max_pairs` spread over the
    globe (the first station, then each time the one farthest from those chosen)."""
    nodes = plan.schedule.nodes
    eps = list(plan.scenario.endpoints)
    kind = dict(zip(nodes["name"], nodes["kind"]))
    compute = [e for e in eps if kind.get(e) == "compute"]
    target = compute[0] if compute else eps[0]
    sources = [e for e in eps if kind.get(e) == "ground" and e != target]
    if len(sources) > max_pairs:
        sources = spread_stations(plan.scenario.ground_stations, sources, max_pairs)
    return [(e, target) for e in sources]


def spread_stations(stations, names: list[str], n: int) -> list[str]:
    """`n` of the stations `names` spread over the globe (farthest-point order from the first;
    ties go to the earlier station), in the order of `names`."""
    where = {st.name: (st.lat_deg, st.lon_deg) for st in stations}
    lat, lon = np.radians(np.array([where[x] for x in names], float)).T
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    chosen = [0]
    nearest = np.linalg.norm(xyz - xyz[0], axis=1)      # chord to the nearest chosen station
    while len(chosen) < min(n, len(names)):
        i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(xyz - xyz[i], axis=1))
    return [names[i] for i in sorted(chosen)]


def probe_frames_per_s(plan, pairs: list[tuple[str, str]], rate_hz: float) -> float:
    """Link traversals per emulated second of `pairs` probed at `rate_hz`: each echo crosses
    its path's links there and back (the planned hops, averaged over the plan; 1 when unknown)."""
    paths = plan.routes.paths
    ends = {x for pair in pairs for x in pair}
    paths = paths[paths["src"].isin(ends) & paths["dst"].isin(ends)]
    hops = paths.groupby(["src", "dst"], observed=True)["hops"].mean()
    total = 0.0
    for s, d in pairs:
        h = hops.get((s, d), hops.get((d, s), 1.0))
        total += 2 * rate_hz * float(h if h == h else 1.0)
    return total
