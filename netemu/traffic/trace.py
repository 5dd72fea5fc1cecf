"""Packet traces (pcap, pcapng) read into compact per-packet columns, for inspection and replay.

`read_trace` streams a capture with scapy's raw record readers and parses the link, IP and
TCP/UDP headers itself, vectorised over chunks of packets: only the first `_HEAD_BYTES` bytes of
each record are kept, so a 1 GB capture needs memory for its columns (about 50 bytes a packet),
not for its bytes. Sizes come from the IP header (total length), so captures with a small snaplen
still give true sizes. Packets that are not IP, or whose headers cannot be parsed, are counted by
reason in `Trace.counts`, never dropped silently; a file that cannot be read raises `TraceError`.

On top of a `Trace` sit pure functions for replay: `flows` (bidirectional flows with a client and
a server side), `messages` (request/response runs of each TCP/UDP flow, for closed-loop replay),
`open_loop_schedule` (packets with their original timing, mapped onto emulated nodes) and
`inspect`/`format_inspect` (what a trace holds).

Limits: IP fragments are not reassembled (a non-first fragment has no ports, so it falls into a
port-0 flow of its own); headers beyond the first `_HEAD_BYTES` bytes of a record (very long
IPv6 extension chains) count as unparseable; TCP sequence numbers are unwrapped over the
payload-carrying segments of each direction, so a direction must not jump by 2 GiB or more
between two consecutive captured segments.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TraceError
from ..plan.files import MAX_CAPTURE_BYTES, open_input

__all__ = [
    "Trace", "read_trace", "flows", "flow_of_packets", "messages", "parse_map", "auto_map",
    "open_loop_schedule", "inspect", "format_inspect", "LINKTYPES",
]

LINKTYPES = {
    0: "NULL", 1: "EN10MB", 101: "RAW", 108: "LOOP", 113: "LINUX_SLL", 228: "IPV4", 229: "IPV6",
    276: "LINUX_SLL2",
}
"""Supported link types (pcap LINKTYPE_* numbers) and their libpcap names."""

_HEAD_BYTES = 128
"""Bytes of each record kept for header parsing: Ethernet with two VLAN tags (22) + IPv6 (40) +
52 bytes of extension headers + the 14 TCP header bytes that hold ports, seq, offset and flags."""

_CHUNK_PACKETS = 1 << 16
_PCAP_MAGICS = {b"\xa1\xb2\xc3\xd4": 1_000, b"\xd4\xc3\xb2\xa1": 1_000,
                b"\xa1\xb2\x3c\x4d": 1, b"\x4d\x3c\xb2\xa1": 1}
"""Classic pcap magic (either byte order) -> nanoseconds per sub-second tick."""
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_HEADER_BYTES = 24
_RECORD_HEADER_BYTES = 16

_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 23, 24, 28, 30)
"""AF_INET6 on Linux, Windows, the BSDs and macOS: DLT_NULL stores the capturing host's value."""
_IPV6_EXT = (0, 43, 60, 135, 139, 140)
"""IPv6 extension headers whose length is (byte 1 + 1) * 8 (RFC 6564 layout)."""
_IPV6_ALL_EXT = _IPV6_EXT + (44, 51)
"""... and the fragment (8 bytes) and authentication ((byte 1 + 2) * 4) headers."""
_MAX_IPV6_EXT = 6
_SYN, _ACK = 0x02, 0x10
_TCP, _UDP = 6, 17
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp"}


@dataclass(frozen=True)
class Trace:
    """The IP packets of one capture as columns, P packets in capture order.

    Times are seconds since the first IP packet; they may go backwards (capture order is kept),
    `counts['out_of_order']` says how often. `src`/`dst` index `addrs`. Sizes are IP total
    lengths in bytes; `payload_bytes` is the TCP/UDP payload (the IP payload for other
    protocols), from the IP length, not the captured length. `linktype` is the first IP
    packet's (a pcapng file may mix interfaces); `index` is each packet's record number.
    """

    path: Path
    linktype: int
    t_s: np.ndarray
    t0_unix_s: float
    size_bytes: np.ndarray
    proto: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    tcp_flags: np.ndarray
    seq: np.ndarray
    payload_bytes: np.ndarray
    addrs: tuple[str, ...]
    counts: dict[str, int]
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.t_s)


# --------------------------------------------------------------------------- reading

def read_trace(path: str | Path, max_packets: int | None = None) -> Trace:
    """Read a pcap or pcapng file (chosen by its magic number) into a `Trace`, streaming.

    `max_packets` stops after that many records (IP or not). Raises `TraceError` when the file
    is missing, not a capture, truncated, of an unsupported link type, or holds no IP packet.
    """
    path = Path(path)
    cols = _Columns()
    with _open_capture(path) as (kind, reader, tick_ns):
        if kind == "pcap":
            _check_linktype(path, reader.linktype)
            n_records = _read_pcap(path, reader, tick_ns, cols, max_packets)
        else:
            n_records = _read_pcapng(path, reader, cols, max_packets)
    return cols.finish(path, n_records)


