"""`netemu run`: plan, bring the network up, play it with its traffic sources (probes, the
scenario's workloads, a trace replay, iperf3), write the run directory, tear down (kernel edge;
root).

    build the emulation; start the sources (an ExitStack kills them whatever happens); wait for
    the window's end; stop and collect each source; write run.json; tear down.

Run directory: the plan files (scenario copy, nodes, links, paths, routes, events, summary),
`addresses.csv`, `apply.csv`, `probes.parquet`, `fidelity.json`, `link_counters.csv`,
`stalls.csv` (the link engines' stalls: when the host kept them from their links, the links
delayed and the probe pairs whose path crossed them),
`iperf.csv`/`iperf.json` (when asked), `injections.csv` (live faults, emulate.inject),
`positions.parquet` (nodes at a few instants, for the map), `report.html` with `figures/`, for the scenario's workloads `jobs.csv`, `throughput.csv`,
the `workloads` section of `summary.json` and the agents' event logs (`workloads/NODE.jsonl`), and
`run.json` (versions, host, options, timings); with `captures`, `captures/*.pcap` and
`captures/captures.csv` (emulate.captures).
`link_load.parquet`: each link direction's throughput, utilisation, queue and drops every 100 ms
(emulate.linkload).
Every time and figure there is in emulated time (divided back by the dilation factor).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import os
import platform
import resource
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
import pandas as pd

from .emulate.emulation import Emulation
from .emulate.hostnoise import STEAL_WARN_SHARE, cpu_times, steal_share
from .emulate.netns import live_runs
from .emulate.playback import scope_nodes, stalled_pairs
from .errors import EmulationError, NetemuError
from .plan.pairs import DEFAULT_PROBE_PAIRS, default_probe_pairs, probe_frames_per_s
from .plan.planner import write_plan
from .plan.views import VIEW_POSITIONS_FILE, view_positions_of_plan
from .report import MAP_INSTANTS, build_report, positions_table
from .rundir import OutputError, atomic_write, check_out_dir, prepare_out_dir
from .traffic.fidelity import FIDELITY_P99_MS, assess
from .traffic.launcher import WorkloadRunner
from .traffic.probes import (MAX_PROBE_RATE_HZ, PROBE_TIMEOUT_S, Iperf, Probes, check_pairs, check_probe_rate,
                             path_change_t_s, probe_windows)

__all__ = ["run", "RunOptions", "start_sources", "default_probe_pairs", "DEFAULT_PROBE_PAIRS", "RUN_FILES", "FIDELITY_P99_MS",
           "MAX_PROBE_RATE_HZ", "check_probe_rate"]

RUN_FILES = ("addresses.csv", "apply.csv", "probes.parquet", "fidelity.json", "link_counters.csv", "run.json")
WATCHDOG_GRACE_S = 10.0  # wall seconds (× dilation) past the window's end after which a run is stuck


@dataclass(frozen=True)
class RunOptions:
    """Everything a run is asked, recorded in full (defaults included) in run.json `options`.

    Traffic: `probes` (SRC, DST) pairs (None: plan.pairs.default_probe_pairs), `probe_rate_hz`
    echoes per emulated second per pair, `iperf` (SRC, DST) or None, `workloads` (the
    scenario's). Output: `report` (report.html at the end), `overwrite` (replace an earlier run
    in the directory), `allow_concurrent` (run beside another live run). The emulation:
    `links` (engine or kernel), `scope` (auto, all, paths), `speed`, `dilation` (≥ 1 or "auto"),
    `start_s`, `duration_s` (emulated; None: to the plan's end), `shards`, `busy_poll`, `seed`,
    `calibrate`, `mtu`. `captures`: link ends to capture to pcap (emulate.captures specs: NODE,
    NODE:IFACE, A-B); `apps`: run the scenario's [[apps]]."""

    probes: tuple[tuple[str, str], ...] | None = None
    probe_rate_hz: float = 20.0
    iperf: tuple[str, str] | None = None
    workloads: bool = True
    report: bool = True
    overwrite: bool = False
    allow_concurrent: bool = False
    links: str = "engine"
    scope: str = "auto"
    speed: float = 1.0
    dilation: float | str = 1.0
    start_s: float = 0.0
    duration_s: float | None = None
    shards: int | None = None
    busy_poll: bool | None = None
    seed: int = 0
    calibrate: bool = True
    mtu: int = 1500
    captures: tuple[str, ...] = ()
    apps: bool = True

    EMULATION = ("links", "scope", "speed", "dilation", "start_s", "duration_s", "shards", "busy_poll", "seed",
                 "calibrate", "mtu")

    def emulation(self) -> dict:
        """The keyword arguments of `Emulation`."""
        return {k: getattr(self, k) for k in self.EMULATION}

    @classmethod
    def of(cls, base: "RunOptions | None" = None, **changes) -> "RunOptions":
        """`base` (default: the defaults) with `changes`; an unknown option is one clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise EmulationError(f"run: unknown option(s) {', '.join(unknown)}; expected some of "
                                 f"{', '.join(sorted(known))}")
        if changes.get("probes") is not None:
            changes["probes"] = tuple(tuple(p) for p in changes["probes"])
        if changes.get("iperf") is not None:
            changes["iperf"] = tuple(changes["iperf"])
        if changes.get("captures") is not None:
            changes["captures"] = tuple(changes["captures"])
        return dataclasses.replace(base or cls(), **changes)


def _versions() -> dict:
    out = {"netemu": __import__("netemu").__version__, "python": platform.python_version(),
           "kernel": platform.release()}
    for pkg in ("numpy", "pandas", "scipy", "skyfield", "sgp4", "mininet"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _host() -> dict:
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "machine": platform.machine()}


def _peak_rss_gib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + kids) / 2**20, 2)


def run(plan, out_dir: str | Path, options: RunOptions | None = None, *, replay=None,
        cli: bool | TextIO = False, progress: Callable[[str], None] | None = None, **changes) -> dict:
    """Run `plan` in emulation and write the run directory `out_dir`; returns run.json's content.

    `options` (RunOptions; keyword `changes` override it, e.g. `duration_s=30`); `replay` a
    prepared `netemu.traffic.replay.TraceReplay`; `cli` opens netemu's shell (reading stdin, or
    this text stream) while the window plays. `out_dir` must be new, empty, or (with
    `overwrite`) an earlier netemu run, which is replaced. Ctrl-C / SIGTERM stop the sources,
    write what was measured (run.json then says `interrupted` and `partial`) and the report,
    tear everything down, and raise KeyboardInterrupt. A failed run's run.json says why
    (`error`). Another live run (of another process) is refused unless `allow_concurrent`."""
    opts = RunOptions.of(options, **changes)
    say = progress or (lambda m: None)
    out = Path(out_dir)
    check_out_dir(out, overwrite=opts.overwrite)
    check_probe_rate(opts.probe_rate_hz)
    pairs = default_probe_pairs(plan) if opts.probes is None else list(opts.probes)
    check_pairs(plan, pairs)
    if opts.iperf:
        check_pairs(plan, [opts.iperf], "iperf")
    concurrent = check_concurrent(opts.allow_concurrent)
    emulation = opts.emulation()
    if opts.dilation == "auto":   # the probes' frames count toward the engines' load
        emulation["probe_frames_per_s"] = probe_frames_per_s(plan, pairs, opts.probe_rate_hz)
    em = Emulation(plan, progress=say, **emulation)   # checks root, options and window first
    captures = _captures(plan, em, opts, out) if opts.captures else None
    sources = {"probes": Probes(plan, pairs, opts.probe_rate_hz, out / ".probes"),   # none: empty tables
               "replay": replay,
               "workloads": WorkloadRunner(plan, out / "workloads") if opts.workloads and plan.scenario.workloads
               else None,
               "iperf": Iperf(*opts.iperf, out / "iperf.json") if opts.iperf else None,
               "captures": captures,
               "apps": _apps(plan, em, out) if opts.apps and plan.scenario.apps else None}
    if replay is not None:
        replay.work_dir = out / "replay"
    em.ns.meta["out_dir"] = str(out.absolute())
    say(wall_time_line(plan, em))
    prepare_out_dir(out, overwrite=opts.overwrite)
    _write_plan_files(plan, em, out, out_dir)
    info: dict = {"run_id": em.run_id, "versions": _versions(), "host": _host(), "scenario": plan.scenario.name,
                  "options": dataclasses.asdict(opts), "probes": [f"{s}>{d}" for s, d in pairs],
                  "probe_rate_hz": opts.probe_rate_hz, "iperf": "{}>{}".format(*opts.iperf) if opts.iperf else None,
                  "interrupted": False, "partial": False, "warnings": list(concurrent),
                  "times_are": "emulated seconds (wall / (dilation / speed))"}
    loaded = any(sources[k] is not None for k in ("replay", "workloads", "iperf"))
    t_start = time.perf_counter()
    t_play = None
    try:
        with ExitStack() as stack:       # every started source is killed on the way out (a no-op once collected)
            em.build()
            info["up_s"] = round(time.perf_counter() - t_start, 3)
            say(f"up in {info['up_s']:.1f} s; playing t = {em.window.t0_s:g}..{em.window.t_end_s:g} s "
                f"(dilation {em.dilation:g}, speed {em.speed:g}: {em.clock.wall_s:.0f} s wall)")
            atomic_write(out / "addresses.csv", lambda tmp: em.address_table().to_csv(tmp, index=False))
            live = em.live()
            start_sources(stack, live, sources, ("probes",))   # before the clock: Python takes a moment to start
            em.start(lead_s=0.5)
            start_sources(stack, live, sources, ("captures",))   # once the engines' clock is the run's
            t_play = time.perf_counter()
            cpu_before = cpu_times()
            start_sources(stack, live, sources, ("replay", "workloads", "apps", "iperf"))
            if replay is not None:
                say(f"replaying {replay.path.name}: {replay.counts['open_loop']:,} packets open-loop, "
                    f"{replay.messages['flow'].nunique()} flows closed-loop ({len(replay.messages)} messages)")
            if sources["workloads"] is not None:
                say(f"workloads: {', '.join(w.name for w in plan.scenario.workloads)} "
                    f"({len(sources['workloads'].procs)} agents)")
            try:
                if cli:
                    from .emulate.shell import NetemuCLI   # Mininet's CLI, only when asked for
                    say("netemu shell (Mininet's CLI): `<node> <command>` runs in a node, node names stand for "
                        "their loopbacks; the constellation keeps moving; `exit` ends the run and writes its results")
                    NetemuCLI(em, stdin=cli if hasattr(cli, "readline") else None, run=True)
                    em.player.stop()
                else:
                    _wait_with_progress(em, say, replay.finished if replay is not None else None)
                info["play_s"] = round(time.perf_counter() - t_play, 3)
                _note_steal(info, cpu_before, say)
                say("collecting results")
                _collect(plan, em, out, info, sources, say, loaded=loaded)
            except KeyboardInterrupt:
                info["interrupted"] = info["partial"] = True
                say("interrupted: stopping the sources and writing what was measured (Ctrl-C again: tear down at once)")
                info["play_s"] = round(time.perf_counter() - t_play, 3)
                try:
                    em.player.stop()
                    if sources["iperf"] is not None:
                        sources["iperf"].interrupt()      # iperf3 then writes what it measured
                    _collect(plan, em, out, info, sources, say, loaded=loaded, partial=True)
                except KeyboardInterrupt:
                    say("interrupted again: tearing down without collecting")
                except Exception as e:
                    info["error"] = f"while writing the partial results: {e}"
    except KeyboardInterrupt:
        info["interrupted"] = info["partial"] = True
        say("interrupted before the run started: tearing down")
    except BaseException as e:
        info["error"] = str(e) or type(e).__name__
        raise
    finally:
        t_down = time.perf_counter()
        em.close()
        info["down_s"] = round(time.perf_counter() - t_down, 3)
        info["timings_s"] = {k: round(v, 3) for k, v in em.timings_s.items()}
        info["peak_rss_gib"] = _peak_rss_gib()
        run_json_error = _write_run_json(out, info)
    if run_json_error:
        raise OutputError(run_json_error)
    if info["interrupted"]:
        say(f"down in {info['down_s']:.1f} s; partial results in {out}")
        if opts.report and t_play is not None:
            _report(out, say, partial=True)
        raise KeyboardInterrupt
    say(f"down in {info['down_s']:.1f} s; results in {out}")
    if opts.report:
        _report(out, say)
    return info


def start_sources(stack: ExitStack, live, sources: dict, names) -> None:
    """Start `sources[name]` for each of `names` in order (None: not in this run), each one's
    `kill` registered with `stack` first, so whatever fails later (another source's start, the
    wait, a Ctrl-C), every source started (or half started) is killed on the way out."""
    for name in names:
        src = sources.get(name)
        if src is not None:
            stack.callback(src.kill)
            src.start(live)


def _write_plan_files(plan, em: Emulation, out: Path, out_dir) -> None:
    """The plan's files and the map's positions (the compute satellites' ground track from 50 min
    before to 50 min after the window: about an orbit at 700-800 km), within the plan."""
    w, t_grid = em.window, plan.track.t_s
    try:
        write_plan(plan, out)
        atomic_write(out / "positions.parquet", lambda tmp: positions_table(
            plan, list(np.linspace(w.t0_s, w.t_end_s, MAP_INSTANTS)),
            track_window=(max(float(t_grid[0]), w.t0_s - 3000), min(float(t_grid[-1]), w.t_end_s + 3000))
        ).to_parquet(tmp, index=False))
        atomic_write(out / VIEW_POSITIONS_FILE, lambda tmp: view_positions_of_plan(
            plan, w.t0_s, w.t_end_s).to_parquet(tmp, index=False))      # the report's time view
    except OSError as e:
        raise OutputError(f"-o {out_dir}: cannot write the plan files before the run: {e.strerror or e}; "
                          f"nothing was emulated") from None


def _captures(plan, em: Emulation, opts: RunOptions, out: Path):
    """The run's Captures, its specs checked against the network the run builds (before anything
    is built or written)."""
    from .emulate.captures import CAPTURE_DIR, Captures, resolve_captures
    if opts.links != "engine":
        raise EmulationError("--capture needs the link engine (--links engine): the kernel backend has no capture")
    nodes, links = em.network_tables()
    points = resolve_captures(opts.captures, nodes, links, plan.schedule.node_names)
    return Captures(points, out / CAPTURE_DIR, plan.scenario.epoch.timestamp(), lambda: em.links)


def _apps(plan, em: Emulation, out: Path):
    """The scenario's [[apps]] as a traffic source, their nodes checked against the network the
    run builds."""
    from .traffic.apps import Apps
    apps = Apps(plan.scenario.apps, out)
    apps.check(em.network_tables()[0])
    return apps


def check_concurrent(allow: bool) -> list[str]:
    """Refuse to start while another process's netemu run is live (both would share the CPUs, and
    this run's calibration would measure the other's load and take it off every delay), unless
    `allow`: then the warnings to report."""
    others = [e for e in live_runs() if e.get("pid") != os.getpid()]
    if not others:
        return []
    desc = "; ".join(f"run {e['id']} (pid {e.get('pid')}, scenario {e.get('scenario') or '?'}, "
                     f"output {e.get('out_dir') or '?'}, since {e.get('started')})" for e in others)
    if not allow:
        raise EmulationError(f"another netemu run is live: {desc}. Two runs share the CPUs and this run's "
                             f"calibration would measure the other's load; wait for it to end, or pass "
                             f"--allow-concurrent (`netemu ps` lists live runs)")
    msg = (f"running alongside another live netemu run ({desc}): both share the CPUs, so delays and the "
           f"calibration may be distorted")
    warnings.warn(msg, stacklevel=3)
    return [msg]


BRING_UP_BASE_S = 8.0        # calibration and engine start (6-7 s of the 7.7-9.3 s measured, default scenario)
BRING_UP_PER_NODE_S = 0.012  # namespaces, links, routes (Starlink shell 1, 1,684 nodes: up in 21.6-36.8 s)


def wall_time_line(plan, em: Emulation) -> str:
    """What the run will cost in wall time: the window × dilation / speed, plus an estimate of
    the bring-up from the node count."""
    w = em.window
    play_s = em.scale * (w.t_end_s - w.t0_s)
    n = len(scope_nodes(plan.schedule, plan.routes.routes, em.endpoints, w, em.scope))
    up_s = BRING_UP_BASE_S + BRING_UP_PER_NODE_S * n
    if getattr(em, "auto_dilation", False):   # chosen at bring-up: the line gives the floor
        return (f"this run takes at least {_mmss(play_s + up_s)} of wall time: {w.t_end_s - w.t0_s:g} s emulated "
                f"× the dilation chosen at bring-up (≥ 1, printed then) / speed {em.speed:g}, plus about "
                f"{_mmss(up_s)} to bring {n:,} nodes up")
    return (f"this run takes about {_mmss(play_s + up_s)} of wall time: {w.t_end_s - w.t0_s:g} s emulated "
            f"× dilation {em.dilation:g} / speed {em.speed:g} = {_mmss(play_s)} of play, plus about "
            f"{_mmss(up_s)} to bring {n:,} nodes up")


def _mmss(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _collect(plan, em: Emulation, out: Path, info: dict, sources: dict, say, loaded: bool,
             partial: bool = False) -> None:
    """Stop each source and write its results, then the apply log, the fidelity verdict, link
    counters and run facts into `out`. With `partial` (after an interrupt) a part that fails is
    named in the warnings and the others are still written."""
    def part(what: str, fn) -> None:
        try:
            fn()
        except KeyboardInterrupt:
            raise
        except OSError as e:
            raise OutputError(f"{out}: cannot write {what}: {e.strerror or e} (the run's other results "
                              f"were written before it)") from None
        except Exception as e:
            if not partial:
                raise
            info["warnings"].append(f"partial run: {what} not written ({e})")

    def collect(name: str, what: str, record) -> None:
        src = sources[name]
        if src is None:
            return

        def go() -> None:
            src.stop()
            record(src.write_results(out))
            if hasattr(src, "failures"):
                info["warnings"] += src.failures()
        part(what, go)

    collect("probes", "probes.parquet", lambda r: None)
    collect("replay", "the replay's results", lambda r: info.__setitem__("replay", _replay_lines(r, say)))
    collect("workloads", "the workloads' results (jobs.csv, throughput.csv)",
            lambda r: info.__setitem__("workloads", _workload_lines(r, say)))
    collect("apps", "apps.csv", lambda r: info.__setitem__("apps", r))
    inj = em.injections()
    if len(inj):   # live faults (emulate.inject)
        part("injections.csv", lambda: atomic_write(out / "injections.csv", lambda tmp: inj.to_csv(tmp, index=False)))
        info["injections"] = _injection_stats(inj)
    log = em.player.apply_log()
    part("apply.csv", lambda: atomic_write(out / "apply.csv", lambda tmp: log.to_csv(tmp, index=False)))
    info["apply_lag_ms"] = _stats(log["lag_ms"])
    info["engine_feed_ms"] = _stats(pd.Series(em.player.feed_ms, dtype=float))
    info["player_realtime"] = em.player.realtime
    info["routes_installed_at_start"] = em.routes_at_start()
    stalls = em.engine_stalls()
    stalls["pairs"] = stalled_pairs(stalls, em.plan.routes.routes, em.schedule.t_s, em.link_table,
                                    sources["probes"].pairs if sources["probes"] is not None else [])
    part("stalls.csv", lambda: atomic_write(out / "stalls.csv", lambda tmp: stalls.round(6).to_csv(tmp, index=False)))
    part("fidelity.json", lambda: _write_fidelity(em, sources["probes"], log, out, info, loaded=loaded,
                                                  stalls=stalls))
    collect("iperf", "iperf.csv", info.update)
    collect("captures", "captures/", lambda r: info.__setitem__("captures", r))

    def link_load() -> None:
        if getattr(em, "load", None) is None:
            return
        em.load.stop()
        table = em.load.table(em.clock, links=em.link_table["link"])
        atomic_write(out / "link_load.parquet", lambda tmp: table.to_parquet(tmp, index=False))
        info["link_load"] = em.load.stats()
    part("link_load.parquet", link_load)    # (its last sample before the counters: its sums never exceed them)

    def counters() -> None:
        c = em.links.counters()
        if len(c):
            c = c.merge(em.link_table[["link", "a", "b", "kind"]], on="link", how="left")
        atomic_write(out / "link_counters.csv", lambda tmp: c.to_csv(tmp, index=False))
    part("link_counters.csv", counters)
    if hasattr(em.links, "check_overload"):
        info["warnings"] += em.links.check_overload()
        info["engine"] = em.links.status()
    info["calibration"] = em.calibration
    info["nodes"], info["links"] = len(em.node_names), len(em.link_table)
    info["window"] = {"k0": em.window.k0, "k1": em.window.k1, "t0_s": em.window.t0_s, "t_end_s": em.window.t_end_s}
    info["dilation"], info["speed"] = em.dilation, em.speed
    if em.dilation_choice:
        info["dilation_auto"] = em.dilation_choice


def _note_steal(info: dict, before: dict, say) -> None:
    """run.json's host gets the share of the CPUs the hypervisor took while the run played
    (steal time); above STEAL_WARN_SHARE it is a warning: late frames and engine stalls then are
    the host's doing, not the emulation's load."""
    share = steal_share(before, cpu_times())
    if share is None:
        return
    info["host"]["cpu_steal_pct"] = round(100 * share, 2)
    if share > STEAL_WARN_SHARE:
        msg = (f"the hypervisor held this machine's vCPUs {100 * share:.1f} % of the time while the run played "
               f"(steal time, /proc/stat): frames in flight then left late (stalls.csv counts them); that is the "
               f"host's doing, not the emulation's load — a host whose CPUs are not overcommitted avoids it")
        info["warnings"].append(msg)
        say(f"warning: {msg}")


def _injection_stats(inj: pd.DataFrame) -> dict:
    """run.json's summary of the live injections: how many, the engine latency (wall ms) and the
    reroutes' error against their due instants (emulated ms)."""
    return {"count": int(len(inj)), "kinds": {str(k): int(v) for k, v in inj["kind"].value_counts().items()},
            "apply_ms": _stats(inj["apply_ms"]), "reroute_error_ms": _stats(inj["reroute_error_ms"]),
            "reroute_error_abs_ms": _stats(inj["reroute_error_ms"].abs())}


