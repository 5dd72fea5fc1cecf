"""The addressing plan: unique /32 loopbacks, one /31 per linked pair, interface names that fit."""

import ipaddress

import numpy as np
import pandas as pd
import pytest

from netemu.emulate.addressing import LINK_NET, LOOPBACK_NET, address_plan
from netemu.errors import PlanError


def test_plan_of_the_small_scenario(small_plan):
    sched = small_plan.schedule
    lo, links = address_plan(sched.nodes, sched.links)
    assert len(lo) == len(sched.nodes) and lo["loopback"].is_unique
    assert all(ipaddress.IPv4Address(x) in LOOPBACK_NET for x in lo["loopback"])
    pairs = set(zip(sched.links["a"].astype(str), sched.links["b"].astype(str)))
    assert set(zip(links["a"], links["b"])) == pairs and len(links) == len(pairs)
    for r in links.itertuples(index=False):
        net = ipaddress.IPv4Network(f"{r.a_addr}/31", strict=True)
        assert net.subnet_of(LINK_NET) and ipaddress.IPv4Address(r.b_addr) in net and r.a_addr != r.b_addr
    assert pd.concat([links["a_addr"], links["b_addr"]]).is_unique
    ifaces = pd.concat([links["a_ifname"], links["b_ifname"]])
    assert ifaces.is_unique and ifaces.str.len().max() <= 15
    # interfaces of a node are numbered 0..k-1
    per_node = pd.concat([links[["a", "a_ifname"]].set_axis(["n", "i"], axis=1),
                          links[["b", "b_ifname"]].set_axis(["n", "i"], axis=1)])
    for node, grp in per_node.groupby("n"):
        assert sorted(int(i.rsplit("-e", 1)[1]) for i in grp["i"]) == list(range(len(grp)))


def test_plan_scales_to_a_mega_constellation():
    n_nodes, n_links = 40_000, 120_000
    rng = np.random.default_rng(0)
    a = rng.integers(0, n_nodes - 1, n_links)
    b = a + 1 + rng.integers(0, 50, n_links) % (n_nodes - 1 - a).clip(min=1)
    names = [f"s{i}" for i in range(n_nodes)]
    cat = pd.CategoricalDtype(names, ordered=True)
    links = pd.DataFrame({"a": pd.Categorical.from_codes(np.minimum(a, b), dtype=cat),
                          "b": pd.Categorical.from_codes(np.maximum(a, b), dtype=cat),
                          "kind": pd.Categorical(["isl"] * n_links)})
    lo, plan = address_plan(pd.DataFrame({"name": names}), links)
    assert len(lo) == n_nodes and plan["a_addr"].is_unique and len(plan) == len(links.drop_duplicates())


def test_too_many_interfaces_is_an_error():
    names = [f"n{i}" for i in range(1200)]
    cat = pd.CategoricalDtype(names, ordered=True)
    links = pd.DataFrame({"a": pd.Categorical.from_codes(np.zeros(1100, int), dtype=cat),
                          "b": pd.Categorical.from_codes(np.arange(1, 1101), dtype=cat),
                          "kind": pd.Categorical(["gsl"] * 1100)})
    with pytest.raises(PlanError, match="n0 would have 1,100 interfaces"):
        address_plan(pd.DataFrame({"name": names}), links)


def _chain(n_nodes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [f"n{i}" for i in range(n_nodes)]
    cat = pd.CategoricalDtype(names, ordered=True)
    links = pd.DataFrame({"a": pd.Categorical.from_codes(np.arange(n_nodes - 1), dtype=cat),
                          "b": pd.Categorical.from_codes(np.arange(1, n_nodes), dtype=cat),
                          "kind": pd.Categorical(["isl"] * (n_nodes - 1))})
    return pd.DataFrame({"name": names}), links


def test_address_ranges_too_small_are_netemu_errors(monkeypatch):
    from netemu.emulate import addressing
    nodes, links = _chain(10)
    monkeypatch.setattr(addressing, "LOOPBACK_NET", ipaddress.IPv4Network("10.128.0.0/29"))
    with pytest.raises(PlanError, match=r"10 nodes exceed the loopback range 10\.128\.0\.0/29 \(6 addresses\)"):
        address_plan(nodes, links)
    monkeypatch.setattr(addressing, "LOOPBACK_NET", LOOPBACK_NET)
    monkeypatch.setattr(addressing, "LINK_NET", ipaddress.IPv4Network("10.0.0.0/29"))
    with pytest.raises(PlanError, match=r"9 linked pairs exceed the link range 10\.0\.0\.0/29 \(4 /31 subnets\)"):
        address_plan(nodes, links)
