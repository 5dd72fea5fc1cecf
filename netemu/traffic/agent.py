"""The workload program that runs inside an emulated node (`python -m netemu.traffic.agent SPEC.json`).

One agent per node runs every workload role the run gives that node, on one asyncio loop, over
real TCP sockets bound to the node's loopback address, and writes a JSON-lines event log (one
object per line: `t` CLOCK_MONOTONIC seconds — one clock for every namespace, so times taken in
different nodes subtract exactly — `ev`, `wl` workload, `job`, and fields of the event).

The spec is made by `netemu.traffic.workloads.agent_specs`: every instant in it is already a monotonic
time and every duration already in wall seconds (dilation applied), so this program does no
time conversion. Roles:

- `inference-server`: per connection, reads a request, waits the service time, then streams
  `tokens` chunks of `bytes_per_token` bytes at the decode rate. With a compute model (role
  key `queue`: the server's satellite has a [[compute]] section) the request instead goes
  through `netemu.traffic.batching.BatchServer`, fed the monotonic clock: it waits for a batch
  slot (slots follow the planned active accelerators), is refused when the queue is full
  (connection closed, event `refused`), and its tokens come out when the model says (prefill,
  then decode at the per-sequence rate); event `served` records the model's queue, prefill and
  decode times (wall seconds).
- `inference-entry`: the cluster's entry node (dispatch): per connection, reads the request's
  head, chooses a server by the workload's policy (`netemu.plan.dispatch.choose_server`) from
  the planned power of each candidate at that instant (slots, sunlit, state of charge), its
  hops from the entry and its load, opens a connection to it over the emulated network and
  relays both ways (event `dispatch`). The load is what the entry itself sees: requests it
  forwarded to a server whose response has not ended (every request of the workload passes
  through the entry, so this counts the server's busy slots and queue, late by the hop's
  light-time; no load reports are needed).
- `inference-client`: opens one connection per request at its arrival instant, sends the
  request, reads the whole streamed response (events `start`, `first_byte`, `done`).
- `transfer-server` / `transfer-client`: files and checkpoints. The client connects; for `up`
  it sends the bytes and the server receives them, for `down` the server sends. The receiving
  side logs `progress` (cumulative bytes, every `progress_s`) and `received`. Over UDP
  (`transport` udp) the sender paces 1,500-byte datagrams at `rate_bits_per_s`, then says END (and
  repeats it until answered); bytes lost are simply missing from the receiver's count.
- `allreduce-rank`: one rank of a ring all-reduce: 2(K−1) phases per step, each sending
  gradient/K bytes to the next rank while receiving as much from the previous one.
- `replay-client` / `replay-server`: closed-loop trace replay. Each flow's client connects at
  the flow's start; both sides then follow the flow's script of messages (sender, bytes, think
  time): a side waits its think time after the previous message, sends its message, or reads
  the other side's (events `msg_start`, `msg_received`; `flow_start` says when it was `due`).

A spec with `hold` true makes the agent wait at the start barrier (`netemu.traffic.ready`): once
its servers listen it writes `ready` on stdout and waits for `go T0_MONO` on stdin; its
replay-clients' `starts` are then seconds after T0_MONO (wall), not monotonic instants.

SIGTERM ends the program: unfinished jobs are simply left without their `done` event.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
import time

_MAGIC = b"NEMU"
_HEAD = struct.Struct("!4sBQQQQ")     # magic, op, job, a, b, c
OP_INFERENCE, OP_PUT, OP_GET, OP_REPLAY, OP_INFERENCE_Q = 1, 2, 3, 4, 9
_QTAIL = struct.Struct("!QH")         # after an OP_INFERENCE_Q head: prompt tokens, client name length
_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_CHUNK))


class Log:
    """Buffered JSON-lines event log, flushed by `flusher` and at exit."""

    def __init__(self, path: str, node: str):
        self.f = open(path, "w", buffering=1 << 16)
        self.node = node

    def __call__(self, ev: str, wl: str, job: int | None = None, t: float | None = None, **fields) -> None:
        rec = {"t": round(time.monotonic() if t is None else t, 9), "ev": ev, "wl": wl, "node": self.node}
        if job is not None:
            rec["job"] = job
        rec.update(fields)
        self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")

    async def flusher(self, every_s: float = 0.5) -> None:
        """Flush every `every_s`, so readers see the events of a running agent."""
        while True:
            await asyncio.sleep(every_s)
            self.f.flush()

    def close(self) -> None:
        self.f.flush()
        self.f.close()


async def _sleep_until(mono: float) -> None:
    dt = mono - time.monotonic()
    if dt > 0:
        await asyncio.sleep(dt)


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # token chunks go out as made


async def _send_bytes(writer: asyncio.StreamWriter, n: int) -> None:
    while n > 0:
        k = min(n, _CHUNK)
        writer.write(_ZEROS[:k])
        n -= k
        await writer.drain()


async def _recv_bytes(reader: asyncio.StreamReader, n: int, on_bytes=None) -> int:
    """Read exactly n bytes (fewer if the peer closes); returns the count read."""
    got = 0
    while got < n:
        data = await reader.read(min(n - got, _CHUNK))
        if not data:
            break
        got += len(data)
        if on_bytes is not None:
            on_bytes(got)
    return got


class _Progress:
    """Logs cumulative received bytes at most every `every_s` (wall), plus the last count."""

    def __init__(self, log: Log, wl: str, job: int, every_s: float, peer: str):
        self.log, self.wl, self.job, self.every_s, self.peer = log, wl, job, every_s, peer
        self.next_t = time.monotonic() + every_s
        self.bytes = 0

    def __call__(self, got: int) -> None:
        self.bytes = got
        now = time.monotonic()
        if now >= self.next_t:
            self.log("progress", self.wl, self.job, t=now, bytes=got, peer=self.peer)
            self.next_t = now + self.every_s


# --------------------------------------------------------------------------- servers

class _Queued:
    """The queueing model of one inference server (`BatchServer`) on the monotonic clock: slots
    change at the planned instants; queued requests are woken as they take a slot."""

    def __init__(self, q: dict):
        from .batching import BatchServer   # lazy: only servers with a compute model need it
        self.changes = [(float(t), int(n)) for t, n in q["slots"]]
        self.next = 0
        now = time.monotonic()
        first = 0
        while self.next < len(self.changes) and self.changes[self.next][0] <= now:
            first = self.changes[self.next][1]
            self.next += 1
        self.waiting: dict = {}
        self.core = BatchServer(q["prefill_tokens_per_s"], q["decode_tokens_per_s"], q["queue_limit"],
                                slots=first, t0=now, on_admit=self._admitted)
        self.kick = asyncio.Event()
        self.overhead_s = 0.0               # time spent in the model (for the overhead benchmark)

    def _admitted(self, req) -> None:
        fut = self.waiting.pop(req.job, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def sync(self, now: float) -> None:
        """Bring the model to `now`: slot changes due, then events."""
        while self.next < len(self.changes) and self.changes[self.next][0] <= now:
            t, n = self.changes[self.next]
            self.core.set_slots(max(t, self.core.t), n)
            self.next += 1
        self.core.advance(now)

    async def run(self) -> None:
        """Wake at the model's next event or slot change, so queued requests start on time."""
        while True:
            self.kick.clear()
            self.sync(time.monotonic())
            nxt = self.core.next_event_s()
            if self.next < len(self.changes):
                nxt = min(nxt, self.changes[self.next][0])
            wait = nxt - time.monotonic()
            if wait == float("inf"):
                await self.kick.wait()
            elif wait > 0:
                try:
                    await asyncio.wait_for(self.kick.wait(), wait)
                except asyncio.TimeoutError:
                    pass

    def arrive(self, key, prompt_tokens: int, output_tokens: int):
        t0 = time.perf_counter()
        now = time.monotonic()
        self.sync(now)
        req = self.core.arrive(now, key, prompt_tokens, output_tokens)
        fut = None
        if not req.refused and req.t_admit is None:
            fut = asyncio.get_running_loop().create_future()
            self.waiting[key] = fut
        self.kick.set()
        self.overhead_s += time.perf_counter() - t0
        return req, fut

    def token_due(self, req, k: int) -> float:
        t0 = time.perf_counter()
        self.sync(time.monotonic())
        t = self.core.token_time(req, k)
        self.overhead_s += time.perf_counter() - t0
        return t


