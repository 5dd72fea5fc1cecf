"""Orbits: satellites and ground stations as Earth-fixed positions over the time grid.

The only module that knows time scales and reference frames. Satellites come from Walker shells
and formation-flying clusters (built with `Satrec.sgp4init`, drag terms zero) and from TLE files;
all are propagated at once with `SatrecArray` and rotated from TEME to the Earth-fixed frame with
skyfield's GMST (IAU 1982, the rotation SGP4's TEME is defined against; polar motion neglected,
< 15 m). Ground-station positions come from skyfield's WGS84 model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sgp4.api import SGP4_ERRORS, WGS72, Satrec, SatrecArray

from ..constants import C_KM_PER_S, DAY_S, J2_EARTH, MU_EARTH_KM3_PER_S2, R_EARTH_KM, SIDEREAL_YEAR_S
from ..errors import TLEError

__all__ = [
    "Track", "TLERecord", "parse_tle_text", "sso_inclination_deg", "ltan_raan_deg",
    "propagate", "station_ecef_km", "elevation_deg", "time_grid_s", "tle_status_at", "SGP4_ERRORS",
    "sun_ecef_km", "AU_KM",
]

AU_KM = 149_597_870.7
"""Astronomical unit (IAU 2012)."""

_SGP4_EPOCH_JD = 2433281.5  # sgp4init counts epoch days from 1949-12-31 00:00 UTC
_ts = None


def _timescale():
    global _ts
    if _ts is None:
        from skyfield.api import load   # lazy: loading a scenario (TLE checks) needs no skyfield
        _ts = load.timescale(builtin=True)  # built-in UT1/leap-second tables: no download
    return _ts


@dataclass(frozen=True, slots=True)
class Track:
    """Positions of N satellites at T instants, Earth-fixed (ITRS, polar motion neglected).

    t_s[T] seconds since `epoch` (UTC); names[N]; xyz_km[T, N, 3]; ok[T, N] is False where SGP4
    failed for that satellite at that instant (its position is NaN there).
    """

    epoch: datetime
    t_s: np.ndarray
    names: tuple[str, ...]
    xyz_km: np.ndarray
    ok: np.ndarray


@dataclass(frozen=True, slots=True)
class TLERecord:
    name: str
    norad_id: int
    line1: str
    line2: str
    inclination_deg: float
    altitude_km: float
    """Mean altitude from the mean motion (semi-major axis − equatorial radius)."""


def time_grid_s(duration_s: float, step_s: float) -> np.ndarray:
    """Seconds since the epoch: 0, step_s, ... up to and including duration_s. Shape [T]."""
    n = int(math.floor(duration_s / step_s + 1e-9)) + 1
    return np.arange(n, dtype=np.float64) * step_s


# --------------------------------------------------------------------------- TLE text


def _checksum(line: str) -> int:
    return sum(int(c) if c.isdigit() else (1 if c == "-" else 0) for c in line[:68]) % 10


def parse_tle_text(text: str, path: str | Path = "<tle>") -> list[TLERecord]:
    """Parse 3-line TLE text (name line, line 1, line 2 per satellite), checking layout and checksums.

    Raises `TLEError` naming the file and line with the expected layout on the first problem.
    """
    lines = [ln.rstrip() for ln in text.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TLEError(path, "", "the file is empty; expected 3-line TLEs (name, line 1, line 2 per satellite)")
    if len(lines) % 3:
        raise TLEError(path, f"line {len(lines)}", f"expected the 3-line format (name, line 1, line 2 per "
                                                    f"satellite); found {len(lines)} lines, not a multiple of 3")
    out = []
    for i in range(0, len(lines), 3):
        name, l1, l2 = lines[i].strip(), lines[i + 1], lines[i + 2]
        for n, (ln, tag) in enumerate(((l1, "1"), (l2, "2")), start=i + 2):
            # Exactly 69: a longer line may hold a digit in column 69 that passes the checksum
            # while every field is shifted (trailing whitespace was stripped above).
            if len(ln) != 69 or not ln.startswith(tag + " "):
                raise TLEError(path, f"line {n}", f"expected TLE line {tag} (exactly 69 characters starting "
                                                  f"'{tag} '), found {len(ln)} characters: {ln!r}")
            if not ln[68].isdigit() or int(ln[68]) != _checksum(ln):
                raise TLEError(path, f"line {n}", f"bad checksum: expected {_checksum(ln)} in column 69, "
                                                  f"found {ln[68]!r} ({name})")
        if l1[2:7] != l2[2:7]:
            raise TLEError(path, f"line {i + 3}", f"expected the same catalogue number on both lines, found "
                                                  f"{l1[2:7]!r} and {l2[2:7]!r} ({name})")
        try:
            incl = float(l2[8:16])
            n_rev_day = float(l2[52:63])
            Satrec.twoline2rv(l1, l2)
            norad = Satrec.twoline2rv(l1, l2).satnum
        except ValueError as e:
            raise TLEError(path, f"line {i + 2}", f"expected numbers in the TLE columns ({name}): {e}") from None
        if n_rev_day <= 0:
            raise TLEError(path, f"line {i + 3}", f"expected a positive mean motion, found {n_rev_day} ({name})")
        n_rad_s = n_rev_day * 2 * math.pi / DAY_S
        a_km = (MU_EARTH_KM3_PER_S2 / n_rad_s**2) ** (1 / 3)
        out.append(TLERecord(name=name or f"NORAD {norad}", norad_id=int(norad), line1=l1, line2=l2,
                             inclination_deg=incl, altitude_km=a_km - R_EARTH_KM))
    return out


def tle_status_at(records: list[TLERecord], when: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Each TLE's age at `when` (days, `when` − TLE epoch; negative for a TLE from the future)
    and SGP4's error code there (0: fine; 1-6: eccentricity, mean motion or radius out of range,
    i.e. the orbit has decayed or diverged). Shapes [N], [N]."""
    if not records:
        return np.zeros(0), np.zeros(0, np.int64)
    sats = [Satrec.twoline2rv(r.line1, r.line2) for r in records]
    jd = _jd_utc(when)
    ages = np.array([jd - (s.jdsatepoch + s.jdsatepochF) for s in sats])
    whole = math.floor(jd - 0.5) + 0.5
    err, _, _ = SatrecArray(sats).sgp4(np.array([whole]), np.array([jd - whole]))
    return ages, err[:, 0].astype(np.int64)


