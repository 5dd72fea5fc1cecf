"""Link load over a run: each link direction's throughput, utilisation, queue and drops, sampled
from the link engines every `interval_s` of emulated time (`LoadSampler`), and the pure
aggregation of the samples into the run's `link_load.parquet` (`link_load`).

Why a fixed 100 ms rather than once per schedule step: steps are 0.1-1 s and more depending on
the scenario, while queues fill and drain on round-trip scales (tens of ms on LEO paths). A
tenth of a second resolves a TCP flow's ramp or a queue's build-up in every scenario alike, and
costs the engines one request each per sample (engine.cmd_sample visits only the directions
that carried frames since the last sample). What happens within a sample is summarised by its
byte and drop counts and the queue's largest backlog since the previous sample.

Sampling is off the data path's timing: a thread of the parent asks each engine in turn (as the
player and the pilot do); the engine answers between frames from counters it keeps anyway (one
extra comparison per admitted frame on rate-limited links, for the largest backlog).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pandas as pd

from ..errors import NetemuError

__all__ = ["LoadSampler", "link_load", "merge_cut_links", "LINK_LOAD_COLUMNS", "RAW_COLUMNS"]

RAW_COLUMNS = ["link", "direction", "frames_in", "bytes_in", "frames_out", "bytes_out", "drop_queue", "drop_other",
               "queue_bytes", "queue_max_bytes", "rate_bytes_per_s"]
LINK_LOAD_COLUMNS = ["t_s", "sample", "link", "direction", "dt_s", "tx_frames", "tx_bytes", "in_bytes", "rate_mbps",
                     "link_rate_mbps", "utilisation", "queue_bytes", "queue_max_bytes", "drops", "drop_queue"]
_CUMULATIVE = ["frames_in", "bytes_in", "frames_out", "bytes_out", "drop_queue", "drop_other"]


def link_load(raw: pd.DataFrame, ticks: pd.DataFrame, *, origin_mono: float, t0_s: float, scale: float,
              dilation: float, links=None) -> pd.DataFrame:
    """The link load table from engine samples (pure).

    `raw`: one row per (sample, shard, direction) listed, columns `sample, shard` + RAW_COLUMNS
    (cumulative counters as engine.cmd_sample gives them); sample -1 holds the base counters
    (every direction's, read just before sample 0), sample 0 the first sample. `ticks`:
    `sample, shard, t_mono`, one row per engine per sample. The clock maps CLOCK_MONOTONIC to
    schedule time: t_s = t0_s + (t_mono − origin_mono) / scale; `dilation` turns the engines'
    wall rates into the network's own. `links`: keep only these link ids.

    One row per direction and sample ≥ 1 at which it was listed (a direction absent from a
    sample carried nothing and had an empty queue then): LINK_LOAD_COLUMNS —
    t_s (schedule s, the sample's instant), sample, link, direction, dt_s (the interval since
    the engine's previous sample, emulated s), tx_frames and tx_bytes (delivered out of the link
    in the interval), in_bytes (offered to it), rate_mbps (tx_bytes over the interval, in the
    network's time: wall / dilation), link_rate_mbps (the configured rate then; NaN when
    unlimited), utilisation (rate_mbps / link_rate_mbps), queue_bytes (backlog at the
    instant), queue_max_bytes (largest backlog since the previous sample), drops (frames lost
    in the interval: queue, loss, down, errors) and drop_queue (of them, queue overflows).
    Summed over samples, tx_bytes and drops are exactly the counters' change."""
    if not len(raw) or not (ticks["sample"] >= 1).any():
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("link", "direction") else float)
                             for c in LINK_LOAD_COLUMNS})
    r = raw
    if links is not None:
        r = r[r["link"].isin(set(links))]
    r = r.sort_values(["link", "direction", "sample"], kind="stable")
    cum = r[_CUMULATIVE].to_numpy(np.int64)
    delta = np.diff(cum, axis=0, prepend=np.zeros((1, len(_CUMULATIVE)), np.int64))
    key = r["link"].to_numpy(object) + "\0" + r["direction"].to_numpy(object)
    first = np.ones(len(r), bool)
    first[1:] = key[1:] != key[:-1]
    delta[first] = cum[first]           # a direction first listed had zero counters before
    d = pd.DataFrame(delta, columns=_CUMULATIVE, index=r.index)
    keep = r["sample"].to_numpy() >= 1
    r, d = r[keep], d[keep]
    tk = ticks.sort_values(["shard", "sample"])
    prev = tk.groupby("shard")["t_mono"].shift(1)
    tk = tk.assign(dt_wall=tk["t_mono"] - prev)
    m = r[["sample", "shard"]].merge(tk[["sample", "shard", "t_mono", "dt_wall"]], on=["sample", "shard"],
                                     how="left")
    dt_wall = m["dt_wall"].to_numpy(float)
    rate_Bps = r["rate_bytes_per_s"].to_numpy(float)
    tx = d["bytes_out"].to_numpy(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(rate_Bps > 0, tx / (dt_wall * rate_Bps), np.nan)
        rate_mbps = tx * 8 / (dt_wall / dilation) / 1e6
    out = pd.DataFrame({
        "t_s": t0_s + (m["t_mono"].to_numpy(float) - origin_mono) / scale,
        "sample": r["sample"].to_numpy(np.int64),
        "link": r["link"].to_numpy(object),
        "direction": r["direction"].to_numpy(object),
        "dt_s": dt_wall / scale,
        "tx_frames": d["frames_out"].to_numpy(np.int64),
        "tx_bytes": tx,
        "in_bytes": d["bytes_in"].to_numpy(np.int64),
        "rate_mbps": rate_mbps,
        "link_rate_mbps": np.where(rate_Bps > 0, rate_Bps * 8e-6 * dilation, np.nan),
        "utilisation": util,
        "queue_bytes": r["queue_bytes"].to_numpy(np.int64),
        "queue_max_bytes": r["queue_max_bytes"].to_numpy(np.int64),
        "drops": (d["drop_queue"] + d["drop_other"]).to_numpy(np.int64),
        "drop_queue": d["drop_queue"].to_numpy(np.int64),
    })
    return out.sort_values(["sample", "link", "direction"], kind="stable").reset_index(drop=True)[LINK_LOAD_COLUMNS]


def merge_cut_links(tables: pd.DataFrame, senders: dict[tuple[str, str], str], interval_s: float) -> pd.DataFrame:
    """One link load table for a run spread over hosts (pure).

    `tables`: the hosts' `link_load` tables, each row with its `host`. `senders`: for each
    direction of a cut link, (link, direction) → the host whose engine admits its frames (their
    queue, rate limit and drops are there); the other end's host delivers them (their tx counts
    are there). The two halves of a cut direction are joined per sample slot, round(t_s /
    `interval_s`) (the hosts sample at the same emulated instants): in_bytes, queues, the link
    rate, t_s and dt_s from the sender, tx_frames, tx_bytes and rate_mbps from the receiver,
    drops from both; utilisation is the receiver's rate over the sender's link rate.

    LINK_LOAD_COLUMNS + `host` (a cut direction's sender), one row per direction and slot; summed
    over samples, tx_bytes and drops are still exactly the engines' counters' change."""
    cols = [*LINK_LOAD_COLUMNS, "host"]
    if not len(tables):
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("link", "direction", "host") else float) for c in cols})
    key = list(zip(tables["link"].astype(str), tables["direction"].astype(str)))
    sender = np.array([senders.get(k) for k in key], dtype=object)
    cut = np.array([s is not None for s in sender])
    whole = tables[~cut]
    t = tables[cut].assign(slot=np.rint(tables["t_s"].to_numpy(float)[cut] / interval_s).astype(np.int64))
    at_sender = t["host"].to_numpy(object) == sender[cut]
    s_side, r_side = t[at_sender], t[~at_sender]
    on = ["slot", "link", "direction"]
    m = s_side.drop(columns=["tx_frames", "tx_bytes", "rate_mbps", "utilisation", "sample"]).merge(
        r_side[[*on, "t_s", "dt_s", "tx_frames", "tx_bytes", "rate_mbps", "drops", "drop_queue"]],
        on=on, how="outer", suffixes=("", "_rx"))
    only_rx = m["t_s"].isna()
    m.loc[only_rx, "t_s"] = m.loc[only_rx, "t_s_rx"]
    m.loc[only_rx, "dt_s"] = m.loc[only_rx, "dt_s_rx"]
    for c in ("tx_frames", "tx_bytes", "in_bytes", "queue_bytes", "queue_max_bytes", "drops", "drop_queue",
              "drops_rx", "drop_queue_rx"):
        m[c] = m[c].fillna(0).astype(np.int64)
    m["rate_mbps"] = m["rate_mbps"].fillna(0.0)
    m["drops"] += m.pop("drops_rx")
    m["drop_queue"] += m.pop("drop_queue_rx")
    if only_rx.any():        # the link rate in force, from the sender's other samples of it
        m["link_rate_mbps"] = m.groupby(["link", "direction"])["link_rate_mbps"].transform(lambda x: x.ffill().bfill())
    m["host"] = [senders[(a, b)] for a, b in zip(m["link"].astype(str), m["direction"].astype(str))]
    with np.errstate(divide="ignore", invalid="ignore"):
        m["utilisation"] = m["rate_mbps"] / m["link_rate_mbps"]
    m["sample"] = m["slot"]
    out = pd.concat([whole[cols], m[cols]], ignore_index=True) if len(whole) else m[cols]
    return out.sort_values(["t_s", "link", "direction"], kind="stable").reset_index(drop=True)


