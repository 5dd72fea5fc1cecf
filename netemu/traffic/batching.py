"""The queueing inference server's model: a pure discrete-event core fed times (no clock, no I/O).

A compute satellite serves inference requests in batch slots (continuous batching): its slots
are its active accelerators × concurrent sequences per accelerator, as the power model allows at
the instant (`set_slots`). A request arriving to a free slot takes it at once; otherwise it waits
in a first-come-first-served queue of at most `queue_limit` requests, and a request arriving to
a full queue is refused (counted in `refused`). A request holds its slot through

- prefill: `prompt_tokens / prefill_tokens_per_s` seconds (the prompt at one accelerator's prefill
  rate; the pass ends with the first output token), then
- decode: the other `output_tokens − 1` tokens at the per-sequence rate `decode_tokens_per_s`
  while the batch fits its slots. When the slots drop below the requests holding them (the
  satellite throttled accelerators under them: no request is dropped), every decoding sequence
  slows to `decode_tokens_per_s × slots / busy`, the share of the remaining accelerators.

With slots unchanged a request's service is deterministic (prefill + decode), so arrivals at a
Poisson rate make an M/D/c queue (tests/test_batching.py checks its mean wait).

Decode runs in one virtual time for all sequences (every sequence decodes at the same rate), so
each event costs O(log busy): `V` grows at the current per-sequence rate, a request's k-th
token comes out when `V` reaches its decode start + k.

Times are seconds of any one clock (the agent feeds CLOCK_MONOTONIC, wall seconds, with rates
already divided by the run's dilation); every call takes the current time, which never goes back.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

__all__ = ["BatchServer", "Request"]


@dataclass(slots=True)
class Request:
    """One request's record: times of arrival, admission (slot taken), first token (prefill
    done) and last token (slot freed; None until then), or refused."""

    job: object
    prompt_tokens: int
    output_tokens: int
    t_arrival: float
    t_admit: float | None = None
    t_first: float | None = None
    t_done: float | None = None
    v_start: float | None = None       # virtual decode time of the first token
    refused: bool = False

    @property
    def queue_s(self) -> float:
        return self.t_admit - self.t_arrival

    @property
    def prefill_s(self) -> float:
        return self.t_first - self.t_admit

    @property
    def decode_s(self) -> float:
        return self.t_done - self.t_first


class BatchServer:
    """Batch slots, a bounded queue and the per-sequence decode rate of one server.
    `on_admit(request)`, if given, hears each request as it takes a slot (a queued one when a
    slot frees or the slots grow, during `advance` or `set_slots`).

    >>> s = BatchServer(prefill_tokens_per_s=1000, decode_tokens_per_s=10, queue_limit=1, slots=1)
    >>> a, b, c = (s.arrive(0.0, j, prompt_tokens=100, output_tokens=11) for j in "abc")
    >>> (a.t_first, b.t_admit, c.refused)   # prefill 0.1 s; a holds the slot 0.1 + 10/10 s
    (0.1, None, True)
    >>> done = s.advance(2.0); (done[0].job, b.t_admit, b.t_first)
    ('a', 1.1, 1.2000000000000002)
    """

    def __init__(self, prefill_tokens_per_s: float, decode_tokens_per_s: float, queue_limit: int,
                 slots: int = 0, t0: float = 0.0, on_admit=None):
        if not prefill_tokens_per_s > 0 or not decode_tokens_per_s > 0:
            raise ValueError("prefill and decode rates must be > 0 tokens/s")
        if queue_limit < 0 or slots < 0:
            raise ValueError("queue_limit and slots must be ≥ 0")
        self.prefill_tokens_per_s = float(prefill_tokens_per_s)
        self.decode_tokens_per_s = float(decode_tokens_per_s)
        self.queue_limit = int(queue_limit)
        self.slots = int(slots)
        self.t = float(t0)
        self.v = 0.0                            # virtual decode time (tokens per sequence)
        self.queue: deque[Request] = deque()
        self.running: dict = {}                 # job -> Request holding a slot
        self._prefill: list = []                # heap (t_first, seq, Request)
        self._decode: list = []                 # heap (v_done, seq, Request)
        self._seq = 0
        self.served = self.refused = 0
        self.on_admit = on_admit                # called with each Request as it takes a slot

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> int:
        """Slots held (requests in prefill or decode)."""
        return len(self.running)

    @property
    def rate(self) -> float:
        """Per-sequence decode rate now (tokens/s)."""
        b = len(self.running)
        return self.decode_tokens_per_s if b <= self.slots else self.decode_tokens_per_s * self.slots / b

    def next_event_s(self) -> float:
        """Time of the next prefill end or departure if nothing else happens (inf: none)."""
        t = self._prefill[0][0] if self._prefill else float("inf")
        if self._decode:
            r = self.rate
            if r > 0:
                t = min(t, self.t + max(0.0, self._decode[0][0] - self.v) / r)
        return t

    def token_time(self, req: Request, k: int) -> float:
        """When token k (0: the first) of an admitted request comes out, if the rate stays."""
        r = self.rate
        if req.v_start is None:                 # still in prefill (or queued: unknown, inf)
            if req.t_first is None:
                return float("inf")
            return req.t_first + (k / r if k else 0.0) if r > 0 else float("inf")
        dv = req.v_start + k - self.v
        if dv <= 0:
            return self.t
        return self.t + dv / r if r > 0 else float("inf")

    # ------------------------------------------------------------------ events

    def advance(self, t: float) -> list[Request]:
        """Run the model to time t (inf: until nothing is left to do); returns the requests that
        finished, in order."""
        done: list[Request] = []
        while True:
            t_pf = self._prefill[0][0] if self._prefill else float("inf")
            t_dep = float("inf")
            if self._decode:
                r = self.rate
                if r > 0:
                    t_dep = self.t + max(0.0, self._decode[0][0] - self.v) / r
            t_next = min(t_pf, t_dep)
            if t_next > t or t_next == float("inf"):
                break
            self._move(t_next)
            if t_pf <= t_dep:
                _, _, req = heapq.heappop(self._prefill)
                req.v_start = self.v
                self._push_decode(req)
            else:
                _, _, req = heapq.heappop(self._decode)
                self.v = max(self.v, req.v_start + req.output_tokens - 1)
                req.t_done = self.t
                del self.running[req.job]
                self.served += 1
                done.append(req)
                self._admit()
        if t != float("inf"):
            self._move(t)
        return done

    def arrive(self, t: float, job, prompt_tokens: int, output_tokens: int) -> Request:
        """A request arrives at t: it takes a slot, waits in the queue, or is refused (queue
        full). Its record fills in as the model runs (`advance`)."""
        self.advance(t)
        req = Request(job, int(prompt_tokens), max(1, int(output_tokens)), float(t))
        if len(self.running) < self.slots and not self.queue:
            self._start(req)
        elif len(self.queue) < self.queue_limit:
            self.queue.append(req)
        else:
            req.refused = True
            self.refused += 1
        return req

    def set_slots(self, t: float, slots: int) -> None:
        """The slots the power model allows from t on (active accelerators × sequences)."""
        if slots < 0:
            raise ValueError("slots must be ≥ 0")
        self.advance(t)
        self.slots = int(slots)
        self._admit()

    # ------------------------------------------------------------------ internals

    def _move(self, t: float) -> None:
        if t > self.t:
            if self._decode:
                self.v += self.rate * (t - self.t)
            self.t = t

    def _start(self, req: Request) -> None:
        req.t_admit = self.t
        req.t_first = self.t + req.prompt_tokens / self.prefill_tokens_per_s
        self.running[req.job] = req
        self._seq += 1
        heapq.heappush(self._prefill, (req.t_first, self._seq, req))
        if self.on_admit is not None:
            self.on_admit(req)

    def _push_decode(self, req: Request) -> None:
        self._seq += 1
        heapq.heappush(self._decode, (req.v_start + req.output_tokens - 1, self._seq, req))

    def _admit(self) -> None:
        while self.queue and len(self.running) < self.slots:
            self._start(self.queue.popleft())
