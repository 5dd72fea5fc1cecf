#!/usr/bin/env python3
"""Link-engine benchmark (root). Reports rates and ratios; never fails on time.

1. TCP throughput (iperf3, unlimited rate) over one link and across an 8-hop chain of router
   namespaces, at 10 ms and 1 ms per link; frames per second per engine core; the share of
   frames that left more than 0.5 ms after their due time (the engine saturated).
2. The residual latency per traversal after compensation: ICMP RTTs across the chain minus
   2 × hops × delay and minus a veth pair's RTT (the end hosts' own cost), divided by the
   2 × hops traversals (median, p99).
3. Time to apply a batch of 5,000 link updates (one control message per engine).
4. Optionally (--vnet-hdr) the same throughput with GSO super-frames.
5. Optionally (--sample-load) all of it while a run's link-load sampler (emulate.linkload) asks
   the engines every 100 ms, and what each sample cost the engine: compare with a run without.

    sudo .venv/bin/python scripts/bench_links.py [--shards N] [--seconds 5] [--repeat 3] [--vnet-hdr] [--busy-poll]
        [--hops 1,8] [--delays 10,1] [--no-updates] [--sample-load]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

from netemu.emulate.links import EngineLinks, LinkParams, build_chain, veth_reference_rtt_ms
from netemu.emulate.netns import Namespaces
from netemu.emulate.probe import icmp_rtts_ms


def iperf(ns: Namespaces, src: str, dst_name: str, dst_addr: str, seconds: float) -> float:
    srv = ns.popen(dst_name, ["iperf3", "-s", "-1", "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    r = ns.run(src, ["iperf3", "-c", dst_addr, "-t", str(seconds), "-O", "1", "-J"], timeout=seconds + 30)
    srv.wait(10)
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def frames(engine: EngineLinks) -> int:
    return int(engine.counters()[["frames_in"]].sum().iloc[0])


def chain_case(hops: int, delay_ms: float, args) -> dict:
    with Namespaces() as ns, EngineLinks(shards=args.shards, vnet_hdr=args.vnet_hdr, busy_poll=args.busy_poll) as eng:
        cal = eng.calibrate()
        names = [f"r{i}" for i in range(hops + 1)]
        for n in names:
            ns.add(n)
        links = [f"l{i}" for i in range(hops)]
        addrs = build_chain(eng, ns, names, links, LinkParams(delay_ms=delay_ms))
        ns.run(names[0], ["ping", "-c", "2", addrs[-1]])
        sampler = None
        if args.sample_load:
            from netemu.emulate.linkload import LoadSampler
            sampler = LoadSampler(eng, interval_s=0.1).start()
        mbps, fps, late = [], [], []
        for _ in range(args.repeat):
            c0, t0 = eng.counters(), time.monotonic()
            mbps.append(iperf(ns, names[0], names[-1], addrs[-1], args.seconds))
            c1 = eng.counters()
            fps.append((c1["frames_in"].sum() - c0["frames_in"].sum()) / (time.monotonic() - t0) / args.shards)
            late.append((c1["late"].sum() - c0["late"].sum()) / max(1, c1["frames_out"].sum() - c0["frames_out"].sum()))
        # residual per traversal: ICMP echoes (kernel receive timestamps) across the chain, less
        # 2 × hops × delay and less what a plain veth pair's RTT costs the two end hosts
        ref_ms = veth_reference_rtt_ms(ns)
        rtts = [r for r in icmp_rtts_ms(addrs[-1], 300, 0.01, netns=ns.path(names[0])) if r is not None]
        per_hop_us = sorted((r - 2 * hops * delay_ms - ref_ms) / (2 * hops) * 1e3 for r in rtts)
        if sampler is not None:
            sampler.stop()
    return {"sampling": sampler.stats() if sampler is not None else None,"hops": hops, "delay_ms": delay_ms, "tcp_mbps": [round(m, 1) for m in mbps],
            "frames_per_s_per_core": [round(f) for f in fps], "late_fraction": [round(x, 3) for x in late],
            "residual_per_hop_us_median": round(statistics.median(per_hop_us), 1),
            "residual_per_hop_us_p99": round(per_hop_us[int(0.99 * (len(per_hop_us) - 1))], 1),
            "calibration": cal}


def _span(values: list[float], fmt: str = "{:,.0f}") -> str:
    """median [min-max] of a list"""
    return (fmt.format(statistics.median(values)) if len(values) == 1 else
            f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]")


def update_batch(args, n_links: int = 5000) -> dict:
    """Apply 5,000 link updates in one batch: wall time of the call (engines on all shards)."""
    with Namespaces() as ns, EngineLinks(shards=args.shards) as eng:
        pa, pb = ns.add("a"), ns.add("b")
        from netemu.emulate.links import LinkEnd
        t = time.monotonic()
        for i in range(n_links):
            eng.add_link(f"u{i}", LinkEnd(pa, f"u{i}"), LinkEnd(pb, f"u{i}"), LinkParams(delay_ms=5))
        add_s = time.monotonic() - t
        times = []
        for k in range(5):
            updates = {f"u{i}": {"delay_ms": 5 + (i + k) % 7, "rate_mbps": 100, "up": (i + k) % 11 != 0}
                       for i in range(n_links)}
            t = time.perf_counter()
            eng.set_params(updates)
            times.append(time.perf_counter() - t)
        delays = {f"u{i}": [(1000.0, 5.0), (1001.0, 6.0)] for i in range(n_links)}
        t = time.perf_counter()
        eng.set_delay_points(delays)
        points_s = time.perf_counter() - t
        eng.stop()
    return {"links": n_links, "add_links_s": round(add_s, 2), "batch_update_ms_median": round(1e3 * statistics.median(times), 1),
            "delay_points_batch_ms": round(1e3 * points_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="iperf3 runs per case (median [min-max] reported)")
    ap.add_argument("--vnet-hdr", action="store_true")
    ap.add_argument("--busy-poll", action="store_true", help="engines poll instead of sleeping (a run's default "
                    "on machines with 2 or more cores)")
    ap.add_argument("--hops", default="1,8", help="chain lengths, comma-separated")
    ap.add_argument("--delays", default="10,1", help="delays per link (ms), comma-separated")
    ap.add_argument("--no-updates", action="store_true", help="leave out the 5,000-link update batch")
    ap.add_argument("--sample-load", action="store_true", help="sample the links' load every 100 ms meanwhile")
    args = ap.parse_args()
    results = {"shards": args.shards, "vnet_hdr": args.vnet_hdr, "busy_poll": args.busy_poll, "cases": []}
    for hops in [int(h) for h in args.hops.split(",")]:
        for delay in [float(d) for d in args.delays.split(",")]:
            r = chain_case(hops, delay, args)
            results["cases"].append(r)
            print(f"{hops} hop(s) × {delay:g} ms: TCP {_span(r['tcp_mbps'])} Mbit/s (× hops = "
                  f"{_span([m * hops for m in r['tcp_mbps']])}), {_span(r['frames_per_s_per_core'])} frames/s/core, "
                  f"late (> 0.5 ms) {_span([100 * x for x in r['late_fraction']], '{:.1f}')} % of frames; residual "
                  f"per traversal median {r['residual_per_hop_us_median']} µs, p99 {r['residual_per_hop_us_p99']} µs",
                  flush=True)
            if r["sampling"]:
                print(f"  link-load sampling: {r['sampling']}", flush=True)
    if args.no_updates:
        print(json.dumps(results, indent=2))
        return
    u = update_batch(args)
    results["updates"] = u
    print(f"{u['links']:,} links: added in {u['add_links_s']} s; batch of {u['links']:,} updates applied in "
          f"{u['batch_update_ms_median']} ms (median of 5); delay-profile batch {u['delay_points_batch_ms']} ms")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