class _open_capture:
    """Context manager: (kind, scapy raw reader, ns per sub-second tick) of a capture file."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None

    def __enter__(self):
        import logging   # lazy, with scapy below: importing scapy takes about a second

        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapNgReader, RawPcapReader

        # scapy logs its own warning for a cut record; netemu raises one clear TraceError instead
        logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

        path = self.path
        try:
            self.f = open_input(path, MAX_CAPTURE_BYTES, lambda problem: TraceError(
                f"{path}: no such file (expected a pcap or pcapng capture)" if not os.path.lexists(path)
                else f"{path}: expected a pcap or pcapng capture (a regular file of at most "
                     f"{MAX_CAPTURE_BYTES >> 30} GiB): {problem}"))
            magic = self.f.read(4)
        except OSError as e:
            raise TraceError(f"{path}: cannot read: {e.strerror or e}") from None
        if magic in _PCAP_MAGICS:
            kind, cls = "pcap", RawPcapReader
            tick_ns = _PCAP_MAGICS[magic]
            size = os.fstat(self.f.fileno()).st_size
            if size < _PCAP_HEADER_BYTES:
                self.close()
                raise TraceError(f"{path}: truncated pcap file header: {size} of "
                                 f"{_PCAP_HEADER_BYTES} bytes")
        elif magic == _PCAPNG_MAGIC:
            kind, cls, tick_ns = "pcapng", RawPcapNgReader, 0
        else:
            self.close()
            hint = " (gzip-compressed: decompress it first)" if magic[:2] == b"\x1f\x8b" else ""
            raise TraceError(f"{path}: not a pcap or pcapng file: expected magic a1b2c3d4, "
                             f"a1b23c4d (either byte order) or 0a0d0d0a, found "
                             f"{magic.hex() or 'an empty file'}{hint}")
        self.f.seek(0)
        try:
            reader = cls(self.f)
        except Scapy_Exception as e:
            self.close()
            raise TraceError(f"{path}: malformed {kind} file header: {e}") from None
        return kind, reader, tick_ns

    def close(self):
        if self.f is not None:
            self.f.close()

    def __exit__(self, *exc):
        self.close()
        return False


def _check_linktype(path: Path, linktype: int) -> None:
    if linktype not in LINKTYPES:
        known = ", ".join(f"{k} ({v})" for k, v in sorted(LINKTYPES.items()))
        raise TraceError(f"{path}: unsupported link type {linktype}; expected one of {known}")


def _read_pcap(path: Path, reader, tick_ns: int, cols: "_Columns", max_packets: int | None
               ) -> int:
    """Feed every record of a classic pcap to `cols`; return the number of records read."""
    read_packet = reader._read_packet  # the public iterator costs ~40% more per packet
    k = _HEAD_BYTES
    n = 0
    caplen_total = 0
    at_end = False
    while not at_end and n != max_packets:
        heads, meta = bytearray(), array("Q")
        want = _CHUNK_PACKETS if max_packets is None else min(_CHUNK_PACKETS, max_packets - n)
        for _ in range(want):
            try:
                data, m = read_packet(k)
            except EOFError:
                at_end = True
                break
            meta.extend(m)  # sec, usec, wirelen, caplen
            heads += data.ljust(k, b"\0")
        if not meta:
            break
        sec, frac, wirelen, caplen = np.frombuffer(meta, np.uint64).reshape(-1, 4).T
        n += len(sec)
        caplen_total += int(caplen.sum())
        ns = sec.astype(np.int64) * 1_000_000_000 + frac.astype(np.int64) * tick_ns
        cols.add(np.frombuffer(heads, np.uint8).reshape(-1, k), np.minimum(caplen, k),
                 wirelen.astype(np.int64), ns, reader.linktype)
    if n != max_packets:
        _check_pcap_end(path, reader, n, caplen_total)
    return n


def _check_pcap_end(path: Path, reader, n: int, caplen_total: int) -> None:
    """scapy stops silently on a short record header and returns short bodies: check that the
    records read account for the file's size exactly."""
    size = os.fstat(reader.f.fileno()).st_size
    end = _PCAP_HEADER_BYTES + n * _RECORD_HEADER_BYTES + caplen_total
    if end > size:
        short = end - size
        raise TraceError(f"{path}: truncated file: the body of packet {n} (counting from 1) is "
                         f"cut short by {short} bytes ({n - 1} complete packets precede it)")
    if end < size:
        left = size - end
        what = (f"its record header has {left} of {_RECORD_HEADER_BYTES} bytes"
                if left < _RECORD_HEADER_BYTES else f"{left} bytes could not be read as records")
        raise TraceError(f"{path}: truncated file at packet {n + 1} (counting from 1): {what} "
                         f"({n} complete packets precede it)")


def _read_pcapng(path: Path, reader, cols: "_Columns", max_packets: int | None) -> int:
    """Feed every packet block of a pcapng file to `cols`; return the number of records read."""
    read_packet = reader._read_packet
    tell = reader.f.tell
    k = _HEAD_BYTES
    n = 0
    pos = tell()
    at_end = False
    while not at_end and n != max_packets:
        heads, meta, got = bytearray(), array("Q"), array("Q")
        want = _CHUNK_PACKETS if max_packets is None else min(_CHUNK_PACKETS, max_packets - n)
        for _ in range(want):
            try:
                data, m = read_packet(k)
            except EOFError:
                at_end = True
                break
            pos = tell()
            if m.tshigh is None:  # a simple packet block carries no time
                meta.extend((m.linktype, m.tsresol, 0, 0, m.wirelen))
            else:
                meta.extend(m[:5])  # linktype, tsresol, tshigh, tslow, wirelen
            got.append(len(data))
            heads += data.ljust(k, b"\0")
        if not meta:
            break
        linktype, res, hi, lo, wirelen = np.frombuffer(meta, np.uint64).reshape(-1, 5).T
        n += len(linktype)
        cols.add(np.frombuffer(heads, np.uint8).reshape(-1, k), np.frombuffer(got, np.uint64),
                 wirelen.astype(np.int64), _ticks_to_ns((hi << np.uint64(32)) | lo, res),
                 linktype.astype(np.int64))
    if n != max_packets:
        skipped = _check_pcapng_tail(path, reader.f, pos, n)
        cols.skipped_records += skipped
        n += skipped
    return n


