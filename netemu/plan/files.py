"""Files: those named by users (scenario, TLE, station list, pairs, packet captures) are read only
when they are regular files within a size limit; those netemu writes are written atomically.

A FIFO would block the planner forever, a character device such as /dev/zero would fill memory,
and a symlink loop makes `Path.resolve` raise `RuntimeError`: each becomes one clear error here.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["MAX_TEXT_BYTES", "MAX_CAPTURE_BYTES", "resolve_path", "open_input", "read_input", "atomic_write"]

MAX_TEXT_BYTES = 64 * 2**20
"""Largest scenario, TLE, station or pairs file read (64 MiB: ~400,000 TLEs)."""

MAX_CAPTURE_BYTES = 4 * 2**30
"""Largest packet capture read (4 GiB: its packet columns then take a few GiB of memory)."""

Fail = Callable[[str], Exception]


def resolve_path(path: str | Path) -> Path:
    """`path` made absolute, symlinks resolved where they can be (a loop stays unresolved, so
    opening it reports the loop)."""
    p = Path(path)
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def _size_text(n_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_input(path: str | Path, max_bytes: int, fail: Fail) -> BinaryIO:
    """Open `path` for reading if it is a regular file of at most `max_bytes`.

    Otherwise raises `fail(problem)`, problem being e.g. "x.tle is a FIFO (named pipe), not a
    regular file". Opened without blocking, so a FIFO is detected rather than waited on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise fail(f"{path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise fail(f"{path} is a symbolic link loop") from None
        raise fail(f"cannot read {path} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise fail(f"{path} holds {_size_text(st.st_size)}, more than the limit of {_size_text(max_bytes)}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: str | Path, max_bytes: int, fail: Fail) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes` (see `open_input`)."""
    with open_input(path, max_bytes, fail) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise fail(f"cannot read {path} ({e.strerror or e})") from None
    if len(data) > max_bytes:  # it grew after the check
        raise fail(f"{path} holds more than the limit of {_size_text(max_bytes)}")
    return data


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` into a temporary file beside `path`, then rename it onto `path`: a failure
    (a full disk) leaves no truncated file, only no file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
