"""SIP messages: parse from bytes, serialize to bytes (RFC 3261 §7, §20, §25).

Theory of operation: `parse_message` does the work every message needs (start line,
header lines unfolded and split into name/value, Content-Length and the body) and
checks the Request-URI; structured headers (Via, From, To, CSeq …) are parsed on
first use and cached, so a server pays only for what it reads. `validate()` parses
every header the core knows, which is what `pbx sip check` and a careful UAS do.

Header names are case-insensitive and compact forms (RFC 3261 §7.3.3, RFC 3515,
RFC 4028 …) are expanded to their long names, which are also what we write.
The head is decoded as UTF-8 with surrogateescape, so any byte survives a round trip.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator

from pbx_core.sip.errors import ParseError
from pbx_core.sip.headers import (
    MAX_HEADER_LINES,
    MAX_HOPS,
    TOKEN,
    CSeq,
    NameAddr,
    Via,
    check_repetition,
    parse_contacts,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
    split_commas,
)
from pbx_core.sip.names import (
    CANONICAL,
    KEYS,
    LIST_HEADERS,
    NAME_ENTRIES,
    REASONS,
    header_key,
    name_entry,
)
from pbx_core.sip.uri import URI, parse_uri

__all__ = [
    "LIST_HEADERS",
    "MAX_HEADER_LINES",
    "MAX_HOPS",
    "MAX_MESSAGE",
    "REASONS",
    "Headers",
    "Message",
    "Request",
    "Response",
    "frame_length",
    "header_key",
    "parse_message",
]

# RFC 3261 §18.1.1 / §18.3: we refuse anything bigger (and answer 513 where we can).
MAX_MESSAGE = 65536

# At most one of each in a message (RFC 3261 §7.3.1, Table 2/3); RFC 4475 §3.3.8.
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
# RFC 3261 §8.1.1: the same five in requests and responses.
_REQUIRED = ("to", "from", "cseq", "call-id", "via")


_UINT32 = 2**32 - 1
_REPLY_COPY = frozenset({"via", "from", "to", "call-id", "cseq"})
_HEADER_NAME = TOKEN
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_MEDIA_TYPE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"(?:[ \t]*;[ \t]*[A-Za-z0-9\-.!%*_+`'~]+[ \t]*=[ \t]*"
    r"(?:[A-Za-z0-9\-.!%*_+`'~]+|\"(?:[^\"\\]|\\.)*\"))*[ \t]*"
)
_WARNING = re.compile(r"[0-9]{3} [^ ]+ \"(?:[^\"\\]|\\.)*\"")
_RETRY_AFTER = re.compile(r"[ \t]*([0-9]+)[ \t]*(?:\(.*\))?[ \t]*(?:;.*)?")


class Headers:
    """Ordered, case-insensitive SIP headers: one (key, name, value) per header line."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        # key -> raw values, built on the first lookup; every mutation drops it.
        self._index: dict[str, list[str]] | None = None
        for name, value in items:
            self.add(name, value)

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for k, _n, v in self._items:
                if k in index:
                    index[k].append(v)
                else:
                    index[k] = [v]
            self._index = index
        return index

    @staticmethod
    def _entry(name: str, value: str) -> tuple[str, str, str]:
        key, spelling = name_entry(name)
        return (key, spelling, value)

    def add(self, name: str, value: str) -> None:
        entry = self._entry(name, value)
        self._items.append(entry)
        index = self._index
        if index is not None:  # appending keeps the index in order
            values = index.get(entry[0])
            if values is None:
                index[entry[0]] = [value]
            else:
                values.append(value)

    def insert(self, index: int, name: str, value: str) -> None:
        self._items.insert(index, self._entry(name, value))
        self._index = None

    def set(self, name: str, value: str) -> None:
        """Replace every header of this name by one (at the first one's place)."""
        key = header_key(name)
        self._index = None
        for i, item in enumerate(self._items):
            if item[0] == key:
                self._items[i] = self._entry(name, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != key]
                return
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [it for it in self._items if it[0] != key]
        self._index = None

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._lookup().get(KEYS.get(name) or header_key(name))
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        """Every value of a header; list headers are split at top-level commas."""
        key = KEYS.get(name) or header_key(name)
        values = self._lookup().get(key)
        if values is None:
            return []
        if key in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                if "," in v:
                    out.extend(split_commas(v))
                else:
                    out.append(v)
            return out
        return list(values)

    def count(self, name: str) -> int:
        return len(self._lookup().get(header_key(name), ()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return (KEYS.get(name) or header_key(name)) in self._lookup()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _k, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _n, v in self._items] == [(k, v) for k, _n, v in other._items]

    def __hash__(self) -> int:  # mutable: not hashable
        raise TypeError("Headers is not hashable")

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _k, n, v in self._items]!r})"