# --------------------------------------------------------------------------- orbit design


SSO_MAX_ALTITUDE_KM = 5974.49
"""Highest circular sun-synchronous orbit: above it even a retrograde polar orbit (i = 180°)
precesses too slowly."""


def sso_inclination_deg(altitude_km: float) -> float:
    """Inclination (deg) of a circular sun-synchronous orbit at `altitude_km` (J2 nodal precession)."""
    a = R_EARTH_KM + altitude_km
    n = math.sqrt(MU_EARTH_KM3_PER_S2 / a**3)
    cos_i = -(2 * math.pi / SIDEREAL_YEAR_S) / (1.5 * n * J2_EARTH * (R_EARTH_KM / a) ** 2)
    if cos_i < -1:
        raise ValueError(f"no sun-synchronous orbit at {altitude_km} km (none above {SSO_MAX_ALTITUDE_KM:,.0f} km)")
    return math.degrees(math.acos(cos_i))


def sun_right_ascension_deg(when: datetime) -> float:
    """Apparent right ascension of the Sun (deg), low-precision almanac formula (±0.01°)."""
    n = (when - datetime(2000, 1, 1, 12, tzinfo=timezone.utc)).total_seconds() / DAY_S
    mean_lon = math.radians((280.460 + 0.9856474 * n) % 360)
    g = math.radians((357.528 + 0.9856003 * n) % 360)
    ecl_lon = mean_lon + math.radians(1.915) * math.sin(g) + math.radians(0.020) * math.sin(2 * g)
    eps = math.radians(23.439 - 4e-7 * n)
    return math.degrees(math.atan2(math.cos(eps) * math.sin(ecl_lon), math.cos(ecl_lon))) % 360


def ltan_raan_deg(epoch: datetime, ltan_h: float) -> float:
    """RAAN (deg) that puts the ascending node at local time `ltan_h` (6 or 18 = dawn-dusk)."""
    return (sun_right_ascension_deg(epoch) + (ltan_h - 12.0) * 15.0) % 360