def _write_run_json(out: Path, info: dict) -> str | None:
    """Write run.json atomically; the error message when it cannot be written, else None."""
    try:
        atomic_write(out / "run.json",
                     lambda tmp: tmp.write_text(json.dumps(info, indent=2, default=_json_default) + "\n"))
    except OSError as e:
        return (f"{out}: cannot write run.json: {e.strerror or e}; the run's other results are there, "
                f"but without run.json `netemu report` cannot read them")
    return None


def _report(out: Path, say, partial: bool = False) -> None:
    """report.html; a failure to write it is one error saying what is there and what is missing."""
    try:
        say(f"report: {build_report(out)}")
    except OSError as e:
        raise OutputError(f"{out}: the run's results are written, but report.html could not be: "
                          f"{e.strerror or e}; free some space and run `netemu report {out}`") from None
    except NetemuError as e:
        if not partial:
            raise
        say(f"no report of the partial run: {e}")
    except Exception as e:   # a report bug must not hide that the run's results are safe
        raise OutputError(f"{out}: the run's results are written, but report.html could not be: "
                          f"{type(e).__name__}: {e}; `netemu report {out}` tries again") from None


def _replay_lines(summary: dict, say) -> dict:
    heads = {"counts": summary["counts"]}
    if "open_loop" in summary:
        o = summary["open_loop"]
        heads["open_loop"] = {k: o.get(k) for k in ("packets", "received", "lost", "send_failed", "reordered",
                                                     "owd_ms_p50", "owd_minus_oracle_ms_p99_abs")}
        say(f"  open-loop: {o['received']:,}/{o['packets']:,} packets received, {o['lost']:,} lost in the network, "
            f"{o.get('send_failed', 0):,} not sent (no route at the send time), {o['reordered']:,} reordered, "
            f"one-way delay p50 {o['owd_ms_p50']} ms")
    if "closed_loop" in summary:
        c = summary["closed_loop"]
        heads["closed_loop"] = c
        say(f"  closed-loop: {c['done']}/{c['messages']} messages of {c['flows']} flows done, "
            f"completion p50 {c['completion_ms_p50']} ms")
    return heads


