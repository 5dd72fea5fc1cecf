#!/usr/bin/env python3
"""Live fault injection benchmark (root). Reports figures; never fails on time.

Plays a scenario window and injects N faults by hand (`em.fail_node` / `em.fail_link`, each
restored by itself after --hold s), one every --every s, on relays and links of the probed path
and elsewhere; then prints, over the injections:
- the injection-to-engine latency (wall ms from the call to the engine's acknowledged
  application: `apply_ms`), median, p99, max — target < 1 ms at p99;
- the reroute instant against its due instant (the fault's instant + failure_detection_s),
  emulated ms: median, p99 and max of |error| — target ± 5 ms; restores likewise (due at once).

    sudo .venv/bin/python scripts/bench_inject.py [--scenario tests/data/faults.toml] [--start 342]
        [--injections 20] [--every 1.0] [--hold 0.5] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

import netemu

ROOT = Path(__file__).resolve().parent.parent


def stats(v) -> str:
    v = np.asarray(v, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return "n/a"
    return f"median {np.median(v):.3f}, p99 {np.percentile(v, 99):.3f}, max {v.max():.3f} (n = {len(v)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "tests" / "data" / "faults.toml"))
    ap.add_argument("--start", type=float, default=342.0)
    ap.add_argument("--injections", type=int, default=20)
    ap.add_argument("--every", type=float, default=1.0, help="emulated s between injections")
    ap.add_argument("--hold", type=float, default=0.5, help="emulated s each fault lasts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    plan = netemu.make_plan(netemu.load_scenario(args.scenario))
    rng = random.Random(args.seed)
    duration = args.injections * args.every + 2.0
    with netemu.emulate(plan, start_s=args.start, duration_s=duration) as em:
        sats = [n for n in em.node_names if n not in em.endpoints]
        pairs = list(zip(em.link_table["a"], em.link_table["b"]))
        em.start()
        for i in range(args.injections):
            t = args.start + 1.0 + i * args.every
            time.sleep(max(0.0, em.clock.mono(t) - time.monotonic()))
            if i % 2 == 0:
                em.fail_node(rng.choice(sats), duration_s=args.hold)
            else:
                em.fail_link(*rng.choice(pairs), duration_s=args.hold)
        em.wait(duration * em.scale + 30)
        log = em.injections()
    faults = log[log["kind"].isin(["fail_node", "fail_link"])]
    restores = log[log["kind"] == "restore"]
    planned = log[log["kind"] == "planned_reroute"]
    print(f"{plan.scenario.name}: {len(faults)} faults, {len(restores)} restores, detection "
          f"{plan.scenario.routing.failure_detection_s:g} s, {len(em.node_names)} nodes")
    print(f"injection → engine (wall ms): {stats(pd.concat([faults, restores])['apply_ms'])}")
    print(f"reroute − due, faults (emulated ms, |error|): {stats(faults['reroute_error_ms'].abs())}")
    print(f"reroute − due, restores (emulated ms, |error|): {stats(restores['reroute_error_ms'].abs())}")
    if len(planned):
        print(f"reroute − due, the plan's faults (emulated ms, |error|): {stats(planned['reroute_error_ms'].abs())}")
    print(f"routes changed per reroute: {stats(log['routes'])}")
    notes = [n for n in log["note"].fillna("") if n and not n.startswith("end of")]
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
