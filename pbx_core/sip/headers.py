"""Structured header values: name-addr/addr-spec, Via, CSeq, generic parameters, and
splitting of comma-separated header lists (RFC 3261 §20, §25.1).

All functions take the header *value* as it stands after unfolding (message.py turns
every CRLF+WSP into one space) and raise ParseError(400) on anything the grammar does
not allow. LWS is allowed wherever the grammar says SWS/LWS: around ";", "=", "/",
":" in Via, and between display name and "<".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pbx_core.sip.errors import ParseError
from pbx_core.sip.uri import URI, Params, parse_uri

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105  # a grammar, not a password
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")
_WS = " \t"

# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string
_PARAM = re.compile(
    rf"[ \t]*;[ \t]*(?P<name>[{TOKEN_CHARS}]+)"
    rf"(?:[ \t]*=[ \t]*(?P<value>\"(?:[^\"\\]|\\.)*\"|\[[0-9A-Fa-f:.]+\]|[{TOKEN_CHARS}]+))?",
    re.DOTALL,
)
_TRAILING_WS = re.compile(r"[ \t]*")


def parse_params(text: str, start: int = 0, what: str = "header") -> tuple[Params, int]:
    """Parse `*( SEMI generic-param )` from text[start:]. Returns the params and the
    index where they end (the caller checks what may follow)."""
    n = len(text)
    if start >= n:
        return (), start
    out: list[tuple[str, str | None]] = []
    pos = start
    match = _PARAM.match
    while True:
        m = match(text, pos)
        if m is None:
            break
        name, value = m.group(1, 2)
        out.append((name, value))
        pos = m.end()
    if pos < n:
        pos = _TRAILING_WS.match(text, pos).end()  # type: ignore[union-attr]  # always matches
    if pos < n and text[pos] == ";":
        raise ParseError(f"invalid parameter in {what}: {text[pos : pos + 40]!r}")
    return tuple(out), pos


def param_value(params: Params, name: str) -> str | None:
    """Value of a parameter by case-insensitive name ("" for a flag), None if absent.
    Quoted values are returned with the quotes."""
    lname = name.lower()
    for k, v in params:
        if k == lname or k.lower() == lname:
            return "" if v is None else v
    return None


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def split_commas(value: str) -> list[str]:
    """Split a header value at commas that are not inside a quoted string or <...>.
    Empty elements are an error (RFC 3261 #rule allows none in SIP)."""
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, c in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    if any(not item for item in out):
        raise ParseError(f"empty element in list {value[:60]!r}")
    return out


def parse_quoted(text: str, start: int) -> tuple[str, int]:
    """Parse a quoted-string at text[start] == '"'. Returns its content with escapes
    resolved and the index after the closing quote."""
    i = start + 1
    n = len(text)
    out: list[str] = []
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ParseError(f"unterminated quoted string in {text[:60]!r}")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route …)."""

    uri: URI
    display: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return param_value(self.params, "tag")

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def with_params(self, **values: str | None) -> NameAddr:
        """A copy with parameters set (value None removes; "" makes a flag)."""
        params = [p for p in self.params if p[0].lower() not in values]
        for k, v in values.items():
            if v is not None:
                params.append((k, v or None))
        return NameAddr(self.uri, self.display, tuple(params))

    def __str__(self) -> str:
        disp = "" if self.display is None else quote(self.display) + " "
        return f"{disp}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse `( name-addr / addr-spec ) *( SEMI param )`."""
    text = value.strip(_WS)
    if not text:
        raise ParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        display, pos = parse_quoted(text, 0)
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != "<":
            raise ParseError(f"expected '<' after display name in {text[:60]!r}")
        return _angle_addr(text, pos, display)
    lt = text.find("<")
    if lt >= 0:
        disp_text = text[:lt].strip(_WS)
        if disp_text:
            # display-name = *(token LWS) without quotes
            words = disp_text.split()
            if not all(TOKEN.fullmatch(w) for w in words):
                raise ParseError(f"invalid display name {disp_text[:60]!r} (quote it)")
            display = " ".join(words)
        return _angle_addr(text, lt, display)
    # addr-spec: parameters after the first ';' belong to the header (RFC 3261 §20).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi]
    uri_text = uri_text.rstrip(_WS)
    if any(c in uri_text for c in ' \t?,"'):
        raise ParseError(f"URI with '?', ',' or spaces must be in <>: {uri_text[:60]!r}")
    uri = parse_uri(uri_text)
    params: Params = ()
    if semi >= 0:
        params, end = parse_params(text, semi)
        if end != len(text):
            raise ParseError(f"unexpected text after address: {text[end : end + 40]!r}")
    return NameAddr(uri, None, params)


