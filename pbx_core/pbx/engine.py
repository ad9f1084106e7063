"""The PBX's answer to each new request (the transaction user, RFC 3261 §8.2).

For now the engine is a UAS that answers OPTIONS (capabilities, health checks, NAT
keepalives) and refuses what it does not serve yet with the right status; the
registrar and the call engine hook in here (issue 5).
"""

from __future__ import annotations

import hashlib
import secrets

from pbx_core.sip.message import Request, Response
from pbx_core.sip.validate import check_request
from pbx_core.version import VERSION

# Methods this build acts on. Allow must tell the truth (RFC 3261 §20.5).
ALLOW = ("OPTIONS",)
# Methods we recognise but do not serve yet: 405 with Allow (RFC 3261 §8.2.1).
KNOWN_METHODS = frozenset(
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
SUPPORTED: frozenset[str] = frozenset()
SCHEMES = frozenset({"sip", "sips", "tel"})
SERVER = f"Wafer PBX {VERSION}"


def new_tag() -> str:
    return secrets.token_hex(6)


class Engine:
    def __init__(self) -> None:
        self.allow = ", ".join(ALLOW)
        self.supported = ", ".join(sorted(SUPPORTED))
        self._tag_key = secrets.token_bytes(16)

    @staticmethod
    def is_stateless(req: Request) -> bool:
        """Requests answered without a transaction (RFC 3261 §8.2.7), as Kamailio's
        options module does: OPTIONS pings must cost no memory for 32 s each."""
        return req.method == "OPTIONS"

    def stateless_tag(self, req: Request) -> str:
        """The same To tag for every retransmission of a request (RFC 3261 §8.2.7)."""
        h = hashlib.blake2s(key=self._tag_key, digest_size=6)
        h.update((req.headers.get("call-id") or "").encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update((req.headers.get("from") or "").encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update((req.headers.get("via") or "").encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def handle_request(self, req: Request) -> Response | None:
        """The final response to a new request, or None (ACK gets none)."""
        if req.method == "ACK":
            return None
        tag = self.stateless_tag(req) if self.is_stateless(req) else new_tag()
        err = check_request(req, SUPPORTED, SCHEMES)
        if err is not None:
            resp = req.reply(err.status, to_tag=tag)
            for name, value in err.headers:
                resp.headers.add(name, value)
            if err.status in (400, 406, 415):
                reason = err.reason.replace('"', "'").replace("\\", "/")
                resp.headers.add("Warning", f'399 pbx "{reason[:120]}"')
            return resp
        if req.method == "OPTIONS":
            resp = req.reply(200, to_tag=tag)
            h = resp.headers
            h.add("Allow", self.allow)
            h.add("Accept", "application/sdp")
            h.add("Accept-Encoding", "identity")
            h.add("Accept-Language", "en")
            h.add("Supported", self.supported)
            h.add("Server", SERVER)
            return resp
        if req.method in KNOWN_METHODS:
            resp = req.reply(405, to_tag=tag)
            resp.headers.add("Allow", self.allow)
            return resp
        resp = req.reply(501, to_tag=tag)
        resp.headers.add("Allow", self.allow)
        return resp
