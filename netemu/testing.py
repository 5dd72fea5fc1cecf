"""Helpers for users' own topology regression tests (pytest or plain asserts).

    # tests/test_my_constellation.py
    from netemu.testing import assert_plan_matches_golden

    def test_my_constellation_topology():
        assert_plan_matches_golden("topologies/mine.toml", "tests/golden/mine")

Write (or, after a deliberate change, rewrite) the golden with
`netemu plan topologies/mine.toml --save-golden tests/golden/mine` and commit it.

Fakes of the live network's last mile, for tests that need no root (as httpx's MockTransport):
`RecordingLinks` (a link backend that records what it is asked), `FakeForwarding` (route steps
recorded instead of sent over netlink) and `FakeLiveNetwork` (what traffic sources see, with
`popen` recording the command instead of entering a namespace). The player and the traffic
sources run against them unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .emulate.clock import Clock
from .errors import EmulationError
from .plan.golden import check_plan
from .plan.planner import make_plan
from .plan.scenario import load_scenario

__all__ = ["assert_plan_matches_golden", "RecordingLinks", "FakeForwarding", "FakeLiveNetwork", "FakeProcess"]


def assert_plan_matches_golden(scenario: str | Path, golden_dir: str | Path, *, tolerance_ms: float = 0.001,
                               link_changes_per_step: int = 0, workers: int | None = None):
    """Plan `scenario` and compare it with the golden summary in `golden_dir`; raise
    AssertionError listing every difference (links per step, reachability, path delays beyond
    `tolerance_ms`). Returns the `GoldenCheck` when it passes."""
    plan = make_plan(load_scenario(scenario), workers=workers)
    res = check_plan(plan, golden_dir, tolerance_ms=tolerance_ms, link_changes_per_step=link_changes_per_step)
    if not res.ok:
        raise AssertionError(f"{scenario} does not match {golden_dir}:\n{res.report()}")
    return res


class RecordingLinks:
    """A link backend (emulate.links.LinkBackend) that records every call as
    `(monotonic_s, method, args)` in `calls`, and holds the links it was given."""

    def __init__(self):
        self.calls: list[tuple[float, str, tuple]] = []
        self.links: dict[str, object] = {}

    def _record(self, method: str, *args) -> None:
        self.calls.append((time.monotonic(), method, args))

    def of(self, method: str) -> list[tuple[float, tuple]]:
        """The calls of `method`: (monotonic_s, args)."""
        return [(t, a) for t, m, a in self.calls if m == method]

    def add_link(self, link_id, a, b, params) -> None:
        self.links[link_id] = params
        self._record("add_link", link_id, a, b, params)

    def remove_link(self, link_id) -> None:
        self.links.pop(link_id, None)
        self._record("remove_link", link_id)

    def set_params(self, updates, at_t_s=None) -> None:
        self._record("set_params", dict(updates), at_t_s)

    def set_delay_points(self, points) -> None:
        self._record("set_delay_points", {k: list(v) for k, v in points.items()})

    def set_clock(self, origin_mono: float, scale: float) -> None:
        self._record("set_clock", origin_mono, scale)

    def set_fault(self, link_ids, on: bool) -> float:
        self._record("set_fault", list(link_ids), on)
        return time.monotonic()

    def counters(self) -> pd.DataFrame:
        return pd.DataFrame(columns=["link", "direction", "frames", "bytes", "dropped"])

    def stop(self) -> None:
        self._record("stop")


class FakeForwarding:
    """Route steps recorded instead of sent: `changes` maps a schedule step to how many
    next-hop entries change there; `staged` and `applied` are `(monotonic_s, step)`."""

    def __init__(self, changes: dict[int, int] | None = None):
        self.changes = dict(changes or {})
        self.staged: list[tuple[float, int]] = []
        self.applied: list[tuple[float, int]] = []
        self.routes_in_force_at = 0.0
        self.last_apply: dict = {}

    def stage(self, k: int, due_mono: float | None = None) -> None:
        self.staged.append((time.monotonic(), k))

    def apply(self, k: int) -> int:
        self.routes_in_force_at = time.monotonic()
        self.applied.append((self.routes_in_force_at, k))
        self.last_apply = {"namespaces": 1 if self.changes.get(k) else 0, "send_ms": 0.0, "ack_ms": 0.0}
        return self.changes.get(k, 0)

    def sender_log(self) -> pd.DataFrame:
        """No link engine sends a share here (forwarding.Forwarding.sender_log)."""
        return pd.DataFrame(columns=["step", "start", "done", "namespaces"])

    def changes_at(self, k: int) -> int:
        return self.changes.get(k, 0)

    def installed_routes(self, node: str) -> list[dict]:
        return []

    def close(self) -> None:
        pass


class FakeProcess:
    """What `FakeLiveNetwork.popen` returns: a process that runs until signalled (or, with
    `returncode` set at creation, one that has already exited)."""

    def __init__(self, node: str, cmd: list[str], returncode: int | None = None):
        self.node, self.cmd, self.returncode = node, list(cmd), returncode
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self.returncode is None:
            self.returncode = -sig

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


class FakeLiveNetwork:
    """What traffic sources see of a live network (emulate.live.Live), without one: nodes
    `node_names` with loopbacks 10.128.0.1, .2, … (or `loopbacks`), and `clock` (started now
    unless given). `popen` records `(node, cmd)` in `started` and returns a FakeProcess;
    `fail_in` names nodes whose processes exit at once with code 1."""

    def __init__(self, node_names, clock: Clock | None = None, loopbacks: dict[str, str] | None = None,
                 fail_in: tuple[str, ...] = ()):
        self.node_names = tuple(node_names)
        self.loopbacks = dict(loopbacks or {n: f"10.128.0.{i + 1}" for i, n in enumerate(self.node_names)})
        self.clock = clock or Clock(0.0, 10.0, origin_mono=time.monotonic())
        self.fail_in = set(fail_in)
        self.started: list[tuple[str, list[str]]] = []
        self.procs: list[FakeProcess] = []

    def loopback(self, name: str) -> str:
        if name not in self.loopbacks:
            raise EmulationError(f"unknown node {name!r}")
        return self.loopbacks[name]

    def netns(self, name: str) -> str:
        return f"/run/netns/fake-{name}"

    def popen(self, node: str, cmd: list[str], **kw) -> FakeProcess:
        self.loopback(node)
        self.started.append((node, list(cmd)))
        p = FakeProcess(node, cmd, 1 if node in self.fail_in else None)
        self.procs.append(p)
        return p
