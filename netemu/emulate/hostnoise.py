"""How often this host takes a CPU away: pauses seen by a thread spinning on it (kernel edge).

On a VM the hypervisor pauses vCPUs (0.3-25 ms at a time, from a few times a minute to hundreds
of times a second, as the physical host's load changes); other processes and interrupts do the
same on bare metal. A link engine paused that long holds every frame for the pause, so an
emulation's timing is only as good as its host is quiet. `netemu doctor` reports it; timing
tests wait for a quiet spell (`wait_for_quiet`) before they measure.

    measure_pauses(cpu=1, duration_s=1.0) -> {"cpu", "duration_s", "pauses", "paused_share", "max_ms"}

A VM's kernel also counts the time its hypervisor held the vCPUs (`steal` in /proc/stat): a
run reads it at its start and end (`cpu_times`, `steal_share`) and says how much of the CPUs
the host took while it played, without spinning on a CPU to find out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

__all__ = ["measure_pauses", "is_quiet", "wait_for_quiet", "cpu_times", "steal_share", "PAUSE_S", "QUIET_SHARE",
           "QUIET_MAX_MS", "STEAL_WARN_SHARE"]

PAUSE_S = 200e-6        # a gap longer than this between two clock reads of a spinning thread
QUIET_SHARE = 0.003     # a host paused less than this share of the time …
QUIET_MAX_MS = 3.0      # … and never longer than this is quiet enough for sub-ms timing

# Spins in a process of its own, pinned to the CPU (the caller's affinity stays as it is).
_SPIN = """
import gc, json, os, sys, time
gc.disable()
cpu, dur, gap = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {cpu})
m = time.monotonic
t = start = m()
end = t + dur
n = 0; total = 0.0; worst = 0.0
while t < end:
    u = m()
    d = u - t
    if d > gap:
        n += 1; total += d; worst = max(worst, d)
    t = u
print(json.dumps({"pauses": n, "paused_s": total, "max_s": worst, "span_s": t - start}))
"""


STEAL_WARN_SHARE = 0.01  # a run during which the hypervisor took more of the CPUs says so


def cpu_times(path: str = "/proc/stat") -> dict[str, int]:
    """The machine's CPU time so far, all CPUs together (clock ticks): `total` and `steal` (time
    a hypervisor ran something else on the vCPUs; 0 on bare metal or without steal accounting)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("cpu "):
                    v = [int(x) for x in line.split()[1:]]
                    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest
                    # time is counted in user already
                    return {"total": sum(v[:8]), "steal": v[7] if len(v) > 7 else 0}
    except (OSError, ValueError):
        pass
    return {"total": 0, "steal": 0}


def steal_share(before: dict[str, int], after: dict[str, int]) -> float | None:
    """The share of the CPUs' time the hypervisor took between two `cpu_times` readings (None
    when no time passed)."""
    total = after["total"] - before["total"]
    return (after["steal"] - before["steal"]) / total if total > 0 else None


def measure_pauses(cpu: int | None = None, duration_s: float = 1.0) -> dict:
    """Spin on `cpu` (default: this process's last CPU, where busy-polling engines go) for
    `duration_s` and count the pauses longer than PAUSE_S: pauses, paused_share (of the time),
    max_ms."""
    cpu = max(os.sched_getaffinity(0)) if cpu is None else cpu
    out = subprocess.run([sys.executable, "-c", _SPIN, str(cpu), str(duration_s), str(PAUSE_S)],
                         capture_output=True, text=True, timeout=duration_s + 30, check=True).stdout
    r = json.loads(out)
    return {"cpu": cpu, "duration_s": round(r["span_s"], 3), "pauses": r["pauses"],
            "paused_share": round(r["paused_s"] / r["span_s"], 5) if r["span_s"] else 0.0,
            "max_ms": round(r["max_s"] * 1e3, 3)}


def is_quiet(m: dict) -> bool:
    """Whether a `measure_pauses` reading is quiet enough for sub-millisecond timing."""
    return m["paused_share"] <= QUIET_SHARE and m["max_ms"] <= QUIET_MAX_MS


def wait_for_quiet(max_wait_s: float = 60.0, sample_s: float = 2.0, cpu: int | None = None) -> dict:
    """Measure the host's pauses until a `sample_s` reading is quiet or `max_wait_s` has passed;
    the last reading, with `quiet` (bool) and `waited_s`."""
    t0 = time.monotonic()
    while True:
        m = measure_pauses(cpu, sample_s)
        waited = time.monotonic() - t0
        if is_quiet(m) or waited >= max_wait_s:
            return {**m, "quiet": is_quiet(m), "waited_s": round(waited, 1)}
        time.sleep(min(5.0, max(0.0, max_wait_s - waited)))
