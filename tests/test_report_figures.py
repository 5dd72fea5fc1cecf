"""The report's figures as functions: each takes a run directory and returns a matplotlib Figure
(saving is the caller's), and what they draw is the run's: one map for a short window, zoomed to
the drawn pairs, their planned paths through the right nodes; CDFs beside the time series; labels
that do not overlap; no empty panels; legends off the data."""

import itertools
import shutil

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.report import (fig_completion, fig_jobs_time, fig_map, fig_replay, fig_rtt, fig_throughput, fig_topology,
                           map_extent, place_labels)

from test_report import synthetic_run  # noqa: F401  (the fixture: a real plan, fabricated measurements)

FIGS = (fig_map, fig_rtt, fig_completion, fig_jobs_time, fig_throughput, fig_topology)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def test_figures_are_returned_not_saved(synthetic_run):  # noqa: F811
    from matplotlib.figure import Figure
    before = set((synthetic_run / "figures").glob("*")) if (synthetic_run / "figures").exists() else set()
    for fn in FIGS:
        for arg in (synthetic_run, str(synthetic_run), netemu.load_run(synthetic_run)):
            fig = fn(arg)
            assert isinstance(fig, Figure), fn.__name__
            _plt().close(fig)
    after = set((synthetic_run / "figures").glob("*")) if (synthetic_run / "figures").exists() else set()
    assert after == before
    assert fig_replay(synthetic_run) is None          # no replay in this run: no figure


def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return r


def test_no_empty_panels_and_legends_off_the_data(synthetic_run):  # noqa: F811
    for fn in FIGS:
        fig = fn(synthetic_run)
        r = _boxes(fig)
        for ax in fig.axes:
            assert ax.lines or ax.collections or ax.patches, f"{fn.__name__}: an empty panel"
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends, fn.__name__
        for lg, ax in itertools.product(legends, fig.axes):
            assert not lg.get_window_extent(r).overlaps(ax.get_window_extent(r)), f"{fn.__name__}: legend on the data"
        _plt().close(fig)


def test_topology_leaves_out_panels_with_nothing(synthetic_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    ev = pd.read_csv(run / "events.csv")
    ev[~ev["event"].isin(["link_up", "link_down", "handover"])].to_csv(run / "events.csv", index=False)
    fig = fig_topology(run)
    assert [ax.get_ylabel() for ax in fig.axes] == ["links", "hops"]


def test_rtt_has_the_cdfs_beside(synthetic_run):  # noqa: F811
    fig = fig_rtt(synthetic_run)
    ts, cdf = fig.axes[0], fig.axes[1]
    assert cdf.get_title() == "CDF" and cdf.get_position().x0 > ts.get_position().x1
    pr = pd.read_parquet(synthetic_run / "probes.parquet")
    measured = np.sort(pr["rtt_ms"].dropna().to_numpy())
    x = [np.asarray(line.get_xdata()) for line in cdf.lines]
    assert any(len(v) == len(measured) and np.allclose(v, measured) for v in x)
    y = cdf.lines[-1].get_ydata()
    assert y[0] == pytest.approx(1 / len(measured)) and y[-1] == 1.0


def test_one_map_zoomed_with_the_pairs_paths(synthetic_run):  # noqa: F811
    fig = fig_map(synthetic_run)
    assert len(fig.axes) == 1                          # a 16-s window: one map, not three alike
    ax = fig.axes[0]
    pos = pd.read_parquet(synthetic_run / "positions.parquet")
    p = pos[pos["step"] == pos["step"].min()].set_index("name")
    # the probed pair's planned path at t = 330 s (routes.parquet: g-beijing>w03-00>w03-05>g-sanya)
    (line,) = [ln for ln in ax.lines if ln.get_label() == "g-sanya → g-beijing (probed)"]
    want = p.loc[["g-sanya", "w03-05", "w03-00", "g-beijing"], ["lon_deg", "lat_deg"]].to_numpy()
    assert np.allclose(np.c_[line.get_xdata(), line.get_ydata()], want)
    assert any(ln.get_label() == "g-beijing → w03-00 (workload chat)" for ln in ax.lines)
    # zoomed: the endpoints and the path's satellites are inside, and it is far from the whole world
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert (x1 - x0) < 180 and (y1 - y0) < 90
    for n in ("g-sanya", "g-beijing", "w03-05", "w03-00"):
        assert x0 < p.loc[n, "lon_deg"] < x1 and y0 < p.loc[n, "lat_deg"] < y1
    labels = {t.get_text() for t in ax.texts}
    assert {"g-sanya", "g-beijing", "w03-05", "w03-00"} <= labels


def test_map_extent():
    lo0, lo1, la0, la1 = map_extent([116.4, 109.5], [39.9, 18.3])
    assert lo0 < 109.5 and lo1 > 116.4 and la0 < 18.3 and la1 > 39.9 and (lo1 - lo0) == pytest.approx(2 * (la1 - la0))
    assert map_extent([-170, 170], [0, 0]) == (-180.0, 180.0, -90.0, 90.0)     # across the world: all of it
    assert map_extent([np.nan], [np.nan]) == (-180.0, 180.0, -90.0, 90.0)


def test_labels_do_not_overlap():
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5)
    rng = np.random.default_rng(3)
    pts = [(5 + rng.normal(0, 0.05), 2.5 + rng.normal(0, 0.05), f"station-{i}") for i in range(12)]
    pts += [(1.0, 1.0, "far-away")]
    texts = place_labels(ax, pts)
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in texts]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    drawn = [t.get_text() for t in texts]
    assert 2 <= len(drawn) < 13 and "far-away" in drawn and drawn[0] == "station-0"   # crowded ones left out
    plt.close(fig)


