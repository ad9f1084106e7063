"""The media engine's errors.  Each carries the SIP status a B2BUA should answer with
when the error stops a call (STYLE 5: errors carry the answer)."""

from __future__ import annotations

__all__ = ["MediaError", "NegotiationError", "PortsExhaustedError", "RtpError", "WavError"]


class MediaError(Exception):
    """Base of everything pbx_core.media raises on bad input or exhausted resources."""

    def __init__(self, reason: str, status: int = 500) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class NegotiationError(MediaError):
    """An SDP offer or answer the engine cannot accept: 488 Not Acceptable Here."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason, status)


class PortsExhaustedError(MediaError):
    """No free RTP/RTCP port pair in the configured range: 503 Service Unavailable."""

    def __init__(self, reason: str = "no free RTP port pair") -> None:
        super().__init__(reason, 503)


class RtpError(MediaError):
    """A malformed RTP or RTCP packet (dropped by the engine, counted in the stats)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 400)


class WavError(MediaError):
    """A WAV file the player cannot use (format, rate, channels, truncation)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 500)
