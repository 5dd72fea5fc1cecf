"""Named network namespaces for netemu's runs and tests (kernel edge; root).

Everything is named with a run prefix (`NETNS_PREFIX` + run id) so that `clean()` removes exactly
what netemu made and nothing else.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import EmulationError
from .rtnl import Rtnl

__all__ = ["Namespaces", "NETNS_PREFIX", "TAP_PREFIX", "new_run_id", "list_netemu_namespaces", "clean", "entered",
           "set_sysctls", "check_run_id", "register_run", "unregister_run", "list_runs", "live_runs"]

NETNS_PREFIX = "netemu-"
TAP_PREFIX = "ne"
NETNS_DIR = Path("/var/run/netns")
# Live runs, one JSON file each (id, pid, process start, scenario, output directory, start time):
# `clean` spares the runs whose owner process is still there, `ps` lists them. /run is a tmpfs,
# emptied at boot like the namespaces themselves.
RUNS_DIR = Path("/run/netemu/runs")
RUN_ID_RE = re.compile(r"[0-9a-f]{4}")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2

# A router's kernel settings: forwarding on; IPv6 off (netemu's networks are IPv4, and IPv6
# autoconfiguration would put unsolicited frames on every link); no reverse-path filter (paths
# are destination-based trees, so a reply may come back over another link than the request
# left by); no redirects; ICMP errors (traceroute) not rate-limited.
ROUTER_SYSCTLS = {
    "ipv4/ip_forward": "1",
    "ipv6/conf/all/disable_ipv6": "1", "ipv6/conf/default/disable_ipv6": "1",
    "ipv4/conf/all/rp_filter": "0", "ipv4/conf/default/rp_filter": "0",
    "ipv4/conf/all/send_redirects": "0", "ipv4/conf/default/send_redirects": "0",
    "ipv4/icmp_ratelimit": "0",
}


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise EmulationError(f"{what} failed: {os.strerror(ctypes.get_errno())}")


@contextmanager
def entered(netns_path: str):
    """Run the body with the calling thread inside the namespace at `netns_path` (sockets made
    there stay there), and return to the thread's namespace afterwards, also on error."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(fd, _CLONE_NEWNET), f"setns into {netns_path}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _check(_libc.setns(home, _CLONE_NEWNET), "setns back home")
    finally:
        os.close(home)


def set_sysctls(values: dict[str, str]) -> None:
    """Write /proc/sys/net/<key> = value in the calling thread's current namespace."""
    for key, value in values.items():
        with open(f"/proc/sys/net/{key}", "w") as f:
            f.write(value)


def new_run_id() -> str:
    """Four hex digits: short enough for interface names, random enough for parallel runs."""
    return secrets.token_hex(2)


def check_run_id(text: str) -> str:
    """`text` if it is a run id as `new_run_id` makes them (four lowercase hex digits), else an error."""
    if not isinstance(text, str) or not RUN_ID_RE.fullmatch(text):
        raise EmulationError(f"run id {text!r}: expected four lowercase hex digits as `netemu ps` lists them "
                             f"(e.g. 3fa2)")
    return text


