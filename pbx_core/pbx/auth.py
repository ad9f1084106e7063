"""Digest authentication of requests against the subscriber table (RFC 3261 §22).

REGISTER is challenged with 401/WWW-Authenticate, everything else with
407/Proxy-Authenticate. Unknown users and wrong passwords get the same challenge and
cost the same hashing (no extension enumeration).

Realms, as Kamailio serves the domains of its subscriber table: a domain is ours when
it is the setting `domain`, a `domain` of the subscriber table or a row of Kamailio's
`domain` table. The realm of a challenge is the request's domain (the To host of a
REGISTER, the From host of anything else) when that is ours, else the setting
`domain`, so a phone that puts the PBX's address in its From/To (many do) is
challenged in the setting's realm. Users are looked up by (username, realm), and the
HA1 SER and Kamailio store is H(username:domain:password): the realm is the row's
domain.

Algorithms (setting `auth_algorithms`, RFC 8760): one challenge per algorithm, in the
setting's order. A row answers SHA-256 only when the PBX knows its SHA-256 HA1, i.e.
the row gives the password: a row with only an MD5 `ha1` is offered MD5 alone (which
tells an attacker who asked about it that the user exists; `pbx db check` warns about
such rows when SHA-256 is offered). SHA-256 answers with a `user@domain` username (the
`ha1b` style) fail: there is no SHA-256 ha1b. The default is MD5 alone: see the
setting's text for the peers that fail when SHA-256 is offered.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from pbx_core.memo import Memo
from pbx_core.sip.digest import (
    AuthStatus,
    DigestServer,
    NonceFactory,
    NonceStatus,
    parse_credentials,
)
from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import unescape
from pbx_core.store.model import User
from pbx_core.store.snapshot import Snapshot

NONCE_LIFETIME = 300.0
USER_CACHE = 4096  # subscribers remembered per snapshot


class Outcome(Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no credentials for our realm: send a challenge
    STALE = "stale"  # right password, old nonce: challenge with stale=true
    FAILED = "failed"  # wrong password or unknown user: challenge again, count it


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: Outcome
    user: User | None = None
    reason: str = ""
    # The failure answered a fresh nonce of ours, so the source really received our
    # challenge: only such failures may count towards a ban (UDP sources can be forged).
    counts: bool = False


DEFAULT_ALGORITHMS = ("MD5",)


def parse_algorithms(text: object) -> tuple[str, ...]:
    """The `auth_algorithms` setting as a tuple (MD5 when empty or unusable: the store
    has checked it against the schema's choices)."""
    names = tuple(a.strip() for a in str(text or "").split(",") if a.strip())
    if (
        not names
        or any(a not in ("MD5", "SHA-256") for a in names)
        or len(set(names)) != len(names)
    ):
        return DEFAULT_ALGORITHMS
    return names


class Authenticator:
    def __init__(self, secret: bytes | None = None) -> None:
        self.server = DigestServer(
            NonceFactory(secret or secrets.token_bytes(32), NONCE_LIFETIME),
            algorithms=("MD5", "SHA-256"),
        )
        self.offer: tuple[str, ...] = DEFAULT_ALGORITHMS
        # Our domains (lower case -> as spelt in the table, the realm) per snapshot.
        self._domains_snap: Snapshot | None = None
        self._domains: dict[str, str] = {}
        # Subscribers looked up in the current snapshot (a snapshot never changes,
        # and decoding a row costs more than verifying the digest). Unknown users
        # are remembered too, so both cost the same. Bounded; a new snapshot empties it.
        self._snap: Snapshot | None = None
        self._users: Memo[tuple[str, str], User | None] = Memo(USER_CACHE, 128)

    def configure(self, settings: Mapping[str, object]) -> None:
        """Apply the settings of a (new) snapshot."""
        self.offer = parse_algorithms(settings.get("auth_algorithms"))

    def domains(self, snap: Snapshot, default: str) -> dict[str, str]:
        """Our domains, lower case to the spelling of the realm (see the docstring)."""
        if snap is not self._domains_snap:
            found = {default.lower(): default}
            for name in ("subscriber", "domain"):
                table = snap.table(name)
                if table is None or not table.has("domain"):
                    continue
                col = table.index("domain")
                for row in table.rows:
                    value = row[col]
                    if isinstance(value, str) and value:
                        found.setdefault(value.lower(), value)
            self._domains_snap, self._domains = snap, found
        return self._domains

    def realm(self, req: Request, snap: Snapshot, default: str) -> str:
        """The realm for a request: its domain when ours, else `default`."""
        host = (req.to if req.method == "REGISTER" else req.from_).uri.host
        return self.domains(snap, default).get(host.lower(), default)

    def _algorithms(self, user: User | None) -> tuple[str, ...]:
        """What may be offered to (and answered by) this subscriber."""
        if user is None or user.ha1_sha256 is not None:
            return self.offer  # unknown users: the same offer as a full row
        return ("MD5",)

    def check(self, req: Request, snap: Snapshot, realm: str, now: float) -> AuthResult:
        """Verify the request's credentials for `realm`."""
        header = "authorization" if req.method == "REGISTER" else "proxy-authorization"
        creds = None
        for value in req.headers.getall(header):
            try:
                c = parse_credentials(value)
            except ParseError:
                return AuthResult(Outcome.FAILED, reason="malformed credentials")
            if c.realm == realm:
                creds = c
                break
        if creds is None:
            return AuthResult(Outcome.CHALLENGE)
        username = creds.username
        domain = realm
        if "@" in username:  # ha1b style: user@domain
            username, _, domain = username.partition("@")
        user = self._user(snap, username, domain)
        algorithm = (creds.algorithm or "MD5").upper()
        if algorithm not in self._algorithms(user):
            # Not offered (to this row): the same answer as a wrong password.
            user = None
        ha1 = None
        if user is not None:
            if algorithm == "SHA-256":
                ha1 = None if "@" in creds.username else user.ha1_sha256
            else:
                ha1 = user.ha1b if "@" in creds.username else user.ha1
        result = self.server.verify(creds, req.method, ha1, now, realm=realm)
        if result.status is AuthStatus.OK and user is not None:
            return AuthResult(Outcome.OK, user)
        if result.status is AuthStatus.STALE and user is not None:
            return AuthResult(Outcome.STALE, user, result.reason)
        fresh = self.server.nonces.check(creds.nonce, now, bind=realm) is NonceStatus.VALID
        return AuthResult(Outcome.FAILED, reason=result.reason, counts=fresh)

    def _user(self, snap: Snapshot, username: str, domain: str) -> User | None:
        users = self._users
        if snap is not self._snap:
            self._snap = snap
            users.clear()
        key = (username, domain)
        try:
            return users[key]  # None is remembered too: unknown users cost the same
        except KeyError:
            return users.keep(key, snap.user(username, domain), len(username) + len(domain))

    def challenge(
        self,
        req: Request,
        realm: str,
        now: float,
        *,
        snap: Snapshot | None = None,
        stale: bool = False,
        to_tag: str | None = None,
    ) -> Response:
        """The 401/407 with a fresh nonce; `to_tag` for a stateless answer (the same
        tag for every retransmission), else a random one. With `snap`, what is
        offered is narrowed to what the row of the request's user (To of a REGISTER,
        From otherwise) can verify."""
        status = 401 if req.method == "REGISTER" else 407
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        resp = req.reply(status, to_tag=to_tag or secrets.token_hex(6))
        offer = self.offer
        if snap is not None and offer != DEFAULT_ALGORITHMS:
            uri = (req.to if status == 401 else req.from_).uri
            offer = self._algorithms(self._user(snap, unescape(uri.user or ""), realm))
        for value in self.server.challenges(realm, now, stale=stale, algorithms=offer):
            resp.headers.add(header, value)
        return resp
