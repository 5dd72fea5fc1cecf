"""Routing: paths against networkx on snapshots, path delay = sum of its links, no ground transit."""


import networkx as nx
import numpy as np
import pandas as pd
import pytest

from netemu.plan.routing import compute_routes


def _link_delay(links):
    return {(r.step, r.a, r.b): r.delay_ms for r in links[links["up"]].itertuples(index=False)}


def test_path_delay_is_sum_of_its_links(small_plan):
    delay = _link_delay(small_plan.schedule.links)
    routes = small_plan.routes.routes
    checked = 0
    for r in routes.itertuples(index=False):
        if not r.path:
            continue
        nodes = r.path.split(">")
        assert nodes[0] == r.src and nodes[-1] == r.dst
        total = sum(delay[(r.step, *sorted((u, v), key=small_plan.schedule.node_names.index))]
                    for u, v in zip(nodes, nodes[1:]))
        assert total == pytest.approx(r.delay_ms, rel=1e-9)
        assert len(nodes) - 1 == r.hops
        checked += 1
    assert checked > 30


def test_paths_match_networkx_and_never_transit_ground(small_plan):
    sched, routes = small_plan.schedule, small_plan.routes
    kinds = dict(zip(sched.nodes["name"], sched.nodes["kind"]))
    ground = {n for n, k in kinds.items() if k == "ground"}
    paths = routes.paths.set_index(["step", "src", "dst"])
    eps = routes.endpoints
    compared = 0
    for step in (0, 17, 60, 120):
        g = sched.snapshot(sched.t_s[step])
        for i, s in enumerate(eps):
            for d in eps[i + 1:]:
                h = g.subgraph(set(g) - (ground - {s, d}))
                try:
                    ref = nx.dijkstra_path_length(h, s, d, weight="delay_ms")
                except nx.NetworkXNoPath:
                    assert (step, s, d) not in paths.index
                    continue
                assert paths.loc[(step, s, d), "delay_ms"] == pytest.approx(ref, rel=1e-9)
                compared += 1
    assert compared > 40
    for p in routes.routes["path"]:
        inner = p.split(">")[1:-1] if p else []
        assert not ground.intersection(inner)


def test_routes_recover_the_path_at_every_step(small_plan):
    """Path at step k from routes.parquet equals the path that step's own tree gives."""
    r = small_plan.routes
    single = compute_routes(small_plan.schedule, r.endpoints, workers=1)
    pd.testing.assert_frame_equal(single.paths.reset_index(drop=True), r.paths.reset_index(drop=True))
    pd.testing.assert_frame_equal(single.routes.reset_index(drop=True), r.routes.reset_index(drop=True))
    # every step's hop count agrees with the path in force then
    in_force = r.routes.sort_values("step")
    sample = r.paths.sample(300, random_state=1)
    for row in sample.itertuples(index=False):
        cur = in_force[(in_force["src"] == row.src) & (in_force["dst"] == row.dst) & (in_force["step"] <= row.step)]
        assert len(cur["path"].iloc[-1].split(">")) - 1 == row.hops
        assert r.path_at(row.src, row.dst, row.t_s) == cur["path"].iloc[-1].split(">")
        assert r.path_at(row.dst, row.src, row.t_s) == cur["path"].iloc[-1].split(">")[::-1]


def test_hops_metric_minimises_hops(small_plan):
    sched = small_plan.schedule
    by_hops = compute_routes(sched, small_plan.routes.endpoints, metric="hops", workers=1)
    merged = by_hops.paths.merge(small_plan.routes.paths, on=["step", "src", "dst"], suffixes=("_h", "_d"))
    assert len(merged) == len(small_plan.routes.paths)
    assert (merged["hops_h"] <= merged["hops_d"]).all()
    assert (merged["delay_ms_h"] >= merged["delay_ms_d"] - 1e-9).all()
    assert (merged["hops_h"] < merged["hops_d"]).any() or (merged["delay_ms_h"] > merged["delay_ms_d"]).any()
    g = sched.snapshot(sched.t_s[30])
    ground = {n for n, k in zip(sched.nodes["name"], sched.nodes["kind"]) if k == "ground"}
    for row in by_hops.paths[by_hops.paths["step"] == 30].itertuples(index=False):
        h = g.subgraph(set(g) - (ground - {row.src, row.dst}))
        assert row.hops == nx.shortest_path_length(h, row.src, row.dst)


def test_ground_relay_allows_transit(small_plan):
    sched = small_plan.schedule
    relay = compute_routes(sched, small_plan.routes.endpoints, ground_relay=True, workers=1)
    m = relay.paths.merge(small_plan.routes.paths, on=["step", "src", "dst"], how="left", suffixes=("_r", "_n"))
    assert (m["delay_ms_r"] <= m["delay_ms_n"].fillna(np.inf) + 1e-9).all()
    g = sched.snapshot(sched.t_s[60])
    for row in relay.paths[relay.paths["step"] == 60].itertuples(index=False):
        assert row.delay_ms == pytest.approx(nx.dijkstra_path_length(g, row.src, row.dst, weight="delay_ms"), rel=1e-9)


def test_unreachable_pairs_have_no_path_rows_and_an_empty_route(small_plan):
    r = small_plan.routes
    E = len(r.endpoints)
    per_step = r.paths.groupby("step").size()
    assert per_step.min() < E * (E - 1) // 2        # the small scenario has gaps in coverage
    empty = r.routes[r.routes["path"] == ""]
    assert len(empty) > 0 and empty["delay_ms"].isna().all() and empty["hops"].isna().all()


