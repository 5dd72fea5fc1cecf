"""UDP echo probes with microsecond timestamps (run inside emulated nodes).

All namespaces of a machine share CLOCK_MONOTONIC, so besides the round trip each probe also
measures both one-way delays exactly. Send and receive times are the kernel's stamps (transmit
stamps and SO_TIMESTAMPNS), so a probe process that is preempted or wakes late does not add that
to a delay. `ping` prints RTTs at 3 significant digits (1 ms steps
above 100 ms); these probes do not round.

    python -m netemu.emulate.probe server [--port 7777]
    python -m netemu.emulate.probe client DST [--port 7777] [--count 50] [--interval 0.02] [--size 64]
    python -m netemu.emulate.probe icmp DST [DST ...] [--count 50] [--interval 0.02]   (root: raw socket)
    python -m netemu.emulate.probe stream DST [DST ...] --interval 0.025 --out FILE     (until SIGTERM)

The client prints one CSV line per probe: seq,t_send_s,rtt_ms,fwd_ms,rev_ms (rtt empty if lost;
t_send_s on CLOCK_MONOTONIC).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

_FMT = "!Iqq"   # seq, client send ns, server receive ns
DEFAULT_PORT = 7777
_SO_TIMESTAMPNS = 35
_SO_TIMESTAMPING = 37
# software transmit stamps (taken where the driver takes the frame: a TAP's xmit, i.e. the
# moment the link engine can read it), reported in software; the frame is looped back with them
_TX_STAMP_FLAGS = (1 << 1) | (1 << 4)     # SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `sock` to be readable (poll: select() cannot watch the fds
    above 1023 that a process holding thousands of netlink sockets hands out)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(max(0.0, timeout_s) * 1e3))


def _wait_reply(sock: socket.socket, timeout_s: float) -> tuple[bool, bool]:
    """(a reply is readable, a transmit stamp is queued on `sock`) after waiting up to `timeout_s`."""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLERR)
    ev = 0
    for _, e in p.poll(max(0.0, timeout_s) * 1e3):
        ev |= e
    return bool(ev & select.POLLIN), bool(ev & select.POLLERR)


def _icmp_socket() -> socket.socket:
    """A raw ICMP socket stamping echoes in the kernel both ways, as ping's RTT excludes this
    process's own wake-up: receive stamps (SO_TIMESTAMPNS) and transmit stamps (SO_TIMESTAMPING,
    read by `_read_tx_stamps`). A probe process preempted between taking its send time and the
    send would otherwise add that stall to the RTT (1-4 ms were seen on a busy CPU)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    try:
        s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _TX_STAMP_FLAGS)
    except OSError:
        pass   # no transmit stamps: send times stay the process's own clock
    return s


def _read_tx_stamps(s: socket.socket, ident: int) -> list[tuple[int, int]]:
    """(seq, kernel transmit time in ns, CLOCK_REALTIME) of our echo requests whose stamps wait
    on `s`'s error queue. The frame comes back whole (link header included), so the echo
    request is read from its tail: every request has the same length."""
    out = []
    n = 8 + len(_ECHO_BODY)
    while True:
        try:
            data, anc, _, _ = s.recvmsg(65535, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return out
        if len(data) < n:
            continue
        typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, len(data) - n)
        if typ != 8 or rid != ident:
            continue
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING and len(value) >= 16:
                sec, nsec = struct.unpack("qq", value[:16])
                if sec or nsec:
                    out.append((rseq, sec * 1_000_000_000 + nsec))


def _recv_stamped(s: socket.socket) -> tuple[bytes, tuple, int]:
    """One datagram from `s` (with SO_TIMESTAMPNS on) and the kernel's receive time on
    CLOCK_MONOTONIC in ns. The kernel stamps on CLOCK_REALTIME; the two clocks' offset read now
    maps it (a process that wakes late for a datagram still gets the instant it arrived: a
    sleeping CPU takes ~0.1 ms to wake here, which would add to every one-way delay)."""
    data, anc, _, peer = s.recvmsg(65535, 64)
    mono = time.monotonic_ns()
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            return data, peer, sec * 1_000_000_000 + nsec - (time.time_ns() - time.monotonic_ns())
    return data, peer, mono


