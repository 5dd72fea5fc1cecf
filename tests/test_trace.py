"""Packet traces: every link type parses, sizes are IP lengths, flows and messages are exact, and
every unreadable file gives one TraceError naming the file and the problem.

Captures are written with scapy (an independent writer and, for the differential test, an
independent parser) or record by record where scapy cannot write the case (short snaplen,
cut files)."""

import json
import random
import struct

import numpy as np
import pytest
from scapy.all import (ARP, IP, TCP, UDP, CookedLinux, CookedLinuxV2, Dot1Q, Ether, IPv6,
                       IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, Loopback, PcapNgWriter, Raw,
                       raw, rdpcap, wrpcap)

from netemu.errors import TraceError
from netemu.traffic.trace import (auto_map, flow_of_packets, flows, format_inspect, inspect, messages,
                          open_loop_schedule, parse_map, read_trace)

T0 = 1_700_000_000


def write_pcap(path, records, linktype=1, order="<"):
    """Write a classic pcap by hand: records are (t_s, frame bytes[, wire length])."""
    with open(path, "wb") as f:
        f.write(struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for rec in records:
            t_s, frame = rec[0], bytes(rec[1])
            wirelen = rec[2] if len(rec) > 2 else len(frame)
            us = round(t_s * 1e6)
            f.write(struct.pack(order + "IIII", T0 + us // 1_000_000, us % 1_000_000, len(frame),
                                wirelen) + frame)
    return path


MAC = "02:00:00:00:00:02"


def eth(payload):
    return Ether(src="02:00:00:00:00:01", dst=MAC) / payload


C, S = "10.0.0.1", "10.0.0.2"


def tcp(t, src_is_client, flags, seq, ack=0, n=0):
    src, dst, sport, dport = (C, S, 40000, 80) if src_is_client else (S, C, 80, 40000)
    pkt = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq % 2**32,
                                     ack=ack % 2**32)
    return (t, eth(pkt / Raw(b"x" * n)) if n else eth(pkt))


def conversation(isn_c=1000, isn_s=5000):
    """Handshake; a 5,000-byte request in 4 segments, the second retransmitted; a 20,000-byte
    response; 2 s think; a 300-byte request and a 1,000-byte response; FINs."""
    c, s = isn_c + 1, isn_s + 1
    recs = [tcp(0.0, True, "S", isn_c), tcp(0.010, False, "SA", isn_s, c),
            tcp(0.020, True, "A", c, s)]
    segs = [1448, 1448, 1448, 656]
    for i, n in enumerate(segs):
        recs.append(tcp(0.100 + i / 1000, True, "PA", c + sum(segs[:i]), s, n))
    recs.append(tcp(0.150, True, "PA", c + 1448, s, 1448))  # retransmission of segment 2
    c += 5000
    recs.append(tcp(0.160, False, "A", s, c))
    sizes = [1448] * 13 + [20000 - 13 * 1448]
    for i, n in enumerate(sizes):
        recs.append(tcp(0.200 + i / 1000, False, "A", s + sum(sizes[:i]), c, n))
        if i % 2:
            recs.append(tcp(0.2005 + i / 1000, True, "A", c, s + sum(sizes[:i + 1])))
    s += 20000
    recs += [tcp(2.213, True, "PA", c, s, 300), tcp(2.300, False, "PA", s, c + 300, 1000)]
    c, s = c + 300, s + 1000
    recs += [tcp(2.400, True, "FA", c, s), tcp(2.401, False, "FA", s, c + 1),
             tcp(2.402, True, "A", c + 1, s + 1)]
    return recs


# ------------------------------------------------------------------ link types and sizes

