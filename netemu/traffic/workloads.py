"""AI workloads: what each node's agent runs (specs), and the job tables made from their event
logs (pure; the agents themselves are `netemu.traffic.agent`, started by `netemu.traffic.launcher`).

Time: a run plays scenario time t_s from the window's start at `scale` wall seconds per emulated
second, and the network at `dilation` wall seconds per network second (delays × K, rates / K).
Workload instants (start_s, stop_s, arrivals) are scenario times; workload durations (service
time, decode rate, inter-arrival gaps, intervals) are network times. Specs carry both already
converted to CLOCK_MONOTONIC instants and wall seconds; job tables convert back: instants to
t_s, durations to emulated milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..emulate.clock import Clock
from ..emulate.playback import oracle_rtt_ms
from ..plan.scenario import ComputeGroup, Scenario, Workload, group_node_names

__all__ = ["Clock", "PORT_BASE", "ENTRY_PORT_BASE", "agent_specs", "inference_jobs", "read_events", "jobs_table",
           "throughput_table", "summarise", "allreduce_ideal_ms", "JOB_COLUMNS", "compute_group_of",
           "dispatch_setup", "power_rows"]

PORT_BASE = 20000          # workload i listens on PORT_BASE + i
ENTRY_PORT_BASE = 30000    # and its cluster's entry node (dispatch) on ENTRY_PORT_BASE + i
PROGRESS_S = 0.1           # network seconds between progress records of a transfer
UDP_PATIENCE_S = 2.0       # network seconds a UDP transfer waits for an answer before giving up

JOB_COLUMNS = ["workload", "kind", "job", "client", "server", "t_start_s", "t_end_s", "status",
               "bytes_expected", "bytes_delivered", "ttfb_ms", "completion_ms", "goodput_mbps",
               "ideal_ms", "ratio_to_ideal", "queue_ms", "prefill_ms", "decode_ms", "network_ms", "eclipse"]
"""Inference requests served by a queueing server (a [[compute]] model) also have `queue_ms`
(waiting for a batch slot), `prefill_ms` and `decode_ms` (the server's model), `network_ms`
(the rest of the completion time: the request's and the response's way through the network,
the entry node's hop included), `server` (the satellite that served it) and `eclipse` (that
satellite in Earth's shadow, sunlit fraction < 0.5, at the request's start, by the plan);
status `refused` when the server's queue was full."""


def compute_group_of(scenario: Scenario, node: str) -> ComputeGroup | None:
    """The [[compute]] model of the satellite `node` (None if its group has none)."""
    for g in scenario.satellites:
        for c in scenario.compute:
            if c.group == g.name and node in group_node_names(g):
                return c
    return None


def dispatch_setup(plan, w: Workload, t_s: float) -> tuple[str, list[str], list[int]]:
    """Entry node, candidate servers and their hops from the entry for dispatch workload `w`.

    Candidates: every satellite of the server's compute group. Entry: the candidate nearest
    the ground path, i.e. with the shortest planned path delay from the workload's first
    client at `t_s` (the run's start of the workload); it stays the entry for the run. Hops:
    links on the planned path entry → candidate at `t_s` (0 for the entry itself; a candidate
    the entry cannot reach gets a large count, 1,000)."""
    group = next(g for g in plan.scenario.satellites if w.server in group_node_names(g))
    cands = [n for n in group_node_names(group) if n in set(plan.scenario.endpoints)]
    when = np.array([t_s])
    delay = [float(oracle_rtt_ms(plan.schedule, plan.routes.routes, w.clients[0], c, when)[0]) for c in cands]
    delay = [d if np.isfinite(d) else np.inf for d in delay]
    entry = cands[int(np.argmin(delay))]
    hops = []
    for c in cands:
        path = [entry] if c == entry else plan.routes.path_at(entry, c, t_s)
        hops.append(len(path) - 1 if path else 1000)
    return entry, cands, hops


def power_rows(power: pd.DataFrame, node: str, start_s: float, stop_s: float) -> pd.DataFrame:
    """`node`'s rows of the plan's power table that are in force from `start_s` to `stop_s`:
    the last step at or before `start_s` and every later step up to `stop_s`."""
    p = power[power["node"].astype(str) == node].sort_values("t_s")
    t = p["t_s"].to_numpy(float)
    k0 = max(0, int(np.searchsorted(t, start_s, side="right")) - 1)
    k1 = int(np.searchsorted(t, stop_s, side="right"))
    return p.iloc[k0:max(k1, k0 + 1)]


def inference_jobs(w: Workload, client_index: int, start_s: float, stop_s: float,
                   speed: float = 1.0) -> pd.DataFrame:
    """Requests of one inference client: `job, t_s, request_bytes, prompt_tokens, output_tokens,
    response_bytes_per_token`. Poisson arrivals at `rate_per_s` per network second (gaps in
    scenario time are network gaps × speed); token counts lognormal around their medians,
    seeded by (seed, client index)."""
    rng = np.random.default_rng([w.seed, client_index])
    span_s = stop_s - start_s
    rate = w.p("rate_per_s") / speed                 # arrivals per scenario second
    n_guess = int(rate * span_s * 1.5 + 20)
    t = start_s + np.cumsum(rng.exponential(1 / rate, n_guess))
    while t[-1] < stop_s:                            # rare: draw more
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1 / rate, n_guess))])
    t = t[t < stop_s]
    n = len(t)
    cap = w.p("max_tokens")

    def tokens(median: float, sigma: float) -> np.ndarray:
        x = np.exp(rng.normal(np.log(median), sigma, n)) if sigma > 0 else np.full(n, median)
        return np.clip(np.round(x), 1, cap).astype(np.int64)

    prompt = tokens(w.p("prompt_tokens"), w.p("prompt_sigma"))
    output = tokens(w.p("output_tokens"), w.p("output_sigma"))
    if w.p("image_bytes") > 0:
        req = np.full(n, w.p("image_bytes"), np.int64) + w.p("request_overhead_bytes")
    else:
        req = np.round(prompt * w.p("request_bytes_per_token")).astype(np.int64) + w.p("request_overhead_bytes")
    return pd.DataFrame({"job": np.arange(n), "t_s": t, "request_bytes": req, "prompt_tokens": prompt,
                         "output_tokens": output,
                         "response_bytes_per_token": int(round(w.p("response_bytes_per_token")))})