async def _queued_inference(q: _Queued, reader, writer, log: Log, wl: str, job: int, a: int, b: int,
                            c: int) -> None:
    prompt, n = _QTAIL.unpack(await reader.readexactly(_QTAIL.size))
    client = (await reader.readexactly(n)).decode()
    got = await _recv_bytes(reader, a)
    log("request", wl, job, bytes=got, client=client, peer=writer.get_extra_info("peername")[0])
    req, fut = q.arrive((client, job), prompt, b)
    if req.refused:
        log("refused", wl, job, client=client, queue=len(q.core.queue))
        return
    if fut is not None:
        await fut
    chunk = _ZEROS[:c]
    # Token k's time from the model's, extrapolated at its per-sequence rate while that holds
    # (the rate changes only when power takes slots from under a full batch): one model call
    # per rate, not per token.
    rate, t_ref, k_ref = None, 0.0, 0
    for k in range(b):
        while True:
            r = q.core.rate
            if r != rate:
                rate, t_ref, k_ref = r, q.token_due(req, k), k
            due = t_ref + (k - k_ref) / rate if rate > 0 else q.token_due(req, k)
            dt = due - time.monotonic()
            if dt <= 0:
                break
            await asyncio.sleep(dt)
        writer.write(chunk)
        await writer.drain()
    q.sync(time.monotonic())
    log("served", wl, job, client=client, bytes=b * c, t_arrival=req.t_arrival, queue_s=req.queue_s,
        prefill_s=req.prefill_s, decode_s=(req.t_done - req.t_first) if req.t_done is not None
        else q.core.token_time(req, b - 1) - req.t_first, overhead_s=round(q.overhead_s, 6))