def test_sizes_are_ip_lengths_even_with_a_short_snaplen(tmp_path):
    full = eth(IP(src=C, dst=S) / TCP(sport=1, dport=2) / Raw(b"y" * 1000))
    udp6 = eth(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=5, dport=6) / Raw(b"z" * 700))
    b, b6 = raw(full), raw(udp6)
    path = write_pcap(tmp_path / "snap.pcap", [(0.0, b[:54], len(b)), (0.5, b6[:62], len(b6))])
    tr = read_trace(path)
    assert tr.size_bytes.tolist() == [1040, 748]
    assert tr.payload_bytes.tolist() == [1000, 700]
    assert tr.addrs == (C, S, "fd00::1", "fd00::2")
    assert tr.proto.tolist() == [6, 17] and tr.sport.tolist() == [1, 5]
    assert tr.t_s.tolist() == [0.0, 0.5] and tr.t0_unix_s == T0
    assert tr.counts == {"packets": 2, "ip": 2, "non_ip": 0, "unparseable": 0, "out_of_order": 0}


IP4 = IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=2000) / Raw(b"a" * 100)
IP6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1000, dport=2000) / Raw(b"a" * 100)


@pytest.mark.parametrize("linktype,frame,size", [
    (1, Ether(dst=MAC) / IP4, 128),
    (1, Ether(dst=MAC) / Dot1Q(vlan=7) / IP4, 128),
    (1, Ether(dst=MAC) / Dot1Q(vlan=7) / Dot1Q(vlan=8) / IP6, 148),
    (101, IP4, 128), (101, IP6, 148), (228, IP4, 128), (229, IP6, 148),
    (113, CookedLinux(proto=0x0800) / IP4, 128),
    (276, CookedLinuxV2(proto=0x86DD) / IP6, 148),
    (0, struct.pack("<I", 2) + raw(IP4), 128),   # NULL, little-endian host
    (0, struct.pack(">I", 30) + raw(IP6), 148),  # NULL, big-endian macOS host
    (108, struct.pack(">I", 24) + raw(IP6), 148),
])
def test_each_link_type_parses(tmp_path, linktype, frame, size):
    tr = read_trace(write_pcap(tmp_path / "l.pcap", [(0.0, raw(frame))] * 2, linktype))
    assert tr.linktype == linktype
    assert tr.size_bytes.tolist() == [size, size]
    assert tr.payload_bytes.tolist() == [100, 100]
    assert (tr.sport.tolist(), tr.dport.tolist()) == ([1000] * 2, [2000] * 2)
    assert tr.counts["ip"] == 2 and tr.counts["unparseable"] == 0


def test_scapy_written_captures_of_each_writer(tmp_path):
    pkts = [CookedLinux() / IP4, CookedLinux() / IP6]
    wrpcap(str(tmp_path / "sll.pcap"), pkts)
    assert read_trace(tmp_path / "sll.pcap").size_bytes.tolist() == [128, 148]
    wrpcap(str(tmp_path / "lo.pcap"), [Loopback() / IP4])
    assert read_trace(tmp_path / "lo.pcap").size_bytes.tolist() == [128]
    w = PcapNgWriter(str(tmp_path / "ng.pcapng"))
    for i, p in enumerate([Ether(dst=MAC) / IP4, Ether(dst=MAC) / ARP(), Ether(dst=MAC) / IP6]):
        p.time = T0 + i * 0.25
        w.write(p)
    w.close()
    tr = read_trace(tmp_path / "ng.pcapng")
    assert tr.size_bytes.tolist() == [128, 148]
    assert tr.index.tolist() == [0, 2]
    assert tr.t_s.tolist() == pytest.approx([0.0, 0.5], abs=1e-6)
    assert tr.counts == {"packets": 3, "ip": 2, "non_ip": 1, "unparseable": 0, "out_of_order": 0}


