"""Fake RTP phones for the engine tests: real UDP sockets on loopback (IPv4, or
IPv6 with host="::1")."""

from __future__ import annotations

import asyncio
import socket
import struct

from pbx_core.media.rtp import RtpPacket, parse_rtp


def sdp(
    port: int,
    codecs: str = "0 8 101",
    direction: str = "sendrecv",
    address: str = "127.0.0.1",
    ptime: int | None = 20,
) -> bytes:
    """An offer or answer from a phone on 127.0.0.1:port."""
    names = {
        "0": "PCMU/8000",
        "8": "PCMA/8000",
        "101": "telephone-event/8000",
        "18": "G729/8000",
        "9": "G722/8000",
    }
    ip = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=phone 1 1 IN {ip} {address}",
        "s=-",
        f"c=IN {ip} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}",
    ]
    for pt in codecs.split():
        lines.append(f"a=rtpmap:{pt} {names[pt]}")
        if pt == "101":
            lines.append("a=fmtp:101 0-15")
    if ptime:
        lines.append(f"a=ptime:{ptime}")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


class Phone:
    """A UDP socket that sends RTP and collects what it receives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str = "127.0.0.1") -> None:
        self.loop = loop
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.received: list[tuple[RtpPacket, tuple[str, int]]] = []
        self.raw: list[bytes] = []
        self.ssrc = 0x1234 + self.port
        self.seq = 1000
        self.ts = 5000
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            self.raw.append(data)
            self.received.append((parse_rtp(data), addr))

    def send(
        self,
        to: int,
        payload: bytes,
        pt: int = 0,
        marker: bool = False,
        ts: int | None = None,
        seq: int | None = None,
        ssrc: int | None = None,
    ) -> None:
        pkt = RtpPacket(
            pt,
            self.seq if seq is None else seq,
            self.ts if ts is None else ts,
            self.ssrc if ssrc is None else ssrc,
            payload,
            marker,
        )
        self.sock.sendto(bytes(pkt), (self.host, to))
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF
        if ts is None:
            self.ts = (self.ts + len(payload)) & 0xFFFFFFFF

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def port_of(body: bytes) -> int:
    for line in body.decode().split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio line")


async def until(cond, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            return False
        await asyncio.sleep(0.005)
    return True


_ = struct
