"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), and any other scheme kept
opaque (RFC 3261 absoluteURI) so a server can answer 416 instead of 400.

Theory of operation: components are kept in their *wire* form (escapes intact), so a
URI serializes back exactly as received and a proxy never changes what it forwards.
`unescape()` gives the decoded text where an application wants it (an extension
number). `equivalent()` implements the comparison rules of §19.1.4.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from pbx_core.memo import Memo
from pbx_core.sip.errors import ParseError

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

# unreserved = alphanum / mark;  mark = - _ . ! ~ * ' ( )
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
# '#' is not in the grammar but phones send it for feature codes (*67#...): accepted.
_USER = rf"[{_UNRESERVED}&=+$,;?/#%]+"
# password = *( unreserved / escaped / & = + $ , )
_PASSWORD = rf"[{_UNRESERVED}&=+$,%]*"
# host = hostname / IPv4address / IPv6reference ('_' tolerated in names: seen in the wild)
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+"
_SIP_URI = re.compile(
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"(?P<host>{_HOST})"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>(?:;[^;?]*)*)"
    r"(?:\?(?P<headers>.*))?",
    re.DOTALL,
)
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PARAMCHARS = rf"[{_UNRESERVED}\[\]/:&+$%]+"
_URI_PARAM = re.compile(rf"(?P<name>{_PARAMCHARS})(?:=(?P<value>{_PARAMCHARS}))?")
# hname/hvalue chars: hnv-unreserved = [ ] / ? : + $
_HCHARS = rf"[{_UNRESERVED}\[\]/?:+$%]"
_URI_HEADER = re.compile(rf"(?P<name>{_HCHARS}+)=(?P<value>{_HCHARS}*)")
# A '%' that does not start a valid escape.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# tel: global or local number, RFC 3966 (lenient about visual separators)
_TEL_NUMBER = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW%]+")
# opaque-part / hier-part of any other scheme: uric characters only
_OPAQUE = re.compile(rf"[{_UNRESERVED};/?:@&=+$,\[\]%#]*")
_IPV6_REF = re.compile(r"\[[0-9A-Fa-f:]*(?::[0-9]{1,3}(?:\.[0-9]{1,3}){3})?\]")

# RFC 3261 §19.1.4: these parameters must match when present in either URI.
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")
# reserved = ; / ? : @ & = + $ ,  (escapes of these are significant)
_RESERVED = frozenset(";/?:@&=+$,")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %HH escapes (UTF-8; undecodable bytes kept as surrogates)."""
    if "%" not in text:
        return text
    raw = _BYTE_ESCAPE.sub(
        lambda m: bytes((int(m.group(1), 16),)), text.encode("utf-8", "surrogateescape")
    )
    return raw.decode("utf-8", "surrogateescape")


_BYTE_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _normalize_escapes(text: str) -> str:
    """Canonical form for comparison: escapes of non-reserved characters decoded,
    the rest upper-cased (%3b == %3B). RFC 3261 §19.1.4."""

    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        # '%' itself stays escaped: decoding %25 would make "%2541" look like "%41".
        if ch not in _RESERVED and ch != "%" and 0x20 < ord(ch) < 0x7F:
            return ch
        return "%" + m.group(1).upper()

    return _ESCAPE.sub(fix, text)


Params = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class URI:
    """A parsed URI. For sip/sips: user, password, host, port, params, headers.
    For tel: `user` holds the number, host is "". For other schemes: `opaque` holds
    everything after "scheme:" and the other fields are empty."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None
    raw: str | None = field(default=None, compare=False, repr=False)

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str, default: str | None = None) -> str | None:
        """Value of a URI parameter (case-insensitive name); "" for a flag such as lr."""
        lname = name.lower()
        for k, v in self.params:
            if k.lower() == lname:
                return "" if v is None else v
        return default

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self.params)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    def with_(self, **changes: Any) -> URI:
        """A copy with some fields changed (serialized afresh, not from `raw`)."""
        return dataclasses.replace(self, raw=None, **changes)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts.append(":" + self.password)
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for k, v in self.params:
            parts.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)

    def equivalent(self, other: URI) -> bool:
        """RFC 3261 §19.1.4 URI comparison (tel and other schemes: case-insensitive
        comparison of the normalized text)."""
        if self.scheme != other.scheme:
            return False
        if self.scheme == "tel":
            # RFC 3966 §4: visual separators don't count; parameters in any order.
            return _tel_number(self.user) == _tel_number(other.user) and {
                (_normalize_escapes(k).lower(), _norm_pvalue(v)) for k, v in self.params
            } == {(_normalize_escapes(k).lower(), _norm_pvalue(v)) for k, v in other.params}
        if not self.is_sip:
            return _normalize_escapes(str(self)).lower() == _normalize_escapes(str(other)).lower()
        # userinfo is case-sensitive; escapes of unreserved characters are equivalent.
        if (self.user is None) != (other.user is None):
            return False
        if self.user is not None and other.user is not None:
            if _normalize_escapes(self.user) != _normalize_escapes(other.user):
                return False
            if _norm_opt(self.password) != _norm_opt(other.password):
                return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {_normalize_escapes(k).lower(): _norm_pvalue(v) for k, v in self.params}
        theirs = {_normalize_escapes(k).lower(): _norm_pvalue(v) for k, v in other.params}
        for name in _STRICT_PARAMS:
            if mine.get(name) != theirs.get(name):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        mh = {(k.lower(), unescape(v)) for k, v in self.headers}
        th = {(k.lower(), unescape(v)) for k, v in other.headers}
        return mh == th