def _workload_lines(summary: dict, say) -> dict:
    """Print one line per workload; return {name: its headline figures}."""
    heads = {}
    for name, s in summary["workloads"].items():
        key = {"inference": "completion_ms_p50", "allreduce": "ratio_to_ideal_median"}.get(s["kind"], "goodput_mbps_mean")
        heads[name] = {"kind": s["kind"], "jobs": s["jobs"], "done": s["done"], key: s.get(key)}
        say(f"  {name} ({s['kind']}): {s['done']}/{s['jobs']} jobs done, {key} = {s.get(key)}")
    return heads


def _wait_with_progress(em: Emulation, say, finished: Callable[[], bool] | None = None,
                        grace_s: float | None = None) -> None:
    """Wait for the window's end, or (with `finished`) one emulated second after it says so.

    Watchdog: a run still playing `grace_s` wall seconds after its window's end (default
    WATCHDOG_GRACE_S, scaled by the dilation) is stuck: stop with an EmulationError naming
    what it waits for, rather than wait for ever."""
    w = em.window
    span = w.t_end_s - w.t0_s
    grace = WATCHDOG_GRACE_S * max(1.0, em.scale) if grace_s is None else grace_s
    deadline = em.player.end_mono() + grace
    last = time.monotonic()
    while not em.wait(0.5):
        if finished is not None and finished():
            em.wait(em.scale * 1.0)
            em.player.stop()
            say(f"  replay finished at t = {em.now_t_s():.1f} s")
            break
        if time.monotonic() > deadline:
            raise EmulationError(f"the run passed the end of its window (t = {w.t_end_s:g} s) by {grace:.3g} s "
                                 f"wall and has not ended: it waits for {em.waiting_for()}")
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            t = em.now_t_s()
            say(f"  t = {t:.0f} s ({100 * (t - w.t0_s) / span:.0f} %)")


