"""Digest access authentication for SIP: RFC 3261 §22 with RFC 7616 and RFC 8760.

Theory of operation
-------------------
A server answers an unauthenticated request with 401/407 carrying one challenge per
algorithm it offers, in its order of preference (``DigestServer.challenges``; RFC 8760
§2.4).  Which order works depends on the clients (measured with Debian 12's peers):
SIPp 3.6 reads only the topmost header and gives up on SHA-256; pjsua 2.15 answers
the topmost one it supports; baresip 1.0 (libre 1.1) fails when *any* challenge is
not MD5.  Callers choose the offer (the PBX: setting ``auth_algorithms``).

The nonce in the challenge is not stored anywhere: it is

    nonce = base64url( issued_ms:int64 | counter:uint32 | HMAC-SHA256(secret, ...)[:16] )

where the HMAC covers the first twelve bytes and a caller-chosen binding (the realm).
Nobody without the secret can forge one, and the timestamp inside tells its age, so an
authentic nonce older than ``lifetime`` is *stale*: the client is re-challenged with
``stale=true`` and retries without asking its user for the password again.

The counter gives every nonce a slot in a fixed-size table of last-seen nonce-counts
(the idea of Kamailio's nid pool): a request whose nc is not above the last accepted
one is a replay, and a nonce whose slot has been taken over by a newer nonce is
treated as stale.  Memory is bounded by the table size whatever the traffic.

Verification costs the same whether the user exists or not: with no stored HA1 the
response is computed against a dummy HA1 and simply cannot match, so callers can
answer unknown users exactly as they answer wrong passwords (no user enumeration).

Only HA1 = H(username:realm:password) is ever needed, never the password; SER and
Kamailio store it in ``subscriber.ha1`` and H(username@domain:realm:password) in
``ha1b`` (for clients that put user@domain in the username parameter).

Header values are parsed and serialized here; the message layer hands the raw value of
a WWW-Authenticate / Proxy-Authenticate / Authorization / Proxy-Authorization header
(one challenge or credentials per header field: these must not be split on commas).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pbx_core.sip.errors import ParseError, SipError

__all__ = [
    "ALGORITHMS",
    "AuthStatus",
    "Challenge",
    "Credentials",
    "DigestError",
    "DigestServer",
    "NonceFactory",
    "NonceStatus",
    "VerifyResult",
    "algorithm_info",
    "choose_challenge",
    "compute_ha1",
    "compute_ha1b",
    "compute_response",
    "parse_challenge",
    "parse_credentials",
]


class DigestError(SipError):
    """A challenge this client cannot answer (unknown algorithm or qop)."""


# ---------------------------------------------------------------------------
# Algorithms (RFC 7616 §3.2; RFC 8760 for SIP)


def _md5(data: bytes) -> str:
    # MD5 is what the protocol prescribes for most deployed phones, not our choice.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str  # canonical spelling, as put on the wire
    hash: Callable[[bytes], str]
    hex_len: int
    sess: bool


_ALGOS: dict[str, _Algorithm] = {
    a.name.lower(): a
    for a in (
        _Algorithm("MD5", _md5, 32, sess=False),
        _Algorithm("MD5-sess", _md5, 32, sess=True),
        _Algorithm("SHA-256", _sha256, 64, sess=False),
        _Algorithm("SHA-256-sess", _sha256, 64, sess=True),
    )
}

ALGORITHMS: tuple[str, ...] = tuple(a.name for a in _ALGOS.values())
"""Canonical names of the supported algorithms."""


def _algorithm(name: str | None) -> _Algorithm:
    """The algorithm for a (case-insensitive) name; absent means MD5 (RFC 7616 §3.3)."""
    if name is None:
        return _ALGOS["md5"]
    algo = _ALGOS.get(name.lower())
    if algo is None:
        raise DigestError(f"unsupported digest algorithm {name!r}")
    return algo


def algorithm_info(name: str | None) -> tuple[str, bool]:
    """(canonical name, is a -sess algorithm) for an algorithm parameter; absent
    means MD5. Raises DigestError for an unsupported one."""
    algo = _algorithm(name)
    return algo.name, algo.sess


def _b(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        # Undecodable bytes of a header reach us as lone surrogates; hash them as the
        # bytes they came from (surrogateescape) or at least deterministically.
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------
# Hash computations (RFC 7616 §3.4)


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password), the value to store instead of the password.

    For the ``-sess`` algorithms this is still the stored value: the session key
    H(HA1:nonce:cnonce) is derived per request by ``compute_response``.
    """
    return _algorithm(algorithm).hash(_b(f"{username}:{realm}:{password}"))


