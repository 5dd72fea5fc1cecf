"""Emulated point-to-point links between network namespaces: one interface, two backends.

- `EngineLinks` (default): TAP pairs served by netemu's link-engine processes (`netemu.emulate.engine`),
  sharded over cores. Works on any kernel with TUN/TAP. Delay follows a piecewise-linear profile
  per frame; rate, loss, queue and up/down change at scheduled emulated times.
- `KernelLinks`: veth pairs shaped with tc (netem delay/loss, TBF rate), for kernels with
  `sch_netem`. Delay changes are steps.

Both take `LinkParams` and `LinkEnd`s (namespace file + interface name); MTU and addresses are
the caller's business.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Protocol, Sequence

import pandas as pd

from . import engine as engine_program
from .engine import default_queue_bytes
from ..errors import EmulationError
from .netns import TAP_PREFIX, Namespaces, new_run_id
from .probe import icmp_rtts_ms

__all__ = ["LinkParams", "LinkEnd", "LinkBackend", "link_params", "engine_cpu_policy", "EngineLinks", "KernelLinks", "netem_available",
           "tc_commands", "EngineOverloadWarning", "build_chain", "icmp_medians_ms", "veth_reference_rtt_ms"]


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Parameters of a link, the same in both directions."""

    delay_ms: float = 0.0
    rate_mbps: float = 0.0            # 0 = unlimited
    loss_pct: float = 0.0
    up: bool = True
    queue_bytes: int | None = None    # None: 100 ms at the link rate, at least 64 kB
    queue_packets: int | None = None  # None: no packet limit
    reorder: bool = False             # allow frames to overtake (delay drops faster than time)

    def __post_init__(self):
        for name, lo in (("delay_ms", 0.0), ("rate_mbps", 0.0), ("loss_pct", 0.0)):
            v = getattr(self, name)
            if not (v >= lo):
                raise EmulationError(f"LinkParams.{name}: expected a number ≥ {lo:g}, found {v!r}")
        if self.loss_pct > 100:
            raise EmulationError(f"LinkParams.loss_pct: expected ≤ 100, found {self.loss_pct!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """One end of a link: a network namespace (its file: /var/run/netns/NAME or /proc/PID/ns/net)
    and the interface name to create there (≤ 15 characters)."""

    netns: str
    ifname: str

    def __post_init__(self):
        if not 0 < len(self.ifname) <= 15 or not re.match(r"^[A-Za-z0-9_.-]+$", self.ifname):
            raise EmulationError(f"LinkEnd.ifname: expected 1-15 characters [A-Za-z0-9_.-], found {self.ifname!r}")


class LinkBackend(Protocol):
    """What the emulation and the player need of a link backend (EngineLinks, KernelLinks, or a
    recording fake in tests: netemu.testing.RecordingLinks)."""

    def add_link(self, link_id: str, a: LinkEnd, b: LinkEnd, params: LinkParams) -> None: ...
    def remove_link(self, link_id: str) -> None: ...
    def set_params(self, updates: Mapping[str, LinkParams | dict], at_t_s: float | None = None) -> None: ...
    def set_delay_points(self, points: Mapping[str, Sequence[tuple[float, float]]]) -> None: ...
    def set_clock(self, origin_mono: float, scale: float) -> None: ...
    def set_fault(self, link_ids: Iterable[str], on: bool) -> float: ...
    def counters(self) -> pd.DataFrame: ...
    def stop(self) -> None: ...


def engine_cpu_policy(shards: int | None, busy_poll: bool | None) -> tuple[bool, int]:
    """(busy_poll, shards) for this machine's CPUs, unless given. Busy-polling engines on their
    own CPUs give the steadiest delays (a sleeping engine waits 30-80 µs for each wake-up here,
    and that varies); half the CPUs go to them. Only when they can have CPUs of their own: more
    polling engines than spare CPUs starve everything else (the run's own threads included:
    `--shards 64` hung)."""
    cpus = len(os.sched_getaffinity(0))
    poll = (cpus >= 2 and (shards is None or shards < cpus)) if busy_poll is None else busy_poll
    return poll, shards or (max(1, cpus // 2) if poll else cpus)


def link_params(states, i_step: int, j: int, dilation: float, only: tuple[str, ...] | None = None) -> "LinkParams | dict":
    """Link j's parameters at window step i of `states` (playback.LinkStates) under time dilation:
    delays × dilation, rates ÷ dilation; the queue holds the same bytes as undilated (100 ms at
    the link's rate). `only`: a dict of those keys instead of a LinkParams."""
    rate = float(states.rate_mbps[i_step, j])
    p = {"delay_ms": float(states.delay_ms[i_step, j]) * dilation, "rate_mbps": rate / dilation,
         "loss_pct": float(states.loss_pct[i_step, j]), "up": bool(states.up[i_step, j]),
         "queue_bytes": default_queue_bytes(rate) if rate > 0 else None}
    if only is not None:
        return {k: p[k] for k in only}
    return LinkParams(**p)


# Links per control message: the engine handles one message at a time between frames, so small
# messages keep a big update from stalling the data path (~5 µs per link per message).
CONTROL_CHUNK_LINKS = 64


class EngineOverloadWarning(UserWarning):
    """The link engine could not keep up: frames left late, so emulated delays are too long."""


def _params_dict(p: LinkParams | dict) -> dict:
    if isinstance(p, LinkParams):
        return p.as_dict()
    unknown = set(p) - set(LinkParams.__dataclass_fields__)
    if unknown:
        raise EmulationError(f"link parameters: unknown keys {sorted(unknown)}; expected {list(LinkParams.__dataclass_fields__)}")
    if "delay_ms" in p or "rate_mbps" in p or "loss_pct" in p:
        LinkParams(**{k: v for k, v in p.items() if k in ("delay_ms", "rate_mbps", "loss_pct")})
    return dict(p)


class _Shard:
    """One engine process and its control socket.

    Several threads call the engines during a run (the player feeding link state, the pilot
    correcting the overhead, the main thread reading counters), so each request/reply pair
    holds the channel's lock, and requests carry a sequence number that the reply echoes: a
    reply is only ever taken by the caller that asked for it (replies to requests whose caller
    gave up, e.g. on a timeout, are recognised as stale and skipped)."""

    REPLY_TIMEOUT_S = 60.0    # an engine that does not answer for this long is wedged

    def __init__(self, index: int, vnet_hdr: bool, busy_poll: bool, mtu: int):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.index = index
        self.sock = parent
        self.proc = subprocess.Popen([sys.executable, "-m", engine_program.__name__, str(child.fileno())],
                                     pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self.sock.settimeout(self.REPLY_TIMEOUT_S)
        self.links: set[str] = set()
        self.lock = threading.Lock()
        self.seq = 0
        self.broken = ""                      # why the channel cannot be used any more
        self.in_flight: tuple[str, float] | None = None   # (command, monotonic time sent)
        self.call("hello", vnet_hdr, busy_poll, mtu)

    def call(self, cmd: str, *args):
        with self.lock:
            if self.broken:
                raise EmulationError(f"link engine {self.index} (pid {self.proc.pid}): {self.broken}")
            self.seq += 1
            seq = self.seq
            data = pickle.dumps((seq, cmd, *args), protocol=pickle.HIGHEST_PROTOCOL)
            self.in_flight = (cmd, time.monotonic())
            try:
                try:
                    self.sock.sendall(struct.pack("!I", len(data)) + data)
                except BaseException:
                    # part of a message may have gone: the stream's framing is lost
                    self.broken = f"its control channel broke while sending {cmd!r}"
                    raise
                while True:
                    head = self._recv(4)
                    r_seq, status, result = pickle.loads(self._recv(struct.unpack("!I", head)[0]))
                    if r_seq == seq:
                        break
                    if r_seq > seq:
                        self.broken = f"answered request {r_seq} while {seq} ({cmd!r}) was the latest"
                        raise EmulationError(f"link engine {self.index} (pid {self.proc.pid}): {self.broken}")
                    # a reply to an earlier request whose caller gave up: not ours
            except socket.timeout:
                raise EmulationError(f"link engine {self.index} (pid {self.proc.pid}) did not answer {cmd!r} "
                                     f"within {self.REPLY_TIMEOUT_S:g} s") from None
            except (OSError, EOFError) as e:
                raise EmulationError(f"link engine {self.index} (pid {self.proc.pid}) is gone: {e}") from None
            finally:
                self.in_flight = None
        if status != "ok":
            raise EmulationError(f"link engine {self.index}: {cmd} failed: {result}")
        return result

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.lock.acquire(timeout=timeout_s):
            self.lock.release()
            try:
                self.call("stop")
            except EmulationError:
                pass
        else:
            # a caller is stuck waiting on this engine: end the engine, which ends its wait
            # (the caller gets "is gone") instead of waiting behind it for ever
            self.proc.kill()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self.lock:
            self.sock.close()


class EngineLinks:
    """Links served by netemu's link engine (TAP pairs), sharded over `shards` processes.

    Use as a context manager; `stop()` ends the engines. The engines die with this process.
    With `vnet_hdr`, TAPs pass GSO super-frames (up to 64 KB) with offloads: several times the
    throughput, but queueing and loss then act on those chunks rather than on MTU frames.
    With `busy_poll`, each engine polls instead of sleeping: one core per shard is always busy,
    and in exchange frames never wait for an engine to wake up (tighter, steadier delays).
    `mtu` is the largest MTU the callers will give these interfaces (frames are read into
    buffers of that size).
    """

    def __init__(self, shards: int | None = None, run_id: str | None = None, seed: int = 0,
                 vnet_hdr: bool = False, busy_poll: bool = False, overhead_us: float = 0.0, mtu: int = 1500):
        if os.geteuid() != 0:
            raise EmulationError("the link engine needs root (TAP devices, namespaces); run with sudo")
        self.run_id = run_id or new_run_id()
        self.seed = seed
        self.vnet_hdr = vnet_hdr
        n = shards or os.cpu_count() or 1
        self._shards: list[_Shard] = []
        self._where: dict[str, _Shard] = {}
        self._count = 0
        self._stall_rows: list[tuple[int, float, float, str]] = []
        self.hop_overhead_us = self.process_overhead_us = 0.0
        try:
            for i in range(n):
                self._shards.append(_Shard(i, vnet_hdr, busy_poll, mtu))
            self.engine_cpus = self._pin() if busy_poll else []
            self.set_overhead(overhead_us)
        except BaseException:
            self.stop()
            raise

    def _pin(self) -> list[int]:
        """Give each busy-polling engine a CPU of its own (the last ones) and a higher priority:
        a polling engine that the scheduler preempts holds every frame until it runs again
        (stalls of ~10 ms were seen). Callers keep their own work off those CPUs with
        `other_cpus()`. Returns the engines' CPUs ([] when there are too few CPUs)."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) <= len(self._shards):
            return []
        mine = cpus[-len(self._shards):]
        for shard, cpu in zip(self._shards, mine):
            try:
                os.sched_setaffinity(shard.proc.pid, {cpu})
                os.setpriority(os.PRIO_PROCESS, shard.proc.pid, -10)
            except OSError:
                return []
        return mine

    def other_cpus(self) -> set[int]:
        """CPUs not reserved for busy-polling engines (all of this process's when none are)."""
        return set(os.sched_getaffinity(0)) - set(self.engine_cpus) or set(os.sched_getaffinity(0))

    # ------------------------------------------------------------------ links

    def add_link(self, link_id: str, a: LinkEnd, b: LinkEnd, params: LinkParams = LinkParams()) -> None:
        if link_id in self._where:
            raise EmulationError(f"link {link_id!r} exists already")
        shard = min(self._shards, key=lambda s: len(s.links))
        self._count += 1
        seed = (self.seed * 1_000_003 + self._count) & 0x7FFFFFFF
        shard.call("add", link_id, [(a.netns, a.ifname), (b.netns, b.ifname)], _params_dict(params), seed)
        shard.links.add(link_id)
        self._where[link_id] = shard

    # ------------------------------------------------------------------ cut links (cluster runs)

    def open_wire(self, bind_ip: str) -> list[int]:
        """Open every engine's wire for cut links on `bind_ip` (this host's address on the hosts'
        network); returns their UDP ports, by shard."""
        return [s.call("wire", bind_ip, 0) for s in self._shards]

    def set_wire_epoch(self, epoch_mono: float) -> None:
        """The local CLOCK_MONOTONIC instant of the run's shared epoch (see engine: cut links)."""
        for s in self._shards:
            s.call("wire_epoch", float(epoch_mono))

    def add_cut_link(self, link_id: str, wire_id: int, side: str, end: LinkEnd, peer: tuple[str, int],
                     params: LinkParams = LinkParams()) -> None:
        """A link whose end `side` ("a"/"b") is here and whose other end is on another host,
        served by the engine at `peer` (ip, port). The link goes on shard `wire_id` mod shards
        (so the peer host knows which of this host's wire ports serves it: `wire_shard`)."""
        if link_id in self._where:
            raise EmulationError(f"link {link_id!r} exists already")
        shard = self._shards[self.wire_shard(wire_id)]
        self._count += 1
        seed = (self.seed * 1_000_003 + wire_id) & 0x7FFFFFFF   # the same on both hosts
        shard.call("add_cut", link_id, int(wire_id), side, (end.netns, end.ifname), (str(peer[0]), int(peer[1])),
                   _params_dict(params), seed)
        shard.links.add(link_id)
        self._where[link_id] = shard

    def wire_shard(self, wire_id: int) -> int:
        return int(wire_id) % len(self._shards)

    def remove_link(self, link_id: str) -> None:
        shard = self._shard_of(link_id)
        shard.call("remove", link_id)
        shard.links.discard(link_id)
        del self._where[link_id]

    def _shard_of(self, link_id: str) -> _Shard:
        try:
            return self._where[link_id]
        except KeyError:
            raise EmulationError(f"unknown link {link_id!r}") from None

    def _by_shard(self, items: Iterable[tuple[str, object]]) -> dict[_Shard, list]:
        out: dict[_Shard, list] = {}
        for link_id, value in items:
            out.setdefault(self._shard_of(link_id), []).append((link_id, value))
        return out

    def set_params(self, updates: Mapping[str, LinkParams | dict], at_t_s: float | None = None) -> int:
        """Change parameters of many links, now or when emulated time reaches `at_t_s`.
        A dict sets only the keys it has (e.g. {"up": False}). Returns how many links the
        engines acknowledged."""
        done = 0
        for shard, items in self._by_shard((k, _params_dict(v)) for k, v in updates.items()).items():
            for i in range(0, len(items), CONTROL_CHUNK_LINKS):
                done += shard.call("set", items[i:i + CONTROL_CHUNK_LINKS], at_t_s)
        return done

    def set_delay_points(self, points: Mapping[str, Sequence[tuple[float, float]]]) -> int:
        """Extend links' delay profiles with (t_s, delay_ms) points; delay is linear in between.
        Returns how many links the engines acknowledged."""
        done = 0
        for shard, items in self._by_shard((k, [(float(t), float(d)) for t, d in v]) for k, v in points.items()).items():
            for i in range(0, len(items), CONTROL_CHUNK_LINKS):
                done += shard.call("delay_points", items[i:i + CONTROL_CHUNK_LINKS])
        return done

    def set_fault(self, link_ids: Iterable[str], on: bool) -> float:
        """Hold links down (`on`: an injected failure, whatever their schedule says) or release
        them to their scheduled state, at once. Returns the monotonic instant the last engine
        applied it."""
        done = time.monotonic()
        for shard, items in self._by_shard((k, None) for k in link_ids).items():
            done = shard.call("fault", [k for k, _ in items], on)
        return done

    def set_clock(self, origin_monotonic: float | None = None, scale: float = 1.0) -> float:
        """Emulated t_s = 0 is `origin_monotonic` (time.monotonic(); default now); one emulated
        second lasts `scale` wall seconds (time dilation). Returns the origin."""
        origin = time.monotonic() if origin_monotonic is None else origin_monotonic
        for s in self._shards:
            s.call("clock", origin, scale)
        return origin

    def set_overhead(self, hop_us: float, process_us: float | None = None) -> None:
        """Corrections (µs per traversal) taken off every link's delay, which never goes below
        zero: for frames the engine's own writes caused, a router forwarding or a host answering
        (`hop_us`), and for frames sent by a process, read some latency after they entered
        (`process_us`, default the same). Negative values add delay. `calibrate()` measures both."""
        self.hop_overhead_us = float(hop_us)
        self.process_overhead_us = float(hop_us if process_us is None else process_us)
        for s in self._shards:
            s.call("overhead", self.hop_overhead_us, self.process_overhead_us)

    # ------------------------------------------------------------------ observation

    def counters(self) -> pd.DataFrame:
        """Per link and direction: frames/bytes in and out, drops by cause (down, loss, queue,
        error), queue high-water mark (bytes), late departures and the largest lateness (ms)."""
        rows = [r for s in self._shards for r in s.call("counters")["links"]]
        cols = ["link", "direction", "frames_in", "bytes_in", "frames_out", "bytes_out", "drop_down", "drop_loss",
                "drop_queue", "drop_error", "queue_hwm_bytes", "late", "max_late_ms"]
        return pd.DataFrame(rows, columns=cols + (self.WIRE_COLUMNS if self.wire_counters else []))

    SAMPLE_CHUNK = 256    # directions per sample request: ~100 µs of an engine's time

    def sample(self) -> list[tuple[int, float, float, list]]:
        """Link load now: [(shard, monotonic instant, seconds the engine took, rows)], rows as
        engine.cmd_sample gives them (cumulative counters and the queue of each direction that
        changed since the last sample). One request per engine, more when over SAMPLE_CHUNK
        directions were busy (the engine serves its frames in between). See
        netemu.emulate.linkload."""
        out = []
        for s in self._shards:
            t, cost, rows, left = s.call("sample", self.SAMPLE_CHUNK)
            while left:
                _, more_s, more, left = s.call("sample", self.SAMPLE_CHUNK)
                cost += more_s
                rows += more
            out.append((s.index, t, cost, rows))
        return out

    WIRE_COLUMNS = ["wire_tx", "wire_rx", "wire_late", "wire_max_late_ms"]
    wire_counters = False     # counters() adds WIRE_COLUMNS (cluster runs set it)

    def status(self) -> list[dict]:
        """Per engine process: pid, links, frames handled, busy fraction (1.0 = saturated), late
        frames, and its stalls (count, total and longest ms; see `stalls`)."""
        out = []
        for s in self._shards:
            c = s.call("counters")
            late = sum(r["late"] for r in c["links"])
            out.append({"shard": s.index, "pid": s.proc.pid, "links": len(s.links), "frames": c["frames"],
                        "busy_fraction": round(c["busy_fraction"], 4), "late_frames": late,
                        "write_cost_us": round(c["write_cost_us"], 1),
                        "control_max_ms": round(c.get("control_max_ms", 0.0), 3),
                        "stalls": c["stalls"], "stall_total_ms": c["stall_total_ms"],
                        "stall_max_ms": c["stall_max_ms"], "departure_lateness": c.get("late_hist", {})})
        return out

    def stalls(self) -> pd.DataFrame:
        """The engines' stalls so far: `shard, start_mono, end_mono` (CLOCK_MONOTONIC s), `links`
        (the link ids whose frames it delayed, space-separated), one row per interval in which an
        engine could not serve its links for longer than `engine.STALL_S` while frames were
        waiting or due (the host took its CPU, or departures left late). Frames in such an
        interval were timed late by up to its length."""
        for s in self._shards:
            self._stall_rows.extend((s.index, a, b, " ".join(links)) for a, b, links in s.call("stalls"))
        return pd.DataFrame(self._stall_rows, columns=["shard", "start_mono", "end_mono", "links"])

    def check_overload(self, late_fraction: float = 0.01) -> list[str]:
        """Warn (EngineOverloadWarning) and return messages for saturated engines: more than
        `late_fraction` of frames left over 0.5 ms late, or the loop was busy > 90 % of the time."""
        msgs = []
        for st in self.status():
            if st["frames"] and st["late_frames"] > late_fraction * st["frames"]:
                msgs.append(f"link engine {st['shard']}: {st['late_frames']:,} of {st['frames']:,} frames left more "
                            "than 0.5 ms late; emulated delays are too long (use fewer links per core, "
                            "time dilation, or more shards)")
            if st["busy_fraction"] > 0.9:
                msgs.append(f"link engine {st['shard']} was busy {100 * st['busy_fraction']:.0f} % of the time "
                            "(saturated)")
        for m in msgs:
            warnings.warn(m, EngineOverloadWarning, stacklevel=2)
        return msgs

    def record(self, link_ids: Iterable[str], on: bool = True) -> None:
        """Keep per-frame records (enter time, leave time, size) for these links."""
        for shard, items in self._by_shard((k, None) for k in link_ids).items():
            shard.call("record", [k for k, _ in items], on)

    def take_records(self) -> pd.DataFrame:
        """Per-frame records since the last call: link, direction, t_in_s, t_out_s (emulated
        seconds; NaN when dropped), size_bytes, dropped (down|loss|queue or empty), and the
        engine overhead taken off that frame's delay (compensation_us)."""
        rows = []
        reasons = {-1.0: "down", -2.0: "loss", -3.0: "queue"}
        for s in self._shards:
            for link, direction, rec in s.call("take_records"):
                for t_in, t_out, size, comp in rec:
                    rows.append((link, direction, t_in, t_out if t_out >= -0.5 else float("nan"), size,
                                 reasons.get(t_out, ""), comp * 1e6))
        return pd.DataFrame(rows, columns=["link", "direction", "t_in_s", "t_out_s", "size_bytes", "dropped",
                                           "compensation_us"])

    def capture(self, ends: Iterable[tuple[str, str, str]], epoch_unix_s: float = 0.0) -> list[str]:
        """Capture link ends to pcap files: `ends` is (link, side "a"|"b", path) each. A file
        holds what that end's node sends into the link (stamped at the frame's entry) and what
        it receives from it (stamped at its exit), in emulated time from `epoch_unix_s` (see
        engine.cmd_capture). The engine writes them; `capture_stop()` closes them."""
        by_shard: dict[_Shard, list] = {}
        for link, side, path in ends:
            if side not in ("a", "b"):
                raise EmulationError(f"capture of {link}: side expected 'a' or 'b', found {side!r}")
            by_shard.setdefault(self._shard_of(link), []).append((link, side, os.path.abspath(path)))
        paths = []
        for shard, items in by_shard.items():
            paths += shard.call("capture", items, float(epoch_unix_s))
        return paths

    def capture_stop(self) -> dict[str, int]:
        """Close every capture file: {path: frames written}."""
        out: dict[str, int] = {}
        for s in self._shards:
            out.update(s.call("capture_stop"))
        return out

    def pcap(self, link_ids: Iterable[str], directory: str, epoch_unix_s: float = 0.0) -> list[str]:
        """Capture both ends of these links into `directory` (`LINK-a.pcap`, `LINK-b.pcap`)."""
        os.makedirs(directory, exist_ok=True)
        return self.capture([(k, side, os.path.join(directory, f"{k}-{side}.pcap"))
                             for k in link_ids for side in ("a", "b")], epoch_unix_s)

    def in_flight(self, min_age_s: float = 0.0) -> list[str]:
        """Requests sent to an engine and not answered yet (for `min_age_s` or longer), one
        sentence each: what a stalled caller is waiting for."""
        now, out = time.monotonic(), []
        for s in self._shards:
            req = s.in_flight
            if req is not None and now - req[1] >= min_age_s:
                alive = "running" if s.proc.poll() is None else f"exited with code {s.proc.returncode}"
                out.append(f"link engine {s.index} (pid {s.proc.pid}, {alive}) has not answered {req[0]!r} "
                           f"for {now - req[1]:.1f} s")
        return out

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._shards]

    def route_senders(self) -> list["RouteSender"]:
        """Engines that can send route changes at their instants beside the player: those that
        poll on a CPU of their own (the CPU the player's sends cannot use). None otherwise."""
        return [RouteSender(s) for s in self._shards] if self.engine_cpus else []

    @property
    def link_ids(self) -> list[str]:
        return list(self._where)

    # ------------------------------------------------------------------ life cycle

    def stop(self) -> None:
        """Stop the engines. TAPs stay in their namespaces (persistent) and go when those are
        deleted; remove links first to delete their TAPs now."""
        for s in self._shards:
            s.stop()
        self._shards.clear()
        self._where.clear()

    def __enter__(self) -> "EngineLinks":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ calibration

    def calibrate(self, probes: int = 200, delay_ms: float = 10.0, hops: int = 4, refine: int = 2) -> dict:
        """Measure what the engine adds per traversal and take it off every link's delay.

        Throw-away namespaces: a chain of `hops` engine links (`delay_ms` each, placed on the
        shards as real links are) and, beside its first link, a veth pair as the reference for
        what a real link costs the end hosts. From median ping RTTs, the target being
        2 × delay + the veth RTT:
        1. the chain's slope over its hops is the excess of a traversal the engine's own write
           caused (a router forwarding the echo or its reply): the hop correction;
        2. one link's excess is one such traversal (the reply, made inside the engine's write)
           plus one frame sent by a process (the echo): the origin correction is the rest;
        3. `refine` times, both are measured again and the residuals taken off;
        4. a last measurement gives the residuals.
        Returns {hop_overhead_us, process_overhead_us, residual_one_link_us (per traversal),
        residual_per_hop_us, reference_rtt_us}.
        """
        saved = (self.hop_overhead_us, self.process_overhead_us)
        names = [f"cal{i}" for i in range(hops + 1)]
        links = [f"_cal{i}_{self.run_id}" for i in range(hops)]
        with Namespaces(self.run_id) as ns:
            try:
                for n in names:
                    ns.add(n)
                ref = f"{TAP_PREFIX}{self.run_id}r"
                subprocess.run(["ip", "link", "add", ref + "a", "type", "veth", "peer", "name", ref + "b"], check=True)
                for side, n, addr in (("a", names[0], "10.254.0.0/31"), ("b", names[1], "10.254.0.1/31")):
                    subprocess.run(["ip", "link", "set", ref + side, "netns", ns.full(n), "name", "ref0"], check=True)
                    ns.run(n, ["ip", "addr", "add", addr, "dev", "ref0"])
                    ns.run(n, ["ip", "link", "set", "ref0", "up"])
                build_chain(self, ns, names, links, LinkParams(delay_ms=delay_ms), net="10.255")

                def excess_us() -> tuple[float, float, float]:
                    """(one link's RTT excess, the chain's excess per traversal) in µs, veth RTT in ms"""
                    ref, one, far = icmp_medians_ms(ns, names[0], ["10.254.0.1", "10.255.0.1", f"10.255.{hops - 1}.1"],
                                                    3 * probes)
                    per_hop = (far - one - 2 * (hops - 1) * delay_ms) / (2 * (hops - 1)) * 1e3
                    return (one - 2 * delay_ms - ref) * 1e3, per_hop, ref

                self.set_overhead(0.0, 0.0)
                for _ in range(1 + refine):
                    one, per_hop, reference = excess_us()
                    self.set_overhead(self.hop_overhead_us + per_hop, self.process_overhead_us + one - per_hop)
                one, per_hop, _ = excess_us()
            except BaseException:
                self.set_overhead(*saved)
                raise
            finally:
                for link in links:
                    if link in self._where:
                        self.remove_link(link)
        return {"hop_overhead_us": round(self.hop_overhead_us, 1), "process_overhead_us": round(self.process_overhead_us, 1),
                "residual_one_link_us": round(one / 2, 1), "residual_per_hop_us": round(per_hop, 1),
                "reference_rtt_us": round(reference * 1e3, 1)}


class RouteSender:
    """Route changes sent by one link engine at their instants (engine.cmd_routes), for
    forwarding.Forwarding, which packs them and sends the rest itself."""

    SOCKET_CHUNK = 64      # namespaces per control call (opening a socket costs a setns and back)

    def __init__(self, shard: _Shard):
        self._shard = shard

    def open(self, netns_paths: list[str]) -> None:
        """Open the engine's rtnetlink socket in each namespace (at bring-up)."""
        for i in range(0, len(netns_paths), self.SOCKET_CHUNK):
            self._shard.call("route_sockets", netns_paths[i:i + self.SOCKET_CHUNK])

    def schedule(self, due_mono: float, step: int, items: list[tuple[str, list[bytes]]]) -> None:
        """Send `items` ([(netns path, [request bytes])]) at monotonic instant `due_mono`."""
        self._shard.call("routes", due_mono, step, items)

    def cancel(self, step: int) -> int:
        """Drop step `step`'s share if the engine has not begun it; returns how many jobs went."""
        return self._shard.call("routes_cancel", step)

    def log(self) -> list[tuple]:
        """Route jobs done since the last call: (step, start, done, namespaces, errors, first error)."""
        return self._shard.call("route_log")


def build_chain(links: "EngineLinks", ns: Namespaces, names: list[str], link_ids: list[str],
                params: LinkParams, net: str = "10.0") -> list[str]:
    """Join existing namespaces `names` (forwarding on) into a routed chain with one link
    between neighbours: link i is `{net}.{i}.0/31` (left end) – `{net}.{i}.1/31` (right end),
    interfaces `right` and `left`, static routes both ways. Returns each node's first address."""
    for i, link in enumerate(link_ids):
        links.add_link(link, LinkEnd(ns.path(names[i]), "right"), LinkEnd(ns.path(names[i + 1]), "left"), params)
        ns.run(names[i], ["ip", "addr", "add", f"{net}.{i}.0/31", "dev", "right"])
        ns.run(names[i], ["ip", "link", "set", "right", "up"])
        ns.run(names[i + 1], ["ip", "addr", "add", f"{net}.{i}.1/31", "dev", "left"])
        ns.run(names[i + 1], ["ip", "link", "set", "left", "up"])
    hops = len(link_ids)
    for i, n in enumerate(names):
        ns.run(n, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for j in range(hops):
            if j > i:
                ns.run(n, ["ip", "route", "add", f"{net}.{j}.0/31", "via", f"{net}.{i}.1"])
            elif j < i - 1:
                ns.run(n, ["ip", "route", "add", f"{net}.{j}.0/31", "via", f"{net}.{i - 1}.0"])
    return [f"{net}.0.0"] + [f"{net}.{i}.1" for i in range(hops)]


def veth_reference_rtt_ms(ns: Namespaces, count: int = 200) -> float:
    """Median ICMP RTT (ms) across a plain veth pair between two new namespaces of `ns`
    ("ref-a", "ref-b"; deleted with the set): what the two end hosts' stacks cost a round trip,
    the part of a measured RTT that no link adds."""
    a, b = "ref-a", "ref-b"
    ns.add(a)
    ns.add(b)
    tmp = f"{TAP_PREFIX}{ns.run_id}v"
    subprocess.run(["ip", "link", "add", tmp + "a", "type", "veth", "peer", "name", tmp + "b"], check=True)
    for side, n, addr in (("a", a, "10.254.0.0/31"), ("b", b, "10.254.0.1/31")):
        subprocess.run(["ip", "link", "set", tmp + side, "netns", ns.full(n), "name", "ref0"], check=True)
        ns.run(n, ["ip", "addr", "add", addr, "dev", "ref0"])
        ns.run(n, ["ip", "link", "set", "ref0", "up"])
    return icmp_medians_ms(ns, a, ["10.254.0.1"], count, interval_s=0.002)[0]


def icmp_medians_ms(ns: Namespaces, name: str, dsts: list[str], count: int, interval_s: float = 0.01) -> list[float]:
    """Median ICMP echo RTT (ms, unrounded) from namespace `name` to each of `dsts`, probed in
    turn (`count` echoes in all) from this process, after a warm-up round (neighbour entries,
    caches) that is not counted."""
    icmp_rtts_ms(dsts, 2 * len(dsts), 0.005, timeout_s=1.0, netns=ns.path(name))
    rtts = icmp_rtts_ms(dsts, count, interval_s, netns=ns.path(name))
    out = []
    for i, dst in enumerate(dsts):
        got = [r for r in rtts[i::len(dsts)] if r is not None]
        if len(got) < count // (2 * len(dsts)):
            raise EmulationError(f"ICMP echo {dst} from {ns.full(name)} answered {len(got)} of {count // len(dsts)}")
        out.append(statistics.median(got))
    return out


# --------------------------------------------------------------------------- kernel backend


def netem_available() -> bool:
    """Whether this kernel can attach a netem qdisc (tries it on a throw-away dummy device in a
    throw-away namespace)."""
    if os.geteuid() != 0:
        return False
    ns = f"netemu-probe-{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        cmds = [["ip", "link", "add", "p0", "type", "dummy"],
                ["tc", "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"]]
        for c in cmds:
            if subprocess.run(["ip", "netns", "exec", ns, *c], capture_output=True).returncode != 0:
                return False
        return True
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def tc_commands(ifname: str, p: LinkParams, old: LinkParams | None = None) -> list[str]:
    """tc batch lines (for `tc -batch`, run inside the interface's namespace) that shape one
    direction: netem (delay, loss) at the root, TBF (rate) below it. `old`: the parameters in
    place, when changing them (qdiscs are replaced in place; a TBF no longer needed goes)."""
    netem = f"qdisc replace dev {ifname} root handle 1: netem delay {p.delay_ms:.6f}ms"
    if p.loss_pct:
        netem += f" loss {p.loss_pct:.6f}%"
    netem += f" limit {p.queue_packets or 100_000}"
    lines = [netem]
    if p.rate_mbps:
        burst = max(1600, int(p.rate_mbps * 1e6 / 8 / 250))      # 4 ms worth, at least one frame
        queue_bytes = p.queue_bytes or default_queue_bytes(p.rate_mbps)
        lines.append(f"qdisc replace dev {ifname} parent 1:1 handle 10: tbf rate {p.rate_mbps:.6f}mbit "
                     f"burst {burst} limit {queue_bytes}")
    elif old is not None and old.rate_mbps:
        lines.append(f"qdisc del dev {ifname} parent 1:1 handle 10:")
    return lines


class KernelLinks:
    """Links as veth pairs shaped with tc netem + TBF, for kernels that have `sch_netem`.

    Delay changes are steps (netem cannot interpolate: of a delay profile the latest point is
    applied), applied when called; `at_t_s` is left to the caller's player. Up/down is the
    interfaces' admin state. Frame counters are the kernel's (`ip -s link`), not collected here.
    """

    def __init__(self, run_id: str | None = None):
        if not netem_available():
            raise EmulationError("the kernel backend needs tc netem (sch_netem), which this kernel lacks; "
                                 "use the link engine (the default) or run `netemu doctor`")
        self.run_id = run_id or new_run_id()
        self._links: dict[str, tuple[LinkEnd, LinkEnd, LinkParams]] = {}
        self._count = 0
        self._faulted: set[str] = set()    # links an injected failure holds down

    def set_clock(self, origin_mono: float, scale: float) -> None:
        """Nothing to do: the kernel cannot schedule changes, so the player applies them at
        each step's instant (LinkBackend's method, for the engine's time base)."""

    @staticmethod
    def _run(netns: str, cmd: list[str], stdin: str | None = None) -> None:
        r = subprocess.run(["nsenter", f"--net={netns}", *cmd], input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulationError(f"`{' '.join(cmd)}` in {netns} failed: {r.stderr.strip()}")

    def add_link(self, link_id: str, a: LinkEnd, b: LinkEnd, params: LinkParams = LinkParams()) -> None:
        self._count += 1
        tmp = f"{TAP_PREFIX}{self.run_id}k{self._count}"
        r = subprocess.run(["ip", "link", "add", tmp + "a", "type", "veth", "peer", "name", tmp + "b"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulationError(f"cannot create veth pair {tmp}a/{tmp}b: {r.stderr.strip()}")
        for name, end in ((tmp + "a", a), (tmp + "b", b)):
            with open(end.netns) as ns_file:
                r = subprocess.run(["ip", "link", "set", name, "netns", f"/proc/self/fd/{ns_file.fileno()}",
                                    "name", end.ifname], capture_output=True, text=True, pass_fds=(ns_file.fileno(),))
            if r.returncode != 0:
                subprocess.run(["ip", "link", "del", tmp + "a"], capture_output=True)
                raise EmulationError(f"cannot move {name} into {end.netns}: {r.stderr.strip()}")
        for end in (a, b):
            self._run(end.netns, ["tc", "-batch", "-"], "\n".join(tc_commands(end.ifname, params)) + "\n")
        self._links[link_id] = (a, b, params)

    def remove_link(self, link_id: str) -> None:
        a, _, _ = self._links.pop(link_id)
        self._run(a.netns, ["ip", "link", "del", a.ifname])

    def set_params(self, updates: Mapping[str, LinkParams | dict], at_t_s: float | None = None) -> None:
        tc: dict[str, list[str]] = {}
        ip: dict[str, list[str]] = {}
        for link_id, p in updates.items():
            a, b, old = self._links[link_id]
            new = LinkParams(**{**old.as_dict(), **_params_dict(p)})
            self._links[link_id] = (a, b, new)
            for end in (a, b):
                tc.setdefault(end.netns, []).extend(tc_commands(end.ifname, new, old))
                if new.up != old.up and link_id not in self._faulted:
                    ip.setdefault(end.netns, []).append(f"link set {end.ifname} {'up' if new.up else 'down'}")
        for netns, lines in tc.items():
            self._run(netns, ["tc", "-batch", "-"], "\n".join(lines) + "\n")
        for netns, lines in ip.items():
            self._run(netns, ["ip", "-batch", "-"], "\n".join(lines) + "\n")

    def set_delay_points(self, points: Mapping[str, Sequence[tuple[float, float]]]) -> None:
        self.set_params({k: {"delay_ms": v[-1][1]} for k, v in points.items() if v})

    def set_fault(self, link_ids: Iterable[str], on: bool) -> float:
        """Interfaces down (`on`) or back to their scheduled state; returns the monotonic instant."""
        ip: dict[str, list[str]] = {}
        for link_id in link_ids:
            a, b, p = self._links[link_id]
            (self._faulted.add if on else self._faulted.discard)(link_id)
            for end in (a, b):
                ip.setdefault(end.netns, []).append(f"link set {end.ifname} {'up' if p.up and not on else 'down'}")
        for netns, lines in ip.items():
            self._run(netns, ["ip", "-batch", "-"], "\n".join(lines) + "\n")
        return time.monotonic()

    def counters(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["link", "direction"])

    def stop(self) -> None:
        self._links.clear()
