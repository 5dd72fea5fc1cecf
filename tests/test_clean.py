"""`netemu clean` and `netemu ps`: the registry of live runs, and exact matching of a run's names."""

import json
import subprocess
import sys

import pytest

from netemu.errors import EmulationError
from netemu.emulate.netns import (Namespaces, check_run_id, clean, list_netemu_namespaces, list_runs, new_run_id,
                          register_run, unregister_run)
from conftest import ROOT


def _netemu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netemu", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def _other_id(run_id: str) -> str:
    while (other := new_run_id()) == run_id:
        pass
    return other


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("bad", [".*", "", "ABCD", "12345", "12-4", "1234-", "ne", "[0-9a-f]{4}", "1234\n"])
def test_a_run_id_is_four_hex_digits(bad):
    with pytest.raises(EmulationError, match="expected four lowercase hex digits"):
        check_run_id(bad)
    assert check_run_id("0b3f") == "0b3f"


@pytest.mark.parametrize("bad", [".*", "neth", "1234|.*"])
def test_cli_clean_refuses_a_pattern_as_run_id(bad):
    r = _netemu("clean", "--run", bad)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "expected four lowercase hex digits" in r.stderr and r.stdout == ""


@pytest.mark.root
def test_clean_run_matches_names_exactly_sparing_decoys(root_env):
    ns = Namespaces()
    ns.add("left")
    rid = ns.run_id
    other = _other_id(rid)
    mine = [f"ne{rid}ra", f"ne{rid}vb", f"ne{rid}k12a"]
    decoy_links = ["neth0b", "nexus1a", f"ne{rid}za", f"ne{rid}k1x", f"ne{other}ra", f"ne{rid}rab"]
    decoy_ns = [f"netemu-{other}-left", f"netemu-{rid}x-left", f"netemu{rid}-left"]
    made = []
    try:
        # veth pairs: one end named as listed, the peer named `kp<id><i>` (not netemu's)
        for i, name in enumerate(mine + decoy_links):
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"kp{rid}{i}"], check=True)
            made.append(name)
        for n in decoy_ns:
            subprocess.run(["ip", "netns", "add", n], check=True)
        removed = clean(rid)
        assert removed["namespaces"] == [ns.full("left")]
        assert sorted(removed["links"]) == sorted(mine)
        links = _links()
        for name in decoy_links:
            assert f" {name}@" in links or f" {name}:" in links, name
        present = list_netemu_namespaces()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for n in decoy_ns:
            assert n in names, n
        assert ns.full("left") not in present
    finally:
        for name in made:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        for n in decoy_ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        ns.delete_all()


@pytest.mark.root
def test_clean_spares_live_runs_and_removes_runs_whose_owner_is_gone(root_env):
    live, dead = Namespaces(), Namespaces()
    try:
        live.add("alive")          # registered by this (live) process
        dead.add("orphan")
        register_run(dead.run_id, pid=_dead_pid(), scenario="gone")
        runs = {e["id"]: e for e in list_runs()}
        assert runs[live.run_id]["alive"] and runs[live.run_id]["pid"] > 0
        assert not runs[dead.run_id]["alive"]
        ps = _netemu("ps")
        assert ps.returncode == 0 and live.run_id in ps.stdout and dead.run_id not in ps.stdout
        removed = clean()
        assert dead.full("orphan") in removed["namespaces"]
        assert live.full("alive") not in removed["namespaces"] and live.run_id in removed["spared"]
        present = list_netemu_namespaces()
        assert live.full("alive") in present and dead.full("orphan") not in present
        assert dead.run_id not in {e["id"] for e in list_runs()}
        # the same pid reused by another process is not the owner: the start time differs
        path = register_run(live.run_id, scenario="reused")
        e = json.loads(path.read_text())
        e["pid_start_ticks"] -= 1
        path.write_text(json.dumps(e))
        assert not {x["id"]: x for x in list_runs()}[live.run_id]["alive"]
        register_run(live.run_id)
        # a live run named explicitly is removed (the user asked for that one)
        r = clean(live.run_id)
        assert r["namespaces"] == [live.full("alive")]
    finally:
        live.delete_all()
        dead.delete_all()
        unregister_run(dead.run_id)
