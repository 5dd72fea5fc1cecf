"""The guard of a cluster host's run (kernel edge; root): `python -m netemu.emulate.hostguard`.

Reads namespace files from stdin, one a line, written by the HostAgent as it makes them. When
stdin ends without a final "done" line (the agent's process died: its worker was killed), it
kills the processes left in those namespaces and deletes them (their TAPs and routes go with
them), so a lost host keeps nothing of the run.
"""

from __future__ import annotations

import signal
import sys

from .netns import _delete_netns, _kill_processes_in, _ns_id


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    paths: list[str] = []
    for line in sys.stdin:
        line = line.strip()
        if line == "done":
            return 0
        if line:
            paths.append(line)
    _kill_processes_in({_ns_id(p) for p in paths} - {None})
    for p in paths:
        _delete_netns(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
