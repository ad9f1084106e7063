"""Digest authentication of requests against the subscriber table (RFC 3261 §22).

REGISTER is challenged with 401/WWW-Authenticate, everything else with
407/Proxy-Authenticate. Unknown users and wrong passwords get the same challenge and
cost the same hashing (no extension enumeration). Only MD5 is offered: SER and
Kamailio tables store MD5 HA1s, and a phone answers the first challenge it supports.
"""

from __future__ import annotations

import secrets
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


class Authenticator:
    def __init__(self, secret: bytes | None = None) -> None:
        self.server = DigestServer(
            NonceFactory(secret or secrets.token_bytes(32), NONCE_LIFETIME), algorithms=("MD5",)
        )
        # Subscribers looked up in the current snapshot (a snapshot never changes,
        # and decoding a row costs more than verifying the digest). Unknown users
        # are remembered too, so both cost the same. Bounded; a new snapshot empties it.
        self._snap: Snapshot | None = None
        self._users: Memo[tuple[str, str], User | None] = Memo(USER_CACHE, 128)

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
        ha1 = None
        if user is not None:
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
        stale: bool = False,
        to_tag: str | None = None,
    ) -> Response:
        """The 401/407 with a fresh nonce; `to_tag` for a stateless answer (the same
        tag for every retransmission), else a random one."""
        status = 401 if req.method == "REGISTER" else 407
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        resp = req.reply(status, to_tag=to_tag or secrets.token_hex(6))
        for value in self.server.challenges(realm, now, stale=stale):
            resp.headers.add(header, value)
        return resp
