"""A VT100 line terminal over any byte stream (a serial port, a pty, a socket).

No curses and no full-screen output: the console writes lines and reads lines. Input
is edited here, as a dumb terminal's user expects: printable characters are echoed,
Backspace/DEL erase one character ("\\b \\b"), Ctrl-U erases the line, Ctrl-C cancels,
Ctrl-D on an empty line ends the session, CR, LF or CRLF end a line. Escape sequences
(arrow keys, the answer to a cursor query such as busybox's ESC[6n) are swallowed, so
they never end up in a value, and no other control character (C0 or C1) is kept or
echoed. A line holds at most MAX_LINE characters; the rest is dropped. Any byte
sequence gives a line, None (a timeout), InputCancelledError or HangupError. Output
turns "\\n" into "\\r\\n" (the line is raw).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import select
import termios
import time
import tty
from collections.abc import Iterator
from typing import Protocol

MAX_LINE = 4096


class InputCancelledError(Exception):
    """Ctrl-C: abandon what is being typed or asked."""


class HangupError(Exception):
    """The line is gone (EOF), Ctrl-D on an empty line, or the session idled out."""


class Channel(Protocol):
    def read(self, timeout: float | None) -> bytes:
        """Some bytes; b"" when `timeout` passed; raises HangupError at end of stream."""
        ...

    def write(self, data: bytes) -> None: ...


class FdChannel:
    """A channel on file descriptors: a tty, one end of a pty or of a socketpair."""

    def __init__(self, rfd: int, wfd: int | None = None) -> None:
        self.rfd = rfd
        self.wfd = rfd if wfd is None else wfd

    def read(self, timeout: float | None) -> bytes:
        try:
            ready, _, _ = select.select([self.rfd], [], [], timeout)
        except InterruptedError:
            return b""
        if not ready:
            return b""
        try:
            data = os.read(self.rfd, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # the other side of a pty closed
                raise HangupError from None
            raise
        if not data:
            raise HangupError
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.wfd, view) :]
            except BlockingIOError:
                select.select([], [self.wfd], [], 1.0)
            except OSError as e:
                if e.errno in (errno.EIO, errno.EPIPE, errno.ECONNRESET):
                    raise HangupError from None
                raise


def cooked_tty(fd: int) -> None:
    """A person's line settings (like `stty sane`: line editing, echo, Ctrl-C as a
    signal, CR to NL, NL to CRNL on output), for the maintenance shell."""
    if not os.isatty(fd):
        return
    with contextlib.suppress(termios.error, OSError):
        attrs = termios.tcgetattr(fd)
        attrs[0] = (attrs[0] | termios.ICRNL | termios.IXON) & ~(termios.INLCR | termios.IGNCR)
        attrs[1] |= termios.OPOST | termios.ONLCR
        attrs[3] |= (
            termios.ISIG | termios.ICANON | termios.ECHO | termios.ECHOE | termios.ECHOK
        ) | termios.IEXTEN
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


@contextlib.contextmanager
def raw_tty(fd: int, baud: int | None = None) -> Iterator[None]:
    """Put a tty in raw mode (8N1, no echo, no flow control), restore it afterwards."""
    if not os.isatty(fd):
        yield
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        attrs = termios.tcgetattr(fd)
        attrs[0] &= ~(termios.IXON | termios.IXOFF | termios.ICRNL)
        attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB | termios.CSTOPB)) | termios.CS8
        attrs[2] |= termios.CLOCAL | termios.CREAD
        if baud is not None:
            speed = getattr(termios, f"B{baud}")
            attrs[4] = attrs[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


class Terminal:
    """Line input and output on a channel; `idle` seconds without a key log out."""

    def __init__(self, channel: Channel, *, idle: float | None = None) -> None:
        self.channel = channel
        self.idle = idle
        self.pending = bytearray()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.after_cr = False

    def write(self, text: str) -> None:
        self.channel.write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def _byte(self, deadline: float | None) -> int | None:
        """The next input byte; None when `deadline` passed."""
        while not self.pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.pending += self.channel.read(left)
        b = self.pending[0]
        del self.pending[0]
        return b

    def drain(self, limit: float = 1.0) -> None:
        """Drop input typed ahead (e.g. keys pressed during a delay), for at most
        `limit` seconds: a line that never stops sending must not hold us here."""
        self.pending.clear()
        deadline = time.monotonic() + limit
        while self.channel.read(0) and time.monotonic() < deadline:
            pass

    def read_line(
        self,
        prompt: str = "",
        *,
        echo: bool = True,
        secret: bool = False,
        timeout: float | None = None,
    ) -> str | None:
        """One edited line without its end. None when `timeout` passed (if given);
        HangupError when the session idles out, InputCancelledError on Ctrl-C."""
        if prompt:
            self.write(prompt)
        buf: list[str] = []
        self.decoder.reset()  # half a UTF-8 character from the last line is not this one's
        wait = timeout if timeout is not None else self.idle
        deadline = None if wait is None else time.monotonic() + wait
        show = echo and not secret
        while True:
            b = self._byte(deadline)
            if b is None:
                if timeout is not None:
                    return None
                raise HangupError("idle")
            if self.idle is not None and timeout is None:
                deadline = time.monotonic() + self.idle
            if b == 0x0A and self.after_cr:  # the LF of a CRLF
                self.after_cr = False
                continue
            self.after_cr = b == 0x0D
            if b in (0x0D, 0x0A):
                if echo:
                    self.write("\n")
                return "".join(buf)
            if b in (0x08, 0x7F):
                if buf:
                    buf.pop()
                    if show:
                        self.write("\b \b")
                continue
            if b == 0x03:
                if echo:
                    self.write("^C\n")
                raise InputCancelledError
            if b == 0x04:
                if not buf:
                    raise HangupError("Ctrl-D")
                continue
            if b == 0x15:  # Ctrl-U
                if show:
                    self.write("\b \b" * len(buf))
                buf.clear()
                continue
            if b == 0x1B:
                self._skip_escape(deadline)
                continue
            if b < 0x20:
                continue  # other control characters: a dumb terminal's noise
            for ch in self.decoder.decode(bytes([b])):
                # C1 controls (U+0080-U+009F; U+009B is a CSI to some terminals) are
                # noise like C0 ones; the line is at most MAX_LINE characters.
                if 0x80 <= ord(ch) < 0xA0 or len(buf) >= MAX_LINE:
                    continue
                buf.append(ch)
                if show:
                    self.write(ch)

    def _skip_escape(self, deadline: float | None) -> None:
        """ESC [ params final, ESC O x, or ESC x: read and drop."""
        short = time.monotonic() + 0.05
        limit = short if deadline is None else min(short, deadline)
        b = self._byte(limit)
        if b == ord("["):
            while (b := self._byte(limit)) is not None and not 0x40 <= b <= 0x7E:
                pass
        elif b == ord("O"):
            self._byte(limit)
