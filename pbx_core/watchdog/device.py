"""/dev/watchdog: the Linux watchdog API (Documentation/watchdog/watchdog-api.rst).

Opening the device starts the timer; every write (or WDIOC_KEEPALIVE) restarts it; the
timeout is set with WDIOC_SETTIMEOUT. Closing after writing the magic character 'V'
stops it ("magic close"); closing without it leaves it running, so a supervisor that
dies is noticed by the hardware. A plain file or FIFO can stand in for the device in
tests: it takes the writes and refuses the ioctls, which is reported and tolerated.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

# <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int).
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
FEED = b"k"  # any byte but 'V' restarts the timer
MAGIC = b"V"


class WatchdogDevice:
    """An open watchdog device; `None`-safe wrappers keep the supervisor simple."""

    def __init__(self, path: str, fd: int, timeout: int | None, note: str) -> None:
        self.path = path
        self.fd: int | None = fd
        self.timeout = timeout  # seconds the hardware waits, when the driver says
        self.note = note  # how the timeout was set, for the log

    @classmethod
    def open(cls, path: str, timeout: int) -> WatchdogDevice | None:
        """Open and arm the device; None when there is none (a developer machine)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENXIO):
                return None
            raise
        buf = struct.pack("i", timeout)
        try:
            got = struct.unpack("i", fcntl.ioctl(fd, WDIOC_SETTIMEOUT, buf))[0]
            note = f"timeout set to {got} s"
            actual: int | None = got
        except OSError as e:
            # ENOTTY: not a watchdog (a test's file); EINVAL: the driver refuses that value.
            actual = None
            try:
                actual = struct.unpack("i", fcntl.ioctl(fd, WDIOC_GETTIMEOUT, buf))[0]
                note = f"cannot set the timeout ({e.strerror}); the device's is {actual} s"
            except OSError:
                note = f"cannot set the timeout ({e.strerror}); using the device's own"
        return cls(path, fd, actual, note)

    def feed(self) -> None:
        if self.fd is not None:
            os.write(self.fd, FEED)

    def magic_close(self) -> None:
        """Stop the timer (clean shutdown)."""
        if self.fd is not None:
            try:
                os.write(self.fd, MAGIC)
            finally:
                os.close(self.fd)
                self.fd = None

    def abandon(self) -> None:
        """Close without the magic character: the timer keeps running."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
