"""Trace replay: preparing a replay (mapping, modes, counts; bad input) and replays through the
emulated constellation (root; CI): open-loop one-way delay against the light-time of the path,
closed-loop messages delivered byte for byte, a mixed trace split by protocol."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netemu
from netemu.traffic.replay import TraceReplay

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TRACES = ROOT / "traces"


@pytest.fixture(scope="module")
def wl_plan():
    return netemu.make_plan(netemu.load_scenario(DATA / "workloads.toml"), workers=2)


def _mixed_trace(path: Path, udp_packets: int = 200, udp_rate_hz: float = 100.0) -> None:
    """The TCP flows of upload.pcap, checkpoint.pcap and allreduce.pcap, each moved to start at
    the same instant, plus a UDP telemetry stream from the orbit side (100/s, 1,000 B)."""
    from scapy.all import IP, UDP, Ether, Raw, rdpcap, wrpcap
    tcp = []
    for name in ("upload", "checkpoint", "allreduce"):
        pk = list(rdpcap(str(TRACES / f"{name}.pcap")))
        shift = float(pk[0].time)
        for p in pk:
            p.time = float(p.time) - shift
        tcp += pk
    udp = []
    for i in range(udp_packets):
        p = Ether() / IP(src="10.77.0.2", dst="10.77.0.1") / UDP(sport=5000, dport=6000) / Raw(b"\0" * 972)
        p.time = i / udp_rate_hz
        udp.append(p)
    wrpcap(str(path), sorted(tcp + udp, key=lambda p: float(p.time)))


@pytest.mark.parametrize("name", ["inference", "upload", "checkpoint", "allreduce"])
def test_shipped_traces_prepare_for_closed_loop(wl_plan, name):
    rp = TraceReplay(wl_plan, TRACES / f"{name}.pcap")
    f = rp.flows
    assert (f["mode"] == "closed").all() and rp.counts["unmapped"] == 0 and rp.counts["unparseable"] == 0
    # the messages carry exactly the bytes each side sent (sequence spans: retransmissions once)
    sent = rp.messages.groupby("sender")["bytes"].sum()
    assert sent.get("client", 0) == f["client_bytes"].sum() and sent.get("server", 0) == f["server_bytes"].sum()
    expect = {"upload": (3 * 2_000_037, 3 * 16), "checkpoint": (37, 5_000_000)}
    if name in expect:
        assert (sent.get("client", 0), sent.get("server", 0)) == expect[name]
    if name == "allreduce":      # two ranks, two steps, two phases of 500 KB each way (and the
        # refused connection attempts of a rank that came up before its neighbour: no payload)
        moved = f["client_bytes"] + f["server_bytes"]
        assert sorted(moved[moved > 0]) == [2_000_000, 2_000_000]


# --------------------------------------------------------------------------- preparation


def test_auto_mapping_and_modes(wl_plan):
    rp = TraceReplay(wl_plan, TRACES / "inference.pcap")
    # the scenario's first workload: chat from g-beijing to w03-00; the trace's client is the ground side
    assert rp.mapping == {"10.77.0.1": "g-beijing", "10.77.0.2": "w03-00"} and rp.mapping_source == "auto"
    n = rp.counts["ip_packets"]
    assert rp.counts["unmapped"] == 0 and rp.counts["open_loop"] == 0           # TCP: closed-loop
    assert rp.counts["closed_loop_flow_packets"] == n
    assert (rp.flows["mode"] == "closed").all()
    m = rp.messages
    # each request: the client's request, then the server's streamed answer, in that order
    assert set(m.groupby("flow")["sender"].first()) == {"client"}
    assert m.groupby("flow").size().min() >= 2
    up = m[m["sender"] == "client"].groupby("flow")["bytes"].first()
    assert ((up - 37) % 1 == 0).all() and (up > 1000).all()                      # 37-byte request header
    op = TraceReplay(wl_plan, TRACES / "inference.pcap", mode="open")
    assert op.counts["open_loop"] == n and not len(op.messages)
    assert op.open_schedule["size_bytes"].sum() == rp.flows["bytes"].sum()
    given = TraceReplay(wl_plan, TRACES / "inference.pcap", mapping="10.77.0.1=g-sanya,10.77.0.2=w02-01")
    assert given.mapping == {"10.77.0.1": "g-sanya", "10.77.0.2": "w02-01"}


def test_mixed_trace_splits_by_protocol(wl_plan, tmp_path):
    _mixed_trace(tmp_path / "mixed.pcap")
    rp = TraceReplay(wl_plan, tmp_path / "mixed.pcap")
    assert rp.counts["open_loop"] == 200 and set(rp.open_schedule["proto"]) == {17}
    assert set(rp.flows.loc[rp.flows["proto"] == "udp", "mode"]) == {"open"}
    assert set(rp.flows.loc[rp.flows["proto"] == "tcp", "mode"]) == {"closed"}
    closed = TraceReplay(wl_plan, tmp_path / "mixed.pcap", mode="closed")
    n_tcp = int(((rp.flows["proto"] == "tcp") & (rp.flows["client_bytes"] + rp.flows["server_bytes"] > 0)).sum())
    assert closed.counts["open_loop"] == 0 and closed.messages["flow"].nunique() == n_tcp + 1   # + the UDP stream
    assert (closed.flows["mode"] == "closed").all()


def test_unmapped_packets_are_counted(wl_plan, tmp_path):
    from scapy.all import IP, UDP, Ether, Raw, wrpcap
    pk = []
    for i in range(30):
        p = Ether() / IP(src="10.0.0.1", dst="10.0.0.2" if i < 20 else "10.0.0.9") / UDP() / Raw(b"x" * 100)
        p.time = 1.0 + i * 0.01
        pk.append(p)
    wrpcap(str(tmp_path / "u.pcap"), pk)
    rp = TraceReplay(wl_plan, tmp_path / "u.pcap", mapping="10.0.0.1=g-beijing,10.0.0.2=w03-00")
    assert rp.counts["unmapped"] == 10 and rp.counts["open_loop"] == 20


def _truncated(tmp_path: Path) -> Path:
    data = (TRACES / "checkpoint.pcap").read_bytes()
    p = tmp_path / "cut.pcap"
    p.write_bytes(data[: len(data) - 50])
    return p


def _no_ip(tmp_path: Path) -> Path:
    from scapy.all import ARP, Ether, wrpcap
    p = tmp_path / "arp.pcap"
    wrpcap(str(p), [Ether() / ARP(pdst="10.0.0.1") for _ in range(5)])
    return p


@pytest.mark.parametrize("make, kw, match", [
    (_truncated, {}, r"cut\.pcap.*truncated"),
    (_no_ip, {}, r"arp\.pcap.*no IP traffic"),
    (lambda t: TRACES / "upload.pcap", {"mapping": "10.77.0.1=g-nowhere"}, r"g-nowhere"),
    (lambda t: TRACES / "upload.pcap", {"mapping": "10.77.0.1=w00-00,10.77.0.2=w03-00"}, r"w00-00.*not an endpoint"),
    (lambda t: TRACES / "upload.pcap", {"mapping": "10.77.0.1-g-beijing"}, r"--map"),
    (lambda t: TRACES / "upload.pcap", {"mode": "sideways"}, r"--mode.*auto, open, closed"),
    (lambda t: TRACES / "upload.pcap", {"mapping": "10.9.9.9=g-beijing"}, r"nothing to replay.*unmapped"),
])
def test_bad_input_is_one_clear_error(wl_plan, tmp_path, make, kw, match):
    with pytest.raises(netemu.TraceError, match=match):
        TraceReplay(wl_plan, make(tmp_path), **kw)


def test_trace_inspect_cli(tmp_path):
    from netemu.traffic.trace import read_trace
    n = len(read_trace(TRACES / "upload.pcap").t_s)
    r = subprocess.run([sys.executable, "-m", "netemu", "trace", "inspect", str(TRACES / "upload.pcap")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "10.77.0.1" in r.stdout and "tcp" in r.stdout and f"{n} IP" in r.stdout.replace(",", "")
    r = subprocess.run([sys.executable, "-m", "netemu", "trace", "inspect", "--json", str(TRACES / "upload.pcap")],
                       capture_output=True, text=True)
    info = json.loads(r.stdout)
    assert info["counts"]["ip"] == n
    r = subprocess.run([sys.executable, "-m", "netemu", "trace", "inspect", str(_truncated(tmp_path))],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cut.pcap" in r.stderr and "truncated" in r.stderr


# --------------------------------------------------------------------------- live replays (root)


@pytest.mark.root
@pytest.mark.timing
def test_open_loop_one_way_delay_is_the_light_time(root_env, wl_plan, tmp_path):
    rp = TraceReplay(wl_plan, TRACES / "inference.pcap", mode="open")
    # t = 300-316: Beijing and w03-00 share a ground link; no workloads, so the path is unloaded
    netemu.run(wl_plan, tmp_path, workloads=False, replay=rp, start_s=300, duration_s=rp.window_s(start_s=300))
    pk = pd.read_parquet(tmp_path / "packets.parquet")
    assert len(pk) == rp.counts["ip_packets"]
    assert not pk["lost"].any() and not pk["send_failed"].any() and not pk["reordered"].any()
    assert (pk["duplicates"] == 0).all()
    err = pk["owd_ms"] - pk["oracle_owd_ms"]
    assert err.abs().quantile(0.99) <= 0.5, err.describe()
    assert err.min() >= -0.3                                           # never faster than light
    # the original timing, at the sender
    gap_err_us = (np.diff(pk.sort_values("idx")["t_send_s"]) - np.diff(pk.sort_values("idx")["t_trace_s"])) * 1e6
    assert np.percentile(np.abs(gap_err_us), 50) < 50
    fl = pd.read_parquet(tmp_path / "flows.parquet")
    assert (fl["bytes_delivered"] == fl["bytes_sent"]).all() and fl["bytes_sent"].sum() == pk["size_bytes"].sum()
    s = json.loads((tmp_path / "summary.json").read_text())["replay"]
    assert s["open_loop"]["received"] == len(pk) and s["counts"]["unmapped"] == 0 and not s["failures"]
    # the report's replay sentence says the summary's counts (and every headline number is the run's)
    from test_report import check_headline_numbers
    o = s["open_loop"]
    assert o["send_failed"] == 0 and o["lost_no_path"] == 0 and o["not_attempted"] == 0
    assert (f"delivered {o['received']:,} of {o['packets']:,} packets open-loop (0 lost in the network; "
            f"{o['reordered']:,} reordered)") in (tmp_path / "report.html").read_text()
    check_headline_numbers(tmp_path)
    # the run wrote the time view's positions (its window's steps) and the report shows the view
    vp = pd.read_parquet(tmp_path / "view_positions.parquet")
    assert vp["t_s"].min() == 300 and vp["t_s"].max() <= 300 + rp.window_s(start_s=300) + 1
    assert "id='nv-slider'" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report_files" / "timeview-data.js").exists() and (tmp_path / "figures" / "replay_owd.png").exists()


@pytest.mark.root
def test_closed_and_open_loop_in_one_mixed_trace(root_env, wl_plan, tmp_path):
    _mixed_trace(tmp_path / "mixed.pcap")
    rp = TraceReplay(wl_plan, tmp_path / "mixed.pcap")
    out = tmp_path / "run"
    info = netemu.run(wl_plan, out, workloads=False, replay=rp, start_s=300, duration_s=rp.window_s(start_s=300))
    msgs = pd.read_parquet(out / "messages.parquet")
    assert len(msgs) == len(rp.messages) and (msgs["status"] == "done").all(), msgs
    assert (msgs["bytes_delivered"] == msgs["bytes_expected"]).all()
    assert msgs["bytes_expected"].sum() == rp.messages["bytes"].sum() >= 3 * 2_000_000 + 5_000_000 + 4_000_000
    # each ≥ 2 MB message crosses a 100 Mbit/s ground link: at least 160 ms
    big = msgs[msgs["bytes_expected"] >= 2_000_000]
    assert len(big) >= 4 and (big["completion_ms"] >= 160).all()
    pk = pd.read_parquet(out / "packets.parquet")
    assert len(pk) == 200 and (pk["proto"] == 17).all() and not pk["lost"].any()
    fl = pd.read_parquet(out / "flows.parquet").set_index("proto")
    assert fl.loc["udp", "mode"] == "open"
    tcp = fl.loc[["tcp"]]
    assert (tcp["bytes_delivered"] == tcp["bytes_sent"]).all() and (tcp["throughput_mbps"].dropna() <= 100).all()
    # the run ended once the replay had (not at the 60-s tail)
    assert info["window"]["t_end_s"] - info["window"]["t0_s"] > 10 and info["play_s"] < 30


@pytest.mark.root
def test_a_slow_starting_agent_delays_trace_time_0_not_the_messages(root_env, wl_plan, tmp_path, monkeypatch):
    # The server's agent starts 1.5 s late (as on a busy CPU, where the replay's Python programs
    # took longer than the lead before trace time 0): its client must not find it not listening
    # (all messages "not started"); trace time 0 waits for it, and the run says by how much.
    from netemu.emulate.live import LiveNetwork
    popen = LiveNetwork.popen
    delay_s = 1.5

    def slow_server_agent(self, node, cmd, **kw):
        if node == "w03-00" and "netemu.traffic.agent" in cmd:
            cmd = ["sh", "-c", f'sleep {delay_s}; exec "$@"', "sh", *cmd]
        return popen(self, node, cmd, **kw)
    monkeypatch.setattr(LiveNetwork, "popen", slow_server_agent)
    rp = TraceReplay(wl_plan, TRACES / "upload.pcap")
    assert set(rp.flows["server_node"]) == {"w03-00"} and rp.span_s < 0.1
    out = tmp_path / "run"
    info = netemu.run(wl_plan, out, workloads=False, replay=rp, start_s=300, duration_s=rp.window_s(start_s=300))
    msgs = pd.read_parquet(out / "messages.parquet")
    assert len(msgs) == 6 and (msgs["status"] == "done").all(), msgs
    assert (msgs["bytes_delivered"] == msgs["bytes_expected"]).all()
    s = json.loads((out / "summary.json").read_text())["replay"]
    st, c = s["start"], s["closed_loop"]
    # the programs took the delay and more to start, which left no spare time before the planned
    # trace time 0 (the run starts them well under 1 s before it): trace time 0 waited that long
    assert st["ready_wall_s"] >= delay_s and st["late_s"] >= -st["spare_wall_s"] > delay_s - 1.0
    assert st["t0_s"] == pytest.approx(300 + 0.5 + st["late_s"], abs=1e-3)
    assert c["not_started"] == 0 and c["flow_errors"] == {} and c["flow_start_late_ms_max"] < 100
    assert msgs["t_start_s"].min() >= st["t0_s"] - 1e-3
    assert any("trace time 0 came" in w and "late" in w for w in info["warnings"])


@pytest.mark.root
def test_cli_replay_bad_trace_leaves_nothing(root_env, tmp_path):
    from netemu.emulate.netns import list_netemu_namespaces
    before = sorted(list_netemu_namespaces())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "netemu", "replay", str(DATA / "workloads.toml"),
                        str(_truncated(tmp_path)), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "cut.pcap" in r.stderr and "truncated" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("netemu: error:")
    r = subprocess.run([sys.executable, "-m", "netemu", "replay", str(DATA / "workloads.toml"),
                        str(TRACES / "upload.pcap"), "--map", "10.77.0.1=g-mars", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "g-mars" in r.stderr
    assert not out.exists() and sorted(list_netemu_namespaces()) == before


def test_out_of_order_packets_are_sorted_before_the_build(wl_plan, tmp_path):
    # Capture order steps back twice: once inside the trace, once before its first packet. The
    # open-loop schedule must be in time order from 0 (the sender's own check), counted.
    from scapy.all import IP, UDP, Ether, Raw, wrpcap
    from netemu.traffic.openloop import check_schedule
    times = [1.0 + i * 0.01 for i in range(20)]
    times[7], times[8] = times[8], times[7]
    times.append(0.5)
    pk = []
    for t in times:
        p = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"x" * 100)
        p.time = t
        pk.append(p)
    wrpcap(str(tmp_path / "o.pcap"), pk)
    rp = TraceReplay(wl_plan, tmp_path / "o.pcap", mapping="10.0.0.1=g-beijing,10.0.0.2=w03-00", mode="open")
    t = rp.open_schedule["t_s"].to_numpy()
    assert len(t) == 21 and (np.diff(t) >= 0).all() and t[0] == 0.0
    assert t[-1] == pytest.approx(0.69, abs=1e-6)
    assert rp.counts["out_of_order"] == 2
    n = len(t)
    check_schedule({"idx": rp.open_schedule["idx"].to_numpy(), "t_s": t,
                    "size_bytes": rp.open_schedule["size_bytes"].to_numpy(), "dst": np.zeros(n, np.int32),
                    "dst_addrs": np.array(["10.128.0.1"])})