async def _serve(role: dict, log: Log, address: str) -> asyncio.AbstractServer:
    wl = role["workload"]
    queued = _Queued(role["queue"]) if role.get("queue") else None
    if queued is not None:
        asyncio.get_running_loop().create_task(queued.run())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _tune(writer)
        try:
            head = await reader.readexactly(_HEAD.size)
            magic, op, job, a, b, c = _HEAD.unpack(head)
            if magic != _MAGIC:
                log("error", wl, None, what="bad request header")
                return
            if op == OP_INFERENCE_Q and queued is not None:
                await _queued_inference(queued, reader, writer, log, wl, job, a, b, c)
            elif op == OP_INFERENCE:
                got = await _recv_bytes(reader, a)
                log("request", wl, job, bytes=got, peer=writer.get_extra_info("peername")[0])
                t_first = time.monotonic() + role["service_s"]
                await _sleep_until(t_first)
                chunk = _ZEROS[:c]
                for i in range(b):
                    await _sleep_until(t_first + i * role["token_interval_s"])
                    writer.write(chunk)
                    await writer.drain()
                log("response_sent", wl, job, bytes=b * c)
            elif op == OP_PUT:
                peer = writer.get_extra_info("peername")[0]
                prog = _Progress(log, wl, job, role["progress_s"], peer)
                got = await _recv_bytes(reader, a, prog)
                t_done = time.monotonic()
                log("received", wl, job, t=t_done, bytes=got, expected=a, peer=peer)
                writer.write(struct.pack("!Qd", got, t_done))
                await writer.drain()
            elif op == OP_GET:
                log("sending", wl, job, bytes=a)
                await _send_bytes(writer, a)
                log("sent", wl, job, bytes=a)
            elif op == OP_REPLAY:
                script = role["flows"].get(str(job))
                if script is None:
                    log("error", wl, job, what="unknown flow")
                    return
                await _follow_script(script, 1, reader, writer, log, wl, job)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            log("error", wl, None, what=f"{type(e).__name__}: {e}")
        except asyncio.CancelledError:
            pass           # the agent is stopping; asyncio's stream callback would report it as an error
        finally:
            writer.close()

    return await asyncio.start_server(handle, address, role["port"], reuse_address=True, backlog=1024)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int | None = None) -> int:
    """Copy from reader to writer: n bytes, or until the reader ends (n None); returns the count."""
    got = 0
    while n is None or got < n:
        data = await reader.read(_CHUNK if n is None else min(n - got, _CHUNK))
        if not data:
            break
        got += len(data)
        writer.write(data)
        await writer.drain()
    return got