def test_ipv6_extension_headers_and_fragments(tmp_path):
    hbh = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / TCP(sport=7, dport=8) / \
        Raw(b"q" * 50)
    later_frag = IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(nh=17, offset=100) / \
        Raw(b"f" * 64)
    tr = read_trace(write_pcap(tmp_path / "x.pcap", [(0, raw(hbh)), (0, raw(later_frag))], 101))
    assert tr.proto.tolist() == [6, 17]
    assert tr.sport.tolist() == [7, 0]  # a later fragment has no ports
    assert tr.payload_bytes.tolist() == [50, 64]
    assert tr.size_bytes.tolist() == [len(hbh), len(later_frag)]


def test_non_ip_and_unparseable_are_counted(tmp_path):
    good = raw(eth(IP4))
    bad_version = bytearray(good)
    bad_version[14] = 0x75
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x43
    recs = [(0.1, good), (0.1, raw(eth(ARP()))), (0.2, bad_version), (0.3, good[:30], len(good)),
            (0.4, bad_ihl), (0.5, raw(Ether(dst=MAC, type=0x88CC) / Raw(b"lldp"))),
            (0.6, good[:14 + 20 + 2], len(good)),  # UDP ports cut
            (0.05, good)]
    tr = read_trace(write_pcap(tmp_path / "mix.pcap", recs))
    assert tr.counts == {"packets": 8, "ip": 2, "non_ip": 2, "unparseable": 4, "out_of_order": 1}
    assert tr.index.tolist() == [0, 7]


def test_agrees_with_scapy_on_random_packets(tmp_path):
    """Differential: our header parser against scapy's full dissection."""
    rng = random.Random(7)
    pkts = []
    for i in range(300):
        v6 = rng.random() < 0.3
        net = (IPv6(src=f"fd00::{rng.randint(1, 9)}", dst=f"fd00::{rng.randint(1, 9)}") if v6
               else IP(src=f"10.0.0.{rng.randint(1, 9)}", dst=f"10.0.0.{rng.randint(1, 9)}",
                       options=[] if rng.random() < 0.8 else b"\x01" * 8))
        l4 = (TCP(sport=rng.randint(1, 65535), dport=rng.randint(1, 65535),
                  seq=rng.randint(0, 2**32 - 1), flags=rng.choice(["S", "SA", "A", "PA", "F"]))
              if rng.random() < 0.6 else UDP(sport=rng.randint(1, 65535), dport=rng.randint(1, 9)))
        frame = eth(net / l4 / Raw(b"p" * rng.randint(0, 1400)))
        if rng.random() < 0.3:
            frame = Ether(dst=MAC) / Dot1Q(vlan=rng.randint(1, 4000)) / net / l4 / Raw(b"p" * 9)
        frame.time = T0 + i / 100
        pkts.append(frame)
    wrpcap(str(tmp_path / "r.pcap"), pkts)
    tr = read_trace(tmp_path / "r.pcap")
    ref = rdpcap(str(tmp_path / "r.pcap"))
    assert len(tr) == len(ref)
    for i, p in enumerate(ref):
        net = p[IPv6] if IPv6 in p else p[IP]
        l4 = p[TCP] if TCP in p else p[UDP]
        assert tr.size_bytes[i] == len(net)
        assert tr.addrs[tr.src[i]] == net.src and tr.addrs[tr.dst[i]] == net.dst
        assert (tr.sport[i], tr.dport[i]) == (l4.sport, l4.dport)
        assert tr.payload_bytes[i] == len(l4.payload)
        if TCP in p:
            assert (tr.seq[i], tr.tcp_flags[i]) == (l4.seq, int(l4.flags))


# ------------------------------------------------------------------ flows and messages

