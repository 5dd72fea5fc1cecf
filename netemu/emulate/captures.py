"""Packet captures of a run (`netemu run --capture`): pcap files of chosen link ends, written by
the link engine.

A capture point is one end of an emulated link: a node's interface. Its file holds what the
node sends on that interface (stamped at the frame's entry into the link, less the per-traversal
overhead the engine takes off its delay) and what it receives there (stamped when the engine
writes it into the node), as tcpdump on that interface would show them in the emulated network.
Timestamps are emulated: the scenario epoch plus schedule time, so exit − entry of a frame is
its link's light delay (plus serialisation and queueing), undilated. Frames lost on the link
appear at the sender's end only.

Specs (`--capture`, repeatable):
- `NODE`: every interface of the node;
- `NODE:IFACE`: one interface, by name (`addresses.csv`: `g-paris-e0`) or by the peer node at
  its other end (`g-paris:w03-04`);
- `A-B`: the link between nodes A and B, at both ends (node names hold '-': the split is the
  one that names two nodes).
Files: `captures/NODE_PEER.pcap` (classic libpcap, nanosecond timestamps, link type Ethernet;
Wireshark, tcpdump and scapy read them) and `captures/captures.csv` (file, node, ifname, peer,
link, frames).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import EmulationError
from ..plan.files import atomic_write

__all__ = ["CapturePoint", "resolve_captures", "Captures", "CAPTURE_DIR"]

CAPTURE_DIR = "captures"


@dataclass(frozen=True, slots=True)
class CapturePoint:
    """One link end to capture: `node`'s interface `ifname` on `link`, toward `peer`; `side` is
    the end's side of the link ("a" or "b")."""

    node: str
    ifname: str
    peer: str
    link: str
    side: str

    @property
    def file_name(self) -> str:
        return f"{self.node}_{self.peer}.pcap"   # '_' is never in a node name


def _ends(link_table: pd.DataFrame) -> pd.DataFrame:
    """One row per link end: node, ifname, peer, link, side."""
    t = link_table
    a = pd.DataFrame({"node": t["a"], "ifname": t["a_ifname"], "peer": t["b"], "link": t["link"], "side": "a"})
    b = pd.DataFrame({"node": t["b"], "ifname": t["b_ifname"], "peer": t["a"], "link": t["link"], "side": "b"})
    return pd.concat([a, b], ignore_index=True)


def _points(rows: pd.DataFrame) -> list[CapturePoint]:
    return [CapturePoint(str(r.node), str(r.ifname), str(r.peer), str(r.link), str(r.side))
            for r in rows.itertuples(index=False)]


def resolve_captures(specs: Sequence[str], node_names: Sequence[str], link_table: pd.DataFrame,
                     plan_nodes: Sequence[str] = ()) -> list[CapturePoint]:
    """The link ends that `specs` name in a run's network (its `node_names` and `link_table`:
    link, a, b, a_ifname, b_ifname), in order, each once. `plan_nodes`: every node of the plan,
    to tell a node left out of the run (scope) from a misspelled one. Raises EmulationError,
    one line naming the spec and what was expected."""
    ends = _ends(link_table)
    nodes = set(map(str, node_names))
    out: dict[tuple[str, str], CapturePoint] = {}

    def unknown(spec: str, name: str) -> EmulationError:
        if name in set(plan_nodes):
            return EmulationError(f"--capture {spec}: node {name!r} is not in this run's network (the run "
                                  f"instantiates only the satellites on endpoint paths; --scope all has them all)")
        close = difflib.get_close_matches(name, sorted(nodes), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (e.g. {', '.join(sorted(nodes)[:4])})"
        return EmulationError(f"--capture {spec}: expected NODE, NODE:IFACE or A-B with nodes of this run, "
                              f"found no node or link {name!r}{hint}")

    for spec in specs:
        spec = spec.strip()
        if ":" in spec:
            node, _, iface = spec.partition(":")
            if node not in nodes:
                raise unknown(spec, node)
            mine = ends[ends["node"] == node]
            rows = mine[(mine["ifname"] == iface) | (mine["peer"] == iface)]
            if not len(rows):
                have = ", ".join(f"{i} (to {p})" for i, p in zip(mine["ifname"], mine["peer"])) or "none"
                raise EmulationError(f"--capture {spec}: {node} has no interface or neighbour {iface!r}; "
                                     f"its interfaces: {have}")
        elif spec in nodes:
            rows = ends[ends["node"] == spec]
            if not len(rows):
                raise EmulationError(f"--capture {spec}: {spec} has no links in this run's window (nothing to capture)")
        else:
            splits = [(spec[:i], spec[i + 1:]) for i, c in enumerate(spec) if c == "-"]
            pairs = [(a, b) for a, b in splits if a in nodes and b in nodes]
            if not pairs:
                everywhere = set(plan_nodes) | nodes
                planned = [(a, b) for a, b in splits if a in everywhere and b in everywhere]
                raise unknown(spec, next((h for h in planned[0] if h not in nodes), spec) if planned else spec)
            rows = pd.DataFrame()
            for a, b in pairs:
                rows = ends[((ends["node"] == a) & (ends["peer"] == b)) | ((ends["node"] == b) & (ends["peer"] == a))]
                if len(rows):
                    break
            if not len(rows):
                a, b = pairs[0]
                peers = ", ".join(sorted(set(ends["peer"][ends["node"] == a]))) or "none"
                raise EmulationError(f"--capture {spec}: {a} and {b} are never linked in this run's window "
                                     f"({a}'s neighbours: {peers})")
        for p in _points(rows):
            out.setdefault((p.node, p.ifname), p)
    return list(out.values())


class Captures:
    """The run's captures: started on the engines once the clock runs (`start(live)`), closed
    by `stop()`, indexed by `write_results(out)` (`captures/captures.csv`). `links_of()` gives
    the emulation's link backend (built after this object)."""

    def __init__(self, points: Sequence[CapturePoint], out_dir: Path, epoch_unix_s: float,
                 links_of: Callable[[], object]):
        self.points, self.dir, self.epoch_unix_s, self.links_of = list(points), Path(out_dir), epoch_unix_s, links_of
        self.frames: dict[str, int] = {}
        self._on = False

    def start(self, live=None) -> None:
        links = self.links_of()
        if not hasattr(links, "capture"):
            raise EmulationError("--capture needs the link engine (--links engine): the kernel backend has no "
                                 "capture; tcpdump in a node (netemu exec RUN NODE -- tcpdump …) does")
        self.dir.mkdir(parents=True, exist_ok=True)
        links.capture([(p.link, p.side, str(self.dir / p.file_name)) for p in self.points], self.epoch_unix_s)
        self._on = True

    def stop(self) -> None:
        if self._on:
            self._on = False
            self.frames = {Path(k).name: v for k, v in self.links_of().capture_stop().items()}

    def kill(self) -> None:
        try:
            self.stop()
        except Exception:     # on the way out after a failure: the engines' exit closes the files
            pass

    def write_results(self, out: Path) -> dict:
        """`captures/captures.csv`: file, node, ifname, peer, link, frames."""
        t = pd.DataFrame([(f"{CAPTURE_DIR}/{p.file_name}", p.node, p.ifname, p.peer, p.link,
                           self.frames.get(p.file_name, 0)) for p in self.points],
                         columns=["file", "node", "ifname", "peer", "link", "frames"])
        atomic_write(Path(out) / CAPTURE_DIR / "captures.csv", lambda tmp: t.to_csv(tmp, index=False))
        return {"files": len(t), "frames": int(t["frames"].sum())}
