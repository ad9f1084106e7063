"""Checks a UAS makes on a well-formed request before acting on it (RFC 3261 §8.2,
§16.3; RFC 4475 §3.3). Each failing check is returned as the SipError to answer with.
"""

from __future__ import annotations

from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.headers import TOKEN
from pbx_core.sip.message import Request

# Bodies we can act on, by method (RFC 3261 §8.2.3 → 415).
_SESSION_METHODS = frozenset({"INVITE", "ACK", "PRACK", "UPDATE"})
SESSION_BODY_TYPES = frozenset({"application/sdp", "multipart/mixed", "multipart/alternative"})
_ACCEPT_SDP = frozenset({"application/sdp", "application/*", "*/*"})


def check_request(
    msg: Request,
    supported_extensions: set[str] | frozenset[str],
    supported_schemes: set[str] | frozenset[str],
) -> SipError | None:
    """Return the error a server answers `msg` with, or None when it may proceed.
    Order follows RFC 3261 §8.2: syntax of the headers every transaction needs,
    then the method-independent checks (Request-URI scheme, Max-Forwards, Require),
    then the content checks."""
    try:
        # What every request needs; the rest is parsed by whoever reads it (a
        # registrar its Contacts, a dialog its Record-Route).
        msg.check_core()
        if msg.body:
            _ = msg.content_type
    except ParseError as exc:
        return exc
    requires = "require" in msg.headers or "proxy-require" in msg.headers
    if requires:
        for header in ("require", "proxy-require"):
            for option in msg.headers.getall(header):
                if not TOKEN.fullmatch(option):
                    return ParseError(f"invalid option tag {option[:40]!r} in {header}")
    # RFC 3261 §10.2: the To of a REGISTER is the address of record, a SIP(S) URI
    # (RFC 4475 §3.3.4).
    if msg.method == "REGISTER" and not msg.to.uri.is_sip:
        return SipError(f"REGISTER for a {msg.to.uri.scheme}: address of record", 400)
    # RFC 3261 §8.2.2.1 / RFC 4475 §3.3.2: 416 for a scheme we don't serve.
    if msg.uri.scheme not in supported_schemes:
        return SipError(f"unsupported URI scheme {msg.uri.scheme!r}", 416)
    # RFC 3261 §16.3 item 2: the request may go no further.
    if msg.max_forwards == 0:
        return SipError("Max-Forwards reached 0", 483)
    # RFC 3261 §8.2.2.3: Require (and, acting as proxy, Proxy-Require); never for
    # ACK and CANCEL.
    if requires and msg.method not in ("ACK", "CANCEL"):
        unknown: list[str] = []
        for header in ("require", "proxy-require"):
            for option in msg.headers.getall(header):
                if option.lower() not in supported_extensions and option not in unknown:
                    unknown.append(option)
        if unknown:
            return SipError(
                "unsupported extension required", 420, (("Unsupported", ", ".join(unknown)),)
            )
    if msg.method in _SESSION_METHODS:
        if msg.body:
            ctype = msg.content_type
            if ctype is None or ctype not in SESSION_BODY_TYPES:
                return SipError(
                    f"unsupported body type {ctype!r}", 415, (("Accept", "application/sdp"),)
                )
            encodings = msg.headers.getall("content-encoding")
            if any(e.lower() != "identity" for e in encodings):
                return SipError(
                    "unsupported content encoding", 415, (("Accept-Encoding", "identity"),)
                )
        if msg.method == "INVITE":
            accept = msg.headers.getall("accept")
            if accept and not any(a.split(";")[0].strip().lower() in _ACCEPT_SDP for a in accept):
                # RFC 4475 §3.3.15: we can only answer with SDP.
                return SipError(
                    "Accept does not allow application/sdp", 406, (("Accept", "application/sdp"),)
                )
    return None
