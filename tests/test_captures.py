"""Packet captures (`netemu run --capture`): spec resolution against the run's network, the
engine's pcap files read back with scapy and tcpdump, stamps in emulated time."""

import shutil
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from netemu.emulate.captures import resolve_captures
from netemu.errors import EmulationError

LINKS = pd.DataFrame({"link": ["L0", "L1", "L2"], "a": ["g-paris", "w00-01", "g-paris"],
                      "b": ["w00-01", "w00-02", "c-odc-00"],
                      "a_ifname": ["g-paris-e0", "w00-01-e1", "g-paris-e1"],
                      "b_ifname": ["w00-01-e0", "w00-02-e0", "c-odc-00-e0"]})
NODES = ["g-paris", "w00-01", "w00-02", "c-odc-00"]


def _ends(points):
    return [(p.node, p.ifname, p.peer, p.link, p.side) for p in points]


def test_a_node_is_all_its_interfaces_and_an_interface_goes_by_name_or_neighbour():
    assert _ends(resolve_captures(["g-paris"], NODES, LINKS)) == [
        ("g-paris", "g-paris-e0", "w00-01", "L0", "a"), ("g-paris", "g-paris-e1", "c-odc-00", "L2", "a")]
    assert _ends(resolve_captures(["w00-01:w00-01-e1"], NODES, LINKS)) == [("w00-01", "w00-01-e1", "w00-02", "L1", "a")]
    assert _ends(resolve_captures(["w00-02:w00-01"], NODES, LINKS)) == [("w00-02", "w00-02-e0", "w00-01", "L1", "b")]


def test_a_link_is_both_ends_whatever_dashes_the_names_hold():
    # 'g-paris-c-odc-00' splits four ways; only g-paris | c-odc-00 names two nodes
    assert _ends(resolve_captures(["g-paris-c-odc-00"], NODES, LINKS)) == [
        ("g-paris", "g-paris-e1", "c-odc-00", "L2", "a"), ("c-odc-00", "c-odc-00-e0", "g-paris", "L2", "b")]
    # the same end asked twice is captured once
    assert len(resolve_captures(["g-paris", "g-paris:w00-01", "g-paris-w00-01"], NODES, LINKS)) == 3


@pytest.mark.parametrize("spec, says", [
    ("g-pars", "no node or link 'g-pars'; did you mean 'g-paris'"),
    ("g-pars:g-paris-e0", "no node or link 'g-pars'"),
    ("g-paris:w00-02", "g-paris has no interface or neighbour 'w00-02'; its interfaces: g-paris-e0 (to w00-01)"),
    ("g-paris-w00-02", "g-paris and w00-02 are never linked"),
    ("w07-07", "node 'w07-07' is not in this run's network"),
    ("g-paris-w07-07", "node 'w07-07' is not in this run's network"),
])
def test_bad_specs_are_one_clear_error(spec, says):
    with pytest.raises(EmulationError, match="--capture " + spec) as e:
        resolve_captures([spec], NODES, LINKS, plan_nodes=[*NODES, "w07-07"])
    assert says in str(e.value)


@pytest.mark.parametrize("flags, says", [
    (["--capture", "r00-00-r00-05"], "--capture r00-00-r00-05: r00-00 and r00-05 are never linked in this run's "
                                     "window (r00-00's neighbours: r00-01, r00-11)"),
    (["--capture", "r00-00,r0-00"], "--capture r0-00: expected NODE, NODE:IFACE or A-B with nodes of this run, "
                                    "found no node or link 'r0-00'; did you mean 'r00-00'?"),
    (["--capture", "r00-00", "--links", "kernel"], "--capture needs the link engine (--links engine): the kernel "
                                                   "backend has no capture"),
])
def test_cli_refuses_an_unknown_capture_before_building_anything(tmp_path, flags, says):
    """Exit 2, one line, no run directory (the spec is checked against the plan before it is made)."""
    import os
    if os.geteuid() != 0:
        pytest.skip("netemu run checks root first")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "netemu", "run", str(DATA / "ring.toml"), "-o", str(out),
                        "--duration", "2", *flags], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("netemu: error")]
    assert err == ["netemu: error: " + says]
    assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.iterdir())


