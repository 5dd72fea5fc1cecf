"""Rain on ground links: attenuation from a rain rate, and the rate a link budget leaves.

Pure, vectorised functions (numpy arrays or scalars in, arrays out):

- `rain_coefficients(f_GHz, polarization, elevation_deg)`: k and α of the specific attenuation
  γ_R = k·R^α (dB/km), from the regression of Recommendation ITU-R P.838-3 (03/2005),
  "Specific attenuation model for rain for use in prediction methods", equations (2)-(5) with the
  coefficients of its Tables 1-4, valid from 1 to 1000 GHz.
- `slant_path_rain_attenuation_db(...)`: the attenuation A = γ_R·L_E (dB) over an Earth-space
  path, with the effective path length L_E of Recommendation ITU-R P.618-13 (12/2017),
  "Propagation data and prediction methods required for the design of Earth-space
  telecommunication systems", § 2.2.1.1 steps 2-9 (slant length below the rain height, its
  horizontal projection, the horizontal reduction factor r_0.01 and the vertical adjustment
  factor v_0.01). The recommendation applies these to the rain rate exceeded 0.01 % of an
  average year; netemu applies them to the instantaneous rain rate of a series, the usual
  approximation for a time series of attenuation. The rain height h_R is the 0 °C isotherm
  height plus 0.36 km (ITU-R P.839-4); it is an input here (`rain_height_km`).
- `budget_rate_mbps(...)`: adaptive coding and modulation — the clear-sky margin less the
  attenuation picks the fastest rate step whose minimum margin it still meets, or an outage (0).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rain_coefficients", "specific_attenuation_db_per_km", "slant_path_rain_attenuation_db",
           "budget_rate_mbps", "POLARIZATION_TILT_DEG", "stochastic_rain_mm_per_h", "rain_at"]

# ITU-R P.838-3 Tables 1-4: (a_j, b_j, c_j) per row, then (m, c).
_KH = (((-5.33980, -0.10008, 1.13098), (-0.35351, 1.26970, 0.45400), (-0.23789, 0.86036, 0.15354),
        (-0.94158, 0.64552, 0.16817)), (-0.18961, 0.71147))
_KV = (((-3.80595, 0.56934, 0.81061), (-3.44965, -0.22911, 0.51059), (-0.39902, 0.73042, 0.11899),
        (0.50167, 1.07319, 0.27195)), (-0.16398, 0.63297))
_AH = (((-0.14318, 1.82442, -0.55187), (0.29591, 0.77564, 0.19822), (0.32177, 0.63773, 0.13164),
        (-5.37610, -0.96230, 1.47828), (16.1721, -3.29980, 3.43990)), (0.67849, -1.95537))
_AV = (((-0.07771, 2.33840, -0.76284), (0.56727, 0.95545, 0.54039), (-0.20238, 1.14520, 0.26809),
        (-48.2991, 0.791669, 0.116226), (48.5833, 0.791459, 0.116479)), (-0.053739, 0.83433))

POLARIZATION_TILT_DEG = {"horizontal": 0.0, "vertical": 90.0, "circular": 45.0}
"""Polarisation tilt angle τ relative to the horizontal (P.838-3 eq. (4)); circular is τ = 45°."""


def _regression(table, log_f: np.ndarray) -> np.ndarray:
    rows, (m, c) = table
    out = m * log_f + c
    for a, b, cc in rows:
        out = out + a * np.exp(-(((log_f - b) / cc) ** 2))
    return out


def rain_coefficients(frequency_ghz, polarization: str = "circular", elevation_deg=0.0):
    """(k, α) of P.838-3 at `frequency_ghz` for a polarisation ("horizontal", "vertical",
    "circular") on a path of elevation `elevation_deg`: eqs. (2) and (3) give k_H, k_V, α_H,
    α_V; eqs. (4) and (5) combine them for tilt τ and elevation θ:
    k = [k_H + k_V + (k_H − k_V) cos²θ cos 2τ] / 2,
    α = [k_H α_H + k_V α_V + (k_H α_H − k_V α_V) cos²θ cos 2τ] / (2k)."""
    log_f = np.log10(np.asarray(frequency_ghz, np.float64))
    kh, kv = 10 ** _regression(_KH, log_f), 10 ** _regression(_KV, log_f)
    ah, av = _regression(_AH, log_f), _regression(_AV, log_f)
    tau = math.radians(POLARIZATION_TILT_DEG[polarization])
    w = np.cos(np.radians(np.asarray(elevation_deg, np.float64))) ** 2 * math.cos(2 * tau)
    k = (kh + kv + (kh - kv) * w) / 2
    alpha = (kh * ah + kv * av + (kh * ah - kv * av) * w) / (2 * k)
    return k, alpha


def specific_attenuation_db_per_km(rain_mm_per_h, frequency_ghz, polarization="circular", elevation_deg=0.0):
    """γ_R = k·R^α (dB/km), P.838-3 eq. (1)."""
    k, alpha = rain_coefficients(frequency_ghz, polarization, elevation_deg)
    return k * np.asarray(rain_mm_per_h, np.float64) ** alpha


def slant_path_rain_attenuation_db(rain_mm_per_h, frequency_ghz, elevation_deg, lat_deg,
                                   station_alt_km=0.0, rain_height_km=5.0, polarization="circular"):
    """Rain attenuation (dB) of an Earth-space path, ITU-R P.618-13 § 2.2.1.1 steps 2-9:

    L_s = (h_R − h_s) / sin θ (θ ≥ 5°; below, the curved-Earth form with R_e = 8500 km);
    L_G = L_s cos θ; γ_R = k R^α;
    r = 1 / (1 + 0.78 √(L_G γ_R / f) − 0.38 (1 − e^(−2 L_G)));
    ζ = atan((h_R − h_s) / (L_G r)); L_R = L_G r / cos θ if ζ > θ, else (h_R − h_s) / sin θ;
    χ = 36° − |φ| for |φ| < 36°, else 0;
    v = 1 / (1 + √(sin θ) (31 (1 − e^(−θ/(1+χ))) √(L_R γ_R) / f² − 0.45)) (θ, χ in degrees);
    L_E = L_R v; A = γ_R L_E. Zero without rain or with the station above the rain height."""
    R = np.asarray(rain_mm_per_h, np.float64)
    f = np.asarray(frequency_ghz, np.float64)
    th_deg = np.asarray(elevation_deg, np.float64)
    th = np.radians(th_deg)
    dh = np.maximum(np.asarray(rain_height_km, np.float64) - np.asarray(station_alt_km, np.float64), 0.0)
    re_km = 8500.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ls_high = dh / np.sin(th)
        ls_low = 2 * dh / (np.sqrt(np.sin(th) ** 2 + 2 * dh / re_km) + np.sin(th))
        ls = np.where(th_deg >= 5.0, ls_high, ls_low)
        lg = ls * np.cos(th)
        gamma = specific_attenuation_db_per_km(R, f, polarization, th_deg)
        r = 1.0 / (1.0 + 0.78 * np.sqrt(lg * gamma / f) - 0.38 * (1.0 - np.exp(-2.0 * lg)))
        zeta = np.degrees(np.arctan2(dh, lg * r))
        lr = np.where(zeta > th_deg, lg * r / np.cos(th), ls_high)
        chi = np.where(np.abs(np.asarray(lat_deg, np.float64)) < 36.0, 36.0 - np.abs(lat_deg), 0.0)
        v = 1.0 / (1.0 + np.sqrt(np.sin(th)) * (31.0 * (1.0 - np.exp(-th_deg / (1.0 + chi)))
                                                   * np.sqrt(lr * gamma) / f**2 - 0.45))
        a = gamma * lr * v
    return np.where((R > 0) & (dh > 0), np.nan_to_num(a, nan=0.0), 0.0)


def budget_rate_mbps(attenuation_db, clear_sky_margin_db: float, rate_steps) -> np.ndarray:
    """Rate (Mbit/s) of a link whose margin is `clear_sky_margin_db` − `attenuation_db`: the
    largest `rate_mbps` of the steps `[(min_margin_db, rate_mbps), …]` whose `min_margin_db` the
    margin still meets; 0 (an outage) when it meets none."""
    margin = clear_sky_margin_db - np.asarray(attenuation_db, np.float64)
    out = np.zeros(np.shape(margin))
    for need, rate in rate_steps:
        out = np.where(margin >= need - 1e-12, np.maximum(out, rate), out)
    return out


def stochastic_rain_mm_per_h(t_s: np.ndarray, seed: int, mean_dry_s: float, mean_wet_s: float,
                             median_mm_per_h: float, sigma: float) -> np.ndarray:
    """A seeded rain series on the grid `t_s`: dry and wet spells alternate, of exponential
    lengths with means `mean_dry_s` and `mean_wet_s` (starting dry or wet in proportion), and each
    wet spell rains at one rate drawn from a lognormal of median `median_mm_per_h` and log-spread
    `sigma`. The same seed gives the same series."""
    t = np.asarray(t_s, np.float64)
    out = np.zeros(len(t))
    if len(t) == 0:
        return out
    rng = np.random.default_rng(seed)
    wet = bool(rng.random() < mean_wet_s / (mean_dry_s + mean_wet_s))
    start, end = float(t[0]), float(t[-1])
    while start <= end:
        length = rng.exponential(mean_wet_s if wet else mean_dry_s)
        if wet:
            rate = median_mm_per_h * math.exp(sigma * rng.standard_normal())
            out[(t >= start) & (t < start + length)] = rate
        start += length
        wet = not wet
    return out


def rain_at(rain, t_s: np.ndarray) -> np.ndarray:
    """A scenario `Rain` (series or model) on the grid `t_s` (mm/h): a series' sample is held
    until the next one; before the first sample it is dry."""
    t = np.asarray(t_s, np.float64)
    if rain.seed is not None:
        return stochastic_rain_mm_per_h(t, rain.seed, rain.mean_dry_s, rain.mean_wet_s,
                                        rain.median_mm_per_h, rain.sigma)
    st = np.asarray(rain.t_s, np.float64)
    i = np.searchsorted(st, t + 1e-9, side="right") - 1
    vals = np.asarray(rain.rain_mm_per_h, np.float64)
    return np.where(i >= 0, vals[np.maximum(i, 0)], 0.0)
