"""Errors of the SIP core. Every error carries the status code to answer with
(h11's error_status_hint): a server turns `SipError` straight into a response."""

from __future__ import annotations


class SipError(Exception):
    """Base of everything the SIP core raises on purpose."""

    def __init__(
        self, reason: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # Headers the answer must carry (Unsupported for 420, Accept for 415 …).
        self.headers = headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status={self.status})"


class ParseError(SipError):
    """Malformed input: a message, header, URI or body that violates the grammar."""
