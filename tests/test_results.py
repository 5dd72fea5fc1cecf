"""netemu.load_run: a run directory's tables as DataFrames, read lazily; short reprs of runs and
plans; the notebook example in docs/ draws the report's figures from them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.plan.planner import make_plan, write_plan
from netemu.plan.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory from a real plan and fabricated measurements (no root)."""
    plan = make_plan(load_scenario(DATA / "small.toml"), workers=1)
    out = tmp_path_factory.mktemp("run")
    write_plan(plan, out)
    rng = np.random.default_rng(3)
    t = np.arange(100, 160, 0.5)
    oracle = 40 + 0.1 * (t - 100)
    pd.DataFrame({"t_s": t, "src": "g-paris", "dst": "g-quito", "rtt_ms": oracle + rng.normal(0.05, 0.02, len(t)),
                  "oracle_rtt_ms": oracle}).to_parquet(out / "probes.parquet", index=False)
    pd.DataFrame({"workload": ["chat"] * 5 + ["eo"] * 3, "status": ["done"] * 7 + ["failed"],
                  "completion_ms": [100, 300, 200, 500, 400, 9000, 7000, np.nan],
                  "ttfb_ms": [10, 30, 20, 50, 40, np.nan, np.nan, np.nan]}).to_csv(out / "jobs.csv", index=False)
    pd.DataFrame({"t_s": [100.2, 130.0], "what": ["route", "link"], "lag_ms": [1.5, 2.5]}).to_csv(
        out / "apply.csv", index=False)
    (out / "fidelity.json").write_text(json.dumps({"verdict": "faithful", "overall": {"abs_error_p99_ms": 0.1}}))
    (out / "run.json").write_text(json.dumps({"scenario": "small", "window": {"t0_s": 100, "t_end_s": 160}}))
    return plan, out


def test_tables_are_the_files(run_dir):
    plan, out = run_dir
    run = netemu.load_run(out)
    assert isinstance(run, netemu.Run)
    pd.testing.assert_frame_equal(run.probes, pd.read_parquet(out / "probes.parquet"))
    assert run.jobs["completion_ms"].iloc[:5].tolist() == [100, 300, 200, 500, 400]
    assert run.apply["lag_ms"].tolist() == [1.5, 2.5]
    assert len(run.links) == len(plan.schedule.links) and len(run.paths) == len(plan.routes.paths)
    assert run.nodes["name"].tolist() == plan.schedule.node_names
    assert run.meta["window"] == {"t0_s": 100, "t_end_s": 160} and run.fidelity["verdict"] == "faithful"
    assert run.summary["steps"] == len(plan.track.t_s)
    assert run.packets is None and run.link_counters is None       # files this run did not write
    assert "packets" not in run.available and "probes" in run.available
    with pytest.raises(AttributeError, match="tables: probes"):
        run.probe


def test_lazy(run_dir, tmp_path):
    _, out = run_dir
    d = tmp_path / "r"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"scenario": "x"}))
    run = netemu.load_run(d)
    pd.DataFrame({"t_s": [1.0]}).to_csv(d / "jobs.csv", index=False)    # written after load_run
    assert run.jobs["t_s"].tolist() == [1.0]
    (d / "jobs.csv").unlink()
    assert run.jobs["t_s"].tolist() == [1.0]                            # kept once read


def test_not_a_run(tmp_path):
    with pytest.raises(netemu.PlanError, match="does not exist"):
        netemu.load_run(tmp_path / "nope")
    with pytest.raises(netemu.PlanError, match="found neither"):
        netemu.load_run(tmp_path)


def test_reprs(run_dir):
    plan, out = run_dir
    r = repr(netemu.load_run(out))
    assert r.startswith("<netemu run") and "scenario small" in r and "100–160 s" in r and "faithful" in r
    assert len(r) < 400
    h = netemu.load_run(out)._repr_html_()
    assert "<table>" in h and "probes" in h
    p = repr(plan)
    assert p.startswith("<netemu Plan") and "148 satellites" not in p    # 144 + 4 compute
    assert "144 satellites, 4 compute, 4 ground stations" in p and "121 steps of 10 s" in p and len(p) < 400
    assert "<table>" in plan._repr_html_()


def test_notebook_example_draws_the_report_figures(run_dir):
    _, out = run_dir
    spec = importlib.util.spec_from_file_location("notebook_example", ROOT / "docs" / "notebook_example.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    run = netemu.load_run(out)
    fig = ex.rtt_figure(run)
    ax = fig.axes[0]
    line = ax.lines[0]
    assert np.array_equal(line.get_xdata(), run.probes["t_s"]) and np.array_equal(line.get_ydata(),
                                                                                   run.probes["oracle_rtt_ms"])
    assert np.allclose(ax.collections[0].get_offsets()[:, 1], run.probes["rtt_ms"])
    fig = ex.completion_figure(run)
    chat = fig.axes[0].lines[0]
    assert chat.get_xdata().tolist() == [100, 200, 300, 400, 500] and chat.get_ydata().tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]
    eo = fig.axes[0].lines[2]        # eo: its two finished jobs only
    assert eo.get_xdata().tolist() == [7000, 9000]
