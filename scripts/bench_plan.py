#!/usr/bin/env python3
"""Planner benchmark: `netemu plan topologies/starlink-s1.toml` as a whole process.

Starlink shell 1 (1,584 satellites, +Grid), 100 cities, 200 s at 100 ms steps (2,001 steps),
shortest paths between all 4,950 pairs of stations at every step. Target (issue "Keeping up at
scale"): at most 20 s wall and 2 GiB peak memory on a 2-core machine. Reports median [min-max]
over the runs and ratios to the target; never fails on time.

    .venv/bin/python scripts/bench_plan.py [--runs 3] [--scenario FILE] [--window-s S] [--step-s S]

--window-s / --step-s plan the scenario over another window or step (a copy of its file with
duration_s / step_s replaced, beside links to the files it names), to see how time and memory
change with the window (`netemu plan -o` plans in blocks: memory follows the block, not the window).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_WALL_S = 20.0
TARGET_PEAK_GIB = 2.0


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (KiB), from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def with_window(scenario: Path, tmp: Path, window_s: float | None, step_s: float | None) -> Path:
    """A copy of `scenario` in `tmp` with [scenario] duration_s / step_s replaced; the files of
    its directory are linked beside it so that the names it gives still resolve."""
    text = scenario.read_text()
    for key, value in (("duration_s", window_s), ("step_s", step_s)):
        if value is not None:
            text, n = re.subn(rf"(?m)^{key}\s*=\s*[^#\n]*", f"{key} = {value:g}", text, count=1)
            if n != 1:
                sys.exit(f"bench: {scenario}: no {key} line to replace")
    for f in scenario.parent.iterdir():
        if f.name != scenario.name:
            (tmp / f.name).symlink_to(f)
    out = tmp / scenario.name
    out.write_text(text)
    return out


def run_once(scenario: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="netemu-bench-") as out:
        cmd = [sys.executable, "-m", "netemu", "plan", str(scenario), "-o", out, "--json"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = [0]

        def poll():
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss_kib(proc.pid))
                time.sleep(0.1)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        th.join()
        if proc.returncode != 0:
            sys.exit(f"bench: netemu plan failed ({proc.returncode}):\n{stderr}")
        summary = json.loads(stdout)
    return {"wall_s": wall, "peak_tree_gib": peak[0] / 2**20, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", default=str(ROOT / "topologies" / "starlink-s1.toml"))
    ap.add_argument("--window-s", type=float, default=None, help="plan this window instead of the scenario's")
    ap.add_argument("--step-s", type=float, default=None, help="plan with this step instead of the scenario's")
    args = ap.parse_args()
    scenario = Path(args.scenario).resolve()
    tmp = tempfile.TemporaryDirectory(prefix="netemu-bench-scenario-")
    if args.window_s is not None or args.step_s is not None:
        scenario = with_window(scenario, Path(tmp.name), args.window_s, args.step_s)
    runs = []
    for i in range(args.runs):
        r = run_once(scenario)
        runs.append(r)
        print(f"run {i + 1}/{args.runs}: {r['wall_s']:.1f} s wall, {r['peak_tree_gib']:.2f} GiB peak (all processes)",
              file=sys.stderr)
    s = runs[-1]["summary"]
    walls, peaks = [r["wall_s"] for r in runs], [r["peak_tree_gib"] for r in runs]
    wall, peak = statistics.median(walls), statistics.median(peaks)
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    pair_steps = s["endpoint_pairs"] * s["steps"] * s["reachable_pair_fraction_mean"]
    sats = s["nodes"]["satellite"] + s["nodes"]["compute"]
    print(f"scenario            {s['scenario']}: {sats} satellites, {s['nodes']['ground']} stations, "
          f"{s['steps']} steps, {s['endpoint_pairs']} pairs")
    print(f"cpus                {os.cpu_count()}")
    print(f"wall                {wall:.1f} [{min(walls):.1f}-{max(walls):.1f}] s (median [min-max] of {len(runs)}) "
          f"= {wall / TARGET_WALL_S:.2f} × the {TARGET_WALL_S:.0f} s target")
    print(f"peak memory         {peak:.2f} [{min(peaks):.2f}-{max(peaks):.2f}] GiB all processes, {largest:.2f} GiB "
          f"largest process = {peak / TARGET_PEAK_GIB:.2f} × the {TARGET_PEAK_GIB:.0f} GiB target")
    print(f"rates               {s['steps'] / wall:.1f} steps/s, {pair_steps / wall / 1e3:.0f} k pair-paths/s")
    print(f"window              {s['duration_s']:g} s at {s['step_s']:g} s steps")
    print("stage times (last)  " + ", ".join(f"{k} {v:.1f} s" for k, v in s["timings_s"].items()))
    tmp.cleanup()


if __name__ == "__main__":
    main()
