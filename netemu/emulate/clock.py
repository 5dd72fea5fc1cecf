"""The run's one clock: emulated schedule time `t_s` ↔ CLOCK_MONOTONIC (pure).

Every namespace of a machine shares CLOCK_MONOTONIC, so one origin serves the player, the link
engine's feeds, workloads, replay and probes. One emulated second lasts `scale` wall seconds:

    scale = dilation / speed

`dilation` (≥ 1) stretches the network (delays × K, rates ÷ K) so that links faster than this
machine are emulated faithfully; `speed` (> 0) changes only how fast the geometry moves. Wall
durations of network events are network durations × dilation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import EmulationError

__all__ = ["Clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    """A run's window [t0_s, t_end_s] of schedule time, played from `origin_mono` (the
    CLOCK_MONOTONIC instant of t0_s; None until the run starts)."""

    t0_s: float
    t_end_s: float
    speed: float = 1.0
    dilation: float = 1.0
    origin_mono: float | None = None

    def __post_init__(self):
        if not (self.speed > 0 and self.dilation >= 1):
            raise EmulationError(f"expected speed > 0 and dilation ≥ 1, found speed={self.speed!r}, "
                                 f"dilation={self.dilation!r}")

    @property
    def scale(self) -> float:
        """Wall seconds per emulated second (dilation / speed)."""
        return self.dilation / self.speed

    @property
    def duration_s(self) -> float:
        """The window's length in emulated seconds."""
        return self.t_end_s - self.t0_s

    @property
    def wall_s(self) -> float:
        """The window's length in wall seconds."""
        return self.duration_s * self.scale

    @property
    def started(self) -> bool:
        return self.origin_mono is not None

    def started_at(self, origin_mono: float) -> "Clock":
        """This clock with t0_s at monotonic instant `origin_mono`."""
        return replace(self, origin_mono=float(origin_mono))

    @property
    def engine_origin_mono(self) -> float:
        """The monotonic instant of schedule time 0 (what the link engine counts from)."""
        return self._origin() - self.t0_s * self.scale

    def mono(self, t_s):
        """CLOCK_MONOTONIC instant(s) of schedule time(s) `t_s` (s; scalar or array)."""
        return self._origin() + (np.asarray(t_s, float) - self.t0_s) * self.scale if np.ndim(t_s) \
            else self._origin() + (float(t_s) - self.t0_s) * self.scale

    def t_s(self, mono):
        """Schedule time(s) of CLOCK_MONOTONIC instant(s) `mono` (s; scalar or array)."""
        return self.t0_s + (np.asarray(mono, float) - self._origin()) / self.scale if np.ndim(mono) \
            else self.t0_s + (float(mono) - self._origin()) / self.scale

    def now_t_s(self, now_mono: float) -> float:
        """Schedule time at `now_mono`; t0_s before the run starts."""
        return self.t0_s if self.origin_mono is None else self.t_s(now_mono)

    def clip(self, start_s: float | None = None, stop_s: float | None = None) -> tuple[float, float]:
        """[start_s, stop_s) in schedule time clipped to the window (None: the window's edge)."""
        start = self.t0_s if start_s is None else max(start_s, self.t0_s)
        stop = self.t_end_s if stop_s is None else min(stop_s, self.t_end_s)
        return start, stop

    def wall(self, network_s):
        """Wall duration of a network duration (× dilation)."""
        return network_s * self.dilation

    def network(self, wall_s):
        """Network duration of a wall duration (÷ dilation)."""
        return wall_s / self.dilation

    def _origin(self) -> float:
        if self.origin_mono is None:
            raise EmulationError("the clock has not started (the run's origin is not set yet)")
        return self.origin_mono
