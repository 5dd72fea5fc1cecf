"""The player: applies a run's schedule against the wall clock, in a thread.

Link parameters go to the link engine ahead of time (it applies them at their exact emulated
instant: delay profiles point by point, rate/loss/up at step boundaries), so links never lag;
routes are changed by this thread at each step's instant over netlink, and the lag is logged.
The kernel backend cannot schedule, so its link changes are applied with the routes.
"""

from __future__ import annotations

import gc
import heapq
import os
import threading
import time
from collections import deque

import numpy as np
import pandas as pd

from ..errors import EmulationError
from ..plan.routing import next_hop_changes
from .clock import Clock
from .links import CONTROL_CHUNK_LINKS, LinkBackend, link_params
from .playback import LinkStates, Window

__all__ = ["Player", "auto_dilation", "choose_dilation", "PLAY_COSTS"]

LOOKAHEAD_S = 2.5   # wall seconds of link state the engine holds ahead of time
BATCH_S = 1.0       # wall seconds of steps sent to the engine at once
# No engine call of a feed starts closer than this to a route step's instant: one call takes
# 0.1-5 ms on a quiet host and more on a loaded one, and a step must not wait behind it (the
# engine holds LOOKAHEAD_S of link state, so feeding can always wait for the step).
FEED_GUARD_S = 0.02
# Sleep until this much before a step's or task's instant, then spin to it: a sleeping thread
# wakes 0.05-3 ms late on a 2-vCPU VM, which would add to every route step's lag. Short: a
# real-time player spinning keeps lower-priority work (a cluster host's engines) off its CPU.
SPIN_S = 0.3e-3
# The player's thread runs at this real-time (SCHED_FIFO) priority when it may (root): a route
# step then preempts the run's other processes on its CPU (probes, agents, the host's own) as
# soon as its timer fires. Low, so the kernel's own real-time threads keep precedence; the
# engines are on CPUs of their own and unaffected.
PLAYER_RT_PRIORITY = 10

# What playing costs, measured on the reference machine (2-core VM, Starlink shell-1 runs): wall
# seconds per route change the player applies and stages (1,462 changes took 20 ms to apply),
# per link and step of delay points the player prepares and sends, per link and step the
# engine spends taking them in (time its data path waits), and per frame an engine writes
# (the receiving stack runs inside the write: 20 µs, run.json's write_cost_us).
PLAY_COSTS = {"route_change_s": 20e-6, "feed_link_step_s": 4e-6, "engine_link_step_s": 3e-6, "frame_s": 20e-6}
# What the run may spend: the player's share of one core (the rest goes to the nodes' stacks,
# probes and workloads), each engine's share of its time on control, and the route-apply lag
# of a step (emulated seconds) at the 99th percentile (a tenth of a 100-ms step: probes that
# close to their path's change are counted apart anyway), and each engine's share of its time
# writing frames.
PLAYER_SHARE = 0.25
ENGINE_CONTROL_SHARE = 0.1
ROUTE_LAG_TARGET_S = 0.01
ENGINE_FRAME_SHARE = 0.5


def auto_dilation(route_changes: np.ndarray, step_s: float, moving_links: int, shards: int,
                  frames_per_s: float = 0.0, costs: dict = PLAY_COSTS) -> tuple[float, dict]:
    """The smallest time dilation K (an integer ≥ 1) at which playing a window keeps up:
    `route_changes` per step (after the first), `step_s` emulated seconds per step,
    `moving_links` links whose delay moves (fed every step), `shards` engine processes,
    `frames_per_s` link traversals per emulated second of the traffic known in advance (probes).

    At K, a step lasts step_s × K wall seconds, so:
    - the player's work per step (its route changes and the delay points it prepares) stays
      within PLAYER_SHARE of it;
    - each engine's control work per step (taking the points in) within ENGINE_CONTROL_SHARE;
    - a step's route changes (99th percentile) are in force within ROUTE_LAG_TARGET_S emulated;
    - writing the frames takes each engine ENGINE_FRAME_SHARE of its time at most.
    Returns (K, {each bound's K and the costs used})."""
    r = np.asarray(route_changes, float)
    mean_r = float(r.mean()) if len(r) else 0.0
    p99_r = float(np.percentile(r, 99)) if len(r) else 0.0
    c = costs
    bounds = {
        "player": (mean_r * c["route_change_s"] + moving_links * c["feed_link_step_s"]) / (PLAYER_SHARE * step_s),
        "engine": moving_links * c["engine_link_step_s"] / max(1, shards) / (ENGINE_CONTROL_SHARE * step_s),
        "route_lag": p99_r * c["route_change_s"] / ROUTE_LAG_TARGET_S,
        "engine_frames": frames_per_s * c["frame_s"] / max(1, shards) / ENGINE_FRAME_SHARE,
    }
    k = max(1.0, float(np.ceil(max(bounds.values()) - 1e-9)))
    return k, {"dilation": k, "bound_by": max(bounds, key=bounds.get) if k > 1 else None,
               "bounds": {n: round(v, 2) for n, v in bounds.items()},
               "route_changes_per_step_mean": round(mean_r, 1), "route_changes_per_step_p99": round(p99_r, 1),
               "moving_links": int(moving_links), "frames_per_s": round(float(frames_per_s)), "step_s": step_s, "shards": int(shards), "costs": dict(c)}


