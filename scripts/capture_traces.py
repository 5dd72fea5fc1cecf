#!/usr/bin/env python3
"""Recapture the packet traces in traces/ (root): run each built-in workload's real programs
(`netemu.traffic.agent`) between two network namespaces joined by a veth pair and record the veth with
tcpdump (headers only: replay uses each packet's IP length, so payload bytes are not needed).

    sudo .venv/bin/python scripts/capture_traces.py            # all traces into traces/
    sudo .venv/bin/python scripts/capture_traces.py --only inference --out out/traces

The workloads are the [[workloads]] of `traces/capture.toml`, started at t = 0.5 s and stopped
at their `stop_s`; ground side 10.77.0.1 (namespace `ground`), orbit side 10.77.0.2 (`orbit`).
The veth pair has no delay (this kernel has no netem), so think times in the traces are the
programs' own (service time, token pacing), not a network's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netemu.emulate.netns import Namespaces  # noqa: E402
from netemu.plan.scenario import load_scenario  # noqa: E402
from netemu.emulate.clock import Clock  # noqa: E402
from netemu.traffic.workloads import agent_specs  # noqa: E402

ADDR = {"ground": "10.77.0.1", "orbit": "10.77.0.2"}
SNAPLEN = 96           # Ethernet + IPv4 + TCP with options fit
LEAD_S = 0.5


def side(node: str) -> str:
    """Ground stations and the first rank on the ground side, the rest in orbit."""
    return "ground" if node.startswith("g-") or node == "c-00" else "orbit"


def capture(ns: Namespaces, dev: str, w, out: Path) -> dict:
    t_end = (w.stop_s or 10.0) + 5.0
    clock = Clock(t0_s=0.0, t_end_s=t_end, origin_mono=time.monotonic() + 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        specs = agent_specs((w,), clock, lambda n: ADDR[side(n)], Path(tmp))
        dump = ns.popen("ground", ["tcpdump", "-i", dev, "-s", str(SNAPLEN), "-w", str(out), "-U", "-q",
                                   "tcp or udp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if "listening on" not in dump.stderr.readline().decode():   # capturing from here on
            raise SystemExit(f"tcpdump did not start (exit {dump.poll()})")
        agents = []
        for node, spec in specs.items():
            path = Path(tmp) / f"{node}.json"
            spec["address"] = ADDR[side(node)]
            path.write_text(json.dumps(spec))
            agents.append(ns.popen(side(node), [sys.executable, "-m", "netemu.traffic.agent", str(path)]))
        deadline = clock.mono(t_end)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            events = [json.loads(line) for p in Path(tmp).glob("*.jsonl") for line in open(p) if line.strip()]
            if _finished(w, events, clock):
                time.sleep(0.3)
                break
        for a in agents:
            a.terminate()
            a.wait(10)
        time.sleep(0.3)
        dump.terminate()
        dump.wait(10)
        events = [json.loads(line) for p in Path(tmp).glob("*.jsonl") for line in open(p) if line.strip()]
    return {"events": len(events), "bytes": out.stat().st_size}


def _finished(w, events: list[dict], clock: Clock) -> bool:
    """Every job of `w` has ended (for inference: also no request is still due)."""
    mine = [e for e in events if e.get("wl") == w.name]
    ends = [e for e in mine if e["ev"] in ("done", "error", "step_end")]
    if w.kind == "allreduce":
        return len(ends) >= w.p("steps") * len(w.clients)
    if w.kind == "inference":
        starts = [e for e in mine if e["ev"] == "start"]
        return time.monotonic() > clock.mono(w.stop_s) and len(ends) >= len(starts)
    want = w.p("files") if w.kind == "upload" else w.p("count")
    return len(ends) >= want * len(w.clients)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "traces"), help="directory for the pcaps (default traces/)")
    ap.add_argument("--only", action="append", help="workload name(s) of capture.toml to capture")
    args = ap.parse_args()
    scenario = load_scenario(ROOT / "traces" / "capture.toml")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Namespaces() as ns:
        ns.add("ground")
        ns.add("orbit")
        # one segment per GSO packet: the capture sees wire-sized packets, not 64-KB super-frames
        dev = ns.veth("ground", "orbit", ADDR["ground"], ADDR["orbit"], gso_max_segs=1)
        for w in scenario.workloads:
            if args.only and w.name not in args.only:
                continue
            path = out / f"{w.name}.pcap"
            t = time.perf_counter()
            r = capture(ns, dev, w, path)
            print(f"{path.name}: {w.kind}, {r['bytes']:,} bytes, {r['events']} agent events, "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
