"""Live fault injection (kernel edge; root): fail a node or a link of a running emulation now,
restore it later, and let routing react as it does for the scenario's planned faults.

    em.fail_node("r03-07", duration_s=5)       # its links down now; routes around it after the detection delay
    em.fail_link("r03-07", "r03-08")
    em.reboot("r03-07", reboot_s=30)           # dark now, back after 30 s, its links re-acquire
    em.restore()                               # every live fault (or restore("r03-07"), restore(a, b))

What happens, in order:
1. At once, from the calling thread: the link engine holds the element's links down (an engine
   flag that wins over the schedule: steps already fed to the engine that would bring the link
   up again do not). Frames on those links are lost from then on.
2. For `[routing] failure_detection_s` (emulated) the routes keep pointing into the failure, as the
   planner's do for a planned fault: packets sent that way are lost.
3. Then, in the player's thread (so it never races a route step), the next hops of the step in
   force are recomputed with the planner's routing code (`plan.routing.next_hop_table`) over the
   step's graph minus the failed elements, and the differences installed; every later step's
   routes are computed the same way until the fault ends.
4. A restore (or the end of `duration_s`) releases the links at once and puts the routes back
   at once (a link coming back is known at once, as in the planner).
5. A reboot is a node failure (1-3) whose links come back by themselves: after `reboot_s`
   the node is up and each link re-acquires for its model's acquisition time (ISL model
   `acquisition_s`, GSL model `handover_gap_s`, as the planner's reboot faults); each group of
   links is released, and the routes take it back, once acquired (a `restore` row each).

Every injection is a row of `Injector.table()` (the run directory's `injections.csv`): `id, kind
(fail_node | fail_link | reboot | restore), target, t_s` (emulated instant asked), `wall` (UTC), `duration_s,
links, applied_at_s` (emulated instant the engine applied it), `apply_ms` (wall ms from the request
to the engine's application), `detection_s, reroute_due_s, rerouted_at_s, reroute_error_ms`
(emulated ms, rerouted − due), `routes` (next-hop entries changed), `note`.

A running `netemu run` serves these calls on a unix socket, `/run/netemu/runs/ID.sock`, named in
its registry entry (`netemu ps --json`: `control`); `netemu inject RUN_DIR …` talks to it
(`request`). One JSON object per connection each way.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import NetemuError
from ..plan.routing import next_hop_table
from .netns import RUNS_DIR, live_runs

__all__ = ["Injector", "ControlServer", "request", "find_live_run", "InjectError", "INJECTION_COLUMNS"]

INJECTION_COLUMNS = ["id", "kind", "target", "t_s", "wall", "duration_s", "links", "applied_at_s", "apply_ms",
                     "detection_s", "reroute_due_s", "rerouted_at_s", "reroute_error_ms", "routes", "note"]


class InjectError(NetemuError):
    """A live injection that cannot be done: unknown node or link, a run that is not live."""


class _Fault:
    __slots__ = ("id", "kind", "target", "links", "nodes", "pairs", "detect_mono")

    def __init__(self, id_, kind, target, links, nodes, pairs, detect_mono):
        self.id, self.kind, self.target, self.links = id_, kind, target, links
        self.nodes, self.pairs, self.detect_mono = nodes, pairs, detect_mono


class Injector:
    """Live faults of an `Emulation` (its `fail_node`, `fail_link`, `restore` call these)."""

    def __init__(self, em):
        self.em = em
        self.lock = threading.Lock()
        self.active: dict[int, _Fault] = {}
        self.rows: list[dict] = []
        self._views: dict[frozenset, _View] = {}
        self._planned_tables: dict[tuple[int, float], np.ndarray] = {}
        self._special: dict[tuple, np.ndarray] = {}
        self._ahead: threading.Thread | None = None
        self._next_id = 1
        names = em.schedule.node_names
        self._pos = {n: i for i, n in enumerate(names)}
        lt = em.link_table
        self._links_of: dict[str, list[str]] = {}
        self._link_of: dict[frozenset, str] = {}
        for link, a, b in zip(lt["link"], lt["a"], lt["b"]):
            self._links_of.setdefault(a, []).append(link)
            self._links_of.setdefault(b, []).append(link)
            self._link_of[frozenset((a, b))] = link
        r = em.plan.scenario.routing
        self.detection_s = float(getattr(r, "failure_detection_s", 0.0) or 0.0)

    # ------------------------------------------------------------------ checks

    def _check_live(self) -> None:
        p = self.em.player
        if p is None or p._thread is None:
            raise InjectError("the emulation is not playing yet: call start() before injecting faults")
        if not p.playing():
            raise InjectError("the emulation's window has ended: nothing left to inject into")

    def _check_node(self, name) -> None:
        if not isinstance(name, str) or name not in self.em.loopbacks:
            near = sorted(self.em.loopbacks)[:8]
            raise InjectError(f"unknown node {name!r}: expected a node of this run (e.g. {', '.join(near)}; "
                              f"`nodes` in netemu's shell lists them)")

    @staticmethod
    def _check_duration(duration_s) -> float | None:
        if duration_s is None:
            return None
        if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not (
                math.isfinite(duration_s) and duration_s > 0):
            raise InjectError(f"duration_s: expected a number of emulated seconds > 0 (or none: until "
                              f"restored), found {duration_s!r}")
        return float(duration_s)

    # ------------------------------------------------------------------ faults

    def fail_node(self, name: str, duration_s: float | None = None) -> dict:
        self._check_node(name)
        duration_s = self._check_duration(duration_s)
        self._check_live()
        return self._fail("fail_node", name, self._links_of.get(name, []), (self._pos[name],), (), duration_s)

    def fail_link(self, a: str, b: str, duration_s: float | None = None) -> dict:
        self._check_node(a)
        self._check_node(b)
        duration_s = self._check_duration(duration_s)
        link = self._link_of.get(frozenset((a, b)))
        if link is None:
            raise InjectError(f"no link between {a!r} and {b!r} in this run's window (links of {a}: "
                              f"{', '.join(self._neighbours(a)) or 'none'})")
        self._check_live()
        return self._fail("fail_link", f"{a}|{b}", [link], (), ((self._pos[a], self._pos[b]),), duration_s)

    def reboot(self, name: str, reboot_s: float | None = None) -> dict:
        """Reboot node `name` now (a single-event upset): every link dark at once, routes around it
        after the detection delay (as `fail_node`); after `reboot_s` (None: the scenario's, see
        `default_reboot_s`) the node is back and each link re-acquires for its model's acquisition
        time (a laser: its ISL model's `acquisition_s`; a ground link: the GSL model's
        `handover_gap_s`); each link is released, and the routes take it back, once acquired
        (`restore` rows noting the re-acquisition). `restore(name)` ends it at once."""
        self._check_node(name)
        if reboot_s is None:
            reboot_s = self.default_reboot_s(name)
        elif isinstance(reboot_s, bool) or not isinstance(reboot_s, (int, float)) or not (
                math.isfinite(reboot_s) and reboot_s > 0):
            raise InjectError(f"reboot_s: expected a number of emulated seconds > 0, found {reboot_s!r}")
        reboot_s = float(reboot_s)
        self._check_live()
        links = self._links_of.get(name, [])
        acq = self._acquisition_s(links)
        row = self._fail("reboot", name, links, (self._pos[name],), (), None, reboot_s=reboot_s)
        f = row.pop("_fault")
        clock = self.em.player.clock
        t0 = row["t_s"]
        for a in sorted(set(acq.values())):   # each group of links back once acquired
            back = [l for l in links if acq[l] == a]
            note = (f"{name} back after its {reboot_s:g}-s reboot: {len(back)} link(s) acquired after "
                    f"{a:g} s")
            self.em.player.call_at(clock.mono(t0 + reboot_s + a), lambda f=f, back=back, note=note: self._reacquired(f, back, note))
        if not links:
            self.em.player.call_at(clock.mono(t0 + reboot_s), lambda f=f: self._reacquired(f, [], f"{name} back after its reboot"))
        return row

    def default_reboot_s(self, name: str) -> float:
        """The scenario's reboot time for node `name`: its own planned reboots', else its group's
        radiation resets', else any reboot or radiation fault's of the scenario."""
        sc = self.em.plan.scenario
        group = self._group_of(name)
        own = [f.duration_s for f in sc.faults if f.kind == "reboot" and f.node == name and f.duration_s]
        rad = [g.reboot_s for g in sc.group_faults if g.kind == "radiation" and g.group == group and g.reboot_s > 0]
        anyr = [f.duration_s for f in sc.faults if f.kind == "reboot" and f.duration_s] + \
               [g.reboot_s for g in sc.group_faults if g.kind == "radiation" and g.reboot_s > 0]
        for found in (own, rad, anyr):
            if found:
                return float(found[0])
        raise InjectError(f"reboot {name}: no reboot_s given and the scenario has no reboot or radiation "
                          f"fault to take it from; expected reboot_s (emulated seconds > 0)")

    def _group_of(self, name: str) -> str | None:
        """The satellite group of node `name` (None: a ground station)."""
        if not hasattr(self, "_groups"):
            from ..plan.topology import node_table
            nt = node_table(self.em.plan.scenario)
            self._groups = dict(zip(nt["name"], nt["group"]))
        return self._groups.get(name)

    def _acquisition_s(self, links: list[str]) -> dict[str, float]:
        """Each link's re-acquisition time after a reboot (emulated s): a laser's, its ISL model's
        `acquisition_s` (the first model listed that joins both ends' groups, as the planner's
        links); a ground link's, the GSL model's `handover_gap_s` (as the planner's reboot)."""
        sc, lt = self.em.plan.scenario, self.em.link_table
        rows = lt.set_index("link").loc[links] if links else lt.iloc[:0]
        gsl = float(getattr(sc.gsl, "handover_gap_s", 0.0) or 0.0) if sc.gsl is not None else 0.0
        out = {}
        for link, r in zip(links, rows.itertuples()):
            if r.kind != "isl":
                out[link] = gsl
                continue
            ga, gb = self._group_of(r.a), self._group_of(r.b)
            acq = 0.0
            for m in sc.isls:
                if ga in m.groups and gb in m.groups:
                    acq = float(m.acquisition_s)
                    break
            out[link] = acq
        return out

    def _reacquired(self, f: _Fault, back: list[str], note: str) -> None:
        """In the player's thread: links `back` of reboot `f` have re-acquired: released to their
        schedule at once, routes take them back at once (the rest stay down, as links)."""
        em, clock = self.em, self.em.player.clock
        with self.lock:
            if self.active.get(f.id) is not f:
                return        # restored by hand meanwhile
            t_req = time.monotonic()
            rest = [l for l in f.links if l not in set(back)]
            del self.active[f.id]
            if rest:          # the node is up; its links still acquiring are what is down
                lt = em.link_table.set_index("link").loc[rest]
                f.id, self._next_id = self._next_id, self._next_id + 1   # a new id: views are kept per id set
                f.links, f.nodes = rest, ()
                f.pairs = tuple((self._pos[a], self._pos[b]) for a, b in zip(lt["a"], lt["b"]))
                self.active[f.id] = f
            held = {l for g in self.active.values() for l in g.links}
            free = sorted(set(back) - held)
            applied = em.links.set_fault(free, False) if free else t_req
            row = self._row(self._next_id, "restore", f.target, t_req, applied, None, len(free))
            self._next_id += 1
            row.update(detection_s=0.0, reroute_due_s=round(float(clock.t_s(t_req)), 6), note=note)
            self.rows.append(row)
        self._reroute(row, None)

    def _neighbours(self, a: str) -> list[str]:
        return sorted(next(iter(k - {a})) for k in self._link_of if a in k and len(k) == 2)

    def _fail(self, kind, target, links, nodes, pairs, duration_s, reboot_s=None) -> dict:
        em, clock = self.em, self.em.player.clock
        t_req = time.monotonic()
        applied = em.links.set_fault(links, True) if links else t_req
        detect = t_req + self.detection_s * clock.scale
        with self.lock:
            fid = self._next_id
            self._next_id += 1
            f = self.active[fid] = _Fault(fid, kind, target, list(links), nodes, pairs, detect)
            row = self._row(fid, kind, target, t_req, applied, duration_s, len(links))
            row.update(detection_s=self.detection_s, reroute_due_s=round(float(clock.t_s(detect)), 6))
            if reboot_s is not None:
                row["duration_s"] = reboot_s
            self.rows.append(row)
        # (f.id when due: a reboot's fault takes a new id as its links come back)
        em.player.call_at(detect, lambda: self._reroute(row, f.id))
        self._prepare(detect)
        if self._ahead is None:
            self._ahead = threading.Thread(target=self._compute_ahead, name="netemu-faults", daemon=True)
            self._ahead.start()
        if duration_s is not None:
            end = clock.mono(float(clock.t_s(t_req)) + duration_s)
            em.player.call_at(end, lambda: self._end(fid))
        return dict(row) if reboot_s is None else {**row, "_fault": f}

    def restore(self, a: str | None = None, b: str | None = None) -> list[dict]:
        """End live faults: all (no argument), node `a`'s, or the link a-b's."""
        if a is not None:
            self._check_node(a)
        if b is not None:
            self._check_node(b)
        self._check_live()
        with self.lock:
            if a is None:
                ids = list(self.active)
            elif b is None:
                ids = [f.id for f in self.active.values() if f.kind in ("fail_node", "reboot") and f.target == a]
            else:
                ids = [f.id for f in self.active.values() if f.kind == "fail_link" and
                       set(f.target.split("|")) == {a, b}]
            if not ids:
                what = "any element" if a is None else (a if b is None else f"{a}|{b}")
                live = ", ".join(f.target for f in self.active.values()) or "none"
                raise InjectError(f"nothing to restore: no live fault on {what} (live faults: {live})")
        return [self._release(ids, "restore", ", ".join(self._targets(ids)))]

    def _targets(self, ids) -> list[str]:
        return [self.active[i].target for i in ids if i in self.active]

    def _end(self, fid: int) -> None:
        """The end of a fault's duration (in the player's thread)."""
        if fid in self.active:
            self._release([fid], "restore", self.active[fid].target, note=f"end of fault {fid}'s duration")

    def _release(self, ids, kind, target, note="") -> dict:
        em, clock = self.em, self.em.player.clock
        with self.lock:
            t_req = time.monotonic()
            gone = [self.active.pop(i) for i in ids if i in self.active]
            held = {l for f in self.active.values() for l in f.links}
            free = sorted({l for f in gone for l in f.links} - held)
            applied = em.links.set_fault(free, False) if free else t_req
            row = self._row(self._next_id, kind, target, t_req, applied, None, len(free))
            self._next_id += 1
            row.update(detection_s=0.0, reroute_due_s=round(float(clock.t_s(t_req)), 6), note=note)
            self.rows.append(row)
        if threading.current_thread() is em.player._thread:
            self._reroute(row, None)
        else:
            em.player.call_at(t_req, lambda: self._reroute(row, None))
        return dict(row)

    def _row(self, fid, kind, target, t_req, applied, duration_s, n_links) -> dict:
        clock = self.em.player.clock
        return {"id": fid, "kind": kind, "target": target, "t_s": round(float(clock.t_s(t_req)), 6),
                "wall": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "duration_s": duration_s, "links": n_links,
                "applied_at_s": round(float(clock.t_s(applied)), 6), "apply_ms": round((applied - t_req) * 1e3, 4),
                "detection_s": np.nan, "reroute_due_s": np.nan, "rerouted_at_s": np.nan,
                "reroute_error_ms": np.nan, "routes": 0, "note": ""}

    # ------------------------------------------------------------------ routes

    def _reroute(self, row: dict, fid: int | None) -> None:
        """In the player's thread: routes of the step in force around every detected live fault."""
        em = self.em
        try:
            with self.lock:
                if fid is not None and fid not in self.active:
                    row["note"] = "restored before its detection: no reroute"
                    return
                now = time.monotonic()
                known = [f for f in self.active.values() if f.detect_mono <= now + 1e-6]
            clock = em.player.clock
            n, t1 = self._install(em.player.applied_k, float(clock.t_s(now)), self._view(known) if known else None)
            row["routes"] = n
            row["rerouted_at_s"] = round(float(clock.t_s(t1)), 6)
            row["reroute_error_ms"] = round((row["rerouted_at_s"] - row["reroute_due_s"]) * 1e3, 3)
        except Exception as e:   # reported in the log; the player plays on
            row["note"] = f"reroute failed: {type(e).__name__}: {e}"

    def _install(self, k: int, now_t: float, live: "_View | None", table: np.ndarray | None = None):
        """Install the routes of step k (in force) around the live faults (`live`) and the plan's
        faults detected by `now_t` that the plan's routes learn only at a later step; later steps
        follow `live` (None: the plan's). `table`: step k's, computed ahead. Player's thread."""
        extra = self._planned_down(k, now_t)
        if table is None and extra:
            table = self._special_table(k, extra, live)
        if table is None:
            return self.em.forwarding.reroute(k, live)
        return self.em.forwarding.reroute(k, lambda j: table if j == k else (live(j) if live is not None else None))

    def _special_table(self, k: int, extra: list, live: "_View | None") -> np.ndarray:
        """Step k's routes around `live` and the plan's fault links `extra` (kept: computed ahead
        by `_prepare`, sent by the reroute)."""
        key = (k, tuple(sorted(extra)), live.key if live is not None else None)
        t = self._special.get(key)
        if t is None:
            sc = self.em.plan.scenario
            t = next_hop_table(self.em.plan.routing_schedule, tuple(self.em.endpoints), k, sc.routing.metric,
                               sc.routing.ground_relay, down_nodes=live.nodes if live else (),
                               down_links=list(live.pairs if live else ()) + list(extra))
            self._special[key] = t
            while len(self._special) > 8:
                self._special.pop(next(iter(self._special)))
        return t

    def _compute_ahead(self) -> None:
        """While live faults hold the routes, keep the next steps' tables computed, so that the
        player's steps only send them (computing one is ms of work in front of a step)."""
        em = self.em
        pause = min(0.1, 0.25 * em.clock.scale * float(np.diff(em.schedule.t_s[:2])[0])) if len(em.schedule.t_s) > 1 else 0.1
        while em.player.playing():
            try:
                with self.lock:
                    known = [f for f in self.active.values() if f.detect_mono <= time.monotonic()]
                if known:
                    view, k = self._view(known), em.player.applied_k
                    for j in (k + 1, k + 2):
                        if j < len(em.schedule.t_s):
                            view(j)
            except Exception:   # the player computes what is missing
                pass
            time.sleep(pause)

    def _view(self, faults: list[_Fault]) -> "_View":
        """The routes of a network with `faults` (the same set gives the same view, whose
        tables are kept: one computed ahead of a reroute's instant is not computed again)."""
        key = frozenset(f.id for f in faults)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = _View(self.em, faults)
            while len(self._views) > 8:
                self._views.pop(next(iter(self._views)))
        return v

    def _prepare(self, detect_mono: float) -> None:
        """Compute ahead the table a reroute due at `detect_mono` will install (the step then in
        force, with every fault detected by then), so that the reroute only sends it."""
        try:
            with self.lock:
                known = [f for f in self.active.values() if f.detect_mono <= detect_mono + 1e-6]
            if known:
                clock = self.em.player.clock
                t = float(clock.t_s(detect_mono))
                k = self.em.schedule.step_at(t)
                view = self._view(known)
                extra = self._planned_down(k, t)
                view(k) if not extra else self._special_table(k, extra, view)
        except Exception:   # the reroute computes it then
            pass


    # ------------------------------------------------------------------ planned faults

    def schedule_planned(self) -> int:
        """Reroutes of the plan's own faults at their exact instant: a fault that takes links down
        at step-grid time T is detected at T + failure_detection_s, which the plan's routes reach
        only at the next step after it. Where that instant is off the grid and in the window, a
        player task installs then the step's routes without the detected faults' links (and
        without any live fault's), and the next step goes back to the plan's routes, which know of
        them (or to the live faults' view). Logged as
        `planned_reroute` rows. Returns how many are scheduled. Call after the player started."""
        em, det = self.em, self.detection_s
        faults = [f for f in getattr(em.plan, "faults", ()) if f.t_s > 0]
        if not faults or det <= 0:
            return 0
        t, w = em.schedule.t_s, em.window
        dues: dict[float, list] = {}
        for f in faults:
            i = int(np.searchsorted(t, f.t_s - 1e-9, side="left"))
            if i >= len(t):
                continue
            due = float(t[i]) + det
            j = int(np.searchsorted(t, due - 1e-9, side="left"))
            if not (w.t0_s < due < w.t_end_s) or (j < len(t) and abs(float(t[j]) - due) < 1e-9):
                continue   # outside the window, or on the grid (the plan's own step moves the routes then)
            dues.setdefault(round(due, 9), []).append(f)
        clock = em.player.clock
        for n, (due, fs) in enumerate(sorted(dues.items())):
            k = em.schedule.step_at(due)
            if n < 32:   # computed ahead (a storm's faults share one instant)
                self._planned_tables[(k, due)] = self._planned_table(k, due)
            targets = ", ".join(sorted({f.node or f"{f.a}|{f.b}" for f in fs}))
            em.player.call_at(clock.mono(due), lambda due=due, targets=targets: self._planned(due, targets))
        return len(dues)

    def _grid_start(self, f) -> float:
        t = self.em.schedule.t_s
        i = int(np.searchsorted(t, f.t_s - 1e-9, side="left"))
        return float(t[i]) if i < len(t) else math.inf

    def _planned_down(self, k: int, now_t: float) -> list[tuple[int, int]]:
        """Links (node-index pairs) of the plan's faults detected by `now_t` that the plan's
        routing view still counts as up at step k (their detection falls after t_k)."""
        plan, det = self.em.plan, self.detection_s
        if not getattr(plan, "faults", ()) or det <= 0:
            return []
        t_k = float(plan.schedule.t_s[k])
        detected = [f for f in plan.faults if f.t_s > 0 and f.end_s > t_k
                    and t_k + 1e-9 < self._grid_start(f) + det <= now_t + 1e-6]
        if not detected:
            return []
        nodes = {f.node for f in detected if f.node}
        pairs = {frozenset((f.a, f.b)) for f in detected if f.a}
        L = plan.schedule.links
        lo, hi = np.searchsorted(L["step"].to_numpy(), [k, k + 1])
        rows = L.iloc[lo:hi]
        rows = rows[(rows["down_reason"] == "fault").to_numpy()]
        a, b = rows["a"].astype(str).tolist(), rows["b"].astype(str).tolist()
        return [(self._pos[x], self._pos[y]) for x, y in zip(a, b)
                if x in nodes or y in nodes or frozenset((x, y)) in pairs]

    def _planned_table(self, k: int, due: float) -> np.ndarray:
        """Next hops at step k of the plan's routing view without the links of the plan's faults
        detected by `due` (no live faults)."""
        sc = self.em.plan.scenario
        return next_hop_table(self.em.plan.routing_schedule, tuple(self.em.endpoints), k, sc.routing.metric,
                              sc.routing.ground_relay, down_links=self._planned_down(k, due))

    def _planned(self, due: float, targets: str) -> None:
        """In the player's thread: a planned fault's reroute at its detection instant."""
        em = self.em
        clock = em.player.clock
        row = {c: np.nan for c in INJECTION_COLUMNS}
        row.update(id=0, kind="planned_reroute", target=targets, t_s=round(due - self.detection_s, 6), wall="",
                   duration_s=None, links=0, detection_s=self.detection_s, reroute_due_s=round(due, 6),
                   routes=0, note="")
        try:
            with self.lock:
                now = time.monotonic()
                known = [f for f in self.active.values() if f.detect_mono <= now + 1e-6]
            k = em.player.applied_k
            table = self._planned_tables.pop((k, due), None)
            if known:   # live faults too: around all of them
                n, t1 = self._install(k, due, self._view(known))
            else:
                n, t1 = self._install(k, due, None, table if table is not None else self._planned_table(k, due))
            row["routes"] = n
            row["rerouted_at_s"] = round(float(clock.t_s(t1)), 6)
            row["reroute_error_ms"] = round((row["rerouted_at_s"] - due) * 1e3, 3)
        except Exception as e:   # reported in the log; the player plays on
            row["note"] = f"reroute failed: {type(e).__name__}: {e}"
        with self.lock:
            self.rows.append(row)

    # ------------------------------------------------------------------ log

    def table(self) -> pd.DataFrame:
        with self.lock:
            return pd.DataFrame([dict(r) for r in self.rows], columns=INJECTION_COLUMNS)


class _View:
    """Next-hop tables (step → [E, n]) of the plan's routing schedule with some faults, kept per step."""

    def __init__(self, em, faults: list[_Fault]):
        self.key = frozenset(f.id for f in faults)
        self.nodes = sorted({n for f in faults for n in f.nodes})
        self.pairs = sorted({p for f in faults for p in f.pairs})
        self.sched, self.endpoints = em.plan.routing_schedule, tuple(em.endpoints)
        self.routing = em.plan.scenario.routing
        self.tables: dict[int, np.ndarray] = {}

    def __call__(self, k: int) -> np.ndarray:
        t = self.tables.get(k)
        if t is None:
            t = next_hop_table(self.sched, self.endpoints, k, self.routing.metric, self.routing.ground_relay,
                               down_nodes=self.nodes, down_links=self.pairs)
            self.tables[k] = t
            for old in [j for j in list(self.tables) if j < k - 2]:
                self.tables.pop(old, None)
        return t


# ---------------------------------------------------------------------- control socket


def socket_path(run_id: str) -> Path:
    return RUNS_DIR / f"{run_id}.sock"


class ControlServer:
    """Serves a live run's injections on a unix socket (one JSON request per connection:
    {"cmd": "fail_node"|"fail_link"|"reboot"|"restore"|"status", "args": {...}}; the reply
    {"ok": true, "result": …} or {"ok": false, "error": "one line"})."""

    def __init__(self, em, path: Path):
        self.em, self.path = em, Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.sock.listen(8)
        self._closed = False
        self.thread = threading.Thread(target=self._serve, name="netemu-control", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5.0)
                    reply = self._handle(_read_json(conn))
                except Exception as e:
                    reply = {"ok": False, "error": f"bad request: {e}"}
                try:
                    conn.sendall(json.dumps(reply, default=_json_default).encode() + b"\n")
                except OSError:
                    pass

    def _handle(self, req) -> dict:
        if not isinstance(req, dict):
            return {"ok": False, "error": "expected a JSON object"}
        cmd, args = req.get("cmd"), req.get("args") or {}
        em = self.em
        try:
            if cmd == "fail_node":
                result = em.fail_node(args.get("node"), duration_s=args.get("duration_s"))
            elif cmd == "fail_link":
                result = em.fail_link(args.get("a"), args.get("b"), duration_s=args.get("duration_s"))
            elif cmd == "reboot":
                result = em.reboot(args.get("node"), reboot_s=args.get("reboot_s"))
            elif cmd == "restore":
                result = em.restore(args.get("a"), args.get("b"))
            elif cmd == "status":
                result = {"t_s": em.now_t_s(), "injections": em.injections().to_dict("records")}
            else:
                return {"ok": False, "error": f"unknown command {cmd!r}; expected fail_node, fail_link, reboot, "
                                              f"restore or status"}
        except NetemuError as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "result": result}

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _read_json(conn: socket.socket):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return json.loads(buf.decode() or "null")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    return str(o)


