"""Scenario files: one TOML file read into frozen dataclasses, validated completely at load.

A scenario says *what* to emulate: the time window, satellite groups (Walker shells, formation-flying
compute clusters, TLE files), ground stations, the laser ISL models, the ground-link (GSL) model,
the endpoints workloads will use, the routing metric, the AI workloads to run (`[[workloads]]`:
inference, upload, checkpoint, allreduce) and the user's own programs (`[[apps]]`, plan.apps). Paths inside a scenario are relative to
the scenario file. Every problem raises one `ScenarioError` naming the file, the key and what was
expected; nothing is computed before the whole file has been checked.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import io
import json
import math
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ScenarioError, TLEError
from .apps import APP_NAME_RE, App, PlaceholderError, placeholders
from .code import parse_code
from .dispatch import DISPATCH_POLICIES
from .files import MAX_TEXT_BYTES, read_input, resolve_path
from .orbits import (SGP4_ERRORS, SSO_MAX_ALTITUDE_KM, TLERecord, ltan_raan_deg, parse_tle_text,
                     sso_inclination_deg, tle_status_at)

__all__ = [
    "Scenario", "WalkerShell", "Formation", "TLEGroup", "GroundStation", "ISLModel", "GSLModel",
    "Routing", "Workload", "WORKLOAD_KINDS", "ComputeGroup", "Fault", "FAULT_KINDS", "GroupFaults", "Region",
    "Rain", "Clouds", "load_scenario", "NAME_MAX_CHARS", "App",
]

NAME_MAX_CHARS = 10
"""Longest node name: Linux interface names hold 15 characters and netemu appends `-eNNN`."""

MAX_SATELLITES = 339_999
"""Most satellites of a scenario: SGP4 numbers them with 5-character (Alpha-5) catalogue numbers."""

DEFAULT_MAX_TLE_AGE_DAYS = 30.0
"""TLEs further than this from the scenario epoch load with a warning (key `max_tle_age_days`)."""

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
SOURCES = ("walker", "code", "formation", "tle")
ISL_PATTERNS = ("plus-grid", "nearest-k", "cluster-mesh", "explicit")
GSL_POLICIES = ("nearest", "longest-visible", "all")
ROUTING_METRICS = ("delay", "hops")


@dataclass(frozen=True, slots=True)
class WalkerShell:
    """A Walker delta (RAAN spread 360°) or star (180°) shell of circular orbits."""

    name: str
    prefix: str
    altitude_km: float
    inclination_deg: float
    planes: int
    sats_per_plane: int
    phasing: int
    raan_spread_deg: float
    raan0_deg: float
    compute: bool = False
    mean_anomaly0_deg: float = 0.0
    """Mean anomaly of the first satellite of the first plane at the epoch (a constellation
    code's optional last field)."""

    @property
    def count(self) -> int:
        return self.planes * self.sats_per_plane


@dataclass(frozen=True, slots=True)
class Formation:
    """A formation-flying cluster: `count` satellites around one reference orbit, laid out on a
    grid of `columns` cross-track columns spaced `cross_track_km`, and rows spaced
    `along_track_km` along the track."""

    name: str
    prefix: str
    count: int
    altitude_km: float
    inclination_deg: float
    raan_deg: float
    mean_anomaly_deg: float
    along_track_km: float
    cross_track_km: float
    columns: int
    compute: bool = True


@dataclass(frozen=True, slots=True)
class TLEGroup:
    """Satellites from a 3-line TLE file, already read, checked and filtered at load."""

    name: str
    prefix: str
    path: Path
    records: tuple[TLERecord, ...]
    compute: bool = False

    @property
    def count(self) -> int:
        return len(self.records)


SatelliteGroup = WalkerShell | Formation | TLEGroup


@dataclass(frozen=True, slots=True)
class GroundStation:
    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    terminals: int | None = None
    """Overrides the GSL model's terminals for this station."""


@dataclass(frozen=True, slots=True)
class ISLModel:
    """Laser inter-satellite links within one satellite group or between two."""

    groups: tuple[str, ...]
    pattern: str
    rate_mbps: float
    max_range_km: float = math.inf
    grazing_altitude_km: float = 80.0
    polar_cutoff_deg: float | None = None
    terminals: int | None = None
    acquisition_s: float = 0.0
    loss_pct: float = 0.0
    k: int = 4
    isl_shift: int = 0
    pairs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GSLModel:
    """Ground-satellite links: visibility by elevation (or slant range), selection policy."""

    rate_mbps: float
    min_elevation_deg: float | None = 25.0
    max_range_km: float | None = None
    terminals: int = 1
    policy: str = "nearest"
    handover_gap_s: float = 0.0
    loss_pct: float = 0.0
    groups: tuple[str, ...] = ()
    """Satellite groups that carry ground terminals; empty means every group."""
    frequency_ghz: float | None = None
    """Carrier frequency of radio ground links; with `[[rain]]`, rain attenuation applies."""
    clear_sky_margin_db: float = 0.0
    """Link margin without rain; rain attenuation is taken from it."""
    rate_steps: tuple[tuple[float, float], ...] = ()
    """Adaptive coding and modulation: (min_margin_db, rate_mbps) steps; the link runs at the
    fastest step its margin meets (never above `rate_mbps`), and is out (down, "rain") below all."""
    polarization: str = "circular"
    rain_height_km: float = 5.0
    """Rain height h_R above sea level (ITU-R P.839-4: 0 °C isotherm + 0.36 km; about 5 km in the
    tropics, 3-4 km at mid latitudes)."""


@dataclass(frozen=True, slots=True)
class Routing:
    metric: str = "delay"
    ground_relay: bool = False
    """Whether a path may transit a ground station (bent pipe through the ground)."""
    failure_detection_s: float = 0.1
    """After a fault takes a link down, routes keep using it for this long (packets sent that way
    are lost), as a real network needs time to detect a failure (BFD-like timers: 0.05-1 s). Only
    fault-caused failures are delayed; it changes nothing in a scenario without `[[faults]]`."""


WORKLOAD_KINDS = ("inference", "upload", "checkpoint", "allreduce")

FAULT_KINDS = ("node", "link", "reboot", "station", "random", "radiation", "storm")
GROUP_FAULT_KINDS = ("random", "radiation", "storm")
FAILURE_DISTRIBUTIONS = ("exponential", "weibull")
POLARIZATIONS = ("circular", "horizontal", "vertical")


@dataclass(frozen=True, slots=True)
class Clouds:
    """Cloud over one ground station (`[[clouds]]`), for optical ground links: a CSV series
    `t_s, cloud_blocked` (1: the line of sight is blocked, 0: clear), each value held until the
    next sample; clear before the first."""

    station: str
    t_s: tuple[float, ...]
    blocked: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Rain:
    """Rain over one ground station (`[[rain]]`): a series read from a CSV file (`t_s`, the
    rain rate `rain_mm_per_h` held until the next sample; dry before the first), or a seeded
    stochastic model (dry and wet spells of exponential length, lognormal rates while wet)."""

    station: str
    t_s: tuple[float, ...] = ()
    rain_mm_per_h: tuple[float, ...] = ()
    seed: int | None = None
    mean_dry_s: float = 3600.0
    mean_wet_s: float = 600.0
    median_mm_per_h: float = 10.0
    sigma: float = 1.0
TERMINAL_KINDS = ("isl", "gsl")


@dataclass(frozen=True, slots=True)
class Region:
    """A latitude/longitude box (degrees, lon not wrapping): `lat_deg` and `lon_deg` as (lo, hi)."""

    lat_deg: tuple[float, float]
    lon_deg: tuple[float, float]
    multiplier: float = 1.0


@dataclass(frozen=True, slots=True)
class GroupFaults:
    """Stochastic or correlated faults over a satellite group (`[[faults]]` of kind "random",
    "radiation" or "storm"), expanded into `Fault`s by `netemu.plan.faults.expand_group_faults`.

    random: each satellite (or, with `terminal`, each satellite's lasers or ground links) fails
    after a time drawn from an exponential of mean `mtbf_s` (or a Weibull of that mean and
    `shape`) and is repaired after an exponential time of mean `mttr_s`, again and again.
    radiation: resets (reboots of `reboot_s`) at `rate_per_day` per satellite, the rate multiplied
    by a region's `multiplier` while the satellite is inside it (e.g. the South Atlantic Anomaly).
    storm: at `t_s`, `fraction` of the group (drawn with the seed), or with `region` every
    satellite inside the box, fails for `duration_s` (None: for good)."""

    kind: str
    group: str
    seed: int
    mtbf_s: float = 0.0
    mttr_s: float = 0.0
    distribution: str = "exponential"
    shape: float = 1.0
    terminal: str | None = None
    rate_per_day: float = 0.0
    reboot_s: float = 0.0
    regions: tuple[Region, ...] = ()
    t_s: float = 0.0
    fraction: float = 0.0
    duration_s: float | None = None
    region: Region | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """A deterministic fault (`[[faults]]`), in scenario time.

    kind "node": `node` (a satellite or ground station) is dark from `t_s` for `duration_s` (None:
    to the end): every link it has is down. "station": the same for a ground station (an outage
    of the site). "reboot": a satellite goes dark for `duration_s` (the file's `reboot_s`), then its
    links re-acquire: each is down for its model's acquisition time (`acquisition_s` of its laser
    model, `handover_gap_s` for ground links) after the reboot ends. "link": the one link `a`–`b`,
    or (`node`, `terminal`) every laser ("isl") or every ground link ("gsl") of `node`."""

    kind: str
    t_s: float
    duration_s: float | None
    node: str | None = None
    a: str | None = None
    b: str | None = None
    terminal: str | None = None
    source: str = ""
    """For faults drawn from a `GroupFaults`: its kind and group, e.g. "random relay"."""

    @property
    def end_s(self) -> float:
        return math.inf if self.duration_s is None else self.t_s + self.duration_s

    def label(self) -> str:
        """Short text naming the fault's target, e.g. `node r0101`, `link a-b`, `gsl of g-x`."""
        if self.kind == "link":
            return f"link {self.a}-{self.b}" if self.a else f"{self.terminal} of {self.node}"
        return f"{self.kind} {self.node}"


@dataclass(frozen=True, slots=True)
class Workload:
    """An AI workload run as real programs (TCP sockets) inside emulated nodes.

    `clients` are the ground-side nodes (inference, upload, checkpoint) or the ring's ranks in
    order (allreduce); `server` is the compute satellite (None for allreduce). `start_s`/`stop_s`
    are scenario times (None: the run window's start/end); no job starts after `stop_s`.
    `params` holds the kind's parameters with their defaults filled in (see `WORKLOAD_PARAMS`)."""

    name: str
    kind: str
    clients: tuple[str, ...]
    server: str | None
    start_s: float | None
    stop_s: float | None
    seed: int
    transport: str
    params: tuple[tuple[str, Any], ...]

    def p(self, key: str) -> Any:
        """A parameter by name (defaults filled in)."""
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)


