"""Reports and comparisons: built from a synthetic run directory (the report of a real run is
checked in tests/test_workloads.py, on the run made there); every figure referenced exists and is
a valid PNG, the HTML parses, the tables' numbers are summary.json's, and headless Chromium
renders a page that is not blank."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.playback import oracle_rtt_ms
from netemu.report import build_compare, build_report, positions_table, workload_rows

DATA = Path(__file__).resolve().parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collects img sources and table cells; fails on unbalanced tags."""

    def __init__(self):
        super().__init__()
        self.stack, self.imgs, self.cells, self.errors = [], [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag in ("td", "th"):
            self._cell = ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(path: Path) -> _Checker:
    c = _Checker()
    c.feed(path.read_text())
    c.close()
    assert not c.errors and not c.stack, (c.errors, c.stack)
    return c


def check_report(report: Path) -> "_Checker":
    """Parse `report` and check its figures; returns the parser (img sources, table cells)."""
    c = _parse(report)
    _check_figures(report, c)
    return c


def _check_figures(report: Path, c: _Checker) -> None:
    assert c.imgs
    for src in c.imgs:
        f = report.parent / src
        assert f.exists(), src
        assert f.read_bytes()[:8] == PNG_MAGIC
        import matplotlib.image
        img = matplotlib.image.imread(f)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01, src


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A run directory made from a real plan and fabricated measurements (no root)."""
    plan = netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)
    out = tmp_path_factory.mktemp("synthetic")
    netemu.write_plan(plan, out)
    pos = positions_table(plan, [330.0, 338.0, 346.0], track_window=(0.0, 400.0))
    assert not (~pos["instant"]).any()                  # no compute satellites here: no ground tracks
    assert (pos["instant"].groupby(pos["step"]).sum() > 0).sum() == 3
    pos.to_parquet(out / "positions.parquet", index=False)
    t = np.arange(330, 346, 0.05)
    rtt = oracle_rtt_ms(plan.schedule, plan.routes.routes, "g-sanya", "g-beijing", t)
    rng = np.random.default_rng(1)
    pd.DataFrame({"t_s": t, "src": "g-sanya", "dst": "g-beijing", "rtt_ms": rtt + rng.normal(0.05, 0.05, len(t)),
                  "oracle_rtt_ms": rtt}).to_parquet(out / "probes.parquet", index=False)
    starts = np.sort(rng.uniform(330, 346, 60))
    comp = rng.lognormal(np.log(800), 0.4, 60)
    comp[(starts > 336) & (starts < 338)] += 3000                 # the stall at the handover
    pd.DataFrame({"workload": "chat", "kind": "inference", "job": [f"g-beijing#{i}" for i in range(60)],
                  "client": "g-beijing", "server": "w03-00", "t_start_s": starts, "t_end_s": starts + comp / 1e3,
                  "status": "done", "bytes_expected": 30000.0, "bytes_delivered": 30000.0,
                  "ttfb_ms": comp * 0.1, "completion_ms": comp, "goodput_mbps": np.nan, "ideal_ms": np.nan,
                  "ratio_to_ideal": np.nan}).to_csv(out / "jobs.csv", index=False)
    pd.DataFrame({"t_s": np.arange(330, 346.0), "workload": "eo", "mbps": rng.uniform(10, 90, 16)}).to_csv(
        out / "throughput.csv", index=False)
    done = pd.read_csv(out / "jobs.csv")
    summary = json.loads((out / "summary.json").read_text())
    from netemu.workloads import Clock, summarise
    chat = next(w for w in plan.scenario.workloads if w.name == "chat")
    summary["workloads"] = summarise(done, (chat,), Clock(330, 346, 0, 1, 1))
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "fidelity.json").write_text(json.dumps({
        "overall": {"compared": len(t), "error_median_ms": 0.05, "abs_error_p99_ms": 0.17},
        "pairs": {"g-sanya>g-beijing": {"compared": len(t), "error_median_ms": 0.05, "abs_error_p99_ms": 0.17,
                                        "lost_while_reachable": 0, "straddling_path_change": 0}},
        "verdict": "faithful", "threshold_p99_ms": 0.5}))
    (out / "run.json").write_text(json.dumps({"scenario": "workloads-4x6", "window": {"t0_s": 330, "t_end_s": 346},
                                              "dilation": 1.0, "speed": 1.0, "nodes": 26, "links": 39,
                                              "versions": {"netemu": netemu.__version__}, "warnings": []}))
    return out


def test_positions_and_ground_tracks():
    plan = netemu.make_plan(netemu.load_scenario(DATA / "allreduce.toml"), workers=1)
    pos = positions_table(plan, [0.0, 30.0], track_window=(0.0, 60.0), track_points=20)
    inst, tr = pos[pos["instant"]], pos[~pos["instant"]]
    assert len(inst) == 2 * 4 and set(tr["name"]) == {"c-00", "c-01", "c-02", "c-03"}
    assert tr.groupby("name").size().max() <= 20 and tr["t_s"].min() == 0 and tr["t_s"].max() == 60
    assert inst["lat_deg"].between(-90, 90).all() and inst["lon_deg"].between(-180, 180).all()
    # 750 km up, and moving about 7.5 km/s along the track: 0.067° of arc per second
    assert inst["alt_km"].between(740, 790).all()
    a, b = (inst[inst["t_s"] == t].set_index("name")[["lat_deg", "lon_deg"]] for t in (0.0, 30.0))
    arc_deg = np.degrees(np.arccos(np.clip(
        np.sin(np.radians(a["lat_deg"])) * np.sin(np.radians(b["lat_deg"])) + np.cos(np.radians(a["lat_deg"]))
        * np.cos(np.radians(b["lat_deg"])) * np.cos(np.radians(a["lon_deg"] - b["lon_deg"])), -1, 1)))
    assert np.allclose(arc_deg, 30 * 7.48 / (6371 + 750) * 180 / np.pi, rtol=0.1)


def test_report_from_synthetic_run(synthetic_run):
    report = build_report(synthetic_run)
    assert report == synthetic_run / "report.html"
    c = _parse(report)
    _check_figures(report, c)
    names = {Path(s).name for s in c.imgs}
    assert {"map.png", "rtt.png", "completion_cdf.png", "jobs_over_time.png", "throughput.png",
            "topology.png"} <= names
    # the workload table holds summary.json's numbers
    summary = json.loads((synthetic_run / "summary.json").read_text())
    row = workload_rows(summary)[0]
    i = c.cells.index("chat")
    from netemu.report import _fmt
    assert c.cells[i:i + len(row)] == [_fmt(v) for v in row]
    s = summary["workloads"]["chat"]
    assert _fmt(s["completion_ms_p99"]) in c.cells and _fmt(s["ttfb_ms_p50"]) in c.cells
    text = report.read_text()
    # plain words: the stall at the handover, in numbers from the summary's windows
    assert re.search(r"p99 completion of <b>chat</b> requests rose from [\d,]+ ms .* handover at t = 338 s", text)
    assert "faithful" in text


def test_compare_two_runs(synthetic_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synthetic_run, other)
    jobs = pd.read_csv(other / "jobs.csv")
    jobs["completion_ms"] *= 2
    jobs.to_csv(other / "jobs.csv", index=False)
    out = build_compare([synthetic_run, other], tmp_path / "cmp")
    c = _parse(out)
    _check_figures(out, c)
    assert synthetic_run.name in c.cells and "other" in c.cells
    assert "|RTT − oracle| p99 (ms)" in c.cells and "chat: completion p50 (ms)" in c.cells
    with pytest.raises(netemu.NetemuError, match="at least two"):
        build_compare([synthetic_run], tmp_path / "x")


def test_cli_report_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "netemu", "report", str(tmp_path / "nowhere")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a run directory" in r.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(synthetic_run, tmp_path):
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (Debian package chromium; scripts/setup-machine.sh --with-browser installs it)")
        pytest.skip("needs chromium (Debian package chromium)")
    report = build_report(synthetic_run)
    shot = tmp_path / "shot.png"
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                        f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    import matplotlib.image
    img = matplotlib.image.imread(shot)[..., :3]
    ink = (img < 0.9).any(axis=2).mean()          # share of pixels that are not (near) white
    assert ink > 0.02 and img.std() > 0.05, (ink, img.std())