def _angle_addr(text: str, lt: int, display: str | None) -> NameAddr:
    gt = text.find(">", lt)
    if gt < 0:
        raise ParseError(f"missing '>' in {text[:60]!r}")
    uri_text = text[lt + 1 : gt]
    if uri_text != uri_text.strip(_WS):
        raise ParseError(f"spaces inside <> around the URI in {text[:60]!r}")
    uri = parse_uri(uri_text)
    params, end = parse_params(text, gt + 1)
    if end != len(text):
        raise ParseError(f"unexpected text after address: {text[end : end + 40]!r}")
    return NameAddr(uri, display, params)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm: `SIP/2.0/UDP host:port;branch=…;received=…;rport=…`."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return param_value(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param_value(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The rport value the server filled in; None if absent or empty."""
        v = param_value(self.params, "rport")
        return int(v) if v else None

    @property
    def has_rport(self) -> bool:
        return param_value(self.params, "rport") is not None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def with_params(self, **values: str | None) -> Via:
        params = [p for p in self.params if p[0].lower() not in values]
        for k, v in values.items():
            if v is not None:
                params.append((k, v or None))
        return Via(self.transport, self.host, self.port, tuple(params), self.protocol)

    def received_from(self, host: str, port: int | None) -> Via:
        """This via-parm as a server stamps it on arrival from host:port (RFC 3261
        §18.2.1 `received`; RFC 3581 §4 `rport` filled in when `port` is given)."""
        if port is None:
            params = [p for p in self.params if p[0].lower() != "received"]
        else:
            params = [p for p in self.params if p[0].lower() not in ("received", "rport")]
            params.append(("rport", str(port)))
        params.append(("received", host))
        return Via(self.transport, self.host, self.port, tuple(params), self.protocol)

    def __str__(self) -> str:
        params = self.params
        if not params:
            return f"{self.protocol}/{self.transport} {self.sent_by}"
        text = "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])
        return f"{self.protocol}/{self.transport} {self.sent_by}{text}"


# via-parm = sent-protocol LWS sent-by; sent-protocol = name SLASH version SLASH transport
_VIA = re.compile(
    rf"[ \t]*(?P<name>[{TOKEN_CHARS}]+)[ \t]*/[ \t]*(?P<version>[{TOKEN_CHARS}]+)"
    rf"[ \t]*/[ \t]*(?P<transport>[{TOKEN_CHARS}]+)[ \t]+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+)(?:[ \t]*:[ \t]*(?P<port>[0-9]{1,5}))?"
)
_VIA_NUMERIC = {"ttl": 255, "rport": 65535}
# RFC 3261 §25: via-received = "received" EQUAL (IPv4address / IPv6address), an IPv6
# address without brackets (what received_from writes; RFC 5118 §4.5: accept both).
_RECEIVED_V6 = re.compile(
    r"[ \t]*;[ \t]*(received)[ \t]*=[ \t]*([0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)", re.I
)


