"""A run directory (or a plan directory) as pandas tables, for notebooks and scripts.

    run = netemu.load_run("out/run")
    run                      # a short summary; in Jupyter an HTML table of what the run holds
    run.probes               # DataFrame: t_s, src, dst, rtt_ms, oracle_rtt_ms, ...
    run.jobs, run.links, run.link_counters, run.packets, run.apply, run.events, run.paths, ...
    run.meta, run.fidelity, run.summary      # run.json, fidelity.json, summary.json as dicts

Each table is read from its file on first use and kept; a file the run did not write gives
None (`run.available` lists those present). Nothing here needs root or the emulator.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import PlanError

__all__ = ["Run", "load_run", "TABLES", "DOCUMENTS"]

TABLES = {
    "probes": "probes.parquet",              # RTT probes: measured and oracle RTT per echo
    "links": "links.parquet",                # the plan's link table (every link at every step)
    "link_counters": "link_counters.csv",    # per-link packet and byte counters of the run
    "link_load": "link_load.parquet",        # per link direction every 100 ms: rate, utilisation, queue, drops
    "jobs": "jobs.csv",                      # workload jobs: start, end, completion, status
    "throughput": "throughput.csv",          # workloads' throughput over time
    "packets": "packets.parquet",            # replayed packets (netemu replay)
    "messages": "messages.parquet",          # replayed messages (closed-loop replay)
    "flows": "flows.parquet",                # replayed flows
    "apply": "apply.csv",                    # route and link changes as applied, with their lag
    "events": "events.csv",                  # the plan's events: link up/down, handovers, path changes
    "paths": "paths.parquet",                # the plan's endpoint paths per step (delay, hops)
    "routes": "routes.parquet",              # the plan's routes when they change
    "nodes": "nodes.csv",                    # node names, kinds, groups
    "addresses": "addresses.csv",            # node addresses of the run
    "positions": "positions.parquet",        # node positions at the report's instants
    "view_positions": "view_positions.parquet",  # node positions at the time view's steps
}
DOCUMENTS = {"meta": "run.json", "fidelity": "fidelity.json", "summary": "summary.json"}


class Run:
    """The tables of one run (or plan) directory, read lazily. See the module's docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    def _load(self, key: str, file: str) -> Any:
        if key not in self._cache:
            p = self.path / file
            if not p.exists():
                self._cache[key] = None
            elif file.endswith(".json"):
                try:
                    self._cache[key] = json.loads(p.read_text())
                except ValueError as e:
                    raise PlanError(f"{p}: expected JSON ({e})") from None
            elif file.endswith(".parquet"):
                self._cache[key] = pd.read_parquet(p)
            else:
                self._cache[key] = pd.read_csv(p, dtype={"norad_id": "Int64"} if key == "nodes" else None)
        return self._cache[key]

    def __getattr__(self, name: str) -> Any:
        if name in TABLES:
            return self._load(name, TABLES[name])
        if name in DOCUMENTS:
            return self._load(name, DOCUMENTS[name])
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}; tables: "
                             f"{', '.join(TABLES)}; documents: {', '.join(DOCUMENTS)}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(TABLES) | set(DOCUMENTS))

    @property
    def available(self) -> list[str]:
        """Names of the tables and documents whose files are present."""
        return [k for k, f in {**TABLES, **DOCUMENTS}.items() if (self.path / f).exists()]

    @property
    def kind(self) -> str:
        return "run" if (self.path / "run.json").exists() else "plan"

    def _facts(self) -> list[tuple[str, str]]:
        meta = self.meta or {}
        summ = self.summary or {}
        facts = [("scenario", str(meta.get("scenario") or summ.get("scenario") or "?"))]
        w = meta.get("window")
        if w:
            facts.append(("window", f"{w.get('t0_s', 0):g}–{w.get('t_end_s', 0):g} s"))
        elif "duration_s" in summ:
            facts.append(("window", f"0–{summ['duration_s']:g} s, steps of {summ.get('step_s', 0):g} s"))
        fid = self.fidelity
        if isinstance(fid, dict) and fid.get("verdict"):
            o = fid.get("overall", {})
            facts.append(("fidelity", f"{fid['verdict']} (p99 |err| {o.get('abs_error_p99_ms', '?')} ms)"))
        return facts

    def __repr__(self) -> str:
        facts = ", ".join(f"{k} {v}" for k, v in self._facts())
        return f"<netemu {self.kind} {self.path}: {facts}; tables: {', '.join(self.available)}>"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self._facts())
        tables = ", ".join(f"<code>{html.escape(t)}</code>" for t in self.available)
        return (f"<div><b>netemu {self.kind}</b> <code>{html.escape(str(self.path))}</code><table>{rows}"
                f"<tr><th style='text-align:left'>tables</th><td style='text-align:left'>{tables}</td></tr>"
                "</table></div>")


def load_run(path: str | Path) -> Run:
    """The run directory `path` (of `netemu run` or `replay`), or a plan directory (`netemu plan
    -o`), as a `Run` whose tables are pandas DataFrames read on first use. Raises `PlanError` when
    `path` is neither."""
    p = Path(path)
    if not p.is_dir():
        raise PlanError(f"{p}: expected a run or plan directory; it {'is a file' if p.exists() else 'does not exist'}")
    if not (p / "run.json").exists() and not all((p / f).exists() for f in ("summary.json", "nodes.csv")):
        raise PlanError(f"{p}: expected a run directory (run.json) or a plan directory (summary.json, nodes.csv); "
                        "found neither")
    return Run(p)
