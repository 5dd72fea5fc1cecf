"""One emulation spread over several hosts, on Dask distributed (the coordinator's side).

    with ClusterEmulation(plan, "tcp://10.0.0.1:8786", duration_s=30) as em:
        em.build()
        em.start()
        print(em["w01-02"].cmd("ip route"))     # a node on any host
        em.wait()

A Dask scheduler and one Dask worker per emulation host (root) carry membership, placement, RPC
and failure detection. The coordinator (this process) plans, partitions the nodes over the
hosts (netemu.plan.partition, or a given placement), places one HostAgent actor on each host's
worker, measures the hosts' clock offsets, ships each host its slice with the whole window's
schedule (so every link update and route change is on its host long before its instant), starts
them all at one shared instant, watches them, and gathers counters and apply logs.

Cut links (ends on two hosts) are carried by the link engines' UDP wire, timed by the receiving
engine at the frame's departure instant in the shared time base (see netemu.emulate.engine).

Failure: the coordinator heartbeats every host; a host that does not answer within
`FAIL_AFTER_S` (its worker gone, or its player failed) ends the run: every other host removes
everything of the run, and `wait()` raises EmulationError naming the lost host.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import EmulationError
from ..plan.partition import partition
from ..plan.routing import next_hop_changes
from .addressing import address_plan
from .playback import scope_nodes, window

__all__ = ["ClusterEmulation", "NodeProxy", "connect", "measure_offsets", "FAIL_AFTER_S"]

HEARTBEAT_S = 0.5
FAIL_AFTER_S = 3.0       # a host silent this long is lost
CALL_TIMEOUT_S = 120.0


def connect(scheduler: str, timeout_s: float = 15.0):
    """A Dask client of the scheduler at `scheduler` (e.g. tcp://10.0.0.1:8786)."""
    try:
        from distributed import Client
    except ImportError as e:
        raise EmulationError(f"Dask distributed is missing ({e}); install it with `pip install distributed`") from None
    try:
        return Client(scheduler, timeout=timeout_s, set_as_default=True, direct_to_workers=True)
    except (OSError, TimeoutError) as e:
        raise EmulationError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None


def workers_by_name(client) -> dict[str, dict]:
    """The scheduler's workers by name: address and host (its IP, where its wire binds).

    Asked of the scheduler itself, not through `client.scheduler_info()`: that returns the
    client's cached identity, which its periodic refresh (every 2 s) overwrites with a copy
    listing no workers, so a read racing the refresh saw every host gone."""
    kw = {"n_workers": -1} if _identity_takes_n_workers() else {}
    info = client.sync(client.scheduler.identity, **kw)["workers"]
    out = {}
    for addr, w in info.items():
        out[str(w.get("name", addr))] = {"address": addr, "ip": addr.split("://")[-1].rsplit(":", 1)[0]}
    return dict(sorted(out.items()))


def _identity_takes_n_workers() -> bool:
    """Whether the scheduler's `identity` takes `n_workers` (newer Dask lists only that many
    workers unless told -1; older ones list all and refuse the keyword). Client and scheduler run
    the same `distributed`, as Dask requires."""
    import inspect
    from distributed.scheduler import Scheduler
    return "n_workers" in inspect.signature(Scheduler.identity).parameters


# Round trips per host when measuring clock offsets: the bound is half the shortest, and on a
# busy machine most Dask round trips take milliseconds (8 rounds left bounds of 1-2 ms there).
OFFSET_ROUNDS = 32


def measure_offsets(agents: dict, rounds: int = OFFSET_ROUNDS) -> dict[str, dict]:
    """Each host's clock minus this one's (Cristian's method through the agents' `now`): per
    host, the offset of the round trip with the shortest RTT, and its bound (half that RTT)."""
    out = {}
    for host, agent in agents.items():
        best = None
        for _ in range(rounds):
            t0 = time.time()
            th = agent.now().result(timeout=10)
            t1 = time.time()
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, th - (t0 + t1) / 2)
        out[host] = {"offset_ms": best[1] * 1e3, "bound_ms": best[0] / 2 * 1e3}
    return out


