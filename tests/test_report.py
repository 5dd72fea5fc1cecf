"""Reports and comparisons: built from a synthetic run directory (the report of a real run is
checked in tests/test_workloads.py, on the run made there); every figure referenced exists and is
a valid PNG, the HTML parses, the tables' numbers are summary.json's, and headless Chromium
renders a page that is not blank."""

import html
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
from netemu.emulate.playback import oracle_rtt_ms
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
    from netemu.plan.views import VIEW_POSITIONS_FILE, view_positions_of_plan
    view_positions_of_plan(plan, 330.0, 346.0).to_parquet(out / VIEW_POSITIONS_FILE, index=False)
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
    from netemu.emulate.clock import Clock
    from netemu.traffic.workloads import summarise
    chat = next(w for w in plan.scenario.workloads if w.name == "chat")
    summary["workloads"] = summarise(done, (chat,), Clock(330, 346, origin_mono=0))
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


def test_instants_in_one_step_give_one_map(synthetic_run, tmp_path):
    """A window shorter than a step (t = 330 and 330.5 s in one 1-s step) once gave every node twice
    at that step, and the map failed on the duplicates."""
    plan = netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)
    pos = positions_table(plan, [330.0, 330.5, 336.0])
    assert not pos.duplicated(["step", "name"]).any()
    assert pos["step"].nunique() == 2
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    pos.to_parquet(run / "positions.parquet", index=False)
    build_report(run)
    assert (run / "figures" / "map.png").exists()


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


def _fake_run(path: Path, pairs: dict[tuple[str, str], float], t0_s: float = 0.0, t_end_s: float = 10.0) -> Path:
    """A minimal run directory: run.json, probes.parquet (each pair at its constant RTT, one probe
    in ten lost) and fidelity.json, with the pairs probed in the order given."""
    path.mkdir(parents=True)
    t = np.arange(t0_s, t_end_s, 0.5)
    frames = []
    for (s, d), rtt in pairs.items():
        r = np.full(len(t), rtt)
        r[::10] = np.nan
        frames.append(pd.DataFrame({"t_s": t, "src": s, "dst": d, "rtt_ms": r, "oracle_rtt_ms": rtt - 0.1}))
    pd.concat(frames, ignore_index=True).to_parquet(path / "probes.parquet", index=False)
    (path / "run.json").write_text(json.dumps({"scenario": "fake", "window": {"t0_s": t0_s, "t_end_s": t_end_s},
                                              "dilation": 1.0, "warnings": []}))
    (path / "fidelity.json").write_text(json.dumps({
        "overall": {"compared": len(t) * len(pairs), "error_median_ms": 0.1, "abs_error_p99_ms": 0.1},
        "pairs": {f"{s}>{d}": {"compared": len(t), "error_median_ms": 0.1, "abs_error_p99_ms": round(rtt / 100, 3)}
                  for (s, d), rtt in pairs.items()}, "verdict": "faithful", "threshold_p99_ms": 0.5}))
    return path


def _compare_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netemu", "compare", *map(str, args)], capture_output=True,
                          text=True)


def test_compare_matches_pairs_by_name_not_order(tmp_path):
    # the same two pairs, probed in opposite orders: each pair is compared with itself
    a = _fake_run(tmp_path / "a", {("g-kashgar", "c-0"): 30.0, ("g-sanya", "c-0"): 50.0})
    b = _fake_run(tmp_path / "b", {("g-sanya", "c-0"): 52.0, ("g-kashgar", "c-0"): 31.0})
    r = _compare_cli(a, b, "-o", tmp_path / "cmp")
    assert r.returncode == 0 and not r.stderr, r.stderr
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv").set_index("metric")
    assert list(table.columns) == ["a", "b"]
    assert table.loc["g-kashgar → c-0: RTT median (ms)"].astype(float).tolist() == [30.0, 31.0]
    assert table.loc["g-sanya → c-0: RTT median (ms)"].astype(float).tolist() == [50.0, 52.0]
    assert table.loc["g-sanya → c-0: probes lost (planned path up)"].astype(int).tolist() == [2, 2]
    js = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert js["pairs"] == ["g-kashgar>c-0", "g-sanya>c-0"]
    rows = {m["metric"]: m["values"] for m in js["metrics"]}
    assert rows["g-sanya → c-0: |RTT − oracle| p99 (ms)"] == {"a": 0.5, "b": 0.52}
    c = _parse(tmp_path / "cmp" / "compare.html")
    _check_figures(tmp_path / "cmp" / "compare.html", c)
    assert "g-kashgar → c-0: RTT median (ms)" in c.cells and "31" in c.cells
    # --pair picks one of them; a pair one run did not probe is one clear error line
    r = _compare_cli(a, b, "-o", tmp_path / "one", "--pair", "g-sanya:c-0")
    assert r.returncode == 0
    assert json.loads((tmp_path / "one" / "compare.json").read_text())["pairs"] == ["g-sanya>c-0"]
    r = _compare_cli(a, b, "-o", tmp_path / "bad", "--pair", "g-paris:c-0")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "g-paris:c-0" in r.stderr and "did not probe" in r.stderr
    assert not (tmp_path / "bad").exists()


