"""`netemu doctor` and `netemu clean`."""

import subprocess
import sys

import pytest

from netemu.emulate.doctor import Check, format_checks
from netemu.emulate.netns import Namespaces
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


def _memory_of(cmd: list[str]) -> float:
    """Peak bytes of `cmd`: PSS of its whole process tree plus the growth of the kernel's slab,
    stacks and page tables (namespaces, sockets), sampled every 0.25 s."""
    import os
    import time

    def kernel() -> int:
        m = {}
        for line in open("/proc/meminfo"):
            k, v = line.split(":")
            m[k] = int(v.split()[0]) * 1024
        return m["Slab"] + m["KernelStack"] + m["PageTables"]

    def tree(root: int) -> list[int]:
        kids: dict[int, list[int]] = {}
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    ppid = int(open(f"/proc/{e}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                kids.setdefault(ppid, []).append(int(e))
        out, stack = [], [root]
        while stack:
            p = stack.pop()
            out.append(p)
            stack += kids.get(p, [])
        return out

    def pss(pids: list[int]) -> int:
        total = 0
        for p in pids:
            try:
                for line in open(f"/proc/{p}/smaps_rollup"):
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total
    k0 = kernel()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak = 0
    while p.poll() is None:
        peak = max(peak, pss(tree(p.pid)) + kernel() - k0)
        time.sleep(0.25)
    assert p.returncode == 0
    return peak


@pytest.mark.root
def test_memory_estimate_matches_a_measured_run(root_env, tmp_path):
    """doctor's estimate of the small scenario within a factor of 1.5 of what a run takes."""
    import netemu
    from netemu.emulate.doctor import estimate_memory_bytes
    measured = _memory_of([sys.executable, "-m", "netemu", "run", str(ROOT / "tests" / "data" / "small.toml"),
                           "--duration", "20", "--no-calibrate", "-o", str(tmp_path / "run")])
    est = estimate_memory_bytes(netemu.load_scenario(ROOT / "tests" / "data" / "small.toml"))
    assert measured / 1.5 <= est <= measured * 1.5, (est / 2**30, measured / 2**30)


def test_memory_estimate_of_starlink_matches_its_measurement():
    """Starlink shell 1, --scope all, measured on the 2-core VM as in test_memory_estimate_
    matches_a_measured_run: 3.4 GiB of processes (PSS) + 1.0 GiB of kernel memory."""
    import netemu
    from netemu.emulate.doctor import estimate_memory_bytes
    measured_gib = 3.40 + 1.03
    est_gib = estimate_memory_bytes(netemu.load_scenario(TOPOLOGIES / "starlink-s1.toml")) / 2**30
    assert measured_gib / 1.5 <= est_gib <= measured_gib * 1.5, est_gib
