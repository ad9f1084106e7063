"""RTP packets and reception statistics (RFC 3550), sans-IO.

Theory of operation
-------------------
``parse_rtp`` / ``bytes(RtpPacket)`` handle the fixed header, CSRCs, the header
extension and padding (§5.1, §5.3.1).  Sequence numbers are 16-bit and timestamps
32-bit and both wrap; ``seq_delta``/``ts_delta`` give the signed distance modulo
2**16 / 2**32, which is the only safe way to compare them.

``ReceptionStats`` is the per-source state of RFC 3550 Appendix A: A.1 sequence
validation (a jump of more than MAX_DROPOUT is accepted as a restart only when the
next packet confirms it), A.3 expected/lost counts and the fraction lost per report
interval, and A.8 interarrival jitter.  Arrival times are passed in (seconds, any
monotonic origin): the caller reads its clock once per batch of packets.

The relay reads the header fields with ``HEADER.unpack_from`` directly from its
receive buffer and does not build RtpPacket objects; both agree on the layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pbx_core.media.errors import RtpError

__all__ = [
    "HEADER",
    "ReceptionStats",
    "RtpPacket",
    "ext_seq_delta",
    "parse_rtp",
    "seq_delta",
    "ts_delta",
]

# V=2 P X CC | M PT | sequence | timestamp | SSRC
HEADER = struct.Struct("!BBHII")
RTP_VERSION = 2
MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
SEQ_MOD = 1 << 16


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number a to b, modulo 2**16 (-32768..32767)."""
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


def ts_delta(a: int, b: int) -> int:
    """Signed distance from RTP timestamp a to b, modulo 2**32."""
    return ((b - a + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def ext_seq_delta(a: int, b: int) -> int:
    """Distance between extended (cycle-counted) sequence numbers."""
    return b - a


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data)
    padding: int = 0  # padding bytes to add (including the count byte)

    def __bytes__(self) -> bytes:
        if not (0 <= self.payload_type < 128 and len(self.csrcs) < 16):
            raise ValueError("payload type must be 0..127 and at most 15 CSRCs")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        parts = [
            HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        parts.extend(struct.pack("!I", c) for c in self.csrcs)
        if self.extension is not None:
            ident, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            parts.append(struct.pack("!HH", ident, len(data) // 4) + data)
        parts.append(self.payload)
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise ValueError("RTP padding must be 1..255 bytes")
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raises RtpError when it is not RTP version 2 or is cut."""
    if len(data) < HEADER.size:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than the header")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    pos = HEADER.size + 4 * cc
    if len(data) < pos:
        raise RtpError("RTP packet cut inside its CSRC list")
    csrcs = struct.unpack_from(f"!{cc}I", data, HEADER.size) if cc else ()
    extension = None
    if b0 & 0x10:
        if len(data) < pos + 4:
            raise RtpError("RTP packet cut inside its header extension")
        ident, words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * words
        if len(data) < end:
            raise RtpError("RTP header extension longer than the packet")
        extension = (ident, bytes(data[pos + 4 : end]))
        pos = end
    end = len(data)
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < pos:
            raise RtpError("RTP padding count is zero or larger than the payload")
        end -= padding
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[pos:end]),
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def payload_offset(data: bytes | bytearray | memoryview, length: int) -> tuple[int, int]:
    """(start, end) of the payload inside a received packet, or (-1, -1) if malformed.
    The relay's fast path uses this instead of parse_rtp."""
    if length < HEADER.size or length > len(data):
        return -1, -1
    b0 = data[0]
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if length < pos + 4:
            return -1, -1
        pos += 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    end = length
    if b0 & 0x20:
        end -= data[length - 1]
    if end < pos or pos > length:
        return -1, -1
    return pos, end


class ReceptionStats:
    """RFC 3550 Appendix A state for one incoming source.

    ``update(seq, ts, arrival)`` once per packet, ``arrival`` in seconds.  Returns
    False for a packet A.1 rejects (a duplicate of the far past or an unconfirmed
    big jump); the relay still forwards such packets (the receiver decides), the stats
    only count them."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "max_seq",
        "received",
        "received_prior",
        "ssrc",
        "started",
        "transit",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.ssrc = 0
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq = SEQ_MOD + 1
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.transit = 0.0
        self.jitter = 0.0  # in timestamp units, RFC 3550 A.8

    def _init(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, ssrc: int, seq: int, ts: int, arrival: float) -> bool:
        if not self.started or ssrc != self.ssrc:
            # A new source (first packet, or the sender changed SSRC): start over.
            self.started = True
            self.ssrc = ssrc
            self._init(seq)
            self.received = 1
            self.transit = arrival * self.clock_rate - ts
            self.jitter = 0.0
            return True
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            # A very large jump: a restart if the next packet follows it (A.1).
            if seq == self.bad_seq:
                self._init(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted below
        self.received += 1
        transit = arrival * self.clock_rate - ts
        d = transit - self.transit
        self.transit = transit
        if d < 0:
            d = -d
        # A sender's timestamp jump (new talk spurt after a long gap, or a bogus
        # timestamp) would poison the estimate for minutes: ignore jumps > 10 s.
        if d < 10 * self.clock_rate:
            self.jitter += (d - self.jitter) / 16.0
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.started else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received

    @property
    def jitter_seconds(self) -> float:
        return self.jitter / self.clock_rate

    def interval_report(self) -> tuple[int, int]:
        """(fraction lost as 8-bit fixed point, cumulative lost clamped to 24 bits
        signed) since the previous call, as an RTCP report block carries them."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        return fraction, lost