async def _serve_entry(role: dict, log: Log, address: str) -> asyncio.AbstractServer:
    """The cluster's entry node: relays each inference request to the satellite the policy
    chooses (see the module's docstring)."""
    from ..plan.dispatch import choose_server   # lazy: only entry nodes need it (and numpy)
    import bisect
    wl, policy = role["workload"], role["policy"]
    servers = role["servers"]
    names = [s["node"] for s in servers]
    hops = [s["hops"] for s in servers]
    times = [[row[0] for row in s["table"]] for s in servers]
    outstanding = [0] * len(servers)

    def state_at(now: float):
        slots, lit, soc = [], [], []
        for s, ts in zip(servers, times):
            k = max(0, bisect.bisect_right(ts, now) - 1)
            _, n, f, c = s["table"][k]
            slots.append(n)
            lit.append(f)
            soc.append(c)
        return slots, lit, soc

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _tune(writer)
        w2 = None
        chosen = None
        try:
            head = await reader.readexactly(_HEAD.size)
            magic, op, job, a, b, c = _HEAD.unpack(head)
            if magic != _MAGIC or op != OP_INFERENCE_Q:
                log("error", wl, None, what="bad request header at the entry")
                return
            tail = await reader.readexactly(_QTAIL.size)
            name = await reader.readexactly(_QTAIL.unpack(tail)[1])
            slots, lit, soc = state_at(time.monotonic())
            chosen = choose_server(policy, names, hops, outstanding, slots, lit, soc)
            outstanding[chosen] += 1
            log("dispatch", wl, job, client=name.decode(), server=names[chosen], hops=hops[chosen],
                loads=[n - (k == chosen) for k, n in enumerate(outstanding)], slots=slots)
            r2, w2 = await asyncio.open_connection(servers[chosen]["address"], role["server_port"],
                                                   local_addr=(address, 0))
            _tune(w2)
            w2.write(head + tail + name)
            up = asyncio.ensure_future(_pipe(reader, w2, a))
            await _pipe(r2, writer)
            await up
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            log("error", wl, None, what=f"entry: {type(e).__name__}: {e}")
        except asyncio.CancelledError:
            pass
        finally:
            if chosen is not None:
                outstanding[chosen] -= 1
            if w2 is not None:
                w2.close()
            writer.close()

    return await asyncio.start_server(handle, address, role["port"], reuse_address=True, backlog=1024)


# --------------------------------------------------------------------------- clients

async def _connect(role: dict, address: str, server: str | None = None):
    reader, writer = await asyncio.open_connection(server or role["server"], role["port"], local_addr=(address, 0))
    _tune(writer)
    return reader, writer


