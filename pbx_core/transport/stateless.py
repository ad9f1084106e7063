"""Answering what could not be parsed (RFC 3261 §8.2 / §16.3 applied to garbage).

A request that fails to parse still deserves its error status when we can tell it
was a request (other than ACK, which is never answered) and can route the answer:
the start line must look like a request and the raw Via, From, To, Call-ID and CSeq
lines are copied as they are (at most MAX_HOPS of each). Anything else (garbage,
broken responses) is dropped without a word.
"""

from __future__ import annotations

import re

from pbx_core.sip.message import MAX_HOPS, REASONS, header_key

_REQUEST_LINE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+ +[^ \r\n]+ +SIP/[0-9]+\.[0-9]+ *\r?\n", re.I)
_COPY = ("via", "from", "to", "call-id", "cseq")


def error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """Bytes of an error response to the unparsable request `data`, or None."""
    start = 0
    while data[start : start + 2] == b"\r\n":
        start += 2
    if not _REQUEST_LINE.match(data, start) or data.startswith(b"ACK ", start):
        return None  # not a request, or an ACK (never answered, RFC 3261 §17.1.1.3)
    head = data[start:].split(b"\r\n\r\n", 1)[0]
    copied: list[bytes] = []
    seen: dict[str, int] = {}
    for line in re.split(rb"\r?\n(?![ \t])", head)[1:]:
        name, sep, _ = line.partition(b":")
        if not sep:
            continue
        key = header_key(name.strip().decode("latin-1"))
        if key in _COPY and seen.get(key, 0) < MAX_HOPS:  # no more than any real one has
            seen[key] = seen.get(key, 0) + 1
            line = re.sub(rb"\r?\n[ \t]+", b" ", line)  # noqa: PLW2901  # unfolded
            if line.count(b",") >= MAX_HOPS:
                line = line.split(b",", 1)[0]  # noqa: PLW2901  # the top value is enough
            copied.append(line)
    if "via" not in seen:
        return None  # nothing to route or match the answer with
    phrase = reason.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")[:120]
    std = REASONS.get(status, "Error").encode()
    lines = [b"SIP/2.0 %d %s" % (status, std), *copied]
    lines.append(b'Warning: 399 pbx "' + phrase.replace(b'"', b"'").replace(b"\\", b"/") + b'"')
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"