def choose_dilation(plan, w: Window, node_names: list[str], states: LinkStates, speed: float, shards: int,
                    probe_frames_per_s: float = 0.0) -> tuple[float, dict, pd.DataFrame]:
    """The dilation `auto_dilation` picks for window `w` of `plan` played with the nodes
    `node_names`: from its route changes per step (the in-scope next-hop changes) and its
    moving links. Returns (K, the choice's figures, the window's next-hop changes, which the
    forwarding reuses)."""
    sc, sched = plan.scenario, plan.schedule
    nh_all = next_hop_changes(plan.routing_schedule, tuple(sc.endpoints), sc.routing.metric, sc.routing.ground_relay,
                              steps=(w.k0, w.k1 + 1))
    pos = {n: i for i, n in enumerate(sched.node_names)}
    in_scope = np.zeros(len(pos), bool)
    in_scope[[pos[n] for n in node_names]] = True
    nh = nh_all[in_scope[nh_all["node"].to_numpy()]]
    per_step = nh[nh["step"] > w.k0].groupby("step").size().reindex(range(w.k0 + 1, w.k1 + 1), fill_value=0)
    d = states.delay_ms
    moving = int((d != d[:1]).any(axis=0).sum()) if len(d) > 1 else 0
    t = sched.t_s
    step_s = float(t[1] - t[0]) if len(t) > 1 else 1.0
    k, choice = auto_dilation(per_step.to_numpy(), step_s / speed, moving, shards, probe_frames_per_s * speed)
    return k, choice, nh_all


APPLY_COLUMNS = ["step", "t_s", "due_s", "applied_s", "lag_ms", "routes", "link_updates", "link_lead_ms",
                 "namespaces", "start_late_ms", "send_ms", "ack_ms", "feed_ms", "cpu_wait_ms",
                 "engine_namespaces", "engine_done_ms", "switched_namespaces", "prep_ms"]

# A big step's routes (forwarding.prepare_big_step: a storm's tens of thousands of changes) go
# into the namespaces' idle tables this long (wall) ahead of its instant, a chunk at a time
# between steps; at the instant each namespace switches tables with one request.
PREPARE_S = 3.0


