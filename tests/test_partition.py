"""Partitioning a plan over several emulation hosts (plan/partition.py, `netemu partition`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from netemu.errors import PlanError
from netemu.plan.partition import BASE_FRAMES_PER_S, LOAD_SHARE, _load, emulation_memory_mib, partition
from netemu.plan.scenario import group_node_names

from conftest import DATA, ROOT


def _cut_pairs(plan, host_of):
    L = plan.schedule.links
    pairs = L.groupby(["a", "b"], observed=True)["kind"].first().reset_index()
    a, b = pairs["a"].astype(str).map(host_of), pairs["b"].astype(str).map(host_of)
    return pairs[a != b]


@pytest.mark.parametrize("hosts", [1, 2, 3, 4])
def test_plane_blocks_formations_whole_ground_on_the_coordinator(small_plan, hosts):
    part = partition(small_plan, hosts)
    sc, host_of = small_plan.scenario, part.host_of
    assert set(host_of) == set(small_plan.schedule.node_names)
    assert {host_of[g.name] for g in sc.ground_stations} == {0}
    cluster = next(g for g in sc.satellites if g.name == "cluster")
    assert len({host_of[n] for n in group_node_names(cluster)}) == 1          # µs links are never cut
    shell = next(g for g in sc.satellites if g.name == "shell")
    names = group_node_names(shell)
    plane_host = []
    for p in range(shell.planes):
        hs = {host_of[n] for n in names[p * 12:(p + 1) * 12]}
        assert len(hs) == 1, f"plane {p} is split over hosts {hs}"
        plane_host += hs
    assert plane_host == sorted(plane_host)                                    # contiguous blocks
    assert set(plane_host) | {host_of[n] for n in group_node_names(cluster)} | {0} == set(range(hosts))
    # only inter-plane lasers at block edges are cut: 12 per edge, the shell wrapping round in RAAN
    cut = _cut_pairs(small_plan, host_of)
    shell_names = set(names)
    cut_shell = cut[cut["a"].astype(str).isin(shell_names) & cut["b"].astype(str).isin(shell_names)]
    edges = sum(1 for p in range(shell.planes) if plane_host[p] != plane_host[(p + 1) % shell.planes])
    assert len(cut_shell) == 12 * edges
    # the table says what was cut, seen from both ends, and sizes each host
    h = part.hosts
    assert int(h["cut_links"].sum()) == 2 * len(cut)
    assert int(h["cut_gsls"].sum()) == 2 * int((cut["kind"].astype(str) == "gsl").sum())
    assert int(h["nodes"].sum()) == len(host_of)
    for r in h.itertuples():
        assert r.memory_mib == pytest.approx(emulation_memory_mib(r.nodes))


def test_hosts_are_balanced_by_load(small_plan):
    h = partition(small_plan, 2).hosts
    loads = h["load_frames_per_s"].to_numpy()
    assert loads.min() > 0.6 * loads.max()


@pytest.fixture(scope="module")
def workload_plan(tmp_path_factory):
    """small.toml with an inference workload: two ground clients, a server in the formation."""
    import netemu
    p = tmp_path_factory.mktemp("partition") / "small-workload.toml"
    p.write_text((DATA / "small.toml").read_text()
                 + '\n[[workloads]]\nname = "chat"\nkind = "inference"\nclients = ["g-paris", "g-quito"]\n'
                   'server = "c01"\nrate_per_s = 1\nservice_s = 0.05\n')
    return netemu.make_plan(netemu.load_scenario(p), workers=1)


@pytest.mark.parametrize("hosts", [2, 3, 4])
@pytest.mark.parametrize("workload_frames_per_s", [1e3, 1e5])
@pytest.mark.parametrize("which", ["probes only", "with a workload"])
def test_hosts_are_balanced_by_load_and_by_nodes_together(small_plan, workload_plan, which, hosts,
                                                          workload_frames_per_s):
    """Each host takes about 1/hosts of LOAD_SHARE × its load share + the rest × its node share
    (within the heaviest unit placed, a plane or a formation), so neither share exceeds about
    2/hosts: a heavy workload on a few paths does not pile the idle satellites onto one host
    (balanced on load alone, 4 hosts held 28, 12, 108 and 4 of the 152 nodes)."""
    plan = small_plan if which == "probes only" else workload_plan
    part = partition(plan, hosts, workload_frames_per_s=workload_frames_per_s)
    h = part.hosts
    load = h["load_frames_per_s"].to_numpy() / h["load_frames_per_s"].sum()
    nodes = h["nodes"].to_numpy() / h["nodes"].sum()
    combined = LOAD_SHARE * load + (1 - LOAD_SHARE) * nodes
    # what moves as one: a plane of the shell, the formation, the ground stations (all on host 0)
    sc = plan.scenario
    shell = next(g for g in sc.satellites if g.name == "shell")
    names = group_node_names(shell)
    units = [names[p * 12:(p + 1) * 12] for p in range(shell.planes)]
    units += [group_node_names(next(g for g in sc.satellites if g.name == "cluster")),
              [g.name for g in sc.ground_stations]]
    per_node = {n: BASE_FRAMES_PER_S + f for n, f in _load(plan, workload_frames_per_s).items()}
    per_node = {n: per_node.get(n, BASE_FRAMES_PER_S) for n in part.host_of}
    total = sum(per_node.values())
    assert sorted(n for u in units for n in u) == sorted(per_node)
    heaviest = max(LOAD_SHARE * sum(per_node[n] for n in u) / total + (1 - LOAD_SHARE) * len(u) / len(per_node)
                   for u in units)
    assert np.abs(combined - 1 / hosts).max() <= heaviest + 1e-9, (combined, heaviest)
    assert nodes.max() <= 2 / hosts + heaviest and load.max() <= 2 / hosts + heaviest, (nodes, load)


def test_bad_host_counts_are_errors(small_plan):
    with pytest.raises(PlanError, match="hosts: expected a whole number ≥ 1, found 0"):
        partition(small_plan, 0)


def test_cli_prints_the_table():
    r = subprocess.run([sys.executable, "-m", "netemu", "partition", str(DATA / "small.toml"), "--hosts", "3",
                        "--json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["host"] for x in rows] == [0, 1, 2] and sum(x["nodes"] for x in rows) == 12 * 12 + 4 + 4
    r = subprocess.run([sys.executable, "-m", "netemu", "partition", str(DATA / "small.toml"), "--hosts", "0"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("netemu: error: --hosts")
