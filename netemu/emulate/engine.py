"""The link engine process: moves frames between TAP pairs with each link's delay, rate, queue,
loss and up/down. Started and driven by `netemu.emulate.links.EngineLinks`; run as
`python -m netemu.emulate.engine CONTROL_FD`.

Per link direction, a frame entering at time t is admitted or dropped (down, random loss, full
queue), serialised at the link rate behind the frames already queued (FIFO), and leaves at
serialisation end + propagation delay, where the delay is the link's piecewise-linear delay
profile evaluated at t (so it follows the geometry without steps), minus a small calibrated
correction. The entry time t is not the read time: a frame that the engine's own write caused
(a router forwarding it, an end host answering) entered when that write began, so the time
the hosts' stacks spend inside the engine's writes never adds up along a path (see drain()).
Departures are monotonic per direction unless reordering is
allowed. A CLOCK_MONOTONIC timerfd wakes the loop at the next departure; a ready TAP is read
until EAGAIN (a TAP read returns one frame), at most DRAIN_MAX frames before due departures
get their turn.

Cut links (cluster runs, netemu.emulate.cluster): a link whose other end is on another host has
one local TAP. Frames read from it are admitted as on any link and sent at once over UDP (the
engine's wire socket) to the peer host's engine, with their departure instant in the run's shared
time base (nanoseconds since a shared epoch, which each host maps to its own CLOCK_MONOTONIC);
the peer releases them into its TAP at that instant. A frame that arrives after its instant is
counted late on its link (`wire_late`) and leaves at once.

Control messages (length-prefixed pickles of (seq, command, *args) over a stream socket from
the parent, each answered in order by (seq, status, result)) add and remove links, schedule parameter changes at emulated times, extend delay profiles, read counters and
stop the engine. The engine exits, closing its TAPs, when the parent goes away.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
import os
import pickle
import random
import select
import signal
import socket
import struct
import sys
from collections import deque
from time import monotonic, time

from .tap import Timer, VNET_HDR_BYTES, die_with_parent, open_tap, setns, unpersist_tap

LATE_S = 0.0005          # a departure later than this counts as late (engine overload)
LATE_BUCKETS_S = (10e-6, 50e-6, 100e-6, 200e-6, 500e-6, 2e-3)   # departure lateness histogram edges
EARLY_SLACK_S = 2e-6     # frames due within this are sent now
SPIN_S = 300e-6          # wake this much before a departure and spin to it
WRITE_COST_GAIN = 0.05   # EWMA gain of the measured TAP write cost
DRAIN_MAX = 32           # frames read from one TAP before due departures get their turn
ROUTE_SLICE = 2          # namespaces' route changes sent before due departures get their turn
# A frame is timed from the engine's write that caused it only if it is read within this much
# of the write (the stack forwards inside the write in a few µs; a longer gap is a stall, and
# timing from the write would make the frame up to the stall's length early).
CAUSED_WINDOW_S = 200e-6
# The engine logs a stall when it could not look at its TAPs and timers for longer than this
# while frames were waiting or due: the host took its CPU (on a 2-vCPU VM the hypervisor pauses
# a vCPU for 0.3-26 ms, from once a second to hundreds of times a second) or frames left late. Frames that arrived
# or were due meanwhile were timed late by up to the stall; runs count probes that overlap a
# stall apart (netemu.traffic.fidelity), as they do probes straddling a path change.
STALL_S = 200e-6
STALL_LOG_MAX = 100_000
WIRE_HEADER = struct.Struct("!IBq")   # cut-link datagram: wire link id, direction (0 a→b, 1 b→a), departure ns
WIRE_DIRECTIONS = {"ab": 0, "ba": 1}


def default_queue_bytes(rate_mbps: float) -> int:
    """Queue bound when none is given: 100 ms at the link rate, at least 64 kB."""
    return max(64_000, int(rate_mbps * 1e6 / 8 * 0.1))


class DelayProfile:
    """Piecewise-linear delay over monotonic time: breakpoints (t, delay_s), linear between
    consecutive ones, held flat before the first and after the last."""

    __slots__ = ("t", "d", "i")

    def __init__(self, delay_s: float = 0.0, t: float = 0.0):
        self.t: list[float] = [t]
        self.d: list[float] = [delay_s]
        self.i = 0

    def set_constant(self, delay_s: float, now: float) -> None:
        """`delay_s` from `now` on (a breakpoint at now; later points ramp from it)."""
        self.t, self.d, self.i = [now], [delay_s], 0

    def add_points(self, points: list[tuple[float, float]], now: float) -> None:
        """Insert breakpoints (monotonic t, delay s); keeps the last point at or before `now`."""
        if points and points[0][0] > self.t[-1] and all(a[0] < b[0] for a, b in zip(points, points[1:])):
            # the usual case (a player feeding ahead): append, and drop what has been passed
            # in amortised O(1) so that a feed costs the engine microseconds, not a re-sort
            i = self.i
            while i + 1 < len(self.t) and self.t[i + 1] <= now:
                i += 1
            if i > 16:
                del self.t[:i], self.d[:i]
                i = 0
            self.i = i
            self.t.extend(p[0] for p in points)
            self.d.extend(p[1] for p in points)
            return
        # stable: at equal times the newer point comes last and wins
        merged = sorted([*zip(self.t, self.d), *points], key=lambda p: p[0])
        keep = 0
        for j, (tj, _) in enumerate(merged):
            if tj <= now:
                keep = j
        merged = merged[keep:]
        self.t = [p[0] for p in merged]
        self.d = [p[1] for p in merged]
        self.i = 0

    def at(self, now: float) -> float:
        t, i = self.t, self.i
        n = len(t)
        while i + 1 < n and t[i + 1] <= now:
            i += 1
        self.i = i
        if now <= t[i] or i + 1 == n:
            return self.d[i]
        f = (now - t[i]) / (t[i + 1] - t[i])
        return self.d[i] + f * (self.d[i + 1] - self.d[i])


class Direction:
    """One direction of a link: admission (down, loss, queue), serialisation, departure time."""

    __slots__ = ("link", "name", "in_fd", "out_fd", "profile", "rate_bytes_per_s", "loss", "up", "queue_bytes",
                 "queue_packets", "reorder", "rng", "next_free", "last_dep", "tx_ends", "q", "epoch",
                 "frames_in", "bytes_in", "frames_out", "bytes_out", "drop_down", "drop_loss",
                 "drop_queue", "drop_error", "queue_hwm_bytes", "late", "max_late_s", "record", "pcap",
                 "cap_in", "in_ns", "out_ns", "empty_at", "partial", "planned_up", "fault", "wire", "wire_tx",
                 "wire_rx", "wire_late", "wire_max_late_s", "queue_max_bytes", "sampled")

    def __init__(self, link: str, name: str, in_fd: int, out_fd: int, profile: DelayProfile, seed: int):
        self.link, self.name, self.in_fd, self.out_fd, self.profile = link, name, in_fd, out_fd, profile
        self.rate_bytes_per_s = 0.0
        self.loss = 0.0
        self.up = True
        self.planned_up = True           # what the schedule says; `up` is that and not `fault`
        self.fault = False               # an injected failure holds the link down (cmd_fault)
        self.queue_bytes: float = float("inf")
        self.queue_packets: float = float("inf")
        self.reorder = False
        self.rng = random.Random(seed).random
        self.next_free = 0.0
        self.last_dep = 0.0
        self.tx_ends: deque = deque()
        self.q: deque = deque()
        self.epoch = 0
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0
        self.drop_down = self.drop_loss = self.drop_queue = self.drop_error = 0
        self.queue_hwm_bytes = 0.0
        self.late = 0
        self.max_late_s = 0.0
        self.record: list | None = None
        self.pcap = None                 # a _Pcap of the frames leaving at out_fd (their exit)
        self.cap_in = None               # … of the frames entering at in_fd (their entry)
        self.in_ns = self.out_ns = 0     # engine-wide indices of the namespaces of in_fd, out_fd
        self.empty_at = 0.0              # when in_fd was last read to EAGAIN
        self.partial = False             # the last drain stopped at DRAIN_MAX frames
        self.wire = None                 # cut link, sending side: (peer address, datagram header prefix)
        self.wire_tx = self.wire_rx = self.wire_late = 0
        self.wire_max_late_s = 0.0       # cut link, receiving side: latest arrival after a frame's instant
        self.queue_max_bytes = 0.0       # the largest backlog since the last sample (cmd_sample)
        self.sampled = None              # (frames in, frames out, drops) at the last sample that listed it

    def configure(self, p: dict) -> None:
        if "rate_mbps" in p:
            self.rate_bytes_per_s = p["rate_mbps"] * 1e6 / 8
        if "loss_pct" in p:
            self.loss = p["loss_pct"] / 100.0
        if "up" in p:
            self.planned_up = p["up"]
            self._set_up(self.planned_up and not self.fault)
        if "reorder" in p:
            self.reorder = p["reorder"]
        if "queue_bytes" in p or "rate_mbps" in p:
            qb = p.get("queue_bytes")
            self.queue_bytes = qb or (default_queue_bytes(self.rate_bytes_per_s * 8e-6) if self.rate_bytes_per_s else float("inf"))
        if "queue_packets" in p:
            self.queue_packets = p["queue_packets"] or float("inf")

    def set_fault(self, on: bool) -> None:
        """An injected failure holds the link down whatever the schedule says, until cleared."""
        self.fault = on
        self._set_up(self.planned_up and not on)

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            if not up:
                self.epoch += 1      # frames on the wire when a link goes down are lost

    def admit(self, now: float, size: int, enter: float | None = None, comp_s: float = 0.0) -> float:
        """Departure time of a frame of `size` bytes read `now` that entered the link at `enter`
        (≤ now; default now), or -1 (down), -2 (loss), -3 (queue). `comp_s` (s) is taken off
        its delay, which never goes below zero."""
        self.frames_in += 1
        self.bytes_in += size
        if not self.up:
            self.drop_down += 1
            return -1.0
        if self.loss and self.rng() < self.loss:
            self.drop_loss += 1
            return -2.0
        t = now if enter is None else enter    # the link's own clock: the frame joins its queue when it entered
        if self.rate_bytes_per_s:
            start = self.next_free if self.next_free > t else t
            backlog = (start - t) * self.rate_bytes_per_s
            if self.queue_packets != float("inf"):
                ends = self.tx_ends
                while ends and ends[0] <= t:
                    ends.popleft()
                if len(ends) >= self.queue_packets:
                    self.drop_queue += 1
                    return -3.0
            if backlog + size > self.queue_bytes:
                self.drop_queue += 1
                return -3.0
            if backlog + size > self.queue_max_bytes:     # (≤ the high-water mark: one test per frame)
                self.queue_max_bytes = backlog + size
                if backlog + size > self.queue_hwm_bytes:
                    self.queue_hwm_bytes = backlog + size
            self.next_free = start + size / self.rate_bytes_per_s
            if self.queue_packets != float("inf"):
                self.tx_ends.append(self.next_free)
            sent = self.next_free
        else:
            sent = t
        delay = self.profile.at(t) - comp_s
        # (a frame read too late to keep its time is due in the past: it leaves at once and
        # counts as late)
        dep = sent + (delay if delay > 0 else 0.0)
        if dep < self.last_dep and not self.reorder:
            dep = self.last_dep
        self.last_dep = dep
        return dep

    def backlog_bytes(self, now: float) -> float:
        """Bytes queued for serialisation at `now` (the rest of the frame on the wire included)."""
        return (self.next_free - now) * self.rate_bytes_per_s if self.next_free > now else 0.0

    def counters(self) -> dict:
        return {"link": self.link, "direction": self.name, "frames_in": self.frames_in, "bytes_in": self.bytes_in,
                "frames_out": self.frames_out, "bytes_out": self.bytes_out, "drop_down": self.drop_down,
                "drop_loss": self.drop_loss, "drop_queue": self.drop_queue, "drop_error": self.drop_error,
                "queue_hwm_bytes": int(self.queue_hwm_bytes), "late": self.late,
                "max_late_ms": round(self.max_late_s * 1e3, 4), "wire_tx": self.wire_tx, "wire_rx": self.wire_rx,
                "wire_late": self.wire_late, "wire_max_late_ms": round(self.wire_max_late_s * 1e3, 4)}


class _Pcap:
    """A capture file of one link end (classic libpcap, nanosecond timestamps, link type
    Ethernet: what the TAPs carry), written through a large buffer. Timestamps are emulated
    time: the scenario epoch (`epoch_unix_s`) plus the schedule time of the frame's monotonic
    instant under the engine's clock (origin, dilation), so a capture reads as if taken in the
    emulated network."""

    MAGIC_NS = 0xA1B23C4D

    def __init__(self, path: str, engine: "Engine", epoch_unix_s: float = 0.0, snaplen: int = 262_144):
        self.path, self.engine = path, engine
        self.epoch_s = int(epoch_unix_s // 1)
        self.epoch_ns = int(round((epoch_unix_s - self.epoch_s) * 1e9))
        self.frames = 0
        self.f = open(path, "wb", buffering=1 << 20)
        self.f.write(struct.pack("<IHHiIII", self.MAGIC_NS, 2, 4, 0, 0, snaplen, 1))

    def write(self, t_mono: float, frame: bytes) -> None:
        e = self.engine
        ns = self.epoch_ns + int(round((t_mono - e.origin_mono) / e.scale * 1e9))
        sec, ns = divmod(ns, 1_000_000_000)
        n = len(frame)
        self.f.write(struct.pack("<IIII", self.epoch_s + sec, ns, n, n))
        self.f.write(frame)
        self.frames += 1

    def close(self) -> None:
        self.f.close()


class Engine:
    def __init__(self, ctl: socket.socket):
        self.ctl = ctl
        self.ctl.setblocking(False)
        self.ep = select.epoll()
        self.timer = Timer()
        self.ep.register(self.timer.fd, select.EPOLLIN)
        self.ep.register(ctl.fileno(), select.EPOLLIN)
        self.by_fd: dict[int, Direction] = {}
        self.links: dict[str, tuple[Direction, Direction, list[int]]] = {}
        self.heap: list = []
        self.seq = 0
        self.pending: list = []          # scheduled parameter changes: (t_mono, seq, link, params)
        self.hop_s = 0.0       # correction taken off frames the engine's own writes caused
        self.process_s = 0.0    # … and off frames sent by processes
        self.origin_mono = monotonic()   # monotonic time of emulated t = 0
        self.scale = 1.0                 # wall seconds per emulated second (time dilation)
        self.wall_offset = time() - monotonic()
        self.buf = b""
        self.running = True
        self.busy_s = 0.0
        self.write_cost_s = 0.0
        self.ns_fds: dict[str, int] = {}
        self.route_socks: dict[str, socket.socket] = {}   # netns path -> its rtnetlink socket
        self.route_log: list[tuple] = []     # (step, start, done, namespaces, errors, first error)
        self.home_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.busy_poll = False
        self.max_frame = 1522
        self.started = monotonic()
        self.frames = 0
        self.vnet = 0
        self.control_max_ms = 0.0
        self.late_hist = [0] * (len(LATE_BUCKETS_S) + 1)
        # Per namespace (index): when the engine's latest write into it began, and the poll
        # generation it happened in (drain() uses them to tell when a frame entered its link).
        self.ns_index: dict[int, int] = {}       # namespace inode -> index
        self.ns_ws: list[float] = []
        self.ns_gen: list[int] = []
        self.poll_gen = 0
        # the wire of cut links (cmd_wire): a UDP socket, the local monotonic instant of the shared
        # epoch, and the receiving direction of each (wire link id, direction code)
        self.wire_sock: socket.socket | None = None
        self.wire_fd = -1
        self.wire_epoch_mono = 0.0
        self.wire_in: dict[tuple[int, int], Direction] = {}
        self.wire_unknown = 0
        self.stalls: deque = deque(maxlen=STALL_LOG_MAX)   # (start, end, links), monotonic s, not yet taken
        self.stall_count = 0
        self.stall_total_s = 0.0
        self.stall_max_s = 0.0
        self.checked = monotonic()       # when the loop last looked at its TAPs and timers
        # the directions whose counters or queue may have changed since the last sample
        # (cmd_sample): drain() and wire_recv() add theirs, a sample keeps the ones still busy
        self.touched: set[Direction] = set()
        self.sampling: list[Direction] = []     # a sample's directions not visited yet

    # ------------------------------------------------------------------ time

    def mono(self, t_s: float) -> float:
        return self.origin_mono + t_s * self.scale

    # ------------------------------------------------------------------ data path

    def drain(self, fd: int) -> None:
        """Read the frames waiting on `fd` (up to DRAIN_MAX; a TAP read returns one frame) and
        schedule them.

        When did a frame enter its link? The kernel queued it on the TAP some time before this
        read. If the engine itself wrote a frame into this TAP's namespace since the fd was last
        found empty, and before the poll that reported it, the frame is most likely that write's
        product (forwarded by a router, or an end host's reply or ACK made while receiving):
        the receiving stack runs inside the write, so the frame entered when the write began.
        Such frames get the calibrated `hop_s` taken off their delay. Other frames (sent by a
        process) entered about one read latency before the read: `process_s` is taken off."""
        d = self.by_fd[fd]
        self.touched.add(d)
        record = d.record
        ws = self.ns_ws[d.in_ns]
        # (a drain cut short by DRAIN_MAX left frames of the same write for the next poll)
        # (a write long before this read, the engine having stalled in between, tells nothing of
        # when the frame entered: timed from the read it can be late, never faster than light)
        caused = (ws >= d.empty_at and (self.ns_gen[d.in_ns] >= self.poll_gen - 1 or d.partial)
                  and monotonic() - ws <= CAUSED_WINDOW_S)
        comp = self.hop_s if caused else self.process_s
        q = d.q
        if d.up and not (d.rate_bytes_per_s or d.loss or d.reorder or record is not None or d.cap_in is not None or d.wire):
            n = self._drain_plain(d, fd, ws if caused else 0.0, comp)
        else:
            n = self._drain_general(d, fd, ws, caused, comp)
        self.frames += n
        if q and q[0][0] <= monotonic() + EARLY_SLACK_S:
            self.send_due(d, monotonic())

    def _drain_plain(self, d: Direction, fd: int, ws: float, comp_s: float) -> int:
        """drain() for the common link direction: up, no rate limit, loss, reordering or
        records. Its delay is evaluated once per drain (a drain lasts well under a
        millisecond, over which a satellite link's delay changes by nanoseconds). `ws`: the
        entry time of frames the engine's write caused, or 0 (they entered when read).
        Its read loop repeats _drain_general's on purpose: a helper per frame costs the hot path."""
        read, max_frame, q, epoch, vnet = os.read, self.max_frame, d.q, d.epoch, self.vnet
        delay = d.profile.at(ws or monotonic()) - comp_s
        if delay < 0:
            delay = 0.0
        last = d.last_dep
        was_empty = not q
        n = nbytes = 0
        d.partial = True
        while n < DRAIN_MAX:
            try:
                frame = read(fd, max_frame)
            except BlockingIOError:
                d.empty_at = monotonic()
                d.partial = False
                break
            except OSError:
                d.drop_error += 1
                d.partial = False
                break
            n += 1
            nbytes += len(frame)
            dep = (ws or monotonic()) + delay
            if dep < last:
                dep = last
            last = dep
            q.append((dep, frame, epoch))
        d.last_dep = last
        d.frames_in += n
        d.bytes_in += nbytes - n * vnet
        if was_empty and q:
            self.seq += 1
            heapq.heappush(self.heap, (q[0][0], self.seq, d, None, 0))
        return n

    def _drain_general(self, d: Direction, fd: int, ws: float, caused: bool, comp: float) -> int:
        """drain() for any link direction: each frame through Direction.admit (rate, queue,
        loss, down) and recorded when asked."""
        read, admit, vnet, record, max_frame, q, cap = os.read, d.admit, self.vnet, d.record, self.max_frame, d.q, d.cap_in
        n = 0
        d.partial = True
        while n < DRAIN_MAX:
            try:
                frame = read(fd, max_frame)
            except BlockingIOError:
                d.empty_at = monotonic()
                d.partial = False
                break
            except OSError:
                d.drop_error += 1
                d.partial = False
                break
            n += 1
            now = monotonic()
            size = len(frame) - vnet
            enter = ws if caused else now
            dep = admit(now, size, enter, comp)
            if record is not None:
                record.append((enter, dep, size, comp))
            if cap is not None:      # entered (dropped frames too: the sender sent them)
                cap.write(enter - comp, frame[vnet:])
            if dep < 0:
                continue
            if d.wire is not None:      # a cut link: to the peer host's engine at once, with its instant
                self._wire_send(d, dep, frame)
                continue
            if d.reorder:
                self.seq += 1
                heapq.heappush(self.heap, (dep, self.seq, d, frame, d.epoch))
            else:
                q.append((dep, frame, d.epoch))
                if len(q) == 1:
                    self.seq += 1
                    heapq.heappush(self.heap, (dep, self.seq, d, None, 0))
        return n

    def _wire_send(self, d: Direction, dep: float, frame: bytes) -> None:
        peer, head = d.wire
        try:
            self.wire_sock.sendto(head + struct.pack("!q", round((dep - self.wire_epoch_mono) * 1e9)) + frame, peer)
        except OSError:
            d.drop_error += 1
            return
        d.wire_tx += 1

    def wire_recv(self) -> None:
        """Take the datagrams waiting on the wire: each frame joins its link direction's queue
        at its departure instant (a frame already past it is late, and leaves at once)."""
        recv, unpack, size, wire_in = self.wire_sock.recv, WIRE_HEADER.unpack_from, WIRE_HEADER.size, self.wire_in
        epoch = self.wire_epoch_mono
        now = monotonic()
        for _ in range(DRAIN_MAX):
            try:
                data = recv(65_600)
            except BlockingIOError:
                break
            except OSError:
                break
            if len(data) < size:
                self.wire_unknown += 1
                continue
            wid, code, t_ns = unpack(data)
            d = wire_in.get((wid, code))
            if d is None:
                self.wire_unknown += 1
                continue
            d.wire_rx += 1
            self.touched.add(d)
            self.frames += 1
            dep = epoch + t_ns * 1e-9
            if dep < now:
                d.wire_late += 1
                if now - dep > d.wire_max_late_s:
                    d.wire_max_late_s = now - dep
                dep = now               # it leaves at once, late by the wire (not an engine stall)
            q = d.q
            if q and dep < q[-1][0]:
                dep = q[-1][0]          # FIFO per direction, as on any link
            q.append((dep, data[size:], d.epoch))
            if len(q) == 1:
                self.seq += 1
                heapq.heappush(self.heap, (dep, self.seq, d, None, 0))

    def send_due(self, d: Direction, now: float) -> None:
        """Write out the frames of `d` whose departure time has come (FIFO directions)."""
        q, write, out_fd, epoch_now, vnet, pcap = d.q, os.write, d.out_fd, d.epoch, self.vnet, d.pcap
        horizon = now + EARLY_SLACK_S
        nbytes = 0
        deps: list[float] = []      # of the frames written, ascending (FIFO departures)
        t_start = monotonic()
        self.ns_ws[d.out_ns], self.ns_gen[d.out_ns] = t_start, self.poll_gen
        while q:
            item = q[0]
            if item[0] > horizon:
                break
            q.popleft()
            dep, frame, epoch = item
            if epoch != epoch_now:
                d.drop_down += 1
                continue
            try:
                write(out_fd, frame)
            except OSError:
                d.drop_error += 1
                continue
            nbytes += len(frame)
            deps.append(dep)
            if pcap is not None:
                pcap.write(now, frame[vnet:])
        n = len(deps)
        if not n:
            return
        self._track_write_cost((monotonic() - t_start) / n)
        d.frames_out += n
        d.bytes_out += nbytes - n * vnet
        # Lateness per batch rather than per frame: departures are ascending, so the first
        # frame is the latest and bisections count the frames in each lateness bucket.
        hist = self.late_hist
        worst = now - deps[0]
        if worst > d.max_late_s:
            d.max_late_s = worst
        if worst < LATE_BUCKETS_S[0]:
            hist[0] += n
            return
        if worst > STALL_S:
            self.stall(deps[0], now, d.link)
        above = n                   # frames at least as late as the previous edge
        for j, edge in enumerate(LATE_BUCKETS_S):
            c = bisect_right(deps, now - edge)
            hist[j] += above - c
            above = c
        hist[-1] += above
        d.late += bisect_left(deps, now - LATE_S)

    def _track_write_cost(self, cost_s: float) -> None:
        """EWMA of one TAP write (the receiving stack runs inside it): a gauge of host load."""
        self.write_cost_s += WRITE_COST_GAIN * (cost_s - self.write_cost_s)

    def _send_one(self, d: Direction, frame: bytes, now: float, dep: float) -> None:
        t_w = monotonic()
        self.ns_ws[d.out_ns], self.ns_gen[d.out_ns] = t_w, self.poll_gen
        try:
            os.write(d.out_fd, frame)
        except OSError:
            d.drop_error += 1
            return
        self._track_write_cost(monotonic() - t_w)
        d.frames_out += 1
        d.bytes_out += len(frame) - self.vnet
        lateness = now - dep
        if lateness > STALL_S:
            self.stall(dep, now, d.link)
            if lateness > LATE_S:
                d.late += 1
        if lateness > d.max_late_s:
            d.max_late_s = lateness
        if d.pcap is not None:
            d.pcap.write(now, frame[self.vnet:])

    def deliver(self) -> None:
        heap = self.heap
        now = monotonic()
        horizon = now + EARLY_SLACK_S
        while heap and heap[0][0] <= horizon:
            dep, _, d, frame, epoch = heapq.heappop(heap)
            if frame is not None:       # reorder-allowed direction: one heap entry per frame
                if epoch == d.epoch:
                    self._send_one(d, frame, now, dep)
                else:
                    d.drop_down += 1
                continue
            if not d.q:                 # already sent by drain()
                continue
            self.send_due(d, now)
            if d.q:
                self.seq += 1
                heapq.heappush(heap, (d.q[0][0], self.seq, d, None, 0))

    def apply_due(self) -> None:
        now = monotonic()
        while self.pending and self.pending[0][0] <= now:
            if self.pending[0][2] is None:        # a step's route changes (cmd_routes)
                if not self._route_slice(self.pending[0][3]):
                    heapq.heappop(self.pending)
                return                            # due departures get their turn in between
            _, _, link, params = heapq.heappop(self.pending)
            self._configure(link, params)

    def _route_slice(self, job: list) -> bool:
        """Send the next ROUTE_SLICE namespaces' requests of route job
        [step, items, next index, start, errors, first error]; False once all are sent. The
        kernel applies them inside the send; its answers (an acknowledgement for the last
        request of each, an error for any refused) are read at once."""
        step, items, i = job[0], job[1], job[2]
        if i == 0:
            job[3] = monotonic()
        for path, chunks in items[i:i + ROUTE_SLICE]:
            sock = self.route_socks[path]
            for data in chunks:
                sock.send(data)
            while True:
                try:
                    reply = sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                off = 0
                while off + 20 <= len(reply):
                    n, kind = struct.unpack_from("=LH", reply, off)
                    if kind == 2:                                 # NLMSG_ERROR: 0 is an acknowledgement
                        err = -struct.unpack_from("=i", reply, off + 16)[0]
                        if err:
                            job[4] += 1
                            job[5] = job[5] or f"{path}: {os.strerror(err)} (errno {err})"
                    off += max(16, (n + 3) & ~3)
        job[2] = i = i + ROUTE_SLICE
        if i < len(items):
            return True
        self.route_log.append((step, job[3], monotonic(), len(items), job[4], job[5]))
        return False

    def next_wake(self) -> float:
        t = self.heap[0][0] if self.heap else 0.0
        if self.pending and (t == 0.0 or self.pending[0][0] < t):
            t = self.pending[0][0]
        return t

    def run(self) -> None:
        ep, timer = self.ep, self.timer
        while self.running:
            wake = self.next_wake()
            # Wake SPIN_S early and spin to the exact instant: a sleeping timerfd wakes 30-150 µs
            # late (more after longer sleeps), which would add a varying error to every delay.
            target = max(wake - SPIN_S, 1e-9) if wake else 0.0
            if target != timer.armed_at:
                timer.arm(target)
            # poll_gen counts polls, empty ones too: a write's products are ready at the next one.
            # `looked`: when the loop last polled its TAPs and timers; a poll that finds work
            # more than STALL_S later marks a stall (see stall()).
            looked = self.checked
            events = ep.poll(0)
            self.poll_gen += 1
            while self.busy_poll and not events:
                looked = monotonic()
                events = ep.poll(0)
                self.poll_gen += 1
            if not events:
                events = ep.poll(-1)
                self.poll_gen += 1
                # asleep on purpose until the timer, which fires SPIN_S early: a wake-up is late
                # only once it is past the instant the timer was set for
                looked = timer.armed_at + SPIN_S if timer.armed_at else monotonic()
            t0 = self.checked = monotonic()
            if t0 - looked > STALL_S:
                self.stall(looked, t0, self.event_links(events))
            self.handle(events)
            work = monotonic() - t0
            # Serve departures and scheduled updates, spinning while the next of either is
            # within SPIN_S (the timer fired that early on purpose; sleeping again would miss
            # the instant until some other event came).
            while self.running:
                t1 = monotonic()
                if self.heap:
                    self.deliver()
                if self.pending:
                    self.apply_due()
                t2 = monotonic()
                work += t2 - t1
                nxt = self.next_wake()
                if not nxt or nxt - t2 > SPIN_S:
                    break
                events = ep.poll(0)         # keep serving arrivals while spinning
                self.poll_gen += 1
                if events:
                    t1 = monotonic()
                    if t1 - self.checked > STALL_S:
                        self.stall(self.checked, t1, self.event_links(events))
                    self.checked = t1
                    self.handle(events)
                    work += monotonic() - t1
                else:
                    self.checked = monotonic()
            self.busy_s += work

    def event_links(self, events) -> set[str]:
        """The links whose TAPs are among poll `events` (frames waiting on them)."""
        by_fd = self.by_fd
        return {by_fd[fd].link for fd, _ in events if fd in by_fd}

    def stall(self, start: float, end: float, links: set[str] | str) -> None:
        """Log [start, end] (monotonic s) as a stall that delayed frames of `links` (a link id or
        a set of them: frames read late from their TAPs or that left late)."""
        links = {links} if isinstance(links, str) else links
        if self.stalls and start <= self.stalls[-1][1]:     # overlaps the last one: merge
            a, b, seen = self.stalls.pop()
            start, end, links = min(start, a), max(end, b), seen | links
            self.stall_count -= 1
            self.stall_total_s -= b - a
        self.stalls.append((start, end, links))
        self.stall_count += 1
        self.stall_total_s += end - start
        self.stall_max_s = max(self.stall_max_s, end - start)

    def handle(self, events) -> None:
        timer_fd, ctl_fd, by_fd = self.timer.fd, self.ctl.fileno(), self.by_fd
        for fd, _ in events:
            if fd == timer_fd:
                self.timer.clear()
            elif fd == ctl_fd:
                self.control()
            elif fd in by_fd:
                self.drain(fd)
            elif fd == self.wire_fd:
                self.wire_recv()

    # ------------------------------------------------------------------ control

    def control(self) -> None:
        try:
            chunk = self.ctl.recv(1 << 20)
        except BlockingIOError:
            return
        if not chunk:                     # the parent is gone
            self.running = False
            return
        self.buf += chunk
        while len(self.buf) >= 4:
            n = struct.unpack("!I", self.buf[:4])[0]
            if len(self.buf) < 4 + n:
                break
            t0 = monotonic()
            msg, self.buf = pickle.loads(self.buf[4:4 + n]), self.buf[4 + n:]
            seq, cmd, args = msg[0], msg[1], msg[2:]    # the reply echoes seq (see links._Shard)
            try:
                reply = (seq, "ok", getattr(self, "cmd_" + cmd)(*args))
            except Exception as e:  # reported to the parent, which raises EmulationError
                reply = (seq, "error", f"{type(e).__name__}: {e}")
            if cmd in ("set", "delay_points"):   # control work the data path waited for
                self.control_max_ms = max(self.control_max_ms, (monotonic() - t0) * 1e3)
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            self.ctl.setblocking(True)
            self.ctl.sendall(struct.pack("!I", len(data)) + data)
            self.ctl.setblocking(False)

    def cmd_hello(self, vnet_hdr: bool, busy_poll: bool = False, mtu: int = 1500) -> dict:
        self.busy_poll = busy_poll
        # Reads allocate this much per frame: size it to the MTU (a larger frame would be cut).
        self.max_frame = 65_600 if vnet_hdr else mtu + 22
        self.vnet = VNET_HDR_BYTES if vnet_hdr else 0
        return {"pid": os.getpid()}

    def cmd_clock(self, origin_mono: float, scale: float) -> None:
        self.origin_mono, self.scale = origin_mono, scale

    def cmd_overhead(self, hop_us: float, process_us: float) -> None:
        """Per-traversal corrections to take off delays (see drain()): for frames the engine's
        own writes caused (`hop_us`) and for frames sent by processes (`process_us`)."""
        self.hop_s, self.process_s = hop_us * 1e-6, process_us * 1e-6

    def cmd_add(self, link: str, ends: list, params: dict, seed: int) -> None:
        """ends: [(netns_path, ifname), (…)] for side a and side b."""
        if link in self.links:
            raise ValueError(f"link {link!r} exists")
        fds = []
        try:
            # Create each TAP inside its node's namespace (setns there and back): moving devices
            # between namespaces waits for an RCU grace period each (~15 ms), creating them in
            # place does not.
            for ns_path, ifname in ends:
                ns_fd = self.ns_fds.get(ns_path)
                if ns_fd is None:
                    ns_fd = self.ns_fds[ns_path] = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
                setns(ns_fd)
                try:
                    fds.append(open_tap(ifname, vnet_hdr=bool(self.vnet)))
                finally:
                    setns(self.home_ns)
        except Exception:
            for fd in fds:
                unpersist_tap(fd)
                os.close(fd)
            raise
        profile = DelayProfile()
        ab = Direction(link, "ab", fds[0], fds[1], profile, seed * 2 + 1)
        ba = Direction(link, "ba", fds[1], fds[0], profile, seed * 2 + 2)
        ab.in_ns, ab.out_ns = ba.out_ns, ba.in_ns = [self._ns_index(path) for path, _ in ends]
        for d in (ab, ba):
            self.by_fd[d.in_fd] = d
            self.ep.register(d.in_fd, select.EPOLLIN)
        self.links[link] = (ab, ba, fds)
        self._configure(link, params)

    def cmd_wire(self, bind_ip: str, port: int = 0) -> int:
        """Open the wire of cut links on `bind_ip`:`port` (0: any free port); returns the port."""
        if self.wire_sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.bind((bind_ip, port))
            s.setblocking(False)
            self.wire_sock, self.wire_fd = s, s.fileno()
            self.ep.register(self.wire_fd, select.EPOLLIN)
        return self.wire_sock.getsockname()[1]

    def cmd_wire_epoch(self, epoch_mono: float) -> None:
        """The local CLOCK_MONOTONIC instant of the run's shared epoch (departure instants on the
        wire count from it)."""
        self.wire_epoch_mono = epoch_mono

    def cmd_add_cut(self, link: str, wire_id: int, side: str, end: tuple, peer: tuple, params: dict, seed: int) -> None:
        """A cut link: this host has end `side` ("a" or "b") = (netns_path, ifname); the other end
        is served by the engine at `peer` = (ip, port), which knows the link as `wire_id` too."""
        if link in self.links:
            raise ValueError(f"link {link!r} exists")
        if self.wire_sock is None:
            raise ValueError("the wire is not open (cmd_wire)")
        if side not in ("a", "b"):
            raise ValueError(f"side: expected a or b, found {side!r}")
        ns_path, ifname = end
        ns_fd = self.ns_fds.get(ns_path)
        if ns_fd is None:
            ns_fd = self.ns_fds[ns_path] = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        setns(ns_fd)
        try:
            fd = open_tap(ifname, vnet_hdr=bool(self.vnet))
        finally:
            setns(self.home_ns)
        profile = DelayProfile()
        out_name, in_name = ("ab", "ba") if side == "a" else ("ba", "ab")
        send = Direction(link, out_name, fd, -1, profile, seed * 2 + (1 if out_name == "ab" else 2))
        recv = Direction(link, in_name, -1, fd, profile, seed * 2 + (1 if in_name == "ab" else 2))
        send.wire = ((peer[0], int(peer[1])), WIRE_HEADER.pack(wire_id, WIRE_DIRECTIONS[out_name], 0)[:5])
        i = self._ns_index(ns_path)
        send.in_ns = send.out_ns = recv.in_ns = recv.out_ns = i
        self.wire_in[(wire_id, WIRE_DIRECTIONS[in_name])] = recv
        self.by_fd[fd] = send
        self.ep.register(fd, select.EPOLLIN)
        ab, ba = (send, recv) if side == "a" else (recv, send)
        self.links[link] = (ab, ba, [fd])
        self._configure(link, params)

    def _ns_index(self, ns_path: str) -> int:
        key = os.fstat(self.ns_fds[ns_path]).st_ino   # one namespace, whatever path names it
        i = self.ns_index.get(key)
        if i is None:
            i = self.ns_index[key] = len(self.ns_ws)
            self.ns_ws.append(0.0)
            self.ns_gen.append(-10)
        return i

    def cmd_remove(self, link: str) -> None:
        ab, ba, fds = self.links.pop(link)
        for key in [k for k, v in self.wire_in.items() if v is ab or v is ba]:
            del self.wire_in[key]
        for fd in fds:
            self.ep.unregister(fd)
            del self.by_fd[fd]
            unpersist_tap(fd)     # the device goes away with its fd
            os.close(fd)
        for d in (ab, ba):
            self.touched.discard(d)
            if d in self.sampling:
                self.sampling.remove(d)
            d.q.clear()
            d.epoch += 1
            for cap in (d.pcap, d.cap_in):
                if cap is not None:
                    cap.close()

    def _configure(self, link: str, params: dict) -> None:
        entry = self.links.get(link)
        if entry is None:
            return
        ab, ba, _ = entry
        if "delay_ms" in params:
            ab.profile.set_constant(params["delay_ms"] * 1e-3, monotonic())
        for d in (ab, ba):
            d.configure(params)

    def cmd_set(self, updates: list, at_t_s: float | None) -> int:
        """updates: [(link, params)]; applied now, or when emulated time reaches `at_t_s`."""
        if at_t_s is None or self.mono(at_t_s) <= monotonic():
            for link, params in updates:
                if link not in self.links:
                    raise KeyError(f"unknown link {link!r}")
                self._configure(link, params)
        else:
            t = self.mono(at_t_s)
            for link, params in updates:
                if link not in self.links:
                    raise KeyError(f"unknown link {link!r}")
                self.seq += 1
                heapq.heappush(self.pending, (t, self.seq, link, params))
        return len(updates)

    def cmd_fault(self, links: list, on: bool) -> float:
        """Hold `links` down (`on`) or release them to their scheduled state, at once; returns
        the monotonic instant it was done (the caller's clock too: CLOCK_MONOTONIC)."""
        for link in links:
            if link not in self.links:
                raise KeyError(f"unknown link {link!r}")
        for link in links:
            for d in self.links[link][:2]:
                d.set_fault(on)
        return monotonic()

    def cmd_delay_points(self, updates: list) -> int:
        """updates: [(link, [(t_s, delay_ms), …])]: extend each link's piecewise-linear delay."""
        now = monotonic()
        for link, points in updates:
            ab = self.links[link][0]
            ab.profile.add_points([(self.mono(t), d * 1e-3) for t, d in points], now)
        return len(updates)

    def cmd_route_sockets(self, paths: list) -> int:
        """Open an rtnetlink socket in each namespace of `paths` (once; see cmd_routes)."""
        for path in paths:
            if path in self.route_socks:
                continue
            ns_fd = self.ns_fds.get(path)
            if ns_fd is None:
                ns_fd = self.ns_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            setns(ns_fd)
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            finally:
                setns(self.home_ns)
            sock.bind((0, 0))
            self.route_socks[path] = sock
        return len(self.route_socks)

    def cmd_routes(self, due_mono: float, step: int, items: list) -> int:
        """Send a step's route changes at monotonic instant `due_mono`: items are
        [(netns path, [request bytes, …])], packed by the parent (forwarding.Forwarding). The
        engine sends them a few namespaces at a time between departures, on its own CPU, while
        the player sends the rest: a step's routes are in force in about half the time."""
        for path, _ in items:
            if path not in self.route_socks:
                raise KeyError(f"no route socket in {path!r} (cmd_route_sockets first)")
        self.seq += 1
        heapq.heappush(self.pending, (due_mono, self.seq, None, [step, items, 0, 0.0, 0, ""]))
        return len(items)

    def cmd_routes_cancel(self, step: int) -> int:
        """Drop step `step`'s route jobs not begun yet (the parent packed them again); returns
        how many were dropped."""
        keep = [e for e in self.pending if not (e[2] is None and e[3][0] == step and e[3][2] == 0)]
        dropped = len(self.pending) - len(keep)
        if dropped:
            heapq.heapify(keep)
            self.pending = keep
        return dropped

    def cmd_route_log(self) -> list:
        """The route jobs done since the last call: [(step, start, done, namespaces, errors,
        first error)], monotonic times."""
        out, self.route_log = self.route_log, []
        return out

    def cmd_record(self, links: list, on: bool) -> None:
        for link in links:
            for d in self.links[link][:2]:
                d.record = [] if on else None

    def cmd_take_records(self) -> list:
        out = []
        for link, (ab, ba, _) in self.links.items():
            for d in (ab, ba):
                if d.record:
                    out.append((link, d.name, d.record))
                    d.record = []
        return [(link, name, [(t_in - self.origin_mono, (t_out - self.origin_mono) if t_out >= 0 else t_out, size, comp)
                              for t_in, t_out, size, comp in rec]) for link, name, rec in out]

    def cmd_capture(self, ends: list, epoch_unix_s: float) -> list:
        """ends: [(link, side "a"|"b", path)]: write what that end's node sends into the link
        (stamped at the frame's entry, less the overhead taken off its delay, so exit − entry
        is the link's delay, serialisation and queueing) and what it receives from it (stamped
        at its exit, when the engine writes it into the node) to a pcap file at `path`.
        Returns the paths."""
        for link, side, path in ends:
            ab, ba, _ = self.links[link]
            out_d, in_d = (ab, ba) if side == "a" else (ba, ab)
            cap = _Pcap(path, self, epoch_unix_s)
            for old in (out_d.cap_in, in_d.pcap):
                if old is not None:
                    old.close()
            out_d.cap_in, in_d.pcap = cap, cap
        return [path for _, _, path in ends]

    def cmd_capture_stop(self) -> dict:
        """Close every capture file; {path: frames written}."""
        out = {}
        for ab, ba, _ in self.links.values():
            for d in (ab, ba):
                for cap in (d.cap_in, d.pcap):
                    if cap is not None and cap.path not in out:
                        cap.close()
                        out[cap.path] = cap.frames
                d.cap_in = d.pcap = None
        return out

    def cmd_counters(self) -> dict:
        rows = [d.counters() for ab, ba, _ in self.links.values() for d in (ab, ba)]
        up = monotonic() - self.started
        return {"links": rows, "busy_fraction": self.busy_s / up if up > 0 else 0.0, "frames": self.frames,
                "pending_updates": len(self.pending), "write_cost_us": self.write_cost_s * 1e6,
                "control_max_ms": self.control_max_ms, "wire_unknown": self.wire_unknown,
                "stalls": self.stall_count, "stall_total_ms": round(self.stall_total_s * 1e3, 3),
                "stall_max_ms": round(self.stall_max_s * 1e3, 3),
                "late_hist": dict(zip([f"<{b * 1e6:g}us" for b in LATE_BUCKETS_S] + ["more"], self.late_hist))}

    def cmd_sample(self, limit: int = 0) -> tuple[float, float, list, int]:
        """Link load now: (monotonic instant, seconds this call took, rows, directions left) with
        a row per direction whose counters changed since the last sample or whose queue is not
        empty: (link, direction, frames_in, bytes_in, frames_out, bytes_out, drop_queue, drops by
        other causes, backlog bytes now, largest backlog since the last sample, rate bytes/s).
        Counters are cumulative. A sample visits only the directions that drained frames since
        (or were still busy at) the previous one, ~0.3 µs each; with `limit`, at most that many
        per call, the rest in the next calls (until none is left), so that one call never holds
        the data path for long."""
        now = monotonic()
        if not self.sampling:             # a new sample: the directions to visit
            self.sampling, self.touched = list(self.touched), set()
        todo = self.sampling
        n = len(todo) if not limit else min(int(limit), len(todo))
        rows, keep = [], self.touched
        for d in todo[:n]:
            drops = d.drop_down + d.drop_loss + d.drop_error
            key = (d.frames_in, d.frames_out, d.drop_queue + drops)
            backlog = d.backlog_bytes(now)
            if key != d.sampled or backlog or d.queue_max_bytes:
                rows.append((d.link, d.name, d.frames_in, d.bytes_in, d.frames_out, d.bytes_out, d.drop_queue, drops,
                             int(backlog), int(d.queue_max_bytes), d.rate_bytes_per_s))
                d.sampled = key
                d.queue_max_bytes = backlog     # the next window's largest starts from now
                keep.add(d)
            elif d.q or d.reorder:              # frames still on their way out
                keep.add(d)
        self.sampling = todo[n:]
        return now, monotonic() - now, rows, len(self.sampling)

    def cmd_stalls(self) -> list[tuple[float, float, list[str]]]:
        """The stalls logged since the last call: [(start, end, links delayed)], monotonic s (the
        log keeps the latest STALL_LOG_MAX; the counters count them all)."""
        out = [(a, b, sorted(links)) for a, b, links in self.stalls]
        self.stalls.clear()
        return out

    def cmd_stop(self) -> None:
        self.running = False
        self.close()

    def close(self) -> None:
        for sock in self.route_socks.values():
            sock.close()
        self.route_socks.clear()
        for link in list(self.links):
            ab, ba, fds = self.links.pop(link)
            for d in (ab, ba):
                for cap in (d.pcap, d.cap_in):
                    if cap is not None:
                        cap.close()
                d.pcap = d.cap_in = None
            for fd in fds:
                # Persistent TAPs stay in their namespaces, which the emulation deletes in one batch.
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.by_fd.clear()
        self.wire_in.clear()
        if self.wire_sock is not None:
            self.wire_sock.close()
            self.wire_sock, self.wire_fd = None, -1
        for fd in self.ns_fds.values():
            os.close(fd)
        self.ns_fds.clear()


def main(argv: list[str]) -> int:
    ctl = socket.socket(fileno=int(argv[1]))
    die_with_parent(signal.SIGTERM)
    engine = Engine(ctl)

    def on_term(signum, frame):
        engine.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    if os.getppid() == 1:
        return 0
    try:
        engine.run()
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
