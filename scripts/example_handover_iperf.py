#!/usr/bin/env python3
"""Example: iperf3 goodput from Beijing to the orbital compute cluster across a ground-station
handover (run as root).

The default scenario's Beijing station re-points one of its two optical terminals at t = 121 s
(5 s handover gap). This script plays t = 114..128 s, runs iperf3 (TCP) from g-beijing to the
first compute satellite for the whole window, and prints goodput per emulated second next to
the RTT the planner predicts, so you can see what the handover costs a bulk transfer.

Links faster than this machine can carry are emulated faithfully through time dilation: with
`--dilation K` every delay is K times longer and every rate K times lower, and the figures below
are converted back. One engine core moves about 2 Gbit/s × hops, and Beijing's path to the
cluster has ~9 hops: the scenario's 60 Gbit/s ground lasers would need K ≈ 300. By default this
example gives the station a 500 Mbit/s RF feeder link instead (`--gsl-rate-mbps`) and runs with
K = 10 (14 emulated seconds take 140 s); if the engine cannot keep up, it says so at the end
(at K = 1 here it could not, and TCP then stalled for seconds at the handover: an artefact).

    sudo .venv/bin/python scripts/example_handover_iperf.py [--dilation 10] [--gsl-rate-mbps 500]
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netemu  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--start", type=float, default=114.0, help="emulated start (s)")
ap.add_argument("--duration", type=float, default=14.0, help="emulated seconds to play")
ap.add_argument("--dilation", type=float, default=10.0, help="time dilation K (delays × K, rates ÷ K)")
ap.add_argument("--gsl-rate-mbps", type=float, default=500.0, help="ground link rate (0: the scenario's)")
ap.add_argument("--out", default=str(ROOT / "out" / "example-handover"))
args = ap.parse_args()

# 1. Plan the scenario (pure, no root): orbits, laser topology, handovers, routes.
scenario = netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc.toml")
if args.gsl_rate_mbps:
    scenario = dataclasses.replace(scenario, gsl=dataclasses.replace(scenario.gsl, rate_mbps=args.gsl_rate_mbps))
plan = netemu.make_plan(scenario)
src, dst = "g-beijing", "c-odc-00"
events = plan.events[(plan.events["event"] == "handover") & (plan.events["a"] == src)
                     & plan.events["t_s"].between(args.start, args.start + args.duration)]
print(f"{src} handovers in the window: {list(events['t_s'])}")

# 2. Bring the network up: one namespace per node, emulated links, routes from the plan.
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
with netemu.emulate(plan, start_s=args.start, duration_s=args.duration, dilation=args.dilation,
                    progress=print) as em:
    server = em[dst].popen(["iperf3", "-s", "-1", "-B", em.loopback(dst)])
    time.sleep(0.3)
    em.start()   # the player: link delays follow the orbits, lasers re-point, routes change
    wall_s = int(round(args.duration * em.scale))
    # Mininet's API: run iperf3 inside the ground station, report every emulated second.
    report = em[src].cmd(f"iperf3 -c {em.loopback(dst)} -B {em.loopback(src)} -t {wall_s} "
                         f"-i {em.scale:g} -J")
    em.wait()
    server.wait(10)
    overload = em.links.check_overload()   # frames that left late: the figures would be too low

data = json.loads(report)
(out / "iperf.json").write_text(report)
paths = plan.routes.paths
pair = paths[((paths["src"] == src) & (paths["dst"] == dst)) | ((paths["src"] == dst) & (paths["dst"] == src))]
delay_at = dict(zip(pair["t_s"], pair["delay_ms"]))
rows = ["t_s,goodput_mbps,retransmits,planned_rtt_ms"]
print(f"\n{'t (s)':>7} {'goodput (Mbit/s)':>17} {'retransmits':>12} {'planned RTT (ms)':>17}")
for iv in data["intervals"]:
    s = iv["sum"]
    t = args.start + s["start"] / em.scale
    mbps = s["bits_per_second"] * args.dilation / 1e6
    rtt = 2 * delay_at.get(float(int(t)), float("nan"))
    mark = "  <- handover" if any(abs(t - h) < 1 for h in events["t_s"]) else ""
    print(f"{t:7.1f} {mbps:17.1f} {s.get('retransmits', 0):12d} {rtt:17.2f}{mark}")
    rows.append(f"{t:.3f},{mbps:.3f},{s.get('retransmits', 0)},{rtt:.4f}")
(out / "goodput.csv").write_text("\n".join(rows) + "\n")
end = data["end"]["sum_received"]
print(f"\nmean goodput {end['bits_per_second'] * args.dilation / 1e6:.1f} Mbit/s; results in {out}/")
for msg in overload:
    print(f"warning: {msg}")