async def _inference_request(role: dict, log: Log, address: str, job: int, req_bytes: int, tokens: int,
                             bpt: int, prompt_tokens: int = 0) -> None:
    wl = role["workload"]
    log("start", wl, job, request_bytes=req_bytes, expected=tokens * bpt)
    writer = None
    try:
        reader, writer = await _connect(role, address)
        if role.get("queued"):          # the server queues: it needs the prompt and who asks
            name = role["node"].encode()
            writer.write(_HEAD.pack(_MAGIC, OP_INFERENCE_Q, job, req_bytes, tokens, bpt)
                         + _QTAIL.pack(prompt_tokens, len(name)) + name)
        else:
            writer.write(_HEAD.pack(_MAGIC, OP_INFERENCE, job, req_bytes, tokens, bpt))
        await _send_bytes(writer, req_bytes)
        log("sent", wl, job)
        want = tokens * bpt
        first = await reader.read(min(want, _CHUNK))
        if not first:
            raise ConnectionError("server closed before the first byte")
        log("first_byte", wl, job)
        got = len(first) + await _recv_bytes(reader, want - len(first))
        log("done", wl, job, bytes=got)
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        log("error", wl, job, what=f"{type(e).__name__}: {e}")
    finally:
        if writer is not None:
            writer.close()


async def _inference_client(role: dict, log: Log, address: str) -> None:
    tasks = []
    for job, due, req_bytes, tokens, bpt, *prompt in role["jobs"]:
        await _sleep_until(due)
        tasks.append(asyncio.create_task(_inference_request(role, log, address, job, req_bytes, tokens, bpt,
                                                            *prompt)))
    if tasks:
        await asyncio.gather(*tasks)


async def _transfer(role: dict, log: Log, address: str, job: int) -> None:
    wl, size = role["workload"], role["size_bytes"]
    up = role["direction"] == "up"
    log("start", wl, job, bytes=size, direction=role["direction"])
    writer = None
    try:
        reader, writer = await _connect(role, address)
        writer.write(_HEAD.pack(_MAGIC, OP_PUT if up else OP_GET, job, size, 0, 0))
        if up:
            await _send_bytes(writer, size)
            log("sent", wl, job, bytes=size)
            got, t_received = struct.unpack("!Qd", await reader.readexactly(16))
            log("done", wl, job, bytes=got, t_received=t_received)   # the server's count and clock
        else:
            prog = _Progress(log, wl, job, role["progress_s"], address)
            got = await _recv_bytes(reader, size, prog)
            t_received = time.monotonic()
            log("received", wl, job, t=t_received, bytes=got, expected=size, peer=address)
            log("done", wl, job, bytes=got, t_received=t_received)
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        log("error", wl, job, what=f"{type(e).__name__}: {e}")
    finally:
        if writer is not None:
            writer.close()


# --------------------------------------------------------------------------- UDP transfers

_UHEAD = struct.Struct("!4sBQQQ")     # magic, op, job, a, b
U_DATA, U_END, U_ACK, U_GET = 5, 6, 7, 8
_UDP_IP_BYTES = 1500                  # one datagram per 1,500-byte IP packet
_UDP_PAYLOAD = _UDP_IP_BYTES - 28 - _UHEAD.size
_U_RETRIES = 10


class _Datagrams(asyncio.DatagramProtocol):
    """A UDP endpoint whose datagrams go to `on_datagram(data, addr)`."""

    def __init__(self, on_datagram):
        self.on_datagram = on_datagram

    def datagram_received(self, data, addr):
        if len(data) >= _UHEAD.size and data[:4] == _MAGIC:
            self.on_datagram(data, addr)


async def _paced_send(transport, addr, job: int, total: int, rate_bits_per_s: float) -> None:
    """Send `total` bytes as DATA datagrams at `rate_bits_per_s` of IP packets (wall), whatever comes back."""
    gap_s = _UDP_IP_BYTES * 8 / rate_bits_per_s
    n = -(-total // _UDP_PAYLOAD)
    t0, k = time.monotonic(), 0
    while k < n:
        due = min(n, int((time.monotonic() - t0) / gap_s) + 1)
        while k < due:
            size = min(_UDP_PAYLOAD, total - k * _UDP_PAYLOAD)
            transport.sendto(_UHEAD.pack(_MAGIC, U_DATA, job, k * _UDP_PAYLOAD, total) + _ZEROS[:size], addr)
            k += 1
        if k < n:
            await _sleep_until(t0 + k * gap_s)


async def _udp_endpoint(on_datagram, local, remote=None):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(on_datagram), local_addr=local,
                                                       remote_addr=remote)
    sock = transport.get_extra_info("socket")
    try:                                      # root may exceed rmem_max
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)   # SO_RCVBUFFORCE
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return transport