def compute_ha1b(
    username: str, domain: str, realm: str, password: str, algorithm: str = "MD5"
) -> str:
    """SER/Kamailio ``ha1b``: H(username@domain:realm:password), for clients that send
    ``username="user@domain"``."""
    return compute_ha1(f"{username}@{domain}", realm, password, algorithm)


def compute_response(
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str | None = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest from a stored HA1.

    ``qop`` None is RFC 2069 compatibility: H(HA1:nonce:HA2).  ``qop`` "auth" or
    "auth-int" adds nc and cnonce; "auth-int" hashes the body into HA2.
    Raises DigestError for an unknown algorithm or qop.
    """
    algo = _algorithm(algorithm)
    return _response(
        algo, ha1, nonce=nonce, method=method, uri=uri, qop=qop, nc=nc, cnonce=cnonce, body=body
    )


def _response(
    algo: _Algorithm,
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes,
) -> str:
    h = algo.hash
    if algo.sess:
        # RFC 7616 §3.4.2: HA1 = H(H(user:realm:pw):nonce:cnonce)
        ha1 = h(_b(f"{ha1}:{nonce}:{cnonce or ''}"))
    qop_l = qop.lower() if qop is not None else None
    if qop_l == "auth-int":
        ha2 = h(_b(f"{method}:{uri}:") + h(body).encode())
    elif qop_l is None or qop_l == "auth":
        ha2 = h(_b(f"{method}:{uri}"))
    else:
        raise DigestError(f"unsupported qop {qop!r}")
    if qop is None:
        return h(_b(f"{ha1}:{nonce}:{ha2}"))
    return h(_b(f"{ha1}:{nonce}:{nc or ''}:{cnonce or ''}:{qop}:{ha2}"))


# ---------------------------------------------------------------------------
# Header grammar (RFC 3261 §25.1, RFC 7616 §3.3-3.4, RFC 7235 §2.1)

_TCHAR = r"A-Za-z0-9!#$%&'*+.^_`|~-"
# challenge/credentials = auth-scheme LWS auth-param *(COMMA auth-param)
_SCHEME_RE = re.compile(rf"[ \t]*([{_TCHAR}]+)(?:[ \t]+|\Z)")
# auth-param = token EQUAL ( token / quoted-string ); quoted-pair = "\" any but CR LF.
# Unquoted values are accepted liberally (some phones send uri=sip:x@y unquoted).
_PARAM_RE = re.compile(
    rf"[ \t]*([{_TCHAR}]+)[ \t]*=[ \t]*"
    # (the quoted part unrolled, normal* (escape normal*)*: one fast loop per run)
    r'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*(?:\\[^\r\n][^"\\\x00-\x08\x0a-\x1f\x7f]*)*)"|([^\s",]+))'
    r"[ \t]*(?:,[ \t,]*|\Z)"
)
_EMPTY_ELEMENTS_RE = re.compile(r"[ \t,]*")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
# What a quoted string carries as quoted-pair: DQUOTE, backslash, controls but HTAB.
_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
# SIP token (RFC 3261 §25.1), what may go on the wire unquoted.
_SIP_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_NC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")


def _parse_params(value: str, what: str) -> dict[str, str]:
    """Split ``Digest k=v, k="v"`` into lowercased names and unquoted values."""
    m = _SCHEME_RE.match(value)
    if m is None:
        raise ParseError(f"{what} does not start with an auth scheme")
    if m.group(1).lower() != "digest":
        raise ParseError(f"{what} uses scheme {m.group(1)!r}, not Digest")
    params: dict[str, str] = {}
    pos = m.end()
    end = len(value)
    match = _PARAM_RE.match
    while pos < end:
        pm = match(value, pos)
        if pm is None:
            snippet = value[pos : pos + 20]
            raise ParseError(f"{what} has a malformed parameter at {snippet!r}")
        name = pm.group(1).lower()
        quoted = pm.group(2)
        if quoted is None:
            val = pm.group(3)
        elif "\\" in quoted:
            val = _UNESCAPE_RE.sub(r"\1", quoted)
        else:
            val = quoted
        if name in params:
            # RFC 7616 §3.4: parameters MUST NOT repeat; two readings of one header
            # would let a proxy and a server disagree about what was authenticated.
            raise ParseError(f"{what} repeats parameter {name!r}")
        params[name] = val
        pos = pm.end()
    return params


def _quote(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"cannot put CR or LF in a quoted string: {value!r}")
    return '"' + _ESCAPE_RE.sub(r"\\\g<0>", value) + '"'


def _token_or_quote(value: str) -> str:
    return value if _SIP_TOKEN_RE.fullmatch(value) else _quote(value)


def _extras(params: dict[str, str], known: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in params.items() if k not in known)


# ---------------------------------------------------------------------------
# Challenge (WWW-Authenticate / Proxy-Authenticate)

_CHALLENGE_KNOWN = frozenset({"realm", "domain", "nonce", "opaque", "stale", "algorithm", "qop"})


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge.  ``qop`` empty means the server offered none (RFC 2069);
    ``algorithm`` None means absent on the wire (MD5).  Unknown parameters are kept
    in ``extra`` (lowercased names, unquoted values) and serialized back."""

    realm: str
    nonce: str
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def supported(self) -> bool:
        """Whether ``answer_challenge`` can answer this challenge."""
        if self.algorithm is not None and self.algorithm.lower() not in _ALGOS:
            return False
        return not self.qop or any(q.lower() in ("auth", "auth-int") for q in self.qop)

    def __str__(self) -> str:
        parts = [f"Digest realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm is not None:
            parts.append(f"algorithm={_token_or_quote(self.algorithm)}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        parts.extend(f"{k}={_token_or_quote(v)}" for k, v in self.extra)
        return ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value; ParseError(400) if it is
    not a well-formed Digest challenge with realm and nonce."""
    p = _parse_params(value, "challenge")
    realm = p.get("realm")
    nonce = p.get("nonce")
    if realm is None:
        raise ParseError("challenge lacks realm")
    if nonce is None:
        raise ParseError("challenge lacks nonce")
    qop_raw = p.get("qop")
    qop: tuple[str, ...] = ()
    if qop_raw is not None:
        qop = tuple(q for q in (part.strip(" \t") for part in qop_raw.split(",")) if q)
    return Challenge(
        realm=realm,
        nonce=nonce,
        algorithm=p.get("algorithm"),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        domain=p.get("domain"),
        extra=_extras(p, _CHALLENGE_KNOWN),
    )


def choose_challenge(values: Iterable[str]) -> Challenge | None:
    """From the challenge header values of one response, the best one this client can
    answer: SHA-256 before MD5 (RFC 8760 §2.4), in the server's order otherwise.
    Malformed and non-Digest values are skipped."""
    best: Challenge | None = None
    best_rank = -1
    for value in values:
        try:
            ch = parse_challenge(value)
        except ParseError:
            continue
        if not ch.supported:
            continue
        rank = 1 if _algorithm(ch.algorithm).hash is _sha256 else 0
        if rank > best_rank:
            best, best_rank = ch, rank
    return best


# ---------------------------------------------------------------------------
# Credentials (Authorization / Proxy-Authorization)

_CREDENTIALS_KNOWN = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc"}
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """One Digest credentials value.  ``nc`` is kept as sent (hex) because it is
    hashed as text; ``nc_value`` is its number."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def nc_value(self) -> int | None:
        return int(self.nc, 16) if self.nc is not None else None

    def __str__(self) -> str:
        # RFC 3261 §25.1 quoting: strings quoted, algorithm/qop/nc bare tokens.
        parts = [
            f"Digest username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={_token_or_quote(self.algorithm)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={_token_or_quote(self.qop)}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        parts.extend(f"{k}={_token_or_quote(v)}" for k, v in self.extra)
        return ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value; ParseError(400) when it is
    not Digest, lacks a required parameter, or has a malformed response/nc."""
    p = _parse_params(value, "credentials")
    for name in ("username", "realm", "nonce", "uri", "response"):
        if name not in p:
            raise ParseError(f"credentials lack {name}")
    response = p["response"]
    if not _HEX_RE.fullmatch(response):
        raise ParseError("credentials response is not hexadecimal")
    qop = p.get("qop")
    nc = p.get("nc")
    cnonce = p.get("cnonce")
    if nc is not None and not _NC_RE.fullmatch(nc):
        raise ParseError(f"credentials nc {nc[:20]!r} is not 1-8 hex digits")
    if qop is not None and (nc is None or cnonce is None):
        # RFC 7616 §3.4: with qop, cnonce and nc MUST be present.
        raise ParseError("credentials with qop lack nc or cnonce")
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=response,
        algorithm=p.get("algorithm"),
        cnonce=cnonce,
        opaque=p.get("opaque"),
        qop=qop,
        nc=nc,
        extra=_extras(p, _CREDENTIALS_KNOWN),
    )


# ---------------------------------------------------------------------------
# Nonces


class NonceStatus(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # authentic but expired (or its replay slot was reused)
    INVALID = "invalid"  # not ours: forged, mangled, other secret or other binding


_NONCE_HEAD = struct.Struct(">qI")  # issued time in ms, counter
_TAG_LEN = 16
_NONCE_RAW_LEN = _NONCE_HEAD.size + _TAG_LEN
_NONCE_TEXT_LEN = 38  # base64url of 28 bytes, unpadded
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_NONCE_LAST = frozenset("AQgw")  # base64 digits whose low 4 bits are zero
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class NonceFactory:
    """Stateless, unforgeable, expiring nonces (see the module docstring).

    ``nc_slots`` sizes the replay table (0 turns nonce-count tracking off); each slot
    costs 12 bytes.  ``bind`` ties a nonce to a context such as the realm: a nonce
    made for one binding is INVALID for another.
    """

    def __init__(self, secret: bytes, lifetime: float, *, nc_slots: int = 16384) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        if nc_slots < 0:
            raise ValueError("nc_slots must not be negative")
        self._secret = secret
        self.lifetime = lifetime
        self._counter = 0
        self._slots = nc_slots
        # slot -> counter of the nonce that owns it (-1: none) and its last nc.
        self._owner = array("q", [-1]) * nc_slots
        self._last_nc = array("I", [0]) * nc_slots

    def _tag(self, head: bytes, bind: str) -> bytes:
        return hmac.digest(self._secret, head + _b(bind), "sha256")[:_TAG_LEN]

    def make(self, now: float, *, bind: str = "") -> str:
        counter = self._counter
        self._counter = (counter + 1) & 0xFFFFFFFF
        head = _NONCE_HEAD.pack(int(now * 1000), counter)
        if self._slots:
            slot = counter % self._slots
            self._owner[slot] = counter
            self._last_nc[slot] = 0
        return base64.urlsafe_b64encode(head + self._tag(head, bind)).rstrip(b"=").decode()

    def _decode(self, nonce: str, bind: str) -> tuple[int, int] | None:
        """(issued ms, counter) of an authentic nonce, else None."""
        if (
            len(nonce) != _NONCE_TEXT_LEN
            # Canonical base64 only: 38 characters carry 228 bits for our 224, and
            # the last character's 4 spare bits must be zero.
            or nonce[-1] not in _NONCE_LAST
            or not _B64URL_RE.fullmatch(nonce)
        ):
            return None
        try:
            raw = binascii.a2b_base64(nonce.encode().translate(_FROM_URLSAFE) + b"==")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_RAW_LEN:
            return None
        head = raw[: _NONCE_HEAD.size]
        if not hmac.compare_digest(raw[_NONCE_HEAD.size :], self._tag(head, bind)):
            return None
        issued_ms, counter = _NONCE_HEAD.unpack(head)
        return issued_ms, counter

    def check(self, nonce: str, now: float, *, bind: str = "") -> NonceStatus:
        """VALID, STALE (authentic but older than the lifetime) or INVALID."""
        return self.inspect(nonce, now, bind=bind)[0]

    def inspect(self, nonce: str, now: float, *, bind: str = "") -> tuple[NonceStatus, int]:
        """The status and the counter of a nonce (-1 when INVALID), the counter being
        what ``accept_nc`` takes."""
        decoded = self._decode(nonce, bind)
        if decoded is None:
            return NonceStatus.INVALID, -1
        issued_ms, counter = decoded
        age = now - issued_ms / 1000
        if age < -1.0:
            # From the future: issued under another clock origin; not ours to trust.
            return NonceStatus.INVALID, -1
        if age > self.lifetime:
            return NonceStatus.STALE, counter
        return NonceStatus.VALID, counter

    def accept_nc(self, counter: int, nc: int) -> bool:
        """Record nc for the nonce with this counter (from ``inspect``).  False for a
        replay (nc not above the last accepted one) or for a nonce whose slot a newer
        nonce has taken.  Call it only once the response has been verified, or a
        forged request could burn a genuine client's nonce.  Always True when
        tracking is off."""
        if not self._slots:
            return True
        if counter < 0:
            return False
        slot = counter % self._slots
        if self._owner[slot] != counter or nc <= self._last_nc[slot]:
            return False
        self._last_nc[slot] = nc
        return True

    def derive(self, label: bytes) -> bytes:
        """A value derived from the secret, for other secrets of the same instance."""
        return hmac.digest(self._secret, b"derive:" + label, "sha256")


# ---------------------------------------------------------------------------
# Server side


class AuthStatus(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, old nonce: re-challenge with stale=true
    FAIL = "fail"  # wrong password, unknown user, or credentials not for us


@dataclass(frozen=True, slots=True)
class VerifyResult:
    status: AuthStatus
    reason: str  # for logs; identical for unknown users and wrong passwords

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


_RESPONSE_MISMATCH = "response mismatch"


class DigestServer:
    """Issues challenges and verifies credentials for one or more realms.

    ``algorithms`` are those accepted, in the order challenges are offered.  Offer
    only algorithms whose HA1 the caller can look up: a phone answers the first
    challenge it supports, so offering SHA-256 with only MD5 HA1s stored (SER's
    ``subscriber.ha1``) would fail every SHA-256-capable phone.
    ``allow_rfc2069`` accepts credentials without qop from old phones.
    ``auth_int`` also offers qop=auth-int (body integrity).
    """

    def __init__(
        self,
        nonces: NonceFactory,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        allow_rfc2069: bool = True,
        auth_int: bool = False,
    ) -> None:
        self.nonces = nonces
        self.algorithms = tuple(_algorithm(a).name for a in algorithms)
        if not self.algorithms:
            raise ValueError("at least one algorithm is needed")
        self._accepted = {a.lower(): _ALGOS[a.lower()] for a in self.algorithms}
        self.allow_rfc2069 = allow_rfc2069
        self.qop: tuple[str, ...] = ("auth", "auth-int") if auth_int else ("auth",)
        # Dummy HA1s for unknown users: derived from the secret, so not guessable.
        self._dummy = {
            name: algo.hash(nonces.derive(b"dummy-ha1")) for name, algo in self._accepted.items()
        }
        # The text around the nonce of a challenge, by (realm, algorithm, stale,
        # opaque): a challenge is then two strings and the nonce joined.
        self._around: dict[tuple[str, str, bool, str | None], tuple[str, str]] = {}

    def make_challenge(
        self,
        realm: str,
        now: float,
        algorithm: str = "MD5",
        *,
        stale: bool = False,
        opaque: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """One challenge header value.  Pass ``nonce`` to share one nonce between the
        challenges of a response (``challenges`` does)."""
        algo = _algorithm(algorithm)
        if nonce is None:
            nonce = self.nonces.make(now, bind=realm)
        if _ESCAPE_RE.search(nonce):  # not one of ours: quote it the long way
            return self._challenge(realm, nonce, algo, stale, opaque)
        key = (realm, algo.name, stale, opaque)
        around = self._around.get(key)
        if around is None:
            # Written once with a marker nonce and cut there. A quoted realm holds no
            # unescaped '"', so the first `nonce="MARK"` is the nonce's own.
            mark = "N" * (len(realm) + len(opaque or "") + 1)
            text = self._challenge(realm, mark, algo, stale, opaque)
            head, _, tail = text.partition(f'nonce="{mark}"')
            around = (head + 'nonce="', '"' + tail)
            if len(self._around) >= 64:
                self._around.clear()
            self._around[key] = around
        return around[0] + nonce + around[1]

    def _challenge(
        self, realm: str, nonce: str, algo: _Algorithm, stale: bool, opaque: str | None
    ) -> str:
        return str(
            Challenge(
                realm=realm,
                nonce=nonce,
                algorithm=algo.name,
                qop=self.qop,
                opaque=opaque,
                stale=stale,
            )
        )

    def challenges(
        self,
        realm: str,
        now: float,
        *,
        stale: bool = False,
        opaque: str | None = None,
        algorithms: Iterable[str] | None = None,
    ) -> list[str]:
        """One challenge per algorithm, sharing a nonce, for a 401/407: in the order
        of ``algorithms`` (default: all accepted ones), which is the order of
        preference (RFC 8760 §2.4, RFC 7616 §3.7: one header field per algorithm)."""
        nonce = self.nonces.make(now, bind=realm)
        return [
            self.make_challenge(realm, now, a, stale=stale, opaque=opaque, nonce=nonce)
            for a in (self.algorithms if algorithms is None else algorithms)
        ]

    def verify(
        self,
        credentials: Credentials,
        method: str,
        ha1: str | None,
        now: float,
        *,
        realm: str,
        request_uri: str | None = None,
        body: bytes = b"",
    ) -> VerifyResult:
        """Check credentials against the stored HA1 for ``credentials.algorithm``.

        ``ha1`` None means the user is unknown: the same work is done against a dummy
        HA1 and the result is FAIL with the same reason as a wrong password.
        ``request_uri``, when given, must equal the credentials' uri (RFC 3261 §22.4).
        Only a correct response earns STALE; a wrong one is FAIL whatever the nonce.
        """
        algo = self._accepted.get((credentials.algorithm or "MD5").lower())
        if algo is None:
            return VerifyResult(AuthStatus.FAIL, "algorithm not accepted")
        if credentials.realm != realm:
            return VerifyResult(AuthStatus.FAIL, "realm mismatch")
        if request_uri is not None and credentials.uri != request_uri:
            return VerifyResult(AuthStatus.FAIL, "uri mismatch")
        qop = credentials.qop
        if qop is None:
            if not self.allow_rfc2069:
                return VerifyResult(AuthStatus.FAIL, "qop required")
        elif qop.lower() not in self.qop:
            return VerifyResult(AuthStatus.FAIL, "qop not offered")

        nonce_status, counter = self.nonces.inspect(credentials.nonce, now, bind=realm)

        known = ha1 is not None and len(ha1) == algo.hex_len
        key = ha1 if ha1 is not None and known else self._dummy[algo.name.lower()]
        expected = _response(
            algo,
            key.lower(),
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
        good = hmac.compare_digest(expected.encode(), _b(credentials.response.lower())) and known
        if not good:
            if ha1 is not None and not known:
                return VerifyResult(AuthStatus.FAIL, "stored HA1 has the wrong length")
            return VerifyResult(AuthStatus.FAIL, _RESPONSE_MISMATCH)
        if nonce_status is not NonceStatus.VALID:
            # An invalid nonce with a right response is one we issued under an older
            # secret (a restart): let the client retry at once rather than re-prompt.
            return VerifyResult(AuthStatus.STALE, f"nonce {nonce_status.value}")
        nc = credentials.nc_value
        if nc is not None and not self.nonces.accept_nc(counter, nc):
            return VerifyResult(AuthStatus.STALE, "nonce-count replayed or nonce retired")
        return VerifyResult(AuthStatus.OK, "ok")