def _ticks_to_ns(ticks: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Timestamps in `res` ticks per second -> int64 ns since the epoch."""
    res = np.maximum(res, 1)
    sec, rem = ticks // res, ticks % res
    fine = res <= 1_000_000_000  # rem * 1e9 stays below 2**64
    frac = np.where(fine, rem * np.uint64(1_000_000_000) // res,
                    (rem.astype(np.float64) / res.astype(np.float64) * 1e9).astype(np.uint64))
    return sec.astype(np.int64) * 1_000_000_000 + frac.astype(np.int64)


def _check_pcapng_tail(path: Path, f, pos: int, n: int) -> int:
    """Walk the blocks after the last packet scapy returned: scapy stops silently on a cut or
    corrupt block, so each must be complete. Returns how many packet blocks scapy skipped."""
    size = os.fstat(f.fileno()).st_size
    f.seek(pos)
    order = "<"
    skipped = 0
    while pos < size:
        head = f.read(8)
        where = f"{path}: truncated file at packet {n + skipped + 1} (counting from 1): "
        if len(head) < 8:
            raise TraceError(where + f"a block header has {len(head)} of 8 bytes")
        btype = struct.unpack(order + "I", head[:4])[0]
        if btype == 0x0A0D0D0A:
            bom = f.read(4)
            order = {b"\x1a\x2b\x3c\x4d": ">", b"\x4d\x3c\x2b\x1a": "<"}.get(bom, order)
            f.seek(-4, 1)
        blen = struct.unpack(order + "I", head[4:])[0]
        if blen < 12 or blen % 4:
            raise TraceError(where + f"invalid block length {blen} at byte {pos}")
        if pos + blen > size:
            raise TraceError(where + f"a block of {blen} bytes at byte {pos} has only "
                             f"{size - pos}")
        f.seek(pos + blen - 4)
        if struct.unpack(order + "I", f.read(4))[0] != blen:
            raise TraceError(where + f"corrupt block at byte {pos} (its two lengths differ)")
        if btype in (2, 3, 6):
            skipped += 1
        pos += blen
    return skipped


class _Columns:
    """Per-packet columns grown chunk by chunk; addresses interned in order of appearance."""

    def __init__(self):
        self.parts: list[dict[str, np.ndarray]] = []
        self.addr_index: dict[bytes, int] = {}
        self.records = 0
        self.non_ip = 0
        self.unparseable = 0
        self.unknown_link = 0
        self.skipped_records = 0
        self.linktypes: set[int] = set()

    def add(self, heads: np.ndarray, cap: np.ndarray, wirelen: np.ndarray, ns: np.ndarray,
            linktype) -> None:
        """Parse one chunk: heads [n, _HEAD_BYTES] uint8, cap [n] bytes of each head that were
        captured, wirelen [n], ns [n] int64 capture times, linktype (one, or [n])."""
        n = len(heads)
        cap = cap.astype(np.int64)
        if np.ndim(linktype) == 0:
            lts, off, kind = [int(linktype)], *_link_layer(int(linktype), heads, cap)
            if int(linktype) not in LINKTYPES:
                self.unknown_link += n
        else:
            lts = [int(x) for x in np.unique(linktype)]
            off, kind = np.zeros(n, np.int64), np.full(n, _BAD, np.int64)
            for lt in lts:
                sel = np.flatnonzero(linktype == lt)
                if lt in LINKTYPES:
                    off[sel], kind[sel] = _link_layer(lt, heads[sel], cap[sel])
                else:
                    self.unknown_link += len(sel)
        self.linktypes.update(lts)
        p = _ip_layer(heads, cap, wirelen, off, kind)
        keep = p.pop("keep")
        self.non_ip += int(np.count_nonzero(kind == _NON_IP))
        self.unparseable += n - len(keep) - int(np.count_nonzero(kind == _NON_IP))
        src, dst = self._intern(p.pop("v6"), p.pop("src4"), p.pop("dst4"), p.pop("src6"),
                                p.pop("dst6"))
        lt_keep = linktype[keep] if np.ndim(linktype) else np.full(len(keep), int(linktype))
        p.update(src=src, dst=dst, ns=ns[keep], index=keep + self.records, linktype=lt_keep)
        self.parts.append(p)
        self.records += n

    def _intern(self, v6: np.ndarray, src4: np.ndarray, dst4: np.ndarray, src6: np.ndarray,
                dst6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Addresses of m packets (IPv4 as integers [m], IPv6 as bytes [m, 16], used where `v6`)
        -> global indices int32 [m] each for source and destination."""
        out = np.empty(2 * len(v6), np.int32)  # interleaved src, dst: order of appearance
        families, seen = [], []
        for fam, rows, keys in ((4, np.flatnonzero(~v6), np.stack([src4, dst4], 1)),
                                (6, np.flatnonzero(v6), np.stack([src6, dst6], 1))):
            keys = keys[rows]
            if not len(rows):
                continue
            flat = (np.ascontiguousarray(keys).reshape(-1, 16).view("V16").ravel() if fam == 6
                    else keys.ravel())
            uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
            slots = (2 * rows[:, None] + np.arange(2)).ravel()
            families.append((fam, uniq, slots, inverse.ravel(), np.empty(len(uniq), np.int32)))
            seen += [(int(slots[f]), len(families) - 1, u) for u, f in enumerate(first)]
        for _, i, u in sorted(seen):
            fam, uniq, _, _, lookup = families[i]
            raw = uniq[u].tobytes() if fam == 6 else int(uniq[u]).to_bytes(4, "big")
            lookup[u] = self.addr_index.setdefault(bytes([fam]) + raw, len(self.addr_index))
        for _, _, slots, inverse, lookup in families:
            out[slots] = lookup[inverse]
        return out[0::2].copy(), out[1::2].copy()

    def finish(self, path: Path, n_records: int) -> Trace:
        total = n_records
        unparseable = self.unparseable + self.skipped_records
        if total and self.unknown_link == total:
            _check_linktype(path, min(self.linktypes - set(LINKTYPES)))
        cat = {k: np.concatenate([p[k] for p in self.parts]) if self.parts else np.zeros(0)
               for k in ("ns", "size", "proto", "src", "dst", "sport", "dport", "flags", "seq",
                         "payload", "index", "linktype")}
        ns = cat["ns"]
        if len(ns) == 0:
            if total == 0:
                raise TraceError(f"{path}: holds no IP traffic: the file has no packets")
            raise TraceError(f"{path}: holds no IP traffic: {total} packets, all "
                             f"non-IP/unparseable ({self.non_ip} non-IP, {unparseable} "
                             f"unparseable)")
        counts = {"packets": total, "ip": len(ns), "non_ip": self.non_ip,
                  "unparseable": unparseable,
                  "out_of_order": int(np.count_nonzero(np.diff(ns) < 0))}
        return Trace(
            path=path, linktype=int(cat["linktype"][0]),
            t_s=(ns - ns[0]).astype(np.float64) / 1e9, t0_unix_s=float(ns[0]) / 1e9,
            size_bytes=cat["size"].astype(np.int32), proto=cat["proto"].astype(np.uint8),
            src=cat["src"].astype(np.int32), dst=cat["dst"].astype(np.int32),
            sport=cat["sport"].astype(np.int32), dport=cat["dport"].astype(np.int32),
            tcp_flags=cat["flags"].astype(np.uint8), seq=cat["seq"].astype(np.uint32),
            payload_bytes=cat["payload"].astype(np.int32),
            addrs=tuple(_addr_text(k) for k in self.addr_index), counts=counts,
            index=cat["index"].astype(np.int64))


def _addr_text(key: bytes) -> str:
    if key[0] == 4:
        return str(ipaddress.IPv4Address(key[1:]))
    return str(ipaddress.IPv6Address(key[1:]))


# Layer-3 kinds found by the link layer.
_BY_VERSION, _NON_IP, _BAD = 0, -1, -2

# Header fields are read at one offset for the whole chunk when every packet has the same
# layout (the common case: plain column slices), else per packet (a gather).
Offset = int | np.ndarray


def _uniform(at: np.ndarray) -> Offset:
    return int(at[0]) if len(at) and at.min() == at.max() else at


def _u8(h: np.ndarray, at: Offset) -> np.ndarray:
    if isinstance(at, int):
        return h[:, min(at, _HEAD_BYTES - 1)].astype(np.int64)
    return h[np.arange(len(h)), np.minimum(at, _HEAD_BYTES - 1)].astype(np.int64)


def _u16(h: np.ndarray, at: Offset) -> np.ndarray:
    return (_u8(h, at) << 8) | _u8(h, at + 1)


def _u32(h: np.ndarray, at: Offset) -> np.ndarray:
    return (_u16(h, at) << 16) | _u16(h, at + 2)


def _bytes16(h: np.ndarray, at: Offset) -> np.ndarray:
    """16 bytes from `at` of every row, uint8 [n, 16] (zeros past the kept head)."""
    cols = at + np.arange(16) if isinstance(at, int) else at[:, None] + np.arange(16)
    inside = cols < _HEAD_BYTES
    got = h[np.arange(len(h))[:, None], np.minimum(cols, _HEAD_BYTES - 1)]
    return np.where(inside, got, 0).astype(np.uint8)


def _ethertype_kind(et: np.ndarray) -> np.ndarray:
    return np.where(et == 0x0800, 4, np.where(et == 0x86DD, 6, _NON_IP))


def _link_layer(linktype: int, h: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset of the IP header and its kind (4, 6, _BY_VERSION, _NON_IP, _BAD) per packet."""
    n = len(h)
    zero = np.zeros(n, np.int64)
    if linktype == 1:
        et = _u16(h, 12)
        tagged = np.isin(et, _ETH_VLAN)
        off = zero + 14
        if tagged.any():  # 802.1Q / 802.1ad tags, at most two deep
            for _ in range(2):
                et = np.where(tagged, _u16(h, off + 2), et)
                off = off + 4 * tagged
                tagged = np.isin(et, _ETH_VLAN) & tagged
        kind = _ethertype_kind(et)
    elif linktype in (101, 228, 229):
        off = zero
        kind = zero + {101: _BY_VERSION, 228: 4, 229: 6}[linktype]
    elif linktype == 113:
        off, kind = zero + 16, _ethertype_kind(_u16(h, 14))
    elif linktype == 276:
        off, kind = zero + 20, _ethertype_kind(_u16(h, 0))
    elif linktype in (0, 108):  # an address family, NULL in host, LOOP in network byte order
        off = zero + 4
        big = _u32(h, 0)
        little = _u16(h, 2) << 16 | _u16(h, 0)
        little = (little & 0xFF00FF) << 8 | (little >> 8) & 0xFF00FF
        fam = np.where(big <= 0xFFFF, big, little)
        kind = np.where(fam == 2, 4, np.where(np.isin(fam, _AF_INET6), 6, _NON_IP))
    else:
        return zero, zero + _BAD
    return off, np.where(cap < off, _BAD, kind)


def _ip_layer(h: np.ndarray, cap: np.ndarray, wirelen: np.ndarray, off: np.ndarray,
              kind: np.ndarray) -> dict[str, np.ndarray]:
    """Parse the IP and TCP/UDP headers of the packets whose link layer says IP.

    Returns 'keep' (int64 [m], rows parsed completely, ascending) and the columns of those rows;
    addresses as 'v6' (bool [m]), 'src4'/'dst4' ([m], 0 for IPv6) and 'src6'/'dst6'
    (uint8 [m, 16], zeros for IPv4).
    """
    ip = np.flatnonzero((kind != _NON_IP) & (kind != _BAD) & (cap > off))
    version = _u8(h if len(ip) == len(h) else h[ip], _uniform(off[ip])) >> 4
    want = np.where(kind[ip] == _BY_VERSION, version, kind[ip])
    parts = []
    for v, parse in ((4, _ipv4), (6, _ipv6)):
        rows = ip[(version == v) & (want == v)]
        if not len(rows):
            continue
        sub = h if len(rows) == len(h) else h[rows]
        r = parse(sub, cap[rows], wirelen[rows], _uniform(off[rows]))
        r.update(_transport(sub, cap[rows], r.pop("l4"), r.pop("ip_payload"), r.pop("frag"),
                            r["proto"]))
        ok = r.pop("ok") & r.pop("ok_l4")
        r = {k: x[ok] for k, x in r.items()}
        r["keep"] = rows[ok]
        r["v6"] = np.full(len(r["keep"]), v == 6)
        parts.append(r)
    if not parts:
        e = np.zeros(0, np.int64)
        return {"keep": e, "size": e, "proto": e, "sport": e, "dport": e, "flags": e,
                "seq": e, "payload": e, "v6": e.astype(bool), "src4": e, "dst4": e,
                "src6": np.zeros((0, 16), np.uint8), "dst6": np.zeros((0, 16), np.uint8)}
    if len(parts) == 1:
        return parts[0]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["keep"], kind="stable")  # back into capture order
    return {k: x[order] for k, x in out.items()}


def _ipv4(h: np.ndarray, cap: np.ndarray, wirelen: np.ndarray, off: Offset) -> dict:
    first = _u8(h, off)
    ihl = (first & 15) * 4
    size = _u16(h, off + 2)
    # Segmentation offload on the capturing host can leave the length field 0.
    size = np.where(size == 0, wirelen - off, size)
    return {"ok": (cap >= off + 20) & (ihl >= 20) & (size >= ihl), "size": size, "proto": _u8(h, off + 9), "l4": off + ihl, "ip_payload": size - ihl,
            "frag": (_u16(h, off + 6) & 0x1FFF) != 0,
            "src4": _u32(h, off + 12), "dst4": _u32(h, off + 16),
            "src6": np.zeros((len(h), 16), np.uint8), "dst6": np.zeros((len(h), 16), np.uint8)}


def _ipv6(h: np.ndarray, cap: np.ndarray, wirelen: np.ndarray, off: Offset) -> dict:
    plen = _u16(h, off + 4)
    size = np.where(plen == 0, wirelen - off, 40 + plen)  # 0: jumbogram or offload
    ok = cap >= off + 40
    proto = _u8(h, off + 6)
    l4 = np.zeros(len(h), np.int64) + off + 40
    frag = np.zeros(len(h), bool)
    for _ in range(_MAX_IPV6_EXT):
        ext = ok & np.isin(proto, _IPV6_ALL_EXT)
        if not ext.any():
            break
        ok &= ~ext | ((cap >= l4 + 8) & (l4 + 8 <= _HEAD_BYTES))
        length = np.where(proto == 44, 8, np.where(proto == 51, (_u8(h, l4 + 1) + 2) * 4,
                                                   (_u8(h, l4 + 1) + 1) * 8))
        frag |= ext & (proto == 44) & ((_u16(h, l4 + 2) & 0xFFF8) != 0)
        proto = np.where(ext, _u8(h, l4), proto)
        l4 = np.where(ext, l4 + length, l4)
    ok &= ~np.isin(proto, _IPV6_ALL_EXT)
    ip_payload = size - (l4 - off)
    return {"ok": ok & (ip_payload >= 0), "size": size, "proto": proto,
            "l4": l4, "ip_payload": ip_payload, "frag": frag,
            "src4": np.zeros(len(h), np.int64), "dst4": np.zeros(len(h), np.int64),
            "src6": _bytes16(h, off + 8), "dst6": _bytes16(h, off + 24)}


def _transport(h: np.ndarray, cap: np.ndarray, l4: Offset | np.ndarray, ip_payload: np.ndarray,
               frag: np.ndarray, proto: np.ndarray) -> dict:
    """Ports, TCP flags and sequence number, transport payload; only first fragments have ports."""
    if not isinstance(l4, int):
        l4 = _uniform(l4)
    tcp = ~frag & (proto == _TCP)
    udp = ~frag & (proto == _UDP)
    ports = tcp | udp
    ok = ~tcp | ((cap >= l4 + 14) & (l4 + 14 <= _HEAD_BYTES))
    ok &= ~udp | ((cap >= l4 + 4) & (l4 + 4 <= _HEAD_BYTES))
    doff = (_u8(h, l4 + 12) >> 4) * 4
    ok &= ~tcp | (doff >= 20)
    payload = ip_payload - np.where(tcp, doff, np.where(udp, 8, 0))
    return {"ok_l4": ok & (payload >= 0), "payload": payload,
            "sport": np.where(ports, _u16(h, l4), 0), "dport": np.where(ports, _u16(h, l4 + 2), 0),
            "flags": np.where(tcp, _u8(h, l4 + 13), 0), "seq": np.where(tcp, _u32(h, l4 + 4), 0)}


# --------------------------------------------------------------------------- flows

@dataclass(frozen=True)
class _Flows:
    """Per-packet flow ids and per-flow client side, the shared basis of flows() and messages()."""

    ids: np.ndarray          # int64 [P] flow id, numbered in order of first packet
    from_client: np.ndarray  # bool [P] packet sent by the flow's client
    client_ep: np.ndarray    # int64 [F] client endpoint, address index << 16 | port
    server_ep: np.ndarray    # int64 [F]
    proto: np.ndarray        # int64 [F]


def _flow_basis(trace: Trace) -> _Flows:
    proto = trace.proto.astype(np.int64)
    ea = trace.src.astype(np.int64) << 16 | trace.sport
    eb = trace.dst.astype(np.int64) << 16 | trace.dport
    lo, hi = np.minimum(ea, eb), np.maximum(ea, eb)
    order = np.lexsort((hi, lo, proto))  # stable: capture order within a flow
    p, a, b = proto[order], lo[order], hi[order]
    new = np.r_[True, (p[1:] != p[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    first = order[new]  # first packet of each flow
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    ids = np.empty(len(order), np.int64)
    ids[order] = rank[np.cumsum(new) - 1]
    n_flows = len(first)
    flow_lo, flow_hi = np.empty(n_flows, np.int64), np.empty(n_flows, np.int64)
    flow_lo[ids], flow_hi[ids] = lo, hi
    from_lo = ea == lo  # this packet was sent by the flow's lower endpoint

    # The client sent the first SYN; else the first packet; a tie in time goes to the higher port.
    first_pkt = np.sort(first)
    client_is_lo = from_lo[first_pkt]
    t_lo = _first_time(trace.t_s, ids, from_lo, n_flows)
    t_hi = _first_time(trace.t_s, ids, ~from_lo, n_flows)
    lo_port, hi_port = flow_lo & 0xFFFF, flow_hi & 0xFFFF
    client_is_lo = np.where((t_lo == t_hi) & (lo_port != hi_port), lo_port > hi_port,
                            client_is_lo)
    syn = np.flatnonzero((trace.proto == _TCP) & ((trace.tcp_flags & (_SYN | _ACK)) == _SYN))
    f, at = np.unique(ids[syn], return_index=True)
    client_is_lo[f] = from_lo[syn[at]]
    return _Flows(ids=ids, from_client=from_lo == client_is_lo[ids],
                  client_ep=np.where(client_is_lo, flow_lo, flow_hi),
                  server_ep=np.where(client_is_lo, flow_hi, flow_lo),
                  proto=proto[first_pkt])


def _first_time(t_s: np.ndarray, ids: np.ndarray, mask: np.ndarray, n_flows: int) -> np.ndarray:
    """Time of each flow's first packet (capture order) among `mask`; inf where none."""
    sel = np.flatnonzero(mask)
    f, at = np.unique(ids[sel], return_index=True)
    out = np.full(n_flows, np.inf)
    out[f] = t_s[sel[at]]
    return out


def _proto_name(proto: int) -> str:
    return _PROTO_NAMES.get(int(proto), f"other:{int(proto)}")


def _group_starts(group: np.ndarray) -> np.ndarray:
    """bool [m]: where a run of equal values begins."""
    return np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, bool)


def _unwrap_seq(seq: np.ndarray, group: np.ndarray) -> np.ndarray:
    """TCP sequence numbers (uint32 [m], groups contiguous, capture order within) -> int64 [m]
    positions relative to each group's first packet, across 32-bit wrap: consecutive packets
    are assumed less than 2 GiB apart."""
    if not len(seq):
        return np.zeros(0, np.int64)
    step = np.diff(seq.astype(np.uint32)).astype(np.int32).astype(np.int64)  # mod 2**32, signed
    step[group[1:] != group[:-1]] = 0
    pos = np.r_[0, np.cumsum(step)]
    start = _group_starts(group)
    return pos - np.repeat(pos[start], np.diff(np.r_[np.flatnonzero(start), len(pos)]))


def _group_cummax(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum of `values` (int64 [m]) restarting at each group (contiguous)."""
    if not len(values):
        return values.copy()
    start = _group_starts(group)
    gid = np.cumsum(start) - 1
    low = np.minimum.reduceat(values, np.flatnonzero(start))
    shifted = values - low[gid]  # >= 0 within each group
    width = int(shifted.max()) + 1
    if width * (int(gid[-1]) + 1) < 2**62:  # stack groups on disjoint ranges, one pass
        return np.maximum.accumulate(shifted + gid * width) - gid * width + low[gid]
    out = np.empty_like(values)
    for a, b in zip(np.flatnonzero(start), np.r_[np.flatnonzero(start)[1:], len(values)]):
        out[a:b] = np.maximum.accumulate(values[a:b])
    return out


@dataclass(frozen=True)
class _Payload:
    """Payload-carrying TCP/UDP packets sorted by (flow, side, capture order)."""

    rows: np.ndarray     # int64 [m] packet rows of the trace
    group: np.ndarray    # int64 [m] flow * 2 + (0 client, 1 server)
    start: np.ndarray    # int64 [m] first byte's position in its group's byte stream
    end: np.ndarray      # int64 [m] position after its last byte
    before: np.ndarray   # int64 [m] stream position reached before this packet


def _payload_packets(trace: Trace, basis: _Flows) -> _Payload:
    """TCP bytes are positioned by sequence number, so retransmissions overlap what came
    before; UDP datagrams are laid end to end."""
    pay = trace.payload_bytes.astype(np.int64)
    sel = np.flatnonzero(((trace.proto == _TCP) | (trace.proto == _UDP)) & (pay > 0))
    group = basis.ids[sel] * 2 + ~basis.from_client[sel]
    order = np.argsort(group, kind="stable")
    rows, group = sel[order], group[order]
    size = pay[rows]
    tcp = trace.proto[rows] == _TCP
    udp_start = np.cumsum(size) - size
    start = np.where(tcp, _unwrap_seq(trace.seq[rows], group), udp_start)
    end = start + size
    first = _group_starts(group)
    reached = _group_cummax(end, group)
    bounds = np.flatnonzero(first)
    lowest = np.minimum.reduceat(start, bounds) if len(start) else start
    # A group's first packet starts at its lowest byte, so segments reordered before it count.
    before = np.where(first, np.repeat(lowest, np.diff(np.r_[bounds, len(start)])),
                      np.r_[0, reached[:-1]])
    return _Payload(rows=rows, group=group, start=start, end=end, before=before)


def flows(trace: Trace) -> pd.DataFrame:
    """One row per bidirectional flow (protocol and unordered address/port pair).

    Columns: flow (0.. in order of first packet), proto ('tcp', 'udp', 'icmp' or 'other:N'),
    client, client_port, server, server_port, packets, bytes (IP bytes, both directions),
    client_bytes, server_bytes (payload each side sent; for TCP the sequence-number span, so
    retransmissions count once), t_first_s, t_last_s, duration_s, rate_mbps (IP bits over the
    duration; 0 for a single instant).
    The client sent the first SYN (without ACK) for TCP, else the first packet; when both sides'
    first packets share a time, the side with the higher (ephemeral) port.
    """
    basis = _flow_basis(trace)
    n = len(basis.client_ep)
    ids = basis.ids
    pay = _payload_packets(trace, basis)
    first = _group_starts(pay.group)
    bounds = np.flatnonzero(first)
    side_bytes = np.zeros(2 * n, np.int64)
    if len(bounds):
        span = np.maximum.reduceat(pay.end, bounds) - np.minimum.reduceat(pay.start, bounds)
        side_bytes[pay.group[bounds]] = span
    t_first = np.full(n, np.inf)
    t_last = np.full(n, -np.inf)
    np.minimum.at(t_first, ids, trace.t_s)
    np.maximum.at(t_last, ids, trace.t_s)
    duration = t_last - t_first
    ip_bytes = np.bincount(ids, weights=trace.size_bytes, minlength=n).astype(np.int64)
    addrs = np.asarray(trace.addrs, dtype=object)
    rate = np.divide(ip_bytes * 8 / 1e6, duration, out=np.zeros(n), where=duration > 0)
    return pd.DataFrame({
        "flow": np.arange(n, dtype=np.int64),
        "proto": [_proto_name(p) for p in basis.proto],
        "client": addrs[basis.client_ep >> 16], "client_port": basis.client_ep & 0xFFFF,
        "server": addrs[basis.server_ep >> 16], "server_port": basis.server_ep & 0xFFFF,
        "packets": np.bincount(ids, minlength=n).astype(np.int64),
        "bytes": ip_bytes,
        "client_bytes": side_bytes[0::2], "server_bytes": side_bytes[1::2],
        "t_first_s": t_first, "t_last_s": t_last, "duration_s": duration, "rate_mbps": rate,
    })


_FLOW_KEY = ["proto", "client", "client_port", "server", "server_port"]


def flow_of_packets(trace: Trace, table: pd.DataFrame | None = None) -> np.ndarray:
    """Flow id of every packet, int64 [P], as numbered by `flows(trace)`.

    With `table` (a `flows()` table, possibly filtered or renumbered), the `flow` value of the
    row with the packet's protocol and endpoints, or -1 for packets of flows not in the table.
    """
    ids = _flow_basis(trace).ids
    if table is None:
        return ids
    own = flows(trace)[_FLOW_KEY + ["flow"]].rename(columns={"flow": "own"})
    joined = own.merge(table[_FLOW_KEY + ["flow"]], on=_FLOW_KEY, how="left")
    mapped = joined.set_index("own")["flow"].reindex(np.arange(len(own)))
    return mapped.fillna(-1).to_numpy(np.int64)[ids]


def messages(trace: Trace, idle_s: float = 1.0) -> pd.DataFrame:
    """Application messages of every TCP and UDP flow, for closed-loop replay.

    A message is a run of payload-carrying packets in one direction; it ends when the other
    side sends payload or after more than `idle_s` seconds without new payload (a new message
    in the same direction follows). TCP segments that only retransmit bytes already sent end
    nothing and start nothing: they count in the packets of their side's latest message.
    Columns: flow, msg (0.. within the flow), sender ('client' or 'server'), bytes (TCP: the
    sequence span the message adds; UDP: the sum of payloads), packets, t_start_s, t_end_s,
    think_s (t_start_s minus the end of the flow's previous message, or minus the flow's first
    packet for msg 0; never negative). Flows without payload have no rows.
    """
    basis = _flow_basis(trace)
    pay = _payload_packets(trace, basis)
    if not len(pay.rows):
        return pd.DataFrame({
            "flow": np.zeros(0, np.int64), "msg": np.zeros(0, np.int64),
            "sender": np.zeros(0, object), "bytes": np.zeros(0, np.int64),
            "packets": np.zeros(0, np.int64), "t_start_s": np.zeros(0),
            "t_end_s": np.zeros(0), "think_s": np.zeros(0)})
    new = pay.end > pay.before
    # Walk in (flow, capture order): messages split on a change of side or a silence.
    by_time = np.lexsort((pay.rows, pay.group // 2))
    rows = pay.rows[by_time]
    flow = pay.group[by_time] // 2
    side = pay.group[by_time] % 2
    fresh = new[by_time]
    t = trace.t_s[rows]
    f_rows = np.flatnonzero(fresh)
    ff, fs, ft = flow[f_rows], side[f_rows], t[f_rows]
    starts = np.r_[True, (ff[1:] != ff[:-1]) | (fs[1:] != fs[:-1]) | (ft[1:] - ft[:-1] > idle_s)]
    msg_of_fresh = np.cumsum(starts) - 1
    n_msgs = int(msg_of_fresh[-1]) + 1
    msg = np.full(len(rows), -1, np.int64)
    msg[f_rows] = msg_of_fresh
    latest_in_flow = np.maximum.accumulate(msg)  # a flow's first payload packet is fresh

    # A retransmission belongs to the latest message of its own side.
    time_pos = np.empty(len(rows), np.int64)
    time_pos[by_time] = np.arange(len(rows))
    last_new = np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))  # stays in its group
    own_msg = msg[time_pos[last_new]][by_time]
    current = own_msg == latest_in_flow

    packets = np.bincount(own_msg, minlength=n_msgs)
    t_start = ft[starts]
    t_end = np.full(n_msgs, -np.inf)
    np.maximum.at(t_end, own_msg[current], t[current])
    # Bytes: how far the message moved its side's stream (UDP: the sum, laid end to end).
    ends = np.flatnonzero(np.r_[msg_of_fresh[1:] != msg_of_fresh[:-1], True])
    fresh_sorted = by_time[f_rows]  # indices into pay arrays
    reached = _group_cummax(pay.end, pay.group)
    bytes_ = reached[fresh_sorted[ends]] - pay.before[fresh_sorted[np.flatnonzero(starts)]]

    msg_flow = ff[np.flatnonzero(starts)]
    msg_side = fs[np.flatnonzero(starts)]
    flow_start = _group_starts(msg_flow)
    t_first = np.full(len(basis.client_ep), np.inf)
    np.minimum.at(t_first, basis.ids, trace.t_s)
    prev_end = np.where(flow_start, t_first[msg_flow], np.r_[0.0, t_end[:-1]])
    first_msg = np.flatnonzero(flow_start)
    msg_no = np.arange(n_msgs) - np.repeat(first_msg, np.diff(np.r_[first_msg, n_msgs]))
    return pd.DataFrame({
        "flow": msg_flow.astype(np.int64), "msg": msg_no.astype(np.int64),
        "sender": np.where(msg_side == 0, "client", "server").astype(object),
        "bytes": np.asarray(bytes_, np.int64), "packets": packets.astype(np.int64),
        "t_start_s": t_start, "t_end_s": t_end,
        "think_s": np.maximum(t_start - prev_end, 0.0),
    })


# --------------------------------------------------------------------------- mapping and replay

def _canonical_address(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise TraceError(f"{where}: {text.strip()!r} is not an IPv4 or IPv6 address") from None


def parse_map(text: str, nodes: Iterable[str], where: str = "--map") -> dict[str, str]:
    """Parse "ADDRESS=NODE,ADDRESS=NODE" into {address: node}, addresses in canonical form.

    >>> parse_map("10.0.0.5=g-beijing, 10.0.0.6=c-odc-00", ["g-beijing", "c-odc-00"])
    {'10.0.0.5': 'g-beijing', '10.0.0.6': 'c-odc-00'}

    Raises `TraceError` (prefixed by `where`) on bad syntax, an invalid address, an address
    given twice, or a node not in `nodes`.
    """
    known = list(nodes)
    known_set = set(known)
    out: dict[str, str] = {}
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise TraceError(f"{where}: expected ADDRESS=NODE[,ADDRESS=NODE...], found nothing")
    for item in items:
        addr, eq, node = item.partition("=")
        if not eq or not addr.strip() or not node.strip() or "=" in node:
            raise TraceError(f"{where}: expected ADDRESS=NODE, found {item!r}")
        addr, node = _canonical_address(addr, where), node.strip()
        if addr in out:
            raise TraceError(f"{where}: address {addr} is mapped twice "
                             f"(to {out[addr]} and {node})")
        if node not in known_set:
            close = difflib.get_close_matches(node, known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            few = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
            raise TraceError(f"{where}: unknown node {node!r}; {hint}known nodes "
                             f"({len(known)}): {few or 'none'}")
        out[addr] = node
    return out


def auto_map(trace: Trace, client_node: str, server_node: str) -> dict[str, str]:
    """Map the trace's two busiest addresses (IP bytes sent plus received) onto two nodes: in
    the busiest flow between them, its client side to `client_node`, the other to
    `server_node`."""
    n = len(trace.addrs)
    if n < 2:
        raise TraceError(f"{trace.path}: cannot map automatically: expected at least two IP "
                         f"addresses, found {n}")
    size = trace.size_bytes.astype(np.float64)
    load = (np.bincount(trace.src, weights=size, minlength=n)
            + np.bincount(trace.dst, weights=size, minlength=n))
    a, b = (trace.addrs[i] for i in np.argsort(-load, kind="stable")[:2])
    table = flows(trace)
    between = table[((table.client == a) & (table.server == b))
                    | ((table.client == b) & (table.server == a))]
    if between.empty:
        raise TraceError(f"{trace.path}: cannot map automatically: the two busiest addresses, "
                         f"{a} and {b}, exchange no packets; give the mapping explicitly")
    busiest = between.loc[between["bytes"].idxmax()]
    return {busiest.client: client_node, busiest.server: server_node}


def open_loop_schedule(trace: Trace, mapping: dict[str, str], protos: Iterable[int] | None = None
                       ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Packets to re-send open-loop, with their original times and sizes, between mapped nodes.

    A packet is kept when its protocol is in `protos` (all when None), both addresses are in
    `mapping` and they map to different nodes. Returns the table (columns idx: record number,
    t_s, src_node, dst_node, size_bytes, proto, flow) and the skipped packets counted by the
    first reason that applies: 'other_proto', 'unmapped', 'same_node'.
    """
    canon = {_canonical_address(a, "mapping"): node for a, node in mapping.items()}
    names = sorted(set(canon.values()))
    node_of_addr = np.array([names.index(canon[a]) if a in canon else -1 for a in trace.addrs],
                            np.int64)
    src_node, dst_node = node_of_addr[trace.src], node_of_addr[trace.dst]
    wanted = (np.ones(len(trace), bool) if protos is None
              else np.isin(trace.proto, np.fromiter(protos, np.int64)))
    mapped = wanted & (src_node >= 0) & (dst_node >= 0)
    keep = mapped & (src_node != dst_node)
    skipped = {"other_proto": int(np.count_nonzero(~wanted)),
               "unmapped": int(np.count_nonzero(wanted & ~mapped)),
               "same_node": int(np.count_nonzero(mapped & ~keep))}
    rows = np.flatnonzero(keep)
    names_arr = np.asarray(names, dtype=object)
    table = pd.DataFrame({
        "idx": trace.index[rows], "t_s": trace.t_s[rows],
        "src_node": names_arr[src_node[rows]] if len(rows) else np.zeros(0, object),
        "dst_node": names_arr[dst_node[rows]] if len(rows) else np.zeros(0, object),
        "size_bytes": trace.size_bytes[rows], "proto": trace.proto[rows],
        "flow": flow_of_packets(trace)[rows],
    })
    return table, skipped


# --------------------------------------------------------------------------- inspection

def inspect(path: str | Path, top: int = 10) -> dict:
    """What a trace holds, as a JSON-able dict: file, linktype, counts, duration_s, ip_bytes,
    mean_rate_mbps, packets_per_s, protocols ({name: {packets, bytes}}), top_addresses and
    top_flows (the `top` busiest by IP bytes; flows as records of `flows()`)."""
    tr = read_trace(path)
    duration = float(tr.t_s.max() - tr.t_s.min())
    ip_bytes = int(tr.size_bytes.astype(np.int64).sum())
    protocols: dict[str, dict[str, int]] = {}
    for p in np.unique(tr.proto):
        sel = tr.proto == p
        entry = protocols.setdefault(_proto_name(p), {"packets": 0, "bytes": 0})
        entry["packets"] += int(np.count_nonzero(sel))
        entry["bytes"] += int(tr.size_bytes[sel].astype(np.int64).sum())
    n = len(tr.addrs)
    size = tr.size_bytes.astype(np.float64)
    load = np.bincount(tr.src, weights=size, minlength=n) + np.bincount(tr.dst, weights=size,
                                                                          minlength=n)
    packets = np.bincount(tr.src, minlength=n) + np.bincount(tr.dst, minlength=n)
    busiest = np.argsort(-load, kind="stable")[:top]
    table = flows(tr).sort_values("bytes", ascending=False, kind="stable").head(top)
    span_s = duration if duration > 0 else np.inf  # a single instant has no rate
    return {
        "file": str(tr.path),
        "linktype": f"{LINKTYPES.get(tr.linktype, 'unknown')} ({tr.linktype})",
        "counts": dict(tr.counts),
        "duration_s": duration,
        "ip_bytes": ip_bytes,
        "mean_rate_mbps": ip_bytes * 8 / 1e6 / span_s,
        "packets_per_s": tr.counts["ip"] / span_s,
        "protocols": protocols,
        "top_addresses": [{"address": tr.addrs[i], "bytes": int(load[i]),
                           "packets": int(packets[i])} for i in busiest],
        "top_flows": [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                      for row in table.to_dict("records")],
    }


def _size_text(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} B"


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def format_inspect(info: dict) -> str:
    """`inspect()`'s summary as aligned plain text, a few lines and a table of the top flows."""
    c = info["counts"]
    lines = [
        f"file        {info['file']}",
        f"link type   {info['linktype']}",
        f"packets     {c['packets']} read: {c['ip']} IP, {c['non_ip']} non-IP, "
        f"{c['unparseable']} unparseable, {c['out_of_order']} out of order",
        f"duration    {info['duration_s']:.3f} s, {_size_text(info['ip_bytes'])} of IP, "
        f"{info['mean_rate_mbps']:.3f} Mbit/s mean, {info['packets_per_s']:.1f} packets/s",
        "protocols   " + ", ".join(f"{name} {v['packets']} packets {_size_text(v['bytes'])}"
                                   for name, v in info["protocols"].items()),
    ]
    if info["top_addresses"]:
        lines.append("addresses   " + ", ".join(f"{a['address']} {_size_text(a['bytes'])}"
                                               for a in info["top_addresses"]))
    head = ["flow", "proto", "client", "server", "packets", "bytes", "client_bytes",
            "server_bytes", "duration_s", "rate_mbps"]
    rows = [[str(f["flow"]), f["proto"], _endpoint(f["client"], f["client_port"]),
             _endpoint(f["server"], f["server_port"]), str(f["packets"]), str(f["bytes"]),
             str(f["client_bytes"]), str(f["server_bytes"]), f"{f['duration_s']:.3f}",
             f"{f['rate_mbps']:.3f}"] for f in info["top_flows"]]
    if rows:
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        text_cols = {1, 2, 3}
        lines.append(f"top {len(rows)} flows by bytes")
        for r in [head] + rows:
            lines.append("  " + "  ".join(v.ljust(w) if i in text_cols else v.rjust(w)
                                          for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)