def test_busiest_links_show_rate_drops_and_peak_queue(synthetic_run, tmp_path):  # noqa: F811
    from netemu.report import busiest_links, fig_links
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    rows = [("L1", "ab", "g-sanya", "w03-00", "gsl", 4_000_000, 3000, 0, 0, 7, 0, 90_000),
            ("L1", "ba", "g-sanya", "w03-00", "gsl", 2_000_000, 1500, 0, 0, 0, 0, 20_000),
            ("L2", "ab", "w03-00", "w03-01", "isl", 1_000_000, 800, 2, 0, 0, 0, 5_000),
            ("L2", "ba", "w03-00", "w03-01", "isl", 0, 0, 0, 0, 0, 0, 0)]
    pd.DataFrame(rows, columns=["link", "direction", "a", "b", "kind", "bytes_out", "frames_out", "drop_down",
                                "drop_loss", "drop_queue", "drop_error", "queue_hwm_bytes"]).to_csv(
        run / "link_counters.csv", index=False)
    g = busiest_links(run)
    assert list(g["link"]) == ["L1", "L2"] and list(g["drops"]) == [7, 2]
    assert list(g["queue_peak_bytes"]) == [90_000, 5_000]
    # 6 MB both ways over the 16-s window: 1.5 Mbit/s per direction
    assert g["mbps"].iloc[0] == pytest.approx(6e6 * 8 / 16 / 1e6 / 2)
    fig = fig_links(run)
    assert len(fig.axes) == 3
    assert [p.get_width() for p in fig.axes[2].patches] == [90.0, 5.0]
    assert [p.get_width() for p in fig.axes[1].patches] == [7, 2]


def test_an_allreduce_without_a_client_server_pair_draws_no_workload_path(synthetic_run, tmp_path):  # noqa: F811
    # an all-reduce's jobs name a ring as client and no server: the map draws the probed pair
    # only (its NaN server once reached the map's region as a float next to node names)
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    jobs = pd.read_csv(run / "jobs.csv")
    ring = jobs.head(3).assign(workload="ring", kind="allreduce", client="w00-00>w00-01>w00-02", server=np.nan)
    pd.concat([jobs[jobs["workload"] != "chat"], ring]).to_csv(run / "jobs.csv", index=False)
    from netemu.report import drawn_pairs
    assert [w for _, _, w in drawn_pairs(run)] == ["probed"]
    fig = fig_map(run)
    assert fig is not None and not any("ring" in ln.get_label() for ln in fig.axes[0].lines)
