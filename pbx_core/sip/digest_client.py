"""The client side of digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): how
the PBX answers a challenge from a SIP provider (trunk registration, outbound calls).
The parsing, hashing and the server side are in digest.py."""

from __future__ import annotations

from collections.abc import Iterable

from pbx_core.sip.digest import (
    Challenge,
    Credentials,
    DigestError,
    algorithm_info,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_challenge,
)

__all__ = ["DigestClient", "answer_challenge"]


def answer_challenge(
    challenge: Challenge | str,
    method: str,
    uri: str,
    username: str,
    *,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str = "",
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``.

    Give either the password or the HA1 for the challenge's algorithm and realm.
    qop=auth is preferred, then auth-int; a challenge without qop gets an RFC 2069
    answer.  ``cnonce`` must be non-empty (and fresh) when qop is used.
    """
    ch = parse_challenge(challenge) if isinstance(challenge, str) else challenge
    algorithm, sess = algorithm_info(ch.algorithm)
    if (password is None) == (ha1 is None):
        raise ValueError("give exactly one of password and ha1")
    key = ha1 if ha1 is not None else compute_ha1(username, ch.realm, str(password), algorithm)
    offered = {q.lower() for q in ch.qop}
    qop: str | None
    if not ch.qop:
        qop = None
    elif "auth" in offered:
        qop = "auth"
    elif "auth-int" in offered:
        qop = "auth-int"
    else:
        raise DigestError(f"challenge offers no supported qop: {','.join(ch.qop)!r}")
    if (qop is not None or sess) and not cnonce:
        raise ValueError("a cnonce is needed with qop or a -sess algorithm")
    if not 0 < nc <= 0xFFFFFFFF:
        raise ValueError("nc must be in 1..2**32-1")
    nc_text = f"{nc:08x}" if qop is not None else None
    cn = cnonce if qop is not None or sess else None
    response = compute_response(
        key,
        nonce=ch.nonce,
        method=method,
        uri=uri,
        algorithm=algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cn,
        body=body,
    )
    return str(
        Credentials(
            username=username,
            realm=ch.realm,
            nonce=ch.nonce,
            uri=uri,
            response=response,
            algorithm=ch.algorithm,
            cnonce=cn,
            opaque=ch.opaque,
            qop=qop,
            nc=nc_text,
        )
    )


class DigestClient:
    """Credentials of one account (e.g. a SIP trunk) and the nonce-count per nonce,
    so refreshes may reuse a server's nonce with an increasing nc.

    The caller supplies each cnonce (sans-IO: no randomness hidden in here)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._nonce: str | None = None
        self._nc = 0
        self._challenge: Challenge | None = None

    @property
    def challenge(self) -> Challenge | None:
        """The challenge last accepted by ``on_challenge``."""
        return self._challenge

    def on_challenge(self, values: Iterable[str]) -> bool:
        """Take the challenges of a 401/407; False if none can be answered."""
        ch = choose_challenge(values)
        if ch is None:
            return False
        self._challenge = ch
        if ch.nonce != self._nonce:
            self._nonce, self._nc = ch.nonce, 0
        return True

    def authorization(self, method: str, uri: str, cnonce: str, body: bytes = b"") -> str | None:
        """Credentials for the next request, or None before any challenge."""
        if self._challenge is None:
            return None
        self._nc += 1
        return answer_challenge(
            self._challenge,
            method,
            uri,
            self.username,
            password=self._password,
            cnonce=cnonce,
            nc=self._nc,
            body=body,
        )
