"""Faults: which link-steps a scenario's `[[faults]]` take down, and why.

Pure, vectorised: `fault_reasons` maps the schedule's present links (one entry per link per step,
node indices) and the faults to a reason per link-step: "" (untouched), "fault" (an end is dark,
the link or the terminal has failed) or "acquisition" (after a reboot, the link re-acquires for
its model's acquisition time). Faults do not change which links the patterns select (terminals
stay assigned); they only make those links unusable, so the planner marks them `up = False`.

Fault windows are half-open in scenario time: a link-step at time t is down when
`t_s <= t < t_s + duration_s` (to the end when `duration_s` is absent). After a reboot ending at
`e`, a link whose acquisition time is `acq > 0` is down for `e <= t < e + acq`.
"""

from __future__ import annotations

import numpy as np

from .scenario import Fault

__all__ = ["fault_reasons", "DOWN_REASONS"]

DOWN_REASONS = ("", "acquisition", "handover", "fault", "rain")
"""Values of the links table's `down_reason` ("" while the link is up)."""

_EPS = 1e-9


def fault_reasons(faults: tuple[Fault, ...] | list[Fault], names: list[str], t_s: np.ndarray,
                  step: np.ndarray, a: np.ndarray, b: np.ndarray, is_isl: np.ndarray,
                  acquisition_s: np.ndarray) -> np.ndarray:
    """Reason per link-step (object array of "", "fault", "acquisition"), "fault" winning.

    `t_s` is the step grid; `step`, `a`, `b` (node indices), `is_isl` (laser or ground link) and
    `acquisition_s` (of the link's model) have one entry per link-step."""
    n = len(step)
    out = np.full(n, "", dtype=object)
    if n == 0 or not faults:
        return out
    index = {x: i for i, x in enumerate(names)}
    t = np.asarray(t_s, np.float64)[np.asarray(step, np.int64)]
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    dark = np.zeros(n, bool)
    acq = np.zeros(n, bool)
    for f in faults:
        if f.kind == "link" and f.a is not None:
            ia, ib = sorted((index[f.a], index[f.b]))
            hit = (a == ia) & (b == ib)
        else:
            i = index[f.node]
            hit = (a == i) | (b == i)
            if f.kind == "link":
                hit &= is_isl if f.terminal == "isl" else ~is_isl
        end = f.end_s
        dark |= hit & (t >= f.t_s - _EPS) & (t < end - _EPS)
        if f.kind == "reboot":
            acq |= hit & (t >= end - _EPS) & (t < end + acquisition_s - _EPS)
    out[acq] = "acquisition"
    out[dark] = "fault"
    return out
