"""The internal model: what SER's and Kamailio's tables and the PBX's own mean.

Both table dialects map onto these frozen records (`build.py` does the mapping). The
compiled LMDB snapshot stores them as msgpack arrays in field order (`pack`/`unpack`),
so a lookup is one get and one decode.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pbx_core.store.dbtext import Table

T = TypeVar("T", bound=Hashable)

PERMANENT_FLAG = 128  # usrloc FL_PERMANENT (1 << 7): the row never expires


def ha1(username: str, realm: str, password: str) -> str:
    """HA1 of RFC 2617 §3.2.2.2 for MD5: MD5(username:realm:password)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def ha1_sha256(username: str, realm: str, password: str) -> str:
    """HA1 of RFC 7616 §3.4.2 for SHA-256: SHA-256(username:realm:password)."""
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).hexdigest()


def ha1b(username: str, domain: str, password: str) -> str:
    """SER's ha1b: the HA1 of a phone that sends username@domain as its user name."""
    return ha1(f"{username}@{domain}", domain, password)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a call goes: type is one of schema.DEST_TYPES; target names it."""

    type: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class ExtensionSettings:
    display_name: str | None = None
    enabled: bool = True
    voicemail: bool = False
    vm_pin: str | None = None
    ring_timeout: int = 20
    call_waiting: bool = True
    dnd: bool = False
    forward_all: str | None = None
    forward_busy: str | None = None
    forward_noanswer: str | None = None
    pickup_group: int | None = None
    max_contacts: int = 3
    outbound_cid: str | None = None
    call_class: str = "national"


@dataclass(frozen=True, slots=True)
class User:
    """A subscriber: credentials (as HA1, never the password) and settings."""

    username: str
    domain: str
    ha1: str
    ha1b: str | None = None
    rpid: str | None = None
    settings: ExtensionSettings = field(default_factory=ExtensionSettings)
    # SHA-256(username:domain:password) (RFC 7616 §3.4.2), known only for rows that
    # give the password: a row with only SER's/Kamailio's MD5 ha1 can answer MD5 only.
    ha1_sha256: str | None = None

    @property
    def aor(self) -> str:
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True, slots=True)
class Contact:
    """A location or aliases row: a contact an AOR (or alias) routes to."""

    uri: str
    expires: int
    permanent: bool = False
    q: float = -1.0
    callid: str | None = None
    cseq: int | None = None
    flags: int = 0
    user_agent: str | None = None
    received: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    """An alias: to another AOR (dbaliases) or to contacts (SER/Kamailio aliases)."""

    alias: str
    aor: str | None = None
    contacts: tuple[Contact, ...] = ()


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    host: str
    enabled: bool = True
    port: int = 5060
    transport: str = "udp"
    username: str | None = None
    auth_username: str | None = None
    password: str | None = None
    from_domain: str | None = None
    register: bool = True
    register_expires: int = 3600
    outbound_proxy: str | None = None
    caller_id: str | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    max_channels: int = 0
    dtmf: str = "rfc4733"


@dataclass(frozen=True, slots=True)
class Did:
    number: str
    dest: Destination
    trunk: str | None = None
    description: str | None = None
    welcome: str | None = None  # a prompt played before routing (answered)


@dataclass(frozen=True, slots=True)
class DialRule:
    pattern: str
    action: str = "trunk"
    trunk: str | None = None
    strip: int = 0
    prepend: str | None = None
    priority: int = 0
    description: str | None = None
    call_class: str = "national"

    def match(self, number: str) -> str | None:
        """The number to send if this rule matches `number`, else None."""
        if _pattern_regex(self.pattern).fullmatch(number) is None:
            return None
        return (self.prepend or "") + number[self.strip :]


@dataclass(frozen=True, slots=True)
class RingGroup:
    number: str
    name: str
    members: tuple[str, ...]
    strategy: str = "ringall"
    ring_timeout: int = 20
    fallback: Destination = Destination("hangup")


@dataclass(frozen=True, slots=True)
class SpeedDial:
    code: str
    number: str
    owner: str | None = None  # AOR, None = everybody
    name: str | None = None


@dataclass
class Config:
    """Everything the PBX reads from its configuration, keyed as it looks it up."""

    users: dict[str, User] = field(default_factory=dict)  # AOR
    aliases: dict[str, Alias] = field(default_factory=dict)  # alias@domain or alias
    contacts: dict[str, tuple[Contact, ...]] = field(default_factory=dict)  # AOR
    numbers: dict[str, Destination] = field(default_factory=dict)  # internal numbers
    dids: dict[str, Did] = field(default_factory=dict)
    trunks: dict[str, Trunk] = field(default_factory=dict)
    dialplan: tuple[DialRule, ...] = ()
    groups: dict[str, RingGroup] = field(default_factory=dict)
    speed_dials: dict[str, SpeedDial] = field(default_factory=dict)  # speed_key()
    settings: dict[str, str | int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)


def speed_key(owner: str | None, code: str) -> str:
    return f"{owner or '*'}/{code}"


# ----------------------------------------------------------------- dial patterns

_PATTERN_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}


def pattern_regex(pattern: str) -> str:
    """Translate an Asterisk-style dial pattern; ValueError(offset, message) if bad."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    if n == 0:
        raise ValueError(0, "empty pattern")
    while i < n:
        c = pattern[i]
        up = c.upper()
        if up in _PATTERN_CLASSES:
            out.append(_PATTERN_CLASSES[up])
        elif c == "[":
            j = pattern.find("]", i)
            body = pattern[i + 1 : j] if j > i else ""
            if j < 0 or not re.fullmatch(r"(?:[0-9](?:-[0-9])?)+", body):
                raise ValueError(i, "expected a digit set like [1-5] or [135]")
            out.append(f"[{body}]")
            i = j
        elif c in ".!":
            if i != n - 1:
                raise ValueError(i, f"'{c}' is only allowed at the end")
            out.append("[0-9*#+]+" if c == "." else "[0-9*#+]*")
        elif c.isdigit() or c in "*#+":
            out.append(re.escape(c))
        else:
            raise ValueError(i, f"unexpected {c!r}: digits, * # +, X Z N, [..], . or !")
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern_regex(pattern))


