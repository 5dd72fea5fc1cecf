"""Partitioning a plan over several emulation hosts (plan/partition.py, `netemu partition`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netemu.errors import PlanError
from netemu.plan.partition import emulation_memory_mib, partition
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
