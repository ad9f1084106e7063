"""Dialogs (RFC 3261 §12): the state one side of a call keeps to send requests
within it. The B2BUA holds two per call: the A side (we are its UAS) and the B side
(we are its UAC)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from pbx_core.sip.errors import ParseError
from pbx_core.sip.headers import NameAddr, parse_name_addr
from pbx_core.sip.message import Headers, Request, Response
from pbx_core.sip.uri import URI
from pbx_core.transport.manager import Address


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str  # our From in requests we send (name-addr text, no tag)
    remote_uri: str  # their address (name-addr text, no tag)
    remote_target: URI
    peer: Address  # where requests go (the registered source / the request source)
    local_cseq: int = 1
    remote_cseq: int = 0
    route_set: list[str] = field(default_factory=list)
    contact: str = ""  # our Contact header value

    @classmethod
    def as_uas(cls, req: Request, local_tag: str, source: Address, contact: str) -> Dialog:
        """The dialog a 1xx/2xx to `req` creates on our (UAS) side (§12.1.1)."""
        target = _contact_uri(req) or req.from_.uri
        return cls(
            call_id=req.call_id,
            local_tag=local_tag,
            remote_tag=req.from_.tag,
            local_uri=_strip_tag(req.headers.get("to") or ""),
            remote_uri=_strip_tag(req.headers.get("from") or ""),
            remote_target=target,
            peer=source,
            local_cseq=1,
            remote_cseq=req.cseq.seq,
            route_set=list(req.headers.getall("record-route")),
            contact=contact,
        )

    def update_from_response(self, resp: Response) -> None:
        """UAC side: a 1xx/2xx sets the remote tag, target and route set (§12.1.2)."""
        if resp.to.tag:
            self.remote_tag = resp.to.tag
        target = _contact_uri(resp)
        if target is not None:
            self.remote_target = target
        rr = resp.headers.getall("record-route")
        if rr:
            self.route_set = list(reversed(rr))

    def request(self, method: str, body: bytes = b"", content_type: str | None = None) -> Request:
        """A request within the dialog (§12.2.1.1); ACK and CANCEL keep the CSeq
        of their INVITE, which the caller sets."""
        if method not in ("ACK", "CANCEL"):
            self.local_cseq += 1
        h = Headers()
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        to = (
            self.remote_uri
            if self.remote_tag is None
            else f"{self.remote_uri};tag={self.remote_tag}"
        )
        h.add("To", to)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.local_cseq} {method}")
        h.add("Max-Forwards", "70")
        for route in self.route_set:
            h.add("Route", route)
        if self.contact and method not in ("ACK", "CANCEL", "BYE"):
            h.add("Contact", self.contact)
        if body and content_type:
            h.add("Content-Type", content_type)
        return Request(method, self.remote_target, h, body)

    def destination(self) -> Address:
        """Where an in-dialog request goes: the first loose route, else the peer we
        talk to (the NAT-side address the phone registered or called from)."""
        if self.route_set:
            with contextlib.suppress(ParseError):
                first = parse_name_addr(self.route_set[0]).uri
                if first.has_param("lr") and first.host and first.host[0].isdigit():
                    transport = (first.param("transport") or "udp").upper()
                    return (transport, first.host, first.port or 5060)
        return self.peer

    def matches(self, msg: Request) -> bool:
        return msg.call_id == self.call_id and msg.to.tag == self.local_tag


def _contact_uri(msg: Request | Response) -> URI | None:
    try:
        contacts = msg.contacts
    except ParseError:
        return None
    if contacts:
        return contacts[0].uri
    return None


def _strip_tag(value: str) -> str:
    """The header value without its tag parameter, re-serialized."""
    try:
        na = parse_name_addr(value)
    except ParseError:
        return value
    return str(NameAddr(na.uri, na.display, tuple(p for p in na.params if p[0].lower() != "tag")))
