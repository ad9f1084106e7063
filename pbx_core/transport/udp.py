"""UDP endpoint on a plain non-blocking socket driven by `loop.add_reader`.

Why not asyncio's DatagramProtocol: the stock selector transport allocates its full
receive size (256 KiB) for every datagram, which costs more than parsing the SIP
message. Here one buffer is reused and each wake-up drains
the socket (bounded, so TCP and timers still get their turn).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("pbx.transport")

# How many datagrams one wake-up may handle before yielding to the loop.
_BATCH = 64
_BUFSIZE = 65536

DatagramHandler = Callable[[bytes, tuple[str, int]], None]


class UdpEndpoint:
    """One bound UDP socket. `on_datagram(data, (host, port))` is called per datagram;
    an exception there is logged and the endpoint keeps serving (one bad packet must
    not take the PBX down)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # No SO_REUSEADDR: on Linux it lets a second daemon bind the same UDP port
            # and silently take half the packets; a port in use must fail loudly.
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self._buf = bytearray(_BUFSIZE)
        self._view = memoryview(self._buf)
        self._handler: DatagramHandler | None = None
        self.dropped_sends = 0

    def start(self, on_datagram: DatagramHandler) -> None:
        self._handler = on_datagram
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self.sock
        view = self._view
        handler = self._handler
        if handler is None:
            return
        for _ in range(_BATCH):
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors from earlier sends surface here on Linux: not fatal.
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                log.warning("UDP %s:%s receive error: %s", self.host, self.port, exc)
                return
            try:
                handler(bytes(view[:n]), (addr[0], addr[1]))
            except Exception:
                log.exception("error handling a datagram from %s:%s", addr[0], addr[1])

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped_sends += 1  # UDP may lose packets; the transaction retransmits
        except OSError as exc:
            log.warning("UDP send to %s:%s failed: %s", addr[0], addr[1], exc)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
