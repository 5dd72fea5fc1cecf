"""Big route steps (root): a step with many route changes (a storm) is put ahead into each
namespace's idle routing table and switched to at its instant with one request per namespace.
Here every step counts as big, so every path change of the fidelity window is played that way,
both ways (main → the alternate table → main): the routes in force are the planner's, and
probes keep their light-time RTT and are answered whenever the pair is reachable."""

import json
import subprocess
import time
from pathlib import Path

import pytest

import netemu
from netemu.emulate import forwarding

from test_emulation import _check_routes

pytestmark = [pytest.mark.root]

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def fid_plan(root_env):
    return netemu.make_plan(netemu.load_scenario(DATA / "fidelity.toml"), workers=2)


def _rules(em, node: str) -> str:
    return subprocess.run(["ip", "-n", em.ns.full(node), "rule", "show"], capture_output=True, text=True).stdout


def test_every_step_switched_tables_routes_are_the_planners(fid_plan, monkeypatch):
    monkeypatch.setattr(forwarding, "FLIP_MIN_STEP_CHANGES", 1)
    monkeypatch.setattr(forwarding, "FLIP_MIN_NODE_CHANGES", 1)
    with netemu.emulate(fid_plan, start_s=330, duration_s=12, speed=2, calibrate=False) as em:
        fw = em.forwarding
        em.start()
        # in the handover gap (338-340; nothing changes at 339): the nodes switched at 338 run on
        # the alternate table, and the kernel's rule says so exactly there
        time.sleep(max(0.0, em.clock.mono(339.0) - time.monotonic()))
        alt_339 = [n for n in em.node_names if fw._alt[em.schedule.node_names.index(n)]]
        assert alt_339 and all(("lookup 200" in _rules(em, n)) == (n in alt_339) for n in em.node_names)
        assert _check_routes(em, 339) == 50
        assert em.wait(30)
        assert _check_routes(em, 342) == 50                 # read from the table in force in each node
        log = em.player.apply_log()
        alt = [n for n in em.node_names if fw._alt[em.schedule.node_names.index(n)]]
        assert all(("lookup 200" in _rules(em, n)) == (n in alt) for n in em.node_names)
    changed = log[log["routes"] > 0]
    print(changed[["step", "routes", "namespaces", "engine_namespaces", "switched_namespaces", "prep_ms", "lag_ms"]])
    assert len(changed) >= 2 and (changed["switched_namespaces"] > 0).all(), changed
    assert set(alt_339) - set(alt)                    # some switched back to main at 340


@pytest.mark.timing
def test_switched_steps_keep_probes_at_light_time(fid_plan, monkeypatch, tmp_path):
    monkeypatch.setattr(forwarding, "FLIP_MIN_STEP_CHANGES", 1)
    monkeypatch.setattr(forwarding, "FLIP_MIN_NODE_CHANGES", 1)
    netemu.run(fid_plan, tmp_path, start_s=330, duration_s=14)
    fid = json.loads((tmp_path / "fidelity.json").read_text())
    o = fid["overall"]
    assert o["compared"] + o["overlapping_engine_stall"] > 200 and o["lost_while_reachable"] == 0, o
    assert o["abs_error_p99_ms"] <= 0.5, o
    import pandas as pd
    apply = pd.read_csv(tmp_path / "apply.csv")
    assert (apply.loc[apply["routes"] > 0, "switched_namespaces"] > 0).all()
