"""`netemu doctor`: what this machine can emulate, one verdict per item with a fix."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass

from ..plan.partition import emulation_memory_mib
from .links import EngineLinks, LinkEnd, LinkParams, netem_available
from .netns import Namespaces

__all__ = ["Check", "run_checks", "format_checks"]

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True   # a failed optional check does not fail the doctor


def _tool(name: str, package: str, required: bool = True, why: str = "") -> Check:
    path = shutil.which(name)
    return Check(f"tool {name}", path is not None, path or "not found" + (f" ({why})" if why else ""),
                 f"apt-get install {package}", required)


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_checks(scenario=None) -> list[Check]:
    """Every check, in order; `scenario` (a loaded Scenario) adds a memory estimate for it."""
    checks = [Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "install Python ≥ 3.11")]
    root = os.geteuid() == 0
    checks.append(Check("root", root, "yes" if root else f"uid {os.geteuid()} (needed for emulation; "
                                                          "`netemu plan` needs none)", "run with sudo"))
    for name, package, required, why in (("ip", "iproute2", True, ""), ("tc", "iproute2", True, ""),
                                         ("ping", "iputils-ping", True, ""),
                                         ("iperf3", "iperf3", False, "throughput stages"),
                                         ("tcpdump", "tcpdump", False, "trace capture"),
                                         ("nsenter", "util-linux", True, ""),
                                         ("mnexec", "mininet", True, "Mininet nodes of `netemu run`")):
        checks.append(_tool(name, package, required, why))
    has_mininet = importlib.util.find_spec("mininet") is not None
    checks.append(Check("python module mininet", has_mininet, "importable" if has_mininet else "not installed",
                        "pip install mininet==2.3.0.dev6 (make setup does)", required=True))
    tun = os.path.exists("/dev/net/tun")
    checks.append(Check("TUN/TAP", tun, "/dev/net/tun present" if tun else "/dev/net/tun missing",
                        "modprobe tun"))
    if root and shutil.which("ip"):
        checks += _kernel_checks(tun)
    checks.append(_pause_check())
    avail = _mem_available_bytes()
    checks.append(Check("memory", avail > 512 * _MIB, f"{avail / (1 << 30):.1f} GiB available", "free memory"))
    if scenario is not None:
        need = estimate_memory_bytes(scenario)
        checks.append(Check(f"memory for {scenario.name}", need < avail,
                            f"about {need / _MIB:,.0f} MiB for {_node_count(scenario):,} nodes "
                            f"(--scope paths instantiates fewer)", "use --scope paths or a larger machine"))
    return checks


def _pause_check() -> Check:
    """The host's CPU pauses (hostnoise): a link engine holds every frame through one."""
    from .hostnoise import QUIET_MAX_MS, QUIET_SHARE, cpu_times, is_quiet, measure_pauses, steal_share
    before = cpu_times()
    m = measure_pauses(duration_s=2.0)
    steal = steal_share(before, cpu_times())
    return Check("CPU pauses", is_quiet(m),
                 f"CPU {m['cpu']} paused {m['pauses']} times in {m['duration_s']:g} s "
                 f"({100 * m['paused_share']:.2f} % of the time, longest {m['max_ms']:g} ms; quiet is under "
                 f"{100 * QUIET_SHARE:g} % and {QUIET_MAX_MS:g} ms)"
                 + (f"; the hypervisor's steal time meanwhile: {100 * steal:.1f} % of the CPUs" if steal is not None
                    else ""),
                 "emulated delays are off by up to the longest pause while they last (each run counts its "
                 "engines' stalls in stalls.csv): stop other load, use a host whose hypervisor is not "
                 "overcommitted, or run with --dilation", required=False)


def _node_count(scenario) -> int:
    return sum(g.count for g in scenario.satellites) + len(scenario.ground_stations)


def estimate_memory_bytes(scenario) -> int:
    """Peak memory of a full emulation (every node instantiated), from the calibrated model
    (plan.partition.emulation_memory_mib)."""
    return int(emulation_memory_mib(_node_count(scenario)) * _MIB)


def _kernel_checks(tun: bool) -> list[Check]:
    out = []
    try:
        with Namespaces() as ns:
            pa, pb = ns.add("doc-a"), ns.add("doc-b")
            out.append(Check("network namespaces", True, "created and deleted"))
            if tun:
                try:
                    with EngineLinks(shards=1) as eng:
                        eng.add_link("doctor", LinkEnd(pa, "d0"), LinkEnd(pb, "d0"), LinkParams(delay_ms=5))
                        for name, addr in (("doc-a", "10.253.0.0/31"), ("doc-b", "10.253.0.1/31")):
                            ns.run(name, ["ip", "addr", "add", addr, "dev", "d0"])
                            ns.run(name, ["ip", "link", "set", "d0", "up"])
                        r = ns.run("doc-a", ["ping", "-c", "3", "-i", "0.05", "-W", "2", "10.253.0.1"], check=False)
                        ok = r.returncode == 0
                        out.append(Check("link backend engine", ok,
                                         "works (TAP pair, 5 ms link answered ping)" if ok else r.stdout[-200:],
                                         "check TUN/TAP and root"))
                except Exception as e:  # reported as a verdict: the doctor must not crash
                    out.append(Check("link backend engine", False, str(e), "check TUN/TAP and root"))
    except Exception as e:
        out.append(Check("network namespaces", False, str(e), "run as root on Linux with namespaces"))
    netem = netem_available()
    out.append(Check("link backend kernel (tc netem)", netem,
                     "sch_netem available" if netem else "this kernel has no sch_netem: use the engine (default)",
                     "a kernel with CONFIG_NET_SCH_NETEM", required=False))
    return out


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        verdict = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        line = f"{verdict}  {c.name}: {c.detail}"
        if not c.ok and c.fix:
            line += f" — fix: {c.fix}"
        lines.append(line)
    failed = [c for c in checks if not c.ok and c.required]
    lines.append("verdict: " + ("ready" if not failed else f"{len(failed)} required item(s) missing"))
    return "\n".join(lines)
