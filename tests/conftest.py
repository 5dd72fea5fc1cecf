from pathlib import Path

import pytest

import netemu

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TOPOLOGIES = ROOT / "topologies"


@pytest.fixture(scope="session")
def small_scenario():
    return netemu.load_scenario(DATA / "small.toml")


@pytest.fixture(scope="session")
def small_plan(small_scenario):
    return netemu.make_plan(small_scenario, workers=2)


def write_scenario(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


ROOT_TOOLS = ("ip", "ping", "iperf3", "tc")


def _root_problem() -> str | None:
    import os
    import shutil
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    missing = [t for t in ROOT_TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian: iproute2 iputils-ping iperf3)"
    return None


@pytest.fixture(scope="session")
def root_env():
    """Emulation tests need root and kernel features. In CI a missing prerequisite fails."""
    import os
    problem = _root_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"emulation prerequisites missing in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
def netns(root_env):
    from netemu.emulate.netns import Namespaces
    with Namespaces() as ns:
        yield ns


@pytest.fixture(scope="session")
def ring_run(root_env, tmp_path_factory):
    """One short run of tests/data/ring.toml (12 satellites in a ring, 11.95-ms links) with its
    [[apps]] (a ping r00-00 → r00-01, a sleeper stopped at its stop_s) and captures of the link
    r00-00–r00-01 at both ends; while it plays, `netemu exec` runs commands in its nodes.
    Returns {out, info, plan, exec: [(argv, returncode, stdout, stderr)]}."""
    import subprocess
    import sys
    import threading
    import time
    from netemu.emulate.netns import live_runs
    out = tmp_path_factory.mktemp("ring") / "run"
    plan = netemu.make_plan(netemu.load_scenario(DATA / "ring.toml"), workers=1)
    done, results = threading.Event(), []

    def exec_while_live():
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            runs = [e for e in live_runs() if e.get("out_dir") == str(out.absolute())]
            if runs and (out / "addresses.csv").exists():
                rid = runs[0]["id"]
                for argv in ([rid, "r00-01", "--", "ping", "-n", "-c", "2", "-i", "0.2", "{addr:r00-00}"],
                             [str(out), "r00-03", "--", "ip", "-o", "-4", "addr", "show", "dev", "lo"],
                             [rid, "r00-99", "--", "true"],
                             [rid, "r00-01", "--", "echo", "{addr:nowhere}"],
                             [rid, "r00-01", "--", "sh", "-c", "exit 3"]):
                    r = subprocess.run([sys.executable, "-m", "netemu", "exec", *argv], capture_output=True,
                                       text=True, timeout=30)
                    results.append((argv, r.returncode, r.stdout, r.stderr))
                return
            time.sleep(0.1)

    helper = threading.Thread(target=exec_while_live, daemon=True)
    helper.start()
    try:
        info = netemu.run(plan, out, probes=[], duration_s=6, dilation=1, calibrate=False, scope="all",
                          captures=("r00-00-r00-01",), shards=1)
    finally:
        done.set()
        helper.join(60)
    return {"out": out, "info": info, "plan": plan, "exec": results}


# Timing tests measure sub-millisecond delays: on a VM whose hypervisor is pausing the vCPUs
# (0.3-25 ms pauses, up to hundreds a second when the physical host is busy) they would measure
# the hypervisor. They wait (at most this long) for a quiet spell first; the test then runs
# whatever the host does, and its assertions stay as they are.
# A wait that found no quiet spell means a noisy stretch (they last minutes: 8 waits of 30 s in
# a row found none in one suite run): the waits after it are TIMING_WAIT_NOISY_S long until
# one finds quiet again. All waits together stop at TIMING_BUDGET_S, so that a noisy day costs
# the suite a few minutes, not one full wait per timing test (36 of them).
TIMING_WAIT_S = 30.0
TIMING_WAIT_NOISY_S = 5.0
TIMING_BUDGET_S = 180.0
_timing = {"waited_s": 0.0, "noisy": False}


def pytest_runtest_setup(item):
    import os
    import time
    if item.get_closest_marker("timing") is None or os.geteuid() != 0:
        return
    from netemu.emulate.hostnoise import wait_for_quiet
    left_s = TIMING_BUDGET_S - _timing["waited_s"]
    t0 = time.monotonic()
    # on the first CPU: a module's busy-polling engine may hold the last one, and the
    # hypervisor's pauses take both vCPUs alike
    longest_s = TIMING_WAIT_NOISY_S if _timing["noisy"] else TIMING_WAIT_S
    m = wait_for_quiet(max_wait_s=max(1.0, min(longest_s, left_s)), sample_s=1.0,
                       cpu=min(os.sched_getaffinity(0)))
    _timing["waited_s"] += time.monotonic() - t0
    _timing["noisy"] = not m["quiet"]
    print(f"host CPU pauses before {item.name}: {m} (waited {_timing['waited_s']:.0f} s for quiet so far)")
