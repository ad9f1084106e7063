"""SDP (RFC 4566) session descriptions: parse and serialize, for RFC 3264 offer/answer.

Theory of operation
-------------------
An SDP body is ``<type>=<value>`` lines: a session section (v o s i u e p c b, one or
more t with their r, z k a) followed by media sections (m i c b k a), RFC 4566 §5.

Parsing is liberal where phones are sloppy and strict where meaning would be lost:

* LF or CRLF line ends, blank lines and a missing final line end are accepted; a CR
  or NUL inside a line is refused (RFC 4566 §9: no value may contain one);
* within a section, lines may come in any order (serializing restores the RFC order);
* lines of a type letter this module does not know are skipped (RFC 4566 §5 tells a
  parser to ignore the whole description; one odd line from a phone should not lose
  a call);
* the structured lines (v, o, c, b, t, r, m) must be well formed, v= must come first,
  o=, s= and t= must be present, single-occurrence lines must not repeat, a session
  line (o, s, t, …) must not appear inside a media section, and every media with a
  non-zero port needs a c= at media or session level.  Anything else raises
  ``ParseError(reason, 400)`` naming the line.

Every count that sizes the work of a reader is bounded (``ParseError(reason, 488)``,
Not Acceptable Here: the description is well formed, just more than a phone system
takes): at most ``MAX_MEDIA`` media descriptions, ``MAX_FORMATS`` formats on one
m= line (RTP has 128 payload types) and ``MAX_SECTION_LINES`` lines (attributes,
ICE candidates, bandwidths, connections, timings …) in the session section or in one
media section. Numbers are at most 30 digits; ports, number of ports and address
counts at most 65535, TTLs at most 255. The SIP parser already caps a whole message
at 64 KiB.

Values are kept verbatim (no trimming), so ``parse_sdp(str(sd)) == sd`` for every
description that can be written, and attributes keep their order as
``(name, value | None)`` pairs (None for a flag such as ``a=sendonly``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from pbx_core.sip.errors import ParseError

__all__ = [
    "MAX_FORMATS",
    "MAX_MEDIA",
    "MAX_SECTION_LINES",
    "STATIC_PAYLOAD_TYPES",
    "Bandwidth",
    "Connection",
    "Direction",
    "Media",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]


class Direction(enum.StrEnum):
    """The RFC 3264 §5.1 direction attributes; absent means SENDRECV."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction an answerer mirrors (sendonly <-> recvonly)."""
        if self is Direction.SENDONLY:
            return Direction.RECVONLY
        if self is Direction.RECVONLY:
            return Direction.SENDONLY
        return self


_DIRECTIONS = {d.value: d for d in Direction}


def _is_digits(text: str) -> bool:
    # str.isdigit alone admits non-ASCII digits and int() admits "1_000" and spaces;
    # the length cap keeps int() clear of its 4300-digit limit (and of silly values).
    return len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


_MAX_DIGITS = 30  # 64-bit NTP-based session versions need 20
MAX_MEDIA = 16  # m= lines in one description (a phone offers 1 to 3)
MAX_FORMATS = 128  # formats on one m= line: RTP payload types are 0..127
MAX_SECTION_LINES = 256  # lines in the session section or in one media section
_TOO_MANY = 488  # Not Acceptable Here: well formed, but more than we take