def find_live_run(run: str) -> dict:
    """The live run writing into directory `run` (or with id `run`), from the run registry."""
    runs = live_runs()
    want = str(Path(run).absolute())
    for e in runs:
        if e.get("id") == run or (e.get("out_dir") and str(Path(e["out_dir"]).absolute()) == want):
            if not e.get("control"):
                raise InjectError(f"{run}: run {e['id']} is live but takes no injections yet (it serves them "
                                  f"once its window plays)")
            return e
    ids = ", ".join(f"{e['id']} ({e.get('out_dir') or '?'})" for e in runs) or "none"
    raise InjectError(f"{run}: no live netemu run writes there (live runs: {ids}; `netemu ps` lists them)")


def request(run: str, cmd: str, timeout_s: float = 10.0, **args) -> dict:
    """Send one command to the live run `run` (its directory or id); returns its result, raises
    InjectError with the run's one-line answer."""
    entry = find_live_run(run)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(entry["control"])
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        reply = _read_json(s)
    except (OSError, ValueError) as e:
        raise InjectError(f"{run}: run {entry['id']} did not answer on {entry['control']}: {e}") from None
    finally:
        s.close()
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise InjectError(f"{run}: {reply.get('error') if isinstance(reply, dict) else 'no answer'}")
    return reply["result"]