class LoadSampler:
    """Samples the link engines' load every `interval_s` of emulated time (wall: × `scale`)
    from a thread of its own, from `start()` to `stop()` (which takes a last sample); `table()`
    gives the link load (see `link_load`). `links`: an EngineLinks (anything with `sample()`
    and `counters()`). `origin_mono`: sample at that CLOCK_MONOTONIC instant plus whole
    intervals (hosts of one run then sample at the same emulated instants); default, every
    interval from `start()`. A failing engine ends the sampling, not the run (`error` says why)."""

    def __init__(self, links, interval_s: float = 0.1, scale: float = 1.0, origin_mono: float | None = None):
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected > 0, found {interval_s!r}")
        self.links, self.interval_s, self.scale = links, float(interval_s), float(scale)
        self.origin_mono = origin_mono
        self.samples: list[tuple[int, int, float, float, list]] = []   # (sample, shard, t_mono, cost_s, rows)
        self.base: pd.DataFrame | None = None
        self.error = ""
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "LoadSampler":
        c = self.links.counters()
        self.base = c.assign(drop_other=c["drop_down"] + c["drop_loss"] + c["drop_error"])
        self._take()
        self._thread = threading.Thread(target=self._run, name="netemu-linkload", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> None:
        with self._lock:
            if self.error:
                return
            try:
                got = self.links.sample()
            except NetemuError as e:
                self.error = str(e)
                return
            n, self._n = self._n, self._n + 1
            self.samples.extend((n, shard, t, cost, rows) for shard, t, cost, rows in got)

    def _next(self, after: float, wall: float) -> float:
        """The first sampling instant after `after`."""
        if self.origin_mono is None:
            return after + wall
        return self.origin_mono + max(1, math.floor((after - self.origin_mono) / wall) + 1) * wall

    def _run(self) -> None:
        wall = self.interval_s * self.scale
        nxt = self._next(time.monotonic(), wall)
        while not self._stop.wait(max(0.0, nxt - time.monotonic())):
            self._take()
            if self.error:
                return
            nxt += wall
            now = time.monotonic()
            if nxt < now:            # fell behind (a busy host): skip, never burst
                nxt = self._next(now, wall)

    def stop(self) -> None:
        """End the sampling with a last sample (safe to call twice)."""
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self._take()

    def raw(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows, ticks) as `link_load` takes them."""
        with self._lock:
            samples = list(self.samples)
        rows = [(n, shard, *row) for n, shard, _, _, rs in samples for row in rs]
        raw = pd.DataFrame(rows, columns=["sample", "shard", *RAW_COLUMNS])
        if self.base is not None and len(self.base):
            b = self.base
            base = pd.DataFrame({"sample": -1, "shard": -1, **{c: b[c] for c in RAW_COLUMNS[:8]},
                                 "queue_bytes": 0, "queue_max_bytes": 0, "rate_bytes_per_s": 0.0})
            raw = pd.concat([base, raw], ignore_index=True) if len(raw) else base
        ticks = pd.DataFrame([(n, shard, t) for n, shard, t, _, _ in samples], columns=["sample", "shard", "t_mono"])
        return raw, ticks

    def table(self, clock, links=None) -> pd.DataFrame:
        """The link load under `clock` (emulate.clock.Clock, started), of `links` (default all)."""
        raw, ticks = self.raw()
        return link_load(raw, ticks, origin_mono=clock._origin(), t0_s=clock.t0_s, scale=clock.scale,
                         dilation=clock.dilation, links=links)

    def stats(self) -> dict:
        """For run.json: the interval, samples taken, rows, the engines' time per sample."""
        with self._lock:
            cost = np.array([c for _, _, _, c, _ in self.samples], float)
            rows = sum(len(rs) for *_, rs in self.samples)
        out = {"interval_s": self.interval_s, "samples": self._n, "rows": rows,
               "engine_sample_us_mean": round(float(cost.mean()) * 1e6, 1) if len(cost) else None,
               "engine_sample_us_max": round(float(cost.max()) * 1e6, 1) if len(cost) else None}
        if self.error:
            out["error"] = self.error
        return out
