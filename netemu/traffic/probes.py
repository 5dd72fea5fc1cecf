"""Probes and iperf3 in a live network: the run's independent check of what the network gives.

`Probes`: one ICMP probe process (emulate.probe's `stream`) per source node, inside it, probing
its destinations in turn; their echoes become `probes.parquet` beside the oracle RTT of the
planned path. `Iperf`: iperf3 from one endpoint to another over the window. Both follow the
traffic-source protocol (emulate.live.TrafficSource).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..emulate import probe as probe_program
from ..emulate.live import Live
from ..emulate.playback import oracle_rtt_ms
from ..errors import EmulationError
from ..plan.files import atomic_write

__all__ = ["Probes", "Iperf", "check_pairs", "check_probe_rate", "probe_windows", "path_change_t_s",
           "PROBE_TIMEOUT_S", "MAX_PROBE_RATE_HZ", "PROBE_LATE_S"]

PROBE_TIMEOUT_S = 2.0    # emulated seconds after which an echo counts as lost
# One Python probe process per source sends every echo from a timed loop and tells echoes apart
# by a 16-bit ICMP sequence: 1,000 echoes/s per pair (one per ms) is well within what it keeps up
# with, and far more than an RTT curve needs.
MAX_PROBE_RATE_HZ = 1000.0
PROBE_LATE_S = 0.5   # emulated seconds a pair's probes may start after the window's start (or end before its end)
PROBE_COLUMNS = ["t_s", "src", "dst", "rtt_ms", "oracle_rtt_ms"]


def check_probe_rate(rate_hz: float) -> float:
    """`rate_hz` if it is a probe rate the probe program can keep (0 < rate ≤ MAX_PROBE_RATE_HZ)."""
    if not (0 < rate_hz <= MAX_PROBE_RATE_HZ):
        raise EmulationError(f"probe rate {rate_hz!r}: expected probes per second per pair in "
                             f"(0, {MAX_PROBE_RATE_HZ:g}] (the probe program sends at most one echo per ms per pair)")
    return rate_hz


def check_pairs(plan, pairs: list[tuple[str, str]], what: str = "probe") -> None:
    """Each (src, dst) names two different endpoints of the plan's scenario (routes exist
    toward endpoints only)."""
    eps = set(plan.scenario.endpoints)
    for src, dst in pairs:
        for role, name in (("source", src), ("destination", dst)):
            if name not in eps:
                known = ", ".join(plan.scenario.endpoints[:8]) + (", …" if len(eps) > 8 else "")
                raise EmulationError(f"--{what} {src}:{dst}: {role} {name!r} is not an endpoint of scenario "
                                     f"{plan.scenario.name!r} (routes exist toward endpoints only: {known})")
        if src == dst:
            raise EmulationError(f"--{what} {src}:{dst}: source and destination are the same node")


class Probes:
    """ICMP probes of `pairs` at `rate_hz` echoes per emulated second per pair; the probe
    programs write into `work_dir` (removed once read).

    Start them before the clock starts (`start(live)` right after the build): a Python process
    takes a moment to start, and echoes before the window are dropped anyway."""

    def __init__(self, plan, pairs: list[tuple[str, str]], rate_hz: float, work_dir: Path):
        self.plan, self.pairs, self.rate_hz, self.work = plan, list(pairs), check_probe_rate(rate_hz), Path(work_dir)
        self.live: Live | None = None
        self.procs: dict[str, tuple] = {}
        self.echoes = pd.DataFrame(columns=["t_s", "src", "dst", "rtt_ms"])   # after stop()
        self.table = pd.DataFrame(columns=PROBE_COLUMNS)                     # after write_results()
        self.path_changes: dict[tuple[str, str], np.ndarray] = {}

    def start(self, live: Live) -> None:
        self.live = live
        scale = live.clock.scale
        by_src: dict[str, list[str]] = {}
        for s, d in self.pairs:
            by_src.setdefault(s, []).append(d)
        self.work.mkdir(parents=True, exist_ok=True)
        for src, dsts in by_src.items():
            interval = scale / (self.rate_hz * len(dsts))       # wall seconds between echoes
            out = self.work / f"probe-{src}.csv"
            cmd = [sys.executable, "-m", probe_program.__name__, "stream", *[live.loopback(d) for d in dsts],
                   "--interval", f"{interval:.6f}", "--out", str(out), "--timeout", f"{PROBE_TIMEOUT_S * scale:g}"]
            self.procs[src] = (live.popen(src, cmd), out, {live.loopback(d): d for d in dsts})

    def stop(self) -> None:
        """Stop the probes; their echoes in the window become `echoes`: `t_s, src, dst, rtt_ms`
        (emulated; rtt NaN = lost)."""
        for p, _, _ in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        clock = self.live.clock if self.live else None
        frames = []
        for src, (p, out, names) in self.procs.items():
            try:
                p.wait(PROBE_TIMEOUT_S * clock.scale + 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if not out.exists():
                raise EmulationError(f"the probe in {src} wrote no results (exit code {p.returncode})")
            df = pd.read_csv(out)
            frames.append(pd.DataFrame({
                "t_s": clock.t_s(df["t_send_mono_s"].to_numpy()), "src": src,
                "dst": df["dst"].map(names), "rtt_ms": df["rtt_ms"].to_numpy(float) / clock.dilation}))
        self.procs = {}
        shutil.rmtree(self.work, ignore_errors=True)
        if frames:
            df = pd.concat(frames, ignore_index=True)
            self.echoes = df[(df["t_s"] >= clock.t0_s) & (df["t_s"] <= clock.t_end_s)].sort_values("t_s", ignore_index=True)

    def kill(self) -> None:
        for p, _, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def write_results(self, out: Path) -> dict:
        """`probes.parquet`: the echoes beside the oracle RTT of the planned path at their
        instants; keeps `table` and each pair's `path_changes` (s) for the fidelity verdict."""
        sched, routes = self.plan.schedule, self.plan.routes.routes
        df = self.echoes.copy()
        df["oracle_rtt_ms"] = np.nan
        for (src, dst), g in df.groupby(["src", "dst"], sort=False):
            df.loc[g.index, "oracle_rtt_ms"] = oracle_rtt_ms(sched, routes, src, dst, g["t_s"].to_numpy())
            self.path_changes[(src, dst)] = path_change_t_s(routes, src, dst)
        self.table = df[PROBE_COLUMNS]
        atomic_write(Path(out) / "probes.parquet", lambda tmp: self.table.to_parquet(tmp, index=False))
        return {"echoes": len(df), "pairs": len(self.path_changes)}