def _satrec(satnum: int, epoch: datetime, altitude_km: float, inclination_deg: float, raan_deg: float,
            mean_anomaly_deg: float, eccentricity: float = 1e-7, argp_deg: float = 0.0) -> Satrec:
    a = R_EARTH_KM + altitude_km
    n_rad_min = math.sqrt(MU_EARTH_KM3_PER_S2 / a**3) * 60.0
    epoch_days = _jd_utc(epoch) - _SGP4_EPOCH_JD
    sat = Satrec()
    # Near-zero eccentricity rather than zero: SGP4's perigee terms divide by it in places.
    sat.sgp4init(WGS72, "i", satnum, epoch_days, 0.0, 0.0, 0.0, max(eccentricity, 1e-7),
                 math.radians(argp_deg % 360), math.radians(inclination_deg),
                 math.radians(mean_anomaly_deg % 360), n_rad_min, math.radians(raan_deg % 360))
    return sat


def walker_satrecs(shell, epoch: datetime, first_satnum: int = 1) -> list[Satrec]:
    """Satrecs of a Walker shell, plane-major: plane p, slot s → index p * sats_per_plane + s."""
    P, S, F = shell.planes, shell.sats_per_plane, shell.phasing
    out = []
    for p in range(P):
        raan = shell.raan0_deg + p * shell.raan_spread_deg / P
        for s in range(S):
            m = s * 360.0 / S + p * F * 360.0 / (P * S)
            if shell.mean_anomaly0_deg:
                m += shell.mean_anomaly0_deg
            out.append(_satrec(first_satnum + len(out), epoch, shell.altitude_km, shell.inclination_deg, raan, m))
    return out


def formation_satrecs(f, epoch: datetime, first_satnum: int = 1) -> list[Satrec]:
    """Satrecs of a formation: a grid of rows along the track and columns across it.

    Rows are spaced `along_track_km` by mean-anomaly offsets. Columns are spaced `cross_track_km`
    by the passive-safety e/i-vector separation of formation-flying missions (TanDEM-X): an
    inclination offset gives a cross-track oscillation of that amplitude, and a parallel
    eccentricity offset a radial one of the same amplitude, largest where the cross-track one
    vanishes, so no two satellites ever come closer than min(along_track_km, cross_track_km).
    All share one semi-major axis, hence one period: the formation does not drift apart
    (differential J2 drift is negligible over a scenario's hours).
    """
    a = R_EARTH_KM + f.altitude_km
    rows = math.ceil(f.count / f.columns)
    d_m_deg = math.degrees(f.along_track_km / a)
    out = []
    for i in range(f.count):
        r, c = divmod(i, f.columns)
        delta = (c - (f.columns - 1) / 2) * f.cross_track_km / a   # rad, signed
        argp = 0.0 if delta >= 0 else 180.0
        u = f.mean_anomaly_deg + (r - (rows - 1) / 2) * d_m_deg      # argument of latitude
        out.append(_satrec(first_satnum + i, epoch, f.altitude_km, f.inclination_deg + math.degrees(delta),
                           f.raan_deg, u - argp, eccentricity=abs(delta), argp_deg=argp))
    return out


# --------------------------------------------------------------------------- propagation


def _jd_utc(when: datetime) -> float:
    when = when.astimezone(timezone.utc)
    midnight = datetime(when.year, when.month, when.day, tzinfo=timezone.utc)
    jd0 = 2440587.5 + (midnight - datetime(1970, 1, 1, tzinfo=timezone.utc)).days
    return jd0 + (when - midnight).total_seconds() / DAY_S


def _whole_fraction(epoch: datetime, t_s: np.ndarray) -> tuple[float, np.ndarray]:
    """UTC Julian date of the epoch split as (whole day, fraction + t_s) for precision."""
    jd = _jd_utc(epoch)
    whole = math.floor(jd - 0.5) + 0.5
    return whole, (jd - whole) + t_s / DAY_S


def gmst_rad(epoch: datetime, t_s: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal angle (IAU 1982) at epoch + t_s, via skyfield's UT1. Shape [T]."""
    from skyfield.sgp4lib import theta_GMST1982   # lazy: as _timescale
    ts = _timescale()
    e = epoch.astimezone(timezone.utc)
    t = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second + e.microsecond * 1e-6 + t_s)
    theta, _ = theta_GMST1982(t.whole, t.ut1_fraction)
    return np.asarray(theta, dtype=np.float64)