class _Receipt:
    """What a UDP receiver has of one transfer."""

    def __init__(self, log: Log, wl: str, job: int, every_s: float, peer: str):
        self.progress = _Progress(log, wl, job, every_s, peer)
        self.bytes, self.last_t, self.total, self.logged = 0, None, None, False
        self.ended = asyncio.Event()

    def data(self, n: int, total: int) -> None:
        self.bytes += n
        self.total = total
        self.last_t = time.monotonic()
        self.progress(self.bytes)


async def _serve_udp(role: dict, log: Log, address: str):
    """The UDP side of a transfer server: receives uploads, answers GETs with paced downloads."""
    wl = role["workload"]
    receipts: dict = {}
    transport = None

    def on_datagram(data, addr):
        _, op, job, a, b = _UHEAD.unpack_from(data)
        if op == U_DATA:
            r = receipts.setdefault((addr, job), _Receipt(log, wl, job, role["progress_s"], addr[0]))
            r.data(len(data) - _UHEAD.size, b)
        elif op == U_END:
            r = receipts.setdefault((addr, job), _Receipt(log, wl, job, role["progress_s"], addr[0]))
            if not r.logged:
                r.logged = True
                log("received", wl, job, t=r.last_t, bytes=r.bytes, expected=a, peer=addr[0])
            t_ns = int((r.last_t or time.monotonic()) * 1e9)
            transport.sendto(_UHEAD.pack(_MAGIC, U_ACK, job, r.bytes, t_ns), addr)
        elif op == U_GET and (addr, job, "get") not in receipts:
            receipts[(addr, job, "get")] = True
            asyncio.get_running_loop().create_task(send_down(addr, job, a, float(b)))

    async def send_down(addr, job, total, rate_bits_per_s):
        log("sending", wl, job, bytes=total)
        await _paced_send(transport, addr, job, total, rate_bits_per_s)
        for _ in range(3):                    # END may be lost: the client also times out
            transport.sendto(_UHEAD.pack(_MAGIC, U_END, job, total, 0), addr)
            await asyncio.sleep(0.01)
        log("sent", wl, job, bytes=total)

    transport = await _udp_endpoint(on_datagram, (address, role["port"]))
    return transport


async def _udp_transfer(role: dict, log: Log, address: str, job: int) -> None:
    wl, size, rate = role["workload"], role["size_bytes"], role["rate_bits_per_s"]
    up = role["direction"] == "up"
    server = (role["server"], role["port"])
    patience_s = role["patience_s"]
    log("start", wl, job, bytes=size, direction=role["direction"], transport="udp")
    acked: asyncio.Future = asyncio.get_running_loop().create_future()
    receipt = _Receipt(log, wl, job, role["progress_s"], address)

    def on_datagram(data, addr):
        _, op, j, a, b = _UHEAD.unpack_from(data)
        if j != job:
            return
        if op == U_ACK and not acked.done():
            acked.set_result((a, b / 1e9))
        elif op == U_DATA:
            receipt.data(len(data) - _UHEAD.size, b)
        elif op == U_END:
            receipt.ended.set()

    transport = await _udp_endpoint(on_datagram, (address, 0), server)
    try:
        if up:
            await _paced_send(transport, None, job, size, rate)
            log("sent", wl, job, bytes=size)
            for _ in range(_U_RETRIES):
                transport.sendto(_UHEAD.pack(_MAGIC, U_END, job, size, 0))
                try:
                    got, t_received = await asyncio.wait_for(asyncio.shield(acked), patience_s / _U_RETRIES)
                    log("done", wl, job, bytes=got, t_received=t_received)
                    return
                except asyncio.TimeoutError:
                    continue
            log("error", wl, job, what="no acknowledgement of END from the server")
        else:
            for _ in range(_U_RETRIES):         # the request may be lost
                transport.sendto(_UHEAD.pack(_MAGIC, U_GET, job, size, int(rate)))
                await asyncio.sleep(patience_s / _U_RETRIES)
                if receipt.last_t is not None or receipt.ended.is_set():
                    break
            # done at END, or once nothing has come for `patience_s`
            while not receipt.ended.is_set():
                last = receipt.last_t or time.monotonic()
                try:
                    await asyncio.wait_for(receipt.ended.wait(), max(0.01, last + patience_s - time.monotonic()))
                except asyncio.TimeoutError:
                    if receipt.last_t is None or time.monotonic() - receipt.last_t >= patience_s:
                        break
            t_received = receipt.last_t if receipt.last_t is not None else time.monotonic()
            log("received", wl, job, t=t_received, bytes=receipt.bytes, expected=size, peer=address)
            log("done", wl, job, bytes=receipt.bytes, t_received=t_received)
    finally:
        transport.close()