def _realtime(priority: int) -> bool:
    """Put the calling thread in SCHED_FIFO at `priority`; False where that is not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))   # 0: this thread
        return True
    except (OSError, AttributeError):
        return False


def _cpu_wait_ns() -> int | None:
    """Nanoseconds this thread has waited on a run queue (schedstat's second field), or None."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Player:
    """Plays window `w` of a schedule (grid `t_grid`, s) against `clock` in a thread: link
    states `states` (columns in the order of `link_ids`) go to the link backend `links`, each
    step's route changes to `forwarding` (stage ahead, apply at the instant). `engine`: the
    backend schedules link changes itself (the link engine); else they go with the routes."""

    def __init__(self, clock: Clock, w: Window, t_grid: np.ndarray, links: LinkBackend, forwarding,
                 states: LinkStates, link_ids: np.ndarray, engine: bool):
        self.clock, self.w = clock, w
        self.links, self.forwarding, self.states, self.link_ids, self.engine = links, forwarding, states, link_ids, engine
        self.t = t_grid[w.k0:w.k1 + 1]          # emulated times of the window's steps
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._fed = 1                           # window steps [0, _fed) are with the engine
        self._fed_at: dict[int, float] = {}
        self.log: list[tuple] = []
        self.feed_ms: list[float] = []          # duration of each engine call of a feed
        self._work: deque = deque()             # engine calls of feeds, sent between route steps
        self.doing = "not started"              # what the player's thread is doing (for the watchdog)
        self._feed_since_ms = 0.0               # engine feeding since the last route step
        self.realtime = False                   # whether the thread got real-time priority
        self._wait_ns: int | None = None        # the thread's run-queue wait at the last step
        self.applied_k = w.k0                   # the schedule step whose routes are in force
        self._tasks: list = []                  # (monotonic instant, seq, fn): call_at's heap
        self._task_seq = 0
        self._tasks_lock = threading.Lock()
        self._wake = threading.Event()          # a new task: the loop re-reckons its sleep
        self._prep: deque = deque()             # big steps' routes put ahead (forwarding.prepare_big_step)
        self._prepared = 0                      # window steps up to here have been looked at for that
        self._prep_wait: int | None = None      # the big step being prepared (the next waits for it)
        self._prep_since_ms = 0.0               # time putting them since the last route step

    # ------------------------------------------------------------------ clock

    @property
    def origin(self) -> float | None:
        """Monotonic instant of the window's start (None before `start`)."""
        return self.clock.origin_mono

    def wall(self, i: int | float) -> float:
        """Monotonic time of window step i (fractional steps are not used)."""
        return self.clock.mono(float(self.t[int(i)]))

    def now_t_s(self) -> float:
        return self.clock.now_t_s(time.monotonic())

    def end_mono(self) -> float:
        """Monotonic time of the window's end."""
        return self.clock.mono(self.w.t_end_s)

    def finished(self) -> bool:
        """Whether the player's thread has ended (reached the window's end, stopped or failed)."""
        return self._thread is not None and not self._thread.is_alive()

    # ------------------------------------------------------------------ control

    def start(self, lead_s: float = 0.3, origin_mono: float | None = None) -> None:
        """Play from `lead_s` from now, or from monotonic instant `origin_mono` (a cluster host:
        the run's shared start instant on this host's clock)."""
        if self._thread is not None:
            raise EmulationError("the player has started already")
        self.clock = self.clock.started_at(time.monotonic() + lead_s if origin_mono is None else origin_mono)
        if len(self.t) > 1:
            self.forwarding.stage(self.w.k0 + 1, self.wall(1))
            self._prepare_ahead(0)
        if self.engine:
            self.links.set_clock(self.clock.engine_origin_mono, self.clock.scale)
            self._feed(0, self._batch_end(0), now=True)
        # What was built is kept for the whole run: frozen, the collector never walks it (a full
        # collection walks every object of a Starlink run while holding the GIL, so the player waits).
        gc.collect()
        gc.freeze()
        self._thread = threading.Thread(target=self._run, name="netemu-player", daemon=True)
        self._thread.start()

    def call_at(self, mono: float, fn) -> None:
        """Run `fn()` in the player's thread at monotonic instant `mono` (at once if past), between
        its route steps: what changes the routes in force (live fault injection) runs there, so
        it never races a step. Tasks still pending at the window's end are dropped."""
        with self._tasks_lock:
            self._task_seq += 1
            heapq.heappush(self._tasks, (mono, self._task_seq, fn))
        self._wake.set()

    def playing(self) -> bool:
        """Whether the player's thread runs (started, and not yet at the window's end)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        gc.unfreeze()

    def wait(self, timeout_s: float | None = None) -> bool:
        if self._thread is None:
            raise EmulationError("the player has not started (call start())")
        self._thread.join(timeout_s)
        if self._error is not None:
            raise EmulationError(f"the player failed: {self._error}") from self._error
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ loop

    def _batch_end(self, i: int) -> int:
        n = max(1, int(np.ceil(BATCH_S / max(self.clock.scale * self._step_s(), 1e-9))))
        return min(len(self.t), i + n)

    def _step_s(self) -> float:
        return float(self.t[1] - self.t[0]) if len(self.t) > 1 else 1.0

    def _run(self) -> None:
        try:
            self.realtime = _realtime(PLAYER_RT_PRIORITY)
            self._loop()
        except BaseException as e:  # reported by wait()
            self._error = e

    def _loop(self) -> None:
        S, engine = len(self.t), self.engine
        end_wall = self.end_mono()
        n_apply = int(np.searchsorted(self.t, self.w.t_end_s + 1e-9, side="right"))  # steps inside the window
        i = 1
        while not self._stop.is_set():
            now = time.monotonic()
            if self._tasks and now >= self._tasks[0][0]:
                with self._tasks_lock:
                    _, _, fn = heapq.heappop(self._tasks)
                self.doing = "a live injection's task"
                fn()
                continue
            if i < n_apply and now >= self.wall(i):   # due routes first: feeding can wait
                self.doing = f"applying the routes of step {self.w.k0 + i} (t = {self.t[i]:g} s)"
                self._apply(i, engine)
                i += 1
                continue
            may_feed = i >= n_apply or self.wall(i) - now > FEED_GUARD_S     # never in front of a step
            if may_feed and self._work:                                      # one engine call at a time
                self.doing = f"feeding the link engines the steps up to {self.w.k0 + self._fed - 1}"
                self._work.popleft()()
                continue
            if may_feed and engine and self._fed < S and self.wall(self._fed) < now + LOOKAHEAD_S:
                self.doing = f"preparing the link engines' feed from step {self.w.k0 + self._fed}"
                self._feed(self._fed, self._batch_end(self._fed))
                continue
            if may_feed and self._prep:                                      # big steps' routes, ahead
                self.doing = "putting a big step's routes in the idle tables"
                t = time.perf_counter()
                more = self._prep[0]()
                self._prep_since_ms += (time.perf_counter() - t) * 1e3
                if not more:
                    self._prep.popleft()
                continue
            if i >= n_apply and now >= end_wall:
                self.doing = "done"
                return
            nxt = self.wall(i) if i < n_apply else end_wall
            if may_feed and engine and self._fed < S:
                nxt = min(nxt, self.wall(self._fed) - LOOKAHEAD_S)
            if self._tasks:
                nxt = min(nxt, self._tasks[0][0])
            self.doing = "waiting for the next step"
            if nxt - now <= SPIN_S:
                time.sleep(0)       # spin to the instant, letting the process's other threads run
                continue
            self._wake.wait(min(nxt - now - SPIN_S, 0.2))
            self._wake.clear()

    def _apply(self, i: int, engine: bool) -> None:
        k = self.w.k0 + i
        t_start = time.monotonic()
        link_updates = len(self._changed(i)) if engine else self._kernel_step(i)
        n_routes = self.forwarding.apply(k)
        self.applied_k = k
        done = self.forwarding.routes_in_force_at if n_routes else time.monotonic()
        sent = getattr(self.forwarding, "last_apply", {})
        due = self.wall(i)
        if i + 1 < len(self.t):
            self.forwarding.stage(k + 1, self.wall(i + 1))   # pack the next step's changes now, send at its instant
            self._prepare_ahead(i)
        fed = self._fed_at.get(i)
        wait_ns = _cpu_wait_ns()
        cpu_wait_ms = (wait_ns - self._wait_ns) / 1e6 if wait_ns is not None and self._wait_ns is not None else np.nan
        self._wait_ns = wait_ns
        self.log.append((k, float(self.t[i]), due - self.origin, done - self.origin, (done - due) * 1e3,
                         n_routes, link_updates, (due - fed) * 1e3 if fed is not None else np.nan,
                         sent.get("namespaces", np.nan), (t_start - due) * 1e3, sent.get("send_ms", np.nan),
                         sent.get("ack_ms", np.nan), self._feed_since_ms, cpu_wait_ms,
                         sent.get("sender_namespaces", 0), np.nan, sent.get("switched_namespaces", 0),
                         self._prep_since_ms))
        self._feed_since_ms = 0.0
        self._prep_since_ms = 0.0

    def _prepare_ahead(self, i: int) -> None:
        """Queue the preparation of big steps up to PREPARE_S (wall) after window step i."""
        prep = getattr(self.forwarding, "prepare_big_step", None)
        if prep is None:
            return
        last = min(len(self.t) - 1, i + int(np.ceil(PREPARE_S / max(self.clock.scale * self._step_s(), 1e-9))))
        while self._prepared < last:
            if self._prep_wait is not None and self.applied_k < self._prep_wait:
                break   # one big step at a time: the next one's idle tables are the ones this one leaves
            self._prepared += 1
            k = self.w.k0 + self._prepared
            work = prep(k)
            if work is not None:
                self._prep.append(work)
                self._prep_wait = k

    def _changed(self, i: int) -> np.ndarray:
        s = self.states
        return np.nonzero((s.up[i] != s.up[i - 1]) | (s.rate_mbps[i] != s.rate_mbps[i - 1])
                          | (s.loss_pct[i] != s.loss_pct[i - 1]))[0]

    def _feed(self, ia: int, ib: int, now: bool = False) -> None:
        """Queue window steps [ia, ib) for the engine: delay points of the links that move, and
        rate/loss/up changes scheduled at their steps' instants. The loop sends them one small
        engine call at a time between route steps (a whole feed of thousands of links takes
        tens of ms); `now` sends them at once."""
        s, K, links = self.states, self.clock.dilation, self.links
        lo = max(ia - 1, 0)
        d = s.delay_ms[lo:ib]
        moving = np.nonzero((d != d[:1]).any(axis=0))[0] if ia > 0 else np.arange(d.shape[1])
        ids = self.link_ids
        tt = self.t[ia:ib].tolist()
        chunk = CONTROL_CHUNK_LINKS
        work = []
        # each chunk is packed when its turn comes (packing a whole feed of Starlink's links takes
        # tens of ms, which must not sit in front of a route step)
        def delay_points(cols) -> None:
            block = (s.delay_ms[ia:ib, cols] * K).T.tolist()
            self._timed(links.set_delay_points, {ids[j]: list(zip(tt, block[c])) for c, j in enumerate(cols)})

        def params(i: int, cols) -> None:
            upd = {ids[j]: link_params(s, i, j, K, only=("rate_mbps", "loss_pct", "up", "queue_bytes")) for j in cols}
            self._timed(links.set_params, upd, float(self.t[i]))

        for c0 in range(0, len(moving), chunk):
            work.append(lambda cols=moving[c0:c0 + chunk]: delay_points(cols))
        for i in range(max(ia, 1), ib):
            changed = self._changed(i)
            for c0 in range(0, len(changed), chunk):
                work.append(lambda i=i, cols=changed[c0:c0 + chunk]: params(i, cols))
        def done() -> None:   # when the engine had all of it
            stamp = time.monotonic()
            for i in range(ia, ib):
                self._fed_at[i] = stamp
        work.append(done)
        if now:
            for w in work:
                w()
        else:
            self._work.extend(work)
        self._fed = ib

    def _timed(self, fn, *args) -> None:
        t = time.perf_counter()
        fn(*args)
        ms = (time.perf_counter() - t) * 1e3
        self.feed_ms.append(ms)
        self._feed_since_ms += ms

    def _kernel_step(self, i: int) -> int:
        s, ids = self.states, self.link_ids
        changed = np.union1d(self._changed(i), np.nonzero(s.delay_ms[i] != s.delay_ms[i - 1])[0])
        if len(changed):
            self.links.set_params({ids[j]: link_params(s, i, j, self.clock.dilation,
                                                       only=("delay_ms", "rate_mbps", "loss_pct", "up"))
                                 for j in changed})
        return int(len(changed))

    def apply_log(self) -> pd.DataFrame:
        """One row per step after the first: step, t_s, due_s and applied_s (wall seconds since
        the window's start), lag_ms (routes applied after their instant), routes (entries
        changed), link_updates (links whose rate/loss/up changed), link_lead_ms (how long before
        its instant the engine had the step's link state; NaN for the kernel backend), and where
        a step's lag went: namespaces (nodes whose routes changed), start_late_ms (the player
        began the step this late: it was busy or not scheduled), send_ms (the netlink sends),
        ack_ms (reading the kernel's acknowledgements, after the routes were in force),
        feed_ms (time feeding the engines since the previous step), cpu_wait_ms (time the
        player's thread waited for a CPU since the previous step, from the kernel's schedstat;
        NaN where the kernel has none), engine_namespaces (nodes whose changes a link engine
        sent at the same instant, on its own CPU; forwarding.use_senders) and engine_done_ms
        (when, after the instant, the engine had sent them; applied_s and lag_ms count the
        later of the two), switched_namespaces (at a big step: namespaces that switched to the
        routing table prepared ahead, one request each, instead of sending their changes) and
        prep_ms (time putting big steps' routes in those tables since the previous step). All
        wall milliseconds."""
        log = pd.DataFrame(self.log, columns=APPLY_COLUMNS)
        sl = self.forwarding.sender_log()
        if len(sl) and len(log):
            done = sl.groupby("step")["done"].max()
            at = log["step"].map(done)
            has = at.notna()
            engine_done_s = at[has] - self.origin                   # seconds since the window's start
            log.loc[has, "engine_done_ms"] = (engine_done_s - log.loc[has, "due_s"]) * 1e3
            log.loc[has, "applied_s"] = np.maximum(log.loc[has, "applied_s"], engine_done_s)
            log.loc[has, "lag_ms"] = (log.loc[has, "applied_s"] - log.loc[has, "due_s"]) * 1e3
        return log
