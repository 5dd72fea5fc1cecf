"""`netemu run`: plan, bring the network up, play it with probes (and iperf3), write the run
directory, tear down (kernel edge; root).

Run directory: the plan files (scenario copy, nodes, links, paths, routes, events, summary),
`addresses.csv`, `apply.csv`, `probes.parquet`, `fidelity.json`, `link_counters.csv`,
`iperf.csv`/`iperf.json` (when asked), `positions.parquet` (nodes at a few instants, for the
map), `report.html` with `figures/`, for the scenario's workloads `jobs.csv`, `throughput.csv`,
the `workloads` section of `summary.json` and the agents' event logs (`workloads/NODE.jsonl`), and
`run.json` (versions, host, options, timings).
Every time and figure there is in emulated time (divided back by the dilation factor).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .emulate import probe as probe_program
from .emulate.emulation import Emulation
from .errors import EmulationError, NetemuError
from .traffic.fidelity import FIDELITY_P99_MS, assess
from .emulate.playback import oracle_rtt_ms
from .plan.pairs import DEFAULT_PROBE_PAIRS, default_probe_pairs, probe_frames_per_s
from .plan.planner import write_plan
from .rundir import OutputError, atomic_write, check_out_dir, prepare_out_dir
from .traffic.launcher import WorkloadRunner

__all__ = ["run", "default_probe_pairs", "DEFAULT_PROBE_PAIRS", "RUN_FILES", "FIDELITY_P99_MS", "MAX_PROBE_RATE_HZ",
           "check_probe_rate"]

RUN_FILES = ("addresses.csv", "apply.csv", "probes.parquet", "fidelity.json", "link_counters.csv", "run.json")
PROBE_TIMEOUT_S = 2.0    # emulated seconds after which an echo counts as lost
WATCHDOG_GRACE_S = 10.0  # wall seconds (× dilation) past the window's end after which a run is stuck
# One Python probe process per source sends every echo from a timed loop and tells echoes apart
# by a 16-bit ICMP sequence: 1,000 echoes/s per pair (one per ms) is well within what it keeps up
# with, and far more than an RTT curve needs.
MAX_PROBE_RATE_HZ = 1000.0


def check_probe_rate(rate_hz: float) -> float:
    """`rate_hz` if it is a probe rate the probe program can keep (0 < rate ≤ MAX_PROBE_RATE_HZ)."""
    if not (0 < rate_hz <= MAX_PROBE_RATE_HZ):
        raise EmulationError(f"probe rate {rate_hz!r}: expected probes per second per pair in "
                             f"(0, {MAX_PROBE_RATE_HZ:g}] (the probe program sends at most one echo per ms per pair)")
    return rate_hz


def check_pairs(plan, pairs: list[tuple[str, str]], what: str = "probe") -> None:
    eps = set(plan.scenario.endpoints)
    for src, dst in pairs:
        for role, name in (("source", src), ("destination", dst)):
            if name not in eps:
                known = ", ".join(plan.scenario.endpoints[:8]) + (", …" if len(eps) > 8 else "")
                raise EmulationError(f"--{what} {src}:{dst}: {role} {name!r} is not an endpoint of scenario "
                                     f"{plan.scenario.name!r} (routes exist toward endpoints only: {known})")
        if src == dst:
            raise EmulationError(f"--{what} {src}:{dst}: source and destination are the same node")


class _Probes:
    """One ICMP probe process per source node, inside it, probing its destinations in turn."""

    def __init__(self, em: Emulation, pairs: list[tuple[str, str]], rate_hz: float, work: Path):
        self.em, self.work = em, work
        self.procs: dict[str, tuple] = {}
        by_src: dict[str, list[str]] = {}
        for s, d in pairs:
            by_src.setdefault(s, []).append(d)
        work.mkdir(parents=True, exist_ok=True)
        for src, dsts in by_src.items():
            interval = em.scale / (rate_hz * len(dsts))       # wall seconds between echoes
            out = work / f"probe-{src}.csv"
            cmd = [sys.executable, "-m", probe_program.__name__, "stream", *[em.loopback(d) for d in dsts],
                   "--interval", f"{interval:.6f}", "--out", str(out), "--timeout", f"{PROBE_TIMEOUT_S * em.scale:g}"]
            self.procs[src] = (em.popen(src, cmd), out, {em.loopback(d): d for d in dsts})

    def stop(self) -> pd.DataFrame:
        """Stop the probes; their echoes as `t_s, src, dst, rtt_ms` (emulated; rtt NaN = lost)."""
        for p, _, _ in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        frames = []
        pl = self.em.player
        for src, (p, out, names) in self.procs.items():
            try:
                p.wait(PROBE_TIMEOUT_S * self.em.scale + 10)
            except Exception:
                p.kill()
                p.wait()
            if not out.exists():
                raise EmulationError(f"the probe in {src} wrote no results (exit code {p.returncode})")
            df = pd.read_csv(out)
            frames.append(pd.DataFrame({
                "t_s": pl.mono_to_t_s(df["t_send_mono_s"].to_numpy()), "src": src,
                "dst": df["dst"].map(names), "rtt_ms": df["rtt_ms"].to_numpy(float) / self.em.dilation}))
        shutil.rmtree(self.work, ignore_errors=True)
        if not frames:
            return pd.DataFrame(columns=["t_s", "src", "dst", "rtt_ms"])
        w = self.em.window
        df = pd.concat(frames, ignore_index=True)
        return df[(df["t_s"] >= w.t0_s) & (df["t_s"] <= w.t_end_s)].sort_values("t_s", ignore_index=True)

    def kill(self) -> None:
        for p, _, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


class _Iperf:
    """iperf3 from one endpoint to another over the window (TCP, loopback to loopback)."""

    def __init__(self, em: Emulation, src: str, dst: str, seconds: float, out_dir: Path):
        self.em, self.src, self.dst = em, src, dst
        self.json_path = out_dir / "iperf.json"
        wall_s = max(1, int(round(seconds * em.scale)))
        interval = max(0.1, em.scale * 1.0)
        self.server = em.popen(dst, ["iperf3", "-s", "-1", "-B", em.loopback(dst)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(max(0.2, em.player.origin - time.monotonic()))   # start with the window
        self.client = em.popen(src, ["iperf3", "-c", em.loopback(dst), "-B", em.loopback(src), "-t", str(wall_s),
                                     "-i", f"{interval:g}", "-J"], stdout=open(self.json_path, "w"),
                               stderr=subprocess.DEVNULL)
        self.started_mono = time.monotonic()

    def finish(self) -> pd.DataFrame:
        """Wait for iperf3; intervals as `t_s, mbps, retransmits` (emulated: rates × dilation)."""
        for p in (self.client, self.server):
            try:
                p.wait(30)
            except Exception:
                p.kill()
                p.wait()
        try:
            data = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            raise EmulationError(f"iperf3 {self.src}→{self.dst} wrote no JSON ({self.json_path})") from None
        if "error" in data:
            raise EmulationError(f"iperf3 {self.src}→{self.dst}: {data['error']}")
        K = self.em.dilation
        t0 = self.em.player.mono_to_t_s(self.started_mono)
        rows = [(float(t0 + iv["sum"]["start"] / self.em.scale), iv["sum"]["bits_per_second"] * K / 1e6,
                 iv["sum"].get("retransmits", 0)) for iv in data.get("intervals", [])]
        return pd.DataFrame(rows, columns=["t_s", "mbps", "retransmits"])


def _versions() -> dict:
    import importlib.metadata as md
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
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + kids) / 2**20, 2)


def run(plan, out_dir: str | Path, *, probes: list[tuple[str, str]] | None = None, probe_rate_hz: float = 20.0,
        iperf: tuple[str, str] | None = None, cli: bool = False, progress: Callable[[str], None] | None = None,
        workloads: bool = True, replay=None, report: bool = True, overwrite: bool = False,
        allow_concurrent: bool = False, **options) -> dict:
    """Run `plan` in emulation and write the run directory `out_dir`. `options` go to
    `Emulation` (links, scope, speed, dilation, start_s, duration_s, shards, seed, calibrate).
    `cli`: open netemu's shell (reading stdin, or this text stream) while the window plays.
    The scenario's workloads run unless `workloads` is False; `replay` is a prepared
    `netemu.replay.TraceReplay`; `report` writes report.html at the end. `out_dir` must be new,
    empty, or (with `overwrite`) an earlier netemu run, which is replaced. Returns run.json's
    content. Ctrl-C / SIGTERM stop the sources, write what was measured (run.json then says
    `interrupted` and `partial`) and the report, tear everything down, and raise
    KeyboardInterrupt. A failed run's run.json says why (`error`). Another live run (of another
    process) is refused unless `allow_concurrent` (then a warning)."""
    say = progress or (lambda m: None)
    out = Path(out_dir)
    check_out_dir(out, overwrite=overwrite)
    check_probe_rate(probe_rate_hz)
    pairs = default_probe_pairs(plan) if probes is None else list(probes)
    check_pairs(plan, pairs)
    if iperf:
        check_pairs(plan, [iperf], "iperf")
        if shutil.which("iperf3") is None:
            raise EmulationError("iperf3 is missing (Debian package iperf3); run `netemu doctor`")
    concurrent = check_concurrent(allow_concurrent)
    if options.get("dilation") == "auto":   # the probes' frames count toward the engines' load
        options = {**options, "probe_frames_per_s": probe_frames_per_s(plan, pairs, probe_rate_hz)}
    em = Emulation(plan, progress=say, **options)   # checks root, options and window first
    em.ns.meta["out_dir"] = str(out.absolute())
    say(wall_time_line(plan, em))
    prepare_out_dir(out, overwrite=overwrite)
    from .report import MAP_INSTANTS, positions_table
    w = em.window
    # the compute satellites' ground track from 50 min before to 50 min after the window (about an
    # orbit at 700-800 km), within the plan
    t_grid = plan.track.t_s
    try:
        write_plan(plan, out)
        atomic_write(out / "positions.parquet", lambda tmp: positions_table(
            plan, list(np.linspace(w.t0_s, w.t_end_s, MAP_INSTANTS)),
            track_window=(max(float(t_grid[0]), w.t0_s - 3000), min(float(t_grid[-1]), w.t_end_s + 3000))
        ).to_parquet(tmp, index=False))
    except OSError as e:
        raise OutputError(f"-o {out_dir}: cannot write the plan files before the run: {e.strerror or e}; "
                          f"nothing was emulated") from None
    info: dict = {"run_id": em.run_id, "versions": _versions(), "host": _host(), "scenario": plan.scenario.name,
                  "options": {k: v for k, v in options.items()}, "probes": [f"{s}>{d}" for s, d in pairs],
                  "probe_rate_hz": probe_rate_hz, "iperf": f"{iperf[0]}>{iperf[1]}" if iperf else None,
                  "interrupted": False, "partial": False, "warnings": list(concurrent),
                  "times_are": "emulated seconds (wall / (dilation / speed))"}
    t_start = time.perf_counter()
    src = {"prb": None, "ipf": None, "wlr": None, "rpl": None}   # sources still running
    playing = False
    try:
        em.build()
        info["up_s"] = round(time.perf_counter() - t_start, 3)
        say(f"up in {info['up_s']:.1f} s; playing t = {em.window.t0_s:g}..{em.window.t_end_s:g} s "
            f"(dilation {em.dilation:g}, speed {em.speed:g}: {em.scale * (em.window.t_end_s - em.window.t0_s):.0f} s wall)")
        atomic_write(out / "addresses.csv", lambda tmp: em.address_table().to_csv(tmp, index=False))
        src["prb"] = _Probes(em, pairs, probe_rate_hz, out / ".probes") if pairs else None
        em.start(lead_s=0.5)
        playing = True
        t_play = time.perf_counter()
        if replay is not None:
            replay.start(em, out)
            src["rpl"] = replay
            say(f"replaying {replay.path.name}: {replay.counts['open_loop']:,} packets open-loop, "
                f"{replay.messages['flow'].nunique()} flows closed-loop ({len(replay.messages)} messages)")
        if workloads and plan.scenario.workloads:
            src["wlr"] = WorkloadRunner(em, out)
            say(f"workloads: {', '.join(w.name for w in plan.scenario.workloads)} "
                f"({len(src['wlr'].procs)} agents)")
        if iperf:
            src["ipf"] = _Iperf(em, iperf[0], iperf[1], em.window.t_end_s - em.window.t0_s, out)
        if cli:
            from .emulate.shell import NetemuCLI
            say("netemu shell (Mininet's CLI): `<node> <command>` runs in a node, node names stand for their "
                "loopbacks; the constellation keeps moving; `exit` ends the run and writes its results")
            NetemuCLI(em, stdin=cli if hasattr(cli, "readline") else None, run=True)
            em.player.stop()
        else:
            _wait_with_progress(em, say, src["rpl"].finished if src["rpl"] else None)
        info["play_s"] = round(time.perf_counter() - t_play, 3)
        say("collecting results")
        _collect(plan, em, out, info, src, say, loaded=bool(iperf or replay or (workloads and plan.scenario.workloads)))
    except KeyboardInterrupt:
        info["interrupted"] = info["partial"] = True
        if playing:
            say("interrupted: stopping the sources and writing what was measured (Ctrl-C again: tear down at once)")
            info["play_s"] = round(time.perf_counter() - t_play, 3)
            try:
                em.player.stop()
                if src["ipf"] is not None and src["ipf"].client.poll() is None:
                    src["ipf"].client.send_signal(signal.SIGINT)   # iperf3 then writes what it measured
                _collect(plan, em, out, info, src, say, loaded=bool(iperf or replay or (workloads and plan.scenario.workloads)),
                         partial=True)
            except KeyboardInterrupt:
                say("interrupted again: tearing down without collecting")
            except Exception as e:
                info["error"] = f"while writing the partial results: {e}"
        else:
            say("interrupted before the run started: tearing down")
    except BaseException as e:
        info["error"] = str(e) or type(e).__name__
        raise
    finally:
        if src["prb"]:
            src["prb"].kill()
        if src["wlr"]:
            src["wlr"].kill()
        if src["rpl"]:
            src["rpl"].kill()
        if src["ipf"]:
            for p in (src["ipf"].client, src["ipf"].server):
                if p.poll() is None:
                    p.kill()
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
        if report and playing:
            _report(out, say, partial=True)
        raise KeyboardInterrupt
    say(f"down in {info['down_s']:.1f} s; results in {out}")
    if report:
        _report(out, say)
    return info


def check_concurrent(allow: bool) -> list[str]:
    """Refuse to start while another process's netemu run is live (both would share the CPUs, and
    this run's calibration would measure the other's load and take it off every delay), unless
    `allow`: then the warnings to report."""
    from .emulate.netns import live_runs
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
    from .emulate.playback import scope_nodes
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


def _collect(plan, em: Emulation, out: Path, info: dict, src: dict, say, loaded: bool, partial: bool = False) -> None:
    """Stop the sources in `src` and write their results, the apply log, probes and fidelity,
    link counters and run facts into `out`. With `partial` (after an interrupt) a part that
    fails is named in the warnings and the others are still written."""
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

    probes_df = pd.DataFrame(columns=["t_s", "src", "dst", "rtt_ms"])

    def stop_probes() -> None:
        nonlocal probes_df
        if src["prb"]:
            probes_df = src["prb"].stop()
        src["prb"] = None
    part("the probes", stop_probes)

    def replay_results() -> None:
        rpl = src["rpl"]
        rpl.stop()
        info["replay"] = _replay_lines(rpl.write_results(), say)
        info["warnings"] += rpl.failures()
        src["rpl"] = None
    if src["rpl"]:
        part("the replay's results", replay_results)

    def workload_results() -> None:
        wlr = src["wlr"]
        wlr.stop()
        info["workloads"] = _workload_lines(wlr.write_results(), say)
        info["warnings"] += wlr.failures()
        src["wlr"] = None
    if src["wlr"]:
        part("the workloads' results (jobs.csv, throughput.csv)", workload_results)

    log = em.player.apply_log()
    part("apply.csv", lambda: atomic_write(out / "apply.csv", lambda tmp: log.to_csv(tmp, index=False)))
    info["apply_lag_ms"] = _stats(log["lag_ms"])
    info["engine_feed_ms"] = _stats(pd.Series(em.player.feed_ms, dtype=float))
    info["routes_installed_at_start"] = int(em._nh_by_step.get(em.window.k0, pd.DataFrame()).shape[0])
    part("probes.parquet and fidelity.json", lambda: _write_probes(plan, em, probes_df, log, out, info, loaded=loaded))

    def iperf_results() -> None:
        iv = src["ipf"].finish()
        src["ipf"] = None
        atomic_write(out / "iperf.csv", lambda tmp: iv.to_csv(tmp, index=False))
        info["iperf_mean_mbps"] = round(float(iv["mbps"].mean()), 3) if len(iv) else None
    if src["ipf"]:
        part("iperf.csv", iperf_results)

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
    from .report import build_report
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


def _write_probes(plan, em: Emulation, df: pd.DataFrame, log: pd.DataFrame, out: Path, info: dict,
                  loaded: bool = False) -> None:
    """probes.parquet and fidelity.json. With workload, replay or iperf traffic (`loaded`) the
    probes share queues and CPUs with it: the verdict then says so, since the error includes
    queueing and the host's load, not only the emulator's."""
    sched, routes = plan.schedule, plan.routes.routes
    df = df.copy()
    df["oracle_rtt_ms"] = np.nan
    changes = {}
    for (src, dst), g in df.groupby(["src", "dst"], sort=False):
        df.loc[g.index, "oracle_rtt_ms"] = oracle_rtt_ms(sched, routes, src, dst, g["t_s"].to_numpy())
        r = routes[(((routes["src"] == src) & (routes["dst"] == dst)) | ((routes["src"] == dst) & (routes["dst"] == src)))
                   & (routes["step"] > 0)]
        changes[(src, dst)] = r["t_s"].to_numpy(float)
    df = df[["t_s", "src", "dst", "rtt_ms", "oracle_rtt_ms"]]
    atomic_write(out / "probes.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    lag_p99_s = float(np.nanpercentile(log["lag_ms"], 99)) / 1e3 if len(log) else 0.0
    guard_s = lag_p99_s / em.scale + 0.001
    fid = assess(df, changes, guard_s=guard_s, timeout_s=PROBE_TIMEOUT_S, threshold_p99_ms=FIDELITY_P99_MS,
                 loaded=loaded, engine=em.links.status() if hasattr(em.links, "status") else None,
                 apply_lag_ms=log["lag_ms"].to_numpy(float) / em.scale if len(log) else None,
                 pilot_drift=_pilot_drift(em), t0_s=em.window.t0_s, t_end_s=em.window.t_end_s)
    o = fid["overall"]
    fid.update(guard_ms=round(guard_s * 1e3, 3), dilation=em.dilation,
               note="measured − oracle RTT (ms, emulated time), probes straddling a path change counted apart")
    fid["probe_windows"], late = probe_windows(df, info.get("probes", []), em.window.t0_s, em.window.t_end_s)
    info["warnings"] += late
    atomic_write(out / "fidelity.json", lambda tmp: tmp.write_text(json.dumps(fid, indent=2) + "\n"))
    info["fidelity"] = {"verdict": fid["verdict"], **{k: v for k, v in o.items()}, "reasons": fid["reasons"]}


def _pilot_drift(em: Emulation) -> pd.DataFrame | None:
    """The pilot's readings during the run as `t_s, drift_us` (None without a pilot)."""
    pilot = getattr(em, "_pilot", None)
    if pilot is None or not pilot.adjustments:
        return None
    mono, drift = zip(*pilot.adjustments)
    return pd.DataFrame({"t_s": em.player.mono_to_t_s(np.asarray(mono, float)), "drift_us": np.asarray(drift, float)})


