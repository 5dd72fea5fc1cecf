#!/usr/bin/env python3
"""Queueing inference server benchmark: its own overhead per request at 100 requests/s.

Runs two workload agents (`netemu.traffic.agent`) on this host's loopback, no emulation: an
inference client sending Poisson requests at `--rate` per second (prompt and output tokens
lognormal around the Azure trace's medians, as the inference workload draws them) and a server,
first the queueing one (compute model: `--slots` batch slots, prefill and decode rates), then the
fixed-service server on the same requests for reference. Reports, per request:

- added delay: the client's time to first byte minus the model's queue + prefill time, and its
  completion minus queue + prefill + decode (loopback's own delay is microseconds, so this is
  the server's and the client's processing), median and p99;
- the server process's CPU time per request (user + system, from wait4), queueing and
  fixed-service server, and the difference (what the queueing adds);
- time spent inside the queueing model (`BatchServer` calls) per request.

Never fails on time; run under the project's CPU lock:

    flock /tmp/netemu-cpu.lock .venv/bin/python scripts/bench_queue_server.py [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _jobs(rate: float, seconds: float, t0: float, seed: int) -> list:
    rng = np.random.default_rng(seed)
    t = t0 + np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.5) + 20))
    t = t[t < t0 + seconds]
    n = len(t)
    prompt = np.clip(np.round(np.exp(rng.normal(np.log(1020), 0.77, n))), 1, 8192).astype(int)
    output = np.clip(np.round(np.exp(rng.normal(np.log(129), 0.93, n))), 1, 8192).astype(int)
    return [[j, float(t[j]), int(4 * prompt[j] + 1000), int(output[j]), 250, int(prompt[j])] for j in range(n)]


def _run(tmp: Path, tag: str, server_role: dict, client_role: dict, until: float) -> tuple[pd.DataFrame, float]:
    procs = {}
    for node, role in (("srv", server_role), ("cli", client_role)):
        spec = {"node": node, "address": "127.0.0.1", "log": str(tmp / f"{tag}-{node}.jsonl"), "roles": [role]}
        p = tmp / f"{tag}-{node}.json"
        p.write_text(json.dumps(spec))
        procs[node] = subprocess.Popen([sys.executable, "-m", "netemu.traffic.agent", str(p)])
    while time.monotonic() < until:
        time.sleep(0.2)
    cpu = 0.0
    for node in ("cli", "srv"):
        procs[node].terminate()
        _, _, ru = os.wait4(procs[node].pid, 0)
        procs[node].returncode = 0
        if node == "srv":
            cpu = ru.ru_utime + ru.ru_stime
    rows = []
    for node in ("srv", "cli"):
        with open(tmp / f"{tag}-{node}.jsonl") as f:
            rows += [json.loads(x) for x in f if x.strip()]
    return pd.DataFrame(rows), cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (Poisson)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--slots", type=int, default=256, help="batch slots (8 accelerators × 32 sequences)")
    ap.add_argument("--port", type=int, default=43000 + os.getpid() % 1000)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for tag in ("queued", "fixed"):
            t0 = time.monotonic() + 1.5
            jobs = _jobs(args.rate, args.seconds, t0, seed=1)
            server = {"role": "inference-server", "workload": "bench", "port": args.port, "service_s": 0.1,
                      "token_interval_s": 0.01}
            if tag == "queued":
                server["queue"] = {"prefill_tokens_per_s": 10_000.0, "decode_tokens_per_s": 100.0,
                                   "queue_limit": 1024, "slots": [[t0 - 1, args.slots]]}
            client = {"role": "inference-client", "workload": "bench", "server": "127.0.0.1", "port": args.port,
                      "node": "cli", "queued": tag == "queued", "jobs": jobs}
            last = max(j[1] for j in jobs)
            ev, cpu = _run(tmp, tag, server, client, last + 15)
            cl = ev[ev["node"] == "cli"].pivot_table(index="job", columns="ev", values="t", aggfunc="first")
            n_done = int(cl["done"].notna().sum())
            res = {"requests": len(jobs), "done": n_done, "server_cpu_ms_per_request": 1e3 * cpu / len(jobs)}
            if tag == "queued":
                sv = ev[ev["ev"] == "served"].set_index("job")
                ttfb = cl["first_byte"] - cl["start"]
                comp = cl["done"] - cl["start"]
                add_first = (ttfb - sv["queue_s"] - sv["prefill_s"]).dropna() * 1e3
                add_done = (comp - sv["queue_s"] - sv["prefill_s"] - sv["decode_s"]).dropna() * 1e3
                res.update({
                    "added_ttfb_ms_median": float(add_first.median()), "added_ttfb_ms_p99": float(add_first.quantile(0.99)),
                    "added_completion_ms_median": float(add_done.median()),
                    "added_completion_ms_p99": float(add_done.quantile(0.99)),
                    "model_us_per_request": 1e6 * float(sv["overhead_s"].max()) / len(jobs),
                    "refused": int((ev["ev"] == "refused").sum()),
                    "queue_ms_max": 1e3 * float(sv["queue_s"].max())})
            else:
                ttfb = (cl["first_byte"] - cl["start"] - server["service_s"]).dropna() * 1e3
                res.update({"added_ttfb_ms_median": float(ttfb.median()), "added_ttfb_ms_p99": float(ttfb.quantile(0.99))})
            out[tag] = res
    out["queueing_adds_cpu_ms_per_request"] = (out["queued"]["server_cpu_ms_per_request"]
                                               - out["fixed"]["server_cpu_ms_per_request"])
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