def test_compare_partial_overlap_keeps_common_pairs_only(tmp_path):
    a = _fake_run(tmp_path / "a", {("g-kashgar", "c-0"): 30.0, ("g-sanya", "c-0"): 50.0})
    b = _fake_run(tmp_path / "b", {("g-paris", "c-0"): 70.0, ("g-sanya", "c-0"): 52.0})
    heard = []
    out = build_compare([a, b], tmp_path / "cmp", warn=heard.append)
    assert not heard
    js = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert js["pairs"] == ["g-sanya>c-0"]
    metrics = [m["metric"] for m in js["metrics"]]
    assert not any("kashgar" in m or "paris" in m for m in metrics)
    assert "g-sanya → c-0: RTT median (ms)" in metrics
    text = out.read_text()
    assert "g-sanya → c-0" in text and "g-kashgar" not in text
    # probes sent while the plan had no path are unreachable, not lost
    pr = pd.read_parquet(b / "probes.parquet")
    gap = (pr["src"] == "g-sanya") & pr["t_s"].between(3, 4.5)
    pr.loc[gap, ["rtt_ms", "oracle_rtt_ms"]] = np.nan
    pr.to_parquet(b / "probes.parquet", index=False)
    build_compare([a, b], tmp_path / "cmp2")
    rows = pd.read_csv(tmp_path / "cmp2" / "compare.csv").set_index("metric")
    assert rows.loc["g-sanya → c-0: probes lost (planned path up)"].astype(int).tolist() == [2, 2]
    assert rows.loc["g-sanya → c-0: probes unreachable (no planned path)"].astype(int).tolist() == [0, 4]


def test_compare_without_common_pair_says_so(tmp_path):
    a = _fake_run(tmp_path / "a", {("g-kashgar", "c-0"): 30.0})
    b = _fake_run(tmp_path / "b", {("g-sanya", "c-0"): 52.0})
    r = _compare_cli(a, b, "-o", tmp_path / "cmp")
    assert r.returncode == 0
    assert "no probed pair in common" in r.stderr and "g-kashgar:c-0" in r.stderr and "g-sanya:c-0" in r.stderr
    text = (tmp_path / "cmp" / "compare.html").read_text()
    assert "no probed pair in common" in text
    c = _parse(tmp_path / "cmp" / "compare.html")
    assert c.imgs == []                     # no pair and no jobs: no empty panels, no figure
    assert not (tmp_path / "cmp" / "figures").exists()
    assert (tmp_path / "cmp" / "compare.csv").exists()


