"""The table of open SIP-over-TCP connections and the bounds that keep it small.

What a peer can make us hold is bounded four ways (Kamailio's tcp_max_connections,
tcp_connection_lifetime and tcp_msg_read_timeout, Asterisk's tcpauthtimeout):

* at most `max_connections` connections, however fast they arrive: a connection is
  counted from the moment it is accepted until it is closed (not until asyncio
  reports it lost), so a burst cannot overshoot;
* at most `per_source` connections from one address: the next one is closed at once;
* a message must arrive whole within `message_timeout` of its first byte (and the
  first message within that time of the connect): a slowloris that trickles headers,
  or connects and says nothing, is closed;
* a connection that has brought no complete message for `idle_timeout` is closed.

When the table is full a new connection evicts the one with the least recent
activity (its last complete message) that no live registration or call uses; if
every connection is in use the newcomer is refused. Which connections are in use is
the PBX's knowledge, not the transport's: the PBX hands in `in_use`, a function
returning the (host, port) of every peer a binding or call talks to over a stream.
Connections in use are spared by the idle timeout too (a registered phone may stay
silent between re-registrations), never by the message timeout.
"""

from __future__ import annotations

import logging
import resource
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbx_core.transport.tcp import TcpConnection

log = logging.getLogger("pbx.transport")

Peer = tuple[str, int]
InUse = Callable[[], Collection[Peer]]

# File descriptors kept free for everything else (UDP, RTP, files, the control socket).
_FD_RESERVE = 256


@dataclass(frozen=True, slots=True)
class TcpLimits:
    max_connections: int = 1024
    per_source: int = 64  # a NAT'd branch office with that many phones still fits
    idle_timeout: float = 120.0  # s without a complete message (Kamailio's default)
    message_timeout: float = 10.0  # s from a message's first byte to its last
    sweep_interval: float = 1.0  # how often the timeouts are checked

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.per_source < 1:
            raise ValueError("max_connections and per_source must be >= 1")
        if min(self.idle_timeout, self.message_timeout, self.sweep_interval) <= 0:
            raise ValueError("timeouts must be > 0")

    def within_fd_limit(self) -> TcpLimits:
        """These limits with max_connections lowered to what the process's open-file
        limit allows (an accept that fails for lack of descriptors stalls the listener)."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft - _FD_RESERVE >= self.max_connections:
            return self
        cap = max(1, soft - _FD_RESERVE)
        log.warning("open-file limit %d: at most %d TCP connections", soft, cap)
        return replace(self, max_connections=cap)


DEFAULT_LIMITS = TcpLimits()


class ConnectionTable:
    """Open connections by peer, least recent activity first."""

    def __init__(self, limits: TcpLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.in_use: InUse | None = None
        self._conns: OrderedDict[Peer, TcpConnection] = OrderedDict()
        self._per_source: dict[str, int] = {}
        self.stats = {"refused": 0, "evicted": 0, "idle": 0, "slow": 0}

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, peer: object) -> bool:
        return peer in self._conns

    def __iter__(self) -> Iterator[TcpConnection]:
        return iter(list(self._conns.values()))

    def get(self, peer: Peer) -> TcpConnection | None:
        return self._conns.get(peer)

    def sources(self, host: str) -> int:
        return self._per_source.get(host, 0)

    def admit(self, conn: TcpConnection, *, inbound: bool) -> bool:
        """Enter a new connection; False when it must be refused (the caller closes
        it). Makes room by evicting when the table is full."""
        limits = self.limits
        host = conn.peer[0]
        if inbound and self._per_source.get(host, 0) >= limits.per_source:
            self.stats["refused"] += 1
            log.info("TCP from %s refused: %d connections already", host, limits.per_source)
            return False
        if len(self._conns) >= limits.max_connections and not self._evict_one():
            self.stats["refused"] += 1
            log.info("TCP from %s:%s refused: all %d connections in use", *conn.peer, len(self))
            return False
        now = self.clock()
        conn.last_activity = now
        conn.message_started = now if inbound else None
        old = self._conns.pop(conn.peer, None)
        if old is not None:  # the same peer address again: the old one is dead
            self._forget(old)
            old.close()
        self._conns[conn.peer] = conn
        self._per_source[host] = self._per_source.get(host, 0) + 1
        return True

    def remove(self, conn: TcpConnection) -> None:
        if self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]
            self._forget(conn)

    def _forget(self, conn: TcpConnection) -> None:
        host = conn.peer[0]
        left = self._per_source.get(host, 0) - 1
        if left > 0:
            self._per_source[host] = left
        else:
            self._per_source.pop(host, None)

    def touch(self, conn: TcpConnection) -> None:
        """A complete message came in on `conn`."""
        conn.last_activity = self.clock()
        if self._conns.get(conn.peer) is conn:
            self._conns.move_to_end(conn.peer)

    def _used(self) -> Collection[Peer]:
        return self.in_use() if self.in_use is not None else ()

    def _evict_one(self) -> bool:
        used = self._used()
        for peer, conn in self._conns.items():
            if peer not in used:
                self.stats["evicted"] += 1
                log.debug("TCP %s:%s closed to make room (least recently active)", *peer)
                conn.close()  # close() removes it from the table at once
                return True
        return False

    def sweep(self, now: float) -> int:
        """Close what the timeouts say must go; returns how many were closed."""
        limits = self.limits
        slow_before = now - limits.message_timeout
        idle_before = now - limits.idle_timeout
        closed = 0
        used: Collection[Peer] | None = None
        for peer, conn in list(self._conns.items()):
            started = conn.message_started
            if started is not None and started <= slow_before:
                self.stats["slow"] += 1
                log.info("TCP %s:%s closed: no complete message in %g s", *peer,
                         limits.message_timeout)  # fmt: skip
                conn.close()
                closed += 1
            elif conn.last_activity <= idle_before:
                if used is None:
                    used = self._used()
                if peer not in used:
                    self.stats["idle"] += 1
                    log.debug("TCP %s:%s closed: idle for %g s", *peer, limits.idle_timeout)
                    conn.close()
                    closed += 1
        return closed