def read_pcap(path):
    """(global header fields, [(t_s float, t_ns int, frame bytes)]) of a classic pcap file, read by hand."""
    data = path.read_bytes()
    magic, vmaj, vmin, _, _, snap, linktype = struct.unpack("<IHHiIII", data[:24])
    recs, off = [], 24
    while off < len(data):
        sec, frac, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        recs.append((sec + frac * 1e-9, sec * 10**9 + frac, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return (magic, vmaj, vmin, linktype), recs


def _icmp(path, pinger):
    """[(t_ns, type, seq)] of the ICMP echoes from (and replies to) address `pinger` in a pcap,
    read with scapy."""
    from scapy.all import ICMP, IP, PcapReader
    out = []
    with PcapReader(str(path)) as r:
        for pkt in r:
            if ICMP in pkt and (pkt[ICMP].type, pinger) in ((8, pkt[IP].src), (0, pkt[IP].dst)):
                out.append((int(round(float(pkt.time) * 1e9)), int(pkt[ICMP].type), int(pkt[ICMP].seq)))
    return out


@pytest.mark.root
def test_a_captured_ping_shows_each_echo_at_both_ends_one_light_delay_apart(ring_run):
    out, plan = ring_run["out"], ring_run["plan"]
    index = pd.read_csv(out / "captures" / "captures.csv")
    assert sorted(index["file"]) == ["captures/r00-00_r00-01.pcap", "captures/r00-01_r00-00.pcap"]
    a, b = out / "captures" / "r00-00_r00-01.pcap", out / "captures" / "r00-01_r00-00.pcap"
    (magic, vmaj, vmin, linktype), recs = read_pcap(a)
    assert (magic, vmaj, vmin, linktype) == (0xA1B23C4D, 2, 4, 1)      # libpcap, ns stamps, Ethernet
    assert dict(zip(index["file"], index["frames"]))["captures/r00-00_r00-01.pcap"] == len(recs)
    lo = pd.read_csv(out / "addresses.csv").query("ifname == 'lo'").set_index("node")["address"]
    ca, cb = _icmp(a, lo["r00-00"]), _icmp(b, lo["r00-00"])
    # the app pinged 5 times: every request and reply at each end (netemu exec's ping the other
    # way crossed the link too: tests/test_apps.py)
    for cap in (ca, cb):
        assert sorted((t, s) for _, t, s in cap) == sorted([(8, s) for s in range(1, 6)] + [(0, s) for s in range(1, 6)])
    # stamps are emulated time: the scenario epoch plus scenario seconds within the run's window
    epoch_ns = int(plan.scenario.epoch.timestamp()) * 10**9
    t_s = np.array([t - epoch_ns for t, _, _ in ca + cb]) / 1e9
    w = ring_run["info"]["window"]
    assert (t_s > w["t0_s"]).all() and (t_s < w["t_end_s"]).all()
    # a request leaves r00-00 and reaches r00-01 one link delay later (the plan's, at that instant);
    # the reply goes back the same way
    L = plan.schedule.links
    delay_ms = float(L[(L["a"] == "r00-00") & (L["b"] == "r00-01") & (L["step"] == 0)]["delay_ms"].iloc[0])
    at_a = {(ty, s): t for t, ty, s in ca}
    at_b = {(ty, s): t for t, ty, s in cb}
    one_way_ms = [(at_b[(8, s)] - at_a[(8, s)]) / 1e6 for s in range(1, 6)] + \
                 [(at_a[(0, s)] - at_b[(0, s)]) / 1e6 for s in range(1, 6)]
    # (never before the link's delay; late only by the engine's departure lateness)
    assert min(one_way_ms) > delay_ms - 0.005 and np.median(one_way_ms) < delay_ms + 0.1, (delay_ms, one_way_ms)
    assert max(one_way_ms) < delay_ms + 2, (delay_ms, one_way_ms)
    # echoes 0.2 s apart (ping -i 0.2), as the sender's end saw them
    gaps_s = np.diff(sorted(at_a[(8, s)] for s in range(1, 6))) / 1e9
    assert np.allclose(gaps_s, 0.2, atol=0.02), gaps_s
    if shutil.which("tcpdump"):
        r = subprocess.run(["tcpdump", "-nr", str(a), "-tt", "--nano", f"(icmp[icmptype] == icmp-echo and src host {lo['r00-00']}) or "
                            f"(icmp[icmptype] == icmp-echoreply and dst host {lo['r00-00']})"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count(f"{lo['r00-00']} > {lo['r00-01']}: ICMP echo request") == 5
        assert r.stdout.count(f"{lo['r00-01']} > {lo['r00-00']}: ICMP echo reply") == 5
        first = r.stdout.splitlines()[0].split()[0]          # e.g. 1773964800.512345678
        assert abs(int(first.replace(".", "")) - min(t for t, _, _ in ca)) < 1000   # scapy's float stamps: ~0.2 µs


@pytest.mark.root
def test_the_report_links_the_captures(ring_run):
    html = (ring_run["out"] / "report.html").read_text()
    assert "<h2>Packet captures</h2>" in html
    assert "href='captures/r00-00_r00-01.pcap'" in html and "href='captures/r00-01_r00-00.pcap'" in html