def test_report_shows_why_a_run_is_not_faithful(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    from netemu.traffic.fidelity import assess
    pr = pd.read_parquet(run / "probes.parquet")
    pr["rtt_ms"] += 1.5
    fid = assess(pr, {}, guard_s=0.001, timeout_s=2.0, engine=[{"frames": 1000, "late_frames": 200}])
    (run / "fidelity.json").write_text(json.dumps(fid))
    text = build_report(run).read_text()
    assert "not faithful" in text and fid["reasons"]
    for why in fid["reasons"]:
        assert html.escape(why) in text
    assert "200 of 1,000 frames" in text and "what to do:" in text


def test_report_shows_fidelity_per_window(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    from netemu.traffic.fidelity import assess
    pr = pd.read_parquet(run / "probes.parquet")
    pr.loc[pr["t_s"].between(330, 340, inclusive="left").to_numpy().nonzero()[0][::60], "rtt_ms"] += 0.9
    fid = assess(pr, {}, guard_s=0.001, timeout_s=2.0, t0_s=330.0, t_end_s=346.0)
    (run / "fidelity.json").write_text(json.dumps(fid))
    c = _parse(build_report(run))
    assert fid["window_s"] == 10.0 and len(fid["windows"]) == 2
    assert fid["verdict"] == "not faithful in t = 330–340 s"
    i = c.cells.index("330–340")
    w = fid["windows"][0]
    from netemu.report import _fmt
    assert c.cells[i:i + 6] == ["330–340", _fmt(w["n"]), _fmt(w["p50_ms"]), _fmt(w["p99_ms"]),
                                _fmt(w["lost_while_reachable"]), "not faithful"]
    assert "340–346" in c.cells and fid["windows"][1]["verdict"] in c.cells


_NUMBER = re.compile(r"(?<![\w.\-−])[-+−]?\d[\d,]*(?:\.\d+)?")


def _headline_text(report: Path) -> str:
    """The plain-words block of a report (its headline sentences), tags stripped."""
    text = report.read_text()
    m = re.search(r"<div class='say'>(.*?)</div>", text, re.S)
    assert m, "no headline sentences"
    return html.unescape(re.sub(r"<[^>]+>", " ", m.group(1)))


def check_headline_numbers(run_dir: Path) -> list[str]:
    """Every number in report.html's headline sentences is a number of summary.json,
    fidelity.json or run.json (as the report formats it), a handover time or count from
    events.csv, or the median over windows the change sentences name. Returns the sentences'
    numbers."""
    cands: set[str] = set()

    def add(v) -> None:
        if isinstance(v, bool) or v is None:
            return
        if isinstance(v, (int, float)) and np.isfinite(v):
            for f in ("{:,.0f}", "{:,}", "{:.3f}", "{:+.3f}", "{:.2f}", "{:g}", "{:,.1f}", "{}"):
                cands.add(f.format(v))
        elif isinstance(v, str):
            cands.update(_NUMBER.findall(v))
        elif isinstance(v, dict):
            for x in v.values():
                add(x)
        elif isinstance(v, list):
            for x in v:
                add(x)

    for name in ("summary.json", "fidelity.json", "run.json"):
        if (run_dir / name).exists():
            add(json.loads((run_dir / name).read_text()))
    summ = json.loads((run_dir / "summary.json").read_text())
    for s in (summ.get("workloads") or {}).values():
        if s.get("windows"):
            add(float(pd.DataFrame(s["windows"])["completion_ms_p99"].median()))
    if (run_dir / "events.csv").exists():
        ev = pd.read_csv(run_dir / "events.csv")
        info = json.loads((run_dir / "run.json").read_text())
        w = info.get("window") or {}
        hands = ev[(ev["event"] == "handover") & ev["t_s"].between(w.get("t0_s", -np.inf), w.get("t_end_s", np.inf))]
        add(len(hands))
        add(hands["t_s"].tolist())
    found = _NUMBER.findall(_headline_text(run_dir / "report.html"))
    stray = [n for n in found if n.replace("−", "-") not in cands and n.lstrip("+") not in cands]
    assert not stray, (stray, _headline_text(run_dir / "report.html"))
    return found


def test_report_sentences_are_true(synthetic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    summary = json.loads((run / "summary.json").read_text())
    # every window's p99 the same as shown (5,276 ms): no "rose from 5,276 ms to 5,276 ms"
    for i, w in enumerate(summary["workloads"]["chat"]["windows"]):
        w["completion_ms_p99"] = 5276.2 if i % 2 else 5275.9
    # a replay whose packets could not be sent during a handover gap: not "lost"
    summary["replay"] = {"open_loop": {"packets": 20000, "sent": 20000, "received": 18474, "lost": 13,
                                       "send_failed": 1513, "lost_no_path": 2, "not_attempted": 0, "reordered": 4,
                                       "owd_minus_oracle_ms_p50": 0.021, "owd_minus_oracle_ms_p99_abs": 0.31}}
    (run / "summary.json").write_text(json.dumps(summary))
    # probes sent in the Beijing-Sanya gap (t = 338-340 s, no planned path) are unreachable, not lost
    from netemu.traffic.fidelity import assess
    from netemu.report import probe_status
    pr = pd.read_parquet(run / "probes.parquet")
    gap = pr["oracle_rtt_ms"].isna()
    assert gap.sum() > 20 and pr.loc[gap, "rtt_ms"].isna().all()
    pr.loc[pr.index[~gap][:3], "rtt_ms"] = np.nan                    # three real losses
    pr.to_parquet(run / "probes.parquet", index=False)
    st = probe_status(pr)
    assert (st == "lost").sum() == 3 and (st == "unreachable").sum() == gap.sum()
    (run / "fidelity.json").write_text(json.dumps(assess(pr, {}, guard_s=0.001, timeout_s=2.0, t0_s=330.0,
                                                         t_end_s=346.0)))
    report = build_report(run)
    text = _headline_text(report)
    assert not re.search(r"rose from ([\d,]+) ms \S* ?\S* ?\S* ?to \1 ms", text)
    assert not re.search(r"from ([\d,]+) ms (\(median over windows\) )?to \1 ms", text)
    assert "was unchanged at 5,276 ms" in text
    assert "1,513 could not be sent, as no route existed at the send time" in text
    assert "13 lost in the network, of which 2 while the plan had no path" in text
    assert re.search(r"the verdict is\s+not faithful", text) and "Why: " in text
    assert "3 probe(s) lost while the planned path was up: g-sanya>g-beijing (3)" in text
    assert (f"3 probe(s) were lost while the planned path was up; {gap.sum():,} were sent while the plan had no "
            "path") in text
    c = _parse(report)
    i = c.cells.index("g-sanya>g-beijing")
    assert c.cells[i + 4:i + 6] == ["3", f"{gap.sum():,}"]          # lost while reachable, unreachable
    numbers = check_headline_numbers(run)
    assert "18,474" in numbers and "5,276" in numbers


def test_report_headline_numbers_match_summary(synthetic_run):
    build_report(synthetic_run)
    numbers = check_headline_numbers(synthetic_run)
    fid = json.loads((synthetic_run / "fidelity.json").read_text())
    s = json.loads((synthetic_run / "summary.json").read_text())["workloads"]["chat"]
    assert f"{fid['overall']['abs_error_p99_ms']:.3f}" in numbers
    assert f"{s['completion_ms_p99']:,.0f}" in numbers and str(s["done"]) in numbers
