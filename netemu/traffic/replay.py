"""Packet-trace replay through the emulated constellation (kernel edge; root).

A trace's addresses are mapped onto emulated nodes (`--map ADDR=NODE,...`, or automatically: the
two busiest addresses onto the scenario's first client/server pair). Then, per flow:

- **open-loop** (default for UDP and other non-TCP traffic): every packet is re-sent from its
  source's node at its original time (× the run's dilation) with its original IP size, as a
  tagged UDP datagram (`netemu.traffic.openloop`: one pacing process for all source nodes, with a
  socket in each node's namespace); the destination's receiver timestamps it in the kernel. All namespaces share CLOCK_MONOTONIC, so each packet's one-way delay is exact; loss
  and reordering (RFC 4737) come per packet.
- **closed-loop** (default for TCP): the flow's application messages (`netemu.traffic.trace.messages`:
  direction, bytes, think time) are replayed over a real TCP connection between the two nodes by
  their agents (`netemu.traffic.agent`); each message's completion time is measured.

Outputs in the run directory: `packets.parquet` (open-loop, one row per packet),
`messages.parquet` and `flows.parquet`, and the `replay` section of `summary.json` (with every
packet not replayed counted by reason). Times are scenario seconds, durations emulated ms.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import agent as agent_program
from . import openloop as openloop_program
from . import ready as ready_program
from ..errors import TraceError
from ..plan.files import atomic_write
from ..plan.pairs import default_probe_pairs
from ..emulate.playback import oracle_rtt_ms
from .trace import auto_map, flow_of_packets, flows, messages, open_loop_schedule, parse_map, read_trace
from .launcher import kill_all, terminate, update_summary
from .workloads import read_events

__all__ = ["TraceReplay", "REPLAY_MODES", "REPLAY_FILES"]

REPLAY_MODES = ("auto", "open", "closed")
REPLAY_FILES = ("packets.parquet", "messages.parquet", "flows.parquet")
TCP_PORT, UDP_PORT = 21000, 21001
LEAD_S = 0.5           # emulated seconds between the window's start and the trace's first packet
TAIL_S = 3.0           # emulated seconds a replay window lasts beyond the trace (open-loop)
CLOSED_TAIL_S = 60.0   # ... with closed-loop flows, which may take longer than in the trace; the
                       # run ends early once every flow has finished
READY_TIMEOUT_S = 30.0  # wall seconds (× the clock's scale) the replay's programs have to start
GO_MARGIN_S = 0.05     # wall seconds between the release of held programs and trace time 0


def default_pair(plan) -> tuple[str, str]:
    """The scenario's first client/server pair: its first workload's first client and server,
    else the first ground station and the first compute satellite (or endpoint)."""
    for w in plan.scenario.workloads:
        if w.server:
            return w.clients[0], w.server
    pairs = default_probe_pairs(plan)
    if not pairs:
        eps = plan.scenario.endpoints
        return eps[0], eps[1]
    return pairs[0]


class TraceReplay:
    """A trace prepared for replay in `plan`'s network (pure until `start`).

    Raises `TraceError` on an unreadable, truncated or IP-less trace, a bad mapping, a mapping
    onto a node that is not an endpoint, or a trace with nothing to replay."""

    def __init__(self, plan, pcap: str | Path, mapping: str | dict | None = None, mode: str = "auto"):
        if mode not in REPLAY_MODES:
            raise TraceError(f"--mode: expected one of {', '.join(REPLAY_MODES)}, found {mode!r}")
        self.plan, self.mode, self.path = plan, mode, Path(pcap)
        tr = read_trace(pcap)
        if len(tr.t_s) and tr.t_s.min() < 0:
            # A packet captured out of order before the first one: count time from the earliest,
            # so every replay time is ≥ 0 (the open-loop sender plays times in order from 0).
            earliest = float(tr.t_s.min())
            tr = dataclasses.replace(tr, t_s=tr.t_s - earliest, t0_unix_s=tr.t0_unix_s + earliest)
        self.trace = tr
        eps = set(plan.scenario.endpoints)
        if mapping is None:
            client, server = default_pair(plan)
            self.mapping = auto_map(tr, client, server)
            self.mapping_source = "auto"
        elif isinstance(mapping, dict):
            self.mapping, self.mapping_source = dict(mapping), "given"
        else:
            self.mapping, self.mapping_source = parse_map(mapping, plan.schedule.node_names), "--map"
        for addr, node in self.mapping.items():
            if node not in eps:
                raise TraceError(f"--map {addr}={node}: {node!r} is not an endpoint of scenario "
                                 f"{plan.scenario.name!r} (routes exist toward endpoints only: "
                                 f"{', '.join(plan.scenario.endpoints[:6])}…)")
        self.flows = flows(tr)
        self.flow_of = flow_of_packets(tr, self.flows)
        addr = np.array(tr.addrs, dtype=object)
        m = self.mapping
        src_node = np.array([m.get(a) for a in addr], dtype=object)[tr.src]
        dst_node = np.array([m.get(a) for a in addr], dtype=object)[tr.dst]
        mapped = (src_node != None) & (dst_node != None)  # noqa: E711 (element-wise)
        same = mapped & (src_node == dst_node)
        f = self.flows
        f["client_node"] = f["client"].map(m)
        f["server_node"] = f["server"].map(m)
        closed_ok = f["proto"].isin(["tcp", "udp"]) if mode == "closed" else f["proto"] == "tcp"
        ok_ends = f["client_node"].notna() & f["server_node"].notna() & (f["client_node"] != f["server_node"])
        f["mode"] = np.where(~ok_ends, "skipped", np.where(closed_ok & (mode != "open"), "closed",
                                                            "skipped" if mode == "closed" else "open"))
        open_flows = set(f.loc[f["mode"] == "open", "flow"])
        closed_flows = set(f.loc[f["mode"] == "closed", "flow"])
        sched, _ = open_loop_schedule(tr, m)
        # Open-loop packets go in time order (capture order may step back, e.g. packets queued
        # on another CPU); ties keep capture order. counts["out_of_order"] says how many steps back.
        sched = sched[sched["flow"].isin(open_flows)]
        self.open_schedule = sched.sort_values("t_s", kind="stable").reset_index(drop=True)
        msgs = messages(tr)
        self.messages = msgs[msgs["flow"].isin(closed_flows)].reset_index(drop=True)
        in_closed = np.isin(self.flow_of, list(closed_flows))
        in_open = np.isin(self.flow_of, list(open_flows))
        self.counts = {
            "records": int(tr.counts["packets"]), "ip_packets": int(len(tr.t_s)),
            "non_ip": int(tr.counts["non_ip"]), "unparseable": int(tr.counts["unparseable"]),
            "unmapped": int((~mapped).sum()), "same_node": int(same.sum()),
            "open_loop": int(len(self.open_schedule)), "closed_loop_flow_packets": int((in_closed & mapped & ~same).sum()),
            "not_replayable_in_mode": int((mapped & ~same & ~in_closed & ~in_open).sum()),
            "out_of_order": int(tr.counts.get("out_of_order", 0)),
        }
        if not len(self.open_schedule) and not len(self.messages):
            raise TraceError(f"{self.path}: nothing to replay: {self.counts['unmapped']} of "
                             f"{self.counts['ip_packets']} IP packets have an unmapped address "
                             f"(mapping {self.mapping}), mode {mode!r}")
        self.span_s = float(tr.t_s.max() - tr.t_s.min()) if len(tr.t_s) else 0.0
        self.procs: list[tuple[str, str, subprocess.Popen, Path]] = []
        self.work_dir: Path | None = None     # where its programs write while it plays (set before start)
        self.live = None
        self.t0_mono: float | None = None
        self.start_info: dict = {}           # the start barrier's figures (summary.json's replay.start)
        self._notes: list[str] = []          # what the run must say about the replay (see failures())
        self._client_of = {int(fl): n for fl, n in zip(self.flows["flow"], self.flows["client_node"])}
        self._log_pos: dict[str, int] = {}
        self._ended: set[int] = set()

    def window_s(self, speed: float = 1.0, start_s: float = 0.0) -> float:
        """Scenario seconds a run needs for this replay: lead, the trace (trace seconds are
        network seconds: × speed in scenario time) and a tail for the last deliveries (longer
        with closed-loop flows), within the scenario's duration."""
        tail = CLOSED_TAIL_S if len(self.messages) else TAIL_S
        want = LEAD_S + self.span_s * speed + tail
        return min(want, self.plan.scenario.duration_s - start_s)

    def finished(self) -> bool:
        """Every sender has exited and every closed-loop flow has ended (or failed)."""
        if any(p.poll() is None for _, k, p, _ in self.procs if k == "send"):
            return False
        if not len(self.messages):
            return True
        # read only what the agents logged since the last call: this is polled twice a second
        for node, kind, _, log in self.procs:
            if kind != "agent" or not log.exists():
                continue
            with open(log, "rb") as f:
                f.seek(self._log_pos.get(node, 0))
                for line in f:
                    if not line.endswith(b"\n"):
                        break                    # a line still being written: read it next time
                    self._log_pos[node] = self._log_pos.get(node, 0) + len(line)
                    if b'"wl":"replay"' in line and (b'"ev":"flow_end"' in line or b'"ev":"error"' in line):
                        job = json.loads(line).get("job")
                        if job is not None and self._client_of.get(int(job)) == node:
                            self._ended.add(int(job))
        return len(self._ended) >= self.messages["flow"].nunique()

    # ------------------------------------------------------------------ live

    def start(self, live) -> None:
        """Start receivers, servers, senders and clients, wait until every one of them is set up
        (the start barrier, `netemu.traffic.ready`), then fix trace time 0: LEAD_S after the
        window's start, or later if the programs took longer to start (`start_info` says by how
        much; `failures()` then says it). Call once the clock has started; the programs write
        into `work_dir`. Raises TraceError when a program exits or stays silent instead."""
        if self.work_dir is None:
            raise TraceError("replay: set work_dir (where the replay's programs write) before start()")
        self.live, work, clock = live, Path(self.work_dir), live.clock
        work.mkdir(parents=True, exist_ok=True)
        planned_mono = clock.origin_mono + LEAD_S * clock.scale
        K = clock.dilation
        until = clock.mono(clock.t_end_s)
        py = [sys.executable, "-m"]
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        s = self.open_schedule
        for node in sorted(set(s["dst_node"])):
            o = work / f"recv-{node}.npz"
            self._popen(node, "recv", py + [openloop_program.__name__, "recv", "--bind", live.loopback(node), "--port",
                                            str(UDP_PORT), "--until-mono", f"{until:.6f}", "--say-ready",
                                            "--out", str(o)], o, stdout=subprocess.PIPE)
        specs: dict[str, dict] = {}
        if len(self.messages):
            f = self.flows.set_index("flow")
            scripts: dict[int, list] = {}
            for fl, g in self.messages.groupby("flow"):
                scripts[int(fl)] = [[0 if snd == "client" else 1, int(b), float(th) * K]
                                    for snd, b, th in zip(g["sender"], g["bytes"], g["think_s"])]
            for fl, script in scripts.items():
                c, sv = f.loc[fl, "client_node"], f.loc[fl, "server_node"]
                for node, role in ((sv, "replay-server"), (c, "replay-client")):
                    spec = specs.setdefault(node, {"node": node, "address": live.loopback(node), "hold": True,
                                                   "log": str(work / f"{node}.jsonl"), "roles": {}})
                    r = spec["roles"].setdefault(role, {"role": role, "workload": "replay", "port": TCP_PORT,
                                                        "flows": {}, "starts": {}, "servers": {}})
                    r["flows"][str(fl)] = script
                    if role == "replay-client":      # wall seconds after trace time 0 (held agents)
                        r["starts"][str(fl)] = float(f.loc[fl, "t_first_s"]) * K
                        r["servers"][str(fl)] = live.loopback(sv)
            for node, spec in specs.items():
                spec["roles"] = sorted(spec["roles"].values(), key=lambda r: r["role"] != "replay-server")
                path = work / f"{node}.spec.json"
                path.write_text(json.dumps(spec))
                self._popen(node, "agent", py + [agent_program.__name__, str(path)], work / f"{node}.jsonl", **pipes)
        if len(s):
            # one sender for every source node (a socket in each node's namespace): busy-waiting
            # senders in several nodes would take turns on one CPU and miss their instants
            srcs, dsts = sorted(set(s["src_node"])), sorted(set(s["dst_node"]))
            sched = {"idx": s["idx"].to_numpy(np.int64), "t_s": s["t_s"].to_numpy(float),
                     "size_bytes": s["size_bytes"].to_numpy(np.int32),
                     "dst": s["dst_node"].map({d: i for i, d in enumerate(dsts)}).to_numpy(np.int32),
                     "dst_addrs": np.array([live.loopback(d) for d in dsts]),
                     "src": s["src_node"].map({n: i for i, n in enumerate(srcs)}).to_numpy(np.int32),
                     "src_addrs": np.array([live.loopback(n) for n in srcs]),
                     "src_netns": np.array([live.netns(n) for n in srcs])}
            sp, o = work / "schedule.npz", work / "send.npz"
            openloop_program.save_schedule(sp, sched)
            cmd = py + [openloop_program.__name__, "send", "--schedule", str(sp), "--port", str(UDP_PORT),
                        "--hold", "--dilation", f"{K:g}", "--out", str(o)]
            with open(work / "send.stderr", "w") as err:
                self.procs.append(("*", "send", subprocess.Popen(cmd, stderr=err, **pipes), o))
        self._hold(planned_mono, clock)

    def _hold(self, planned_mono: float, clock) -> None:
        """The start barrier: every program ready, then trace time 0 (never before `planned_mono`)."""
        t_popen = time.monotonic()
        named = [(f"replay {k} in {n}" if n != "*" else f"replay {k}", p) for n, k, p, _ in self.procs]
        try:
            seen = ready_program.wait_ready(named, READY_TIMEOUT_S * max(1.0, clock.scale))
        except RuntimeError as e:
            self.kill()
            detail = " / ".join(self._failures()) or "no stderr"
            raise TraceError(f"replay: a program did not start: {e} ({detail}; see {self.work_dir})") from None
        for _, k, p, _ in self.procs:
            if k == "recv":
                p.stdout.close()
        t_ready = max(seen.values(), default=t_popen)
        t0_mono = max(planned_mono, time.monotonic() + GO_MARGIN_S)
        ready_program.release([p for _, k, p, _ in self.procs if k in ("agent", "send")], t0_mono)
        self.t0_mono = t0_mono
        late_s = (t0_mono - planned_mono) / clock.scale
        self.start_info = {"programs": len(named), "ready_wall_s": round(t_ready - t_popen, 3),
                           "spare_wall_s": round(planned_mono - t_ready, 3), "t0_s": round(clock.t_s(t0_mono), 6),
                           "late_s": round(late_s, 6)}

    def _popen(self, node: str, kind: str, cmd: list[str], out: Path, **pipes) -> None:
        with open(Path(self.work_dir) / f"{kind}-{node}.stderr", "w") as err:
            self.procs.append((node, kind, self.live.popen(node, cmd, stderr=err, **pipes), out))

    def stop(self) -> None:
        """Stop everything (senders first, so receivers see their last packets)."""
        for kind in ("send", "agent", "recv"):
            terminate([p for _, k, p, _ in self.procs if k == kind], timeout_s=15)

    def kill(self) -> None:
        kill_all([p for _, _, p, _ in self.procs])

    def failures(self) -> list[str]:
        """What run.json's warnings say about the replay: programs that failed, and (once the
        results are written) a late trace time 0 and closed-loop messages not done."""
        return self._failures() + self._notes

    def _failures(self) -> list[str]:
        bad = []
        for node, kind, p, out in self.procs:
            if p.returncode not in (0, -signal.SIGTERM) or not out.exists():
                name = f"{kind}-{node}.stderr" if node != "*" else f"{kind}.stderr"
                err = (Path(self.work_dir) / name).read_text().strip().splitlines()[-2:]
                bad.append(f"replay {kind} in {node} exited with {p.returncode}: {' / '.join(err)}")
        return bad

    # ------------------------------------------------------------------ results

    def write_results(self, out: Path) -> dict:
        """packets.parquet, messages.parquet, flows.parquet and summary.json's `replay`, in `out`."""
        out = Path(out)
        K = self.live.clock.dilation
        summary: dict = {"trace": str(self.path), "mode": self.mode, "mapping": self.mapping,
                         "mapping_source": self.mapping_source, "counts": self.counts,
                         "failures": self._failures(), "start": self.start_info}
        pk = self._packets()
        atomic_write(out / "packets.parquet", lambda tmp: pk.to_parquet(tmp, index=False))
        msgs = self._messages()
        atomic_write(out / "messages.parquet", lambda tmp: msgs.to_parquet(tmp, index=False))
        fl = self._flows(pk, msgs)
        atomic_write(out / "flows.parquet", lambda tmp: fl.to_parquet(tmp, index=False))
        if len(pk):
            timing = {}
            sent = pk[pk["t_send_s"].notna()]
            for node, g in sent.groupby("src"):
                timing[node] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in openloop_program.timing_stats(
                    {"due_ns": g["due_ns"].to_numpy(), "sent_ns": g["sent_ns"].to_numpy()}).items()}
            ok = pk[~pk["lost"] & pk["owd_ms"].notna() & pk["oracle_owd_ms"].notna()]
            err = (ok["owd_ms"] - ok["oracle_owd_ms"]).to_numpy()
            summary["open_loop"] = {
                "packets": int(len(pk)), "sent": int(pk["t_send_s"].notna().sum()),
                "received": int(pk["t_recv_s"].notna().sum()), "lost": int(pk["lost"].sum()),
                "send_failed": int(pk["send_failed"].sum()), "reordered": int(pk["reordered"].sum()),
                # lost while the plan had no path; never attempted (the sender stopped before them)
                "lost_no_path": int((pk["lost"] & pk["oracle_owd_ms"].isna()).sum()),
                "not_attempted": int(pk["sent_ns"].isna().sum()),
                "owd_ms_p50": _r(np.nanpercentile(pk["owd_ms"], 50)) if pk["owd_ms"].notna().any() else None,
                "owd_ms_p99": _r(np.nanpercentile(pk["owd_ms"], 99)) if pk["owd_ms"].notna().any() else None,
                "owd_minus_oracle_ms_p50": _r(np.median(err)) if len(err) else None,
                "owd_minus_oracle_ms_p99_abs": _r(np.percentile(np.abs(err), 99)) if len(err) else None,
                "sender_timing": timing}
        notes = []
        late_s = self.start_info.get("late_s", 0.0)
        if late_s > 0:
            notes.append(f"replay: trace time 0 came {late_s:.3f} s late (its {self.start_info['programs']} programs "
                         f"took {self.start_info['ready_wall_s']:.3f} s wall to start); the window's tail is that "
                         f"much shorter")
        if len(msgs):
            d = msgs[msgs["status"] == "done"]
            errors = self._flow_errors()
            late = self._flow_start_late_ms()
            summary["closed_loop"] = {
                "flows": int(msgs["flow"].nunique()), "messages": int(len(msgs)), "done": int(len(d)),
                "not_started": int((msgs["status"] == "not started").sum()),
                "incomplete": int((msgs["status"] == "incomplete").sum()),
                "flow_errors": {str(k): v for k, v in sorted(errors.items())},
                "flow_start_late_ms_max": _r(max(late.values())) if late else None,
                "bytes_expected": int(msgs["bytes_expected"].sum()), "bytes_delivered": int(msgs["bytes_delivered"].fillna(0).sum()),
                "completion_ms_p50": _r(d["completion_ms"].median()) if len(d) else None,
                "completion_ms_p99": _r(np.percentile(d["completion_ms"], 99)) if len(d) else None}
            c = summary["closed_loop"]
            if c["done"] < c["messages"]:
                first = next(iter(errors.items()), None)
                notes.append(f"replay: {c['messages'] - c['done']} of {c['messages']} closed-loop messages not done "
                             f"({c['not_started']} not started, {c['incomplete']} incomplete; {len(errors)} flows failed"
                             + (f", e.g. flow {first[0]}: {first[1]}" if first else "") + ")")
        self._notes = notes
        summary["warnings"] = notes
        summary["dilation"] = K
        update_summary(out, {"replay": summary})
        return summary

    def _client_events(self, name: str) -> list[dict]:
        """The replay events `name` that flow clients logged (job = the flow)."""
        out = []
        for node, kind, _, log in self.procs:
            if kind != "agent" or not log.exists():
                continue
            for line in log.read_bytes().splitlines():
                if f'"ev":"{name}"'.encode() in line and b'"wl":"replay"' in line:
                    e = json.loads(line)
                    if e.get("job") is not None and self._client_of.get(int(e["job"])) == node:
                        out.append(e)
        return out

    def _flow_errors(self) -> dict[int, str]:
        """{flow: its client's first error} (e.g. the server refused the connection)."""
        errors: dict[int, str] = {}
        for e in self._client_events("error"):
            errors.setdefault(int(e["job"]), str(e.get("what", "")))
        return errors

    def _flow_start_late_ms(self) -> dict[int, float]:
        """{flow: emulated ms its client started after its due instant}."""
        K = self.live.clock.dilation
        return {int(e["job"]): max(0.0, (e["t"] - e["due"]) / K * 1e3)
                for e in self._client_events("flow_start") if "due" in e}

    def _packets(self) -> pd.DataFrame:
        s = self.open_schedule
        cols = ["idx", "t_trace_s", "src", "dst", "size_bytes", "proto", "flow", "t_send_s", "t_recv_s",
                "owd_ms", "oracle_owd_ms", "lost", "send_failed", "reordered", "duplicates", "send_error_us",
                "due_ns", "sent_ns"]
        if not len(s):
            return pd.DataFrame(columns=cols)
        sends = [o for _, k, _, o in self.procs if k == "send" and o.exists()]
        recvs = [o for _, k, _, o in self.procs if k == "recv" and o.exists()]
        if not sends:
            raise TraceError("open-loop replay: no sender wrote results (see replay/*.stderr)")
        sent = openloop_program.load_sent(*sends)
        rec = openloop_program.load_received(*recvs) if recvs else {"idx": np.zeros(0, np.int64), "recv_ns": np.zeros(0, np.int64)}
        m = openloop_program.match(sent, rec)
        df = s.rename(columns={"t_s": "t_trace_s", "src_node": "src", "dst_node": "dst"}).merge(
            m.drop(columns=[c for c in ("src", "dst", "size_bytes") if c in m]), on="idx", how="left")
        clock = self.live.clock
        K = clock.dilation
        df["t_send_s"] = clock.t_s(df["sent_ns"].to_numpy(float) / 1e9)
        df["t_recv_s"] = clock.t_s(df["recv_ns"].to_numpy(float) / 1e9)
        df["owd_ms"] = df["owd_ms"] / K
        df["send_error_us"] = (df["sent_ns"] - df["due_ns"]) / 1e3
        never = df["sent_ns"].isna()                     # the sender stopped before these
        df["lost"] = df["lost"].fillna(False).astype(bool) & ~never
        df["send_failed"] = df["send_failed"].fillna(False).astype(bool)
        df["reordered"] = df["reordered"].fillna(False).astype(bool)
        df["oracle_owd_ms"] = np.nan
        sched, routes = self.plan.schedule, self.plan.routes.routes
        for (a, b), g in df[~never].groupby(["src", "dst"]):
            df.loc[g.index, "oracle_owd_ms"] = oracle_rtt_ms(sched, routes, a, b, g["t_send_s"].to_numpy()) / 2
        return df[cols]

    def _messages(self) -> pd.DataFrame:
        cols = ["flow", "msg", "sender", "src", "dst", "bytes_expected", "bytes_delivered", "think_s",
                "t_trace_s", "t_start_s", "t_end_s", "completion_ms", "trace_ms", "status"]
        if not len(self.messages):
            return pd.DataFrame(columns=cols)
        logs = [o for _, k, _, o in self.procs if k == "agent" and o.exists()]
        ev = read_events(logs)
        f = self.flows.set_index("flow")
        m = self.messages.copy()
        m["src"] = np.where(m["sender"] == "client", m["flow"].map(f["client_node"]), m["flow"].map(f["server_node"]))
        m["dst"] = np.where(m["sender"] == "client", m["flow"].map(f["server_node"]), m["flow"].map(f["client_node"]))
        ev = ev[ev["wl"] == "replay"] if len(ev) else ev
        key = ["flow", "msg"]

        def pick(name: str, fields: list[str]) -> pd.DataFrame:
            e = ev[ev["ev"] == name] if len(ev) else ev
            if not len(e):
                return pd.DataFrame(columns=key + fields)
            e = e.rename(columns={"job": "flow"})
            e["flow"], e["msg"] = e["flow"].astype(int), e["msg"].astype(int)
            return e.groupby(key, as_index=False)[fields].first()

        st = pick("msg_start", ["t"]).rename(columns={"t": "t0"})
        rc = pick("msg_received", ["t", "bytes"]).rename(columns={"t": "t1", "bytes": "got"})
        m = m.merge(st, on=key, how="left").merge(rc, on=key, how="left")
        clock = self.live.clock
        K = clock.dilation
        m["t_start_s"] = clock.t_s(m["t0"].to_numpy(float))
        m["t_end_s"] = clock.t_s(m["t1"].to_numpy(float))
        m["completion_ms"] = (m["t1"] - m["t0"]) / K * 1e3
        m["bytes_expected"] = m["bytes"]
        m["bytes_delivered"] = m["got"]
        m["trace_ms"] = (self.messages["t_end_s"] - self.messages["t_start_s"]).to_numpy() * 1e3
        m["t_trace_s"] = self.messages["t_start_s"].to_numpy()
        m["status"] = np.select([m["got"] == m["bytes"], m["t0"].notna()], ["done", "incomplete"], "not started")
        return m[cols]

    def _flows(self, pk: pd.DataFrame, msgs: pd.DataFrame) -> pd.DataFrame:
        f = self.flows
        out = f[["flow", "proto", "client", "client_port", "server", "server_port", "client_node", "server_node",
                 "mode", "packets", "bytes", "t_first_s", "duration_s", "rate_mbps"]].rename(
            columns={"packets": "trace_packets", "bytes": "trace_bytes", "t_first_s": "t_trace_s",
                     "duration_s": "trace_duration_s", "rate_mbps": "trace_rate_mbps"}).copy()
        K = self.live.clock.dilation
        rows = []
        if len(pk):
            for fl, g in pk.groupby("flow"):
                got = g[g["t_recv_s"].notna()]
                t0, t1 = g["t_send_s"].min(), got["t_recv_s"].max() if len(got) else np.nan
                rows.append({"flow": fl, "bytes_sent": float(g.loc[g["t_send_s"].notna(), "size_bytes"].sum()),
                             "bytes_delivered": float(got["size_bytes"].sum()), "t_start_s": t0, "t_end_s": t1,
                             "lost": int(g["lost"].sum()), "reordered": int(g["reordered"].sum()),
                             "owd_ms_p50": float(got["owd_ms"].median()) if len(got) else np.nan})
        if len(msgs):
            for fl, g in msgs.groupby("flow"):
                rows.append({"flow": fl, "bytes_sent": float(g.loc[g["t_start_s"].notna(), "bytes_expected"].sum()),
                             "bytes_delivered": float(g["bytes_delivered"].fillna(0).sum()),
                             "t_start_s": g["t_start_s"].min(), "t_end_s": g["t_end_s"].max(),
                             "messages": int(len(g)), "messages_done": int((g["status"] == "done").sum())})
        r = pd.DataFrame(rows, columns=["flow", "bytes_sent", "bytes_delivered", "t_start_s", "t_end_s", "lost",
                                        "reordered", "owd_ms_p50", "messages", "messages_done"])
        out = out.merge(r, on="flow", how="left")
        # replayed flows without payload (e.g. refused connection attempts) moved nothing
        quiet = out["mode"].ne("skipped") & out["bytes_sent"].isna()
        out.loc[quiet, ["bytes_sent", "bytes_delivered"]] = 0.0
        # scenario seconds → network seconds: × scale / dilation
        dur_s = (out["t_end_s"] - out["t_start_s"]) * self.live.clock.scale / K
        out["throughput_mbps"] = out["bytes_delivered"] * 8 / dur_s.where(dur_s > 0) / 1e6
        return out


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)
