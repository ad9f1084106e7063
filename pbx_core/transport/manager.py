"""The transport layer (RFC 3261 §18): listeners, received/rport stamping, response
routing, TCP connection reuse, the UDP→TCP switch for large requests, stateless
error answers, and the SIP trace.

Upward it hands parsed messages to `on_message(msg, source)`; downward it takes
messages with `send(msg, dest)`. `source`/`dest` are (transport, host, port).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable

from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.transport.connections import DEFAULT_LIMITS, ConnectionTable, InUse, TcpLimits
from pbx_core.transport.stateless import error_response
from pbx_core.transport.tcp import TcpConnection
from pbx_core.transport.trace import Trace
from pbx_core.transport.udp import UdpEndpoint

log = logging.getLogger("pbx.transport")

Address = tuple[str, str, int]
MessageHandler = Callable[[Request | Response, Address], None]

# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU (1500) goes over TCP.
UDP_REQUEST_LIMIT = 1300
DEFAULT_PORT = 5060


def parse_listen(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT', 'ADDR' or '[v6]' → (host, port); an address without
    a port gets `default_port` (`pbx run`: the setting sip_port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host or (port and not port.isdigit()) or int(port or default_port) > 65535:
        raise ValueError(f"invalid listen address {text!r} (expected ADDR:PORT)")
    return host, int(port or default_port)


class TransportManager:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: MessageHandler,
        trace: Trace | None = None,
        tasks: asyncio.TaskGroup | None = None,
        limits: TcpLimits = DEFAULT_LIMITS,
    ) -> None:
        self.loop = loop
        self.on_message = on_message
        self.trace = trace
        self.tasks = tasks
        self.udp: list[UdpEndpoint] = []
        self.tcp_servers: list[asyncio.Server] = []
        self.connections = ConnectionTable(limits.within_fd_limit(), loop.time)
        self.stats = {"in": 0, "out": 0, "bad": 0, "dropped": 0}
        self._local_cache: dict[str, str] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def set_in_use(self, in_use: InUse) -> None:
        """How the PBX says which TCP peers (host, port) live registrations and calls
        use: those connections are spared by eviction and the idle timeout."""
        self.connections.in_use = in_use

    # -- listening ----------------------------------------------------------------
    async def listen(self, host: str, port: int) -> None:
        """Bind UDP and TCP on host:port (port 0 picks a free one, the same for both
        when possible)."""
        udp = UdpEndpoint(self.loop, host, port)
        udp.start(functools.partial(self._on_datagram, ep=udp))
        self.udp.append(udp)
        server = await self.loop.create_server(self._new_connection, host, udp.port)
        self.tcp_servers.append(server)
        if self._sweeper is None:
            self._sweep()

    def _sweep(self) -> None:
        self.connections.sweep(self.loop.time())
        interval = self.connections.limits.sweep_interval
        self._sweeper = self.loop.call_later(interval, self._sweep)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(ep.host, ep.port) for ep in self.udp]

    def local_address_for(self, peer_host: str) -> tuple[str, int]:
        """Our (address, port) as a peer at peer_host sees it: the listener's own
        address, or for a wildcard listener the source address the kernel would
        route from (found with a connected UDP socket: no packet is sent)."""
        ep = self._udp_for(peer_host) if self.udp else None
        if ep is None:
            return ("127.0.0.1", DEFAULT_PORT)
        if ep.host not in ("0.0.0.0", "::"):
            return (ep.host, ep.port)
        cached = self._local_cache.get(peer_host)
        if cached is None:
            family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((peer_host, 9))
                    cached = probe.getsockname()[0]
            except OSError:
                cached = "127.0.0.1" if family == socket.AF_INET else "::1"
            if len(self._local_cache) > 1024:
                self._local_cache.clear()
            self._local_cache[peer_host] = cached
        return (cached, ep.port)

    def _new_connection(self) -> TcpConnection:
        # The table admits it (or refuses it) once its peer is known.
        return TcpConnection(self.connections, self._on_frame, self._on_frame_error)

    # -- receiving ----------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: tuple[str, int], ep: UdpEndpoint) -> None:
        if len(data) <= 4 and not data.strip(b"\r\n\x00 "):
            return  # NAT keepalive (CRLF / zero bytes): nothing to answer
        if self.trace:
            self.trace.message("in", "UDP", addr, data)
        try:
            msg = parse_message(data)
        except ParseError as exc:
            self._answer_garbage(data, exc, addr, lambda out: self._send_udp(ep, out, addr))
            return
        self._deliver(
            msg, ("UDP", addr[0], addr[1]), data, lambda out: self._send_udp(ep, out, addr)
        )

    def _on_frame(self, data: bytes, conn: TcpConnection) -> None:
        if self.trace:
            self.trace.message("in", "TCP", conn.peer, data)
        try:
            msg = parse_message(data, stream=True)
        except ParseError as exc:
            self._answer_garbage(data, exc, conn.peer, lambda out: self._send_tcp(conn, out))
            return
        self._deliver(
            msg, ("TCP", conn.peer[0], conn.peer[1]), data, lambda out: self._send_tcp(conn, out)
        )

    def _on_frame_error(self, data: bytes, exc: ParseError, conn: TcpConnection) -> None:
        if self.trace:
            self.trace.message("in", "TCP", conn.peer, data)
        self._answer_garbage(data, exc, conn.peer, lambda out: self._send_tcp(conn, out))

    def _deliver(
        self,
        msg: Request | Response,
        source: Address,
        data: bytes,
        answer: Callable[[bytes], None],
    ) -> None:
        self.stats["in"] += 1
        if isinstance(msg, Request):
            try:
                self._stamp_via(msg, source)
            except ParseError as exc:
                self._answer_garbage(data, exc, (source[1], source[2]), answer)
                return
        self.on_message(msg, source)

    @staticmethod
    def _stamp_via(msg: Request, source: Address) -> None:
        """RFC 3261 §18.2.1 `received`, RFC 3581 §4 `rport`."""
        via = msg.top_via
        _transport, host, port = source
        if via.has_rport:
            msg.replace_top_via(via.received_from(host, port))
        elif via.host.strip("[]").lower() != host.lower() or via.received is not None:
            # A `received` the sender wrote itself is replaced by the truth: it would
            # otherwise choose where the answer goes (a reflector).
            msg.replace_top_via(via.received_from(host, None))

    def _answer_garbage(
        self,
        data: bytes,
        exc: ParseError,
        peer: tuple[str, int],
        answer: Callable[[bytes], None],
    ) -> None:
        """A request that does not parse gets its status when it can be routed, and
        one log line; noise that is no request is dropped with a debug line only."""
        self.stats["bad"] += 1
        out = error_response(data, exc.status, exc.reason)
        method = data.lstrip(b"\r\n").split(b" ", 1)[0][:20].decode("ascii", "replace")
        if out is None:
            level = logging.INFO if method == "ACK" else logging.DEBUG
            log.log(level, "unparsable %s from %s:%s dropped: %s", method, *peer, exc.reason)
            return
        log.info("%s from %s:%s refused with %d: %s", method, *peer, exc.status, exc.reason)
        answer(out)

    # -- sending ------------------------------------------------------------------
    def send(self, msg: Request | Response, dest: Address) -> None:
        """Send a message. Responses follow RFC 3261 §18.2.2 from their top Via;
        `dest` is where the request came from (used for connection reuse)."""
        data = bytes(msg)
        transport, host, port = dest
        if isinstance(msg, Response):
            transport, host, port = self._response_target(msg, dest)
        elif transport == "UDP" and len(data) > UDP_REQUEST_LIMIT:
            # RFC 3261 §18.1.1: too big for UDP; the Via must say TCP.
            via = msg.top_via
            msg.replace_top_via(type(via)("TCP", via.host, via.port, via.params, via.protocol))
            data = bytes(msg)
            transport = "TCP"
        self.stats["out"] += 1
        if transport == "UDP":
            if not self.udp:
                log.warning("no UDP listener to send to %s:%s", host, port)
                return
            self._send_udp(self._udp_for(host), data, (host, port))
            return
        conn = self.connections.get((host, port))
        if conn is not None and not conn.closed:
            self._send_tcp(conn, data)
        elif self.tasks is not None:
            self.tasks.create_task(self._connect_and_send(host, port, data))
        else:
            self.stats["dropped"] += 1
            log.warning("no TCP connection to %s:%s", host, port)

    def _response_target(self, msg: Response, dest: Address) -> Address:
        """Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4). `dest` is where its
        request came from, and the response goes back over that same transport,
        whatever the Via says: a UDP request whose Via names TCP must not make us
        open a connection to an address the message chose (a connect reflector).
        A stream request: on its connection, or when that is gone a new one to the
        host it came from and its sent-by port. A datagram: to received (the source,
        stamped on arrival) and rport, else the sent-by port. maddr is not followed:
        it would send answers to any address a sender names (a UDP reflector)."""
        via = msg.top_via
        transport = dest[0]
        received = rport = None
        # One pass for the two that routing needs (backwards: the first one wins).
        for k, v in reversed(via.params):
            name = k.lower()
            if name == "received":
                received = v
            elif name == "rport":
                rport = v
        host = received or via.host.strip("[]")
        if transport != "UDP":
            if (dest[1], dest[2]) in self.connections:
                return dest
            return (transport, host, via.port or DEFAULT_PORT)
        port = int(rport) if rport else via.port or DEFAULT_PORT
        return ("UDP", host, port)

    def _udp_for(self, host: str) -> UdpEndpoint:
        want_v6 = ":" in host
        for ep in self.udp:
            if (":" in ep.host) == want_v6:
                return ep
        return self.udp[0]

    def _send_udp(self, ep: UdpEndpoint, data: bytes, addr: tuple[str, int]) -> None:
        if self.trace:
            self.trace.message("out", "UDP", addr, data)
        ep.sendto(data, addr)

    def _send_tcp(self, conn: TcpConnection, data: bytes) -> None:
        if self.trace:
            self.trace.message("out", "TCP", conn.peer, data)
        conn.write(data)

    async def _connect_and_send(self, host: str, port: int, data: bytes) -> None:
        try:
            _t, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: TcpConnection(
                        self.connections, self._on_frame, self._on_frame_error, inbound=False
                    ),
                    host,
                    port,
                ),
                timeout=10,
            )
        except (OSError, TimeoutError) as exc:
            self.stats["dropped"] += 1
            log.warning("TCP connect to %s:%s failed: %s", host, port, exc)
            return
        if conn.closed:  # refused by the table: every connection is in use
            self.stats["dropped"] += 1
            return
        self._send_tcp(conn, data)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for ep in self.udp:
            ep.close()
        for server in self.tcp_servers:
            server.close()
        for conn in self.connections:
            conn.close()
