"""Multicast RTP paging: a page's audio sent as plain RTP to a multicast group that
phones are configured to listen to (Yealink, Polycom, Snom and Grandstream "multicast
paging": RTP only, no SIP; Polycom's own Group Paging/PTT protocol is not this).

A `MulticastSender` takes one 20 ms frame of 16-bit PCM per call of `send` (a
`MixBridge` listener: the bridge's mix, every tick, silence included), encodes it
with G.711 (µ-law PT 0 or A-law PT 8) and sends it to `group:port` with one SSRC, a
sequence number that goes up by one and a timestamp by 160 per packet (continuous
for the whole page; the first packet carries the marker). The socket is bound to an
ephemeral port, its multicast TTL (IPv6: hop limit) is `ttl` (1..MAX_TTL; 1 = this
link only), and it leaves through the interface of `interface` (the PBX's media
address) when given. Sending never raises: errors are counted and logged once.
`close` closes the socket (the page's end).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import struct

from pbx_core.media.codecs import CODECS
from pbx_core.media.errors import MediaError

log = logging.getLogger("pbx.media")

MAX_TTL = 32  # at most "site": a page never crosses the organisation's routers
FRAME = 160  # samples per 20 ms packet at 8 kHz
PORT_MIN, PORT_MAX = 1024, 65535  # features/paging checks the table with the same


class MulticastSender:
    """RTP to one multicast group (see the module docstring)."""

    def __init__(
        self,
        group: str,
        port: int,
        *,
        codec: str = "PCMU",
        ttl: int = 1,
        interface: str | None = None,
    ) -> None:
        try:
            address = ipaddress.ip_address(group)
        except ValueError:
            raise MediaError(f"not a multicast group: {group[:40]}") from None
        if not address.is_multicast or not PORT_MIN <= port <= PORT_MAX:
            raise MediaError(f"not a multicast group and port: {group}:{port}")
        if not 1 <= ttl <= MAX_TTL:
            raise MediaError(f"multicast TTL must be 1..{MAX_TTL}")
        found = CODECS.get(codec.upper())
        if found is None or found.static_pt is None:
            raise MediaError(f"no static payload type for {codec}")
        self.codec = found
        self.pt = found.static_pt
        self.dest = (str(address), port)
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            if family == socket.AF_INET:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if interface and ipaddress.ip_address(interface).version == 4:
                    self.sock.setsockopt(
                        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface)
                    )
            else:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            self.sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))
        except (OSError, ValueError) as exc:
            self.sock.close()
            raise MediaError(f"multicast socket: {exc}") from None
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.first = True
        self.sent = 0
        self.errors = 0
        self.closed = False

    def send(self, pcm: bytes) -> None:
        """One 20 ms frame (16-bit PCM, 320 bytes) as one RTP packet."""
        if self.closed:
            return
        payload = self.codec.encode(pcm[: 2 * FRAME])
        head = struct.pack(
            "!BBHII",
            0x80,
            self.pt | (0x80 if self.first else 0),
            self.seq,
            self.ts,
            self.ssrc,
        )
        self.first = False
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        try:
            self.sock.sendto(head + payload, self.dest)
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("multicast page to %s:%d: %s", *self.dest, exc)
            return
        self.sent += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