def test_tcp_conversation_flow_and_messages(tmp_path):
    recs = conversation()
    tr = read_trace(write_pcap(tmp_path / "conv.pcap", recs))
    table = flows(tr)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.proto, row.client, row.client_port, row.server, row.server_port) == \
        ("tcp", C, 40000, S, 80)
    assert row.packets == len(recs)
    assert row.bytes == sum(len(r[1][IP]) for r in recs)
    assert (row.client_bytes, row.server_bytes) == (5300, 21000)
    assert (row.t_first_s, row.t_last_s) == pytest.approx((0.0, 2.402), abs=1e-9)
    assert row.rate_mbps == pytest.approx(row.bytes * 8 / 1e6 / 2.402)

    m = messages(tr)
    assert m.sender.tolist() == ["client", "server", "client", "server"]
    assert m.msg.tolist() == [0, 1, 2, 3] and (m.flow == 0).all()
    assert m.bytes.tolist() == [5000, 20000, 300, 1000]
    assert m.packets.tolist() == [5, 14, 1, 1]
    assert m.t_start_s.tolist() == pytest.approx([0.100, 0.200, 2.213, 2.300], abs=1e-9)
    assert m.t_end_s.tolist() == pytest.approx([0.150, 0.213, 2.213, 2.300], abs=1e-9)
    assert m.think_s.tolist() == pytest.approx([0.100, 0.050, 2.000, 0.087], abs=1e-9)


def test_client_is_the_syn_sender_even_when_captured_late(tmp_path):
    recs = conversation()
    recs.insert(0, tcp(-0.5, False, "A", 9, 9))  # a stray server packet before the SYN
    tr = read_trace(write_pcap(tmp_path / "late.pcap", recs))
    assert tuple(flows(tr).iloc[0][["client", "server"]]) == (C, S)
    assert tr.t_s[0] == 0.0 and tr.t_s[1] == pytest.approx(0.5)


def test_sequence_wrap_around(tmp_path):
    tr = read_trace(write_pcap(tmp_path / "wrap.pcap", conversation(isn_c=2**32 - 3000,
                                                                      isn_s=2**32 - 20)))
    assert tr.seq.max() > 2**32 - 3000 and tr.seq.min() < 3000
    row = flows(tr).iloc[0]
    assert (row.client_bytes, row.server_bytes) == (5300, 21000)
    assert messages(tr).bytes.tolist() == [5000, 20000, 300, 1000]


def test_retransmission_during_the_response_splits_nothing(tmp_path):
    recs = conversation()
    recs.insert(20, tcp(0.2055, True, "PA", 1001 + 3 * 1448, 5001, 656))
    m = messages(read_trace(write_pcap(tmp_path / "rtx.pcap", recs)))
    assert m.bytes.tolist() == [5000, 20000, 300, 1000]
    assert m.packets.tolist() == [6, 14, 1, 1]
    assert m.t_end_s[1] == pytest.approx(0.213)


def test_udp_messages_split_on_direction_and_silence(tmp_path):
    def udp(t, up, n):
        a, b = ((C, 5000), (S, 53)) if up else ((S, 53), (C, 5000))
        return (t, eth(IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / Raw(b"u" * n)))
    recs = [udp(1.0, True, 100), udp(1.1, True, 200), udp(1.3, False, 1000),
            udp(1.4, False, 1000), udp(3.0, False, 10), udp(3.5, True, 50)]
    tr = read_trace(write_pcap(tmp_path / "u.pcap", recs))
    row = flows(tr).iloc[0]
    assert (row.proto, row.client, row.client_port) == ("udp", C, 5000)
    assert (row.client_bytes, row.server_bytes) == (350, 2010)
    m = messages(tr, idle_s=1.0)
    assert m.sender.tolist() == ["client", "server", "server", "client"]
    assert m.bytes.tolist() == [300, 2000, 10, 50]
    assert m.packets.tolist() == [2, 2, 1, 1]
    assert m.think_s.tolist() == pytest.approx([0.0, 0.2, 1.6, 0.5])