def propagate(satrecs: list[Satrec], names: list[str], epoch: datetime, t_s: np.ndarray) -> Track:
    """Propagate all satellites over the time grid at once. Returns a `Track` [T, N]."""
    t_s = np.asarray(t_s, dtype=np.float64)
    T, N = len(t_s), len(satrecs)
    if N == 0:
        return Track(epoch, t_s, (), np.zeros((T, 0, 3)), np.zeros((T, 0), bool))
    whole, frac = _whole_fraction(epoch, t_s)
    jd = np.full(T, whole)
    err, r_teme, _ = SatrecArray(satrecs).sgp4(jd, frac)  # [N, T], [N, T, 3]
    theta = gmst_rad(epoch, t_s)
    c, s = np.cos(theta)[None, :], np.sin(theta)[None, :]
    xyz = np.empty((T, N, 3))
    x, y = r_teme[..., 0], r_teme[..., 1]
    xyz[..., 0] = (c * x + s * y).T
    xyz[..., 1] = (-s * x + c * y).T
    xyz[..., 2] = r_teme[..., 2].T
    ok = (err == 0).T & np.isfinite(xyz).all(axis=2)
    xyz[~ok] = np.nan
    return Track(epoch, t_s, tuple(names), xyz, ok)


def sun_ecef_km(epoch: datetime, t_s: np.ndarray) -> np.ndarray:
    """The Sun's position (km) in the same Earth-fixed frame as `Track.xyz_km`, at epoch + t_s.

    Low-precision formula of the Astronomical Almanac (section C, "Sun, low precision": ecliptic
    longitude ±0.01° for 1950-2050, distance ±0.0003 AU) in the true equator and equinox of date,
    turned into the Earth-fixed frame with the same GMST rotation `propagate` uses (the equation
    of the equinoxes, ≤ 1.2″, is neglected: 0.3 ms of a shadow crossing). Shape [T, 3].
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    n = (_jd_utc(epoch) - 2451545.0) + t_s / DAY_S   # days from J2000.0 (UTC for TT: 69 s, 0.003°/70 s)
    mean_lon = np.radians((280.460 + 0.9856474 * n) % 360)
    g = np.radians((357.528 + 0.9856003 * n) % 360)
    lam = mean_lon + np.radians(1.915) * np.sin(g) + np.radians(0.020) * np.sin(2 * g)
    eps = np.radians(23.439 - 4e-7 * n)
    r_km = (1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)) * AU_KM
    x = r_km * np.cos(lam)
    y = r_km * np.cos(eps) * np.sin(lam)
    z = r_km * np.sin(eps) * np.sin(lam)
    theta = gmst_rad(epoch, t_s)
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=-1)


def station_ecef_km(lat_deg, lon_deg, alt_m) -> tuple[np.ndarray, np.ndarray]:
    """Earth-fixed positions [G, 3] (km, WGS84 via skyfield) and local geodetic up unit vectors [G, 3]."""
    from skyfield.api import wgs84   # lazy: as _timescale
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    alt = np.atleast_1d(np.asarray(alt_m, dtype=np.float64))
    if len(lat) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    xyz = wgs84.latlon(lat, lon, elevation_m=alt).itrs_xyz.km.T
    la, lo = np.radians(lat), np.radians(lon)
    up = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1)
    return np.ascontiguousarray(xyz), up


def elevation_deg(station_xyz_km: np.ndarray, station_up: np.ndarray, sat_xyz_km: np.ndarray) -> np.ndarray:
    """Elevation (deg) of satellites seen from stations. [G,3], [G,3], [..., N, 3] → [..., G, N]."""
    d = sat_xyz_km[..., None, :, :] - station_xyz_km[:, None, :]
    rng = np.linalg.norm(d, axis=-1)
    return np.degrees(np.arcsin(np.einsum("...gnk,gk->...gn", d, station_up) / rng))


def light_delay_ms(distance_km):
    """One-way vacuum light time (ms) over `distance_km`."""
    return np.asarray(distance_km) / C_KM_PER_S * 1e3


def timestamp(epoch: datetime, t_s: float) -> datetime:
    return epoch + timedelta(seconds=float(t_s))