PROBE_LATE_S = 0.5   # emulated seconds a pair's probes may start after the window's start (or end before its end)


def probe_windows(df: pd.DataFrame, pairs: list[str], t0_s: float, t_end_s: float) -> tuple[dict, list[str]]:
    """Each probe pair's effective window: its first and last probe instants (emulated s) and
    how late it started / how early it ended against the window [t0_s, t_end_s]. Returns
    ({"SRC>DST": {...}}, a warning per pair that started or ended more than PROBE_LATE_S off,
    or sent nothing)."""
    out, warns = {}, []
    keys = df["src"].astype(str) + ">" + df["dst"].astype(str) if len(df) else pd.Series(dtype=str)
    for pair in dict.fromkeys([*pairs, *keys.unique()]):
        t = df["t_s"].to_numpy(float)[(keys == pair).to_numpy()] if len(df) else np.empty(0)
        if not len(t):
            out[pair] = {"first_t_s": None, "last_t_s": None, "late_start_s": None, "early_end_s": None}
            warns.append(f"probes {pair}: no probe was sent within the window t = {t0_s:g}..{t_end_s:g} s")
            continue
        first, last = float(t.min()), float(t.max())
        late, early = max(0.0, first - t0_s), max(0.0, t_end_s - last)
        out[pair] = {"first_t_s": round(first, 3), "last_t_s": round(last, 3), "late_start_s": round(late, 3),
                     "early_end_s": round(early, 3)}
        if late > PROBE_LATE_S or early > PROBE_LATE_S:
            warns.append(f"probes {pair}: measured t = {first:.1f}..{last:.1f} s of the window "
                         f"t = {t0_s:g}..{t_end_s:g} s (started {late:.1f} s late, ended {early:.1f} s early)")
    return out, warns


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
