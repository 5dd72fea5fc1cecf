"""netemu's exceptions: one short tree under `NetemuError`.

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
