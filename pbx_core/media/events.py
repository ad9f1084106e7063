"""What the media engine reports to the PBX (frozen dataclasses, STYLE 4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DtmfEvent", "DtmfSource", "LegStats"]


class DtmfSource(enum.StrEnum):
    """Where a key press was recognised."""

    RFC4733 = "rfc4733"  # telephone-event packets in the RTP stream
    INFO = "info"  # SIP INFO application/dtmf-relay or application/dtmf
    INBAND = "inband"  # tones in the audio (Goertzel)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press, whatever its source: reported once, when it is recognised.

    ``digit`` is one of ``0123456789*#ABCD``.  ``duration_ms`` is known for SIP INFO
    (the Duration line) and None otherwise (the press is still going on when it is
    reported).  ``side`` is the leg it came from ("caller", "callee", or the
    endpoint's name)."""

    digit: str
    source: DtmfSource
    duration_ms: int | None = None
    side: str = ""


@dataclass(frozen=True, slots=True)
class LegStats:
    """One leg's media figures, for the CDR and ``pbx status``.

    Received: what the phone on this leg sent us (RFC 3550 A.3/A.8).  Remote: what
    the phone reported about our stream in its last RTCP report (None before the
    first report)."""

    packets_received: int
    packets_sent: int
    bytes_received: int
    bytes_sent: int
    lost: int  # cumulative, from sequence numbers (A.3)
    loss_fraction: float  # lost / expected, 0..1
    jitter_ms: float  # interarrival jitter (A.8)
    malformed: int  # datagrams that were not RTP/RTCP
    remote_lost: int | None = None
    remote_jitter_ms: float | None = None
    round_trip_ms: float | None = None
    remote_address: str = ""
    codec: str = ""
    stray: int = 0  # packets dropped: not from the latched source (or not yet learned)
