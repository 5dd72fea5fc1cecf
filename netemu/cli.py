"""The `netemu` command: thin argument parsing around the library; progress on stderr."""

from __future__ import annotations

import argparse
import json
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


def cmd_plan(args) -> int:
    from .plan import make_plan, summary_text, write_plan
    from .scenario import load_scenario
    say = _stage(time.perf_counter())
    scenario = load_scenario(args.scenario)
    say(f"scenario {scenario.name}: {sum(g.count for g in scenario.satellites):,} satellites, "
        f"{len(scenario.ground_stations)} ground stations, {scenario.n_steps:,} steps")
    plan = make_plan(scenario, workers=args.workers, progress=say)
    summary = write_plan(plan, args.out)
    say(f"wrote {args.out}")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary_text(summary))
        print(f"Plan files in {args.out}/")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import format_checks, run_checks
    scenario = None
    if args.scenario:
        from .scenario import load_scenario
        scenario = load_scenario(args.scenario)
    checks = run_checks(scenario)
    print(format_checks(checks))
    return 0 if all(c.ok or not c.required for c in checks) else 1


def cmd_clean(args) -> int:
    import os
    from .netns import clean
    if os.geteuid() != 0:
        print("netemu: error: clean needs root (it deletes network namespaces); run with sudo", file=sys.stderr)
        return 2
    removed = clean(args.run)
    print(f"removed {len(removed['namespaces'])} namespaces and {len(removed['links'])} interfaces left by netemu")
    for name in removed["namespaces"] + removed["links"]:
        print(f"  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netemu", description="Emulate space-ground data networks (orbital AI data centres).")
    p.add_argument("--version", action="version", version=f"netemu {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pl = sub.add_parser("plan", help="compute the time-varying topology and paths (no root needed)")
    pl.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO),
                    help="scenario TOML (default: topologies/beijing-orbital-dc.toml)")
    pl.add_argument("-o", "--out", required=True, help="output directory")
    pl.add_argument("--workers", type=int, default=None, help="routing processes (default: one per core)")
    pl.add_argument("--json", action="store_true", help="print summary.json instead of the plain summary")
    pl.set_defaults(func=cmd_plan)
    dr = sub.add_parser("doctor", help="check what this machine can emulate (root for the kernel checks)")
    dr.add_argument("scenario", nargs="?", help="also estimate the memory this scenario needs")
    dr.set_defaults(func=cmd_doctor)
    cl = sub.add_parser("clean", help="remove namespaces and interfaces that netemu runs left behind")
    cl.add_argument("--run", help="only this run id (4 hex digits)", default=None)
    cl.set_defaults(func=cmd_clean)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        print("netemu: error: --workers: expected an integer ≥ 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except NetemuError as e:
        print(f"netemu: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netemu: interrupted", file=sys.stderr)
        return 130