def agent_specs(workloads: tuple[Workload, ...], clock: Clock, loopback: Callable[[str], str],
                log_dir: Path, speed: float = 1.0, plan=None) -> dict[str, dict]:
    """The spec of every node's agent (`netemu.traffic.agent`): node -> {node, address, log, roles}.
    Nodes without a role get no agent.

    With `plan` and an inference server whose satellite has a [[compute]] model (the plan has
    power), the server queues (batch slots from the plan's active accelerators over the run);
    with the workload's `dispatch` policy every satellite of the server's compute group serves
    and the group's entry node (`dispatch_setup`) relays the clients' requests to them."""
    specs: dict[str, dict] = {}
    K = clock.dilation

    def roles(node: str) -> list:
        if node not in specs:
            specs[node] = {"node": node, "address": loopback(node), "log": str(log_dir / f"{node}.jsonl"),
                           "roles": []}
        return specs[node]["roles"]

    for i, w in enumerate(workloads):
        port = PORT_BASE + i
        start_s, stop_s = clock.clip(w.start_s, w.stop_s)
        if stop_s <= start_s:
            continue
        if w.kind == "inference":
            model = compute_group_of(plan.scenario, w.server) if plan is not None and plan.power is not None else None
            policy = w.p("dispatch") if model is not None else "none"
            if policy != "none":
                entry, servers, hops = dispatch_setup(plan, w, start_s)
            else:
                entry, servers, hops = None, [w.server], [0]
            table = {}
            for node in servers:
                if model is not None:
                    rows = power_rows(plan.power, node, start_s, stop_s)
                    table[node] = rows
                role = {"role": "inference-server", "workload": w.name, "port": port,
                        "service_s": w.p("service_s") * K, "token_interval_s": K / w.p("tokens_per_s")}
                if model is not None:
                    slots = rows["active_accelerators"].to_numpy(np.int64) * model.sequences_per_accelerator
                    role["queue"] = {"prefill_tokens_per_s": model.prefill_tokens_per_s_per_accelerator / K,
                                     "decode_tokens_per_s": model.decode_tokens_per_s_per_sequence / K,
                                     "queue_limit": w.p("queue_limit"),
                                     "slots": [[clock.mono(t), int(n)] for t, n in zip(rows["t_s"], slots)]}
                roles(node).append(role)
            target, target_port = loopback(w.server), port
            if entry is not None:
                roles(entry).append({"role": "inference-entry", "workload": w.name, "policy": policy,
                                     "port": ENTRY_PORT_BASE + i, "server_port": port, "servers": [
                                         {"node": n, "address": loopback(n), "hops": h, "table": [
                                             [clock.mono(t), int(a) * model.sequences_per_accelerator, float(f), float(c)]
                                             for t, a, f, c in zip(table[n]["t_s"], table[n]["active_accelerators"],
                                                                   table[n]["sunlit"], table[n]["soc_pct"])]}
                                         for n, h in zip(servers, hops)]})
                target, target_port = loopback(entry), ENTRY_PORT_BASE + i
            for ci, c in enumerate(w.clients):
                jobs = inference_jobs(w, ci, start_s, stop_s, speed)
                roles(c).append({"role": "inference-client", "workload": w.name, "server": target,
                                 "port": target_port, "node": c, "queued": model is not None,
                                 "jobs": [[int(j), clock.mono(t), int(rb), int(ot), int(bpt), int(pt)]
                                          for j, t, rb, ot, bpt, pt in zip(
                                     jobs["job"], jobs["t_s"], jobs["request_bytes"], jobs["output_tokens"],
                                     jobs["response_bytes_per_token"], jobs["prompt_tokens"])]})
        elif w.kind in ("upload", "checkpoint"):
            roles(w.server).append({"role": "transfer-server", "workload": w.name, "port": port,
                                    "progress_s": PROGRESS_S * K, "udp": w.transport == "udp"})
            if w.kind == "upload":
                size, direction, count = int(round(w.p("file_mb") * 1e6)), "up", w.p("files")
            else:
                size, direction, count = int(round(w.p("size_gb") * 1e9)), w.p("direction"), w.p("count")
            for c in w.clients:
                roles(c).append({"role": "transfer-client", "workload": w.name, "server": loopback(w.server),
                                 "port": port, "direction": direction, "size_bytes": size, "count": count,
                                 "interval_s": w.p("interval_s") * K, "start_mono": clock.mono(start_s),
                                 "stop_mono": clock.mono(stop_s), "progress_s": PROGRESS_S * K,
                                 "transport": w.transport, "rate_bits_per_s": w.p("rate_mbps") * 1e6 / K,
                                 "patience_s": UDP_PATIENCE_S * K})
        elif w.kind == "allreduce":
            k = len(w.clients)
            for r, node in enumerate(w.clients):
                roles(node).append({"role": "allreduce-rank", "workload": w.name, "port": port, "rank": r,
                                    "ranks": k, "next": loopback(w.clients[(r + 1) % k]),
                                    "gradient_bytes": int(round(w.p("gradient_mb") * 1e6)),
                                    "steps": w.p("steps"), "compute_s": w.p("compute_s") * K,
                                    "start_mono": clock.mono(start_s), "dilation": K})
    return specs


