"""Constellation codes: the compact notation of the IRTF SPACE RG draft "A code to describe
satellite constellations" (draft-piraux-space-constellation-code), e.g. `S:780:86.4:66/6/1` for
Iridium or `D:550:53.0:1584/22/17`.

The draft's grammar (ABNF, RFC 5234), one circular Walker shell per `shell`::

    constellation = shell [ "+" constellation ]
    shell         = walker ":" altitude ":" inclination ":" no-sats "/" no-planes "/" phasing [ ":" mean-anomaly ]
    walker        = "D" / "S"           ; Walker delta (nodes over 360°) or star (over 180°)
    altitude, inclination, mean-anomaly = 1*DIGIT [ "." 1*DIGIT ]   ; km above the surface, degrees
    no-sats, no-planes, phasing = 1*DIGIT

with no-sats a multiple of no-planes, 0 ≤ phasing ≤ no-planes − 1 (satellites of neighbouring
planes are offset by phasing·360°/no-sats in mean anomaly), inclination in [0, 180] and the
optional mean anomaly of the first satellite of the first plane in [0, 360]. netemu reads one shell
per satellite group: a code of several shells joined by `+` is refused (give each its own group).
"""

from __future__ import annotations

import re

__all__ = ["parse_code", "format_code"]

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_CODE_RE = re.compile(rf"^(?P<type>[DS]):(?P<alt>{_NUMBER}):(?P<inc>{_NUMBER}):(?P<t>[0-9]+)/(?P<p>[0-9]+)/(?P<f>[0-9]+)"
                      rf"(?::(?P<m>{_NUMBER}))?$")
FORM = "WALKER:ALTITUDE_KM:INCLINATION_DEG:SATELLITES/PLANES/PHASING[:MEAN_ANOMALY_DEG] with WALKER D or S, " \
       "e.g. S:780:86.4:66/6/1"


def parse_code(text: str) -> tuple[float, float, float, int, int, int, float]:
    """The Walker parameters of a code: (raan_spread_deg, altitude_km, inclination_deg, planes,
    sats_per_plane, phasing, mean_anomaly0_deg). Raises ValueError with one line saying what was
    expected."""
    if not isinstance(text, str):
        raise ValueError(f"a constellation code {FORM}")
    s = text.strip()
    if "+" in s:
        raise ValueError(f"one shell per satellite group (a code without '+'; give each shell its own "
                         f"[[satellites]] group), found {text!r}")
    m = _CODE_RE.match(s)
    if not m:
        raise ValueError(f"a constellation code {FORM}, found {text!r}")
    alt, inc, m0 = float(m["alt"]), float(m["inc"]), float(m["m"] or 0.0)
    T, P, F = int(m["t"]), int(m["p"]), int(m["f"])
    if not 100 <= alt <= 50_000:
        raise ValueError(f"an altitude in [100, 50000] km, found {m['alt']} in {text!r}")
    if not 0 <= inc <= 180:
        raise ValueError(f"an inclination in [0, 180] degrees, found {m['inc']} in {text!r}")
    if not 1 <= P <= 1000 or T < P or T % P:
        raise ValueError(f"SATELLITES/PLANES/PHASING with 1 ≤ PLANES ≤ 1000 and SATELLITES a multiple of PLANES, "
                         f"found {T}/{P}/{F} in {text!r}")
    if T // P > 1000:
        raise ValueError(f"at most 1000 satellites per plane, found {T // P} in {text!r}")
    if F >= P:
        raise ValueError(f"a phasing in [0, PLANES − 1] = [0, {P - 1}], found {F} in {text!r}")
    if m0 > 360:
        raise ValueError(f"a mean anomaly in [0, 360] degrees, found {m['m']} in {text!r}")
    return (360.0 if m["type"] == "D" else 180.0), alt, inc, P, T // P, F, m0


def _number(x: float, keep_point: bool) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") and not keep_point else text


def format_code(raan_spread_deg: float, altitude_km: float, inclination_deg: float, planes: int,
                sats_per_plane: int, phasing: int, mean_anomaly0_deg: float = 0.0) -> str:
    """The code of a Walker shell. Raises ValueError for a shell no code describes (a RAAN
    spread other than 360° or 180°, a mean anomaly outside [0, 360], negative numbers)."""
    kind = {360.0: "D", 180.0: "S"}.get(float(raan_spread_deg))
    if kind is None:
        raise ValueError(f"a Walker delta (raan_spread_deg = 360) or star (180) shell, found raan_spread_deg = "
                         f"{raan_spread_deg:g}")
    if not 0 <= mean_anomaly0_deg <= 360:
        raise ValueError(f"a mean anomaly in [0, 360] degrees, found {mean_anomaly0_deg:g}")
    tail = f":{_number(mean_anomaly0_deg, False)}" if mean_anomaly0_deg else ""
    return (f"{kind}:{_number(altitude_km, False)}:{_number(inclination_deg, True)}:"
            f"{planes * sats_per_plane}/{planes}/{phasing}{tail}")
