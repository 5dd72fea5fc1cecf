#!/usr/bin/env python3
"""Example: what faults do to the traffic of topologies/beijing-orbital-dc-faults.toml (run as root).

The scenario's relay r08-04, on the Beijing path, dies at t = 600 s (a planned fault); routing
finds out after its `failure_detection_s` and moves around it. This script plays a window around
it twice — the scenario as shipped, and the same scenario without its faults — and, during the
faulty run, also kills by hand (a live injection through the run's control socket, as
`netemu inject RUN_DIR fail-node …` does) the relay the Beijing → cluster path then uses, for
`--live-for` seconds. Then it prints each fault's toll (probes lost, time to repair) and writes
`netemu compare` of the two runs.

    sudo .venv/bin/python scripts/example_faults.py [--start 590] [--duration 30] [--live-at 610]
        [--live-for 5] [--out out/example-faults]

The compute satellite c-odc-05 reboots at t = 1500 s during the all-reduce (from 1400 s): play
`--start 1490 --duration 70 --live-at 0` to see the all-reduce's steps stall in the report.
"""

import argparse
import dataclasses
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

import netemu  # noqa: E402
from netemu.emulate.inject import InjectError, request  # noqa: E402
from netemu.report import fault_effects, fault_timeline  # noqa: E402
from netemu.report import build_compare  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--scenario", default=str(ROOT / "topologies" / "beijing-orbital-dc-faults.toml"))
ap.add_argument("--start", type=float, default=590.0, help="emulated start (s)")
ap.add_argument("--duration", type=float, default=30.0, help="emulated seconds to play")
ap.add_argument("--live-at", type=float, default=610.0, help="t (s) of the live failure (0: none)")
ap.add_argument("--live-for", type=float, default=5.0, help="emulated seconds the live failure lasts")
ap.add_argument("--out", default=str(ROOT / "out" / "example-faults"))
args = ap.parse_args()
out = Path(args.out)

scenario = netemu.load_scenario(args.scenario)
plan = netemu.make_plan(scenario)
healthy = netemu.make_plan(dataclasses.replace(scenario, name=scenario.name + "-healthy", faults=()))
pairs = [("g-beijing", "c-odc-00"), ("g-sanya", "c-odc-00")]


def inject_live(run_dir: Path, relay: str) -> None:
    """At --live-at, fail `relay` through the run's control socket (as `netemu inject` does)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            t = request(str(run_dir), "status")["t_s"]
            break
        except InjectError:
            time.sleep(0.5)           # the run is still coming up
    else:
        print("live injection: the run never came up")
        return
    while t < args.live_at - 0.05:
        time.sleep(min(0.5, args.live_at - t - 0.02))
        t = request(str(run_dir), "status")["t_s"]
    r = request(str(run_dir), "fail_node", node=relay, duration_s=args.live_for)
    print(f"live: failed {relay} at t = {r['t_s']:.3f} s ({r['links']} links, in the engine in {r['apply_ms']:.3f} ms)")


runs = {}
for name, p in (("faulty", plan), ("healthy", healthy)):
    run_dir = out / name
    helper = None
    if name == "faulty" and args.live_at > 0:
        path = plan.routes.path_at("g-beijing", "c-odc-00", args.live_at)
        relays = [n for n in path[2:-1] if n.startswith("r")] or [n for n in path[1:-1]]
        helper = threading.Thread(target=inject_live, args=(run_dir, relays[0]), daemon=True)
        helper.start()
    print(f"{name}: playing t = {args.start:g}..{args.start + args.duration:g} s into {run_dir}")
    netemu.run(p, run_dir, start_s=args.start, duration_s=args.duration, probes=pairs, probe_rate_hz=50,
               overwrite=True, progress=lambda m: print(f"  {m}"))
    if helper is not None:
        helper.join(5)
    runs[name] = run_dir

ev = pd.read_csv(runs["faulty"] / "events.csv")
inj_path = runs["faulty"] / "injections.csv"
inj = pd.read_csv(inj_path) if inj_path.exists() else None
tl = fault_timeline(ev, inj, args.start, args.start + args.duration)
eff = fault_effects(tl, pd.read_parquet(runs["faulty"] / "probes.parquet"))
print("faults in the window:")
for f in eff.itertuples(index=False):
    rep = f"repaired after {f.time_to_repair_s:.3f} s" if f.time_to_repair_s == f.time_to_repair_s else "no path crossed it"
    print(f"  {f.fault}: {f.kind} {f.target} at t = {f.t_start_s:.3f} s, {rep}, {f.probes_lost} probes lost")
cmp_ = build_compare([runs["healthy"], runs["faulty"]], out / "compare")
print(f"reports: {runs['faulty'] / 'report.html'}, {runs['healthy'] / 'report.html'}; comparison: {cmp_}")