# --------------------------------------------------------------------------- analysis


def read_events(paths) -> pd.DataFrame:
    """Every agent's event log (JSON lines) in one table: `t` (monotonic s), `ev`, `wl`, `node`,
    `job` and the events' fields. A truncated last line (agent killed mid-write) is skipped."""
    rows = []
    for p in paths:
        with open(p) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    df = pd.DataFrame(rows)
    for col in ("t", "ev", "wl", "node", "job"):
        if col not in df:
            df[col] = pd.Series(dtype=float if col in ("t", "job") else object)
    return df


def _first(ev: pd.DataFrame, name: str, keys: list[str], cols: list[str]) -> pd.DataFrame:
    e = ev[ev["ev"] == name]
    return e.groupby(keys, as_index=False)[cols].first() if len(e) else pd.DataFrame(columns=keys + cols)


def jobs_table(events: pd.DataFrame, workloads: tuple[Workload, ...], clock: Clock,
               ideal_ms: Callable[[Workload, float], float] | None = None,
               power: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per request (inference), transfer (upload, checkpoint) or step (allreduce), with
    the columns of `JOB_COLUMNS`: times in scenario seconds, durations in emulated ms, rates in
    emulated Mbit/s. `status` is `done`, `short` (ended with fewer bytes than expected), `error`,
    `refused` (a queueing server's queue was full) or `incomplete` (still running at the end).
    `ideal_ms(workload, t_s)` gives the all-reduce ideal step time; `power` (the plan's power
    table) whether the satellite serving a request was in eclipse."""
    K = clock.dilation
    out = []
    ev = events.copy()
    ev["job"] = pd.to_numeric(ev["job"], errors="coerce")
    # servers' and entries' events name the requesting client: keep that apart from `client`
    ev = ev.rename(columns={"client": "req_client", "server": "to_server"})
    for w in workloads:
        e = ev[ev["wl"] == w.name]
        if w.kind == "allreduce":
            out.append(_allreduce_rows(w, e, clock, ideal_ms))
            continue
        client_side = e[e["node"].isin(w.clients)]
        starts = client_side[client_side["ev"] == "start"].rename(columns={"node": "client", "t": "t_start"})
        if starts.empty:
            continue
        keys = ["client", "job"]
        cs = client_side.rename(columns={"node": "client"})
        df = starts[keys + ["t_start"] + [c for c in ("request_bytes", "expected", "bytes") if c in starts]]
        # transfers' `done` also carries the receiver's last-byte time (one clock for all nodes)
        done_cols = ["t", "bytes"] + (["t_received"] if w.kind != "inference" else [])
        done = _first(cs, "done", keys, done_cols).rename(columns={"t": "t_done", "bytes": "done_bytes"})
        err = _first(cs, "error", keys, ["what"])
        df = df.merge(done, on=keys, how="left").merge(err, on=keys, how="left")
        server = pd.Series(w.server, index=df.index, dtype=object)
        parts = {k: pd.Series(np.nan, index=df.index) for k in ("queue_ms", "prefill_ms", "decode_ms")}
        refused = pd.Series(False, index=df.index)
        if w.kind == "inference":
            fb = _first(cs, "first_byte", keys, ["t"]).rename(columns={"t": "t_first"})
            df = df.merge(fb, on=keys, how="left")
            # the queueing servers' records, and where the entry sent each request
            named = e[e["req_client"].notna()].rename(columns={"req_client": "client"}) if "req_client" in e \
                else e.iloc[:0]
            srv = named[named["ev"].isin(["served", "refused"])]
            cols = [c for c in ("queue_s", "prefill_s", "decode_s") if c in srv]
            got = srv.groupby(keys, as_index=False).agg(
                served_by=("node", "first"), refused=("ev", lambda x: (x == "refused").any()),
                **{c: (c, "first") for c in cols}) if len(srv) else pd.DataFrame(columns=keys + ["served_by", "refused"])
            disp = named[named["ev"] == "dispatch"]
            sent = (disp.groupby(keys, as_index=False)["to_server"].first() if len(disp)
                    else pd.DataFrame(columns=keys + ["to_server"]))
            m = df[keys].merge(got, on=keys, how="left").merge(sent, on=keys, how="left")
            server = m["served_by"].where(m["served_by"].notna(), m["to_server"]).where(
                lambda x: x.notna(), w.server).astype(object)
            refused = m["refused"].where(m["refused"].notna(), False).astype(bool)
            for c in cols:
                parts[c.replace("_s", "_ms")] = m[c].astype(float) / K * 1e3
            expected = df["expected"].astype(float)
            delivered = df["done_bytes"].astype(float)
            t_end = df["t_done"].astype(float)
            ttfb_ms = (df["t_first"].astype(float) - df["t_start"]) / K * 1e3
        else:
            expected = df["bytes"].astype(float)
            t_end, delivered = df["t_received"].astype(float), df["done_bytes"].astype(float)
            ttfb_ms = pd.Series(np.nan, index=df.index)
        completion_ms = (t_end - df["t_start"]) / K * 1e3
        status = np.select([df["t_done"].notna() & (delivered == expected), df["t_done"].notna(),
                            refused.to_numpy(), df["what"].notna()], ["done", "short", "refused", "error"], "incomplete")
        goodput = np.where(status == "done", delivered * 8 / (completion_ms / 1e3) / 1e6, np.nan)
        t_start_s = clock.t_s(df["t_start"])
        network_ms = completion_ms - parts["queue_ms"] - parts["prefill_ms"] - parts["decode_ms"]
        out.append(pd.DataFrame({
            "workload": w.name, "kind": w.kind, "job": df["client"] + "#" + df["job"].astype(int).astype(str),
            "client": df["client"], "server": server, "t_start_s": t_start_s,
            "t_end_s": clock.t_s(t_end), "status": status, "bytes_expected": expected,
            "bytes_delivered": delivered, "ttfb_ms": ttfb_ms, "completion_ms": completion_ms,
            "goodput_mbps": goodput, "ideal_ms": np.nan, "ratio_to_ideal": np.nan, **parts,
            "network_ms": network_ms.where(status == "done"),
            "eclipse": _in_eclipse(power, server, np.asarray(t_start_s, dtype=float))}))
    if not out:
        return pd.DataFrame(columns=JOB_COLUMNS)
    return pd.concat(out, ignore_index=True)[JOB_COLUMNS].sort_values(["workload", "t_start_s"], ignore_index=True)


def _in_eclipse(power: pd.DataFrame | None, nodes: pd.Series, t_s: np.ndarray) -> pd.Series:
    """Whether each node was in Earth's shadow (sunlit fraction < 0.5) at t_s, by the plan's
    power table (the step in force); NaN for nodes it does not have (or without the table)."""
    out = pd.Series(np.nan, index=nodes.index, dtype=object)
    if power is None or not len(power):
        return out
    names = nodes.astype(str).to_numpy()
    p = power.assign(node=power["node"].astype(str))
    for node, g in p[p["node"].isin(set(names))].groupby("node"):
        g = g.sort_values("t_s")
        sel = names == node
        k = np.clip(np.searchsorted(g["t_s"].to_numpy(float), t_s[sel], side="right") - 1, 0, len(g) - 1)
        out[sel] = g["sunlit"].to_numpy(float)[k] < 0.5
    return out


def _allreduce_rows(w: Workload, e: pd.DataFrame, clock: Clock, ideal_ms) -> pd.DataFrame:
    K, k = clock.dilation, len(w.clients)
    chunk = int(round(w.p("gradient_mb") * 1e6)) // k
    expected = 2 * (k - 1) * chunk * k
    rows = []
    for step in range(w.p("steps")):
        s = e[(e["job"] == step) & (e["ev"] == "step_start")]
        d = e[(e["job"] == step) & (e["ev"] == "step_end")]
        if s.empty:
            continue
        t0 = float(s["t"].min())
        complete = len(d) == k
        t1 = float(d["t"].max()) if complete else np.nan
        got = float(d["bytes_received"].sum()) if len(d) else 0.0
        comp = (t1 - t0) / K * 1e3
        t_start_s = float(clock.t_s(t0))
        ideal = ideal_ms(w, t_start_s) if ideal_ms else np.nan
        rows.append({"workload": w.name, "kind": w.kind, "job": f"step {step}", "client": ">".join(w.clients),
                     "server": None, "t_start_s": t_start_s, "t_end_s": float(clock.t_s(t1)),
                     "status": "done" if complete and got == expected else "incomplete",
                     "bytes_expected": float(expected), "bytes_delivered": got, "ttfb_ms": np.nan,
                     "completion_ms": comp, "goodput_mbps": got / k * 8 / (comp / 1e3) / 1e6 if complete else np.nan,
                     "ideal_ms": ideal, "ratio_to_ideal": comp / ideal if complete and ideal else np.nan})
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def allreduce_ideal_ms(gradient_bytes: float, ranks: int, rate_mbps: float, hop_delay_ms: float) -> float:
    """Ring all-reduce step time: 2(K−1)/K · G / rate + 2(K−1) × one-way hop delay (ms)."""
    k = ranks
    return 2 * (k - 1) / k * gradient_bytes * 8 / (rate_mbps * 1e6) * 1e3 + 2 * (k - 1) * hop_delay_ms


def throughput_table(events: pd.DataFrame, workloads: tuple[Workload, ...], clock: Clock,
                     bin_s: float = 1.0) -> pd.DataFrame:
    """Goodput of every upload/checkpoint workload over time, from its receivers' progress
    records: `t_s` (bin start, scenario time), `workload`, `mbps` (emulated Mbit/s, all of
    the workload's transfers together), one row per `bin_s` of scenario time."""
    rows = []
    for w in workloads:
        if w.kind not in ("upload", "checkpoint"):
            continue
        e = events[(events["wl"] == w.name) & events["ev"].isin(["progress", "received"])]
        if e.empty:
            continue
        t_parts, b_parts = [], []
        for _, g in e.groupby(["node", "peer", "job"]):
            g = g.sort_values("t")
            t_parts.append(clock.t_s(g["t"].to_numpy(float)))
            b_parts.append(np.diff(g["bytes"].to_numpy(float), prepend=0.0))
        t, b = np.concatenate(t_parts), np.concatenate(b_parts)
        start, stop = clock.clip(w.start_s, w.stop_s)
        edges = np.arange(start, max(stop, float(t.max())) + bin_s, bin_s)
        got, _ = np.histogram(t, edges, weights=b)
        # bytes per scenario second → network Mbit/s: a scenario second is `scale` wall seconds,
        # a network second `dilation` wall seconds
        mbps = got * 8 / bin_s / 1e6 * clock.dilation / clock.scale
        rows.append(pd.DataFrame({"t_s": edges[:-1], "workload": w.name, "mbps": mbps}))
    if not rows:
        return pd.DataFrame(columns=["t_s", "workload", "mbps"])
    return pd.concat(rows, ignore_index=True)


def _pcts(v: pd.Series, what: str) -> dict:
    v = pd.to_numeric(v, errors="coerce").dropna().to_numpy(float)
    if not len(v):
        return {}
    return {f"{what}_p50": round(float(np.percentile(v, 50)), 3), f"{what}_p90": round(float(np.percentile(v, 90)), 3),
            f"{what}_p99": round(float(np.percentile(v, 99)), 3), f"{what}_max": round(float(v.max()), 3)}


def summarise(jobs: pd.DataFrame, workloads: tuple[Workload, ...], clock: Clock) -> dict:
    """Per-workload summary (JSON-able): job counts by status, bytes expected and delivered,
    and the kind's metrics (ms, Mbit/s; emulated): inference TTFB and completion percentiles,
    also per `window_s` window of start times; transfer completion and goodput; all-reduce step
    time against its ideal."""
    out = {}
    for w in workloads:
        j = jobs[jobs["workload"] == w.name]
        done = j[j["status"] == "done"]
        start, stop = clock.clip(w.start_s, w.stop_s)
        s: dict = {"kind": w.kind, "clients": list(w.clients), "server": w.server, "start_s": start, "stop_s": stop,
                   "jobs": int(len(j)), **{k: int((j["status"] == k).sum()) for k in ("done", "short", "error", "incomplete")},
                   **({"refused": int((j["status"] == "refused").sum())} if (j["status"] == "refused").any() else {}),
                   "bytes_expected": float(j["bytes_expected"].sum()), "bytes_delivered": float(j["bytes_delivered"].fillna(0).sum())}
        if w.kind == "inference":
            s.update(_pcts(done["ttfb_ms"], "ttfb_ms"))
            s.update(_pcts(done["completion_ms"], "completion_ms"))
            if "queue_ms" in done and done["queue_ms"].notna().any():     # a queueing server (compute model)
                s["dispatch"] = w.p("dispatch")
                for part in ("queue_ms", "prefill_ms", "decode_ms", "network_ms"):
                    s.update(_pcts(done[part], part))
                s["served_by"] = {str(k): int(v) for k, v in j["server"].value_counts().sort_index().items()}
                ecl = done["eclipse"]
                for flag, tag in ((True, "eclipse"), (False, "sunlit")):
                    m = done[ecl.notna() & (ecl.astype(object) == flag)]
                    if len(m):
                        s[f"requests_{tag}"] = int(len(m))
                        s.update(_pcts(m["ttfb_ms"], f"ttfb_ms_{tag}"))
            width = w.p("window_s")
            windows = []
            for a in np.arange(start, stop, width):
                m = done[(done["t_start_s"] >= a) & (done["t_start_s"] < a + width)]
                windows.append({"t_s": round(float(a), 3), "requests": int(len(m)),
                                **_pcts(m["ttfb_ms"], "ttfb_ms"), **_pcts(m["completion_ms"], "completion_ms")})
            s["windows"] = windows
        elif w.kind in ("upload", "checkpoint"):
            s.update(_pcts(done["completion_ms"], "completion_ms"))
            if len(done):
                s["goodput_mbps_mean"] = round(float(done["goodput_mbps"].mean()), 3)
                s["goodput_mbps_min"] = round(float(done["goodput_mbps"].min()), 3)
        else:
            s.update(_pcts(done["completion_ms"], "step_ms"))
            if len(done):
                s["ideal_ms_median"] = round(float(done["ideal_ms"].median()), 3)
                s["ratio_to_ideal_median"] = round(float(done["ratio_to_ideal"].median()), 4)
                s["ratio_to_ideal_max"] = round(float(done["ratio_to_ideal"].max()), 4)
        out[w.name] = s
    return out


def ring_ideal_ms(schedule, routes, w: Workload, t_s: float) -> float:
    """Ideal step time (ms) of all-reduce `w` starting at `t_s`: the ring's slowest hop rate
    (bottleneck link of each rank-to-next-rank path in force) and its longest one-way hop
    delay (light-time of that path), in `allreduce_ideal_ms`. NaN if a hop is unreachable."""
    k = int(np.clip(np.searchsorted(schedule.t_s, t_s, side="right") - 1, 0, len(schedule.t_s) - 1))
    links = schedule.links[schedule.links["step"] == k]
    rate = {frozenset((a, b)): r for a, b, r in zip(links["a"].astype(str), links["b"].astype(str), links["rate_mbps"])}
    ranks = list(w.clients)
    rate_mbps, delay_ms = np.inf, 0.0
    for a, b in zip(ranks, ranks[1:] + ranks[:1]):
        path = routes.path_at(a, b, t_s)
        if not path:
            return float("nan")
        hop_rates = [rate.get(frozenset(h), np.nan) for h in zip(path, path[1:])]
        if np.isnan(hop_rates).any():
            return float("nan")
        rate_mbps = min(rate_mbps, *hop_rates)
        delay_ms = max(delay_ms, float(oracle_rtt_ms(schedule, routes.routes, a, b, np.array([t_s]))[0]) / 2)
    return allreduce_ideal_ms(w.p("gradient_mb") * 1e6, len(ranks), rate_mbps, delay_ms)
