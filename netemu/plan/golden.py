"""Topology regression: a compact golden summary of a plan, and the check of a new plan against
it (pure; no root).

A golden directory holds `golden.json` (what was planned: scenario, time grid, endpoints, the
sampling), `links.csv.gz` (every link's up-intervals: `a, b, kind, first_step, last_step`, so the
link set of any step is exact) and `paths.csv.gz` (every endpoint pair's path delay and hop count
at sampled steps; an empty delay means unreachable). `check_plan` lists every difference beyond
the tolerances: the time grid or endpoints changed; at some step more links appeared or vanished
than allowed; a pair's reachability changed; a path delay moved by more than `tolerance_ms`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PlanError

__all__ = ["GoldenCheck", "save_golden", "check_plan", "golden_summary", "GOLDEN_FILES", "MAX_PATH_ROWS"]

GOLDEN_FILES = ("golden.json", "links.csv.gz", "paths.csv.gz")
MAX_PATH_ROWS = 60_000          # path samples kept: every k-th step so pairs × samples stays below
FORMAT = 1
_SHOW = 8                       # differences listed per kind before "… and N more"


def golden_summary(plan, max_path_rows: int = MAX_PATH_ROWS,
                   every: int | None = None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(meta, link intervals, path samples) of `plan`: see the module docstring. Paths are
    sampled every `every` steps (default: as few as keep pairs × samples ≤ max_path_rows)."""
    sched, routes = plan.schedule, plan.routes
    L = sched.links
    L = L[L["up"]]
    key = L["a"].astype(str) + "|" + L["b"].astype(str) + "|" + L["kind"].astype(str)
    df = pd.DataFrame({"key": key.to_numpy(), "step": L["step"].to_numpy(np.int64)}).sort_values(["key", "step"])
    new_run = (df["key"] != df["key"].shift()) | (df["step"] != df["step"].shift() + 1)
    df["run"] = new_run.cumsum()
    iv = df.groupby("run").agg(key=("key", "first"), first_step=("step", "min"), last_step=("step", "max"))
    parts = iv["key"].str.split("|", expand=True)
    links = pd.DataFrame({"a": parts[0], "b": parts[1], "kind": parts[2], "first_step": iv["first_step"],
                          "last_step": iv["last_step"]}).sort_values(["a", "b", "first_step"], ignore_index=True)
    eps = list(routes.endpoints)
    n_pairs = len(eps) * (len(eps) - 1) // 2
    n_steps = len(sched.t_s)
    if every is None:
        every = max(1, int(np.ceil(n_pairs * n_steps / max_path_rows)))
    steps = np.arange(0, n_steps, every)
    pairs = pd.DataFrame([(a, b) for i, a in enumerate(eps) for b in eps[i + 1:]], columns=["src", "dst"])
    grid = pairs.merge(pd.DataFrame({"step": steps}), how="cross")
    P = routes.paths
    P = P[P["step"].isin(steps)][["step", "src", "dst", "delay_ms", "hops"]]
    # pairs may be stored in either order
    P = pd.concat([P, P.rename(columns={"src": "dst", "dst": "src"})])
    paths = grid.merge(P, on=["step", "src", "dst"], how="left")[["step", "src", "dst", "delay_ms", "hops"]]
    paths = paths.sort_values(["step", "src", "dst"], ignore_index=True)
    paths["delay_ms"] = paths["delay_ms"].round(6)
    paths["hops"] = paths["hops"].astype("Int64")
    sc = plan.scenario
    meta = {"format": FORMAT, "scenario": sc.name, "steps": int(n_steps), "step_s": float(sc.step_s),
            "duration_s": float(sc.duration_s), "nodes": sched.node_names, "endpoints": eps,
            "path_sample_every_steps": every, "links_intervals": int(len(links)),
            "netemu_version": __import__("netemu").__version__}
    return meta, links, paths


