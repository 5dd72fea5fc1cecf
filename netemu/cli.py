"""The `netemu` command: thin argument parsing around the library; progress on stderr.

Each command imports the library it needs inside its function, when it runs: `netemu --help`,
a bad flag and `python -m netemu` stay fast, and a command never loads pandas, scapy or Mininet
unless it uses them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .errors import NetemuError

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "topologies" / "beijing-orbital-dc.toml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit code 2 with one line, as for bad input files
        self.print_usage(sys.stderr)
        self.exit(2, f"netemu: error: {message}\n")


def _stage(start: float):
    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)
    return say


def _say_plan_written(args, summary: dict, say) -> None:
    """What `netemu plan -o` prints once the plan files are written (JSON with --json)."""
    from .plan.planner import summary_text
    say(f"wrote {args.out}")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary_text(summary))
        print(f"Plan files in {args.out}/")


def cmd_plan(args) -> int:
    from .plan.planner import make_plan, write_plan
    from .plan.scenario import load_scenario
    say = _stage(time.perf_counter())
    if args.out:
        from .rundir import check_out_dir
        check_out_dir(args.out, overwrite=args.overwrite, for_plan=True)
    scenario = load_scenario(args.scenario)
    say(f"scenario {scenario.name}: {sum(g.count for g in scenario.satellites):,} satellites, "
        f"{len(scenario.ground_stations)} ground stations, {scenario.n_steps:,} steps")
    if not (args.out or args.check or args.save_golden):
        raise NetemuError("plan: expected -o OUT, --check GOLDEN_DIR or --save-golden DIR")
    from .plan.stream import check_block_memory, not_streamable, stream_plan
    if args.out and not (args.check or args.save_golden) and not_streamable(scenario) is None:
        # Planned a block of steps at a time, files written as blocks complete: memory bounded by the block.
        from .rundir import OutputError, staged_out_dir
        check_block_memory(scenario, args.workers)   # before the directory exists
        try:
            # written aside and moved in at the end: a failure leaves no half-written plan, and
            # an earlier plan in the directory stays whole
            with staged_out_dir(args.out, overwrite=args.overwrite) as stage:
                summary = stream_plan(scenario, stage, workers=args.workers, progress=say)
        except OSError as e:
            raise OutputError(f"-o {args.out}: cannot write the plan files: {e.strerror or e}") from None
        _say_plan_written(args, summary, say)
        return 0
    plan = make_plan(scenario, workers=args.workers, progress=say)
    if args.out:
        from .rundir import OutputError, prepare_out_dir
        prepare_out_dir(args.out, overwrite=args.overwrite)
        try:
            summary = write_plan(plan, args.out)
        except OSError as e:
            raise OutputError(f"-o {args.out}: cannot write the plan files: {e.strerror or e}") from None
        _say_plan_written(args, summary, say)
    if args.save_golden:
        from .plan.golden import save_golden
        meta = save_golden(plan, args.save_golden)
        print(f"golden summary of {scenario.name} in {args.save_golden}/ ({meta['links_intervals']:,} link "
              f"intervals, paths every {meta['path_sample_every_steps']} steps)")
    if args.check:
        from .plan.golden import check_plan
        res = check_plan(plan, args.check, tolerance_ms=args.tolerance_ms, link_changes_per_step=args.link_tolerance)
        print(res.report())
        return 0 if res.ok else 1
    return 0


def _pair(text: str, flag: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":")
    if not sep or not src or not dst:
        raise NetemuError(f"{flag} {text!r}: expected SRC:DST (two node names)")
    return src, dst


def cmd_partition(args) -> int:
    from .plan.partition import partition
    from .plan.planner import make_plan
    from .plan.scenario import load_scenario
    if args.hosts < 1:
        raise NetemuError(f"--hosts: expected a whole number ≥ 1, found {args.hosts}")
    say = _stage(time.perf_counter())
    scenario = load_scenario(args.scenario)
    say(f"scenario {scenario.name}: planning")
    part = partition(make_plan(scenario, progress=say), args.hosts, cut_threshold_ms=args.cut_threshold_ms)
    if args.json:
        print(json.dumps(part.hosts.to_dict("records"), indent=2))
    else:
        print(f"{scenario.name} on {args.hosts} host(s):")
        print(part.text())
    return 0


def cmd_run(args) -> int:
    from .plan.planner import make_plan
    from .runner import run
    from .plan.scenario import load_scenario
    say = _stage(time.perf_counter())

    def on_term(signum, frame):  # SIGTERM tears down like Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    probes = None
    if args.probe:
        probes = [_pair(p, "--probe") for item in args.probe for p in item.split(",") if p]
    iperf = _pair(args.iperf, "--iperf") if args.iperf else None
    if args.cluster:
        alone = [flag for flag, given in (("--iperf", iperf), ("--capture", args.capture), ("--cli", args.cli),
                                          ("--links kernel", args.links == "kernel")) if given]
        if alone:
            raise NetemuError(f"{', '.join(alone)}: not available with --cluster yet (single-host runs only; "
                              f"docs/cluster.md)")
    from .rundir import check_out_dir
    check_out_dir(args.out, overwrite=args.overwrite)     # before anything is planned or built
    scenario = load_scenario(args.scenario)
    from .emulate.netns import running_as_root
    if not running_as_root():
        raise NetemuError("netemu run needs root (namespaces, TAP devices, routes); run it with sudo")
    say(f"scenario {scenario.name}: planning")
    plan = make_plan(scenario, progress=say)
    duration = _default_duration(plan, args.start, args.duration)
    if args.cluster:
        from .runner import run_cluster
        info = run_cluster(plan, args.out, args.cluster, hosts=args.cluster_hosts.split(",") if args.cluster_hosts else None,
                           start_s=args.start, duration_s=duration, speed=args.speed,
                           dilation=1.0 if args.dilation == "auto" else args.dilation, probe_rate_hz=args.probe_rate,
                           calibrate=not args.no_calibrate, overwrite=args.overwrite, probes=probes, progress=say)
        c = info["cluster"]
        print(f"cluster run of {scenario.name}: {len(c['hosts'])} hosts, {c['cut_links']} cut links, up in "
              f"{info['up_s']} s, down in {info['down_s']} s; apply skew p99 {c['apply_skew_ms']['p99']} ms; "
              f"late frames on cut links {c['cut_link_late_frames']} of {c['cut_link_frames']}; "
              f"RTT − oracle p99 {info['fidelity']['abs_error_p99_ms']} ms")
        return 0
    info = run(plan, args.out, probes=probes, probe_rate_hz=args.probe_rate, iperf=iperf, cli=args.cli,
               progress=say, links=args.links, scope=args.scope, speed=args.speed, dilation=args.dilation,
               start_s=args.start, duration_s=duration, shards=args.shards, busy_poll=False if args.no_busy_poll else None, seed=args.seed,
               calibrate=not args.no_calibrate, overwrite=args.overwrite, allow_concurrent=args.allow_concurrent,
               captures=tuple(c for item in args.capture or () for c in item.split(",") if c))
    fid = info.get("fidelity", {})
    lag = info.get("apply_lag_ms", {})
    print(f"run of {scenario.name}: {info.get('nodes')} nodes, {info.get('links')} links, up in {info.get('up_s')} s, "
          f"down in {info.get('down_s')} s")
    if lag:
        print(f"route changes applied with lag median {lag['median']} ms, p99 {lag['p99']} ms")
    if fid:
        print(f"fidelity: {fid.get('verdict')}: RTT − oracle median {fid.get('error_median_ms')} ms, "
              f"p99 |err| {fid.get('abs_error_p99_ms')} ms over {fid.get('compared')} probes "
              f"({fid.get('straddling_path_change')} straddling path changes, "
              f"{fid.get('lost_while_reachable')} lost while reachable)")
        for why in fid.get("reasons", []):
            print(f"  {why}")
    if info.get("iperf_mean_mbps") is not None:
        print(f"iperf3 {info['iperf']}: mean {info['iperf_mean_mbps']:.1f} Mbit/s")
    for w in info.get("warnings", []):
        print(f"warning: {w}")
    files = "run.json, probes.parquet, fidelity.json, apply.csv, addresses.csv"
    if info.get("workloads"):
        files += ", jobs.csv, throughput.csv, summary.json, workloads/"
    if info.get("apps"):
        files += ", apps.csv, apps/"
    if info.get("captures"):
        files += f", captures/ ({info['captures']['files']} pcap files, {info['captures']['frames']:,} frames)"
    print(f"Results in {args.out}/ ({files}); report: {args.out}/report.html")
    return 0


DEFAULT_RUN_DURATION_S = 60.0   # emulated seconds `netemu run` plays unless --duration says otherwise


def _default_duration(plan, start_s: float, duration_s: float | None) -> float | None:
    """--duration, or DEFAULT_RUN_DURATION_S cut to the plan's end (the whole plan of a shipped
    scenario is an hour of wall time)."""
    if duration_s is not None:
        return duration_s
    left_s = float(plan.track.t_s[-1]) - start_s
    return min(DEFAULT_RUN_DURATION_S, left_s) if left_s > 0 else None


def cmd_trace_inspect(args) -> int:
    from .traffic.trace import format_inspect, inspect
    info = inspect(args.pcap, top=args.top)
    print(json.dumps(info, indent=2, default=str) if args.json else format_inspect(info))
    return 0


def cmd_replay(args) -> int:
    from .plan.planner import make_plan
    from .traffic.replay import TraceReplay
    from .runner import run
    from .plan.scenario import load_scenario
    say = _stage(time.perf_counter())

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    from .rundir import check_out_dir
    check_out_dir(args.out, overwrite=args.overwrite)     # before anything is planned or built
    scenario = load_scenario(args.scenario)
    from .emulate.netns import running_as_root
    if not running_as_root():
        raise NetemuError("netemu replay needs root (namespaces, TAP devices, routes); run it with sudo")
    say(f"scenario {scenario.name}: planning")
    plan = make_plan(scenario, progress=say)
    say(f"reading {args.pcap}")
    rp = TraceReplay(plan, args.pcap, mapping=args.map, mode=args.mode)
    say(f"mapping ({rp.mapping_source}): " + ", ".join(f"{a}={n}" for a, n in rp.mapping.items()))
    duration = args.duration if args.duration is not None else rp.window_s(args.speed, args.start)
    info = run(plan, args.out, probes=[] if args.no_probes else None, progress=say, workloads=False, replay=rp,
               scope=args.scope, speed=args.speed, dilation=args.dilation, start_s=args.start, duration_s=duration,
               seed=args.seed, overwrite=args.overwrite, allow_concurrent=args.allow_concurrent)
    for w in info.get("warnings", []):
        print(f"warning: {w}")
    print(f"Results in {args.out}/ (packets.parquet, messages.parquet, flows.parquet, summary.json, run.json); "
          f"report: {args.out}/report.html")
    return 0


def cmd_export_czml(args) -> int:
    from .plan.czml import czml_from_dir, write_czml
    packets = czml_from_dir(args.dir, sample_s=args.sample_s)
    try:
        n = write_czml(packets, args.out)
    except OSError as e:
        raise NetemuError(f"-o {args.out}: cannot write the CZML file: {e.strerror or e}") from None
    links = sum(1 for p in packets if p["id"].startswith("link/"))
    print(f"CZML in {args.out} ({len(packets) - 1:,} packets, {links:,} of them links; {n / 2**20:,.1f} MiB)")
    return 0


def cmd_export_code(args) -> int:
    from .plan.code import format_code
    from .plan.scenario import WalkerShell, load_scenario
    scenario = load_scenario(args.scenario)
    shells = [g for g in scenario.satellites if isinstance(g, WalkerShell)]
    if not shells:
        raise NetemuError(f"{args.scenario}: no Walker shell (source = 'walker' or 'code') to give a code for")
    for g in shells:
        try:
            code = format_code(g.raan_spread_deg, g.altitude_km, g.inclination_deg, g.planes, g.sats_per_plane,
                               g.phasing, g.mean_anomaly0_deg)
        except ValueError as e:
            print(f"{g.name}: no code: expected {e}")
            continue
        note = f"  # raan0_deg = {g.raan0_deg:g} is not part of the code" if g.raan0_deg else ""
        print(f"{g.name}: {code}{note}")
    return 0


def cmd_import_hypatia(args) -> int:
    from .plan.hypatia import import_hypatia
    out = import_hypatia(args.dir, args.out, duration_s=args.duration_s, step_s=args.step_s,
                         isl_rate_mbps=args.isl_rate_mbps, gsl_rate_mbps=args.gsl_rate_mbps, overwrite=args.overwrite)
    others = ", ".join(Path(out[k]).name for k in ("tles", "isls", "stations", "names") if k in out)
    print(f"scenario {out['scenario']} (with {others}); {out['renamed']} ground-station names changed to netemu node names, "
          f"mapping in {Path(out['names']).name}")
    return 0


def cmd_report(args) -> int:
    from .report import build_report
    from .errors import PlanError
    from .plan.views import VIEW_POSITIONS_FILE, view_positions_of_dir
    d = Path(args.run_dir)
    if d.is_dir() and (d / "links.parquet").exists() and not (d / VIEW_POSITIONS_FILE).exists():
        # the time view's positions (a run writes them; a plan directory gets them from its scenario copy)
        try:
            view_positions_of_dir(d).to_parquet(d / VIEW_POSITIONS_FILE, index=False)
        except PlanError as e:
            print(f"netemu report: no time view: {e}", file=sys.stderr)
    path = build_report(args.run_dir, progress=_stage(time.perf_counter()))
    print(f"Report in {path} (figures in {path.parent / 'figures'}/)")
    return 0


def cmd_compare(args) -> int:
    from .report import build_compare
    pair = _pair(args.pair, "--pair") if args.pair else None
    path = build_compare(args.run_dirs, args.out, pair=pair,
                         warn=lambda m: print(f"netemu: warning: {m}", file=sys.stderr))
    print(f"Comparison in {path} (table also in compare.csv, compare.json)")
    return 0


def cmd_doctor(args) -> int:
    from .emulate.doctor import format_checks, run_checks
    if args.hosts:
        from .emulate.clusterdoctor import cluster_checks
        checks = cluster_checks(args.hosts)
        print(format_checks(checks))
        return 0 if all(c.ok or not c.required for c in checks) else 1
    scenario = None
    if args.scenario:
        from .plan.scenario import load_scenario
        scenario = load_scenario(args.scenario)
    checks = run_checks(scenario)
    print(format_checks(checks))
    return 0 if all(c.ok or not c.required for c in checks) else 1


def cmd_clean(args) -> int:
    from .emulate.netns import check_run_id, clean
    if args.run is not None:
        check_run_id(args.run)
    if os.geteuid() != 0:
        print("netemu: error: clean needs root (it deletes network namespaces); run with sudo", file=sys.stderr)
        return 2
    removed = clean(args.run, everything=args.all)
    print(f"removed {len(removed['namespaces'])} namespaces, {len(removed['links'])} interfaces and "
          f"{len(removed['processes'])} processes left by netemu")
    for name in removed["namespaces"] + removed["links"]:
        print(f"  {name}")
    if removed["spared"]:
        print(f"spared {len(removed['spared'])} live run(s) ({', '.join(removed['spared'])}; see `netemu ps`; "
              f"--all removes them too)")
    return 0


INJECT_TARGETS = {"fail-node": (1, 1, "NODE"), "fail-link": (2, 2, "A B"), "restore": (0, 2, "[NODE [B]]"),
                  "status": (0, 0, ""), "reboot": (1, 1, "NODE")}


def cmd_inject(args) -> int:
    lo, hi, names = INJECT_TARGETS[args.action]
    if not lo <= len(args.targets) <= hi:
        raise NetemuError(f"inject {args.action}: expected {names or 'no target'}, found "
                          f"{' '.join(args.targets) or 'nothing'}")
    if args.duration is not None and args.action not in ("fail-node", "fail-link"):
        raise NetemuError(f"inject {args.action}: --duration is for fail-node and fail-link")
    if getattr(args, "reboot_s", None) is not None and args.action != "reboot":
        raise NetemuError(f"inject {args.action}: --reboot-s is for reboot")
    if args.duration is not None and args.action == "reboot":
        raise NetemuError("inject reboot: --duration is for fail-node and fail-link (a reboot lasts --reboot-s)")
    from .emulate.inject import request
    t = args.targets
    if args.action == "fail-node":
        r = request(args.run_dir, "fail_node", node=t[0], duration_s=args.duration)
    elif args.action == "fail-link":
        r = request(args.run_dir, "fail_link", a=t[0], b=t[1], duration_s=args.duration)
    elif args.action == "reboot":
        r = request(args.run_dir, "reboot", node=t[0], reboot_s=args.reboot_s)
    elif args.action == "restore":
        r = request(args.run_dir, "restore", a=t[0] if t else None, b=t[1] if len(t) > 1 else None)[0]
    else:
        st = request(args.run_dir, "status")
        print(json.dumps(st, indent=2) if args.json else
              f"t = {st['t_s']:.3f} s; {len(st['injections'])} injection(s) so far")
        return 0
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    what = {"fail_node": "failed node", "fail_link": "failed link", "restore": "restored", "reboot": "rebooting node"}[r["kind"]]
    until = f" for {r['duration_s']:g} s" if r.get("duration_s") else ""
    if r["kind"] == "reboot":
        until += " (then its links re-acquire)"
    reroute = (f"; routes move around it at t = {r['reroute_due_s']:.3f} s (detection {r['detection_s']:g} s)"
               if r["kind"] != "restore" else "; routes back at once")
    print(f"{what} {r['target']} at t = {r['t_s']:.3f} s{until}: {r['links']} link(s) in the engine in "
          f"{r['apply_ms']:.3f} ms{reroute} (logged in the run's injections.csv)")
    return 0


def cmd_ps(args) -> int:
    from .emulate.netns import list_runs
    runs = list_runs()
    live = [e for e in runs if e["alive"]]
    if args.json:
        print(json.dumps(runs if args.all else live, indent=2))
        return 0
    shown = runs if args.all else live
    if not shown:
        print("no live netemu runs" + ("" if args.all else f" ({len(runs)} stale entries: --all lists them)"
                                        if runs else ""))
        return 0
    print(f"{'id':<5} {'pid':>7}  {'started (UTC)':<20} {'scenario':<24} out dir")
    for e in shown:
        state = "" if e["alive"] else "  (owner gone: `netemu clean` removes it)"
        print(f"{e['id']:<5} {e.get('pid', '?'):>7}  {str(e.get('started', '?')):<20} "
              f"{str(e.get('scenario') or '-'):<24} {e.get('out_dir') or '-'}{state}")
    return 0


def cmd_exec(args) -> int:
    from .emulate.attach import exec_argv
    if os.geteuid() != 0:
        raise NetemuError("exec needs root (it enters a run's network namespace); run it with sudo")
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    argv = exec_argv(args.run, args.node, command)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)      # the command's exit status is netemu's
    return 0


def _number(text: str, ok, expected: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return v


def _positive(text: str) -> float:
    return _number(text, lambda v: v > 0, "a number > 0")


def _nonneg(text: str) -> float:
    return _number(text, lambda v: v >= 0, "a number ≥ 0")


def _at_least_one(text: str) -> float:
    return _number(text, lambda v: v >= 1, "a number ≥ 1")


MAX_PROBE_RATE_HZ = 1000.0   # = runner.MAX_PROBE_RATE_HZ (not imported: the parser stays light)


def _probe_rate(text: str) -> float:
    return _number(text, lambda v: 0 < v <= MAX_PROBE_RATE_HZ,
                   f"probes per second per pair in (0, {MAX_PROBE_RATE_HZ:g}] (the probe program sends at "
                   f"most one echo per ms per pair)")


def _run_dir_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier netemu run in -o (its files are removed first; any other "
                        "non-empty directory is refused)")
    p.add_argument("--allow-concurrent", action="store_true",
                   help="run even while another netemu run is live (both share the CPUs: delays and the "
                        "calibration suffer; a warning says so)")


def _dilation(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _number(text, lambda v: v >= 1, "a number ≥ 1 or auto")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netemu", description="Emulate space-ground data networks (orbital AI data centres).")
    p.add_argument("--version", action="version", version=f"netemu {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pl = sub.add_parser("plan", help="compute the time-varying topology and paths (no root needed)")
    pl.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO),
                    help="scenario TOML (default: topologies/beijing-orbital-dc.toml)")
    pl.add_argument("-o", "--out", help="output directory of the plan files")
    pl.add_argument("--check", metavar="GOLDEN_DIR",
                    help="compare the plan with a golden summary; exit 1 listing the differences")
    pl.add_argument("--save-golden", metavar="DIR", help="write the plan's golden summary into DIR")
    pl.add_argument("--tolerance-ms", type=_nonneg, default=0.001,
                    help="path delays may differ from the golden's by this much (default 0.001 ms)")
    pl.add_argument("--link-tolerance", type=int, default=0,
                    help="links that may appear or vanish per step against the golden (default 0)")
    pl.add_argument("--workers", type=int, default=None, help="routing processes (default: one per core)")
    pl.add_argument("--json", action="store_true", help="print summary.json instead of the plain summary")
    pl.add_argument("--overwrite", action="store_true",
                    help="replace an earlier netemu run in -o (an earlier plan there is rewritten anyway; any "
                         "other non-empty directory is refused)")
    pl.set_defaults(func=cmd_plan)
    rn = sub.add_parser("run", help="emulate the scenario with real network stacks (root)")
    rn.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO),
                    help="scenario TOML (default: topologies/beijing-orbital-dc.toml)")
    rn.add_argument("-o", "--out", required=True, help="run directory")
    rn.add_argument("--start", type=_nonneg, default=0.0, help="emulated start time, s from the epoch (default 0)")
    rn.add_argument("--duration", type=_positive, default=None,
                    help=f"emulated seconds to play (default {DEFAULT_RUN_DURATION_S:g}, or to the plan's end if "
                         f"sooner; the wall time is duration × dilation / speed plus the bring-up, printed "
                         f"before the run starts)")
    rn.add_argument("--speed", type=_positive, default=1.0, help="< 1 slows the orbital motion (default 1)")
    rn.add_argument("--dilation", type=_dilation, default="auto",
                    help="time dilation K ≥ 1: delays × K, rates ÷ K, motion ÷ K; auto (default): the "
                         "smallest K at which this machine keeps up with the window's route changes and "
                         "moving links (run.json: dilation_auto)")
    rn.add_argument("--scope", choices=("auto", "all", "paths"), default="auto",
                    help="instantiate every satellite or only those on endpoint paths (auto: paths above 500)")
    rn.add_argument("--links", choices=("engine", "kernel"), default="engine", help="link backend (default engine)")
    rn.add_argument("--shards", type=int, default=None,
                    help="link-engine processes (default: half the cores when polling, else one per core)")
    rn.add_argument("--no-busy-poll", action="store_true",
                    help="link engines sleep between frames instead of polling on their own cores "
                         "(frees those cores; delays jitter by the wake-up time)")
    rn.add_argument("--probe", action="append", metavar="SRC:DST[,SRC:DST]",
                    help="RTT probe pairs (default: every ground station to the first compute satellite)")
    rn.add_argument("--probe-rate", type=_probe_rate, default=20.0,
                    help=f"probes per second per pair (default 20, at most {MAX_PROBE_RATE_HZ:g})")
    rn.add_argument("--iperf", metavar="SRC:DST", help="also run iperf3 (TCP) from SRC to DST over the window")
    rn.add_argument("--seed", type=int, default=0, help="random seed of link losses")
    rn.add_argument("--no-calibrate", action="store_true", help="skip the link-engine overhead calibration")
    rn.add_argument("--cli", action="store_true", help="open the Mininet CLI while the constellation moves")
    rn.add_argument("--capture", action="append", metavar="NODE[:IFACE]|A-B",
                    help="write pcaps of a node's interfaces, one interface (by name or neighbour), or the link "
                         "A-B (both ends) into captures/ (emulated-time stamps; repeatable)")
    rn.add_argument("--cluster", metavar="SCHEDULER",
                    help="spread the run over the Dask workers of this scheduler (e.g. tcp://10.0.0.1:8786), one "
                         "worker per emulation host, run as root (docs/cluster.md)")
    rn.add_argument("--cluster-hosts", metavar="NAME[,NAME]",
                    help="with --cluster: the workers to use, in host order (default all, by name; the first "
                         "gets the ground stations)")
    _run_dir_flags(rn)
    rn.set_defaults(func=cmd_run)
    tr = sub.add_parser("trace", help="packet traces (pcap, pcapng)")
    trs = tr.add_subparsers(dest="trace_command", required=True, parser_class=_Parser)
    ti = trs.add_parser("inspect", help="print what a trace holds: flows, sizes, duration, rate")
    ti.add_argument("pcap", help="pcap or pcapng file")
    ti.add_argument("--top", type=int, default=10, help="flows and addresses to list (default 10)")
    ti.add_argument("--json", action="store_true", help="print JSON instead of text")
    ti.set_defaults(func=cmd_trace_inspect)
    rp = sub.add_parser("replay", help="replay a packet trace through the emulated network (root)")
    rp.add_argument("scenario", help="scenario TOML")
    rp.add_argument("pcap", help="pcap or pcapng file")
    rp.add_argument("-o", "--out", required=True, help="run directory")
    rp.add_argument("--map", metavar="ADDR=NODE[,ADDR=NODE]",
                    help="trace addresses onto nodes (default: the two busiest addresses onto the scenario's "
                         "first client and server)")
    rp.add_argument("--mode", choices=("auto", "open", "closed"), default="auto",
                    help="open-loop (original timing), closed-loop (messages over TCP), or auto: "
                         "TCP flows closed-loop, the rest open-loop (default)")
    rp.add_argument("--start", type=_nonneg, default=0.0, help="emulated start time, s from the epoch (default 0)")
    rp.add_argument("--duration", type=_positive, default=None,
                    help="emulated seconds to play (default: the trace's span plus 3.5 s, or up to 60 s "
                         "more for closed-loop flows, ending when they have)")
    rp.add_argument("--speed", type=_positive, default=1.0, help="< 1 slows the orbital motion (default 1)")
    rp.add_argument("--dilation", type=_at_least_one, default=1.0, help="time dilation K ≥ 1 (default 1)")
    rp.add_argument("--scope", choices=("auto", "all", "paths"), default="auto")
    rp.add_argument("--seed", type=int, default=0, help="random seed of link losses")
    rp.add_argument("--no-probes", action="store_true", help="no RTT probes alongside the replay")
    _run_dir_flags(rp)
    rp.set_defaults(func=cmd_replay)
    ex = sub.add_parser("export", help="write a plan in another tool's format (no root needed)")
    exs = ex.add_subparsers(dest="export_command", required=True, parser_class=_Parser)
    ez = exs.add_parser("czml", help="satellites, stations and links over time as CZML (Cesium)")
    ez.add_argument("dir", metavar="PLAN_OR_RUN_DIR", help="a plan directory (netemu plan -o) or a run directory")
    ez.add_argument("-o", "--out", required=True, help="the CZML file to write")
    ez.add_argument("--sample-s", type=_positive, default=10.0,
                    help="write satellite positions every this many seconds (default 10; Cesium interpolates)")
    ez.set_defaults(func=cmd_export_czml)
    ec = exs.add_parser("code", help="print each Walker shell's constellation code (draft-piraux-space-constellation-code)")
    ec.add_argument("scenario", help="scenario TOML")
    ec.set_defaults(func=cmd_export_code)
    im = sub.add_parser("import", help="turn another tool's inputs into a netemu scenario (no root needed)")
    ims = im.add_subparsers(dest="import_command", required=True, parser_class=_Parser)
    ih = ims.add_parser("hypatia", help="Hypatia-style inputs: tles.txt, isls.txt, ground_stations.txt, description.txt")
    ih.add_argument("dir", help="the directory of the inputs")
    ih.add_argument("-o", "--out", required=True, help="the scenario TOML to write (its files are written beside it)")
    ih.add_argument("--duration-s", type=_positive, default=200.0, help="the scenario's duration_s (default 200)")
    ih.add_argument("--step-s", type=_positive, default=1.0, help="the scenario's step_s (default 1)")
    ih.add_argument("--isl-rate-mbps", type=_positive, default=10_000.0, help="laser ISL rate (default 10000)")
    ih.add_argument("--gsl-rate-mbps", type=_positive, default=10_000.0, help="ground link rate (default 10000)")
    ih.add_argument("--overwrite", action="store_true", help="replace the scenario and its files if they exist")
    ih.set_defaults(func=cmd_import_hypatia)
    rpt = sub.add_parser("report", help="write RUN_DIR/report.html and its figures (also done by run and replay)")
    rpt.add_argument("run_dir", help="a run directory of netemu run or netemu replay")
    rpt.set_defaults(func=cmd_report)
    cmp_ = sub.add_parser("compare", help="put runs side by side: metrics table and overlaid plots")
    cmp_.add_argument("run_dirs", nargs="+", help="two or more run directories")
    cmp_.add_argument("-o", "--out", required=True, help="output directory (compare.html, compare.csv, compare.json, "
                      "figures/)")
    cmp_.add_argument("--pair", metavar="SRC:DST", help="compare only this probed pair (default: every pair all runs "
                      "probed)")
    cmp_.set_defaults(func=cmd_compare)
    dr = sub.add_parser("doctor", help="check what this machine can emulate (root for the kernel checks)")
    dr.add_argument("scenario", nargs="?", help="also estimate the memory this scenario needs")
    dr.add_argument("--hosts", metavar="SCHEDULER",
                    help="check the emulation hosts (Dask workers) of this scheduler instead: root, TUN/TAP, MTU, "
                         "clock offsets, the wire's reach, substrate latency and the cut threshold they imply")
    dr.set_defaults(func=cmd_doctor)
    cl = sub.add_parser("clean", help="remove namespaces and interfaces that netemu runs left behind")
    cl.add_argument("--run", help="only this run id (4 hex digits, as `netemu ps` lists them; removed even if live)",
                    default=None)
    cl.add_argument("--all", action="store_true",
                    help="also remove live runs (default: only runs whose owner process is gone)")
    cl.set_defaults(func=cmd_clean)
    pa = sub.add_parser("partition", help="place a scenario's nodes on several emulation hosts (no root needed)")
    pa.add_argument("scenario", help="scenario TOML")
    pa.add_argument("--hosts", type=int, required=True, help="emulation hosts (≥ 1; host 0 is the coordinator's)")
    pa.add_argument("--cut-threshold-ms", type=_nonneg, default=0.5,
                    help="links shorter than this are never cut between hosts (default 0.5 ms)")
    pa.add_argument("--json", action="store_true", help="print the per-host table as JSON")
    pa.set_defaults(func=cmd_partition)
    ij = sub.add_parser("inject", help="fail, reboot or restore a node or link of a live run, now (root)",
                        description="Fail or restore a node or a link of a live run (`netemu run`), now: the link "
                                    "engine takes its links down at once, routes move around it after the "
                                    "scenario's [routing] failure_detection_s. Logged in the run's injections.csv.")
    ij.add_argument("run_dir", help="the live run's directory (its -o) or id (`netemu ps`)")
    ij.add_argument("action", choices=list(INJECT_TARGETS), help="fail-node NODE | fail-link A B | "
                    "restore [NODE [B]] (no target: every live fault) | status | reboot NODE")
    ij.add_argument("targets", nargs="*", help="node name(s)")
    ij.add_argument("--duration", type=_positive, default=None,
                    help="emulated seconds until the fault ends by itself (default: until restored)")
    ij.add_argument("--reboot-s", type=_positive, default=None,
                    help="reboot: emulated seconds the node stays dark (default: the scenario's reboot or "
                         "radiation faults' reboot_s)")
    ij.add_argument("--json", action="store_true", help="print the injection's log row as JSON")
    ij.set_defaults(func=cmd_inject)
    ps = sub.add_parser("ps", help="list live netemu runs (id, pid, scenario, output directory, start)")
    ps.add_argument("--all", action="store_true", help="also list registered runs whose owner process is gone")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.set_defaults(func=cmd_ps)
    xc = sub.add_parser("exec", help="run a command in a node of a live run (root): netemu exec RUN NODE -- CMD …")
    xc.add_argument("run", help="the run's id (`netemu ps`) or its output directory")
    xc.add_argument("node", help="the node to run it in")
    xc.add_argument("command", nargs=argparse.REMAINDER,
                    help="after --: the program and its arguments (no shell; {node}, {loopback} and {addr:NAME} "
                         "are replaced by the node's name, its address and node NAME's address)")
    xc.set_defaults(func=cmd_exec)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("workers", "shards"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            print(f"netemu: error: --{flag}: expected an integer ≥ 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except NetemuError as e:
        print(f"netemu: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netemu: interrupted", file=sys.stderr)
        return 130
