"""Topology regression: golden summaries (netemu plan --save-golden / --check) catch changed
scenarios and pass unchanged ones; every scenario in topologies/ matches its shipped golden."""

import subprocess
import sys
from pathlib import Path

import pytest

import netemu
from netemu.plan.golden import check_plan, save_golden
from netemu.testing import assert_plan_matches_golden

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TOPOLOGIES = ROOT / "topologies"
SCENARIOS = sorted(TOPOLOGIES.glob("*.toml"))


@pytest.fixture(scope="module")
def small_golden(tmp_path_factory):
    plan = netemu.make_plan(netemu.load_scenario(DATA / "small.toml"), workers=2)
    out = tmp_path_factory.mktemp("golden")
    save_golden(plan, out)
    return plan, out


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (DATA / "small.toml").read_text()
    assert old in text
    p = tmp_path / "small.toml"
    p.write_text(text.replace(old, new))
    return p


def test_unchanged_plan_passes(small_golden):
    plan, golden = small_golden
    res = check_plan(netemu.make_plan(netemu.load_scenario(DATA / "small.toml"), workers=1), golden)
    assert res.ok, res.report()
    assert res.compared["steps"] == 121 and res.compared["path_samples"] > 1000
    assert "passed" in res.report()


def test_moved_ground_station_is_caught(small_golden, tmp_path):
    _, golden = small_golden
    moved = _variant(tmp_path, "lat_deg = 18.3\nlon_deg = 109.3", "lat_deg = 19.3\nlon_deg = 109.3")   # Sanya 111 km north
    res = check_plan(netemu.make_plan(netemu.load_scenario(moved), workers=1), golden)
    assert not res.ok
    text = res.report()
    assert "path delay(s) differ" in text and "g-sanya" in text, text
    assert "links differ" in text and "g-sanya" in text


def test_changed_min_elevation_is_caught_and_link_tolerance_applies(small_golden, tmp_path):
    _, golden = small_golden
    text = (DATA / "small.toml").read_text()
    key = next(line for line in text.splitlines() if line.startswith("min_elevation_deg"))
    steeper = _variant(tmp_path, key, "min_elevation_deg = 40")
    plan = netemu.make_plan(netemu.load_scenario(steeper), workers=1)
    res = check_plan(plan, golden)
    assert not res.ok and "links differ" in res.report()
    # with enough links allowed to differ per step, only reachability and delays remain
    loose = check_plan(plan, golden, link_changes_per_step=10_000, tolerance_ms=1e9)
    assert all("links differ" not in d for d in loose.differences)


def test_cli_check_and_save_golden(small_golden, tmp_path):
    _, golden = small_golden
    run = lambda *a: subprocess.run([sys.executable, "-m", "netemu", "plan", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    r = run(DATA / "small.toml", "--check", golden)
    assert r.returncode == 0 and "golden check passed" in r.stdout, r.stdout + r.stderr
    moved = _variant(tmp_path, "lat_deg = 18.3\nlon_deg = 109.3", "lat_deg = 19.3\nlon_deg = 109.3")
    r = run(moved, "--check", golden)
    assert r.returncode == 1 and "golden check FAILED" in r.stdout and "g-sanya" in r.stdout
    r = run(moved, "--check", golden, "--tolerance-ms", "1e9", "--link-tolerance", "100000")
    assert "links differ" not in r.stdout and "path delay(s) differ" not in r.stdout   # tolerances apply
    r = run(DATA / "small.toml", "--save-golden", tmp_path / "g2")
    assert r.returncode == 0 and (tmp_path / "g2" / "golden.json").exists()
    assert (tmp_path / "g2" / "links.csv.gz").read_bytes() == (golden / "links.csv.gz").read_bytes()
    r = run(DATA / "small.toml", "--check", tmp_path / "nothing-here")
    assert r.returncode == 2 and "not a golden directory" in r.stderr
    r = run(DATA / "small.toml")
    assert r.returncode == 2 and "--check" in r.stderr


def test_pytest_helper_lists_differences(small_golden, tmp_path):
    _, golden = small_golden
    assert assert_plan_matches_golden(DATA / "small.toml", golden, workers=1).ok
    moved = _variant(tmp_path, "lat_deg = 18.3\nlon_deg = 109.3", "lat_deg = 19.3\nlon_deg = 109.3")
    with pytest.raises(AssertionError, match="g-sanya"):
        assert_plan_matches_golden(moved, golden, workers=1)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenarios_match_their_goldens(scenario):
    """Rebuild with `netemu plan topologies/X.toml --save-golden topologies/golden/X` after a
    deliberate change (and say why in the commit)."""
    assert_plan_matches_golden(scenario, TOPOLOGIES / "golden" / scenario.stem)
