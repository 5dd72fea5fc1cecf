"""Open-loop trace replay (run inside emulated nodes): paced UDP sender, timestamping receiver.

Each trace record becomes one UDP datagram whose IP total length is the record's size (payload =
size − 28 bytes of IPv4 + UDP headers; records under 36 bytes are sent at 36, the smallest that
holds the tag, and counted), tagged with its record number (u64 big-endian, first 8 payload
bytes). The record due at trace time t is sent at start_mono + t × dilation (CLOCK_MONOTONIC, which
all namespaces share), so one-way delay, loss and reordering come out exactly.

    python -m netemu.traffic.openloop send --schedule S.npz --src ADDR --port P (--start-mono S | --hold) [--dilation K] --out O.npz
    python -m netemu.traffic.openloop recv --bind ADDR --port P --until-mono T [--say-ready] --out O.npz

(`--hold`, `--say-ready`: the start barrier of `netemu.traffic.ready`.)

Schedule (npz): `idx` int64, `t_s` float64 (non-decreasing), `size_bytes` int32, `dst` int32 (index
into `dst_addrs`, strings); for several sources from one process (`--src` then omitted), also
`src` int32 into `src_addrs`, and `src_netns` (namespace file of each source, whose socket is
made there). Results: arrays in O.npz, counts in the sidecar O.json.
  send: idx, due_ns, sent_ns (int64 monotonic; sent_ns taken just before sendto), failed (bool),
        dst (int32), dst_addrs, src (int32), src_addrs; only the records reached before a stop.
        json: packets, attempted, sent, failed, small_padded, errors {errno name: count}, complete,
        preempted (involuntary context switches while pacing), ...
  recv: idx (int64), size_bytes (int32, IP total length), src (int32 index into src_addrs),
        recv_ns (int64 monotonic, from the kernel receive timestamp), src_addrs.
        json: datagrams, kernel_drops (socket queue overflows: not network loss), not_tagged, ...

`match(sent, received)` joins the two per record; `timing_stats(sent)` measures the pacing.
"""

from __future__ import annotations

import argparse
from array import array
import ctypes
import errno
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import TraceError

__all__ = ["HEADER_BYTES", "MIN_SIZE_BYTES", "payload_bytes", "due_times_ns", "check_schedule", "save_schedule",
           "load_schedule", "send", "receive", "save_result", "load_sent", "load_received", "match",
           "timing_stats", "main"]

HEADER_BYTES = 28                       # IPv4 (no options) + UDP
TAG_BYTES = 8
MIN_SIZE_BYTES = HEADER_BYTES + TAG_BYTES
MAX_SIZE_BYTES = 65535                  # IPv4 total length field
SPIN_NS = 200_000                       # sleep until this long before a due time, then busy-wait
RETRY_NS = 1_000_000                    # how long a send is retried on ENOBUFS/EAGAIN
SNDBUF_BYTES = 16 << 20
RCVBUF_BYTES = 64 << 20
OFFSET_EVERY_NS = 1_000_000_000         # re-sample realtime − monotonic (follows NTP slewing)
RECV_BATCH = 4096                       # datagrams read before the clocks are looked at again
NAP_MS = 4                              # pause between reads while datagrams keep coming (≈ 600 at 150k/s)

_TAG = struct.Struct(">Q")
_TIMESPEC = struct.Struct("qq")
_U32 = struct.Struct("I")
_SO_TIMESTAMPNS = 35                    # SO_TIMESTAMPNS_OLD: struct timespec, CLOCK_REALTIME
_SO_RXQ_OVFL = 40                       # u32: packets this socket's queue dropped so far
_SO_SNDBUFFORCE = 32
_SO_RCVBUFFORCE = 33
_PR_SET_TIMERSLACK = 29
_RETRY_ERRNOS = (errno.ENOBUFS, errno.EAGAIN)


# --- functional core ------------------------------------------------------------------------