class Message:
    """What requests and responses share: headers, body, parsed views."""

    __slots__ = (
        "_call_id",
        "_cseq",
        "_from",
        "_to",
        "_top_via",
        "_via",
        "body",
        "headers",
        "version",
    )

    def __init__(self, headers: Headers | None, body: bytes, version: str) -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version
        self._via: list[Via] | None = None
        self._top_via: Via | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: CSeq | None = None
        self._call_id: str | None = None

    def invalidate(self) -> None:
        """Forget parsed views after changing headers in place."""
        self._via = None
        self._top_via = None
        self._from = None
        self._to = None
        self._cseq = None
        self._call_id = None

    # -- parsed views ------------------------------------------------------------
    @property
    def via(self) -> list[Via]:
        if self._via is None:
            lines = self.headers._lookup().get("via")
            if lines is not None and len(lines) == 1 and "," not in lines[0]:
                self._via = [self.top_via]  # one via-parm: parsed once, for both views
                return self._via
            values = self.headers.getall("via")
            if not values:
                raise ParseError("missing Via header")
            top = self._top_via  # parsed (and perhaps stamped) already
            if top is None:
                top = parse_via(values[0])
            self._via = [top, *(parse_via(v) for v in values[1:])]
        return self._via

    @property
    def top_via(self) -> Via:
        """The first via-parm, parsed alone (a proxied request carries several)."""
        top = self._top_via
        if top is None:
            if self._via is not None:
                top = self._via[0]
            else:
                first = self.headers.get("via")
                if first is None:
                    raise ParseError("missing Via header")
                top = parse_via(split_commas(first)[0] if "," in first else first)
            self._top_via = top
        return top

    def replace_top_via(self, via: Via) -> None:
        """Rewrite the first via-parm in place (received/rport stamping, RFC 3581)."""
        headers = self.headers
        items = headers._items
        for i, (key, name, value) in enumerate(items):
            if key == "via":
                text = str(via)
                if "," in value:
                    text = ", ".join([text, *split_commas(value)[1:]])
                items[i] = (key, name, text)
                index = headers._index
                if index is not None:  # the first Via line is the first indexed one
                    index["via"][0] = text
                break
        else:
            raise ParseError("missing Via header")
        if self._via is not None:
            self._via = [via, *self._via[1:]]
        self._top_via = via

    def reply(self, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
        """A response to this request (RFC 3261 §8.2.6.2): Via, From, To, Call-ID and
        CSeq copied; a To tag added when given and the request had none."""
        if not isinstance(self, Request):
            raise TypeError("only requests can be answered")
        headers = Headers()
        items = headers._items
        tagged = False
        if to_tag is not None and status > 100:
            # A To we cannot read (or none) is copied as it is, untagged.
            with contextlib.suppress(ParseError):
                tagged = self.to.tag is None
        to_done = False
        for item in self.headers._items:
            key = item[0]
            if key in _REPLY_COPY:
                if key == "to" and tagged:
                    if to_done:
                        continue  # one To (a request with more was refused already)
                    item = (key, item[1], f"{item[2]};tag={to_tag}")  # noqa: PLW2901  # the tagged copy
                    to_done = True
                items.append(item)
        if status == 100 and "timestamp" in self.headers:
            headers.add("Timestamp", self.headers.get("timestamp") or "")
        resp = Response(status, reason, headers)
        # The copied headers parse the same: share what is parsed already.
        resp._via, resp._top_via, resp._from, resp._cseq, resp._call_id = (
            self._via,
            self._top_via,
            self._from,
            self._cseq,
            self._call_id,
        )
        if not tagged:
            resp._to = self._to
        return resp

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = parse_name_addr(self._single("from"))
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = parse_name_addr(self._single("to"))
        return self._to

    @property
    def call_id(self) -> str:
        if self._call_id is None:
            value = self._single("call-id").strip()
            # callid = word [ "@" word ]: no whitespace inside
            if not value or " " in value or "\t" in value:
                raise ParseError(f"invalid Call-ID {value[:60]!r}")
            self._call_id = value
        return self._call_id

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = parse_cseq(self._single("cseq"))
        return self._cseq

    @property
    def max_forwards(self) -> int | None:
        value = self._optional("max-forwards")
        # RFC 3261 §20.22: 0-255; RFC 4475 §3.1.2.4 (scalar02).
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        value = self._optional("expires")
        # RFC 3261 §20.19: 0 .. 2**32-1
        return None if value is None else parse_uint(value, "Expires", _UINT32)

    @property
    def contact_star(self) -> bool:
        values = self.headers.getall("contact")
        return len(values) == 1 and values[0].strip() == "*"

    @property
    def contacts(self) -> list[NameAddr] | None:
        """Every Contact address ([] when there is none); None for `Contact: *`."""
        values = self.headers._lookup().get("contact")  # one value per header line
        if not values:
            return []
        if any(v.strip() == "*" for v in values):
            if len(values) != 1 or self.headers.getall("contact") != ["*"]:
                raise ParseError("Contact: * must stand alone")
            return None
        out: list[NameAddr] = []
        for v in values:
            got = parse_contacts(v)
            if got is None:
                raise ParseError("Contact: * must stand alone")
            out.extend(got)
        return out

    @property
    def content_type(self) -> str | None:
        value = self._optional("content-type")
        if value is None:
            return None
        m = _MEDIA_TYPE.fullmatch(value)
        if m is None:
            raise ParseError(f"invalid Content-Type {value[:60]!r}")
        return f"{m.group(1)}/{m.group(2)}".lower()

    def _single(self, key: str) -> str:
        value = self._optional(key)
        if value is None:
            raise ParseError(f"missing {CANONICAL.get(key, key)} header")
        return value

    def _optional(self, key: str) -> str | None:
        # Only for headers that are not lists (Call-ID, CSeq, From …): no splitting.
        headers = self.headers
        values = (headers._index or headers._lookup()).get(key)
        if not values:
            return None
        if len(values) > 1:
            raise ParseError(f"more than one {CANONICAL.get(key, key)} header")
        return values[0]

    # -- validation --------------------------------------------------------------
    def check_core(self) -> None:
        """Parse what every transaction needs (RFC 3261 §8.1.1): the mandatory
        headers present, single-instance headers single, Via, From, To, Call-ID,
        CSeq (matching the method) and Max-Forwards. Raises ParseError."""
        index = self.headers._lookup()
        for key in _SINGLE:
            values = index.get(key)
            if values is not None and len(values) > 1:
                raise ParseError(f"more than one {CANONICAL[key]} header")
        for key in _REQUIRED:
            if key not in index:
                raise ParseError(f"missing {CANONICAL[key]} header")
        _ = self.via, self.from_, self.to, self.call_id, self.cseq, self.max_forwards
        if isinstance(self, Request) and self.cseq.method != self.method:
            # RFC 4475 §3.1.2.17/18: CSeq method must match the request method.
            raise ParseError(
                f"CSeq method {self.cseq.method!r} does not match request method {self.method!r}"
            )

    def validate(self) -> None:
        """check_core() and every other header the core understands; raise
        ParseError on the first malformed one. Unknown headers are left alone."""
        self.check_core()
        for key in list(self.headers._lookup()):
            check = _CHECKS.get(key)
            if check is not None:
                check(self, key)

    # -- serialization -----------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        lines = [self.start_line()]
        has_length = False
        clen = str(len(self.body))
        for key, name, value in self.headers._items:
            if key == "content-length":
                if has_length:
                    continue
                has_length = True
                lines.append(f"{name}: {clen}")
                continue
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {clen}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other) or not isinstance(other, Message):
            return NotImplemented
        # Content-Length is derived from the body (we always write it), so it is
        # not part of a message's identity.
        mine = [(k, v) for k, _n, v in self.headers._items if k != "content-length"]
        theirs = [(k, v) for k, _n, v in other.headers._items if k != "content-length"]
        return (
            self.start_line() == other.start_line() and mine == theirs and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _check_addresses(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        parse_name_addr(v)


def _check_tokens(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        if not TOKEN.fullmatch(v):
            raise ParseError(f"invalid {CANONICAL[key]} value {v[:40]!r}")


def _check_uint32(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        parse_uint(v, CANONICAL[key], _UINT32)


def _check_date(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        if not _DATE.fullmatch(v.strip()):
            raise ParseError(f"invalid Date {v[:40]!r} (RFC 1123 date in GMT)")


def _check_warning(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        if not _WARNING.fullmatch(v):
            raise ParseError(f"invalid Warning {v[:40]!r}")


def _check_retry_after(msg: Message, key: str) -> None:
    for v in msg.headers.getall(key):
        m = _RETRY_AFTER.fullmatch(v)
        if m is None or len(m.group(1)) > 10 or int(m.group(1)) > _UINT32:
            raise ParseError(f"invalid Retry-After {v[:40]!r}")


def _check_view(msg: Message, key: str) -> None:
    _ = {"expires": msg.expires, "contact": msg.contacts, "content-type": msg.content_type}[key]


# validate(): header key -> its check. The core headers are in check_core().
_CHECKS: dict[str, Callable[[Message, str], None]] = {
    **dict.fromkeys(
        (
            "route",
            "record-route",
            "path",
            "service-route",
            "reply-to",
            "refer-to",
            "referred-by",
            "p-asserted-identity",
            "p-preferred-identity",
        ),
        _check_addresses,
    ),
    **dict.fromkeys(
        ("require", "proxy-require", "supported", "unsupported", "allow"), _check_tokens
    ),
    "min-expires": _check_uint32,
    "rseq": _check_uint32,
    "date": _check_date,
    "warning": _check_warning,
    "retry-after": _check_retry_after,
    "expires": _check_view,
    "contact": _check_view,
    "content-type": _check_view,
}


# ---------------------------------------------------------------------------------
# Parsing

_VERSION = re.compile(r"[Ss][Ii][Pp]/([0-9]+)\.([0-9]+)")
# Methods known to be tokens: no regex needed for them.
_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)


def _split_head(data: bytes) -> tuple[bytes, int]:
    """Find the end of the header section. Returns (head, index of the body)."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], end + 4
    end = data.find(b"\n\n")  # bare LF line ends: tolerated (robustness)
    if end >= 0:
        return data[:end], end + 2
    # No empty line: accept a message that ends right after its last header line.
    if data.endswith(b"\r\n"):
        return data[:-2], len(data)
    if data.endswith(b"\n"):
        return data[:-1], len(data)
    raise ParseError("missing empty line after the headers")


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message. Over a datagram the body runs to Content-Length (extra
    bytes ignored, RFC 3261 §18.3) or to the end; over a stream (`stream=True`, data
    already framed by `frame_length`) Content-Length is mandatory."""
    if len(data) > MAX_MESSAGE:
        raise ParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}", 513)
    # RFC 3261 §7.5: ignore CRLFs before the start line (keepalives).
    if data[:2] == b"\r\n":
        start = 2
        while data[start : start + 2] == b"\r\n":
            start += 2
        data = data[start:]
    if not data:
        raise ParseError("empty message")
    head_b, body_at = _split_head(data)
    head = head_b.decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    crlfs = len(lines) - 1
    headers = Headers()
    # Every line ends in CRLF (no bare CR or LF) and no line is folded: the common
    # case, one pass. Anything else is unfolded and checked line by line.
    fast = head.count("\n") == crlfs and head.count("\r") == crlfs
    if fast and _simple_lines(lines, headers):
        first = lines[0]
    else:
        first, pairs = _careful_lines(head)
        headers._items = [(*name_entry(name), value) for name, value in pairs]
        headers._index = None
    check_repetition(len(headers._items), headers._lookup())
    msg: Request | Response
    if first.startswith(("SIP/", "sip/", "Sip/")) and " " in first:
        msg = _parse_status_line(first, headers)
    else:
        msg = _parse_request_line(first, headers)

    # Content-Length governs the body (RFC 3261 §18.3, §20.14).
    lengths = headers._lookup().get("content-length")
    rest = data[body_at:]
    if lengths is not None:
        if len(lengths) > 1:
            raise ParseError("more than one Content-Length header")
        clen = parse_uint(lengths[0], "Content-Length", MAX_MESSAGE)
        if clen > len(rest):
            raise ParseError(f"Content-Length {clen} exceeds the {len(rest)} bytes received")
        msg.body = rest[:clen] if clen != len(rest) else rest
    elif stream:
        raise ParseError("missing Content-Length on a stream transport")
    else:
        msg.body = rest
    return msg


def _simple_lines(lines: list[str], headers: Headers) -> bool:
    """Fill `headers` from lines of the form `name: value`; False (headers left
    half-filled) at the first line of another shape."""
    items = headers._items
    index: dict[str, list[str]] = {}
    entries = NAME_ENTRIES
    for line in lines[1:]:
        name, sep, raw = line.partition(":")
        entry = entries.get(name)
        if entry is None:
            # A name met for the first time, or whitespace before the colon, a
            # folded line, no colon: the careful path sorts these out.
            if not sep or not _HEADER_NAME.fullmatch(name):
                return False
            entry = name_entry(name)
        key = entry[0]
        value = raw.strip(" \t")
        items.append((key, entry[1], value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            values.append(value)
    headers._index = index
    return True


def _careful_lines(head: str) -> tuple[str, list[tuple[str, str]]]:
    """The start line and (name, value) per header, folded lines joined (RFC 3261
    §7.3.1), names checked; ParseError for what is not a header line."""
    if "\r" in head.replace("\r\n", ""):
        raise ParseError("bare CR in the header section")
    lines = head.replace("\r\n", "\n").split("\n")
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            raise ParseError("empty line inside the header section")
        if line[0] in " \t":
            # RFC 3261 §7.3.1: a line starting with whitespace continues the previous.
            if not pairs:
                raise ParseError("continuation line before any header")
            n, v = pairs[-1]
            more = line.strip(" \t")
            pairs[-1] = (n, f"{v} {more}" if v else more)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"header line without a name and ':': {line[:60]!r}")
        name = line[:colon].rstrip(" \t")
        if not _HEADER_NAME.fullmatch(name):
            raise ParseError(f"invalid header name {name[:40]!r}")
        pairs.append((name, line[colon + 1 :].strip(" \t")))
    return lines[0], pairs


def _parse_request_line(first: str, headers: Headers) -> Request:
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (single spaces)
    parts = first.split(" ")
    if len(parts) != 3:
        raise ParseError(f"malformed request line {first[:80]!r}")
    method, uri_text, version = parts
    if method not in _METHODS and not TOKEN.fullmatch(method):
        raise ParseError(f"invalid method {method[:40]!r}")
    if version != "SIP/2.0":
        vm = _VERSION.fullmatch(version)
        if vm is None:
            raise ParseError(f"malformed request line {first[:80]!r}")
        if (int(vm.group(1)), int(vm.group(2))) != (2, 0):
            raise ParseError(f"SIP version {version!r} not supported", 505)
    if not uri_text:
        raise ParseError("empty Request-URI")
    uri = parse_uri(uri_text)
    if uri.headers:
        # RFC 3261 §19.1.5 / RFC 4475 §3.1.2.11: headers are not allowed here.
        raise ParseError("Request-URI must not contain headers (?...)")
    return Request(method, uri, headers, b"", "SIP/2.0")


def _parse_status_line(first: str, headers: Headers) -> Response:
    # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
    version, _, rest = first.partition(" ")
    if version != "SIP/2.0":
        vm = _VERSION.fullmatch(version)
        if vm is None:
            raise ParseError(f"malformed status line {first[:80]!r}")
        if (int(vm.group(1)), int(vm.group(2))) != (2, 0):
            raise ParseError(f"SIP version {version!r} not supported", 505)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] == "0":
        raise ParseError(f"invalid status code {code[:20]!r}")
    return Response(int(code), reason, headers, b"", "SIP/2.0")


def frame_length(buffer: bytes | bytearray) -> int | None:
    """For a stream transport: the length of the first complete message in `buffer`,
    or None if more bytes are needed. Leading CRLFs (keepalives) must be stripped by
    the caller first. Raises ParseError when the head is too long or has no valid
    Content-Length."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_MESSAGE:
            raise ParseError("header section too long", 513)
        return None
    head = bytes(buffer[:end]).decode("utf-8", "surrogateescape")
    clen: int | None = None
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and header_key(name.strip(" \t")) == "content-length":
            if clen is not None:
                raise ParseError("more than one Content-Length header")
            clen = parse_uint(value, "Content-Length", _UINT32)
    if clen is None:
        raise ParseError("missing Content-Length on a stream transport")
    total = end + 4 + clen
    if total > MAX_MESSAGE:
        raise ParseError(f"message of {total} bytes exceeds {MAX_MESSAGE}", 513)
    return total if len(buffer) >= total else None