async def _transfer_client(role: dict, log: Log, address: str) -> None:
    start, stop, count, interval = role["start_mono"], role["stop_mono"], role["count"], role["interval_s"]
    transfer = _udp_transfer if role.get("transport") == "udp" else _transfer
    tasks, job = [], 0
    await _sleep_until(start)
    while time.monotonic() < stop and (count == 0 or job < count):
        if interval > 0:
            await _sleep_until(start + job * interval)
            if time.monotonic() >= stop:
                break
            tasks.append(asyncio.create_task(transfer(role, log, address, job)))
        else:
            await transfer(role, log, address, job)
        job += 1
    if tasks:
        await asyncio.gather(*tasks)


async def _follow_script(messages: list, me: int, reader, writer, log: Log, wl: str, flow: int) -> None:
    """Play one flow's messages [[sender (0 client, 1 server), bytes, think_s wall], ...] from
    side `me`: send own messages after their think time, read the other side's."""
    last = time.monotonic()
    for m, (sender, n, think_s) in enumerate(messages):
        if sender == me:
            await _sleep_until(last + think_s)
            log("msg_start", wl, flow, msg=m, bytes=n)
            await _send_bytes(writer, n)
            last = time.monotonic()
        else:
            got = await _recv_bytes(reader, n)
            last = time.monotonic()
            log("msg_received", wl, flow, t=last, msg=m, bytes=got, expected=n)
            if got < n:
                raise ConnectionError(f"flow {flow}: peer closed in message {m}")


async def _replay_flow(role: dict, log: Log, address: str, flow: str, start: float, script: list) -> None:
    wl = role["workload"]
    await _sleep_until(start)
    writer = None
    try:
        log("flow_start", wl, int(flow), due=round(start, 9))
        reader, writer = await _connect(role, address, role["servers"][flow])
        writer.write(_HEAD.pack(_MAGIC, OP_REPLAY, int(flow), 0, 0, 0))
        await _follow_script(script, 0, reader, writer, log, wl, int(flow))
        log("flow_end", wl, int(flow))
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        log("error", wl, int(flow), what=f"{type(e).__name__}: {e}")
    finally:
        if writer is not None:
            writer.close()


async def _replay_client(role: dict, log: Log, address: str) -> None:
    await asyncio.gather(*(_replay_flow(role, log, address, f, start, role["flows"][f])
                           for f, start in role["starts"].items()))


# --------------------------------------------------------------------------- all-reduce