def serve(port: int = DEFAULT_PORT, max_s: float | None = None) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", port))
    if max_s:
        s.settimeout(max_s)
    end = time.monotonic() + max_s if max_s else None
    while end is None or time.monotonic() < end:
        try:
            data, peer, now = _recv_stamped(s)
        except socket.timeout:
            break
        if len(data) >= struct.calcsize(_FMT):
            seq, t_send, _ = struct.unpack_from(_FMT, data)
            s.sendto(struct.pack(_FMT, seq, t_send, now) + data[struct.calcsize(_FMT):], peer)


def probe(dst: str, port: int = DEFAULT_PORT, count: int = 50, interval_s: float = 0.02, size: int = 64,
          timeout_s: float = 2.0) -> list[tuple[int, float, float | None, float | None, float | None]]:
    """Send `count` probes; returns (seq, t_send_s, rtt_ms, fwd_ms, rev_ms), None where lost.
    t_send_s is CLOCK_MONOTONIC (shared by every namespace of the machine)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    try:   # transmit stamps, as for ICMP: a preemption between the send clock and the send
        s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _TX_STAMP_FLAGS)
    except OSError:
        pass
    s.setblocking(False)
    pad = b"\0" * max(0, size - struct.calcsize(_FMT))
    n_payload = struct.calcsize(_FMT) + len(pad)
    sent: dict[int, int] = {}
    got: dict[int, tuple[int, int]] = {}     # seq: (server receive ns, client receive ns)
    start = time.monotonic()
    last_send_deadline = start + count * interval_s
    seq = 0
    while True:
        now = time.monotonic()
        if seq < count and now >= start + seq * interval_s:
            t = time.monotonic_ns()
            sent[seq] = t
            try:
                s.sendto(struct.pack(_FMT, seq, t, 0) + pad, (dst, port))
            except BlockingIOError:
                pass
            seq += 1
            continue
        if seq >= count and (len(got) == count or now > last_send_deadline + timeout_s):
            break
        # Block until a reply or the next send (replies carry the kernel's receive stamp).
        wait = (start + seq * interval_s - now) if seq < count else (last_send_deadline + timeout_s - now)
        reply, stamp = _wait_reply(s, wait)
        if stamp:
            _udp_tx_stamps(s, n_payload, sent)
        if reply:
            try:
                while True:
                    data, _, t_back = _recv_stamped(s)
                    q, _, t_srv = struct.unpack_from(_FMT, data)
                    got[q] = (t_srv, t_back)
            except BlockingIOError:
                pass
    _udp_tx_stamps(s, n_payload, sent)   # a stamp read after its reply
    out = []
    for q in range(count):
        if q in got:
            t_srv, t_back = got[q]
            out.append((q, sent[q] / 1e9, (t_back - sent[q]) / 1e6, (t_srv - sent[q]) / 1e6, (t_back - t_srv) / 1e6))
        else:
            out.append((q, sent[q] / 1e9, None, None, None))
    return out


def _udp_tx_stamps(s: socket.socket, n_payload: int, sent: dict[int, int]) -> None:
    """Replace the send times in `sent` (seq: CLOCK_MONOTONIC ns) by the kernel's transmit
    stamps waiting on `s`'s error queue. The datagram comes back whole, headers included, so
    its sequence number is read at the payload's start, `n_payload` bytes from the end."""
    off = None
    while True:
        try:
            data, anc, _, _ = s.recvmsg(65535, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        if len(data) < n_payload:
            continue
        q = struct.unpack_from("!I", data, len(data) - n_payload)[0]
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING and len(value) >= 16 and q in sent:
                sec, nsec = struct.unpack("qq", value[:16])
                if sec or nsec:
                    off = (time.time_ns() - time.monotonic_ns()) if off is None else off
                    sent[q] = sec * 1_000_000_000 + nsec - off


_ECHO_BODY = b"netemu-probe" * 4


def _echo_request(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _icmp_checksum(head + _ECHO_BODY), ident, seq) + _ECHO_BODY


def _read_echo_reply(s: socket.socket) -> tuple[int, int, int, int]:
    """One ICMP message from raw socket `s`: (type, id, seq, kernel receive time in ns)."""
    data, anc, _, _ = s.recvmsg(65535, 64)
    t = time.time_ns()
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            t = sec * 1_000_000_000 + nsec
    ihl = (data[0] & 0x0F) * 4
    typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
    return typ, rid, rseq, t


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_rtts_ms(dst: str | list[str], count: int = 50, interval_s: float = 0.02,
                 timeout_s: float = 2.0, netns: str | None = None) -> list[float | None]:
    """ICMP echo round-trip times (ms, unrounded; None where lost), answered by the kernel of
    `dst` like ping's and timed like ping (send clock, kernel receive timestamp). With a list
    of destinations, echo k goes to dst[k % len(dst)]: interleaving compares paths under the
    same conditions. From namespace file `netns` if given (the socket is made there), else
    from the current one. Needs root (raw socket)."""
    dsts = [dst] if isinstance(dst, str) else list(dst)
    if netns:
        from .netns import entered   # lazy: the probe program starts with the standard library only
        with entered(netns):
            s = _icmp_socket()
    else:
        s = _icmp_socket()
    ident = (id(s) ^ time.monotonic_ns()) & 0xFFFF
    sent: dict[int, int] = {}
    back: dict[int, int] = {}
    start = time.monotonic()
    seq = 0
    deadline = start + count * interval_s + timeout_s
    while True:
        now = time.monotonic()
        if seq < count and now >= start + seq * interval_s:
            pkt = _echo_request(ident, seq)
            sent[seq] = time.time_ns()
            try:
                s.sendto(pkt, (dsts[seq % len(dsts)], 0))
            except OSError:
                pass   # no route now: lost
            seq += 1
            continue
        if (seq >= count and len(back) == count) or now > deadline:
            break
        wait = (start + seq * interval_s - now) if seq < count else deadline - now
        reply, stamp = _wait_reply(s, wait)
        if stamp:
            for rseq, t in _read_tx_stamps(s, ident):
                if rseq in sent:
                    sent[rseq] = t
        if reply:
            typ, rid, rseq, t = _read_echo_reply(s)
            if typ == 0 and rid == ident and rseq in sent and rseq not in back:
                back[rseq] = t
    for rseq, t in _read_tx_stamps(s, ident):   # a stamp read after its reply
        if rseq in sent:
            sent[rseq] = t
    s.close()
    return [(back[q] - sent[q]) / 1e6 if q in back else None for q in range(count)]


def icmp_stream(dsts: list[str], interval_s: float, out_path: str, timeout_s: float = 2.0,
                max_s: float | None = None) -> int:
    """ICMP echoes to `dsts` in turn, one every `interval_s`, until SIGTERM/SIGINT (or `max_s`);
    then waits `timeout_s` for late replies and writes `out_path` as CSV `dst,t_send_mono_s,rtt_ms`
    (send time on CLOCK_MONOTONIC, shared by all namespaces; rtt empty when lost). Returns the
    number of echoes sent."""
    stop = [False]

    def on_signal(*_):
        stop[0] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = _icmp_socket()
    ident = int.from_bytes(os.urandom(2), "big")
    t_mono: list[float] = []
    t_real: list[int] = []           # send time: the kernel's transmit stamp once it is read
    t_back: list[int | None] = []    # the reply's kernel receive stamp
    by_seq: dict[int, int] = {}      # 16-bit ICMP sequence → latest echo that used it
    start = time.monotonic()
    end_send = start + max_s if max_s else float("inf")
    deadline = float("inf")
    while True:
        now = time.monotonic()
        if stop[0] or now >= end_send:
            if deadline == float("inf"):
                deadline = now + timeout_s
            if now >= deadline or all(r is not None for r in t_back[-int(timeout_s / interval_s) - 1:]):
                break
        k = len(t_mono)
        due = start + k * interval_s
        if deadline == float("inf") and now >= due:
            seq = k & 0xFFFF
            pkt = _echo_request(ident, seq)
            t_mono.append(time.monotonic())
            t_real.append(time.time_ns())
            t_back.append(None)
            by_seq[seq] = k
            try:
                s.sendto(pkt, (dsts[k % len(dsts)], 0))
            except OSError:
                pass   # no route now (unreachable): counts as lost
            continue
        wait = max(0.0, min(due if deadline == float("inf") else deadline, deadline) - now)
        try:
            ready, stamp = _wait_reply(s, wait)
        except InterruptedError:
            continue
        if stamp:
            for rseq, t in _read_tx_stamps(s, ident):
                q = by_seq.get(rseq)
                if q is not None:
                    t_real[q] = t
        if ready:
            typ, rid, rseq, t = _read_echo_reply(s)
            q = by_seq.get(rseq)
            if typ == 0 and rid == ident and q is not None and t_back[q] is None:
                t_back[q] = t
    for rseq, t in _read_tx_stamps(s, ident):   # a stamp read after its reply
        q = by_seq.get(rseq)
        if q is not None:
            t_real[q] = t
    s.close()
    rtt = [None if b is None else (b - t) / 1e6 for b, t in zip(t_back, t_real)]
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("dst,t_send_mono_s,rtt_ms\n")
        for k, (tm, r) in enumerate(zip(t_mono, rtt)):
            f.write(f"{dsts[k % len(dsts)]},{tm:.6f},{'' if r is None else f'{r:.4f}'}\n")
    os.replace(tmp, out_path)
    return len(t_mono)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netemu.emulate.probe")
    sub = ap.add_subparsers(dest="mode", required=True)
    sv = sub.add_parser("server")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT)
    sv.add_argument("--max-s", type=float, default=None)
    cl = sub.add_parser("client")
    cl.add_argument("dst")
    cl.add_argument("--port", type=int, default=DEFAULT_PORT)
    cl.add_argument("--count", type=int, default=50)
    cl.add_argument("--interval", type=float, default=0.02)
    cl.add_argument("--size", type=int, default=64)
    ic = sub.add_parser("icmp")
    ic.add_argument("dst", nargs="+", help="one or more destinations, probed in turn")
    ic.add_argument("--count", type=int, default=50)
    ic.add_argument("--interval", type=float, default=0.02)
    st = sub.add_parser("stream")
    st.add_argument("dst", nargs="+")
    st.add_argument("--interval", type=float, required=True, help="seconds between echoes (all dsts)")
    st.add_argument("--out", required=True)
    st.add_argument("--timeout", type=float, default=2.0)
    st.add_argument("--max-s", type=float, default=None)
    args = ap.parse_args(argv)
    if args.mode == "stream":
        from .tap import die_with_parent   # lazy: the probe program starts with the standard library only
        die_with_parent()
        icmp_stream(args.dst, args.interval, args.out, args.timeout, args.max_s)
        return 0
    if args.mode == "icmp":
        print("seq,dst,rtt_ms")
        for q, r in enumerate(icmp_rtts_ms(args.dst, args.count, args.interval)):
            print(f"{q},{args.dst[q % len(args.dst)]},{'' if r is None else f'{r:.4f}'}")
        return 0
    if args.mode == "server":
        serve(args.port, args.max_s)
        return 0
    print("seq,t_send_s,rtt_ms,fwd_ms,rev_ms")
    for q, t, rtt, fwd, rev in probe(args.dst, args.port, args.count, args.interval, args.size):
        fmt = lambda v: "" if v is None else f"{v:.4f}"
        print(f"{q},{t:.6f},{fmt(rtt)},{fmt(fwd)},{fmt(rev)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
