"""Planning in blocks (netemu.plan.stream): a plan made a few steps at a time writes, byte for
byte, the files of the plan made whole, though block edges cut acquisitions, sticky selections,
visibility runs and path changes; and the order statistics of summary.json are numpy's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.plan import planner
from netemu.plan.stream import _median, _percentile, default_block_steps, not_streamable, stream_plan

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FILES = ("links.parquet", "paths.parquet", "routes.parquet", "events.csv", "nodes.csv", "scenario.toml")


def _scenario(tmp_path: Path) -> netemu.Scenario:
    """small.toml with every carried state: lasers acquiring (30 s and 20 s at 10 s steps),
    sticky nearest-k and terminal-limited mesh lasers, longest-visible ground links with a
    handover gap of two steps, seeded rain (a series drawn over the whole window) and a workload."""
    text = (DATA / "small.toml").read_text()
    for old, new in (('policy = "nearest"', 'policy = "longest-visible"\nterminals = 2'),
                     ("terminals = 1\npolicy", "policy"),
                     ("handover_gap_s = 10", "handover_gap_s = 20"),
                     ("max_range_km = 20\n", "max_range_km = 20\nterminals = 2\n"),
                     ("rate_mbps = 5000", "rate_mbps = 5000\nfrequency_ghz = 27.5\nclear_sky_margin_db = 3\n"
                                          "rate_steps = [[1, 1000], [2, 3000]]")):
        assert old in text, old
        text = text.replace(old, new, 1)
    text += ('\n[[rain]]\nstation = "g-sanya"\nseed = 3\nmean_dry_s = 200\nmean_wet_s = 200\n'
             'median_mm_per_h = 20\nsigma = 1\n'
             '\n[[workloads]]\nname = "chat"\nkind = "inference"\nclients = ["g-paris"]\nserver = "c01"\n'
             'rate_per_s = 1\nservice_s = 0.05\n')
    p = tmp_path / "small.toml"
    p.write_text(text)
    return netemu.load_scenario(p)


def _small_variant_planned(tmp_path_factory, name: str, text: str):
    """small.toml made into `text` (a scenario file's text), loaded and planned whole into a
    directory of its own: (scenario, plan directory, summary, plan)."""
    tmp = tmp_path_factory.mktemp(name)
    p = tmp / f"{name}.toml"
    p.write_text(text)
    sc = netemu.load_scenario(p)
    out = tmp / "plan"
    plan = netemu.make_plan(sc, workers=1)
    return sc, out, netemu.write_plan(plan, out), plan


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    sc = _scenario(tmp)
    out = tmp / "plan"
    summary = netemu.write_plan(netemu.make_plan(sc, workers=2), out)
    return sc, out, summary


def _same_files(a: Path, b: Path, sa: dict, sb: dict) -> None:
    for f in FILES:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    sa, sb = dict(sa), dict(sb)
    assert set(sa.pop("timings_s")) <= set(sb.pop("timings_s")) | {"power"}
    assert sa == sb
    on_disk = json.loads((b / "summary.json").read_text())
    on_disk.pop("timings_s")
    assert on_disk == sb


@pytest.mark.parametrize("block", [1, 7])
def test_blocked_plan_equals_whole_plan(whole, tmp_path, monkeypatch, block):
    sc, out, summary = whole
    assert not_streamable(sc) is None
    T = sc.n_steps
    # Small row groups, so that blocks fill them unevenly (the whole plan's files are rewritten too).
    monkeypatch.setattr(planner, "PARQUET_ROW_GROUP", 1_000)
    ref = tmp_path / "whole"
    ref_summary = netemu.write_plan(netemu.make_plan(sc, workers=2), ref)
    got = tmp_path / "blocked"
    got.mkdir()
    said = []
    s = stream_plan(sc, got, workers=2, block_steps=block, progress=said.append)
    assert any(f"in {-(-T // block)} block(s)" in m for m in said), said
    _same_files(ref, got, ref_summary, s)
    import pyarrow.parquet as pq
    assert pq.ParquetFile(got / "links.parquet").metadata.num_row_groups > 5
    assert pq.ParquetFile(got / "paths.parquet").metadata.num_row_groups > 1

    # The edges did cut what is carried: lasers and ground links acquiring at an edge's last
    # step and present after it, link and path events at a block's first step.
    L = pd.read_parquet(ref / "links.parquet")
    edges = np.arange(block, T, block)
    key = L["a"].astype(str).to_numpy() + "|" + L["b"].astype(str).to_numpy() + "@"
    step = L["step"].to_numpy()
    acquiring = L["down_reason"].isin(["acquisition", "handover"]).to_numpy() & np.isin(step + 1, edges)
    present = np.isin(step, edges)
    crossing = set(key[acquiring] + (step[acquiring] + 1).astype(str)) & set(key[present] + step[present].astype(str))
    kinds = {k.split("@")[0].split("|")[1][:1] for k in crossing}
    ev = pd.read_csv(ref / "events.csv")
    at_edge = ev[np.isin(np.round(ev["t_s"] / sc.step_s).astype(int), edges)]
    if block == 1:
        assert {"c", "g"} <= kinds, crossing     # a nearest-k laser (w…|c…) and a ground link (w…|g-…)
        assert {"link_up", "link_down", "handover", "path_change"} <= set(at_edge["event"])
    assert (L["down_reason"] == "rain").any()      # the seeded rain took links out
    assert summary["warnings"] == s["warnings"]


def test_carry_matters(whole, tmp_path, monkeypatch):
    """Without carrying acquisitions across edges, blocks plan other links: the test above would see it."""
    from netemu.plan import topology
    sc, out, _ = whole
    real = topology._up_flags

    def forgetful(ls, t_s, acquisition_s, carry=None, key="", n_nodes=0):
        if carry is not None:
            carry.since.clear()
        return real(ls, t_s, acquisition_s, carry, key, n_nodes)

    monkeypatch.setattr(topology, "_up_flags", forgetful)
    got = tmp_path / "blocked"
    got.mkdir()
    stream_plan(sc, got, workers=1, block_steps=7)
    assert (out / "links.parquet").read_bytes() != (got / "links.parquet").read_bytes()


def test_one_block_and_cli(whole, tmp_path):
    sc, out, summary = whole
    got = tmp_path / "one"
    got.mkdir()
    _same_files(out, got, summary, stream_plan(sc, got, workers=1, block_steps=10_000))
    r = subprocess.run([sys.executable, "-m", "netemu", "plan", str(sc.path), "-o", str(tmp_path / "cli"), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "block(s)" in r.stderr
    _same_files(out, tmp_path / "cli", summary, json.loads(r.stdout))


def test_order_statistics_are_numpys():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4, 99, 100, 101, 599, 600, 601, 1000, 4951):
        for x in (rng.lognormal(3, 1, n), np.round(rng.uniform(1, 5, n), 1)):   # ties too
            s = np.sort(x)
            at = lambda r: float(s[r])   # noqa: E731
            assert _median(n, at) == float(pd.Series(x).median()) == float(np.median(x))
            for q in (1, 50, 99, 99.9):
                assert _percentile(n, q, at) == float(np.percentile(x, q)), (n, q)


def test_default_block_bounds_memory():
    sc = netemu.load_scenario(ROOT / "topologies" / "starlink-s1.toml")
    b = default_block_steps(sc)
    assert 100 <= b <= 1000 < sc.n_steps
    assert not_streamable(netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc-faults.toml")) is None
    assert not_streamable(netemu.load_scenario(ROOT / "topologies" / "beijing-orbital-dc-eclipse.toml")) is None


GROUP_FAULTS = """
[[faults]]
kind = "random"
group = "shell"
mtbf_s = 3000
mttr_s = 200
seed = 4

[[faults]]
kind = "storm"
group = "shell"
t_s = 600
fraction = 0.1
duration_s = 120
seed = 4

[[faults]]
kind = "storm"
group = "shell"
t_s = 905
duration_s = 60
region = {lat_deg = [-60, 10], lon_deg = [-120, 60]}

[[faults]]
kind = "radiation"
group = "shell"
rate_per_day = 50
reboot_s = 20
regions = [{lat_deg = [-50, 0], lon_deg = [-90, 40], multiplier = 10}]
seed = 4
"""


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return _small_variant_planned(tmp_path_factory, "group", (DATA / "small.toml").read_text().replace(
        "[gsl]", "[routing]\nfailure_detection_s = 25\n\n[gsl]", 1) + GROUP_FAULTS)


@pytest.mark.parametrize("block", [1, 7])
def test_group_faults_drawn_in_blocks_are_the_same(grouped, block):
    """The draws made a block of the track at a time give the whole window's Fault list."""
    from netemu.plan.faults import expand_group_faults_in_blocks
    from netemu.plan.scenario import group_node_names
    sc, _, _, plan = grouped
    offs, off, by_group = {}, 0, {}
    for g in sc.satellites:
        offs[g.name], by_group[g.name] = off, group_node_names(g)
        off += g.count
    asked = []

    def xyz(k0, k1):
        asked.append((k0, k1))
        return plan.track.xyz_km[k0:k1]

    got = expand_group_faults_in_blocks(sc.group_faults, by_group, offs, plan.track.t_s, xyz, block, sc.duration_s)
    assert tuple(got) == plan.faults[len(sc.faults):]
    kinds = {f.source for f in got}
    assert kinds == {"random shell", "storm shell", "radiation shell"} and len(got) > 20
    assert any(f.t_s == 905 for f in got)           # the regional storm found satellites in its box
    assert len(asked) == -(-sc.n_steps // block) and all(k1 - k0 <= block for k0, k1 in asked)


@pytest.mark.parametrize("block", [1, 7])
def test_group_faults_streamed_equal_whole(grouped, tmp_path, block):
    sc, out, summary, _ = grouped
    assert not_streamable(sc) is None
    got = tmp_path / "blocked"
    got.mkdir()
    _same_files(out, got, summary, stream_plan(sc, got, workers=1, block_steps=block))
    assert summary["faults"]["count"] > 20 and summary["faults"]["blackholed_pair_steps"] > 0


def test_parquet_stream_writes_what_write_parquet_writes(tmp_path, monkeypatch):
    """Rows added a block at a time give the file of all of them written at once, string columns
    (joined from blocks, so chunked) included, row groups cut mid-block. The paths are long
    enough that a row group's string dictionary outgrows its page: written chunk by chunk, that
    happened elsewhere and the bytes differed."""
    from netemu.plan.stream import _ParquetStream
    monkeypatch.setattr(planner, "PARQUET_ROW_GROUP", 30_000)
    rng = np.random.default_rng(2)
    n = 70_000
    names = pd.CategoricalDtype([f"g-{i}" for i in range(50)], ordered=True)
    df = pd.DataFrame({"step": np.arange(n, dtype=np.int32) // 7,
                       "src": pd.Categorical.from_codes(rng.integers(0, 50, n), dtype=names),
                       "path": [">".join(f"s{x:04d}" for x in rng.integers(0, 2000, 16)) for _ in range(n)],
                       "hops": pd.array(rng.integers(0, 30, n), dtype="Int16")})
    planner.write_parquet(df, tmp_path / "whole.parquet")
    w = _ParquetStream(tmp_path / "blocks.parquet")
    for lo in range(0, n, 9_001):   # each block's table made on its own, as a block's routes are
        part = df.iloc[lo:lo + 9_001]
        w.add(pd.DataFrame({c: list(part[c]) if c == "path" else part[c].to_numpy() if c == "step" else part[c].array
                            for c in df}))
    w.add(df.iloc[:0])
    w.close()
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "blocks.parquet").read_bytes()


def test_a_streamed_plan_that_fails_leaves_the_earlier_plan_whole(tmp_path, monkeypatch, capsys):
    """`netemu plan -o` writes its blocks aside and moves them in at the end: a failure (disk
    full, Ctrl-C) leaves an earlier plan in the directory byte for byte, a new directory is not
    left behind, and a killed writer's leftovers are neither refused nor kept."""
    import errno

    from netemu import cli
    from netemu.plan import stream
    scen = DATA / "small.toml"
    out = tmp_path / "plan"
    assert cli.main(["plan", str(scen), "-o", str(out), "--workers", "1"]) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert set(FILES) <= set(before)

    def disk_full(scenario, out_dir, **kw):
        (Path(out_dir) / "links.parquet").write_bytes(b"half a block")
        raise OSError(errno.ENOSPC, "No space left on device")

    def interrupted(scenario, out_dir, **kw):
        (Path(out_dir) / "events.csv").write_text("t_s,kind\n")
        raise KeyboardInterrupt

    real = stream.stream_plan
    monkeypatch.setattr(stream, "stream_plan", disk_full)
    for extra in ([], ["--overwrite"]):
        assert cli.main(["plan", str(scen), "-o", str(out), *extra]) == 2
        assert f"-o {out}: cannot write the plan files: No space left on device" in capsys.readouterr().err
        assert {f.name: f.read_bytes() for f in out.iterdir()} == before, extra
    fresh = tmp_path / "fresh"
    assert cli.main(["plan", str(scen), "-o", str(fresh)]) == 2
    assert not fresh.exists()
    monkeypatch.setattr(stream, "stream_plan", interrupted)
    assert cli.main(["plan", str(scen), "-o", str(out), "--overwrite"]) == 130
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before

    leftover = out / ".netemu-partial-k1ll"           # what a SIGKILLed writer leaves
    leftover.mkdir()
    (leftover / "links.parquet").write_bytes(b"half a block")
    monkeypatch.setattr(stream, "stream_plan", real)
    assert cli.main(["plan", str(scen), "-o", str(out), "--workers", "1"]) == 0
    assert sorted(f.name for f in out.iterdir()) == sorted(before)
    assert {f: (out / f).read_bytes() for f in FILES} == {f: before[f] for f in FILES}
    fresh.mkdir()
    (fresh / ".netemu-partial-k1ll").mkdir()          # a directory holding only a leftover counts as empty
    assert cli.main(["plan", str(scen), "-o", str(fresh), "--workers", "1"]) == 0
    assert sorted(f.name for f in fresh.iterdir()) == sorted(before)


POWER = """
[[compute]]
group = "cluster"
accelerators_per_satellite = 4
battery_wh = 300
solar_array_w = 800
initial_soc_pct = 60
throttle_below_soc_pct = 50
refuse_below_soc_pct = 20
"""


@pytest.fixture(scope="module")
def powered(tmp_path_factory):
    """small.toml with a [[compute]] section whose batteries drain through both thresholds over
    the window (the state of charge carried across every block edge matters)."""
    return _small_variant_planned(tmp_path_factory, "power", (DATA / "small.toml").read_text() + POWER)[:3]


@pytest.mark.parametrize("block", [1, 7, 10_000])
def test_power_streamed_equals_whole(powered, tmp_path, block):
    sc, out, summary = powered
    assert not_streamable(sc) is None
    got = tmp_path / "blocked"
    got.mkdir()
    s = stream_plan(sc, got, workers=1, block_steps=block)
    _same_files(out, got, summary, s)
    assert (out / "power.parquet").read_bytes() == (got / "power.parquet").read_bytes()
    p = pd.read_parquet(got / "power.parquet")
    assert len(p) == 4 * sc.n_steps
    # The batteries cross both thresholds: 4, then 2 (throttled), then 0 accelerators active.
    assert {0, 2, 4} <= set(p["active_accelerators"])
    assert p["soc_pct"].iloc[0] == 60


def test_power_carry_matters(powered, tmp_path, monkeypatch):
    """Each block starting from initial_soc_pct again (the carry dropped) gives another power.parquet."""
    sc, out, _ = powered
    real = planner.plan_power
    monkeypatch.setattr(planner, "plan_power", lambda scenario, track, carry=None: real(scenario, track, {}))
    got = tmp_path / "blocked"
    got.mkdir()
    stream_plan(sc, got, workers=1, block_steps=7)
    assert (out / "power.parquet").read_bytes() != (got / "power.parquet").read_bytes()


FAULTS = """
[[faults]]
kind = "node"
node = "w09-03"
t_s = 130
duration_s = 300

[[faults]]
kind = "reboot"
node = "c01"
t_s = 455.5
reboot_s = 45

[[faults]]
kind = "link"
node = "g-paris"
terminal = "gsl"
t_s = 500
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """small.toml with a relay on the Beijing-c00 path dying at 130 s for 300 s, a reboot of a
    compute satellite starting between steps, Paris' ground terminal failing for good at 500 s
    (more steps with a fault than the detour samples), and 25 s to detect a failure (2-3 steps
    of 10 s: the detection crosses block edges)."""
    return _small_variant_planned(tmp_path_factory, "faults", (DATA / "small.toml").read_text().replace(
        "[gsl]", "[routing]\nfailure_detection_s = 25\n\n[gsl]", 1) + FAULTS)[:3]


@pytest.mark.parametrize("block", [1, 7, 10_000])
def test_faults_streamed_equal_whole(faulty, tmp_path, block):
    sc, out, summary = faulty
    assert not_streamable(sc) is None
    got = tmp_path / "blocked"
    got.mkdir()
    _same_files(out, got, summary, stream_plan(sc, got, workers=1, block_steps=block))
    f = summary["faults"]
    # What is carried did matter: pair-steps lost before detection at and after an edge, the
    # detour measured at sampled steps (fewer than the steps with a fault).
    assert f["blackholed_pair_steps"] > 0 and f["link_steps_down"] > 0
    assert f["detour"]["sampled_steps"] == planner.DETOUR_SAMPLED_STEPS and f["detour"]["pair_steps_detoured"] > 0
    ev = pd.read_csv(got / "events.csv")
    assert {"fault_start", "fault_end", "reroute"} <= set(ev["event"])
    assert 455.5 in set(ev["t_s"])


def test_fault_carry_matters(faulty, tmp_path, monkeypatch):
    """Routing's view forgetting the links of the block before (a failure at a block's first
    steps known at once) loses fewer pair-steps: the summary differs."""
    from netemu.plan import stream
    sc, out, summary = faulty
    real = stream._believed

    def forgetful(flt, *a):
        flt["tail"] = None
        return real(flt, *a)

    monkeypatch.setattr(stream, "_believed", forgetful)
    got = tmp_path / "blocked"
    got.mkdir()
    s = stream_plan(sc, got, workers=1, block_steps=1)
    assert s["faults"]["blackholed_pair_steps"] < summary["faults"]["blackholed_pair_steps"]
    assert (out / "paths.parquet").read_bytes() != (got / "paths.parquet").read_bytes()