def path_change_t_s(routes: pd.DataFrame, src: str, dst: str) -> np.ndarray:
    """The instants (scenario s) the planned path between `src` and `dst` changes (either way)."""
    r = routes[(((routes["src"] == src) & (routes["dst"] == dst))
                | ((routes["src"] == dst) & (routes["dst"] == src))) & (routes["step"] > 0)]
    return r["t_s"].to_numpy(float)


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


class Iperf:
    """iperf3 from endpoint `src` to `dst` over the window (TCP, loopback to loopback); its JSON
    goes to `json_path`."""

    def __init__(self, src: str, dst: str, json_path: Path):
        if shutil.which("iperf3") is None:
            raise EmulationError("iperf3 is missing (Debian package iperf3); run `netemu doctor`")
        self.src, self.dst, self.json_path = src, dst, Path(json_path)
        self.live: Live | None = None
        self.server = self.client = None
        self.started_mono = 0.0

    def start(self, live: Live) -> None:
        """Start the server, then the client as the window starts (after the clock's start)."""
        self.live = live
        c = live.clock
        wall_s = max(1, int(round(c.duration_s * c.scale)))
        interval = max(0.1, c.scale * 1.0)
        self.server = live.popen(self.dst, ["iperf3", "-s", "-1", "-B", live.loopback(self.dst)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(max(0.2, c.origin_mono - time.monotonic()))   # start with the window
        with open(self.json_path, "w") as out:
            self.client = live.popen(self.src, ["iperf3", "-c", live.loopback(self.dst), "-B", live.loopback(self.src),
                                                "-t", str(wall_s), "-i", f"{interval:g}", "-J"],
                                     stdout=out, stderr=subprocess.DEVNULL)
        self.started_mono = time.monotonic()

    def stop(self) -> None:
        """Wait for iperf3 to finish (SIGINT first when the run was cut short: iperf3 then
        writes what it measured)."""
        for p in (self.client, self.server):
            if p is None:
                continue
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def interrupt(self) -> None:
        if self.client is not None and self.client.poll() is None:
            self.client.send_signal(signal.SIGINT)

    def kill(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    def write_results(self, out: Path) -> dict:
        """`iperf.csv`: intervals as `t_s, mbps, retransmits` (emulated: rates × dilation)."""
        try:
            data = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            raise EmulationError(f"iperf3 {self.src}→{self.dst} wrote no JSON ({self.json_path})") from None
        if "error" in data:
            raise EmulationError(f"iperf3 {self.src}→{self.dst}: {data['error']}")
        c = self.live.clock
        t0 = c.t_s(self.started_mono)
        rows = [(float(t0 + iv["sum"]["start"] / c.scale), iv["sum"]["bits_per_second"] * c.dilation / 1e6,
                 iv["sum"].get("retransmits", 0)) for iv in data.get("intervals", [])]
        iv = pd.DataFrame(rows, columns=["t_s", "mbps", "retransmits"])
        atomic_write(Path(out) / "iperf.csv", lambda tmp: iv.to_csv(tmp, index=False))
        return {"iperf_mean_mbps": round(float(iv["mbps"].mean()), 3) if len(iv) else None}