# ----------------------------------------------------------------- msgpack codec
# A record is packed as the list of its field values; nested records recursively.


def pack(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [pack(getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    if isinstance(obj, tuple | list):
        return [pack(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: pack(v) for k, v in obj.items()}
    return obj


_NESTED: dict[type, dict[str, tuple[str, type]]] = {
    User: {"settings": ("one", ExtensionSettings)},
    Alias: {"contacts": ("many", Contact)},
    Did: {"dest": ("one", Destination)},
    RingGroup: {"fallback": ("one", Destination), "members": ("tuple", str)},
    Trunk: {"codecs": ("tuple", str)},
}


def _many(sub: type) -> Callable[[Any], Any]:
    def conv(v: list[Any]) -> tuple[Any, ...]:
        return tuple(unpack(sub, x) for x in v)

    return conv


def _map(sub: type) -> Callable[[Any], Any]:
    def conv(v: dict[str, Any]) -> dict[str, Any]:
        return {k: unpack(sub, x) for k, x in v.items()}

    return conv


@functools.cache
def _decoder(cls: type) -> Callable[[list[Any]], Any]:
    nested = _NESTED.get(cls, {})
    if not nested:
        return lambda data: cls(*data)
    convs: list[Callable[[Any], Any] | None] = []
    for f in dataclasses.fields(cls):
        how = nested.get(f.name)
        if how is None:
            convs.append(None)
            continue
        kind, sub = how
        if kind == "one":
            convs.append(functools.partial(unpack, sub))
        elif kind == "many":
            convs.append(_many(sub))
        elif kind == "tuple":
            convs.append(tuple)
        else:
            convs.append(_map(sub))

    def decode(data: list[Any]) -> Any:
        if len(data) > len(convs):
            raise ValueError(f"{cls.__name__}: {len(data)} fields, expected {len(convs)}")
        # Fewer fields: a snapshot compiled before trailing fields (with defaults,
        # such as User.ha1_sha256) were added; they take their defaults.
        return cls(*[v if c is None else c(v) for c, v in zip(convs, data, strict=False)])

    return decode


def unpack(cls: type[T], data: list[Any]) -> T:
    """Inverse of `pack` for the record types above."""
    result: T = _decoder(cls)(data)
    return result
