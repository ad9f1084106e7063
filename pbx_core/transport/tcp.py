"""SIP over TCP: framing by Content-Length (RFC 3261 §18.3), CRLF keepalives
(RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF pong). Each
connection enters the ConnectionTable (connections.py) when it is made, so requests
and responses reuse it and the table's bounds apply to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import MAX_MESSAGE, frame_length
from pbx_core.transport.connections import ConnectionTable

log = logging.getLogger("pbx.transport")

# (raw message bytes, connection) -> None
FrameHandler = Callable[[bytes, "TcpConnection"], None]
# (raw bytes that failed framing, error, connection) -> None
FrameErrorHandler = Callable[[bytes, ParseError, "TcpConnection"], None]

# Bound memory: a peer may not keep more than this unframed.
_MAX_BUFFER = 2 * MAX_MESSAGE


class TcpConnection(asyncio.Protocol):
    def __init__(
        self,
        table: ConnectionTable,
        on_frame: FrameHandler,
        on_error: FrameErrorHandler,
        *,
        inbound: bool = True,
    ) -> None:
        self.table = table
        self.inbound = inbound
        self.on_frame = on_frame
        self.on_error = on_error
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.buffer = bytearray()
        self.closed = False
        # Set by the table: when the last complete message came (or the connect),
        # and when the message now being received began (None: between messages).
        self.last_activity = 0.0
        self.message_started: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101  # asyncio contract
        self.transport = transport
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peer = (peer[0], peer[1])
        self.local = (local[0], local[1])
        if not self.table.admit(self, inbound=self.inbound):
            self.closed = True
            transport.abort()  # refused: no lingering close for a flood

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.table.remove(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self.buffer
        buf += data
        try:
            self._frames(buf)
        finally:
            if not buf:
                self.message_started = None
            elif self.message_started is None:
                self.message_started = self.table.clock()

    def _frames(self, buf: bytearray) -> None:
        while buf:
            # Keepalives between messages: CRLFCRLF ping gets a CRLF pong.
            if buf[0] in b"\r\n":
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    self.write(b"\r\n")
                    continue
                if bytes(buf) in (b"\r", b"\r\n", b"\r\n\r"):
                    return  # wait for the rest of a ping
                del buf[: 2 if buf.startswith(b"\r\n") else 1]
                continue
            try:
                length = frame_length(buf)
            except ParseError as exc:
                # Framing is lost: answer if we can, then drop the connection.
                raw = bytes(buf)
                buf.clear()
                self.on_error(raw, exc, self)
                self.close()
                return
            if length is None:
                if len(buf) > _MAX_BUFFER:
                    self.close()
                return
            frame = bytes(buf[:length])
            del buf[:length]
            self.table.touch(self)
            self.message_started = None  # whatever follows is a new message
            try:
                self.on_frame(frame, self)
            except Exception:
                log.exception("error handling a TCP message from %s:%s", *self.peer)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Close now and leave the table at once (asyncio reports the loss later:
        counting the connection until then would let a burst overshoot the cap)."""
        self.table.remove(self)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