def _tel_number(number: str | None) -> str:
    return _VISUAL.sub("", unescape(number or "")).lower()


_VISUAL = re.compile(r"[\-.()]")


def _norm_opt(text: str | None) -> str | None:
    return None if text is None else _normalize_escapes(text)


def _norm_pvalue(value: str | None) -> str:
    return "" if value is None else _normalize_escapes(value).lower()


# Parsed URIs by their text. A URI is immutable, and the same few recur in every
# message of a phone (its AOR, its Contact, our domain), so parsing one is a dict
# lookup the second time. Bounded in count and in length (at most ~1 MiB of text).
_PARSED_MAX = 4096
_PARSED: Memo[str, URI] = Memo(_PARSED_MAX, 256)


def parse_uri(text: str) -> URI:
    """Parse a URI as found in a Request-URI or inside <...>. Raises ParseError(400)."""
    uri = _PARSED.get(text)
    if uri is None:
        uri = _PARSED.keep(text, _parse_uri(text), len(text))
    return uri


def _parse_uri(text: str) -> URI:
    colon = text.find(":")
    if colon <= 0 or not _SCHEME.fullmatch(text, 0, colon):
        raise ParseError(f"invalid URI {text[:80]!r}: no scheme")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if "%" in rest and _BAD_ESCAPE.search(rest):
        raise ParseError(f"invalid %-escape in URI {text[:80]!r}")
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        return _parse_tel(rest, text)
    if not rest or not _OPAQUE.fullmatch(rest):
        raise ParseError(f"invalid {scheme}: URI {text[:80]!r}")
    return URI(scheme=scheme, opaque=rest, raw=text)


def _parse_sip(scheme: str, rest: str, text: str) -> URI:
    m = _SIP_URI.fullmatch(rest)
    if m is None:
        raise ParseError(f"invalid SIP URI {text[:80]!r}")
    user, password, host, port_s, params_s, headers_s = m.group(
        "user", "password", "host", "port", "params", "headers"
    )
    if host[0] == "[" and not _IPV6_REF.fullmatch(host):
        raise ParseError(f"invalid IPv6 reference in URI {text[:80]!r}")
    port: int | None = None
    if port_s is not None:
        port = int(port_s)
        if port > 65535:
            raise ParseError(f"port out of range in URI {text[:80]!r}")
    params = _parse_uri_params(params_s, text) if params_s else ()
    headers: tuple[tuple[str, str], ...] = ()
    if headers_s is not None:
        hs = []
        for item in headers_s.split("&"):
            hm = _URI_HEADER.fullmatch(item)
            if hm is None:
                raise ParseError(f"invalid header {item!r} in URI {text[:80]!r}")
            hs.append((hm.group("name"), hm.group("value")))
        headers = tuple(hs)
    return URI(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=params,
        headers=headers,
        raw=text,
    )


def _parse_uri_params(params_s: str, text: str) -> Params:
    out = []
    for item in params_s[1:].split(";"):
        pm = _URI_PARAM.fullmatch(item)
        if pm is None:
            raise ParseError(f"invalid parameter {item!r} in URI {text[:80]!r}")
        out.append((pm.group("name"), pm.group("value")))
    return tuple(out)


def _parse_tel(rest: str, text: str) -> URI:
    number, sep, params_s = rest.partition(";")
    if not _TEL_NUMBER.fullmatch(number):
        raise ParseError(f"invalid tel: URI {text[:80]!r}")
    params = _parse_uri_params(";" + params_s, text) if sep else ()
    return URI(scheme="tel", user=number, params=params, raw=text)
