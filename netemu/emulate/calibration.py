"""Calibration of the link engine on the live network (kernel edge; root).

`calibrate_in_place` measures, before the clock starts, what a traversal costs beyond the
planned delays on the network's own endpoint paths and takes it off every delay; `Pilot` keeps
measuring it during the run on a chain of links of its own and follows its drift. Neither ever
makes an emulated delay shorter than physics: a correction above `MAX_OVERHEAD_US` is an error.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.stats import trim_mean

from ..errors import EmulationError, NetemuError
from ..plan.pairs import default_probe_pairs
from .links import LinkParams, build_chain
from .netns import Namespaces
from .playback import Window
from .probe import icmp_rtts_ms

__all__ = ["calibrate_in_place", "Pilot", "check_calibration", "MAX_OVERHEAD_US", "center"]


def center(rtts_ms: list[float]) -> float:
    """Centre of a set of RTTs: the 20 %-trimmed mean (robust to the wake-up outliers, and
    steadier than the median for the same number of echoes)."""
    return float(trim_mean(np.asarray(rtts_ms, float), 0.2))


# The largest engine overhead per traversal a calibration may take off the links' delays. On this
# kind of host it measures 1-5 µs per hop and tens of µs at a process's origin; hundreds of µs
# mean the measurement saw someone else's load (another run, a busy host), and subtracting that
# from every delay would make emulated delays shorter than the light-time (seen: 2 ms per hop,
# RTTs 52 ms below physics).
MAX_OVERHEAD_US = 500.0


def check_calibration(hop_us: float, process_us: float) -> None:
    """Refuse engine corrections (µs per traversal) above MAX_OVERHEAD_US, saying why."""
    for what, v in (("per hop", hop_us), ("for frames sent by processes", process_us)):
        if not v <= MAX_OVERHEAD_US:
            raise EmulationError(
                f"the link-engine calibration measured {v:.0f} µs of overhead {what} per traversal, above the "
                f"{MAX_OVERHEAD_US:g} µs bound (a quiet host measures 1-5 µs per hop, tens of µs for frames sent by processes): "
                f"another run is live (`netemu ps`) or the host is heavily loaded, and taking that off every "
                f"delay would make emulated delays shorter than the light-time; stop the other load and "
                f"run again (or use --no-calibrate)")


def calibrate_in_place(links, ns: Namespaces, plan, w: Window, loopbacks: dict[str, str], dilation: float,
                       reference_rtt_us: float, pilot: "Pilot | None" = None, rounds: int = 3, echoes: int = 30,
                       rate_hz: float = 20.0) -> dict:
    """Measure the engine's per-traversal overhead on this network's own endpoint paths.

    Before the clock starts, links hold their first step's delays, so a path's RTT should
    be 2 × its planned delay plus what the two end hosts' stacks cost (a veth pair's RTT).
    What remains, divided by the path's traversals (2 × hops), is the engine's overhead:
    taken off every delay, then measured again (`rounds` times). The probes follow the
    run's own pattern (every source at once, `rate_hz` echoes per pair): the overhead
    depends on how busy the engine and the hosts are (sparse echoes cost ~10 µs more per
    traversal than dense ones here). Falls back to `EngineLinks.calibrate` when no probe
    pair is reachable at the start. Returns the figures for run.json."""
    k0 = w.k0
    paths = plan.routes.paths
    at = paths[paths["step"] == k0]
    delay = {(str(r.src), str(r.dst)): (r.delay_ms, r.hops) for r in at.itertuples(index=False)}
    by_src: dict[str, list] = {}
    for s, d in default_probe_pairs(plan, max_pairs=16):
        key = (s, d) if (s, d) in delay else (d, s)
        if key in delay:
            by_src.setdefault(s, []).append((d, *delay[key]))
    if not by_src:
        res = links.calibrate(probes=60, refine=1)
        check_calibration(links.hop_overhead_us, links.process_overhead_us)
        return res
    ref_ms = reference_rtt_us / 1e3

    def probe(src: str, items: list) -> list:
        dsts = [loopbacks[d] for d, _, _ in items]
        return icmp_rtts_ms(dsts, echoes * len(dsts), 1.0 / (rate_hz * len(dsts)), timeout_s=1.0,
                            netns=ns.path(src))

    def residual_us() -> float:
        # the pilot probes alongside, as it will during the run: its reading in the last
        # round is the baseline its later readings are compared with
        with ThreadPoolExecutor(len(by_src) + 1) as pool:
            pilot_reading = pool.submit(pilot.measure_us) if pilot else None
            results = list(pool.map(lambda kv: probe(*kv), by_src.items()))
            if pilot_reading:
                pilot.baseline_us = pilot.smoothed_us = pilot_reading.result()
        per_traversal = []
        for (src, items), rtts in zip(by_src.items(), results):
            for i, (d, dl, h) in enumerate(items):
                got = [r for r in rtts[i::len(items)] if r is not None]
                if len(got) >= echoes // 2:
                    per_traversal.append((center(got) - 2 * dl * dilation - ref_ms) * 1e3 / (2 * h))
        return float(np.median(per_traversal)) if per_traversal else 0.0

    residuals = []
    for _ in range(rounds):
        r = residual_us()
        residuals.append(r)
        links.set_overhead(links.hop_overhead_us + r, links.process_overhead_us + r)
        if pilot:   # the pilot's links get the same correction: its reading drops by r
            pilot.baseline_us -= r
            pilot.smoothed_us = pilot.baseline_us
    first, final = residuals[0], residuals[-1]
    check_calibration(links.hop_overhead_us, links.process_overhead_us)
    if pilot:
        pilot.base_hop, pilot.base_process = links.hop_overhead_us, links.process_overhead_us
    return {"in_place_pairs": sum(len(v) for v in by_src.values()), "in_place_first_residual_us": round(first, 1),
            "in_place_residual_us": round(final, 1), "hop_overhead_us": round(links.hop_overhead_us, 1),
            "process_overhead_us": round(links.process_overhead_us, 1)}


class Pilot:
    """Tracks the drift of the engine's overhead during a run, on links of its own.

    What a traversal costs beyond the entry times the engine infers (the read latency of frames
    sent by processes, departures delayed by the run's load) drifts with the host's load. A
    chain of `HOPS` engine links between
    namespaces of the run's own, probed at 20 echoes/s like the run's probes, measures that
    cost continuously; the engine's overhead follows its change since the start-up
    calibration (never the user's traffic: the run's probes stay an independent check)."""

    HOPS = 4
    DELAY_MS = 5.0
    ECHOES = 40
    GAIN = 0.5

    def __init__(self, links, ns: Namespaces, reference_rtt_us: float):
        self.links, self.reference_rtt_us = links, reference_rtt_us
        names = [f"pilot{i}" for i in range(self.HOPS + 1)]
        for n in names:
            ns.add(n)
        self.ids = [f"_pilot{i}" for i in range(self.HOPS)]
        build_chain(links, ns, names, self.ids, LinkParams(delay_ms=self.DELAY_MS), net="10.253")
        self.src, self.dst = ns.path(names[0]), f"10.253.{self.HOPS - 1}.1"
        self.base_hop, self.base_process = links.hop_overhead_us, links.process_overhead_us
        self.baseline_us = self.smoothed_us = 0.0   # set by the calibration's last round
        self.adjustments: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def measure_us(self) -> float:
        rtts = [r for r in icmp_rtts_ms(self.dst, self.ECHOES, 0.05, timeout_s=1.0, netns=self.src) if r is not None]
        if len(rtts) < self.ECHOES // 2:
            return float("nan")
        ref_ms = self.reference_rtt_us / 1e3
        return (center(rtts) - 2 * self.HOPS * self.DELAY_MS - ref_ms) * 1e3 / (2 * self.HOPS)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netemu-pilot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        links = self.links
        while not self._stop.is_set():
            r = self.measure_us()
            if np.isnan(r) or self._stop.is_set():
                continue
            self.smoothed_us += self.GAIN * (r - self.smoothed_us)
            # never past the calibration's bound: a load that large is not the engine's to correct
            drift = min(self.smoothed_us - self.baseline_us, MAX_OVERHEAD_US - max(self.base_hop, self.base_process))
            try:
                links.set_overhead(self.base_hop + drift, self.base_process + drift)
            except NetemuError:
                return
            self.adjustments.append((time.monotonic(), round(drift, 1)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
