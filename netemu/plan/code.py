"""Constellation codes: the compact notation of the IRTF SPACE RG draft "A code to describe
satellite constellations" (draft-piraux-space-constellation-code), e.g. `D:550:53.0:1584/22/17`
for Starlink's first shell.

netemu reads the draft's core form, one circular Walker shell::

    TYPE:ALTITUDE_KM:INCLINATION_DEG:T/P/F

TYPE is `D` (Walker delta: planes' ascending nodes spread over 360°) or `S` (Walker star: over
180°); T the number of satellites, P the number of planes (T a multiple of P), F the phasing
(0 ≤ F < P; satellites of neighbouring planes are offset by F·360°/T in mean anomaly). The
draft's further forms (elliptical orbits, several shells joined by `+`, offsets, link and
ground-station specifications) are refused with a message saying so.
"""

from __future__ import annotations

import re

__all__ = ["parse_code", "format_code"]

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_CODE_RE = re.compile(rf"^(?P<type>[DS]):(?P<alt>{_NUMBER}):(?P<inc>{_NUMBER}):(?P<t>[0-9]+)/(?P<p>[0-9]+)/(?P<f>[0-9]+)$")
FORM = "TYPE:ALTITUDE_KM:INCLINATION_DEG:T/P/F with TYPE D or S, e.g. D:550:53.0:1584/22/17"


def parse_code(text: str) -> tuple[float, float, float, int, int, int]:
    """The Walker parameters of a code: (raan_spread_deg, altitude_km, inclination_deg, planes,
    sats_per_plane, phasing). Raises ValueError with one line saying what was expected."""
    if not isinstance(text, str):
        raise ValueError(f"a constellation code {FORM}")
    s = text.strip()
    if "+" in s:
        raise ValueError(f"one shell per satellite group (a code without '+'; give each shell its own "
                         f"[[satellites]] group), found {text!r}")
    m = _CODE_RE.match(s)
    if not m:
        parts = s.split(":")
        if len(parts) == 4 and parts[1].count("/") == 2:
            raise ValueError(f"a circular orbit's altitude (elliptical APOGEE/PERIGEE/ARGP altitudes are not "
                             f"supported), found {text!r}")
        raise ValueError(f"a constellation code {FORM}, found {text!r}")
    alt, inc = float(m["alt"]), float(m["inc"])
    T, P, F = int(m["t"]), int(m["p"]), int(m["f"])
    if not 100 <= alt <= 50_000:
        raise ValueError(f"an altitude in [100, 50000] km, found {m['alt']} in {text!r}")
    if not 0 <= inc <= 180:
        raise ValueError(f"an inclination in [0, 180] degrees, found {m['inc']} in {text!r}")
    if not 1 <= P <= 1000 or T < P or T % P:
        raise ValueError(f"T/P/F with 1 ≤ P ≤ 1000 planes and T a multiple of P, found {T}/{P}/{F} in {text!r}")
    if T // P > 1000:
        raise ValueError(f"at most 1000 satellites per plane, found {T // P} in {text!r}")
    if F >= P:
        raise ValueError(f"a phasing F in [0, P − 1] = [0, {P - 1}], found {F} in {text!r}")
    return (360.0 if m["type"] == "D" else 180.0), alt, inc, P, T // P, F


def _number(x: float, decimals_min: int) -> str:
    text = repr(float(x))
    if text.endswith(".0") and decimals_min == 0:
        return text[:-2]
    return text


def format_code(raan_spread_deg: float, altitude_km: float, inclination_deg: float, planes: int,
                sats_per_plane: int, phasing: int) -> str:
    """The code of a Walker shell. Raises ValueError for a shell no code describes (a RAAN
    spread other than 360° or 180°)."""
    kind = {360.0: "D", 180.0: "S"}.get(float(raan_spread_deg))
    if kind is None:
        raise ValueError(f"a Walker delta (raan_spread_deg = 360) or star (180) shell, found raan_spread_deg = "
                         f"{raan_spread_deg:g}")
    return (f"{kind}:{_number(altitude_km, 0)}:{_number(inclination_deg, 1)}:"
            f"{planes * sats_per_plane}/{planes}/{phasing}")
