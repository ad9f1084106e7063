"""RTCP sender and receiver reports (RFC 3550 §6), sans-IO.

Theory of operation
-------------------
Every RTCP datagram is a compound packet (§6.1): an SR (if we sent RTP since the
last report) or an RR first, then an SDES with our CNAME; BYE may follow.  Each
report carries at most one report block here (a leg has one remote source).

Wall-clock time is an argument (``ntp_now``, Unix seconds as a float): the caller
owns the clock.  NTP timestamps are 64-bit fixed point since 1900 (§4); LSR and DLSR
use the middle 32 bits, in units of 1/65536 s, and give the round-trip time
``A - LSR - DLSR`` (§6.4.1, Figure 2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pbx_core.media.errors import RtpError

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "Sdes",
    "SenderReport",
    "build_compound",
    "ntp_from_unix",
    "ntp_middle",
    "parse_rtcp",
    "round_trip",
]

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP = 200, 201, 202, 203, 204
SDES_CNAME = 1
_REPORT_BLOCK = struct.Struct("!IIIIII")


def ntp_from_unix(unix: float) -> int:
    """64-bit NTP timestamp for a Unix time."""
    return int((unix + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (LSR/DLSR units of 1/65536 s)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """§6.4.1 report block about one source we receive."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256
    cumulative_lost: int  # 24-bit signed
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP time, 0 if none
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_seq & 0xFFFFFFFF,
            min(self.jitter, 0xFFFFFFFF),
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class Sdes:
    """Source descriptions: (ssrc, {item type: text})."""

    chunks: tuple[tuple[int, dict[int, str]], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str = ""


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye


def _header(count: int, pt: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("RTCP body must be 32-bit aligned")
    return struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body


def _pack_sr(sr: SenderReport) -> bytes:
    body = struct.pack(
        "!IQIII",
        sr.ssrc,
        sr.ntp,
        sr.rtp_timestamp & 0xFFFFFFFF,
        sr.packet_count & 0xFFFFFFFF,
        sr.octet_count & 0xFFFFFFFF,
    )
    return _header(len(sr.reports), PT_SR, body + b"".join(r.pack() for r in sr.reports))


def _pack_rr(rr: ReceiverReport) -> bytes:
    body = struct.pack("!I", rr.ssrc) + b"".join(r.pack() for r in rr.reports)
    return _header(len(rr.reports), PT_RR, body)


def _pack_sdes(sdes: Sdes) -> bytes:
    body = b""
    for ssrc, items in sdes.chunks:
        chunk = struct.pack("!I", ssrc)
        for kind, text in items.items():
            raw = text.encode()[:255]
            chunk += bytes([kind, len(raw)]) + raw
        chunk += b"\x00"  # end of items
        chunk += bytes(-len(chunk) % 4)
        body += chunk
    return _header(len(sdes.chunks), PT_SDES, body)


def _pack_bye(bye: Bye) -> bytes:
    body = b"".join(struct.pack("!I", s) for s in bye.ssrcs)
    if bye.reason:
        raw = bye.reason.encode()[:255]
        body += bytes([len(raw)]) + raw
        body += bytes(-len(body) % 4)
    return _header(len(bye.ssrcs), PT_BYE, body)


def build_compound(packets: list[RtcpPacket]) -> bytes:
    """Serialize a compound RTCP packet (the first must be an SR or an RR)."""
    if not packets or not isinstance(packets[0], SenderReport | ReceiverReport):
        raise ValueError("a compound RTCP packet starts with an SR or an RR")
    out = []
    for p in packets:
        if isinstance(p, SenderReport):
            out.append(_pack_sr(p))
        elif isinstance(p, ReceiverReport):
            out.append(_pack_rr(p))
        elif isinstance(p, Sdes):
            out.append(_pack_sdes(p))
        else:
            out.append(_pack_bye(p))
    return b"".join(out)


def _parse_sdes(data: bytes, start: int, end: int, count: int) -> Sdes:
    chunks = []
    pos = start
    for _ in range(count):
        if pos + 4 > end:
            raise RtpError("RTCP SDES chunk cut short")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        pos += 4
        items: dict[int, str] = {}
        while pos < end and data[pos] != 0:
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtpError("RTCP SDES item cut short")
            kind, length = data[pos], data[pos + 1]
            items[kind] = data[pos + 2 : pos + 2 + length].decode("utf-8", "replace")
            pos += 2 + length
        pos += 1  # the null item
        pos += -(pos - start) % 4
        chunks.append((ssrc, items))
    return Sdes(tuple(chunks))


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet.  Unknown packet types (APP, XR, feedback) are
    skipped; a malformed length or version raises RtpError."""
    packets: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RtpError("RTCP packet shorter than its header")
    while pos < len(data):
        if pos + 4 > len(data):
            raise RtpError("RTCP compound packet has trailing bytes")
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise RtpError(f"RTCP version {b0 >> 6}, expected 2")
        count = b0 & 0x1F
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtpError("RTCP length field runs past the datagram")
        body = pos + 4
        if pt == PT_SR:
            if body + 24 + 24 * count > end:
                raise RtpError("RTCP SR shorter than its report count")
            ssrc, ntp, rtp_ts, pc, oc = struct.unpack_from("!IQIII", data, body)
            blocks = tuple(ReportBlock.unpack(data, body + 24 + 24 * i) for i in range(count))
            packets.append(SenderReport(ssrc, ntp, rtp_ts, pc, oc, blocks))
        elif pt == PT_RR:
            if body + 4 + 24 * count > end:
                raise RtpError("RTCP RR shorter than its report count")
            (ssrc,) = struct.unpack_from("!I", data, body)
            blocks = tuple(ReportBlock.unpack(data, body + 4 + 24 * i) for i in range(count))
            packets.append(ReceiverReport(ssrc, blocks))
        elif pt == PT_SDES:
            packets.append(_parse_sdes(data, body, end, count))
        elif pt == PT_BYE:
            if body + 4 * count > end:
                raise RtpError("RTCP BYE shorter than its source count")
            ssrcs = struct.unpack_from(f"!{count}I", data, body)
            reason = ""
            rpos = body + 4 * count
            if rpos < end:
                length = data[rpos]
                reason = data[rpos + 1 : min(end, rpos + 1 + length)].decode("utf-8", "replace")
            packets.append(Bye(tuple(ssrcs), reason))
        pos = end
    return packets


def round_trip(block: ReportBlock, ntp_arrival: int) -> float | None:
    """Round-trip time in seconds from a report block about our stream, None when
    the block does not refer to an SR of ours."""
    if block.lsr == 0:
        return None
    rtt = (ntp_middle(ntp_arrival) - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt > 0x7FFFFFFF:
        return None
    return rtt / 65536.0