def _write_fidelity(em: Emulation, probes: Probes, log: pd.DataFrame, out: Path, info: dict,
                    loaded: bool = False, stalls: pd.DataFrame | None = None) -> None:
    """fidelity.json: the probes' RTTs against the oracle (traffic.fidelity.assess). With workload,
    replay or iperf traffic (`loaded`) the probes share queues and CPUs with it: the verdict then
    says so, since the error includes queueing and the host's load, not only the emulator's."""
    df, changes = probes.table, probes.path_changes
    lag_p99_s = float(np.nanpercentile(log["lag_ms"], 99)) / 1e3 if len(log) else 0.0
    guard_s = lag_p99_s / em.scale + 0.001
    fid = assess(df, changes, guard_s=guard_s, timeout_s=PROBE_TIMEOUT_S, threshold_p99_ms=FIDELITY_P99_MS,
                 loaded=loaded, engine=em.links.status() if hasattr(em.links, "status") else None,
                 apply_lag_ms=log["lag_ms"].to_numpy(float) / em.scale if len(log) else None,
                 pilot_drift=_pilot_drift(em), t0_s=em.window.t0_s, t_end_s=em.window.t_end_s,
                 dilation=em.dilation, stalls=stalls)
    o = fid["overall"]
    fid.update(guard_ms=round(guard_s * 1e3, 3), dilation=em.dilation,
               note="measured − oracle RTT (ms, emulated time), probes straddling a path change or in flight "
                    "during a link-engine stall (stalls.csv) counted apart")
    fid["probe_windows"], late = probe_windows(df, info.get("probes", []), em.window.t0_s, em.window.t_end_s)
    info["warnings"] += late
    atomic_write(out / "fidelity.json", lambda tmp: tmp.write_text(json.dumps(fid, indent=2) + "\n"))
    info["fidelity"] = {"verdict": fid["verdict"], **{k: v for k, v in o.items()}, "reasons": fid["reasons"]}