@dataclass(frozen=True, slots=True)
class ComputeGroup:
    """What the compute satellites of one group carry (`[[compute]]`): accelerators, their
    inference speed, and the power system (solar array, battery, throttling rules).

    Power drawn per satellite: `bus_w` plus, per active accelerator, `accelerator_busy_w` for
    the `expected_utilisation` share of the time and `accelerator_idle_w` for the rest;
    accelerators switched off by throttling draw nothing. Below `throttle_below_soc_pct` state
    of charge only `throttled_accelerators` stay active; below `refuse_below_soc_pct` none
    (the satellite refuses work). `thermal_limit_w` caps the sustained power (fewer active
    accelerators)."""

    group: str
    accelerators_per_satellite: int
    prefill_tokens_per_s_per_accelerator: float
    decode_tokens_per_s_per_sequence: float
    sequences_per_accelerator: int
    accelerator_busy_w: float
    accelerator_idle_w: float
    bus_w: float
    solar_array_w: float
    battery_wh: float
    initial_soc_pct: float = 100.0
    throttle_below_soc_pct: float | None = None
    throttled_accelerators: int = 0
    refuse_below_soc_pct: float | None = None
    thermal_limit_w: float | None = None
    expected_utilisation: float = 0.5

    @property
    def accelerator_w(self) -> float:
        """Mean draw of one active accelerator at the expected utilisation (W)."""
        u = self.expected_utilisation
        return u * self.accelerator_busy_w + (1 - u) * self.accelerator_idle_w


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    epoch: datetime
    duration_s: float
    step_s: float
    satellites: tuple[SatelliteGroup, ...]
    ground_stations: tuple[GroundStation, ...]
    isls: tuple[ISLModel, ...]
    gsl: GSLModel | None
    endpoints: tuple[str, ...]
    routing: Routing = field(default_factory=Routing)
    workloads: tuple[Workload, ...] = ()
    faults: tuple[Fault, ...] = ()
    group_faults: tuple[GroupFaults, ...] = ()
    rain: tuple[Rain, ...] = ()
    clouds: tuple[Clouds, ...] = ()
    warnings: tuple[str, ...] = ()
    """Problems that do not stop planning (e.g. old TLEs); `make_plan` reports them."""
    compute: tuple[ComputeGroup, ...] = ()
    """Compute and power models of compute groups (`[[compute]]`; empty: none modelled)."""
    apps: tuple[App, ...] = ()
    """The user's own programs to run in nodes (`[[apps]]`, see netemu.plan.apps)."""

    @property
    def n_steps(self) -> int:
        """Number of time steps: t_s = 0, step_s, ... up to and including duration_s."""
        return int(math.floor(self.duration_s / self.step_s + 1e-9)) + 1

    def group(self, name: str) -> SatelliteGroup:
        for g in self.satellites:
            if g.name == name:
                return g
        raise KeyError(name)


# --------------------------------------------------------------------------- table reader