def save_golden(plan, out_dir: str | Path, max_path_rows: int = MAX_PATH_ROWS) -> dict:
    """Write `plan`'s golden summary into `out_dir` (created); returns golden.json's content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta, links, paths = golden_summary(plan, max_path_rows)
    # mtime=0: the same plan gives the same bytes, so goldens diff cleanly in version control
    gz = {"method": "gzip", "mtime": 0}
    links.to_csv(out / "links.csv.gz", index=False, compression=gz)
    paths.to_csv(out / "paths.csv.gz", index=False, compression=gz, float_format="%.6f")
    (out / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


@dataclass
class GoldenCheck:
    """The outcome of `check_plan`: `ok`, the differences (one line each) and what was compared."""

    differences: list[str] = field(default_factory=list)
    compared: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def report(self) -> str:
        c = self.compared
        head = (f"compared {c.get('steps', 0):,} steps, {c.get('link_intervals', 0):,} link intervals, "
                f"{c.get('path_samples', 0):,} path samples (every {c.get('every', '?')} steps)")
        if self.ok:
            return f"golden check passed: {head}"
        return "\n".join([f"golden check FAILED: {len(self.differences)} difference(s); {head}"] +
                         [f"  - {d}" for d in self.differences])


def _read(golden_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    missing = [f for f in GOLDEN_FILES if not (golden_dir / f).exists()]
    if missing:
        raise PlanError(f"{golden_dir}: not a golden directory; expected {', '.join(GOLDEN_FILES)}, "
                        f"missing {', '.join(missing)} (write one with `netemu plan SCENARIO --save-golden DIR`)")
    try:
        meta = json.loads((golden_dir / "golden.json").read_text())
        links = pd.read_csv(golden_dir / "links.csv.gz", dtype={"a": str, "b": str, "kind": str})
        paths = pd.read_csv(golden_dir / "paths.csv.gz", dtype={"src": str, "dst": str})
    except (ValueError, OSError) as e:
        raise PlanError(f"{golden_dir}: unreadable golden summary: {e}") from None
    if meta.get("format") != FORMAT:
        raise PlanError(f"{golden_dir}/golden.json: format: expected {FORMAT}, found {meta.get('format')!r}")
    return meta, links, paths


def _more(items: list[str], total: int) -> list[str]:
    out = items[:_SHOW]
    if total > _SHOW:
        out.append(f"… and {total - _SHOW} more")
    return out


def check_plan(plan, golden_dir: str | Path, tolerance_ms: float = 0.001, link_changes_per_step: int = 0) -> GoldenCheck:
    """Compare `plan` with the golden summary in `golden_dir`. A step may differ from the golden
    by up to `link_changes_per_step` links (appeared + vanished); path delays by up to
    `tolerance_ms`; reachability not at all."""
    g_meta, g_links, g_paths = _read(Path(golden_dir))
    meta, links, paths = golden_summary(plan, every=int(g_meta["path_sample_every_steps"]))
    res = GoldenCheck()
    diffs = res.differences
    for k in ("steps", "step_s", "duration_s"):
        if g_meta.get(k) != meta[k]:
            diffs.append(f"time grid: {k} is {meta[k]!r}, golden {g_meta.get(k)!r}")
    if diffs:
        return res
    if g_meta["endpoints"] != meta["endpoints"]:
        gone = sorted(set(g_meta["endpoints"]) - set(meta["endpoints"]))
        new = sorted(set(meta["endpoints"]) - set(g_meta["endpoints"]))
        diffs.append(f"endpoints changed: removed {gone or 'none'}, added {new or 'none'}"
                     + ("" if gone or new else " (order)"))
    if g_meta["nodes"] != meta["nodes"]:
        gone = sorted(set(g_meta["nodes"]) - set(meta["nodes"]))
        new = sorted(set(meta["nodes"]) - set(g_meta["nodes"]))
        diffs.append(f"nodes changed: {len(gone)} removed {gone[:5]}, {len(new)} added {new[:5]}")

    # links: per step, the symmetric difference of the link sets
    steps = meta["steps"]
    g_keys = g_links["a"] + "|" + g_links["b"] + "|" + g_links["kind"]
    n_keys = links["a"] + "|" + links["b"] + "|" + links["kind"]
    g_iv = {k: list(zip(g["first_step"], g["last_step"])) for k, g in g_links.assign(key=g_keys).groupby("key")}
    n_iv = {k: list(zip(g["first_step"], g["last_step"])) for k, g in links.assign(key=n_keys).groupby("key")}
    per_step = np.zeros(steps, np.int64)
    changed: dict[str, tuple[np.ndarray, np.ndarray]] = {}     # key -> (differs, was up in the golden)
    for k in set(g_iv) | set(n_iv):
        a, b = g_iv.get(k, []), n_iv.get(k, [])
        if a == b:
            continue
        mask_a, mask_b = np.zeros(steps, bool), np.zeros(steps, bool)
        for s0, s1 in a:
            mask_a[s0:s1 + 1] = True
        for s0, s1 in b:
            mask_b[s0:s1 + 1] = True
        d = mask_a != mask_b
        per_step += d
        changed[k] = (d, mask_a)

    def example(step: int) -> str:
        for k, (d, up) in sorted(changed.items()):
            if d[step]:
                a, b, kind = k.split("|")
                return f"{a}–{b} ({kind}) {'vanished' if up[step] else 'appeared'}"
        return ""
    bad = np.flatnonzero(per_step > link_changes_per_step)
    if len(bad):
        t = plan.schedule.t_s
        lines = [f"step {s} (t = {t[s]:g} s): {per_step[s]} link(s) differ, e.g. {example(int(s))}"
                 for s in bad[:_SHOW]]
        diffs.append(f"links differ at {len(bad)} step(s) beyond {link_changes_per_step} allowed per step "
                     f"(max {per_step.max()} at step {int(per_step.argmax())})")
        diffs.extend(_more(lines, len(bad))[: _SHOW + 1])

    # paths at the golden's sampled steps
    every = int(g_meta["path_sample_every_steps"])
    m = g_paths.merge(paths, on=["step", "src", "dst"], how="outer", suffixes=("_golden", ""), indicator=True)
    g_reach, n_reach = m["delay_ms_golden"].notna(), m["delay_ms"].notna()
    lost = m[g_reach & ~n_reach]
    won = m[~g_reach & n_reach]
    for what, rows in (("became unreachable", lost), ("became reachable", won)):
        if len(rows):
            ex = [f"{r.src}→{r.dst} at step {r.step}" for r in rows.head(_SHOW).itertuples()]
            diffs.append(f"{len(rows)} pair-sample(s) {what}: " + ", ".join(_more(ex, len(rows))))
    both = m[g_reach & n_reach]
    err = (both["delay_ms"] - both["delay_ms_golden"]).abs()
    over = both[err > tolerance_ms]
    if len(over):
        e = err[err > tolerance_ms]
        worst = over.loc[e.idxmax()]
        diffs.append(f"{len(over)} path delay(s) differ by more than {tolerance_ms:g} ms (max {e.max():.4f} ms: "
                     f"{worst.src}→{worst.dst} at step {int(worst.step)}, {worst.delay_ms_golden:.4f} → "
                     f"{worst.delay_ms:.4f} ms)")
    res.compared = {"steps": steps, "link_intervals": int(len(g_links)), "path_samples": int(len(g_paths)),
                    "every": every}
    return res