# ---------------------------------------------------------------------------
# Line values


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``"""

    username: str = "-"
    sess_id: str = "0"
    sess_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``.

    For IP4 multicast the address may carry ``/ttl[/count]``, for IP6 ``/count``;
    these are split into ``ttl`` and ``count``.  Other address types are kept whole.
    """

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"
    ttl: int | None = None
    count: int | None = None

    def __str__(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


@dataclass(slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (AS, CT, TIAS, RS, RR …)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` and its ``r=`` lines (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]``"""

    payload_type: int
    encoding: str
    clock_rate: int
    params: str | None = None

    @property
    def channels(self) -> int:
        """Audio channels (the encoding parameter), 1 when absent or not a number."""
        if self.params is not None and _is_digits(self.params):
            return int(self.params)
        return 1

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.params is None else f"{text}/{self.params}"


# RFC 3551 §6 tables 4 and 5: payload types usable without an rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    m.payload_type: m
    for m in (
        RtpMap(0, "PCMU", 8000, "1"),
        RtpMap(3, "GSM", 8000, "1"),
        RtpMap(4, "G723", 8000, "1"),
        RtpMap(5, "DVI4", 8000, "1"),
        RtpMap(6, "DVI4", 16000, "1"),
        RtpMap(7, "LPC", 8000, "1"),
        RtpMap(8, "PCMA", 8000, "1"),
        RtpMap(9, "G722", 8000, "1"),
        RtpMap(10, "L16", 44100, "2"),
        RtpMap(11, "L16", 44100, "1"),
        RtpMap(12, "QCELP", 8000, "1"),
        RtpMap(13, "CN", 8000, "1"),
        RtpMap(14, "MPA", 90000),
        RtpMap(15, "G728", 8000, "1"),
        RtpMap(16, "DVI4", 11025, "1"),
        RtpMap(17, "DVI4", 22050, "1"),
        RtpMap(18, "G729", 8000, "1"),
        RtpMap(25, "CelB", 90000),
        RtpMap(26, "JPEG", 90000),
        RtpMap(28, "nv", 90000),
        RtpMap(31, "H261", 90000),
        RtpMap(32, "MPV", 90000),
        RtpMap(33, "MP2T", 90000),
        RtpMap(34, "H263", 90000),
    )
}


def _parse_rtpmap(value: str) -> RtpMap | None:
    pt, _, rest = value.partition(" ")
    parts = rest.strip().split("/")
    if not _is_digits(pt) or len(parts) not in (2, 3) or not _is_digits(parts[1]):
        return None
    if not parts[0]:
        return None
    return RtpMap(int(pt), parts[0], int(parts[1]), parts[2] if len(parts) == 3 else None)


# ---------------------------------------------------------------------------
# Attribute helpers shared by the session and media levels

Attribute = tuple[str, str | None]


class _Attributes:
    """Lookup helpers over an ordered ``attributes`` list."""

    __slots__ = ()
    attributes: list[Attribute]

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value``; None if absent or a flag."""
        for n, v in self.attributes:
            if n == name:
                return v
        return None

    def has_attribute(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)

    def attribute_values(self, name: str) -> list[str | None]:
        return [v for n, v in self.attributes if n == name]

    @property
    def direction(self) -> Direction | None:
        """The direction attribute at this level, None when there is none."""
        for n, v in self.attributes:
            if v is None:
                d = _DIRECTIONS.get(n.strip().lower())
                if d is not None:
                    return d
        return None

    def set_direction(self, direction: Direction | None) -> None:
        """Replace any direction attribute at this level (None removes it)."""
        kept: list[Attribute] = []
        placed = False
        for n, v in self.attributes:
            if v is None and n.strip().lower() in _DIRECTIONS:
                if not placed and direction is not None:
                    kept.append((direction.value, None))
                placed = True
                continue
            kept.append((n, v))
        if not placed and direction is not None:
            kept.append((direction.value, None))
        self.attributes[:] = kept


# ---------------------------------------------------------------------------
# Media and session


@dataclass(slots=True)
class Media(_Attributes):
    """One media description: ``m=<media> <port>[/<number of ports>] <proto> <fmt> …``
    and its i/c/b/k/a lines."""

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    num_ports: int | None = None
    info: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def connection(self) -> Connection | None:
        """The media-level c= line (the first, if a multicast description has several)."""
        return self.connections[0] if self.connections else None

    def rtpmaps(self) -> dict[str, RtpMap]:
        """Explicit rtpmaps by format; malformed a=rtpmap lines are ignored."""
        maps: dict[str, RtpMap] = {}
        for n, v in self.attributes:
            if n == "rtpmap" and v is not None:
                m = _parse_rtpmap(v)
                if m is not None:
                    maps.setdefault(str(m.payload_type), m)
        return maps

    def rtpmap(self, fmt: str | int) -> RtpMap | None:
        """The rtpmap of a payload type, falling back to the RFC 3551 static table."""
        key = str(fmt)
        for n, v in self.attributes:
            if n == "rtpmap" and v is not None and v.partition(" ")[0] == key:
                m = _parse_rtpmap(v)
                if m is not None:
                    return m
        return STATIC_PAYLOAD_TYPES.get(int(key)) if _is_digits(key) else None

    def fmtp(self, fmt: str | int) -> str | None:
        """The format parameters of ``a=fmtp:<fmt> <params>``, None when absent."""
        key = str(fmt)
        for n, v in self.attributes:
            if n == "fmtp" and v is not None:
                f, _, params = v.partition(" ")
                if f == key:
                    return params.strip()
        return None

    def _number(self, name: str) -> float | None:
        value = self.attribute(name)
        if value is None:
            return None
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number > 0 and number != float("inf") else None

    @property
    def ptime(self) -> float | None:
        """``a=ptime`` in milliseconds; None when absent or malformed."""
        return self._number("ptime")

    @property
    def maxptime(self) -> float | None:
        return self._number("maxptime")

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """RFC 3605 ``a=rtcp:<port> [IN IP4 <address>]``: (port, address or None)."""
        value = self.attribute("rtcp")
        if value is None:
            return None
        fields = value.split()
        if not fields or not _is_digits(fields[0]) or int(fields[0]) > 65535:
            return None
        return int(fields[0]), fields[3] if len(fields) >= 4 else None

    def to_lines(self) -> Iterable[str]:
        """The lines of this media description, without line ends."""
        port = str(self.port) if self.num_ports is None else f"{self.port}/{self.num_ports}"
        yield " ".join(["m=" + self.media, port, self.proto, *self.formats])
        if self.info is not None:
            yield "i=" + self.info
        for c in self.connections:
            yield f"c={c}"
        for b in self.bandwidths:
            yield f"b={b}"
        if self.key is not None:
            yield "k=" + self.key
        for n, v in self.attributes:
            yield f"a={n}" if v is None else f"a={n}:{v}"


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole SDP body.  ``str()`` gives the CRLF text, ``bytes()`` its UTF-8."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    def direction_of(self, media: Media) -> Direction:
        """The effective direction of a media: its own, else the session's, else
        sendrecv (RFC 3264 §5.1)."""
        return media.direction or self.direction or Direction.SENDRECV

    def connection_of(self, media: Media) -> Connection | None:
        """The c= that applies to a media: its own, else the session's."""
        return media.connection or self.connection

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", "s=" + self.name]
        if self.info is not None:
            lines.append("i=" + self.info)
        if self.uri is not None:
            lines.append("u=" + self.uri)
        lines.extend("e=" + e for e in self.emails)
        lines.extend("p=" + p for p in self.phones)
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        for t in self.timings:
            lines.append(f"t={t.start} {t.stop}")
            lines.extend("r=" + r for r in t.repeats)
        if self.zone is not None:
            lines.append("z=" + self.zone)
        if self.key is not None:
            lines.append("k=" + self.key)
        lines.extend(f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes)
        for m in self.media:
            lines.extend(m.to_lines())
        for line in lines:
            if "\r" in line or "\n" in line or "\0" in line:
                raise ValueError(f"SDP value contains a line break or NUL: {line!r}")
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# Parser

_SESSION_ONLY = frozenset("vosuepzrt")
_KNOWN = frozenset("vosiuepcbtrzkam")


class _Line:
    __slots__ = ("no", "text")

    def __init__(self, no: int, text: str) -> None:
        self.no = no
        self.text = text

    def error(self, reason: str) -> ParseError:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return ParseError(f"SDP line {self.no} {shown!r}: {reason}")


def _int_field(line: _Line, text: str, what: str, maximum: int | None = None) -> int:
    if not _is_digits(text):
        if len(text) > _MAX_DIGITS and text.isascii() and text.isdigit():
            raise line.error(f"{what} has more than {_MAX_DIGITS} digits")
        raise line.error(f"{what} {text[:20]!r} is not a number")
    value = int(text)
    if maximum is not None and value > maximum:
        raise line.error(f"{what} {value} is out of range")
    return value


def _parse_origin(line: _Line, value: str) -> Origin:
    f = value.split()
    if len(f) != 6:
        raise line.error(
            "o= needs 6 fields: username sess-id sess-version nettype addrtype address"
        )
    return Origin(f[0], f[1], _int_field(line, f[2], "sess-version"), f[3], f[4], f[5])


def _parse_connection(line: _Line, value: str) -> Connection:
    f = value.split()
    if len(f) != 3:
        raise line.error("c= needs 3 fields: nettype addrtype connection-address")
    nettype, addrtype, address = f
    ttl = count = None
    kind = addrtype.upper()
    if "/" in address and kind in ("IP4", "IP6"):
        address, *suffix = address.split("/")
        if not address:
            raise line.error("c= address is empty")
        if kind == "IP4" and len(suffix) in (1, 2):
            ttl = _int_field(line, suffix[0], "TTL", 255)
            if len(suffix) == 2:
                count = _int_field(line, suffix[1], "address count", 65535)
        elif kind == "IP6" and len(suffix) == 1:
            count = _int_field(line, suffix[0], "address count", 65535)
        else:
            raise line.error("c= address has too many '/' parts")
    return Connection(nettype, addrtype, address, ttl, count)


def _parse_bandwidth(line: _Line, value: str) -> Bandwidth:
    bwtype, sep, bw = value.partition(":")
    if not sep or not bwtype or any(c.isspace() for c in bwtype):
        raise line.error("b= must be <bwtype>:<bandwidth>")
    return Bandwidth(bwtype, _int_field(line, bw, "bandwidth"))


def _parse_timing(line: _Line, value: str) -> Timing:
    f = value.split()
    if len(f) != 2:
        raise line.error("t= needs a start and a stop time")
    return Timing(_int_field(line, f[0], "start time"), _int_field(line, f[1], "stop time"))


def _parse_media(line: _Line, value: str) -> Media:
    f = value.split()
    if len(f) < 3:
        raise line.error("m= needs media, port and proto")
    port_text, _, num_text = f[1].partition("/")
    port = _int_field(line, port_text, "port", 65535)
    num_ports = None
    if "/" in f[1]:
        num_ports = _int_field(line, num_text, "number of ports", 65535)
        if num_ports == 0:
            raise line.error("number of ports must be at least 1")
    if len(f) - 3 > MAX_FORMATS:
        raise ParseError(
            f"SDP line {line.no}: {len(f) - 3} formats on one m= line (at most {MAX_FORMATS})",
            _TOO_MANY,
        )
    return Media(media=f[0], port=port, proto=f[2], formats=f[3:], num_ports=num_ports)


def _attribute(value: str) -> Attribute:
    name, sep, val = value.partition(":")
    return (name, val) if sep else (name, None)


def _split_lines(data: bytes | str) -> list[_Line]:
    if isinstance(data, bytes):
        text = data.decode("utf-8", "surrogateescape")
    else:
        text = data
    lines = []
    for no, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.strip():
            if "\r" in line or "\0" in line:
                # RFC 4566 §9 byte-string: no CR, LF or NUL inside a value (a CR
                # would break the line of every SDP that echoes the value).
                raise _Line(no, line).error("a value contains a CR or NUL")
            lines.append(_Line(no, line))
    return lines


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body (see the module docstring for what is tolerated)."""
    lines = _split_lines(data)
    if not lines:
        raise ParseError("SDP body is empty")
    first = lines[0]
    if not first.text.startswith("v="):
        raise first.error("SDP must start with v=")
    sd = SessionDescription(
        version=_int_field(first, first.text[2:], "version"), timings=[], origin=Origin()
    )
    seen = {"v"}
    media: Media | None = None
    media_seen: set[str] = set()
    section_lines = 1
    for line in lines[1:]:
        text = line.text
        if len(text) < 2 or text[1] != "=" or not ("a" <= text[0] <= "z"):
            raise line.error("not a <type>=<value> line")
        kind, value = text[0], text[2:]
        if kind not in _KNOWN:
            continue  # unknown type letter: skipped (see module docstring)
        if kind == "m":
            if len(sd.media) == MAX_MEDIA:
                raise ParseError(f"SDP has more than {MAX_MEDIA} media descriptions", _TOO_MANY)
            media = _parse_media(line, value)
            media_seen = set()
            section_lines = 1
            sd.media.append(media)
            continue
        section_lines += 1
        if section_lines > MAX_SECTION_LINES:
            where = "the session section" if media is None else f"media {len(sd.media)}"
            raise ParseError(f"SDP has more than {MAX_SECTION_LINES} lines in {where}", _TOO_MANY)
        if media is not None:
            if kind in _SESSION_ONLY:
                raise line.error(f"{kind}= is not allowed inside a media description")
            if kind in "ik" and kind in media_seen:
                raise line.error(f"{kind}= appears twice in one media description")
            media_seen.add(kind)
            if kind == "a":
                media.attributes.append(_attribute(value))
            elif kind == "c":
                media.connections.append(_parse_connection(line, value))
            elif kind == "b":
                media.bandwidths.append(_parse_bandwidth(line, value))
            elif kind == "i":
                media.info = value
            else:  # "k"
                media.key = value
            continue
        if kind in "vosiuczk" and kind in seen:
            raise line.error(f"{kind}= appears twice in the session description")
        seen.add(kind)
        if kind == "a":
            sd.attributes.append(_attribute(value))
        elif kind == "o":
            sd.origin = _parse_origin(line, value)
        elif kind == "s":
            sd.name = value
        elif kind == "c":
            sd.connection = _parse_connection(line, value)
        elif kind == "b":
            sd.bandwidths.append(_parse_bandwidth(line, value))
        elif kind == "t":
            sd.timings.append(_parse_timing(line, value))
        elif kind == "r":
            if not sd.timings:
                raise line.error("r= must follow a t= line")
            sd.timings[-1].repeats.append(value)
        elif kind == "i":
            sd.info = value
        elif kind == "u":
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind == "z":
            sd.zone = value
        else:  # "k"; a second "v" was refused as a repeat above
            sd.key = value
    for needed in "ost":
        if needed not in seen:
            raise ParseError(f"SDP lacks the mandatory {needed}= line")
    if sd.connection is None:
        for i, m in enumerate(sd.media, start=1):
            if m.port != 0 and not m.connections:
                raise ParseError(f"SDP media {i} ({m.media} {m.port}) has no c= line")
    return sd
