"""Helpers for users' own topology regression tests (pytest or plain asserts).

    # tests/test_my_constellation.py
    from netemu.testing import assert_plan_matches_golden

    def test_my_constellation_topology():
        assert_plan_matches_golden("topologies/mine.toml", "tests/golden/mine")

Write (or, after a deliberate change, rewrite) the golden with
`netemu plan topologies/mine.toml --save-golden tests/golden/mine` and commit it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["assert_plan_matches_golden"]


def assert_plan_matches_golden(scenario: str | Path, golden_dir: str | Path, *, tolerance_ms: float = 0.001,
                               link_changes_per_step: int = 0, workers: int | None = None):
    """Plan `scenario` and compare it with the golden summary in `golden_dir`; raise
    AssertionError listing every difference (links per step, reachability, path delays beyond
    `tolerance_ms`). Returns the `GoldenCheck` when it passes."""
    from .plan.golden import check_plan
    from .plan.planner import make_plan
    from .plan.scenario import load_scenario
    plan = make_plan(load_scenario(scenario), workers=workers)
    res = check_plan(plan, golden_dir, tolerance_ms=tolerance_ms, link_changes_per_step=link_changes_per_step)
    if not res.ok:
        raise AssertionError(f"{scenario} does not match {golden_dir}:\n{res.report()}")
    return res
