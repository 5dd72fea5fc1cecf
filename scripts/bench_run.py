#!/usr/bin/env python3
"""Benchmark of `netemu run` at scale (root): bring-up, playing, teardown, memory.

1. The full Starlink shell 1 scenario (1,584 satellites + 100 ground stations, --scope all):
   time to bring the network up and tear it down, memory the machine used for it (MemTotal −
   MemAvailable, peak over the run, minus before), and the lag of route changes at 100 ms steps
   (apply.csv) over `--play` emulated seconds.
2. The default scenario: time to bring it up.

Targets: Starlink up < 60 s, down < 15 s, < 8 GiB; route changes at 100 ms steps applied with a
lag p99 ≤ 10 ms and max ≤ 20 ms, no engine feed call longer than 5 ms (issue "Keeping up at
scale"); default scenario up < 10 s. Each figure is the median [min-max] over `--repeat` runs
and a ratio to its target; nothing fails on wall time. The worst steps' breakdown (apply.csv:
namespaces touched by the player and by the link engine, start lateness, netlink sends, acks,
engine feeding, CPU wait) is printed.

    sudo .venv/bin/python scripts/bench_run.py [--play 20] [--repeat 3] [--out out/bench-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netemu  # noqa: E402
from netemu.emulate.emulation import Emulation  # noqa: E402


def mem_used_gib() -> float:
    info = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 2**20


class MemPeak:
    def __init__(self):
        self.base = mem_used_gib()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.25):
            self.peak = max(self.peak, mem_used_gib())

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak - self.base


STORM_T_S = 10.0


def storm_scenario(fraction: float, tmp: Path) -> Path:
    """Starlink shell 1 with a storm: `fraction` of the shell fails at t = STORM_T_S (issue
    "Faults, outages and weather": applied in one step within the usual route-apply figures)."""
    src = ROOT / "topologies" / "starlink-s1.toml"
    text = src.read_text().replace('ground_stations_file = "cities-100.csv"',
                                   f'ground_stations_file = "{(src.parent / "cities-100.csv").as_posix()}"')
    path = tmp / "starlink-s1-storm.toml"
    path.write_text(text + f'\n[[faults]]\nkind = "storm"\ngroup = "starlink-s1"\nt_s = {STORM_T_S}\n'
                           f'fraction = {fraction}\n')
    return path


def bench_scale(play_s: float, say, scenario: Path | None = None) -> dict:
    sc = netemu.load_scenario(scenario or ROOT / "topologies" / "starlink-s1.toml")
    t = time.perf_counter()
    plan = netemu.make_plan(sc, progress=lambda m: None)
    plan_s = time.perf_counter() - t
    say(f"starlink-s1 planned in {plan_s:.1f} s ({len(plan.schedule.node_names):,} nodes, step {sc.step_s} s)")
    mem = MemPeak()
    t = time.perf_counter()
    em = Emulation(plan, scope="all", duration_s=play_s, progress=lambda m: say("  " + m))
    try:
        em.build()
        up_s = time.perf_counter() - t
        say(f"up in {up_s:.1f} s")
        em.start()
        em.wait()
        log = em.player.apply_log()
        worst = log.nlargest(5, "lag_ms")
        say("  worst steps (ms): " + "; ".join(
            f"step {int(r.step)}: lag {r.lag_ms:.1f} = start late {r.start_late_ms:.1f} + sends {r.send_ms:.1f} "
            f"({int(r.routes)} routes; player {int(r.namespaces)} namespaces, engine {int(r.engine_namespaces)} "
            f"done at {r.engine_done_ms:.1f}), acks {r.ack_ms:.1f}, feeding before "
            f"{r.feed_ms:.1f}, CPU wait {r.cpu_wait_ms:.1f}" for r in worst.itertuples()))
        lag = log["lag_ms"].to_numpy()
        routes_per_step = log["routes"].to_numpy()
        overload = em.links.check_overload()
        engine = em.links.status()
        feed_ms = np.array(em.player.feed_ms)
    finally:
        t = time.perf_counter()
        em.close()
        down_s = time.perf_counter() - t
    mem_gib = mem.stop()
    say(f"down in {down_s:.1f} s; memory {mem_gib:.2f} GiB")
    return {"plan_s": round(plan_s, 1), "nodes": len(em.node_names), "links": len(em.link_table),
            "up_s": round(up_s, 1), "down_s": round(down_s, 2), "memory_gib": round(mem_gib, 2),
            "build_timings_s": {k: round(v, 2) for k, v in em.timings_s.items()},
            "steps_played": len(log), "route_changes_per_step_median": float(np.median(routes_per_step)),
            "route_changes_per_step_max": int(routes_per_step.max()),
            "apply_lag_ms": {"median": round(float(np.median(lag)), 2), "p99": round(float(np.percentile(lag, 99)), 2),
                             "max": round(float(lag.max()), 2)},
            "worst_steps": worst.round(2).to_dict("records"),
            "storm_step": log[(log["t_s"] >= STORM_T_S) & (log["t_s"] < STORM_T_S + 0.2)].round(2).to_dict("records")
            if scenario is not None else None,
            "prep_ms_total": round(float(log["prep_ms"].sum()), 1) if "prep_ms" in log else None,
            "engine_overload": overload, "engine": engine,
            "engine_feed_ms": {"median": round(float(np.median(feed_ms)), 1), "max": round(float(feed_ms.max()), 1)},
            "ratios_to_target": {"up": round(up_s / 60, 2), "down": round(down_s / 15, 2),
                                 "memory": round(mem_gib / 8, 2),
                                 "apply_lag_p99": round(float(np.percentile(lag, 99)) / 10, 2),
                                 "apply_lag_max": round(float(lag.max()) / 20, 2),
                                 "engine_feed_max": round(float(feed_ms.max()) / 5, 2)}}


def bench_default(say) -> dict:
    sc = netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc.toml")
    plan = netemu.make_plan(sc)
    t = time.perf_counter()
    em = Emulation(plan, duration_s=10)
    try:
        em.build()
        up_s = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        em.close()
        down_s = time.perf_counter() - t
    say(f"default scenario up in {up_s:.1f} s (calibration {em.timings_s.get('link_backend', 0):.1f} s), "
        f"down in {down_s:.2f} s")
    return {"up_s": round(up_s, 2), "down_s": round(down_s, 2), "ratio_to_target": round(up_s / 10, 2),
            "build_timings_s": {k: round(v, 2) for k, v in em.timings_s.items()}}


def spread(values) -> str:
    """median [min-max] of a list of figures."""
    v = np.asarray([x for x in values if x is not None], float)
    return f"{np.median(v):.3g} [{v.min():.3g}-{v.max():.3g}]" if len(v) else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--play", type=float, default=20.0, help="emulated seconds of Starlink to play (default 20)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each benchmark (default 3)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-run"), help="where to write bench.json")
    ap.add_argument("--skip-scale", action="store_true", help="only the default scenario")
    ap.add_argument("--storm", type=float, metavar="FRACTION",
                    help=f"only Starlink, with this fraction of the shell failing at t = {STORM_T_S:g} s: its step's lag")
    ap.add_argument("--no-switch", action="store_true",
                    help="send big steps' route changes one by one at their instant, as before the "
                         "tables prepared ahead (for comparison)")
    args = ap.parse_args()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.no_switch:
        from netemu.emulate import forwarding
        forwarding.FLIP_MIN_STEP_CHANGES = float("inf")
    if args.storm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = storm_scenario(args.storm, Path(tmp))
            runs = [bench_scale(args.play, say, path) for _ in range(args.repeat)]
        for r in runs:
            for row in r["storm_step"]:
                say(f"  storm step {int(row['step'])}: {int(row['routes'])} routes, lag {row['lag_ms']} ms "
                    f"= start late {row['start_late_ms']} + sends {row['send_ms']} (player {int(row['namespaces'])} "
                    f"namespaces, engine {int(row['engine_namespaces'])} done at {row['engine_done_ms']}; "
                    f"{int(row.get('switched_namespaces', 0))} of them switched to the table prepared ahead), "
                    f"acks {row['ack_ms']}, CPU wait {row['cpu_wait_ms']}")
            say(f"  big-step preparation ahead: {r['prep_ms_total']} ms in the player over the run")
        summary = {"storm_fraction": args.storm, "switch_tables": not args.no_switch,
                   "storm_step_lag_ms": spread(max(row["lag_ms"] for row in r["storm_step"]) for r in runs),
                   "apply_lag_p99_ms": spread(r["apply_lag_ms"]["p99"] for r in runs),
                   "apply_lag_max_ms": spread(r["apply_lag_ms"]["max"] for r in runs)}
        print(json.dumps(summary, indent=2))
        return 0
    runs = {"default": [bench_default(say) for _ in range(args.repeat)]}
    if not args.skip_scale:
        runs["starlink_s1"] = [bench_scale(args.play, say) for _ in range(args.repeat)]
    summary = {"default_up_s": spread(r["up_s"] for r in runs["default"])}
    if "starlink_s1" in runs:
        s = runs["starlink_s1"]
        summary.update({
            "starlink_up_s": spread(r["up_s"] for r in s), "starlink_down_s": spread(r["down_s"] for r in s),
            "starlink_memory_gib": spread(r["memory_gib"] for r in s),
            "apply_lag_median_ms": spread(r["apply_lag_ms"]["median"] for r in s),
            "apply_lag_p99_ms (target 10)": spread(r["apply_lag_ms"]["p99"] for r in s),
            "apply_lag_max_ms (target 20)": spread(r["apply_lag_ms"]["max"] for r in s),
            "engine_feed_max_ms (target 5)": spread(r["engine_feed_ms"]["max"] for r in s)})
    result = {"summary": summary, "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
