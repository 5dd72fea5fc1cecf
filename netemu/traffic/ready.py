"""The start barrier of a replay's programs: each says when it is set up, then waits for the
instant trace time 0 is due.

A program started with a pipe on its stdout and stdin (`--hold`, or `hold` in an agent's spec)
writes `ready` on stdout once it is set up (sockets bound, servers listening), then reads one line
`go T0_MONO` (CLOCK_MONOTONIC seconds) from stdin and plays its schedule from that instant. The
parent (`wait_ready`, `release`) starts every program first, waits until all have said ready and
only then fixes trace time 0: a program that was slow to start (Python takes a moment, more on a
busy CPU) can no longer find its peer not listening yet, nor miss its first instants.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["READY_LINE", "say_ready", "read_go", "wait_ready", "release"]

READY_LINE = b"ready\n"


# --------------------------------------------------------------------------- in the program

def say_ready() -> None:
    """Tell the parent this program is set up (one line on stdout)."""
    os.write(sys.stdout.fileno(), READY_LINE)


def read_go() -> float:
    """Block until the parent says `go T0_MONO`; returns T0_MONO (CLOCK_MONOTONIC seconds).
    Raises SystemExit when stdin ends first (the parent gave up: nothing to play)."""
    line = sys.stdin.buffer.readline()
    parts = line.split()
    if len(parts) != 2 or parts[0] != b"go":
        raise SystemExit(f"expected 'go T0_MONO' on stdin, found {line[:60]!r}")
    return float(parts[1])


# --------------------------------------------------------------------------- in the parent

def wait_ready(procs: Sequence[tuple[str, subprocess.Popen]], timeout_s: float) -> dict[str, float]:
    """Wait until every (name, process) has written its ready line on its stdout pipe; returns
    {name: CLOCK_MONOTONIC seconds at which the parent saw it}. Raises RuntimeError naming the
    first program that exited, or those still silent after `timeout_s`, or wrote something else."""
    deadline = time.monotonic() + timeout_s
    waiting = {p.stdout.fileno(): (name, p) for name, p in procs}
    got: dict[int, bytes] = {fd: b"" for fd in waiting}
    seen: dict[str, float] = {}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(sorted(n for n, _ in waiting.values()))
            raise RuntimeError(f"not ready after {timeout_s:g} s: {names}")
        readable, _, _ = select.select(list(waiting), [], [], min(left, 0.05))
        for fd in readable:
            name, p = waiting[fd]
            chunk = os.read(fd, 64)
            got[fd] += chunk
            if got[fd].startswith(READY_LINE):
                seen[name] = time.monotonic()
                del waiting[fd]
            elif not chunk or len(got[fd]) >= len(READY_LINE):
                p.poll()
                raise RuntimeError(f"{name} exited (code {p.returncode}) before it was ready"
                                   if not chunk else f"{name} wrote {got[fd][:40]!r}, not its ready line")
        for fd, (name, p) in list(waiting.items()):
            if p.poll() is not None and fd not in readable:
                raise RuntimeError(f"{name} exited (code {p.returncode}) before it was ready")
    return seen


def release(procs: Sequence[subprocess.Popen], t0_mono: float) -> None:
    """Send `go T0_MONO` to every held process and close the pipes (a program that has exited
    meanwhile is left to the caller's failure check)."""
    line = f"go {t0_mono:.9f}\n".encode()
    for p in procs:
        try:
            p.stdin.write(line)
            p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except OSError:
                pass