async def _allreduce_rank(role: dict, log: Log, address: str) -> None:
    wl, rank, k = role["workload"], role["rank"], role["ranks"]
    inbound: asyncio.Future = asyncio.get_running_loop().create_future()

    async def accept(reader, writer):
        _tune(writer)
        if not inbound.done():
            inbound.set_result((reader, writer))     # keep the writer: it owns the transport

    server = await asyncio.start_server(accept, address, role["port"], reuse_address=True)
    writer = None
    deadline = role["start_mono"]
    while writer is None:                  # the next rank's agent may still be starting
        try:
            _, writer = await asyncio.open_connection(role["next"], role["port"], local_addr=(address, 0))
            _tune(writer)
        except OSError:
            if time.monotonic() > deadline + 30 * role["dilation"]:
                log("error", wl, None, what=f"cannot connect to the next rank at {role['next']}")
                server.close()
                return
            await asyncio.sleep(0.05)
    reader, _ = await inbound
    log("ready", wl, None, rank=rank)
    chunk = role["gradient_bytes"] // k
    await _sleep_until(role["start_mono"])
    try:
        for step in range(role["steps"]):
            t0 = time.monotonic()
            log("step_start", wl, step, t=t0, rank=rank)
            sent = got = 0
            for _ in range(2 * (k - 1)):
                async def send():
                    await _send_bytes(writer, chunk)
                    return chunk
                s, r = await asyncio.gather(send(), _recv_bytes(reader, chunk))
                sent += s
                got += r
                if r < chunk:
                    raise ConnectionError(f"rank {rank}: the previous rank closed mid-phase")
            log("step_end", wl, step, rank=rank, bytes_sent=sent, bytes_received=got)
            if role["compute_s"] > 0 and step + 1 < role["steps"]:
                await asyncio.sleep(role["compute_s"])
    except (ConnectionError, OSError) as e:
        log("error", wl, None, what=f"{type(e).__name__}: {e}", rank=rank)
    finally:
        writer.close()
        server.close()


# --------------------------------------------------------------------------- main

async def _main(spec: dict, log: Log) -> None:
    address = spec["address"]
    servers, tasks = [], []
    flusher = asyncio.create_task(log.flusher())  # noqa: F841 (runs until cancelled at exit)
    for role in spec["roles"]:
        kind = role["role"]
        if kind == "inference-entry":
            servers.append(await _serve_entry(role, log, address))
        elif kind in ("inference-server", "transfer-server", "replay-server"):
            servers.append(await _serve(role, log, address))
            if role.get("udp"):
                servers.append(await _serve_udp(role, log, address))
        elif kind == "inference-client":
            tasks.append(_inference_client(role, log, address))
        elif kind == "transfer-client":
            tasks.append(_transfer_client(role, log, address))
        elif kind == "allreduce-rank":
            tasks.append(_allreduce_rank(role, log, address))
        elif kind == "replay-client":
            tasks.append(_replay_client(role, log, address))
        else:
            raise ValueError(f"unknown role {kind!r}")
    log("agent_ready", "", None, roles=[r["role"] for r in spec["roles"]])
    if spec.get("hold"):
        # The start barrier (netemu.traffic.ready): servers listen now; the instants in
        # `starts` count from trace time 0, which the parent fixes once every agent is ready.
        from .ready import read_go, say_ready
        log.f.flush()
        say_ready()
        t0_mono = await asyncio.get_running_loop().run_in_executor(None, read_go)
        log("go", "", None, t0_mono=t0_mono)
        for role in spec["roles"]:
            if "starts" in role:
                role["starts"] = {f: t0_mono + s for f, s in role["starts"].items()}
    if tasks:
        await asyncio.gather(*tasks)
    log("agent_idle", "", None)
    await asyncio.Event().wait()          # servers keep serving until SIGTERM


async def _settle(tasks) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m netemu.traffic.agent SPEC.json", file=sys.stderr)
        return 2
    from ..emulate.tap import die_with_parent   # lazy: only when run as a program
    die_with_parent(signal.SIGTERM)       # a run killed with -9 takes its agents along
    spec = json.loads(open(argv[0]).read())
    log = Log(spec["log"], spec["node"])
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(_main(spec, log))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        pass
    finally:
        rest = asyncio.all_tasks(loop)       # connection handlers and requests still running
        for t in rest:
            t.cancel()
        if rest:
            loop.run_until_complete(_settle(rest))
        log("agent_stop", "", None)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