def test_next_hops_walk_the_planned_paths(small_plan):
    """Following next hops hop by hop from src reaches dst along the planner's path (src→dst in
    dst's tree, as routes lists it) at every step, and only changed entries are listed."""
    from netemu.plan.routing import next_hop_changes
    sched, routes, sc = small_plan.schedule, small_plan.routes, small_plan.scenario
    names = sched.node_names
    idx = {n: i for i, n in enumerate(names)}
    eps = sc.endpoints
    nh_changes = next_hop_changes(sched, eps, sc.routing.metric, sc.routing.ground_relay, workers=2)
    assert (nh_changes["step"].diff().dropna() >= 0).all()
    table = np.full((len(eps), len(names)), -2, np.int32)
    by_step = {k: g for k, g in nh_changes.groupby("step")}
    assert by_step[0].shape[0] == len(eps) * len(names)
    walked = 0
    for k in range(len(sched.t_s)):
        if k in by_step:
            g = by_step[k]
            if k > 0:  # only real changes are listed
                assert (table[g["dst"], g["node"]] != g["next_hop"]).all()
            table[g["dst"], g["node"]] = g["next_hop"]
        if k % 7:
            continue
        for s in range(len(eps)):
            for d in range(len(eps)):
                if s == d:
                    continue
                expect = routes.path_at(eps[s], eps[d], sched.t_s[k]) if s < d else \
                    routes.path_at(eps[d], eps[s], sched.t_s[k])[::-1]
                # routes lists src→dst in dst's tree; the reverse direction walks src's tree,
                # which has the same delay but may take another equal-delay path
                path, v = [eps[s]], idx[eps[s]]
                while v != idx[eps[d]] and len(path) <= len(names):
                    v = table[d, v]
                    if v < 0:
                        path = []
                        break
                    path.append(names[v])
                if s < d:
                    assert path == expect, (k, eps[s], eps[d])
                else:
                    assert bool(path) == bool(expect)
                walked += bool(path)
    assert walked > 100


@pytest.mark.parametrize("ground_relay", [False, True])
def test_reused_trees_route_exactly_as_dijkstra_at_every_step(small_plan, monkeypatch, ground_relay):
    # Trees kept from the previous step (routing._TreeCache) must give bit for bit the paths,
    # delays and route rows of routing every step afresh, while recomputing far fewer trees.
    from netemu.plan import routing
    roots = []
    real = routing.dijkstra

    def counting(M, **kw):
        roots.append(len(np.atleast_1d(kw["indices"])))
        return real(M, **kw)
    monkeypatch.setattr(routing, "dijkstra", counting)
    monkeypatch.setattr(routing._Modes, "reuse", lambda self, i: True)   # not by what each costs here
    sched, eps = small_plan.schedule, small_plan.routes.endpoints
    out = {}
    for reuse in (False, True):
        monkeypatch.setattr(routing, "REUSE_TREES", reuse)
        roots.clear()
        out[reuse] = (compute_routes(sched, eps, "delay", ground_relay, workers=1), sum(roots))
    (fresh, n_fresh), (kept, n_kept) = out[False], out[True]
    pd.testing.assert_frame_equal(fresh.paths, kept.paths, check_exact=True)
    pd.testing.assert_frame_equal(fresh.routes, kept.routes, check_exact=True)
    assert len(kept.routes) > len(eps) * (len(eps) - 1) // 2     # paths did change over the window
    assert n_fresh == len(eps) * len(sched.t_s)
    assert n_kept < 0.75 * n_fresh, (n_kept, n_fresh)


def test_next_hop_table_with_failed_elements(small_plan):
    """next_hop_table (live fault repair): with nothing failed it is next_hop_changes' table at
    that step; with a relay failed, every next hop toward each endpoint follows a shortest path
    networkx finds in the step's graph without it, and none leads into it."""
    from netemu.plan.routing import next_hop_changes, next_hop_table
    sched, eps = small_plan.schedule, tuple(small_plan.scenario.endpoints)
    names = sched.node_names
    k = 40
    nh = next_hop_changes(sched, eps, steps=(k, k + 1), workers=1)
    want = np.full((len(eps), len(names)), -1, np.int32)
    want[nh["dst"].to_numpy(), nh["node"].to_numpy()] = nh["next_hop"].to_numpy()
    assert (next_hop_table(sched, eps, k) == want).all()
    # fail the busiest relay of that step's trees
    hops = want[want >= 0]
    relay = next(int(i) for i in np.bincount(hops).argsort()[::-1] if names[int(i)][0] == "w")
    table = next_hop_table(sched, eps, k, down_nodes=[relay])
    assert not (table == relay).any() and (table != want).any()
    g = sched.snapshot(float(sched.t_s[k]))
    g.remove_node(names[relay])
    g.remove_nodes_from([n for n in list(g) if n.startswith("g-") and n not in eps])
    for d, dst in enumerate(eps):
        if dst not in g:
            continue
        dist = nx.single_source_dijkstra_path_length(g, dst, weight="delay_ms")
        for v in range(len(names)):
            u = table[d, v]
            name = names[v]
            if u < 0 or name == dst or name not in dist:
                continue
            # the next hop is on a shortest path: its distance + the link's delay is the node's
            via = dist[names[u]] + g[name][names[u]]["delay_ms"]
            assert via == pytest.approx(dist[name], abs=1e-6), (name, dst, names[u])
    # a failed link: the node whose next hop toward the first endpoint crossed it takes another
    u = int(want[0][relay])
    if u >= 0:
        t2 = next_hop_table(sched, eps, k, down_links=[(u, relay)])
        assert t2[0][relay] != u