def payload_bytes(size_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UDP payload lengths (int32, shape (n,)) for IP sizes `size_bytes`, and the mask of records
    padded up to MIN_SIZE_BYTES."""
    size = np.asarray(size_bytes, dtype=np.int32)
    small = size < MIN_SIZE_BYTES
    return np.maximum(size, MIN_SIZE_BYTES) - np.int32(HEADER_BYTES), small


def due_times_ns(t_s: np.ndarray, start_mono_ns: int, dilation: float = 1.0) -> np.ndarray:
    """Monotonic send instants (int64 ns, shape (n,)) of trace times `t_s` (s) under dilation
    `dilation` (wall seconds per trace second)."""
    return int(start_mono_ns) + np.rint(np.asarray(t_s, dtype=np.float64) * (dilation * 1e9)).astype(np.int64)


def check_schedule(schedule: dict, where: str = "schedule") -> dict:
    """A validated copy of `schedule` (arrays idx, t_s, size_bytes, dst, dst_addrs; optionally
    src, src_addrs, src_netns for several sources) with the dtypes the sender uses; raises
    TraceError naming the first problem."""
    missing = [k for k in ("idx", "t_s", "size_bytes", "dst", "dst_addrs") if k not in schedule]
    if missing:
        raise TraceError(f"{where}: expected arrays idx, t_s, size_bytes, dst, dst_addrs; missing {', '.join(missing)}")
    out = {"idx": np.asarray(schedule["idx"], dtype=np.int64),
           "t_s": np.asarray(schedule["t_s"], dtype=np.float64),
           "size_bytes": np.asarray(schedule["size_bytes"], dtype=np.int32),
           "dst": np.asarray(schedule["dst"], dtype=np.int32),
           "dst_addrs": np.asarray(schedule["dst_addrs"], dtype=str).reshape(-1)}
    n = len(out["idx"])
    for k in ("t_s", "size_bytes", "dst"):
        if out[k].shape != (n,):
            raise TraceError(f"{where}: {k}: expected shape ({n},) like idx, found {out[k].shape}")
    t = out["t_s"]
    if n and not np.isfinite(t).all():
        raise TraceError(f"{where}: t_s: expected finite times, found {t[~np.isfinite(t)][0]} "
                         f"at position {int(np.flatnonzero(~np.isfinite(t))[0])}")
    if n > 1 and (np.diff(t) < 0).any():
        k = int(np.flatnonzero(np.diff(t) < 0)[0])
        raise TraceError(f"{where}: t_s: expected non-decreasing times, found {float(t[k])!r} then {float(t[k + 1])!r} "
                         f"at positions {k}, {k + 1}")
    if n and t[0] < 0:
        raise TraceError(f"{where}: t_s: expected times ≥ 0 s, found {t[0]!r}")
    size = out["size_bytes"]
    if n and ((size < 1) | (size > MAX_SIZE_BYTES)).any():
        k = int(np.flatnonzero((size < 1) | (size > MAX_SIZE_BYTES))[0])
        raise TraceError(f"{where}: size_bytes: expected IP sizes 1..{MAX_SIZE_BYTES}, found {size[k]} at position {k}")
    d = out["dst"]
    if n and ((d < 0) | (d >= len(out["dst_addrs"]))).any():
        k = int(np.flatnonzero((d < 0) | (d >= len(out["dst_addrs"])))[0])
        raise TraceError(f"{where}: dst: expected indices 0..{len(out['dst_addrs']) - 1} into dst_addrs, "
                         f"found {d[k]} at position {k}")
    if "src" in schedule:
        out["src"] = np.asarray(schedule["src"], dtype=np.int32)
        out["src_addrs"] = np.asarray(schedule.get("src_addrs", []), dtype=str).reshape(-1)
        out["src_netns"] = np.asarray(schedule.get("src_netns", [""] * len(out["src_addrs"])), dtype=str).reshape(-1)
        sv = out["src"]
        if sv.shape != (n,) or len(out["src_netns"]) != len(out["src_addrs"]):
            raise TraceError(f"{where}: src: expected shape ({n},) and one src_netns per src_addrs entry")
        if n and ((sv < 0) | (sv >= len(out["src_addrs"]))).any():
            k = int(np.flatnonzero((sv < 0) | (sv >= len(out["src_addrs"])))[0])
            raise TraceError(f"{where}: src: expected indices 0..{len(out['src_addrs']) - 1} into src_addrs, "
                             f"found {sv[k]} at position {k}")
    return out


def timing_stats(sent: dict) -> dict:
    """Pacing accuracy of one sender's result (`idx`, `due_ns`, `sent_ns` as `send` returns).

    error = sent − due (µs): median, p99, max. Gap error = actual − due inter-packet gap (µs),
    p50/p99 of its magnitude. Drift: least-squares slope of error against due time (µs per s);
    the same slope through the medians of 100 equal-count bins (`drift_binned_us_per_s`: one
    stall, a burst of late packets, hardly moves it); the median error over the first and last
    10 % of packets. Rates in packets/s."""
    due = np.asarray(sent["due_ns"], dtype=np.int64)
    act = np.asarray(sent["sent_ns"], dtype=np.int64)
    n = len(due)
    if n == 0:
        raise TraceError("timing_stats: expected at least one sent packet, found none")
    err_us = (act - due) / 1e3
    gap_err_us = np.abs(np.diff(act) - np.diff(due)) / 1e3 if n > 1 else np.zeros(1)
    t_s = (due - due[0]) / 1e9
    tc = t_s - t_s.mean()
    var = float(tc @ tc)
    # centred sums: due times are ~1e4 s since boot, far from 0
    slope = float(tc @ (err_us - err_us.mean()) / var) if var > 0 else 0.0
    k = max(1, n // 10)
    span_sent_s = (act[-1] - act[0]) / 1e9
    span_due_s = (due[-1] - due[0]) / 1e9
    return {
        "packets": n,
        "error_median_us": float(np.median(err_us)),
        "error_p99_us": float(np.percentile(err_us, 99)),
        "error_max_us": float(err_us.max()),
        "gap_error_p50_us": float(np.median(gap_err_us)),
        "gap_error_p99_us": float(np.percentile(gap_err_us, 99)),
        "drift_us_per_s": slope,
        "drift_binned_us_per_s": _binned_slope(t_s, err_us),
        "error_first10_us": float(np.median(err_us[:k])),
        "error_last10_us": float(np.median(err_us[-k:])),
        "achieved_pps": (n - 1) / span_sent_s if span_sent_s > 0 else float("nan"),
        "due_pps": (n - 1) / span_due_s if span_due_s > 0 else float("nan"),
    }


def _binned_slope(t_s: np.ndarray, err_us: np.ndarray, bins: int = 100) -> float:
    if len(t_s) < 2 * bins:
        return float("nan")
    parts = np.array_split(np.arange(len(t_s)), bins)
    t = np.array([np.median(t_s[k]) for k in parts])
    e = np.array([np.median(err_us[k]) for k in parts])
    tc = t - t.mean()
    return float(tc @ (e - e.mean()) / (tc @ tc)) if tc @ tc > 0 else 0.0


def match(sent: dict, received: dict):
    """Per-record outcome of a replay, one row per sent record, sorted by idx (a DataFrame).

    `sent`: idx, due_ns, sent_ns, failed; optional src, dst (flow ends, any labels).
    `received`: idx, recv_ns; optional size_bytes. Rows of one receiver must be in arrival order
    where recv_ns ties.
    Columns: idx, due_ns, sent_ns, recv_ns (first arrival, NaN if none), owd_ms, send_failed, lost
    (sent but never received; records the sender failed to send are not `lost`), reordered
    (arrived after a record with a higher idx of the same src → dst flow: RFC 4737), duplicates
    (copies beyond the first), size_bytes (received IP size, NaN if lost), src, dst if given.
    Received datagrams whose idx was never sent are counted in `.attrs["unmatched"]`."""
    import pandas as pd   # lazy: the sender and receiver programs start without pandas
    s = pd.DataFrame({"idx": np.asarray(sent["idx"], dtype=np.int64),
                      "due_ns": np.asarray(sent["due_ns"], dtype=np.int64),
                      "sent_ns": np.asarray(sent["sent_ns"], dtype=np.int64),
                      "send_failed": np.asarray(sent.get("failed", np.zeros(len(sent["idx"]), bool)), dtype=bool)})
    flow = [k for k in ("src", "dst") if k in sent]
    for k in flow:
        s[k] = np.asarray(sent[k])
    twice = s["idx"][s["idx"].duplicated()]
    if len(twice):
        raise TraceError(f"match: expected each idx sent once, found idx {twice.iloc[0]} twice")
    r = pd.DataFrame({"idx": np.asarray(received["idx"], dtype=np.int64),
                      "recv_ns": np.asarray(received["recv_ns"], dtype=np.int64)})
    if "size_bytes" in received:
        r["size_bytes"] = np.asarray(received["size_bytes"], dtype=np.int64)
    r = r.sort_values("recv_ns", kind="stable")
    r["arrival"] = np.arange(len(r))
    copies = r["idx"].value_counts()
    first = r.drop_duplicates("idx", keep="first")
    unmatched = int((~first["idx"].isin(s["idx"])).sum())
    m = s.merge(first, on="idx", how="left").sort_values("idx", kind="stable").reset_index(drop=True)
    got = m["recv_ns"].notna().to_numpy()
    m["owd_ms"] = (m["recv_ns"] - m["sent_ns"]) / 1e6
    m["lost"] = ~got & ~m["send_failed"].to_numpy()
    m["duplicates"] = (m["idx"].map(copies).fillna(1).astype(np.int64) - 1).where(got, 0)
    a = m.loc[got].sort_values("arrival", kind="stable")
    keys = [a[k].to_numpy() for k in flow] or [np.zeros(len(a), dtype=np.int8)]
    high = a.groupby(keys, sort=False)["idx"].cummax()
    before = high.groupby(keys, sort=False).shift(1)
    m["reordered"] = False
    m.loc[a.index, "reordered"] = (a["idx"] < before).to_numpy()
    cols = ["idx", "due_ns", "sent_ns", "recv_ns", "owd_ms", "send_failed", "lost", "reordered", "duplicates"]
    cols += ["size_bytes"] if "size_bytes" in m else []
    out = m[cols + flow].copy()
    out["recv_ns"] = out["recv_ns"].astype(np.float64)
    out.attrs["unmatched"] = unmatched
    return out


# --- files ----------------------------------------------------------------------------------


def save_schedule(path: str | os.PathLike, schedule: dict) -> None:
    """Write a schedule (validated) as the npz `send --schedule` reads."""
    s = check_schedule(schedule)
    _savez(Path(path), s)


def load_schedule(path: str | os.PathLike) -> dict:
    """Read and validate a schedule npz (see `check_schedule`)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise TraceError(f"{path}: expected a schedule .npz file: {e}") from None
    return check_schedule(raw, where=str(path))


def save_result(path: str | os.PathLike, arrays: dict, counts: dict) -> None:
    """Write `arrays` to `path` (npz) and `counts` to the sidecar with suffix .json."""
    path = Path(path)
    _savez(path, arrays)
    side = path.with_suffix(".json")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, side)


