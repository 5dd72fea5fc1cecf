#!/usr/bin/env python3
"""Example: compare two ground-station link policies on the default scenario (run as root).

`nearest` hands a station over to whichever satellite is closest, often; `longest-visible`
keeps a satellite until it sets and then takes the one that will stay longest. Each policy is
planned and emulated for the same window with RTT probes from every ground station to the
compute cluster; the script prints, per policy, handovers, path changes, probe RTTs against the
planner's light-time oracle, and probes lost in handover gaps.

    sudo .venv/bin/python scripts/example_gsl_policies.py [--duration 60] [--start 100]
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netemu  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--start", type=float, default=100.0, help="emulated start (s)")
ap.add_argument("--duration", type=float, default=60.0, help="emulated seconds per policy")
ap.add_argument("--out", default=str(ROOT / "out" / "example-gsl-policies"))
args = ap.parse_args()

base = netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc.toml")
rows = []
for policy in ("nearest", "longest-visible"):
    scenario = dataclasses.replace(base, name=f"{base.name}-{policy}",
                                   gsl=dataclasses.replace(base.gsl, policy=policy))
    plan = netemu.make_plan(scenario)
    out = Path(args.out) / policy
    print(f"== {policy}: emulating t = {args.start:g}..{args.start + args.duration:g} s")
    netemu.run(plan, out, start_s=args.start, duration_s=args.duration, progress=print)
    ev = plan.events[plan.events["t_s"].between(args.start, args.start + args.duration)]
    probes = pd.read_parquet(out / "probes.parquet")
    fid = json.loads((out / "fidelity.json").read_text())["overall"]
    rows.append({"policy": policy,
                 "handovers": int((ev["event"] == "handover").sum()),
                 "path_changes": int((ev["event"] == "path_change").sum()),
                 "rtt_median_ms": round(float(probes["rtt_ms"].median()), 2),
                 "rtt_p99_ms": round(float(probes["rtt_ms"].quantile(0.99)), 2),
                 "lost_probes": int(probes["rtt_ms"].isna().sum()),
                 "rtt_minus_oracle_p99_ms": fid.get("abs_error_p99_ms")})

table = pd.DataFrame(rows)
table.to_csv(Path(args.out) / "comparison.csv", index=False)
print("\n" + table.to_string(index=False))
