"""`netemu doctor` and `netemu clean`."""

import subprocess
import sys

import pytest

from netemu.doctor import Check, format_checks
from netemu.netns import Namespaces
from conftest import ROOT, TOPOLOGIES


def test_format_checks_gives_one_verdict_per_item_and_a_fix():
    text = format_checks([Check("root", True, "yes"), Check("tool iperf3", False, "not found", "apt-get install iperf3"),
                          Check("kernel netem", False, "absent", "another kernel", required=False)])
    lines = text.splitlines()
    assert lines[0] == "ok    root: yes"
    assert lines[1] == "FAIL  tool iperf3: not found — fix: apt-get install iperf3"
    assert lines[2].startswith("warn  kernel netem")
    assert lines[-1] == "verdict: 1 required item(s) missing"


@pytest.mark.root
def test_doctor_on_this_machine(root_env):
    r = subprocess.run([sys.executable, "-m", "netemu", "doctor", str(TOPOLOGIES / "beijing-orbital-dc.toml")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok    link backend engine: works" in r.stdout
    assert "memory for beijing-orbital-dc: about" in r.stdout
    assert r.stdout.rstrip().endswith("verdict: ready")


@pytest.mark.root
def test_cli_clean_removes_a_runs_leftovers(root_env):
    ns = Namespaces()
    ns.add("leftover")
    r = subprocess.run([sys.executable, "-m", "netemu", "clean", "--run", ns.run_id], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0 and ns.full("leftover") in r.stdout
    assert ns.full("leftover") not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
