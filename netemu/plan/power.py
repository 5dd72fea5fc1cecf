"""Sunlight and power of compute satellites: pure, vectorised functions over the plan's time grid.

`sunlit_fraction` is the conical shadow model (the Sun and the Earth as discs of their true
angular radii seen from the satellite): 1 in sunlight, 0 in the umbra, the visible share of the
Sun's disc in the penumbra. Positions are Earth-fixed (`Track.xyz_km`) and the Sun comes from
`orbits.sun_ecef_km` in the same frame.
"""

from __future__ import annotations

import numpy as np

from ..constants import R_EARTH_KM, R_SUN_KM

__all__ = ["sunlit_fraction", "eclipse_windows"]

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
