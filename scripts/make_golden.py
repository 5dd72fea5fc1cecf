#!/usr/bin/env python3
"""Rebuild the golden plan of tests/data/small.toml (tests/data/golden-small/).

Run after a deliberate change to orbits, topology or routing, check the diff, and commit it:
    .venv/bin/python scripts/make_golden.py
"""

from pathlib import Path

import netemu

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "data" / "small.toml"
OUT = ROOT / "tests" / "data" / "golden-small"


def golden_tables(plan):
    """The compact, human-diffable part of a plan that the golden test compares."""
    L = plan.schedule.links
    sub = L[L["step"] % 4 == 0]
    links = sub[["step", "a", "b", "kind", "up"]].copy()
    links["distance_km"] = sub["distance_km"].round(3)
    paths = plan.routes.paths[plan.routes.paths["step"] % 10 == 0][["step", "src", "dst", "hops"]].copy()
    paths["delay_ms"] = plan.routes.paths["delay_ms"].round(6)
    return {"links.csv": links, "paths.csv": paths, "routes.csv": plan.routes.routes[["step", "src", "dst", "path"]],
            "events.csv": plan.events}


def main() -> None:
    plan = netemu.make_plan(netemu.load_scenario(SCENARIO), workers=1)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, df in golden_tables(plan).items():
        df.to_csv(OUT / name, index=False, float_format="%.6f")
        print(f"wrote {OUT / name} ({len(df)} rows)")


if __name__ == "__main__":
    main()