def _savez(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:          # a file object: np.savez would append ".npz" to the name
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load_result(path) -> tuple[dict, dict]:
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    side = path.with_suffix(".json")
    return arrays, (json.loads(side.read_text()) if side.exists() else {})


def load_sent(*paths) -> dict:
    """Sender results concatenated, with flow ends as address strings: src (the sender's bind
    address), dst. Ready for `match` and, per sender, `timing_stats`."""
    parts = []
    for p in paths:
        a, c = _load_result(p)
        a["dst"] = a["dst_addrs"][a["dst"]] if len(a["dst_addrs"]) else a["dst"].astype(str)
        if "src_addrs" in a and len(a["src_addrs"]):
            a["src"] = a["src_addrs"][a["src"]]
        else:
            a["src"] = np.full(len(a["idx"]), c.get("src_addr") or str(p))
        parts.append(a)
    keys = ("idx", "due_ns", "sent_ns", "failed", "src", "dst")
    return {k: np.concatenate([a[k] for a in parts]) for k in keys}


def load_received(*paths) -> dict:
    """Receiver results concatenated: idx, recv_ns, size_bytes, src (sender address), dst (the
    receiver's bind address); plus kernel_drops summed over the receivers."""
    parts, drops = [], 0
    for p in paths:
        a, c = _load_result(p)
        a["src"] = a["src_addrs"][a["src"]] if len(a["src_addrs"]) else a["src"].astype(str)
        a["dst"] = np.full(len(a["idx"]), c.get("bind_addr", str(p)))
        drops += int(c.get("kernel_drops", 0))
        parts.append(a)
    out = {k: np.concatenate([a[k] for a in parts]) for k in ("idx", "recv_ns", "size_bytes", "src", "dst")}
    out["kernel_drops"] = drops
    return out


# --- imperative shell: sockets and clocks ---------------------------------------------------


def _precise_sleep() -> None:
    # The default 50 µs timer slack would eat a quarter of the spin margin; failing to lower it
    # only costs busy-wait time, so it is not an error.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except OSError:
        pass


def _stop_on_signals() -> tuple[list[bool], int]:
    """A flag set by SIGTERM/SIGINT, and a pipe end that becomes readable when one arrives (so a
    poll wakes at once; PEP 475 would otherwise resume it)."""
    stop = [False]
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(*_):
        stop[0] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    return stop, r


def send(schedule: dict, src_addr: str | None, port: int, start_mono_ns, dilation: float = 1.0,
         stop: list[bool] | None = None) -> tuple[dict, dict]:
    """Replay `schedule` (see `check_schedule`) from `src_addr` to UDP `port` of its dst_addrs,
    record k due at start_mono_ns + t_s[k] × dilation × 1e9. Never skips: a late record goes at once.
    `start_mono_ns` may be a function returning it, called once the sockets are made (the start
    barrier: `netemu.traffic.ready`).
    A schedule with `src`/`src_addrs`/`src_netns` is sent from several sources by this one
    process, one socket each, made inside its network namespace (root): senders in several
    nodes would otherwise compete for a CPU while each busy-waits its next due time.
    Stops early when `stop[0]` becomes true. Returns (arrays, counts) as written by `main send`."""
    s = check_schedule(schedule)
    if "src" not in s:
        s.update(src=np.zeros(len(s["idx"]), np.int32), src_addrs=np.array([src_addr]), src_netns=np.array([""]))
    n = len(s["idx"])
    stop = stop if stop is not None else [False]
    plen, small = payload_bytes(s["size_bytes"])
    buf = bytearray(int(plen.max()) if n else TAG_BYTES)
    whole = memoryview(buf)
    views = [None] * (len(buf) + 1)
    for p in np.unique(plen).tolist():
        views[p] = whole[:p]
    addrs = [(str(a), int(port)) for a in s["dst_addrs"]]
    # np.full writes every page now: calloc'd zeros would fault (a 2 MB huge page zeroed) mid-run
    sent_ns = np.full(n, 0, dtype=np.int64)
    failed = np.full(n, False)
    socks = []
    try:
        for addr, netns in zip(s["src_addrs"], s["src_netns"]):
            socks.append(_udp_socket(str(netns)))
            _set_buffer(socks[-1], _SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF_BYTES)
            socks[-1].bind((str(addr), 0))
        if callable(start_mono_ns):
            start_mono_ns = int(start_mono_ns())
        due = due_times_ns(s["t_s"], start_mono_ns, dilation)
        # memoryviews index to plain ints: no per-record objects beyond the loop's own
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        done, errors = _pace([k.sendto for k in socks], memoryview(s["src"]), memoryview(due), memoryview(s["idx"]),
                             memoryview(plen), memoryview(s["dst"]), views, addrs, buf, memoryview(sent_ns),
                             memoryview(failed), stop)
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches
    finally:
        for k in socks:
            k.close()
    arrays = {"idx": s["idx"][:done], "due_ns": due[:done], "sent_ns": sent_ns[:done], "failed": failed[:done],
              "dst": s["dst"][:done], "dst_addrs": s["dst_addrs"], "src": s["src"][:done], "src_addrs": s["src_addrs"]}
    n_failed = int(failed[:done].sum())
    counts = {"packets": n, "attempted": done, "sent": done - n_failed, "failed": n_failed,
              "small_padded": int(small[:done].sum()), "complete": done == n,
              "preempted": switches,     # involuntary context switches while pacing: each one is a late burst
              "errors": {errno.errorcode.get(e, str(e)): c for e, c in sorted(errors.items())},
              "src_addr": str(s["src_addrs"][0]) if len(s["src_addrs"]) == 1 else None, "port": int(port), "dilation": float(dilation), "start_mono_ns": int(start_mono_ns)}
    return arrays, counts


def _udp_socket(netns: str) -> socket.socket:
    """A UDP socket of network namespace file `netns` ('' = this process's)."""
    if not netns:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from ..emulate.netns import entered   # lazy: only the sender enters namespaces
    with entered(netns):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _pace(sendtos, src, due, tags, plen, dst, views, addrs, buf, sent_ns, failed, stop) -> tuple[int, dict]:
    """The hot loop: returns (records attempted, {errno: count})."""
    mono = time.monotonic_ns
    pack = _TAG.pack_into
    spin = SPIN_NS
    errors: dict[int, int] = {}
    n = len(due)
    i = 0
    gc_was = gc.isenabled()
    gc.disable()     # a collection pause is a late burst
    try:
        while i < n:
            if stop[0]:
                break
            d = due[i]
            now = mono()
            if now < d:
                if d - now > spin and _sleep_until(d - spin, stop):
                    break
                while mono() < d:
                    pass
            pack(buf, 0, tags[i])
            sendto = sendtos[src[i]]
            t = mono()
            try:
                sendto(views[plen[i]], addrs[dst[i]])
            except OSError as e:
                t = _retry(sendto, views[plen[i]], addrs[dst[i]], e, t, errors, failed, i)
            sent_ns[i] = t
            i += 1
    finally:
        if gc_was:
            gc.enable()
    return i, errors


def _sleep_until(t_ns: int, stop: list[bool]) -> bool:
    """Sleep to monotonic `t_ns` in slices (a signal only sets a flag); True if stopped."""
    while True:
        left = t_ns - time.monotonic_ns()
        if left <= 0:
            return False
        if stop[0]:
            return True
        time.sleep(min(left, 50_000_000) / 1e9)


def _retry(sendto, view, addr, err: OSError, t: int, errors: dict, failed, i: int) -> int:
    """Retry a send that hit a full queue for up to RETRY_NS; record a failure otherwise.
    Returns the time taken just before the attempt that counts."""
    end = t + RETRY_NS
    while err.errno in _RETRY_ERRNOS and time.monotonic_ns() < end:
        t = time.monotonic_ns()
        try:
            sendto(view, addr)
            return t
        except OSError as e:
            err = e
    errors[err.errno] = errors.get(err.errno, 0) + 1
    failed[i] = True
    return t


def _set_buffer(sock: socket.socket, force: int, plain: int, size_bytes: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size_bytes)
    except PermissionError:      # not root: the kernel caps the plain option at net.core.[rw]mem_max
        sock.setsockopt(socket.SOL_SOCKET, plain, size_bytes)


def _clock_offset_ns() -> tuple[int, int]:
    """(realtime ns, realtime − monotonic ns), from the tightest of a few bracketing reads."""
    best = None
    for _ in range(5):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r, r - (a + b) // 2)
    return best[1], best[2]


def _socket_drops(sock: socket.socket) -> int | None:
    """The kernel's drop count of `sock` from /proc/net/udp (this namespace), None if absent."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if len(cols) >= 13 and cols[9] == inode:
                    return int(cols[-1])
    except OSError:
        return None
    return None


def receive(bind_addr: str, port: int, until_mono_ns: int, stop: list[bool] | None = None,
            wake_fd: int | None = None, on_bound=None) -> tuple[dict, dict]:
    """Record tagged datagrams arriving at `bind_addr`:`port` until monotonic `until_mono_ns`
    or `stop[0]` (looked at when `wake_fd` becomes readable and between batches); `on_bound()` is
    called once the socket is bound. Returns (arrays, counts) as written by `main recv`."""
    stop = stop if stop is not None else [False]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _set_buffer(sock, _SO_RCVBUFFORCE, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        sock.bind((bind_addr, int(port)))
        sock.setblocking(False)
        if on_bound is not None:
            on_bound()
        arrays, counts = _record(sock, until_mono_ns, stop, wake_fd)
        proc_drops = _socket_drops(sock)
    finally:
        sock.close()
    if proc_drops is not None:
        counts["kernel_drops"] = max(counts["kernel_drops"], proc_drops)
    counts.update(bind_addr=bind_addr, port=int(port), until_mono_ns=int(until_mono_ns))
    return arrays, counts


def _record(sock, until_ns: int, stop: list[bool], wake_fd: int | None) -> tuple[dict, dict]:
    idx, size, src, real = array("q"), array("i"), array("i"), array("q")
    sources: dict[str, int] = {}
    off_real, off = array("q"), array("q")
    r0, o0 = _clock_offset_ns()
    off_real.append(r0)
    off.append(o0)
    buf = bytearray(65536)
    bufs = [buf]
    anc_bytes = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_U32.size)
    recv_into = sock.recvmsg_into
    unpack_tag = _TAG.unpack_from
    unpack_ts = _TIMESPEC.unpack_from
    mono, wall = time.monotonic_ns, time.time_ns
    counts = {"datagrams": 0, "not_tagged": 0, "no_kernel_ts": 0, "kernel_drops": 0, "stopped_by_signal": False}
    poller, napper = select.poll(), select.poll()
    poller.register(sock, select.POLLIN)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
        napper.register(wake_fd, select.POLLIN)
    idle = True
    next_offset = mono() + OFFSET_EVERY_NS
    drops = 0
    ending = False
    gc_was = gc.isenabled()
    gc.disable()
    try:
        while True:
            now = mono()
            if not ending and (stop[0] or now >= until_ns):
                # what is queued now arrived in time: take it (up to the end time), then stop
                counts["stopped_by_signal"] = stop[0]
                ending = True
            if now >= next_offset:
                r, o = _clock_offset_ns()
                off_real.append(r)
                off.append(o)
                next_offset = now + OFFSET_EVERY_NS
            if not ending:
                wait_ms = max(1, min(until_ns, next_offset) - now) // 1_000_000 + 1
                # While datagrams flow, nap instead of waiting on the socket: the kernel stamps
                # arrivals, so reading late costs nothing, and a sender whose datagram finds no
                # waiter is spared a cross-CPU wake-up (an IPI, slow in a VM) per datagram.
                try:
                    if idle:
                        poller.poll(wait_ms)
                    else:
                        napper.poll(min(wait_ms, NAP_MS))
                except InterruptedError:
                    pass
            got = 0
            for _ in range(RECV_BATCH):
                try:
                    nbytes, anc, _, addr = recv_into(bufs, anc_bytes)
                except BlockingIOError:
                    break
                got += 1
                ts = 0
                for level, kind, data in anc:
                    if kind == _SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                        sec, nsec = unpack_ts(data)
                        ts = sec * 1_000_000_000 + nsec
                    elif kind == _SO_RXQ_OVFL and level == socket.SOL_SOCKET:
                        drops = _U32.unpack_from(data)[0]
                if nbytes < TAG_BYTES:
                    counts["not_tagged"] += 1
                    continue
                if not ts:
                    counts["no_kernel_ts"] += 1
                    ts = wall()
                k = sources.get(addr[0])
                if k is None:
                    k = sources[addr[0]] = len(sources)
                idx.append(unpack_tag(buf)[0])
                size.append(nbytes + HEADER_BYTES)
                src.append(k)
                real.append(ts)
            idle = got == 0
            if ending and (got < RECV_BATCH or (len(real) and real[-1] - off[-1] > until_ns)):
                break
    finally:
        if gc_was:
            gc.enable()
    real_ns = np.frombuffer(real, dtype=np.int64) if len(real) else np.zeros(0, np.int64)
    arrays = {"idx": np.frombuffer(idx, dtype=np.int64).copy() if len(idx) else np.zeros(0, np.int64),
              "size_bytes": np.frombuffer(size, dtype=np.int32).copy() if len(size) else np.zeros(0, np.int32),
              "src": np.frombuffer(src, dtype=np.int32).copy() if len(src) else np.zeros(0, np.int32),
              "recv_ns": _to_monotonic(real_ns, np.frombuffer(off_real, dtype=np.int64),
                                       np.frombuffer(off, dtype=np.int64)),
              "src_addrs": np.array(list(sources), dtype=str)}
    counts["datagrams"] = len(real)
    counts["kernel_drops"] = int(drops)
    counts["offset_samples"] = len(off)
    return arrays, counts


def _to_monotonic(real_ns: np.ndarray, at_real_ns: np.ndarray, offset_ns: np.ndarray) -> np.ndarray:
    """Realtime stamps → monotonic ns, with the realtime − monotonic offset interpolated between
    its samples (relative values: float64 cannot hold ns since 1970 exactly)."""
    if len(real_ns) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(at_real_ns) == 1:
        return real_ns - offset_ns[0]
    r0, o0 = at_real_ns[0], offset_ns[0]
    d = np.interp((real_ns - r0).astype(np.float64), (at_real_ns - r0).astype(np.float64),
                  (offset_ns - o0).astype(np.float64))
    return real_ns - (o0 + np.rint(d).astype(np.int64))


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netemu.traffic.openloop", description="Open-loop trace replay.")
    sub = ap.add_subparsers(dest="mode", required=True)
    sd = sub.add_parser("send", help="replay a schedule")
    sd.add_argument("--schedule", required=True, help="schedule .npz (idx, t_s, size_bytes, dst, dst_addrs)")
    sd.add_argument("--src", default=None,
                    help="address to send from (not needed when the schedule has src, src_addrs, src_netns)")
    sd.add_argument("--port", type=int, required=True, help="destination UDP port")
    start = sd.add_mutually_exclusive_group(required=True)
    start.add_argument("--start-mono", type=float, help="CLOCK_MONOTONIC s at which trace time 0 is due")
    start.add_argument("--hold", action="store_true",
                       help="say ready on stdout once the sockets are made, then read 'go T0_MONO' from stdin")
    sd.add_argument("--dilation", type=float, default=1.0, help="time dilation K: wall seconds per trace second (≥ 1 slows down)")
    sd.add_argument("--out", required=True, help="result .npz (counts in the .json beside it)")
    rv = sub.add_parser("recv", help="record tagged datagrams")
    rv.add_argument("--bind", required=True, help="address to receive on")
    rv.add_argument("--port", type=int, required=True)
    rv.add_argument("--until-mono", type=float, required=True, help="CLOCK_MONOTONIC s at which to stop")
    rv.add_argument("--out", required=True, help="result .npz (counts in the .json beside it)")
    rv.add_argument("--say-ready", action="store_true", help="write 'ready' on stdout once bound")
    args = ap.parse_args(argv)
    from ..emulate.tap import die_with_parent   # lazy: only when run as a program
    die_with_parent()
    stop, wake = _stop_on_signals()
    try:
        if args.mode == "send":
            if not args.dilation > 0:
                ap.error(f"--dilation: expected a positive number, found {args.dilation:g}")
            schedule = load_schedule(args.schedule)
            if args.src is None and "src" not in schedule:
                ap.error("--src: required unless the schedule names its sources (src, src_addrs, src_netns)")
            _precise_sleep()
            if args.hold:
                from .ready import read_go, say_ready

                def start_ns() -> int:
                    say_ready()
                    return round(read_go() * 1e9)
            else:
                start_ns = round(args.start_mono * 1e9)
            arrays, counts = send(schedule, args.src, args.port, start_ns, args.dilation, stop)
        else:
            from .ready import say_ready
            arrays, counts = receive(args.bind, args.port, round(args.until_mono * 1e9), stop, wake,
                                     say_ready if args.say_ready else None)
    except (TraceError, OSError) as e:
        print(f"netemu.traffic.openloop {args.mode}: {e}", file=sys.stderr)
        return 1
    counts["stopped_by_signal"] = bool(stop[0])
    save_result(args.out, arrays, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
