"""The registrar (RFC 3261 §10.3): bindings of addresses of record to contacts, in RAM.

A REGISTER refresh never touches flash: bindings live in this process and phones
re-register after a reboot. Each binding remembers where the REGISTER came from
(received/rport, RFC 3581) and where the phone is reached (`dest`): through the
hole it opened when it looks NATed, whatever private address its Contact names,
else at its Contact (nat.py and the `nat` setting decide).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbx_core.pbx.nat import NatPolicy
from pbx_core.sip.errors import SipError
from pbx_core.sip.headers import NameAddr
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import URI
from pbx_core.transport.manager import Address

DEFAULT_EXPIRES = 3600


@dataclass(slots=True)
class Binding:
    aor: str
    uri: URI
    expires_at: float
    q: float
    call_id: str
    cseq: int
    source: Address
    dest: Address  # where requests for it go: the source when NATed, else the Contact
    nat: bool = True
    user_agent: str = ""
    instance: str | None = None
    registered_at: float = 0.0

    def expires_in(self, now: float) -> int:
        return max(0, round(self.expires_at - now))


@dataclass(slots=True)
class Registrar:
    min_expires: int = 60
    max_expires: int = 3600
    nat: NatPolicy = field(default_factory=NatPolicy)
    bindings: dict[str, dict[str, Binding]] = field(default_factory=dict)

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, best q first, most recent first among equals."""
        found = self.bindings.get(aor)
        if not found:
            return []
        live = [b for b in found.values() if b.expires_at > now]
        if len(live) != len(found):
            self._purge(aor, now)
        live.sort(key=lambda b: (-b.q, -b.registered_at))
        return live

    def _purge(self, aor: str, now: float) -> None:
        found = self.bindings.get(aor, {})
        for key in [k for k, b in found.items() if b.expires_at <= now]:
            del found[key]
        if not found:
            self.bindings.pop(aor, None)

    def expire(self, now: float) -> int:
        """Drop expired bindings everywhere; returns how many went."""
        before = self.count()
        for aor in list(self.bindings):
            self._purge(aor, now)
        return before - self.count()

    def count(self) -> int:
        return sum(len(b) for b in self.bindings.values())

    def register(
        self, req: Request, aor: str, source: Address, now: float, max_contacts: int
    ) -> Response:
        """Apply an authenticated REGISTER (§10.3 steps 6-8) and build the 200, or
        raise SipError with the status to answer (400, 423, 500)."""
        contacts = req.contacts
        header_expires = req.expires
        call_id = req.call_id
        cseq = req.cseq.seq
        current = self.bindings.setdefault(aor, {})
        if contacts is None:  # Contact: *
            if header_expires != 0:
                raise SipError("Contact: * needs Expires: 0", 400)
            for b in current.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    raise SipError("CSeq not higher than the binding's", 500)
            current.clear()
        else:
            changes: list[tuple[str, NameAddr, int]] = []
            for contact in contacts:
                expires = _contact_expires(contact, header_expires)
                if 0 < expires < self.min_expires:
                    resp = req.reply(423)
                    resp.headers.add("Min-Expires", str(self.min_expires))
                    raise ReplyError(resp)
                expires = min(expires, self.max_expires)
                key = _binding_key(contact.uri)
                old = current.get(key)
                if old is not None and old.call_id == call_id and cseq <= old.cseq:
                    raise SipError("CSeq not higher than the binding's", 500)
                changes.append((key, contact, expires))
            ua = req.headers.get("user-agent") or ""
            for key, contact, expires in changes:
                if expires == 0:
                    current.pop(key, None)
                    continue
                q = _q(contact)
                dest, natted = self.nat.reach(req, source, contact.uri)
                current[key] = Binding(
                    aor=aor,
                    uri=contact.uri,
                    expires_at=now + expires,
                    q=q,
                    call_id=call_id,
                    cseq=cseq,
                    source=source,
                    dest=dest,
                    nat=natted,
                    user_agent=ua[:120],
                    instance=contact.param("+sip.instance"),
                    registered_at=now,
                )
            # Keep the newest max_contacts bindings (a phone changing ports leaves
            # stale ones behind until they expire).
            while len(current) > max_contacts:
                oldest = min(current, key=lambda k: current[k].registered_at)
                del current[oldest]
        resp = req.reply(200)
        for b in self.lookup(aor, now):
            resp.headers.add("Contact", f"<{b.uri}>;expires={b.expires_in(now)}")
        if not current:
            self.bindings.pop(aor, None)
        return resp

    def status(self, now: float) -> list[dict[str, object]]:
        return [
            {
                "aor": aor,
                "contact": str(b.uri),
                "expires": b.expires_in(now),
                "source": f"{b.source[0]} {b.source[1]}:{b.source[2]}",
                "reached_at": f"{b.dest[0]} {b.dest[1]}:{b.dest[2]}",
                "nat": b.nat,
                "user_agent": b.user_agent,
            }
            for aor in sorted(self.bindings)
            for b in self.lookup(aor, now)
        ]


class ReplyError(SipError):
    """A complete response to send instead of the 200 (423 with Min-Expires)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.reason, response.status)
        self.response = response


def _contact_expires(contact: NameAddr, header: int | None) -> int:
    value = contact.param("expires")
    if value is not None and value.isdigit():
        return min(int(value), 2**32 - 1)
    return DEFAULT_EXPIRES if header is None else header


def _q(contact: NameAddr) -> float:
    value = contact.param("q")
    try:
        return float(value) if value else 1.0
    except ValueError:
        return 1.0


def _binding_key(uri: URI) -> str:
    """Contacts are the same binding when their URIs are equivalent (§10.3 step 7);
    a normalized string approximates §19.1.4 for the forms phones send."""
    params = ";".join(
        sorted(f"{k.lower()}={(v or '').lower()}" for k, v in uri.params if k.lower() != "expires")
    )
    return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.port or ''};{params}"
