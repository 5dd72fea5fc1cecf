"""Output directories of `netemu run`, `replay` and `plan`: checked before anything is built,
never mixed with another run's files, written atomically.

A directory is netemu's when it holds `run.json` (a run or replay) or a plan's `summary.json`,
`nodes.csv` and `scenario.toml`. Such a directory is replaced only when asked (`--overwrite`);
any other non-empty directory is refused.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError
from .plan.files import atomic_write

__all__ = ["OutputError", "check_out_dir", "prepare_out_dir", "staged_out_dir", "atomic_write", "MIN_FREE_MIB"]

MIN_FREE_MIB = 50          # a default-scenario run writes ~10 MiB; Starlink-sized runs tens of MiB
_PROBE_BYTES = 64 * 1024   # the writability probe writes this much (a full filesystem refuses it)
_PLAN_MARKERS = ("summary.json", "nodes.csv", "scenario.toml")
STAGE_PREFIX = ".netemu-partial-"   # files being written (staged_out_dir); a killed writer's leftover


def _kind(path: Path) -> str | None:
    """'run' or 'plan' when `path` holds netemu's outputs, else None."""
    if (path / "run.json").is_file():
        return "run"
    if all((path / m).is_file() for m in _PLAN_MARKERS):
        return "plan"
    return None


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False, flag: str = "-o", for_plan: bool = False) -> None:
    """Refuse `out_dir` before anything is built: a file; a non-empty directory that is not
    netemu's; an earlier netemu run or plan unless `overwrite` (`for_plan`: an earlier plan is
    fine, `netemu plan` rewrites the same fixed set of files); a place where nothing can be
    written (the directory, or its nearest existing parent, refuses a test file) or with less than
    `MIN_FREE_MIB` free. Creates nothing (the test file is removed)."""
    out = Path(out_dir)
    shown = f"{flag} {out_dir}"
    if out.is_symlink() and not out.exists():
        raise OutputError(f"{shown}: a dangling symbolic link; expected a directory")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{shown}: is a file; expected a directory (new or empty) for the results")
    if out.is_dir():
        try:
            entries = [e for e in out.iterdir() if not e.name.startswith(STAGE_PREFIX)]
        except OSError as e:
            raise OutputError(f"{shown}: cannot list the directory: {e.strerror}") from None
        if entries:
            kind = _kind(out)
            if kind is None:
                raise OutputError(f"{shown}: the directory is not empty and holds no netemu run or plan "
                                  f"({len(entries)} entries, e.g. {entries[0].name!r}); choose a new or empty "
                                  f"directory")
            if not overwrite and not (for_plan and kind == "plan"):
                raise OutputError(f"{shown}: holds an earlier netemu {kind} ({'run.json' if kind == 'run' else 'summary.json'}); "
                                  f"pass --overwrite to replace it, or choose another directory")
    base = out if out.is_dir() else _existing_ancestor(out)
    if not base.is_dir():
        raise OutputError(f"{shown}: {base} is not a directory; cannot create {out} under it")
    probe = base / f".netemu-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        why = ("the filesystem is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
               "the filesystem is read-only" if e.errno == errno.EROFS else
               "permission denied" if e.errno in (errno.EACCES, errno.EPERM) else e.strerror)
        raise OutputError(f"{shown}: cannot write in {base}: {why}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    st = os.statvfs(base)
    free_mib = st.f_bavail * st.f_frsize / 2**20
    if free_mib < MIN_FREE_MIB:
        raise OutputError(f"{shown}: only {free_mib:.1f} MiB free on the filesystem of {base}; "
                          f"expected at least {MIN_FREE_MIB} MiB for the results")


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Create `out_dir`, or empty it when it holds an earlier netemu run or plan and `overwrite`
    (its whole content goes: a run directory is netemu's alone). Call after `check_out_dir`."""
    out = Path(out_dir)
    if out.is_dir() and overwrite and _kind(out) is not None:
        for entry in out.iterdir():
            _remove(entry)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"-o {out_dir}: cannot create the directory: {e.strerror}") from None
    return out


@contextmanager
def staged_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A directory inside `out_dir` to write outputs into, for writers that take long and can
    fail midway (the streamed planner). On success its files replace their namesakes in
    `out_dir` (which is emptied first when it holds an earlier netemu run or plan and
    `overwrite`); on any error, Ctrl-C included, it is removed and `out_dir` is left as it was
    (removed if this made it). Call after `check_out_dir`."""
    out = Path(out_dir)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"-o {out_dir}: cannot create the directory: {e.strerror}") from None
    for entry in out.glob(STAGE_PREFIX + "*"):     # what a killed writer left
        shutil.rmtree(entry, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        yield stage
        if overwrite and _kind(out) is not None:
            for entry in out.iterdir():
                if entry != stage:
                    _remove(entry)
        for f in stage.iterdir():
            dest = out / f.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(f, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()