def test_udp_tie_goes_to_the_higher_port_and_flows_without_payload_have_no_messages(tmp_path):
    a = eth(IP(src=C, dst=S) / UDP(sport=53, dport=33000))
    b = eth(IP(src=S, dst=C) / UDP(sport=33000, dport=53))
    ping = eth(IP(src=C, dst=S) / Raw(b"\x08\x00" + b"\x00" * 6))
    ping[IP].proto = 1
    tr = read_trace(write_pcap(tmp_path / "tie.pcap", [(0, a), (0, b), (1, raw(ping))]))
    table = flows(tr)
    assert table.proto.tolist() == ["udp", "icmp"]
    assert (table.client[0], table.client_port[0], table.server_port[0]) == (S, 33000, 53)
    assert messages(tr).empty
    np.testing.assert_array_equal(flow_of_packets(tr), [0, 0, 1])
    np.testing.assert_array_equal(flow_of_packets(tr, table[table.proto == "icmp"]), [-1, -1, 1])


# ------------------------------------------------------------------ mapping and replay

NODES = ["g-beijing", "c-odc-00", "c-odc-01", "g-kashi"]


def test_parse_map():
    assert parse_map(" 10.0.0.5=g-beijing, FD00::0:1=c-odc-00 ", NODES) == \
        {"10.0.0.5": "g-beijing", "fd00::1": "c-odc-00"}
    with pytest.raises(TraceError, match=r"--map: unknown node 'c-odc-0'; did you mean .*c-odc-00"):
        parse_map("10.0.0.5=c-odc-0", NODES)
    with pytest.raises(TraceError, match=r"--map: '10.0.0.300' is not an IPv4 or IPv6 address"):
        parse_map("10.0.0.300=g-beijing", NODES)
    with pytest.raises(TraceError, match=r"replay.map: expected ADDRESS=NODE, found '10.0.0.5'"):
        parse_map("10.0.0.5", NODES, where="replay.map")
    with pytest.raises(TraceError, match="expected ADDRESS=NODE"):
        parse_map("10.0.0.5=g-beijing,,", NODES)
    with pytest.raises(TraceError, match="10.0.0.5 is mapped twice"):
        parse_map("10.0.0.5=g-beijing,10.0.0.5=g-kashi", NODES)


def test_auto_map_and_open_loop_schedule(tmp_path):
    recs = conversation()
    other = eth(IP(src="10.0.0.9", dst=C) / UDP(sport=1, dport=2) / Raw(b"o" * 10))
    recs.insert(5, (0.05, other))
    tr = read_trace(write_pcap(tmp_path / "m.pcap", recs))
    mapping = auto_map(tr, "g-beijing", "c-odc-00")
    assert mapping == {C: "g-beijing", S: "c-odc-00"}

    sched, skipped = open_loop_schedule(tr, mapping)
    assert skipped == {"other_proto": 0, "unmapped": 1, "same_node": 0}
    assert len(sched) == len(recs) - 1
    assert list(sched.columns) == ["idx", "t_s", "src_node", "dst_node", "size_bytes", "proto",
                                   "flow"]
    assert sched.idx.tolist() == [i for i in range(len(recs)) if i != 5]
    assert sched.src_node[0] == "g-beijing" and sched.dst_node[1] == "g-beijing"
    assert set(sched.flow) == {0}

    sched, skipped = open_loop_schedule(tr, {C: "g-beijing", S: "g-beijing", "10.0.0.9": "x"},
                                        protos=[17])
    assert skipped == {"other_proto": len(recs) - 1, "unmapped": 0, "same_node": 0}
    assert sched.src_node.tolist() == ["x"]


def test_auto_map_needs_two_addresses(tmp_path):
    tr = read_trace(write_pcap(tmp_path / "one.pcap", [(0, eth(IP(src=C, dst=C) / UDP()))]))
    with pytest.raises(TraceError, match=r"one\.pcap: cannot map automatically: expected at "
                                         r"least two IP addresses, found 1"):
        auto_map(tr, "a", "b")