def _pilot_drift(em: Emulation) -> pd.DataFrame | None:
    """The pilot's readings during the run as `t_s, drift_us` (None without a pilot)."""
    pilot = em.pilot
    if pilot is None or not pilot.adjustments:
        return None
    mono, drift = zip(*pilot.adjustments)
    return pd.DataFrame({"t_s": em.clock.t_s(np.asarray(mono, float)), "drift_us": np.asarray(drift, float)})


def _stats(s: pd.Series) -> dict:
    v = s.dropna().to_numpy(float)
    if not len(v):
        return {}
    return {"median": round(float(np.median(v)), 3), "p99": round(float(np.percentile(v, 99)), 3),
            "max": round(float(v.max()), 3)}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def run_cluster(plan, out_dir: str | Path, scheduler: str, *, hosts: list[str] | None = None, start_s: float = 0.0,
                duration_s: float | None = None, speed: float = 1.0, dilation: float = 1.0,
                probe_rate_hz: float = 20.0, calibrate: bool = True, overwrite: bool = False,
                workloads: bool = True, report: bool = True, probes: list[tuple[str, str]] | None = None,
                engine_rt: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    """Emulate `plan`'s window over the Dask workers of `scheduler` (netemu.emulate.cluster) and
    write one run directory: run.json (hosts, clock offsets, cut links and their late frames,
    apply skew per step, timings), apply.csv and link_counters.csv (with the host of each row),
    probes.parquet (RTT probes of the default pairs with the planner's RTT), the plan's files,
    the scenario's workloads (agents on their nodes' hosts: jobs.csv, throughput.csv,
    workloads/NODE.jsonl on host 0's clock) and report.html, as a single-host run has them."""
    from concurrent.futures import ThreadPoolExecutor
    from .emulate.cluster import ClusterEmulation
    from .traffic.launcher import ClusterWorkloads
    say = progress or (lambda msg: None)
    check_out_dir(out_dir, overwrite=overwrite)
    check_probe_rate(probe_rate_hz)
    if probes is not None:
        check_pairs(plan, list(probes))
    info: dict = {"scenario": plan.scenario.name, "cluster": {"scheduler": scheduler}, "warnings": []}
    t0 = time.perf_counter()
    with ClusterEmulation(plan, scheduler, hosts=hosts, start_s=start_s, duration_s=duration_s, speed=speed,
                          dilation=dilation, calibrate=calibrate, engine_rt=engine_rt, progress=say) as em:
        em.build()
        out = prepare_out_dir(out_dir, overwrite=overwrite)      # once the hosts are there: nothing left on failure
        _write_plan_files(plan, em, out, out_dir)
        atomic_write(out / "addresses.csv", lambda tmp: pd.DataFrame(
            {"node": list(em.loopbacks), "loopback": list(em.loopbacks.values()),
             "host": [em.host_of.get(n) for n in em.loopbacks]}).to_csv(tmp, index=False))
        info["up_s"] = round(time.perf_counter() - t0, 2)
        c = info["cluster"]
        c["run_id"] = em.run_id
        c["hosts"] = [{"host": h, "address": em.workers[h]["address"],
                       "nodes": sum(1 for n in em.host_of.values() if n == h),
                       "clock_offset_ms": round(em.offsets[h]["offset_ms"], 3),
                       "clock_bound_ms": round(em.offsets[h]["bound_ms"], 3),
                       **{k: v for k, v in em.built[h].items() if k in ("links", "cut_links", "routes", "cut_mtu")}}
                      for h in em.hosts]
        c["cut_links"] = int(len(em.cut))
        shortest = em.shortest_cut_ms()
        bound = max(o["bound_ms"] for o in em.offsets.values())
        c["clock_correction"] = "applied"
        if len(em.cut) and np.isfinite(shortest) and bound > 0.1 * shortest:
            c["clock_warning"] = (f"clock offset bound {bound:.3f} ms is not small against the shortest cut link "
                                  f"({shortest:.3f} ms)")
            say(c["clock_warning"])
        say(f"cluster: {len(em.hosts)} hosts, {len(em.cut)} cut links, up in {info['up_s']} s")
        em.start()
        loads = ClusterWorkloads(plan, out / "workloads") if workloads and plan.scenario.workloads else None
        if loads is not None:
            loads.start(em)
            say(f"workloads: {', '.join(w.name for w in plan.scenario.workloads)} ({len(loads.specs)} agents on "
                f"{len({em.host_of[n] for n in loads.specs})} hosts)")
        wall_s = em.window.t_end_s - em.window.t0_s
        pairs = default_probe_pairs(plan) if probes is None else list(probes)
        count = max(1, int(wall_s * dilation / speed * probe_rate_hz) - 1)
        time.sleep(1.0)
        with ThreadPoolExecutor(max(1, len(pairs))) as pool:
            futs = {(a, b): pool.submit(em.probe, a, b, count, 1.0 / probe_rate_hz) for a, b in pairs}
            frames = []
            for (a, b), f in futs.items():
                df = f.result()
                frames.append(df.assign(src=a, dst=b))
        em.wait(wall_s * dilation / speed + 60)
        if loads is not None:
            info["workloads"] = _workload_lines(loads.write_results(out), say)
            info["warnings"] += loads.failures()
        probes = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        probes = probes[["t_s", "src", "dst", "rtt_ms", "oracle_rtt_ms"]] if len(probes) else probes
        probes.to_parquet(out / "probes.parquet", index=False)
        apply = em.apply_log()
        apply.to_csv(out / "apply.csv", index=False)
        load, load_stats = em.link_load()      # (its last samples before the counters: its sums never exceed them)
        atomic_write(out / "link_load.parquet", lambda tmp: load.to_parquet(tmp, index=False))
        c["link_load"] = load_stats
        em.counters().merge(em.link_table[["link", "a", "b", "kind"]], on="link", how="left").to_csv(
            out / "link_counters.csv", index=False)
        skew = em.apply_skew()
        c["apply_skew_ms"] = {"p50": round(float(skew["skew_ms"].median()), 3) if len(skew) else None,
                              "p99": round(float(skew["skew_ms"].quantile(0.99)), 3) if len(skew) else None,
                              "max": round(float(skew["skew_ms"].max()), 3) if len(skew) else None}
        late = em.cut_link_lateness()
        c["cut_link_frames"] = int(late["wire_rx"].sum())
        c["cut_link_late_frames"] = int(late["wire_late"].sum())
        c["lateness_warnings"] = em.lateness_warnings()
        for w in c["lateness_warnings"]:
            say(w)
        c["calibration"] = em.calibration
        c["timings_s"] = {k: round(v, 2) for k, v in em.timings_s.items()}
        err = (probes["rtt_ms"] - probes["oracle_rtt_ms"]).dropna() if len(probes) else pd.Series(dtype=float)
        info["fidelity"] = {"probes": int(len(probes)), "answered": int(probes["rtt_ms"].notna().sum()) if len(probes) else 0,
                            "abs_error_p99_ms": round(float(err.abs().quantile(0.99)), 3) if len(err) else None}
        if len(probes):     # the single-host verdict, over every host's engines, stalls and apply lags
            stalls = em.engine_stalls()
            stalls["pairs"] = stalled_pairs(stalls, plan.routes.routes, plan.schedule.t_s, em.link_table, pairs)
            atomic_write(out / "stalls.csv", lambda tmp: stalls.round(6).to_csv(tmp, index=False))
            scale = dilation / speed
            lag_ms = apply["lag_ms"].to_numpy(float) / scale if len(apply) else None
            guard_s = (float(np.nanpercentile(lag_ms, 99)) / 1e3 if lag_ms is not None else 0.0) + 0.001
            fid = assess(probes, {p: path_change_t_s(plan.routes.routes, *p) for p in pairs}, guard_s=guard_s,
                         timeout_s=PROBE_TIMEOUT_S, threshold_p99_ms=FIDELITY_P99_MS, loaded=loads is not None,
                         engine=[e for r in em.results().values() for e in r["engines"]], apply_lag_ms=lag_ms,
                         t0_s=em.window.t0_s, t_end_s=em.window.t_end_s, dilation=dilation, stalls=stalls)
            fid.update(guard_ms=round(guard_s * 1e3, 3), dilation=dilation, hosts=len(em.hosts))
            atomic_write(out / "fidelity.json", lambda tmp: tmp.write_text(json.dumps(fid, indent=2) + "\n"))
            info["fidelity"].update(verdict=fid["verdict"], reasons=fid["reasons"])
        info.update(nodes=len(em.node_names), links=len(em.link_table), dilation=dilation, speed=speed,
                    window={"k0": em.window.k0, "k1": em.window.k1, "t0_s": em.window.t0_s,
                            "t_end_s": em.window.t_end_s}, probes=[f"{a}>{b}" for a, b in pairs],
                    probe_rate_hz=probe_rate_hz, times_are="emulated seconds (wall / (dilation / speed))")
        t1 = time.perf_counter()
    info["down_s"] = round(time.perf_counter() - t1, 2)
    err = _write_run_json(out, info)
    if err:
        raise OutputError(err)
    if report:
        _report(out, say)
    return info
