"""Sunlight and power of compute satellites: pure, vectorised functions over the plan's time grid.

`sunlit_fraction` is the conical shadow model (the Sun and the Earth as discs of their true
angular radii seen from the satellite): 1 in sunlight, 0 in the umbra, the visible share of the
Sun's disc in the penumbra. Positions are Earth-fixed (`Track.xyz_km`) and the Sun comes from
`orbits.sun_ecef_km` in the same frame.
"""

from __future__ import annotations

import numpy as np

import pandas as pd

from ..constants import R_EARTH_KM, R_SUN_KM
from .scenario import ComputeGroup

__all__ = ["sunlit_fraction", "eclipse_windows", "energy_balance", "energy_balance_from", "power_table"]

_T_BLOCK = 512


def sunlit_fraction(sat_xyz_km: np.ndarray, sun_xyz_km: np.ndarray, earth_radius_km: float = R_EARTH_KM,
                    sun_radius_km: float = R_SUN_KM) -> np.ndarray:
    """Share of the Sun's disc a satellite sees, [T, N] in [0, 1] (NaN where its position is NaN).

    sat_xyz_km[T, N, 3] and sun_xyz_km[T, 3], both from the Earth's centre in one frame. With a
    the Sun's and b the Earth's apparent radius and c their angular separation (seen from the
    satellite): c ≥ a + b sunlight, c ≤ b − a umbra, c < a − b (the Earth inside the Sun's disc:
    never in low orbit) an annulus, else the two discs' lens-shaped overlap (Montenbruck & Gill,
    Satellite Orbits, section 3.4.2).
    """
    sat = np.asarray(sat_xyz_km, dtype=np.float64)
    sun = np.asarray(sun_xyz_km, dtype=np.float64)
    T = sat.shape[0]
    out = np.empty(sat.shape[:2])
    for lo in range(0, T, _T_BLOCK):
        hi = min(T, lo + _T_BLOCK)
        r = sat[lo:hi]                                    # [t, N, 3]
        d = sun[lo:hi, None, :] - r                       # satellite → Sun
        r_n = np.linalg.norm(r, axis=-1)
        d_n = np.linalg.norm(d, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = np.arcsin(np.minimum(sun_radius_km / d_n, 1.0))
            b = np.arcsin(np.minimum(earth_radius_km / r_n, 1.0))
            cos_c = -np.einsum("tnk,tnk->tn", r, d) / (r_n * d_n)
            c = np.arccos(np.clip(cos_c, -1.0, 1.0))
            x = (c * c + a * a - b * b) / (2 * c)
            y = np.sqrt(np.maximum(a * a - x * x, 0.0))
            lens = (a * a * np.arccos(np.clip(x / a, -1, 1)) + b * b * np.arccos(np.clip((c - x) / b, -1, 1))
                    - c * y)
            f = 1.0 - lens / (np.pi * a * a)
            f = np.where(c >= a + b, 1.0, f)
            f = np.where(c <= b - a, 0.0, f)
            f = np.where(c < a - b, 1.0 - (b * b) / (a * a), f)
        f = np.clip(f, 0.0, 1.0)
        f[~np.isfinite(r_n)] = np.nan
        out[lo:hi] = f
    return out


def eclipse_windows(t_s: np.ndarray, sunlit: np.ndarray, threshold: float = 0.5) -> list[tuple[float, float]]:
    """Intervals (start, end) in seconds where one satellite's sunlit fraction is below
    `threshold` (the midpoint of the penumbra by default: where the Sun's centre sets), the
    crossings interpolated linearly between steps; an eclipse open at either end of the grid
    starts or ends there."""
    t = np.asarray(t_s, dtype=np.float64)
    f = np.asarray(sunlit, dtype=np.float64) - threshold
    dark = f < 0
    out = []
    start = t[0] if dark[0] else None
    for k in np.nonzero(dark[1:] != dark[:-1])[0]:
        tc = t[k] + (t[k + 1] - t[k]) * f[k] / (f[k] - f[k + 1])
        if dark[k + 1]:
            start = tc
        else:
            out.append((float(start), float(tc)))
            start = None
    if start is not None:
        out.append((float(start), float(t[-1])))
    return out


def active_accelerators(c: ComputeGroup, soc_pct: np.ndarray) -> np.ndarray:
    """Accelerators left active at a state of charge (any shape → same shape, int64): all of
    them, `throttled_accelerators` below `throttle_below_soc_pct`, none below
    `refuse_below_soc_pct`; then at most as many as `thermal_limit_w` allows beside the bus."""
    soc = np.asarray(soc_pct, dtype=np.float64)
    n = np.full(soc.shape, c.accelerators_per_satellite, dtype=np.int64)
    if c.throttle_below_soc_pct is not None:
        n = np.where(soc < c.throttle_below_soc_pct, c.throttled_accelerators, n)
    if c.refuse_below_soc_pct is not None:
        n = np.where(soc < c.refuse_below_soc_pct, 0, n)
    if c.thermal_limit_w is not None and c.accelerator_w > 0:
        n = np.minimum(n, int(np.floor((c.thermal_limit_w - c.bus_w) / c.accelerator_w + 1e-9)))
    return n


def energy_balance(c: ComputeGroup, sunlit: np.ndarray, step_s: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State of charge, power drawn and active accelerators of satellites over the time grid.

    sunlit[T, N] is the sunlit fraction (NaN, where a satellite failed to propagate, counts as
    shadow). At step k the state of charge soc_pct[k] (at the step's start) decides the active
    accelerators (`active_accelerators`), which draw power_w[k] = bus_w + active ×
    accelerator_w for the step; the array gives solar_array_w × sunlit[k]; the difference over
    step_s charges or drains the battery, clipped to [0, 100] % (surplus beyond a full battery
    is shed). Returns soc_pct[T, N], power_w[T, N], active[T, N]: vectorised over satellites,
    sequential over steps.
    """
    soc, power, active, _ = energy_balance_from(c, sunlit, step_s, np.full(np.shape(sunlit)[1], c.initial_soc_pct))
    return soc, power, active


def energy_balance_from(c: ComputeGroup, sunlit: np.ndarray, step_s: float, soc_start_pct: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`energy_balance` from a state of charge `soc_start_pct[N]` at the first step, and the
    state of charge after the last step (where the next block of steps starts): blocks of steps
    chained this way give the whole window's figures."""
    f = np.nan_to_num(np.asarray(sunlit, dtype=np.float64), nan=0.0)
    T, N = f.shape
    soc = np.empty((T, N))
    active = np.empty((T, N), dtype=np.int64)
    # Active accelerators depend on the state of charge only through the thresholds: a lookup.
    levels = [x for x in (c.refuse_below_soc_pct, c.throttle_below_soc_pct) if x is not None]
    thresholds = np.array(sorted(levels), dtype=np.float64)
    # by_level[i]: active accelerators when i thresholds are ≤ the state of charge.
    by_level = active_accelerators(c, np.concatenate([thresholds - 1e-9, [101.0]]))
    gain_pct = f * (c.solar_array_w * step_s / 3600 / c.battery_wh * 100)   # [T, N]
    per_acc_pct = c.accelerator_w * step_s / 3600 / c.battery_wh * 100
    bus_pct = c.bus_w * step_s / 3600 / c.battery_wh * 100
    s = np.array(soc_start_pct, dtype=np.float64)
    for k in range(T):
        soc[k] = s
        a = by_level[np.searchsorted(thresholds, s, side="right")]
        active[k] = a
        s = np.clip(s + gain_pct[k] - bus_pct - a * per_acc_pct, 0.0, 100.0)
    power = c.bus_w + active * c.accelerator_w
    return soc, power, active, s


def power_table(t_s: np.ndarray, nodes: list[str], sunlit: np.ndarray, soc_pct: np.ndarray,
                power_w: np.ndarray, active: np.ndarray) -> pd.DataFrame:
    """The planner's `power.parquet` rows: t_s, node, sunlit, soc_pct, power_w,
    active_accelerators, step-major (every node at t_s[0], then t_s[1], ...)."""
    T, N = sunlit.shape
    return pd.DataFrame({
        "t_s": np.repeat(np.asarray(t_s, dtype=np.float64), N),
        "node": pd.Categorical.from_codes(np.tile(np.arange(N), T), categories=list(nodes)),
        "sunlit": sunlit.reshape(-1).astype(np.float32),
        "soc_pct": soc_pct.reshape(-1).astype(np.float32),
        "power_w": power_w.reshape(-1).astype(np.float32),
        "active_accelerators": active.reshape(-1).astype(np.int32),
    })
