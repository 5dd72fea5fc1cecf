"""Named network namespaces for netemu's runs and tests (kernel edge; root).

Everything is named with a run prefix (`NETNS_PREFIX` + run id) so that `clean()` removes exactly
what netemu made and nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

from .errors import EmulationError

__all__ = ["Namespaces", "NETNS_PREFIX", "TAP_PREFIX", "new_run_id", "list_netemu_namespaces", "clean"]

NETNS_PREFIX = "netemu-"
TAP_PREFIX = "ne"
NETNS_DIR = Path("/var/run/netns")


def new_run_id() -> str:
    """Four hex digits: short enough for interface names, random enough for parallel runs."""
    return secrets.token_hex(2)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise EmulationError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r


class Namespaces:
    """A set of named namespaces `netemu-<run>-<name>`, deleted together (also on error)."""

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.names: list[str] = []

    def full(self, name: str) -> str:
        return f"{NETNS_PREFIX}{self.run_id}-{name}"

    def path(self, name: str) -> str:
        """Namespace file of `name`, as the link engine expects it."""
        return str(NETNS_DIR / self.full(name))

    def add(self, name: str, loopback: bool = True, ipv6: bool = False) -> str:
        """Create namespace `name` (loopback up; IPv6 off unless asked: netemu's networks are IPv4,
        and IPv6 autoconfiguration would put unsolicited frames on every link)."""
        full = self.full(name)
        _ip("netns", "add", full)
        self.names.append(name)
        if not ipv6:
            self.run(name, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        if loopback:
            self.run(name, ["ip", "link", "set", "lo", "up"])
        return self.path(name)

    def run(self, name: str, cmd: list[str], check: bool = True, timeout: float | None = None,
            **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", self.full(name), *cmd], capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise EmulationError(f"in {self.full(name)}: `{' '.join(cmd)}` failed ({r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[:500]}")
        return r

    def popen(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.full(name), *cmd], **kw)

    def delete_all(self) -> None:
        """Delete every namespace of this set; their interfaces (TAPs, veths) go with them."""
        for name in reversed(self.names):
            _ip("netns", "del", self.full(name), check=False)
        self.names.clear()

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.delete_all()


def list_netemu_namespaces() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def clean(run_id: str | None = None) -> dict:
    """Remove what netemu runs left behind: their namespaces (with the interfaces inside) and
    netemu-named devices left in the root namespace (veth pairs of the kernel backend and of
    calibration, between creation and their move). Only names with netemu's prefixes are touched;
    `run_id` limits it to one run."""
    ns_prefix = NETNS_PREFIX + (f"{run_id}-" if run_id else "")
    removed_ns = []
    for name in list_netemu_namespaces():
        if name.startswith(ns_prefix):
            _ip("netns", "del", name, check=False)
            removed_ns.append(name)
    removed_links = []
    pattern = re.compile(rf"^{TAP_PREFIX}{run_id or '[0-9a-f]{4}'}[a-z][0-9]*[ab]$")
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            ifname = parts[1].strip().split("@")[0]
            if pattern.match(ifname):
                _ip("link", "del", ifname, check=False)
                removed_links.append(ifname)
    return {"namespaces": removed_ns, "links": removed_links}


def running_as_root() -> bool:
    return os.geteuid() == 0