@dataclass
class NodeProxy:
    """A node of a cluster run, wherever it lives: `cmd` runs in its namespace on its host."""

    name: str
    host: str
    loopback: str
    _agent: object = field(repr=False)

    def cmd(self, *args, timeout_s: float = 30.0) -> str:
        return self._agent.cmd(self.name, " ".join(str(a) for a in args), timeout_s).result(timeout=timeout_s + 10)

    def IP(self) -> str:
        return self.loopback


class ClusterEmulation:
    """A plan's window emulated over the hosts (Dask workers) of the scheduler at `scheduler`.

    `hosts`: worker names to use, in host order (default: all, sorted by name); host 0 gets the
    ground stations. `placement`: node → host index (default: netemu.plan.partition).
    `correct_clocks`: apply the measured offsets (False trusts the clocks as they are).
    `clock_skew_s`: {host: seconds} added to those hosts' clocks (a test knob). `engine_rt`: the
    link engines run real-time (SCHED_FIFO) on their hosts; False where hosts share one machine's
    CPUs and carry traffic (the namespace lab), whose agents RT engines would starve."""

    def __init__(self, plan, scheduler, *, hosts: list[str] | None = None, start_s: float = 0.0,
                 duration_s: float | None = None, speed: float = 1.0, dilation: float = 1.0, mtu: int = 1500,
                 underlay_mtu: int = 1500, placement: dict[str, int] | None = None, correct_clocks: bool = True,
                 clock_skew_s: dict[str, float] | None = None, shards: int = 1, seed: int = 0,
                 lease_s: float = 10.0, calibrate: bool | tuple[float, float] = True, engine_rt: bool = True,
                 progress=None):
        self.plan, self.schedule = plan, plan.schedule
        self.client = connect(scheduler) if isinstance(scheduler, str) else scheduler
        self._own_client = isinstance(scheduler, str)
        workers = workers_by_name(self.client)
        names = hosts or list(workers)
        missing = [h for h in names if h not in workers]
        if missing or not names:
            raise EmulationError(f"hosts: {missing or 'none'} not among the scheduler's workers {sorted(workers)}")
        self.hosts, self.workers = list(names), {h: workers[h] for h in names}
        self.window = window(self.schedule.t_s, start_s, duration_s)
        self.speed, self.dilation, self.mtu, self.underlay_mtu = speed, dilation, mtu, underlay_mtu
        self.placement, self.correct_clocks = placement, correct_clocks
        self.clock_skew_s = clock_skew_s or {}
        self.shards, self.seed, self.lease_s, self.engine_rt = shards, seed, lease_s, engine_rt
        self.say = progress or (lambda msg: None)
        self.do_calibrate = calibrate
        self.calibration: dict[str, dict] = {}
        self.endpoints = tuple(plan.scenario.endpoints)
        from .netns import new_run_id
        self.run_id = new_run_id()
        self.agents: dict[str, object] = {}
        self.host_of: dict[str, str] = {}
        self.offsets: dict[str, dict] = {}
        self.built: dict[str, dict] = {}
        self.started: dict[str, dict] = {}
        self.failed = ""
        self.timings_s: dict[str, float] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._closed = False
        self._results: dict[str, dict] = {}
        self.teardown: dict[str, dict] = {}     # per host: what close() reported (teardown_s)

    # ------------------------------------------------------------------ build

    def build(self) -> "ClusterEmulation":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        from .hostagent import HostAgent
        t0 = time.perf_counter()
        sched, w = self.schedule, self.window
        nodes = scope_nodes(sched, self.plan.routes.routes, self.endpoints, w, "all")
        L = sched.links
        L = L[(L["step"] >= w.k0) & (L["step"] <= w.k1)]
        L = L[L["a"].isin(set(nodes)) & L["b"].isin(set(nodes))]
        loopbacks, table = address_plan(sched.nodes, L)
        self.link_table = table
        self.loopbacks = dict(zip(loopbacks["name"], loopbacks["loopback"]))
        place = self.placement or partition(self.plan, len(self.hosts)).host_of
        self.host_of = {n: self.hosts[int(place[n])] for n in nodes}
        self.node_names = list(nodes)
        next_hops = next_hop_changes(sched, self.endpoints, self.plan.scenario.routing.metric,
                                     self.plan.scenario.routing.ground_relay, steps=(w.k0, w.k1 + 1))
        # one actor per host, pinned to that host's worker
        futures = {h: self.client.submit(HostAgent, h, self.workers[h]["ip"], self.clock_skew_s.get(h, 0.0),
                                         self.lease_s, self.engine_rt, actor=True, workers=[self.workers[h]["address"]],
                                         allow_other_workers=False, pure=False)
                   for h in self.hosts}
        self.agents = {h: f.result(timeout=CALL_TIMEOUT_S) for h, f in futures.items()}
        self._start_monitor()
        self.offsets = measure_offsets(self.agents)
        self.wire_epoch_shared = time.time()      # cut-link departure instants count from here
        for h, a in self.agents.items():
            a.set_time_base(self.offsets[h]["offset_ms"] / 1e3 if self.correct_clocks else 0.0,
                            self.wire_epoch_shared).result(timeout=30)
        self.timings_s["agents"] = time.perf_counter() - t0
        base = {"run_id": self.run_id, "loopbacks": self.loopbacks, "link_table": table, "endpoints": self.endpoints,
                "mtu": self.mtu, "shards": self.shards, "seed": self.seed}
        calls = {h: a.build_nodes({**base, "nodes": [n for n in nodes if self.host_of[n] == h]})
                 for h, a in self.agents.items()}
        self.built = {h: self._result(h, c) for h, c in calls.items()}
        self.timings_s["nodes"] = time.perf_counter() - t0
        if self.do_calibrate is not False:
            # each host measures its own engines' overhead (True), or takes the given (hop, process) µs
            given = None if self.do_calibrate is True else tuple(self.do_calibrate)
            calls = {h: a.calibrate(given) for h, a in self.agents.items()}
            self.calibration = {h: self._result(h, c) for h, c in calls.items()}
            self.timings_s["calibration"] = time.perf_counter() - t0
        host_a = table["a"].map(self.host_of).to_numpy()
        host_b = table["b"].map(self.host_of).to_numpy()
        self.cut = table[host_a != host_b].assign(host_a=host_a[host_a != host_b], host_b=host_b[host_a != host_b])
        wire_id = {link: i for i, link in enumerate(table["link"])}
        calls = {}
        for h, a in self.agents.items():
            cut = []
            for r in self.cut.itertuples(index=False):
                if h in (r.host_a, r.host_b):
                    side, peer = ("a", r.host_b) if r.host_a == h else ("b", r.host_a)
                    cut.append({"link": r.link, "wire_id": wire_id[r.link], "side": side,
                                "peer_ip": self.workers[peer]["ip"], "peer_ports": self.built[peer]["ports"]})
            calls[h] = a.build_links({"schedule": sched, "window": w, "next_hops": next_hops, "cut": cut,
                                      "dilation": self.dilation, "speed": self.speed,
                                      "underlay_mtu": self.underlay_mtu})
        for h, c in calls.items():
            self.built[h].update(self._result(h, c))
        self.timings_s["build"] = time.perf_counter() - t0
        self.say(f"cluster: {len(nodes)} nodes on {len(self.hosts)} hosts, {len(table)} links of which "
                 f"{len(self.cut)} cut")

    def _result(self, host: str, future, timeout_s: float = CALL_TIMEOUT_S):
        try:
            return future.result(timeout=timeout_s)
        except Exception as e:
            if self.failed:
                raise EmulationError(self.failed) from None
            raise EmulationError(f"host {host} ({self.workers[host]['address']}): {type(e).__name__}: {e}") from None

    # ------------------------------------------------------------------ run

    def start(self, lead_s: float = 1.0) -> None:
        """Start every host at one shared instant, `lead_s` from now (the start messages travel
        meanwhile)."""
        self._check()
        origin = time.time() + lead_s
        calls = {h: a.start(origin) for h, a in self.agents.items()}
        self.started = {h: self._result(h, c) for h, c in calls.items()}
        self.origin_shared = origin
        late = [h for h, s in self.started.items() if s["lead_s"] < 0]
        if late:
            raise EmulationError(f"hosts {late} got the start after the shared start instant (lead {lead_s} s)")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the window's end on every host (raises EmulationError when a host is lost)."""
        end = time.time() + (timeout_s if timeout_s is not None else 1e9)
        while time.time() < end:
            self._check()
            states = self._states
            if states and all(s.get("finished") for s in states.values()):
                errs = [f"host {h}: {s['error']}" for h, s in states.items() if s.get("error")]
                if errs:
                    raise EmulationError("; ".join(errs))
                return True
            time.sleep(0.1)
        self._check()
        return False

    def __getitem__(self, name: str) -> NodeProxy:
        self._check()
        if name not in self.host_of:
            raise EmulationError(f"unknown node {name!r}")
        h = self.host_of[name]
        return NodeProxy(name, h, self.loopbacks[name], self.agents[h])

    def loopback(self, name: str) -> str:
        try:
            return self.loopbacks[name]
        except KeyError:
            raise EmulationError(f"unknown node {name!r}") from None

    def probe(self, src: str, dst: str, count: int = 50, interval_s: float = 0.02) -> pd.DataFrame:
        """ICMP echo RTTs from node `src` to node `dst`'s loopback: t_s (emulated send time),
        rtt_ms (NaN where lost), oracle_rtt_ms (the planner's) and in_stall (a link-engine stall
        on some host explains its error: playback.in_stall over `engine_stalls()`)."""
        from .playback import in_stall, oracle_rtt_ms
        self._check()
        h = self.host_of[src]
        r = self._result(h, self.agents[h].probe(src, self.loopbacks[dst], count, interval_s), 60 + count * interval_s)
        t = np.asarray(r["t_s"], float)
        rtt = np.array([np.nan if x is None else x for x in r["rtt_ms"]], float)
        df = pd.DataFrame({"t_s": t, "src": src, "dst": dst, "rtt_ms": rtt,
                           "oracle_rtt_ms": oracle_rtt_ms(self.schedule, self.plan.routes.routes, src, dst, t)})
        df["in_stall"] = in_stall(df, self.engine_stalls())
        return df.drop(columns=["src", "dst"])

    def engine_stalls(self) -> pd.DataFrame:
        """Every host's link-engine stalls so far: host, t_start_s, t_end_s (schedule s),
        duration_ms, links (HostAgent.stalls)."""
        self._check()
        calls = {h: a.stalls() for h, a in self.agents.items()}
        return pd.concat([self._result(h, c) for h, c in calls.items()], ignore_index=True)

    def one_way_ms(self, src: str, dst: str, count: int = 100, interval_s: float = 0.02,
                   port: int = 9977) -> pd.DataFrame:
        """UDP probes from node `src` to a probe server in node `dst` (each on its host): t_s,
        rtt_ms, fwd_ms and rev_ms (one-way delays: exact where the hosts share CLOCK_MONOTONIC,
        as namespace hosts on one machine do), oracle_one_way_ms (half the planner's RTT) and
        in_stall (a link-engine stall explains its round trip's error, as in `probe`)."""
        from .playback import in_stall, oracle_rtt_ms
        self._check()
        hs, hd = self.host_of[src], self.host_of[dst]
        self._result(hd, self.agents[hd].serve(dst, port, count * interval_s + 10))
        time.sleep(0.2)
        r = self._result(hs, self.agents[hs].udp_probe(src, self.loopbacks[dst], port, count, interval_s),
                         60 + count * interval_s)
        df = pd.DataFrame(r)
        t = df["t_s"].to_numpy(float)
        df["oracle_one_way_ms"] = oracle_rtt_ms(self.schedule, self.plan.routes.routes, src, dst, t) / 2
        df["in_stall"] = in_stall(df.assign(oracle_rtt_ms=2 * df["oracle_one_way_ms"]), self.engine_stalls())
        return df

    def host_clock(self, host: str):
        """The run's clock as host `host` plays it: its CLOCK_MONOTONIC instants (after start)."""
        from .clock import Clock
        w = self.window
        return Clock(w.t0_s, w.t_end_s, speed=self.speed, dilation=self.dilation).started_at(
            self.started[host]["origin_mono"])

    def spawn(self, node: str, tag: str, argv: list[str], files: dict[str, str]) -> int:
        """Start `argv` in node `node` on its host, in a work directory holding `files`
        (HostAgent.spawn); its pid there. `reap` ends them and brings their files back."""
        self._check()
        if node not in self.host_of:
            raise EmulationError(f"unknown node {node!r}")
        h = self.host_of[node]
        return self._result(h, self.agents[h].spawn(tag, node, list(argv), dict(files)))

    def reap(self, timeout_s: float = 10.0, terminate: bool = True) -> dict[str, dict]:
        """What every host spawned: tag -> host, returncode and files (name -> text)."""
        self._check()
        calls = {h: a.reap(timeout_s, terminate) for h, a in self.agents.items()}
        out = {}
        for h, c in calls.items():
            for tag, r in self._result(h, c, timeout_s + CALL_TIMEOUT_S).items():
                out[tag] = {"host": h, **r}
        return out

    # ------------------------------------------------------------------ results

    def results(self) -> dict:
        """Per host results gathered: counters (with host), apply log (with host), engines."""
        if not self._results or not self._closed:
            calls = {h: a.results() for h, a in self.agents.items()}
            self._results = {h: self._result(h, c) for h, c in calls.items()}
        return self._results

    def counters(self) -> pd.DataFrame:
        return pd.concat([r["counters"] for r in self.results().values()], ignore_index=True)

    def link_load(self) -> tuple[pd.DataFrame, dict]:
        """Every link direction's load over the run, every 100 ms of emulated time (the columns of
        emulate.linkload.link_load, and `host`): a cut link's two halves joined into one row per
        sample (linkload.merge_cut_links); and each host's sampler stats. Ends the sampling."""
        from .linkload import merge_cut_links
        calls = {h: a.link_load() for h, a in self.agents.items()}
        got = {h: self._result(h, c) for h, c in calls.items()}
        tables = [g["table"] for g in got.values() if len(g["table"])]
        senders = {}
        for r in self.cut.itertuples(index=False):
            senders[(str(r.link), "ab")] = r.host_a      # a→b frames are admitted on a's host
            senders[(str(r.link), "ba")] = r.host_b
        merged = merge_cut_links(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(), senders, 0.1)
        return merged, {h: g["stats"] for h, g in got.items()}

    def apply_log(self) -> pd.DataFrame:
        return pd.concat([r["apply"] for r in self.results().values()], ignore_index=True)

    def acknowledged(self) -> dict[str, dict]:
        """Per host, from its latest heartbeat: the steps it has applied so far, the latest one
        and its lag after its instant (ms)."""
        return {h: {k: st.get(k) for k in ("applied_steps", "last_step", "last_lag_ms")}
                for h, st in self._states.items()}

    def shortest_cut_ms(self) -> float:
        """The shortest emulated delay (ms, dilated) any cut link has over the window (NaN: none)."""
        if not len(self.cut):
            return float("nan")
        L = self.schedule.links
        w = self.window
        L = L[(L["step"] >= w.k0) & (L["step"] <= w.k1)]
        key = set(zip(self.cut["a"].astype(str), self.cut["b"].astype(str)))
        m = np.fromiter(((a, b) in key for a, b in zip(L["a"].astype(str), L["b"].astype(str))), bool, len(L))
        return float(L["delay_ms"].to_numpy()[m].min()) * self.dilation if m.any() else float("nan")

    def apply_skew(self) -> pd.DataFrame:
        """Per step: the spread of the hosts' applied instants (shared time base; ms) and the
        latest host's lag after the step's instant."""
        log = self.apply_log()
        g = log.groupby("step")
        return pd.DataFrame({"skew_ms": (g["applied_shared_s"].max() - g["applied_shared_s"].min()) * 1e3,
                             "max_lag_ms": g["lag_ms"].max(), "routes": g["routes"].sum()}).reset_index()

    def cut_link_lateness(self) -> pd.DataFrame:
        """Per cut link and direction: frames received over the wire and how many came after
        their instant (late), from the receiving host's counters."""
        c = self.counters()
        c = c[c["link"].isin(set(self.cut["link"])) & (c["wire_rx"] > 0)]
        return c[["link", "direction", "host", "wire_rx", "wire_late", "wire_max_late_ms"]].reset_index(drop=True)

    def lateness_warnings(self) -> list[str]:
        """One line per cut link whose frames arrived after their instant (the hosts' network is
        slower than that link's delay, or the clocks disagree)."""
        out = []
        for r in self.cut_link_lateness().itertuples(index=False):
            if r.wire_late:
                out.append(f"cut link {r.link} ({r.direction}, into host {r.host}): {r.wire_late} of {r.wire_rx} "
                           f"frames arrived after their departure instant (up to {r.wire_max_late_ms:.3f} ms): "
                           "their delay there is longer than emulated")
        return out

    # ------------------------------------------------------------------ failure

    _states: dict = {}

    def _start_monitor(self) -> None:
        self._states = {}
        self._monitor = threading.Thread(target=self._watch, name="netemu-cluster-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        pending: dict[str, tuple[object, float]] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for h, a in self.agents.items():
                p = pending.get(h)
                if p is None:
                    try:
                        pending[h] = (a.heartbeat(), now)
                    except Exception as e:      # Dask knows the actor's worker is gone
                        self._fail(h, f"{type(e).__name__}: {e}")
                        return
                    continue
                fut, sent = p
                if fut.done():
                    try:
                        st = fut.result(timeout=5)
                    except Exception as e:
                        self._fail(h, f"{type(e).__name__}: {e}")
                        return
                    self._states = {**self._states, h: st}
                    if st.get("closed") and not self._closed:
                        self._fail(h, "it tore its run down (it lost the coordinator's heartbeats)")
                        return
                    pending.pop(h)
                elif now - sent > FAIL_AFTER_S:
                    self._fail(h, f"no answer for {FAIL_AFTER_S:g} s")
                    return
            if not self._alive_in_scheduler():
                return
            self._stop.wait(HEARTBEAT_S)

    def _alive_in_scheduler(self) -> bool:
        try:
            present = set(workers_by_name(self.client))
        except Exception:
            return True
        gone = [h for h in self.hosts if h not in present]
        if gone:
            self._fail(gone[0], "its Dask worker left the scheduler")
            return False
        return True

    def _fail(self, host: str, why: str) -> None:
        if self._closed or self.failed:
            return
        self.failed = (f"cluster host {host} ({self.workers[host]['address']}) was lost: {why}; "
                       "the run was ended and the other hosts removed everything of it")
        self._teardown(skip={host})

    def _check(self) -> None:
        if self.failed:
            raise EmulationError(self.failed)

    # ------------------------------------------------------------------ teardown

    def _teardown(self, skip: set = frozenset()) -> None:
        calls = {}
        for h, a in self.agents.items():
            if h in skip:
                continue
            try:
                calls[h] = a.close()
            except Exception:
                pass
        for h, c in calls.items():
            try:
                self.teardown[h] = c.result(timeout=30)
            except Exception:
                pass

    def close(self) -> None:
        """Tear down every host's part of the run (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(40)
        if not self.failed:
            self._teardown()
        self.agents.clear()
        if self._own_client:
            try:
                self.client.close()
            except Exception:
                pass

    def __enter__(self) -> "ClusterEmulation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