def test_inspect_is_json_and_formats(tmp_path):
    path = write_pcap(tmp_path / "conv.pcap", conversation())
    info = inspect(path, top=3)
    json.dumps(info)
    assert info["linktype"] == "EN10MB (1)"
    assert info["protocols"]["tcp"]["packets"] == info["counts"]["ip"]
    assert {a["address"] for a in info["top_addresses"]} == {C, S}
    assert info["top_flows"][0]["server_bytes"] == 21000
    text = format_inspect(info)
    assert "10.0.0.1:40000" in text and "21000" in text and "conv.pcap" in text


def test_max_packets_and_big_endian_nanosecond_files(tmp_path):
    path = tmp_path / "be.pcap"
    frame = raw(eth(IP4))
    with open(path, "wb") as f:
        f.write(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        for i in range(5):
            f.write(struct.pack(">IIII", T0, 123_456_789 + i, len(frame), len(frame)) + frame)
    tr = read_trace(path)
    assert np.diff(tr.t_s) == pytest.approx([1e-9] * 4, abs=1e-12)
    assert read_trace(path, max_packets=3).counts["packets"] == 3


# ------------------------------------------------------------------ errors

def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.pcap: no such file"):
        read_trace(tmp_path / "nope.pcap")


def test_bad_magic(tmp_path):
    (tmp_path / "x.pcap").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(TraceError, match=r"x\.pcap: not a pcap or pcapng file: .*found 47494638"):
        read_trace(tmp_path / "x.pcap")


@pytest.mark.parametrize("cut,message", [
    (142 + 7, r"truncated file at packet 3 \(counting from 1\): its record header has 9 of 16 "
              r"bytes \(2 complete packets precede it\)"),
    (30, r"truncated file: the body of packet 3 \(counting from 1\) is cut short by 30 bytes"),
])
def test_truncated_pcap(tmp_path, cut, message):
    frame = raw(eth(IP4))
    assert len(frame) == 142
    path = write_pcap(tmp_path / "cut.pcap", [(0, frame)] * 3)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(TraceError, match=r"cut\.pcap: " + message):
        read_trace(path)


def test_truncated_pcapng(tmp_path):
    w = PcapNgWriter(str(tmp_path / "cut.pcapng"))
    for p in [Ether(dst=MAC) / IP4] * 3:
        w.write(p)
    w.close()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TraceError, match=r"cut\.pcapng: truncated file at packet 3"):
        read_trace(path)


def test_no_ip_traffic(tmp_path):
    path = write_pcap(tmp_path / "arp.pcap", [(0, raw(eth(ARP())))] * 3)
    with pytest.raises(TraceError, match=r"arp\.pcap: holds no IP traffic: 3 packets, all "
                                         r"non-IP/unparseable \(3 non-IP, 0 unparseable\)"):
        read_trace(path)
    with pytest.raises(TraceError, match=r"empty\.pcap: holds no IP traffic: the file has no"):
        read_trace(write_pcap(tmp_path / "empty.pcap", []))


def test_unsupported_link_type(tmp_path):
    path = write_pcap(tmp_path / "usb.pcap", [(0, b"\x00" * 64)], linktype=189)
    with pytest.raises(TraceError, match=r"usb\.pcap: unsupported link type 189; expected one "
                                         r"of 0 \(NULL\), 1 \(EN10MB\)"):
        read_trace(path)


def test_capture_that_is_not_a_regular_file(tmp_path):
    import os
    os.mkfifo(tmp_path / "f.pcap")
    (tmp_path / "z.pcap").symlink_to("/dev/zero")
    (tmp_path / "l.pcap").symlink_to(tmp_path / "l.pcap")
    for name, found in (("f.pcap", "is a FIFO"), ("z.pcap", "is a character device"), ("l.pcap", "symbolic link loop")):
        with pytest.raises(TraceError, match=rf"{name}: expected a pcap or pcapng capture \(a regular file of at "
                                             rf"most 4 GiB\): .*{found}"):
            read_trace(tmp_path / name)
