"""netemu's exceptions: one short tree under `NetemuError`.

    NetemuError                 every error netemu raises on purpose; the CLI prints it as one
    │                           line and exits with code 2
    ├── ScenarioError           a scenario file or a file it references (path, key, message)
    │   └── TLEError            a TLE file: layout, checksum, numbers, age
    ├── PlanError               a plan that cannot be computed (memory, address plan) or read
    ├── TraceError              a packet capture that cannot be read, mapped or replayed
    ├── EmulationError          the live network: root, kernel features, options, the engines,
    │                           the player, calibration, another live run
    └── OutputError             an output directory: a file, read-only, full, someone else's

Every message says what was expected, what was found and, where it helps, what to do.
"""

from __future__ import annotations


class NetemuError(Exception):
    """Base class of every error netemu raises on purpose."""


class ScenarioError(NetemuError):
    """A scenario file (or a file it references: TLEs, station lists, pairs) is invalid."""

    def __init__(self, path: object, key: str, message: str):
        self.path = str(path)
        self.key = key
        self.message = message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class TLEError(ScenarioError):
    """A TLE file is malformed (bad layout, checksum or numbers)."""


class PlanError(NetemuError):
    """A plan cannot be computed or read (e.g. an output directory that is not a plan)."""


class TraceError(NetemuError):
    """A packet trace cannot be read or mapped."""


class EmulationError(NetemuError):
    """The emulated network cannot be built, driven or torn down."""


class OutputError(NetemuError):
    """An output directory cannot be used (a file, not writable, full, or holding other files)."""
