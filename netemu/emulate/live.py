"""What traffic sources see of a running emulation: its nodes' loopbacks and namespaces, a way to
start a process inside a node, and the run's clock. Probes, iperf, workloads and replay take a
`LiveNetwork`, never the `Emulation` itself, so they can be driven by a fake in tests
(netemu.testing.FakeLiveNetwork).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Mapping, Protocol

from ..errors import EmulationError
from .clock import Clock

__all__ = ["LiveNetwork", "Live", "TrafficSource"]


class Live(Protocol):
    """The live network as traffic sources use it (LiveNetwork, or a fake)."""

    clock: Clock
    node_names: tuple[str, ...]

    def loopback(self, name: str) -> str: ...
    def netns(self, name: str) -> str: ...
    def popen(self, node: str, cmd: list[str], **kw) -> subprocess.Popen: ...


class TrafficSource(Protocol):
    """What runs in and through a live network during a run (probes, iperf, workloads, replay):
    `start(live)` once the clock runs, `stop()` at the window's end (lets it finish its
    records), `kill()` on the way out after a failure, `write_results(out)` to write its files
    (returns its figures for run.json)."""

    def start(self, live: Live) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def write_results(self, out) -> dict: ...


@dataclass
class LiveNetwork:
    """A built emulation's nodes (`node_names`, their `loopbacks` and namespace files
    `netns_paths`) and its `clock`, which the emulation replaces by the started one when it
    starts playing (sources that need the origin read it in or after their `start`)."""

    node_names: tuple[str, ...]
    loopbacks: Mapping[str, str]
    netns_paths: Mapping[str, str]
    clock: Clock

    def loopback(self, name: str) -> str:
        """The address other endpoints reach node `name` at."""
        try:
            return self.loopbacks[name]
        except KeyError:
            raise EmulationError(f"unknown node {name!r}") from None

    def netns(self, name: str) -> str:
        """Node `name`'s namespace file (for setns / nsenter --net=)."""
        try:
            return self.netns_paths[name]
        except KeyError:
            raise EmulationError(f"unknown node {name!r}") from None

    def popen(self, node: str, cmd: list[str], **kw) -> subprocess.Popen:
        """A process inside `node` (arguments as a list: never through a shell)."""
        return subprocess.Popen(["nsenter", f"--net={self.netns(node)}", *cmd], **kw)