def _pid_start_ticks(pid: int) -> int | None:
    """Start time of process `pid` (clock ticks after boot, /proc/PID/stat field 22), None if it is
    gone: with the pid it names one process, never a later one that reuses the pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields follow the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def register_run(run_id: str, pid: int | None = None, **meta) -> Path:
    """Record run `run_id` as live, owned by process `pid` (default this one); `meta` (scenario,
    out_dir, …) is stored beside. Registering again updates the entry."""
    check_run_id(run_id)
    pid = os.getpid() if pid is None else pid
    path = RUNS_DIR / f"{run_id}.json"
    entry = {}
    if path.exists():
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            entry = {}
    entry.update({"id": run_id, "pid": pid, "pid_start_ticks": _pid_start_ticks(pid),
                  "started": entry.get("started") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    entry.update({k: (str(v) if isinstance(v, Path) else v) for k, v in meta.items()})
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(entry) + "\n")
    os.replace(tmp, path)
    return path


def unregister_run(run_id: str) -> None:
    for suffix in (".json", ".sock"):   # the entry and the run's control socket (emulate.inject)
        try:
            (RUNS_DIR / f"{run_id}{suffix}").unlink()
        except FileNotFoundError:
            pass


def list_runs() -> list[dict]:
    """Registered runs, oldest first, each with `alive`: its owner process (same pid, same start
    time) is still there."""
    if not RUNS_DIR.exists():
        return []
    out = []
    for p in RUNS_DIR.glob("*.json"):
        try:
            e = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(e, dict) or not RUN_ID_RE.fullmatch(str(e.get("id", ""))):
            continue
        start = _pid_start_ticks(int(e.get("pid", -1))) if isinstance(e.get("pid"), int) and e["pid"] > 0 else None
        e["alive"] = start is not None and start == e.get("pid_start_ticks")
        out.append(e)
    return sorted(out, key=lambda e: str(e.get("started", "")))


def live_runs() -> list[dict]:
    return [e for e in list_runs() if e["alive"]]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise EmulationError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r


class Namespaces:
    """A set of named namespaces `netemu-<run>-<name>`, deleted together (also on error)."""

    def __init__(self, run_id: str | None = None):
        # a set made with a given run id belongs to that run (calibration chains of an engine):
        # only the set that drew the id registers it as a live run
        self._owner = run_id is None
        self.run_id = run_id or new_run_id()
        self.names: list[str] = []
        self.meta: dict = {}         # stored in the registry entry: scenario, out_dir
        self._registered = False

    def register(self, **meta) -> None:
        """Record this set as a live run (owner: this process) with `self.meta` and `meta`."""
        self.meta.update(meta)
        if self._owner:
            register_run(self.run_id, **self.meta)
            self._registered = True

    def _ensure_registered(self) -> None:
        if self._owner and not self._registered:
            self.register()

    def full(self, name: str) -> str:
        return f"{NETNS_PREFIX}{self.run_id}-{name}"

    def path(self, name: str) -> str:
        """Namespace file of `name`, as the link engine expects it."""
        return str(NETNS_DIR / self.full(name))

    def add(self, name: str, loopback: bool = True, ipv6: bool = False) -> str:
        """Create namespace `name` (loopback up; IPv6 off unless asked: netemu's networks are IPv4,
        and IPv6 autoconfiguration would put unsolicited frames on every link)."""
        full = self.full(name)
        self._ensure_registered()
        _ip("netns", "add", full)
        self.names.append(name)
        if not ipv6:
            self.run(name, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        if loopback:
            self.run(name, ["ip", "link", "set", "lo", "up"])
        return self.path(name)

    def add_routers(self, names: list[str], configure=None) -> list[str]:
        """Create many namespaces from this process (unshare + bind mount, as `ip netns add`
        does, without a fork per namespace): loopback up, `ROUTER_SYSCTLS` set, then
        `configure(name)` called while the thread is inside (open netlink sockets there).
        Returns their paths. On error, the ones made so far stay in the set (delete_all)."""
        self._ensure_registered()
        if names and (not NETNS_DIR.exists() or not any(True for _ in _mounts_of(NETNS_DIR))):
            # the first through `ip` makes /var/run/netns the shared mount `ip netns` expects
            self.add(names[0], loopback=False)
            first, names = names[0], names[1:]
            with entered(self.path(first)):
                _router_setup(first, configure)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for name in names:
                path = self.path(name)
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
                os.close(fd)
                self.names.append(name)
                _check(_libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
                try:
                    _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, _MS_BIND, None),
                           f"bind mount of {path}")
                    _router_setup(name, configure)
                finally:
                    _check(_libc.setns(home, _CLONE_NEWNET), "setns back home")
        finally:
            os.close(home)
        return [self.path(n) for n in self.names]

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

    def veth(self, a: str, b: str, addr_a: str, addr_b: str, prefix_len: int = 30,
             gso_max_segs: int | None = None) -> str:
        """Join namespaces `a` and `b` (of this set) by a veth pair with `addr_a`/`addr_b`, up;
        both ends are named `ne<run>v`, so `clean()` knows them. `gso_max_segs=1` makes the ends
        carry wire-sized packets (a capture on them then sees no 64-KB super-frames)."""
        dev = f"{TAP_PREFIX}{self.run_id}v"
        _ip("link", "add", dev, "netns", self.full(a), "type", "veth", "peer", "name", dev, "netns", self.full(b))
        for name, addr in ((a, addr_a), (b, addr_b)):
            self.run(name, ["ip", "addr", "add", f"{addr}/{prefix_len}", "dev", dev])
            if gso_max_segs is not None:
                self.run(name, ["ip", "link", "set", "dev", dev, "gso_max_segs", str(gso_max_segs)])
            self.run(name, ["ip", "link", "set", dev, "up"])
        return dev

    def delete_all(self) -> None:
        """Delete every namespace of this set; their interfaces (TAPs, veths) go with them."""
        for name in reversed(self.names):
            _delete_netns(self.path(name))
        self.names.clear()
        if self._registered:
            unregister_run(self.run_id)
            self._registered = False

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.delete_all()


def _router_setup(name: str, configure) -> None:
    set_sysctls(ROUTER_SYSCTLS)
    r = Rtnl(name)
    try:
        r.link_up(1)   # lo is ifindex 1 in every new namespace
        r.commit()
    finally:
        r.close()
    if configure:
        configure(name)


def _mounts_of(path: Path):
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == target:
                yield line


def _delete_netns(path: str) -> None:
    """What `ip netns del` does, without the fork: detach the bind mount and remove the file.
    The namespace itself goes when its last user (process, open fd) does."""
    _libc.umount2(path.encode(), _MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _kill_processes_in(ns_ids: set) -> list[int]:
    """SIGKILL every process whose network namespace is one of `ns_ids` (what a killed run left
    running inside its nodes: shells, probes, user programs)."""
    if not ns_ids:
        return []
    killed = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if _ns_id(f"/proc/{entry}/ns/net") in ns_ids:
                try:
                    os.kill(int(entry), 9)
                    killed.append(int(entry))
                except OSError:
                    pass
    return killed


def list_netemu_namespaces() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


def _link_pattern(run_id: str) -> re.Pattern:
    """Root-namespace devices netemu makes, exactly: `ne<id>` then `r`/`v` (calibration veths) or
    `k<n>` (kernel-backend veths), then the side `a`/`b`."""
    return re.compile(rf"{TAP_PREFIX}({run_id})(?:r|v|k[0-9]+)[ab]")


def _ns_run_id(name: str) -> str | None:
    rest = name[len(NETNS_PREFIX):]
    rid, sep, _ = rest.partition("-")
    return rid if sep and RUN_ID_RE.fullmatch(rid) else None


def clean(run_id: str | None = None, everything: bool = False) -> dict:
    """Remove what netemu runs left behind: their namespaces (with the interfaces inside, and the
    processes still running in them) and netemu-named devices left in the root namespace (veth
    pairs of the kernel backend and of calibration, between creation and their move). Only names
    of netemu's exact forms are touched. Runs whose owner process is alive (see `register_run`)
    are spared unless `everything`; `run_id` (validated) limits it to that one run, which is
    removed even if live (it was named). Returns what was removed, and `spared` live run ids."""
    if run_id is not None:
        check_run_id(run_id)
    runs = list_runs()
    live = {e["id"] for e in runs if e["alive"]}

    def doomed_ids(rid: str | None) -> bool:
        if rid is None:
            return False
        if run_id is not None:
            return rid == run_id
        return everything or rid not in live
    removed_ns = []
    doomed = [name for name in list_netemu_namespaces() if doomed_ids(_ns_run_id(name))]
    killed = _kill_processes_in({_ns_id(str(NETNS_DIR / n)) for n in doomed} - {None})
    for name in doomed:
        _delete_netns(str(NETNS_DIR / name))
        removed_ns.append(name)
    removed_links = []
    pattern = _link_pattern(run_id or "[0-9a-f]{4}")
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            ifname = parts[1].strip().split("@")[0]
            m = pattern.fullmatch(ifname)
            if m and doomed_ids(m.group(1)):
                _ip("link", "del", ifname, check=False)
                removed_links.append(ifname)
    for e in runs:
        if doomed_ids(e["id"]):
            unregister_run(e["id"])
    spared = sorted(live - {rid for rid in live if doomed_ids(rid)})
    return {"namespaces": removed_ns, "links": removed_links, "processes": killed, "spared": spared}


def running_as_root() -> bool:
    return os.geteuid() == 0
