"""Kernel edge of the link engine: TAP devices, timerfd, parent-death signal. Linux only, root.

Small wrappers over ioctl/ctypes; nothing here knows about links or time steps.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import struct

from ..errors import EmulationError

__all__ = ["open_tap", "unpersist_tap", "setns", "Timer", "die_with_parent", "TUN_DEVICE"]

TUN_DEVICE = "/dev/net/tun"
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_TUNSETOFFLOAD = 0x400454D0
_TUNSETVNETHDRSZ = 0x400454D8
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_TUN_F_CSUM, _TUN_F_TSO4, _TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_HDR_BYTES = 12  # struct virtio_net_hdr_v1 (with num_buffers), set with TUNSETVNETHDRSZ

_libc = ctypes.CDLL(None, use_errno=True)


def open_tap(name: str, vnet_hdr: bool = False) -> int:
    """Create a persistent TAP device `name` in the caller's namespace; return its non-blocking fd.

    Persistent, because closing thousands of non-persistent TAPs unregisters them one by one
    (tens of seconds); persistent ones go in one batch when their namespace is deleted.
    With `vnet_hdr`, frames carry a virtio-net header and may be GSO super-frames (up to 64 KB).
    """
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise EmulationError(f"cannot open {TUN_DEVICE} ({e.strerror}); expected the tun module and root. "
                             "Run `netemu doctor`.") from None
    flags = _IFF_TAP | _IFF_NO_PI | (_IFF_VNET_HDR if vnet_hdr else 0)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        fcntl.ioctl(fd, _TUNSETPERSIST, 1)
        if vnet_hdr:
            fcntl.ioctl(fd, _TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_BYTES))
            fcntl.ioctl(fd, _TUNSETOFFLOAD, _TUN_F_CSUM | _TUN_F_TSO4 | _TUN_F_TSO6)
    except OSError as e:
        os.close(fd)
        raise EmulationError(f"cannot create TAP device {name!r}: {e.strerror}") from None
    return fd


def unpersist_tap(fd: int) -> None:
    """Make a TAP non-persistent: the kernel deletes the device when `fd` is closed."""
    try:
        fcntl.ioctl(fd, _TUNSETPERSIST, 0)
    except OSError:
        pass


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timer:
    """A non-blocking CLOCK_MONOTONIC timerfd armed at absolute times (an epoll timeout alone
    wakes ~1 ms late)."""

    _CLOCK_MONOTONIC = 1
    _TFD_NONBLOCK = os.O_NONBLOCK
    _TFD_CLOEXEC = os.O_CLOEXEC
    _TFD_TIMER_ABSTIME = 1

    def __init__(self):
        fd = _libc.timerfd_create(self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC)
        if fd < 0:
            raise EmulationError(f"timerfd_create failed: {os.strerror(ctypes.get_errno())}")
        self.fd = fd
        self._spec = _Itimerspec()
        self.armed_at = 0.0

    def arm(self, t_mono: float) -> None:
        """Fire at monotonic time `t_mono` (seconds); 0 disarms."""
        self.armed_at = t_mono
        if t_mono > 0:
            ns = int(t_mono * 1e9)
            self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
            if self._spec.it_value.tv_sec == 0 and self._spec.it_value.tv_nsec == 0:
                self._spec.it_value.tv_nsec = 1
        else:
            self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        if _libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            raise EmulationError(f"timerfd_settime failed: {os.strerror(ctypes.get_errno())}")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    CLONE_NEWNET = 0x40000000
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise EmulationError(f"setns failed: {os.strerror(ctypes.get_errno())}")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    PR_SET_PDEATHSIG = 1
    if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise EmulationError(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err) or errno.errorcode.get(err)}")