class _Table:
    """Typed access to one TOML table; remembers which keys were read so unknown keys are errors."""

    def __init__(self, path: Path, where: str, data: Any):
        if not isinstance(data, dict):
            raise ScenarioError(path, where, f"expected a table, found {_show(data)}")
        self.path, self.where, self.data = path, where, data
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.where}.{k}" if self.where else k

    def error(self, k: str, message: str) -> ScenarioError:
        return ScenarioError(self.path, self.key(k), message)

    def has(self, k: str) -> bool:
        return k in self.data

    def get(self, k: str, kind: str, default: Any = ..., check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(k)
        if k not in self.data:
            if default is ...:
                # A misspelled key reads as a missing one: name the stray key first.
                stray = [x for x in self.data if x not in self.seen and x not in _KNOWN_KEYS]
                close = difflib.get_close_matches(k, stray, n=1)
                if close:
                    raise self.error(close[0], f"unknown key; did you mean {k!r}?")
                raise self.error(k, f"missing; expected {kind}")
            return default
        v = self.data[k]
        ok = {
            "a number": isinstance(v, (int, float)) and not isinstance(v, bool),
            "an integer": isinstance(v, int) and not isinstance(v, bool),
            "a string": isinstance(v, str),
            "true or false": isinstance(v, bool),
            "a list": isinstance(v, list),
            "a date-time": isinstance(v, (datetime, str)),
        }[kind]
        if not ok:
            raise self.error(k, f"expected {kind}, found {_show(v)}")
        if kind == "a number":
            v = float(v)
            if not math.isfinite(v):
                raise self.error(k, f"expected a finite number, found {v}")
        if check is not None:
            problem = check(v)
            if problem:
                raise self.error(k, f"expected {problem}, found {_show(v)}")
        return v

    def table(self, k: str) -> "_Table":
        self.seen.add(k)
        return _Table(self.path, self.key(k), self.data.get(k, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key; " + _suggest(unknown[0], sorted(self.seen)))


def _suggest(found: str, valid: list[str]) -> str:
    """'did you mean X?' for the closest valid name, else the list of valid names."""
    close = difflib.get_close_matches(found, valid, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "expected one of: " + ", ".join(valid)


def _show(v: Any) -> str:
    """A TOML value as it is written in the file (not as Python prints it), with its TOML type."""
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "a list " + _toml_text(v)
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", datetime: "date-time",
            date: "date", time: "time"}.get(type(v), type(v).__name__)
    return f"{kind} {_toml_text(v)}"


def _toml_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):  # a TOML literal string where one can hold it
        return f"'{v}'" if not any(c in v for c in "'\n\r") else json.dumps(v, ensure_ascii=False)
    if isinstance(v, datetime):
        text = v.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(v, (date, time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{…}"
    return str(v)


def _range(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        bad = v <= lo if lo_open else v < lo
        if bad or v > hi:
            return f"a value in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        return None
    return check


def _name_check(v: str) -> str | None:
    if not _NAME_RE.match(v) or len(v) > NAME_MAX_CHARS:
        return (f"a node name of at most {NAME_MAX_CHARS} characters, lower-case letters, digits and "
                "'-', starting with a letter")
    return None


def _prefix_check(v: str) -> str | None:
    if not re.match(r"^[a-z][a-z0-9-]{0,5}$", v):
        return "a node-name prefix of 1-6 characters (lower-case letters, digits, '-'), starting with a letter"
    return None


# --------------------------------------------------------------------------- loading

_TOP_LEVEL = ("scenario", "satellites", "ground_stations", "isl", "gsl", "endpoints", "routing", "workloads",
              "compute", "faults", "rain", "clouds", "apps")

# Every key of the format in any table (workload parameters are added below WORKLOAD_PARAMS): a
# required key found missing is first matched against present keys that are valid nowhere.
_KNOWN_KEYS = set(_TOP_LEVEL) | {
    "acquisition_s", "along_track_km", "code", "alt_m", "altitude_km", "altitude_km_range", "clients", "columns",
    "compute", "count", "cross_track_km", "description", "duration_s", "epoch", "file", "grazing_altitude_km",
    "ground_relay", "ground_stations_file", "groups", "handover_gap_s", "inclination_deg",
    "inclination_deg_range", "isl_shift", "k", "kind", "lat_deg", "limit", "lon_deg", "loss_pct", "ltan_h",
    "max_range_km", "max_tle_age_days", "mean_anomaly_deg", "metric", "min_elevation_deg", "name",
    "name_pattern", "nodes", "pairs_file", "pattern", "phasing", "planes", "polar_cutoff_deg", "policy",
    "prefix", "raan0_deg", "raan_deg", "raan_spread_deg", "ranks", "rate_mbps", "sats_per_plane", "seed",
    "server", "source", "start_s", "step_s", "stop_s", "sun_synchronous", "terminals", "transport",
    "t_s", "node", "a", "b", "terminal", "reboot_s", "failure_detection_s", "frequency_ghz",
    "clear_sky_margin_db", "rate_steps", "polarization", "rain_height_km", "station", "mean_dry_s",
    "mean_wet_s", "median_mm_per_h", "sigma", "group", "mtbf_s", "mttr_s", "distribution", "shape",
    "rate_per_day", "regions", "fraction", "region", "multiplier", "command",
}


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises `ScenarioError` (naming file, key and expectation) on any problem: unreadable file,
    malformed TOML, unknown keys, values out of range, missing or malformed referenced files
    (TLE, station list, pairs), duplicate or over-long node names, dangling references.
    """
    path = Path(path)
    raw = read_input(path, MAX_TEXT_BYTES, lambda problem: ScenarioError(
        path, "", f"cannot read the scenario file: {problem}"))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ScenarioError(path, "", f"expected UTF-8 text ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"malformed TOML: {e}") from None

    top = _Table(path, "", data)
    base = path.parent
    # Unknown sections first: a misspelled one would otherwise surface as a distant error (no
    # stations → no workload clients).
    for k in data:
        if k not in _TOP_LEVEL:
            raise top.error(k, "unknown key (a top-level section); " + _suggest(k, list(_TOP_LEVEL)))

    s = top.table("scenario")
    name = s.get("name", "a string", path.stem)
    description = s.get("description", "a string", "")
    epoch = _epoch(s, "epoch")
    duration_s = s.get("duration_s", "a number", check=_range(0, 10 * 86_400))
    step_s = s.get("step_s", "a number", check=_range(0, 86_400, lo_open=True))
    if duration_s / step_s > 1_000_000:
        raise s.error("step_s", f"at most 1,000,000 steps; duration_s/step_s = {duration_s / step_s:,.0f}")
    stations_file = s.get("ground_stations_file", "a string", None)
    s.done()

    warnings: list[str] = []
    groups = _satellites(top, path, base, epoch, warnings)
    n_sats = sum(g.count for g in groups)
    if n_sats > MAX_SATELLITES:
        raise ScenarioError(path, "satellites", f"at most {MAX_SATELLITES:,} satellites in all (SGP4's catalogue "
                                                f"numbers), found {n_sats:,}")
    stations = _ground_stations(top, path, base, stations_file)
    gsl = _gsl(top, groups) if top.has("gsl") else None
    top.seen.add("gsl")

    node_names: dict[str, str] = {}  # name -> where it was defined
    for g in groups:
        for n in group_node_names(g):
            _claim(path, node_names, n, f"satellites[{g.name}]")
    for i, st in enumerate(stations):
        _claim(path, node_names, st.name, f"ground_stations[{i}]")

    isls = _isls(top, path, base, groups)
    routing = _routing(top)
    endpoints = _endpoints(top, groups, stations, node_names)
    workloads = _workloads(top, groups, stations, node_names, endpoints, duration_s)
    compute = _compute(top, groups, step_s)
    _check_dispatch(path, workloads, compute, groups, endpoints)
    faults, group_faults = _faults(top, groups, stations, node_names, duration_s)
    rain = _rain(top, base, stations, gsl)
    clouds = _clouds(top, base, stations, gsl)
    apps = _apps(top, groups, node_names, endpoints, duration_s)
    top.done()

    if not groups:
        raise ScenarioError(path, "satellites", "expected at least one [[satellites]] group")
    return Scenario(path=path, name=name, description=description, epoch=epoch, duration_s=duration_s,
                    step_s=step_s, satellites=tuple(groups), ground_stations=tuple(stations),
                    isls=tuple(isls), gsl=gsl, endpoints=endpoints, routing=routing, workloads=tuple(workloads),
                    faults=tuple(faults), group_faults=tuple(group_faults), rain=tuple(rain), clouds=tuple(clouds),
                    warnings=tuple(warnings), compute=tuple(compute), apps=tuple(apps))


def _did_you_mean(found: Any, valid: list[str]) -> str:
    close = difflib.get_close_matches(found, valid, n=1) if isinstance(found, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _claim(path: Path, names: dict[str, str], name: str, where: str) -> None:
    if name in names:
        raise ScenarioError(path, where, f"node name {name!r} is already used by {names[name]}; "
                                         "expected unique names (change a prefix or station name)")
    names[name] = where


def _epoch(t: _Table, k: str) -> datetime:
    v = t.get(k, "a date-time")
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise t.error(k, f"expected an ISO 8601 UTC date-time like 2026-03-20T00:00:00Z, found {_show(v)}") from None
    if not isinstance(v, datetime) or v.tzinfo is None:
        raise t.error(k, f"expected a UTC date-time with its zone, like 2026-03-20T00:00:00Z, found {_show(v)}")
    return v.astimezone(timezone.utc)


def _inclination(t: _Table, altitude_km: float) -> float:
    sso = t.get("sun_synchronous", "true or false", False)
    if sso:
        if t.has("inclination_deg"):
            raise t.error("inclination_deg", "expected either inclination_deg or sun_synchronous = true, not both")
        try:
            return sso_inclination_deg(altitude_km)
        except ValueError:
            raise t.error("sun_synchronous", f"no sun-synchronous orbit exists above about "
                                             f"{SSO_MAX_ALTITUDE_KM:,.0f} km; found altitude_km = {altitude_km:g} "
                                             "(give inclination_deg instead)") from None
    return t.get("inclination_deg", "a number", check=_range(0, 180))


def _raan(t: _Table, epoch: datetime, key: str) -> float:
    if t.has("ltan_h"):
        if t.has(key):
            raise t.error(key, f"expected either {key} or ltan_h, not both")
        ltan_h = t.get("ltan_h", "a number", check=_range(0, 24))
        return ltan_raan_deg(epoch, ltan_h)
    t.seen.add("ltan_h")
    return t.get(key, "a number", 0.0, check=_range(-360, 360))


def _satellites(top: _Table, path: Path, base: Path, epoch: datetime, warnings: list[str]) -> list[SatelliteGroup]:
    top.seen.add("satellites")
    items = top.data.get("satellites", [])
    if not isinstance(items, list):
        raise ScenarioError(path, "satellites", "expected an array of tables [[satellites]]")
    groups: list[SatelliteGroup] = []
    seen_names: set[str] = set()
    for i, item in enumerate(items):
        t = _Table(path, f"satellites[{i}]", item)
        name = t.get("name", "a string", check=lambda v: None if re.match(r"^[A-Za-z0-9_-]+$", v) else "a group name (letters, digits, '-', '_')")
        if name in seen_names:
            raise t.error("name", f"expected a unique group name, {name!r} is used twice")
        seen_names.add(name)
        t.where = f"satellites[{name}]"
        source = t.get("source", "a string", check=lambda v: None if v in SOURCES else "one of " + ", ".join(SOURCES))
        prefix = t.get("prefix", "a string", check=_prefix_check)
        altitude = _range(100, 50_000)
        if source == "walker":
            alt = t.get("altitude_km", "a number", check=altitude)
            planes = t.get("planes", "an integer", check=_range(1, 1000))
            per_plane = t.get("sats_per_plane", "an integer", check=_range(1, 1000))
            g: SatelliteGroup = WalkerShell(
                name=name, prefix=prefix, altitude_km=alt, inclination_deg=_inclination(t, alt),
                planes=planes, sats_per_plane=per_plane,
                phasing=t.get("phasing", "an integer", 0, check=_range(0, planes - 1)),
                raan_spread_deg=t.get("raan_spread_deg", "a number", 360.0, check=_range(0, 360, lo_open=True)),
                raan0_deg=_raan(t, epoch, "raan0_deg"),
                compute=t.get("compute", "true or false", False))
        elif source == "code":
            try:
                spread, alt, incl, planes, per_plane, phasing, m0 = parse_code(t.get("code", "a string"))
            except ValueError as e:
                raise t.error("code", f"expected {e}") from None
            g = WalkerShell(
                name=name, prefix=prefix, altitude_km=alt, inclination_deg=incl, planes=planes,
                sats_per_plane=per_plane, phasing=phasing, raan_spread_deg=spread,
                raan0_deg=_raan(t, epoch, "raan0_deg"), compute=t.get("compute", "true or false", False),
                mean_anomaly0_deg=m0)
        elif source == "formation":
            alt = t.get("altitude_km", "a number", check=altitude)
            count = t.get("count", "an integer", check=_range(1, 10_000))
            g = Formation(
                name=name, prefix=prefix, count=count, altitude_km=alt, inclination_deg=_inclination(t, alt),
                raan_deg=_raan(t, epoch, "raan_deg"),
                mean_anomaly_deg=t.get("mean_anomaly_deg", "a number", 0.0, check=_range(-360, 360)),
                along_track_km=t.get("along_track_km", "a number", 0.0, check=_range(0, 5000)),
                cross_track_km=t.get("cross_track_km", "a number", 0.0, check=_range(0, 1000)),
                columns=t.get("columns", "an integer", 1, check=_range(1, count)),
                compute=t.get("compute", "true or false", True))
            if g.count > 1 and g.along_track_km == 0 and (g.columns == 1 or g.cross_track_km == 0):
                raise t.error("along_track_km", "a spacing > 0 (along_track_km, or cross_track_km with columns > 1); "
                                                "satellites of a formation must not coincide")
        else:
            file_ = t.get("file", "a string")
            tle_path = resolve_path(base / file_)
            pattern = t.get("name_pattern", "a string", "*")
            incl = _pair(t, "inclination_deg_range", (0.0, 180.0))
            alt_range = _pair(t, "altitude_km_range", (0.0, 1e9))
            limit = t.get("limit", "an integer", None, check=_range(1, 1_000_000))
            max_age_days = t.get("max_tle_age_days", "a number", DEFAULT_MAX_TLE_AGE_DAYS,
                                 check=_range(0, 1e6, lo_open=True))
            raw_tle = read_input(tle_path, MAX_TEXT_BYTES, lambda problem: t.error(
                "file", f"expected a readable TLE file (a regular file of at most {MAX_TEXT_BYTES >> 20} MiB), "
                        f"{problem}"))
            try:
                text = raw_tle.decode("ascii")
            except UnicodeDecodeError as e:
                raise t.error("file", f"expected a readable ASCII TLE file: {e}") from None
            try:
                records = parse_tle_text(text, tle_path)
            except TLEError as e:
                where = f"{tle_path} {e.key}" if e.key else f"{tle_path}"
                raise TLEError(path, t.key("file"), f"{where}: {e.message}") from None
            chosen = [r for r in records
                      if fnmatch.fnmatchcase(r.name, pattern)
                      and incl[0] <= r.inclination_deg <= incl[1]
                      and alt_range[0] <= r.altitude_km <= alt_range[1]]
            chosen.sort(key=lambda r: r.norad_id)
            if limit is not None:
                chosen = chosen[:limit]
            if not chosen:
                raise t.error("name_pattern", f"at least one satellite of {tle_path.name} to match the "
                                              f"pattern and ranges; none of {len(records)} does")
            warnings.extend(_tle_age_check(t, tle_path, chosen, epoch, max_age_days))
            g = TLEGroup(name=name, prefix=prefix, path=tle_path, records=tuple(chosen),
                         compute=t.get("compute", "true or false", False))
        t.done()
        for n in group_node_names(g)[:1] + group_node_names(g)[-1:]:
            if len(n) > NAME_MAX_CHARS:
                raise t.error("prefix", f"node names of at most {NAME_MAX_CHARS} characters, {n!r} is longer; "
                                        "use a shorter prefix")
        groups.append(g)
    return groups


def _tle_age_check(t: _Table, tle_path: Path, records: list[TLERecord], epoch: datetime,
                   max_age_days: float) -> list[str]:
    """Refuse TLEs SGP4 cannot propagate to the scenario epoch; warnings for those older (or
    newer) than `max_age_days`, whose positions drift by kilometres per day of age."""
    ages, err = tle_status_at(records, epoch)
    bad = np.nonzero(err != 0)[0]
    if len(bad):
        r, age = records[bad[0]], ages[bad[0]]
        raise t.error("file", f"expected TLEs that SGP4 can propagate to the epoch {epoch:%Y-%m-%dT%H:%M:%SZ}; "
                              f"{len(bad)} of {len(records)} in {tle_path.name} cannot (e.g. {r.name}, TLE "
                              f"{age:,.0f} days from the epoch: {SGP4_ERRORS.get(int(err[bad[0]]), 'error')}); "
                              "use TLEs from near the epoch or move the epoch")
    old = np.nonzero(np.abs(ages) > max_age_days)[0]
    if not len(old):
        return []
    worst = old[np.argmax(np.abs(ages[old]))]
    return [f"{t.key('file')}: {len(old)} of {len(records)} TLEs of {tle_path.name} are more than "
            f"{max_age_days:g} days from the scenario epoch (up to {abs(ages[worst]):,.0f} days, "
            f"{records[worst].name}); SGP4 positions drift by kilometres per day of age "
            "(set max_tle_age_days to accept)"]


def _pair(t: _Table, k: str, default: tuple[float, float]) -> tuple[float, float]:
    v = t.get(k, "a list", list(default))
    if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) or v[0] > v[1]:
        raise t.error(k, f"expected [low, high] with two numbers, low ≤ high, found {v!r}")
    return float(v[0]), float(v[1])


def group_node_names(g: SatelliteGroup) -> list[str]:
    """Node names of a group's satellites, in the group's order (plane-major for Walker shells)."""
    if isinstance(g, WalkerShell):
        wp, ws = max(2, len(str(g.planes - 1))), max(2, len(str(g.sats_per_plane - 1)))
        return [f"{g.prefix}{p:0{wp}d}-{s:0{ws}d}" for p in range(g.planes) for s in range(g.sats_per_plane)]
    if isinstance(g, Formation):
        w = max(2, len(str(g.count - 1)))
        return [f"{g.prefix}{i:0{w}d}" for i in range(g.count)]
    return [f"{g.prefix}{r.norad_id}" for r in g.records]


def _ground_stations(top: _Table, path: Path, base: Path, stations_file: str | None) -> list[GroundStation]:
    stations: list[GroundStation] = []
    if stations_file is not None:
        stations.extend(_read_stations_csv(path, resolve_path(base / stations_file)))
    top.seen.add("ground_stations")
    items = top.data.get("ground_stations", [])
    if not isinstance(items, list):
        raise ScenarioError(path, "ground_stations", "expected an array of tables [[ground_stations]]")
    for i, item in enumerate(items):
        t = _Table(path, f"ground_stations[{i}]", item)
        stations.append(GroundStation(
            name=t.get("name", "a string", check=_name_check),
            lat_deg=t.get("lat_deg", "a number", check=_range(-90, 90)),
            lon_deg=t.get("lon_deg", "a number", check=_range(-180, 180)),
            alt_m=t.get("alt_m", "a number", 0.0, check=_range(-500, 9000)),
            terminals=t.get("terminals", "an integer", None, check=_range(1, 64))))
        t.done()
    return stations


def _read_stations_csv(scenario_path: Path, csv_path: Path) -> list[GroundStation]:
    key = "scenario.ground_stations_file"
    raw = read_input(csv_path, MAX_TEXT_BYTES, lambda problem: ScenarioError(
        scenario_path, key, f"expected a readable CSV file (a regular file of at most {MAX_TEXT_BYTES >> 20} MiB), "
                            f"{problem}"))
    try:
        numbered = [(i, ln) for i, ln in enumerate(raw.decode("utf-8").splitlines(), start=1)
                    if ln.strip() and not ln.lstrip().startswith("#")]
        rows = list(zip((i for i, _ in numbered[1:]), csv.DictReader(ln for _, ln in numbered)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ScenarioError(scenario_path, key, f"expected a readable CSV file {csv_path}: {e}") from None
    out = []
    for line, row in rows:
        where = f"{csv_path.name} line {line}"
        try:
            name = (row.get("name") or "").strip()
            lat, lon = float(row["lat_deg"]), float(row["lon_deg"])
            alt = float(row.get("alt_m") or 0.0)
        except (KeyError, TypeError, ValueError):
            raise ScenarioError(scenario_path, key, f"{where}: expected columns name,lat_deg,lon_deg[,alt_m] "
                                                    f"with numbers, found {row}") from None
        for column, v, lo, hi in (("lat_deg", lat, -90, 90), ("lon_deg", lon, -180, 180), ("alt_m", alt, -500, 9000)):
            # nan passes every comparison: a station there would silently never see a satellite
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ScenarioError(scenario_path, key, f"{where}, column {column}: expected a finite number in "
                                                        f"[{lo}, {hi}], found {str(row.get(column)).strip()!r}")
        problem = _name_check(name)
        if problem:
            raise ScenarioError(scenario_path, key, f"{where}: expected {problem}, found {row}")
        out.append(GroundStation(name=name, lat_deg=lat, lon_deg=lon, alt_m=alt))
    return out


def _isls(top: _Table, path: Path, base: Path, groups: list[SatelliteGroup]) -> list[ISLModel]:
    top.seen.add("isl")
    items = top.data.get("isl", [])
    if not isinstance(items, list):
        raise ScenarioError(path, "isl", "expected an array of tables [[isl]]")
    by_name = {g.name: g for g in groups}
    out = []
    for i, item in enumerate(items):
        t = _Table(path, f"isl[{i}]", item)
        gnames = tuple(t.get("groups", "a list"))
        if not 1 <= len(gnames) <= 2 or any(g not in by_name for g in gnames) or len(set(gnames)) != len(gnames):
            raise t.error("groups", f"one or two distinct satellite group names out of {sorted(by_name)}, found {list(gnames)}")
        pattern = t.get("pattern", "a string", check=lambda v: None if v in ISL_PATTERNS else "one of " + ", ".join(ISL_PATTERNS))
        if pattern == "plus-grid" and (len(gnames) != 1 or not isinstance(by_name[gnames[0]], WalkerShell)):
            raise t.error("pattern", "plus-grid to name exactly one Walker shell in groups")
        k = t.get("k", "an integer", 4, check=_range(1, 64)) if pattern == "nearest-k" else 4
        pairs: tuple[tuple[str, str], ...] = ()
        if pattern == "explicit":
            pairs = _read_pairs(t, base, [n for g in gnames for n in group_node_names(by_name[g])])
        default_terminals = {"plus-grid": 4, "nearest-k": k}.get(pattern)
        m = ISLModel(
            groups=gnames, pattern=pattern,
            rate_mbps=t.get("rate_mbps", "a number", check=_range(0, 1e8, lo_open=True)),
            max_range_km=t.get("max_range_km", "a number", math.inf, check=_range(0, 1e6, lo_open=True)),
            grazing_altitude_km=t.get("grazing_altitude_km", "a number", 80.0, check=_range(0, 1000)),
            polar_cutoff_deg=t.get("polar_cutoff_deg", "a number", None, check=_range(0, 90)),
            terminals=t.get("terminals", "an integer", default_terminals, check=_range(1, 64)),
            acquisition_s=t.get("acquisition_s", "a number", 0.0, check=_range(0, 3600)),
            loss_pct=t.get("loss_pct", "a number", 0.0, check=_range(0, 100)),
            k=k,
            isl_shift=t.get("isl_shift", "an integer", 0, check=_range(-1000, 1000)) if pattern == "plus-grid" else 0,
            pairs=pairs)
        if m.polar_cutoff_deg is not None and pattern != "plus-grid":
            raise t.error("polar_cutoff_deg", "polar_cutoff_deg only with pattern plus-grid (it switches off cross-plane links)")
        t.done()
        out.append(m)
    return out


def _read_pairs(t: _Table, base: Path, allowed: list[str]) -> tuple[tuple[str, str], ...]:
    file_ = t.get("pairs_file", "a string")
    p = resolve_path(base / file_)
    raw = read_input(p, MAX_TEXT_BYTES, lambda problem: t.error(
        "pairs_file", f"expected a readable CSV file of node pairs (a regular file of at most "
                      f"{MAX_TEXT_BYTES >> 20} MiB), {problem}"))
    try:
        rows = [r for r in csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
                if r and not r[0].startswith("#")]
    except (UnicodeDecodeError, csv.Error) as e:
        raise t.error("pairs_file", f"expected a readable CSV file of node pairs: {e}") from None
    if rows and [c.strip() for c in rows[0]] == ["a", "b"]:
        rows = rows[1:]
    ok = set(allowed)
    pairs = []
    for n, r in enumerate(rows, start=1):
        names = [c.strip() for c in r]
        if len(names) != 2 or names[0] == names[1] or not ok.issuperset(names):
            raise t.error("pairs_file", f"{p.name} row {n}: expected two distinct satellites of groups "
                                        f"{list(t.data.get('groups', []))}, found {r}")
        pairs.append((names[0], names[1]))
    if not pairs:
        raise t.error("pairs_file", f"at least one pair in {p.name}")
    return tuple(pairs)


def _gsl(top: _Table, groups: list[SatelliteGroup]) -> GSLModel:
    t = top.table("gsl")
    names = [g.name for g in groups]
    gnames = tuple(t.get("groups", "a list", []))
    if any(g not in names for g in gnames):
        raise t.error("groups", f"names of satellite groups out of {names}, found {list(gnames)}")
    has_elev, has_range = t.has("min_elevation_deg"), t.has("max_range_km")
    if has_elev == has_range:
        raise t.error("min_elevation_deg", "exactly one of min_elevation_deg or max_range_km")
    m = GSLModel(
        rate_mbps=t.get("rate_mbps", "a number", check=_range(0, 1e8, lo_open=True)),
        min_elevation_deg=t.get("min_elevation_deg", "a number", None, check=_range(0, 90)),
        max_range_km=t.get("max_range_km", "a number", None, check=_range(0, 1e6, lo_open=True)),
        terminals=t.get("terminals", "an integer", 1, check=_range(1, 64)),
        policy=t.get("policy", "a string", "nearest", check=lambda v: None if v in GSL_POLICIES else "one of " + ", ".join(GSL_POLICIES)),
        handover_gap_s=t.get("handover_gap_s", "a number", 0.0, check=_range(0, 3600)),
        loss_pct=t.get("loss_pct", "a number", 0.0, check=_range(0, 100)),
        groups=gnames,
        frequency_ghz=t.get("frequency_ghz", "a number", None, check=_range(1, 1000)),
        clear_sky_margin_db=t.get("clear_sky_margin_db", "a number", 0.0, check=_range(0, 100)),
        rate_steps=_rate_steps(t),
        polarization=t.get("polarization", "a string", "circular",
                           check=lambda v: None if v in POLARIZATIONS else "one of " + ", ".join(POLARIZATIONS)),
        rain_height_km=t.get("rain_height_km", "a number", 5.0, check=_range(0, 10)))
    t.done()
    return m


def _routing(top: _Table) -> Routing:
    t = top.table("routing")
    r = Routing(metric=t.get("metric", "a string", "delay", check=lambda v: None if v in ROUTING_METRICS else "one of " + ", ".join(ROUTING_METRICS)),
                ground_relay=t.get("ground_relay", "true or false", False),
                failure_detection_s=t.get("failure_detection_s", "a number", 0.1, check=_range(0, 3600)))
    t.done()
    return r


def _endpoints(top: _Table, groups: list[SatelliteGroup], stations: list[GroundStation],
               node_names: dict[str, str]) -> tuple[str, ...]:
    t = top.table("endpoints")
    by_group = {g.name: group_node_names(g) for g in groups}
    if t.has("nodes"):
        out: list[str] = []
        for v in t.get("nodes", "a list"):
            if isinstance(v, str) and v in by_group:
                out.extend(by_group[v])
            elif isinstance(v, str) and v in node_names:
                out.append(v)
            else:
                raise t.error("nodes", f"expected node or group names defined in this scenario, found {_show(v)}"
                                       + _did_you_mean(v, [*by_group, *node_names]))
    else:
        out = [st.name for st in stations] + [n for g in groups if g.compute for n in by_group[g.name]]
    t.done()
    out = list(dict.fromkeys(out))
    if len(out) < 2:
        raise t.error("nodes", f"at least two endpoints (by default every ground station and compute "
                               f"satellite), found {len(out)}")
    return tuple(out)


# --------------------------------------------------------------------------- workloads

def _positive(v: Any) -> str | None:
    return None if v > 0 else "a positive number"


def _nonneg(v: Any) -> str | None:
    return None if v >= 0 else "a number ≥ 0"


def _count(v: Any) -> str | None:
    return None if v >= 0 else "an integer ≥ 0"


def _upto(first: Callable[[Any], str | None], hi: float) -> Callable[[Any], str | None]:
    """`first`, and at most `hi`: bounds what the programs and tables of a run can carry (a
    size beyond 64-bit byte counts, or billions of requests, would fail after the build)."""
    def check(v: Any) -> str | None:
        problem = first(v)
        if problem or v <= hi:
            return problem
        return f"at most {hi:,.0f}"
    return check


# --------------------------------------------------------------------------- compute

# Defaults of [[compute]], per satellite unless named per accelerator or sequence. Sources
# (shared domain facts and the vendors' data sheets):
COMPUTE_DEFAULTS = {
    # Google Suncatcher's prototypes carry 4 TPUs each (domain facts §1.3, [U]); 8 is the usual
    # server of 8 accelerators (NVIDIA HGX H100), "roughly a ground-based server" (Chenguang-1, §1.1).
    "accelerators_per_satellite": 8,
    # Prefill (prompt processing) of an 8B model on one H100: ~10,000 tokens/s [U]; the 8B class
    # is what the Three-Body constellation runs in orbit (§1.2).
    "prefill_tokens_per_s_per_accelerator": 10_000.0,
    # Output speed per stream of hosted models ≈ 100-200 tokens/s (§4a, Artificial Analysis
    # medians via induwara.lk [S]): the lower end.
    "decode_tokens_per_s_per_sequence": 100.0,
    # Continuous batching: tens of sequences per accelerator (vLLM-style servers) [U].
    "sequences_per_accelerator": 32,
    # NVIDIA H100 SXM: up to 700 W TDP (NVIDIA H100 data sheet [V]); idle ≈ 70-100 W [U].
    "accelerator_busy_w": 700.0,
    "accelerator_idle_w": 80.0,
    # Bus (avionics, lasers, pointing, heaters) of a large LEO satellite: ~1 kW [U].
    "bus_w": 1_000.0,
    # Array sized for the full busy load with ~30 % margin to recharge after an eclipse:
    # (1,000 + 8 × 700) W × 1.3 ≈ 8.6 kW [D].
    "solar_array_w": 8_600.0,
    # Battery for the longest LEO eclipse (~36 min at 750 km) at the mean load of 50 %
    # utilisation ((1,000 + 8 × 390) W × 0.6 h ≈ 2.5 kWh) with a 40 % depth of discharge [D].
    "battery_wh": 6_000.0,
    "initial_soc_pct": 100.0,
    "expected_utilisation": 0.5,
}
_KNOWN_KEYS |= set(COMPUTE_DEFAULTS) | {"group", "throttle_below_soc_pct", "throttled_accelerators",
                                        "refuse_below_soc_pct", "thermal_limit_w"}


def _compute(top: _Table, groups: list[SatelliteGroup], step_s: float) -> list[ComputeGroup]:
    top.seen.add("compute")
    raw = top.data.get("compute", [])
    if not isinstance(raw, list):
        raise top.error("compute", "expected an array of tables ([[compute]])")
    by_name = {g.name: g for g in groups}
    out: list[ComputeGroup] = []
    for i, item in enumerate(raw):
        t = _Table(top.path, f"compute[{i}]", item)
        name = t.get("group", "a string")
        if name not in by_name:
            raise t.error("group", f"expected the name of a [[satellites]] group, found {_show(name)}"
                                   + _did_you_mean(name, list(by_name)))
        g = by_name[name]
        if g.count == 0 or not g.compute:
            raise t.error("group", f"expected a group of compute satellites (compute = true, at least one "
                                   f"satellite); group {name!r} has {g.count} satellites, compute = "
                                   f"{'true' if g.compute else 'false'}")
        if any(c.group == name for c in out):
            raise t.error("group", f"expected one [[compute]] section per group; {name!r} has two")
        t.where = f"compute[{name}]"
        d = COMPUTE_DEFAULTS

        def num(k: str, check=_nonneg) -> float:
            return t.get(k, "a number", d[k], check=check)

        def opt(k: str, check) -> float | None:
            return t.get(k, "a number", None, check=check)

        acc = t.get("accelerators_per_satellite", "an integer", d["accelerators_per_satellite"],
                    check=lambda v: None if 1 <= v <= 100_000 else "an integer in [1, 100000]")
        c = dict(
            prefill_tokens_per_s_per_accelerator=num("prefill_tokens_per_s_per_accelerator", _positive),
            decode_tokens_per_s_per_sequence=num("decode_tokens_per_s_per_sequence", _positive),
            sequences_per_accelerator=t.get("sequences_per_accelerator", "an integer", d["sequences_per_accelerator"],
                                            check=lambda v: None if 1 <= v <= 1_000_000 else "an integer in [1, 1000000]"),
            accelerator_busy_w=num("accelerator_busy_w"), accelerator_idle_w=num("accelerator_idle_w"),
            bus_w=num("bus_w"), solar_array_w=num("solar_array_w"),
            battery_wh=num("battery_wh", _positive),
            initial_soc_pct=num("initial_soc_pct", _range(0, 100)),
            expected_utilisation=num("expected_utilisation", _range(0, 1)),
        )
        throttle = opt("throttle_below_soc_pct", _range(0, 100))
        throttled = t.get("throttled_accelerators", "an integer", (acc + 1) // 2,
                          check=lambda v: None if 0 <= v <= acc else f"an integer in [0, {acc}] (accelerators_per_satellite)")
        refuse = opt("refuse_below_soc_pct", _range(0, 100))
        if throttle is not None and refuse is not None and refuse > throttle:
            raise t.error("refuse_below_soc_pct", f"expected at most throttle_below_soc_pct ({throttle:g}), "
                                                  f"found {refuse:g}")
        thermal = opt("thermal_limit_w", _positive)
        if thermal is not None and thermal <= c["bus_w"]:
            raise t.error("thermal_limit_w", f"expected more than bus_w ({c['bus_w']:g} W), found {thermal:g}")
        t.done()
        cg = ComputeGroup(group=name, accelerators_per_satellite=acc, throttle_below_soc_pct=throttle,
                          throttled_accelerators=throttled, refuse_below_soc_pct=refuse, thermal_limit_w=thermal, **c)
        # One step in shadow at full load must not empty the battery unless a rule sheds load.
        deficit_wh = (cg.bus_w + acc * cg.accelerator_w) * step_s / 3600
        if throttle is None and refuse is None and cg.battery_wh < deficit_wh:
            raise t.error("battery_wh", f"expected at least one step's deficit in shadow ({deficit_wh:,.1f} Wh: "
                                        f"bus_w + {acc} accelerators at expected_utilisation over step_s = "
                                        f"{step_s:g} s), or a throttling rule (throttle_below_soc_pct or "
                                        f"refuse_below_soc_pct); found {cg.battery_wh:g}")
        out.append(cg)
    return out


def _check_dispatch(path: Path, workloads: list[Workload], compute: list[ComputeGroup],
                    groups: list[SatelliteGroup], endpoints: tuple[str, ...]) -> None:
    """A dispatch policy needs the server's group to have a [[compute]] model, and every
    satellite of that group to be an endpoint (requests are routed to them)."""
    modelled = {c.group for c in compute}
    for i, w in enumerate(workloads):
        if w.kind != "inference" or w.p("dispatch") == "none":
            continue
        g = next(g for g in groups if w.server in group_node_names(g))
        if g.name not in modelled:
            raise ScenarioError(path, f"workloads[{i}].dispatch", f"a [[compute]] section for group {g.name!r} "
                                f"(the server {w.server}'s), which dispatch = {w.p('dispatch')!r} spreads requests "
                                f"over; found none (or set dispatch = 'none')")
        missing = [n for n in group_node_names(g) if n not in endpoints]
        if missing:
            raise ScenarioError(path, f"workloads[{i}].dispatch", f"every satellite of group {g.name!r} among the "
                                f"endpoints (dispatch routes requests to each); {missing[0]!r} is not one "
                                f"({len(missing)} missing): add the group to [endpoints].nodes")


# Largest number of inference requests drawn per client over a run (their table is in memory).
MAX_REQUESTS_PER_CLIENT = 10_000_000

# Kind -> key -> (kind of TOML value, default, check). Defaults: shared domain facts §4
# (Azure LLM conversation trace 2023, Sentinel-2 tiles, 8B-parameter model in bf16).
WORKLOAD_PARAMS: dict[str, dict[str, tuple[str, Any, Callable[[Any], str | None] | None]]] = {
    "inference": {
        "rate_per_s": ("a number", 5.5, _upto(_positive, 100_000)),           # Poisson arrivals per client (Azure conv: 5.53 req/s)
        "prompt_tokens": ("a number", 1020.0, _upto(_positive, 1e7)),         # median prompt (Azure conv p50)
        "prompt_sigma": ("a number", 0.77, _upto(_nonneg, 10)),               # lognormal spread: p90/p50 = 2734/1020
        "output_tokens": ("a number", 129.0, _upto(_positive, 1e7)),          # median output (Azure conv p50)
        "output_sigma": ("a number", 0.93, _upto(_nonneg, 10)),               # p90/p50 = 424/129
        "max_tokens": ("an integer", 8192, _upto(_positive, 10_000_000)),     # cap on drawn prompt/output tokens
        "request_bytes_per_token": ("a number", 4.0, _upto(_positive, 1e6)),  # UTF-8 English text
        "request_overhead_bytes": ("an integer", 1000, _upto(_count, 1_000_000_000)),  # JSON/HTTP headers
        "image_bytes": ("an integer", 0, _upto(_count, 10_000_000_000)),      # > 0: requests carry an image of this size instead
        "response_bytes_per_token": ("a number", 250.0, _upto(_positive, 1e6)),  # one SSE chunk per token
        "service_s": ("a number", 0.5, _upto(_nonneg, 864_000)),              # queueing + prefill before the first token
        "tokens_per_s": ("a number", 100.0, _upto(_positive, 1e9)),           # decode speed of the server
        "window_s": ("a number", 10.0, _upto(_positive, 864_000)),            # percentile windows in the summary
        # With a [[compute]] model for the server's group: the cluster's dispatch policy ("none":
        # every request to `server`; else an entry node relays each request to the satellite of
        # the server's group the policy picks, netemu.plan.dispatch) and each server's queue
        # bound in requests (a full queue refuses). service_s and tokens_per_s then give way to
        # the compute model's prefill and decode rates.
        "dispatch": ("a string", "none", lambda v: None if v in ("none", *DISPATCH_POLICIES)
                     else "one of none, " + ", ".join(DISPATCH_POLICIES)),
        "queue_limit": ("an integer", 1024, _upto(_count, 10_000_000)),
    },
    "upload": {
        "file_mb": ("a number", 600.0, _upto(_positive, 1e8)),                # one Sentinel-2 L1C tile
        "files": ("an integer", 0, _upto(_count, 1_000_000)),                 # per client; 0 = as many as fit before stop_s
        "interval_s": ("a number", 0.0, _upto(_nonneg, 864_000)),             # 0 = back to back, else one file every interval_s
        "rate_mbps": ("a number", 0.0, _upto(_nonneg, 1e8)),                  # UDP only: the sender's pacing rate
    },
    "checkpoint": {
        "size_gb": ("a number", 16.0, _upto(_positive, 1e5)),                 # 8B parameters in bf16
        "direction": ("a string", "up", lambda v: None if v in ("up", "down") else "'up' (ground to orbit) or 'down'"),
        "count": ("an integer", 1, _upto(_positive, 1_000_000)),              # transfers per client, back to back
        "interval_s": ("a number", 0.0, _upto(_nonneg, 864_000)),
        "rate_mbps": ("a number", 0.0, _upto(_nonneg, 1e8)),                  # UDP only: the sender's pacing rate
    },
    "allreduce": {
        "gradient_mb": ("a number", 16000.0, _upto(_positive, 1e8)),          # 8B parameters, bf16 gradients
        "steps": ("an integer", 10, _upto(_positive, 1_000_000)),
        "compute_s": ("a number", 0.0, _upto(_nonneg, 864_000)),              # compute time between steps
    },
}


_KNOWN_KEYS.update(k for params in WORKLOAD_PARAMS.values() for k in params)


def _workloads(top: _Table, groups: list[SatelliteGroup], stations: list[GroundStation],
               node_names: dict[str, str], endpoints: tuple[str, ...], duration_s: float) -> list[Workload]:
    top.seen.add("workloads")
    raw = top.data.get("workloads", [])
    if not isinstance(raw, list):
        raise top.error("workloads", "expected an array of tables ([[workloads]])")
    by_group = {g.name: group_node_names(g) for g in groups}
    compute = [n for g in groups if g.compute for n in by_group[g.name]]
    ground = [st.name for st in stations]
    eps = set(endpoints)
    out: list[Workload] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        t = _Table(top.path, f"workloads[{i}]", item)
        kind = t.get("kind", "a string", check=lambda v: None if v in WORKLOAD_KINDS else "one of " + ", ".join(WORKLOAD_KINDS))
        name = t.get("name", "a string", f"{kind}-{i}", check=lambda v: None if re.match(r"^[A-Za-z0-9_.-]{1,40}$", v)
                     else "1-40 letters, digits, '-', '_' or '.'")
        if name in names:
            raise t.error("name", f"a unique workload name; {name!r} is used twice")
        names.add(name)

        def nodes(key: str, default: list[str]) -> list[str]:
            if not t.has(key):
                return list(default)
            v = t.get(key, "a list") if isinstance(t.data[key], list) else [t.get(key, "a string")]
            got: list[str] = []
            for x in v:
                if isinstance(x, str) and x in by_group:
                    got.extend(by_group[x])
                elif isinstance(x, str) and x in node_names:
                    got.append(x)
                else:
                    known = ", ".join(list(node_names)[:6]) + (", …" if len(node_names) > 6 else "")
                    raise t.error(key, f"expected node or group names defined in this scenario (e.g. {known}), "
                                       f"found {_show(x)}" + _did_you_mean(x, [*by_group, *node_names]))
            return got

        if kind == "allreduce":
            clients = nodes("ranks", compute)
            server = None
            if len(clients) < 2 or len(set(clients)) != len(clients):
                raise t.error("ranks", f"at least two distinct nodes (default: every compute satellite), found {clients!r}")
            node_keys = [("ranks", n) for n in clients]
        else:
            clients = nodes("clients", ground)
            servers = nodes("server", compute[:1])
            if len(servers) != 1:
                raise t.error("server", f"exactly one node (default: the first compute satellite), found {servers!r}")
            server = servers[0]
            if not clients:
                raise t.error("clients", "at least one client node (default: every ground station)")
            if server in clients:
                raise t.error("server", f"a node that is not also a client, found {server!r}")
            node_keys = [("clients", n) for n in clients] + [("server", server)]
        for key, n in node_keys:
            if n not in eps:
                raise t.error(key, f"endpoints only (routes exist toward endpoints): {n!r} is not one; "
                                   "add it to [endpoints].nodes")
        start_s = t.get("start_s", "a number", None, check=_range(0, duration_s))
        stop_s = t.get("stop_s", "a number", None, check=_range(0, duration_s))
        if start_s is not None and stop_s is not None and stop_s <= start_s:
            raise t.error("stop_s", f"a time after start_s = {start_s:g}, found {stop_s:g}")
        seed = t.get("seed", "an integer", i + 1, check=_count)
        udp_ok = kind in ("upload", "checkpoint")
        transport = t.get("transport", "a string", "tcp", check=lambda v: None if v == "tcp" or (v == "udp" and udp_ok)
                          else "'tcp'" + (" or 'udp'" if udp_ok else " (UDP is implemented for upload and checkpoint)"))
        params = []
        for key, (vkind, default, check) in WORKLOAD_PARAMS[kind].items():
            params.append((key, t.get(key, vkind, default, check=check)))
        if kind == "inference":
            span_s = (duration_s if stop_s is None else stop_s) - (start_s or 0.0)
            if dict(params)["rate_per_s"] * span_s > MAX_REQUESTS_PER_CLIENT:
                raise t.error("rate_per_s", f"at most {MAX_REQUESTS_PER_CLIENT:,} requests per client over the "
                                            f"workload's {span_s:g} s, found rate_per_s = {dict(params)['rate_per_s']:g} "
                                            "(lower the rate or the window)")
        if transport == "tcp" and dict(params).get("rate_mbps", 0) > 0:
            raise t.error("rate_mbps", "no sending rate for transport = 'tcp' (TCP finds its own); set "
                                       "transport = 'udp' to pace a transfer")
        if transport == "udp" and not dict(params)["rate_mbps"] > 0:
            raise t.error("rate_mbps", "a sending rate > 0 (Mbit/s, emulated) for transport = 'udp', which has no "
                                       "congestion control")
        t.done()
        out.append(Workload(name=name, kind=kind, clients=tuple(clients), server=server, start_s=start_s,
                            stop_s=stop_s, seed=seed, transport=transport, params=tuple(params)))
    return out


# --------------------------------------------------------------------------- apps


def _apps(top: _Table, groups: list[SatelliteGroup], node_names: dict[str, str], endpoints: tuple[str, ...],
          duration_s: float) -> list[App]:
    """`[[apps]]`: the user's programs (netemu.plan.apps): name, node or group, command (a list
    of strings, or a string split as a shell would split it, without ever running one),
    start_s, stop_s."""
    top.seen.add("apps")
    raw = top.data.get("apps", [])
    if not isinstance(raw, list):
        raise top.error("apps", "expected an array of tables ([[apps]])")
    by_group = {g.name: group_node_names(g) for g in groups}
    eps = set(endpoints)
    out: list[App] = []
    for i, item in enumerate(raw):
        t = _Table(top.path, f"apps[{i}]", item)
        name = t.get("name", "a string", f"app-{i}",
                     check=lambda v: None if APP_NAME_RE.match(v) else "1-40 letters, digits, '-', '_' or '.'")
        if any(a.name == name for a in out):
            raise t.error("name", f"expected a unique app name; {name!r} is used twice")
        if t.has("node") == t.has("group"):
            raise t.error("node", "expected exactly one of node (a node name) or group (a satellite group: every node of it)")
        group = None
        if t.has("node"):
            node = t.get("node", "a string")
            if node not in node_names:
                raise t.error("node", f"expected a node defined in this scenario, found {node!r}"
                                      + _did_you_mean(node, list(node_names)))
            nodes = (node,)
        else:
            group = t.get("group", "a string")
            if group not in by_group:
                raise t.error("group", f"expected a satellite group of this scenario ({', '.join(by_group)}), found {group!r}"
                                       + _did_you_mean(group, list(by_group)))
            nodes = tuple(by_group[group])
        cmd = t.get("command", "a list") if isinstance(t.data.get("command"), list) else t.get("command", "a string")
        if isinstance(cmd, str):
            try:
                cmd = shlex.split(cmd)
            except ValueError as e:
                raise t.error("command", f"expected a command line (split as a shell would, never run by one): {e}") from None
        elif not all(isinstance(a, str) for a in cmd):
            raise t.error("command", f"expected a list of strings (the program and its arguments), found {_show(cmd)}")
        if not cmd or not cmd[0]:
            raise t.error("command", "expected a program to run; the command is empty")
        for arg in cmd:
            try:
                marks = placeholders(arg)
            except PlaceholderError as e:
                raise t.error("command", str(e)) from None
            for kind, target in marks:
                if kind == "addr" and target not in node_names:
                    raise t.error("command", f"expected {{addr:NAME}} with a node of this scenario, found {target!r}"
                                             + _did_you_mean(target, list(node_names)))
                if kind == "addr" and target not in eps:
                    raise t.error("command", f"expected {{addr:NAME}} of an endpoint (routes lead to endpoints only), found "
                                             f"{{addr:{target}}}; add {target} to [endpoints].nodes")
        start_s = t.get("start_s", "a number", 0.0, check=_range(0, duration_s))
        stop_s = t.get("stop_s", "a number", None, check=_range(0, duration_s))
        if stop_s is not None and stop_s <= start_s:
            raise t.error("stop_s", f"expected a time after start_s = {start_s:g}, found {stop_s:g}")
        t.done()
        out.append(App(name=name, nodes=nodes, command=tuple(cmd), start_s=start_s, stop_s=stop_s, group=group))
    return out


# --------------------------------------------------------------------------- faults


def _faults(top: _Table, groups: list[SatelliteGroup], stations: list[GroundStation],
            node_names: dict[str, str], duration_s: float) -> tuple[list[Fault], list[GroupFaults]]:
    """`[[faults]]`: deterministic node, link, reboot and station faults (see `Fault`), and
    stochastic or correlated faults over satellite groups (see `GroupFaults`)."""
    top.seen.add("faults")
    raw = top.data.get("faults", [])
    if not isinstance(raw, list):
        raise top.error("faults", "expected an array of tables ([[faults]])")
    station_names = [st.name for st in stations]
    sat_names = [n for g in groups for n in group_node_names(g)]
    out: list[Fault] = []
    group_out: list[GroupFaults] = []
    for i, item in enumerate(raw):
        t = _Table(top.path, f"faults[{i}]", item)
        kind = t.get("kind", "a string", check=lambda v: None if v in FAULT_KINDS else "one of " + ", ".join(FAULT_KINDS))
        if kind in GROUP_FAULT_KINDS:
            group_out.append(_group_faults(t, kind, i, groups, duration_s))
            continue

        def node(key: str, allowed: list[str], what: str) -> str:
            v = t.get(key, "a string")
            if v not in allowed:
                raise t.error(key, f"expected {what} defined in this scenario, found {_show(v)}"
                                   + _did_you_mean(v, allowed))
            return v

        t_s = t.get("t_s", "a number", check=lambda v: None if 0 <= v < duration_s else
                    f"a time in [0, {duration_s:g}) s (inside the scenario's duration_s)")
        a = b = n = terminal = None
        if kind == "reboot":
            n = node("node", sat_names, "a satellite")
            duration = t.get("reboot_s", "a number", check=lambda v: None if v > 0 else "a positive number of seconds")
        else:
            duration = t.get("duration_s", "a number", None,
                             check=lambda v: None if v > 0 else "a positive number of seconds (omit it: permanent)")
            if kind == "node":
                n = node("node", list(node_names), "a node (satellite or ground station)")
            elif kind == "station":
                n = node("node", station_names, "a ground station")
            elif t.has("a") or t.has("b") or not t.has("node"):
                a = node("a", list(node_names), "a node")
                b = node("b", list(node_names), "a node")
                if a == b:
                    raise t.error("b", f"a node other than a = {a!r}")
                if t.has("node") or t.has("terminal"):
                    raise t.error("node" if t.has("node") else "terminal",
                                  "either a and b (one link) or node and terminal (a node's lasers or ground links), not both")
                a, b = sorted((a, b), key=list(node_names).index)
            else:
                n = node("node", list(node_names), "a node")
                terminal = t.get("terminal", "a string", check=lambda v: None if v in TERMINAL_KINDS else
                                 "'isl' (the node's lasers) or 'gsl' (its ground links)")
        t.done()
        f = Fault(kind=kind, t_s=t_s, duration_s=duration, node=n, a=a, b=b, terminal=terminal)
        target = _fault_target(f)
        for j, g in enumerate(out):
            if _fault_target(g) == target and f.t_s < g.end_s and g.t_s < f.end_s:
                end = "the end" if g.duration_s is None else f"{g.end_s:g} s"
                raise t.error("t_s", f"a fault that does not overlap faults[{j}] on the same {f.label()} "
                                     f"(down from {g.t_s:g} s to {end}), found t_s = {f.t_s:g}")
        out.append(f)
    return out, group_out


def _region(t: _Table, key: str, v: Any, with_multiplier: bool) -> Region:
    what = ("a table {lat_deg = [lo, hi], lon_deg = [lo, hi]" + (", multiplier = x}" if with_multiplier else "}")
            + " with -90 ≤ lo < hi ≤ 90 (lat) and -180 ≤ lo < hi ≤ 180 (lon)")
    if not isinstance(v, dict) or set(v) - {"lat_deg", "lon_deg", "multiplier"} or \
            (not with_multiplier and "multiplier" in v):
        raise t.error(key, f"expected {what}, found {_show(v)}")

    def box(k: str, lim: float) -> tuple[float, float]:
        x = v.get(k)
        ok = (isinstance(x, list) and len(x) == 2
              and all(isinstance(y, (int, float)) and not isinstance(y, bool) for y in x)
              and -lim <= x[0] < x[1] <= lim)
        if not ok:
            raise t.error(key, f"expected {what}, found {k} = {_show(x) if x is not None else 'nothing'}")
        return float(x[0]), float(x[1])

    m = v.get("multiplier", 1.0)
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1e6:
        raise t.error(key, f"expected a multiplier in [0, 1e6], found {_show(m)}")
    return Region(lat_deg=box("lat_deg", 90), lon_deg=box("lon_deg", 180), multiplier=float(m))


def _group_faults(t: _Table, kind: str, i: int, groups: list[SatelliteGroup], duration_s: float) -> GroupFaults:
    gnames = [g.name for g in groups]
    group = t.get("group", "a string")
    if group not in gnames:
        raise t.error("group", f"expected a satellite group defined in this scenario, found {_show(group)}"
                               + _did_you_mean(group, gnames))
    seed = t.get("seed", "an integer", i + 1, check=_count)
    pos = lambda v: None if v > 0 else "a positive number"  # noqa: E731
    if kind == "random":
        dist = t.get("distribution", "a string", "exponential",
                     check=lambda v: None if v in FAILURE_DISTRIBUTIONS else "one of " + ", ".join(FAILURE_DISTRIBUTIONS))
        if t.has("shape") and dist != "weibull":
            raise t.error("shape", "a shape only with distribution = 'weibull'")
        f = GroupFaults(kind=kind, group=group, seed=seed,
                        mtbf_s=t.get("mtbf_s", "a number", check=pos),
                        mttr_s=t.get("mttr_s", "a number", check=pos),
                        distribution=dist,
                        shape=t.get("shape", "a number", 1.0, check=_range(0.1, 20)),
                        terminal=t.get("terminal", "a string", None, check=lambda v: None if v in TERMINAL_KINDS else
                                       "'isl' (the satellites' lasers) or 'gsl' (their ground links)"))
    elif kind == "radiation":
        raw = t.get("regions", "a list", [])
        f = GroupFaults(kind=kind, group=group, seed=seed,
                        rate_per_day=t.get("rate_per_day", "a number", check=_range(0, 1e5, lo_open=True)),
                        reboot_s=t.get("reboot_s", "a number", check=pos),
                        regions=tuple(_region(t, "regions", v, True) for v in raw))
    else:
        if t.has("fraction") == t.has("region"):
            raise t.error("fraction", "exactly one of fraction (of the group, drawn with the seed) or region "
                                      "(every satellite of the group inside a lat/lon box)")
        t.seen.add("region")
        f = GroupFaults(kind=kind, group=group, seed=seed,
                        t_s=t.get("t_s", "a number", check=lambda v: None if 0 <= v < duration_s else
                                  f"a time in [0, {duration_s:g}) s (inside the scenario's duration_s)"),
                        fraction=t.get("fraction", "a number", 0.0, check=_range(0, 1, lo_open=True)),
                        region=_region(t, "region", t.data["region"], False) if t.has("region") else None,
                        duration_s=t.get("duration_s", "a number", None,
                                         check=lambda v: None if v > 0 else "a positive number of seconds (omit it: permanent)"))
    t.done()
    return f


def _fault_target(f: Fault) -> tuple:
    """What a fault takes down, for the overlap check: a node (node, station and reboot faults
    alike), one link, or one node's terminal kind."""
    if f.kind == "link":
        return ("link", f.a, f.b) if f.a else ("terminal", f.node, f.terminal)
    return ("node", f.node)


# --------------------------------------------------------------------------- weather


def _rate_steps(t: _Table) -> tuple[tuple[float, float], ...]:
    raw = t.get("rate_steps", "a list", [])
    out = []
    for v in raw:
        ok = (isinstance(v, list) and len(v) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))
        if not ok or not -100 <= v[0] <= 100 or not v[1] > 0:
            raise t.error("rate_steps", "a list of [min_margin_db, rate_mbps] pairs (margin in [-100, 100] dB, "
                                        f"rate > 0), found {_show(v)}")
        out.append((float(v[0]), float(v[1])))
    margins = [m for m, _ in out]
    if margins != sorted(set(margins)):
        raise t.error("rate_steps", f"steps in increasing order of min_margin_db, each once, found {margins}")
    return tuple(out)


def _station_tables(top: _Table, section: str):
    """The tables of the array `[[section]]` (one per ground station), in order."""
    top.seen.add(section)
    raw = top.data.get(section, [])
    if not isinstance(raw, list):
        raise top.error(section, f"expected an array of tables ([[{section}]])")
    for i, item in enumerate(raw):
        yield _Table(top.path, f"{section}[{i}]", item)


def _one_station(t: _Table, section: str, stations: list[GroundStation], taken: list) -> str:
    """Table `t`'s `station`: a ground station of the scenario that no earlier table in `taken` has."""
    names = [st.name for st in stations]
    st = t.get("station", "a string")
    if st not in names:
        raise t.error("station", f"expected a ground station defined in this scenario, found {_show(st)}"
                                 + _did_you_mean(st, names))
    if any(x.station == st for x in taken):
        raise t.error("station", f"one [[{section}]] per station; {st!r} has one already")
    return st


def _rain(top: _Table, base: Path, stations: list[GroundStation], gsl: GSLModel | None) -> list[Rain]:
    """`[[rain]]`: one rain series (CSV `file`) or seeded model (`seed`) per ground station."""
    out: list[Rain] = []
    for t in _station_tables(top, "rain"):
        if gsl is None or gsl.frequency_ghz is None or not gsl.rate_steps:
            raise t.error("station", "rain needs the ground links' radio: [gsl] frequency_ghz, "
                                     "clear_sky_margin_db and rate_steps")
        st = _one_station(t, "rain", stations, out)
        if t.has("file") == t.has("seed"):
            raise t.error("file", "exactly one of file (a CSV series t_s,rain_mm_per_h) or seed (the stochastic model)")
        if t.has("file"):
            ts, rr = _read_rain_csv(t, base)
            r = Rain(station=st, t_s=ts, rain_mm_per_h=rr)
        else:
            r = Rain(station=st, seed=t.get("seed", "an integer", check=_count),
                     mean_dry_s=t.get("mean_dry_s", "a number", 3600.0, check=_range(0, 1e7, lo_open=True)),
                     mean_wet_s=t.get("mean_wet_s", "a number", 600.0, check=_range(0, 1e7, lo_open=True)),
                     median_mm_per_h=t.get("median_mm_per_h", "a number", 10.0, check=_range(0, 500, lo_open=True)),
                     sigma=t.get("sigma", "a number", 1.0, check=_range(0, 5)))
        t.done()
        out.append(r)
    return out


def _clouds(top: _Table, base: Path, stations: list[GroundStation], gsl: GSLModel | None) -> list[Clouds]:
    """`[[clouds]]`: one cloud-blockage series (CSV `file`) per ground station, optical links only."""
    out: list[Clouds] = []
    for t in _station_tables(top, "clouds"):
        if gsl is None or gsl.frequency_ghz is not None:
            raise t.error("station", "clouds block optical ground links: a [gsl] without frequency_ghz "
                                     "(radio links take [[rain]])")
        st = _one_station(t, "clouds", stations, out)
        ts, vals = _read_rain_csv(t, base, "cloud_blocked", 1.0)
        if any(v not in (0.0, 1.0) for v in vals):
            raise t.error("file", f"cloud_blocked values 0 (clear) or 1 (blocked), found {sorted(set(vals))}")
        t.done()
        out.append(Clouds(station=st, t_s=ts, blocked=tuple(v == 1.0 for v in vals)))
    return out


def _read_rain_csv(t: _Table, base: Path, column: str = "rain_mm_per_h",
                   hi: float = 1000.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    file_ = t.get("file", "a string")
    p = resolve_path(base / file_)
    raw = read_input(p, MAX_TEXT_BYTES, lambda problem: t.error(
        "file", f"expected a readable CSV file t_s,{column} (a regular file of at most "
                f"{MAX_TEXT_BYTES >> 20} MiB), {problem}"))
    try:
        rows = [r for r in csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
                if r and not r[0].strip().startswith("#")]
    except (UnicodeDecodeError, csv.Error) as e:
        raise t.error("file", f"expected a readable CSV file t_s,{column}: {e}") from None
    if rows and [c.strip() for c in rows[0]] == ["t_s", column]:
        rows = rows[1:]
    ts: list[float] = []
    rr: list[float] = []
    for n, r in enumerate(rows, start=1):
        try:
            x, y = (float(c) for c in r)
        except ValueError:
            x = y = math.nan
        if not (math.isfinite(x) and math.isfinite(y) and x >= 0 and 0 <= y <= hi) or (ts and x <= ts[-1]):
            raise t.error("file", f"{p.name} row {n}: expected t_s (≥ 0, increasing), {column} (0-{hi:g}), "
                                  f"found {r}")
        ts.append(x)
        rr.append(y)
    if not ts:
        raise t.error("file", f"at least one row t_s,{column} in {p.name}")
    return tuple(ts), tuple(rr)
