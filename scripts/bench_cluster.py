"""Benchmark: one scenario's window over N "hosts" on this machine (network namespaces joined by
an underlay, each running a Dask worker; netemu.emulate.nshosts), as `netemu run --cluster` runs
it. Reports per host: bring-up and teardown time, nodes, links, cut links, engine busy fraction
and frames; and for the run: apply skew between hosts per step (p50/p99/max), the late fraction
on cut links, and probe RTT − oracle (p50/p99). Root; run under the machine's CPU lock.

    python scripts/bench_cluster.py [--hosts 3] [--scenario tests/data/fidelity.toml] [--start 300]
                                    [--duration 20] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netemu  # noqa: E402
from netemu.emulate.cluster import ClusterEmulation  # noqa: E402
from netemu.emulate.nshosts import NamespaceHosts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--scenario", default=str(ROOT / "tests" / "data" / "fidelity.toml"))
    ap.add_argument("--start", type=float, default=300.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--probe-rate", type=float, default=20.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    plan = netemu.make_plan(netemu.load_scenario(args.scenario), workers=2)
    t0 = time.perf_counter()
    with NamespaceHosts(args.hosts) as lab:
        lab_s = time.perf_counter() - t0
        em = ClusterEmulation(plan, lab.scheduler, start_s=args.start, duration_s=args.duration)
        try:
            t1 = time.perf_counter()
            em.build()
            up_s = time.perf_counter() - t1
            em.start()
            time.sleep(1.0)
            src, dst = plan.scenario.endpoints[:2] if len(plan.scenario.endpoints) >= 2 else (None, None)
            n = int((args.duration - 3) * args.probe_rate)
            probes = em.probe(src, dst, n, 1 / args.probe_rate)
            em.wait(args.duration + 60)
            res = em.results()
            skew = em.apply_skew()
            late = em.cut_link_lateness()
        finally:
            t2 = time.perf_counter()
            em.close()
            down_s = time.perf_counter() - t2
    err = (probes["rtt_ms"] - probes["oracle_rtt_ms"]).dropna()
    hosts = []
    for h in em.hosts:
        r = res[h]
        eng = r["engines"]
        hosts.append({"host": h, "nodes": sum(1 for x in em.host_of.values() if x == h),
                      "links": em.built[h]["links"], "cut_links": em.built[h]["cut_links"],
                      "up_s": round(sum(r["timings_s"].values()), 2),
                      "down_s": round(em.teardown.get(h, {}).get("teardown_s", float("nan")), 2),
                      "engine_busy_fraction": round(max(e["busy_fraction"] for e in eng), 4),
                      "engine_frames": int(sum(e["frames"] for e in eng)),
                      "clock_offset_ms": round(em.offsets[h]["offset_ms"], 3),
                      "clock_bound_ms": round(em.offsets[h]["bound_ms"], 3)})
    out = {"scenario": plan.scenario.name, "hosts": args.hosts, "window_s": args.duration,
           "lab_up_s": round(lab_s, 2), "up_s": round(up_s, 2), "down_s": round(down_s, 2), "per_host": hosts,
           "apply_skew_ms": {"p50": round(float(skew["skew_ms"].median()), 3),
                             "p99": round(float(skew["skew_ms"].quantile(0.99)), 3),
                             "max": round(float(skew["skew_ms"].max()), 3)},
           "apply_lag_ms_max": round(float(skew["max_lag_ms"].max()), 3),
           "cut_link_frames": int(late["wire_rx"].sum()),
           "cut_link_late_fraction": round(float(late["wire_late"].sum() / max(1, late["wire_rx"].sum())), 5),
           "rtt_minus_oracle_ms": {"answered": int(len(err)), "of": int(len(probes)),
                                   "p50": round(float(err.median()), 3),
                                   "p99_abs": round(float(np.percentile(np.abs(err), 99)), 3)}}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
