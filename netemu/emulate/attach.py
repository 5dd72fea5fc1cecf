"""Reaching into a live run from outside it (`netemu exec RUN NODE -- CMD …`): find the run in
the registry (`netemu ps`), its node's namespace, and the command line to run there, with the
same placeholders as a scenario's [[apps]] ({node}, {loopback}, {addr:NAME}; never a shell).
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from ..errors import EmulationError
from ..plan.apps import PlaceholderError, expand_command
from .netns import NETNS_DIR, NETNS_PREFIX, RUN_ID_RE, live_runs

__all__ = ["find_live_run", "node_netns", "run_addresses", "exec_argv"]


def find_live_run(text: str) -> dict:
    """The live run named by `text`: its id (as `netemu ps` lists it) or its output directory."""
    runs = live_runs()
    if RUN_ID_RE.fullmatch(text):
        found = [e for e in runs if e["id"] == text]
    else:
        want = os.path.realpath(text)
        found = [e for e in runs if e.get("out_dir") and os.path.realpath(e["out_dir"]) == want]
    if not found:
        known = ", ".join(f"{e['id']} ({e.get('out_dir') or '-'})" for e in runs) or "none"
        raise EmulationError(f"exec {text}: expected the id or output directory of a live run; live runs: {known} "
                             f"(`netemu ps`)")
    return found[0]


def node_netns(run: dict, node: str) -> str:
    """The namespace file of `node` in `run`."""
    path = NETNS_DIR / f"{NETNS_PREFIX}{run['id']}-{node}"
    if not path.exists():
        prefix = f"{NETNS_PREFIX}{run['id']}-"
        nodes = sorted(p.name[len(prefix):] for p in NETNS_DIR.glob(prefix + "*")) if NETNS_DIR.exists() else []
        shown = ", ".join(nodes[:8]) + (", …" if len(nodes) > 8 else "")
        raise EmulationError(f"exec: run {run['id']} has no node {node!r} (its nodes: {shown or 'none'})")
    return str(path)


def run_addresses(run: dict) -> dict[str, str]:
    """node → loopback address of `run`, from its output directory's addresses.csv ({} if none)."""
    out = run.get("out_dir")
    path = Path(out) / "addresses.csv" if out else None
    if path is None or not path.exists():
        return {}
    with open(path, newline="") as f:
        return {r["node"]: r["address"] for r in csv.DictReader(f) if r.get("ifname") == "lo"}


def exec_argv(run_text: str, node: str, command: list[str]) -> list[str]:
    """The argument list that runs `command` in `node` of the live run `run_text`
    (`nsenter --net=… PROGRAM ARGS`), placeholders substituted."""
    if not command:
        raise EmulationError("exec: expected a command after `--` (e.g. netemu exec RUN NODE -- ping -c 3 {addr:g-paris})")
    run = find_live_run(run_text)
    netns = node_netns(run, node)
    addresses = run_addresses(run)

    def address_of(name: str) -> str:
        if name not in addresses:
            raise EmulationError(f"exec: no address of node {name!r} in run {run['id']} "
                                 f"(addresses.csv of {run.get('out_dir') or 'the run'})")
        return addresses[name]
    try:
        argv = expand_command(command, node, address_of)
    except PlaceholderError as e:
        raise EmulationError(f"exec: {e}") from None
    if shutil.which(argv[0]) is None:
        raise EmulationError(f"exec: no program {argv[0]!r} (not on PATH, or not executable)")
    return ["nsenter", f"--net={netns}", *argv]