def parse_via(value: str) -> Via:
    """Parse one via-parm (the caller splits the list with split_commas)."""
    m = _VIA.match(value)
    if m is None:
        raise ParseError(f"invalid Via {value[:60]!r}")
    port = None
    if m.group("port") is not None:
        port = int(m.group("port"))
        if port > 65535:
            raise ParseError(f"Via port out of range in {value[:60]!r}")
    params, end = parse_params(value, m.end(), "Via")
    while end != len(value) and params and params[-1][0].lower() == "received":
        # The generic grammar stopped inside `received=` + an IPv6 address (colons):
        # take that parameter again from its `;` (no value of it can hold one).
        v6 = _RECEIVED_V6.match(value, value.rfind(";", 0, end))
        if v6 is None or v6.end() <= end:
            break
        try:
            ipaddress.IPv6Address(v6.group(2))
        except ValueError:
            raise ParseError(f"invalid Via received={v6.group(2)[:40]!r}") from None
        more, end = parse_params(value, v6.end(), "Via")
        params = (*params[:-1], (v6.group(1), v6.group(2)), *more)
    if end != len(value):
        raise ParseError(f"unexpected text in Via: {value[end : end + 40]!r}")
    for k, v in params:
        limit = _VIA_NUMERIC.get(k.lower())
        if limit is not None and v is not None and (not v.isdigit() or int(v) > limit):
            raise ParseError(f"invalid Via {k}={v!r}")
    protocol = f"{m.group('name').upper()}/{m.group('version')}"
    return Via(m.group("transport").upper(), m.group("host"), port, params, protocol)


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ = re.compile(rf"[ \t]*([0-9]+)[ \t]+([{TOKEN_CHARS}]+)[ \t]*")
# RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
CSEQ_MAX = 2**31 - 1


def parse_cseq(value: str) -> CSeq:
    m = _CSEQ.fullmatch(value)
    if m is None:
        raise ParseError(f"invalid CSeq {value[:60]!r}")
    if len(m.group(1)) > 10 or int(m.group(1)) > CSEQ_MAX:
        raise ParseError(f"CSeq number out of range in {value[:60]!r}")
    return CSeq(int(m.group(1)), m.group(2))


def parse_uint(value: str, name: str, maximum: int) -> int:
    """1*DIGIT within [0, maximum] (Max-Forwards, Expires, Content-Length …)."""
    v = value.strip(_WS)
    if not v.isascii() or not v.isdigit() or len(v) > 12 or int(v) > maximum:
        raise ParseError(f"invalid {name} {value[:40]!r}")
    return int(v)


def parse_contacts(value: str) -> list[NameAddr] | None:
    """Contact header value: a list of addresses, or None for `*`."""
    if value.strip(_WS) == "*":
        return None
    out = []
    for item in split_commas(value):
        na = parse_name_addr(item)
        exp = na.param("expires")
        if exp is not None and not (exp.isascii() and exp.isdigit()):
            raise ParseError(f"invalid Contact expires {exp!r}")
        q = na.param("q")
        if q is not None and not _QVALUE.fullmatch(q):
            raise ParseError(f"invalid Contact q {q!r}")
        out.append(na)
    return out


# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


# Bounds on repetition (RFC 3261 leaves them to us). A request crosses at most 70
# hops (Max-Forwards' recommended start, §8.1.1.6), so it carries at most that many
# Via, Route, Record-Route or Path values, whether on lines of their own or comma-
# separated; and a message has at most this many header lines in all.
MAX_HOPS = 70
MAX_HEADER_LINES = 256
_HOP_HEADERS = {"via": "Via", "route": "Route", "record-route": "Record-Route", "path": "Path"}


def check_repetition(lines: int, index: dict[str, list[str]]) -> None:
    """ParseError (400) for a message with more header lines than MAX_HEADER_LINES,
    or more Via, Route, Record-Route or Path values than MAX_HOPS. `index`: header
    key -> raw values, one per line."""
    if lines > MAX_HEADER_LINES:
        raise ParseError(f"{lines} header lines: at most {MAX_HEADER_LINES}")
    for key, name in _HOP_HEADERS.items():
        values = index.get(key)
        if values is None:
            continue
        rough = len(values) + sum(v.count(",") for v in values)  # an upper bound
        if rough > MAX_HOPS:
            n = sum(len(split_commas(v)) for v in values)
            if n > MAX_HOPS:
                raise ParseError(f"{n} {name} values: at most {MAX_HOPS}")
