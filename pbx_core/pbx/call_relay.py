"""Requests inside a call that the B2BUA answers or passes across (RFC 3261 §14,
RFC 3311 UPDATE, RFC 6086 INFO).

Theory of operation. A request from one phone inside its dialog (CallManager.in_dialog
finds the call and the side) is either answered on its leg, when the PBX itself is
the other party of what it asks (an offer on anchored media, a key press, a pure
session refresh: `answer`), or re-issued on the other side's dialog with that side's
CSeq, tags and session timer headers, and the answer relayed back (`relay`). A
re-INVITE while one of ours is outstanding on the call gets 491 (§14.2); a relayed
re-INVITE's 2xx is ACKed on the far side by us, at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import Call, other_side, req_source
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

# Headers of an in-dialog request that mean something to the far phone too.
RELAYED_HEADERS = ("event", "subscription-state", "rack", "info-package")


class CallRelay:
    """In-dialog requests of every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def answer(self, call: Call, side: str, req: Request, key: AnyServerKey, body: bytes) -> None:
        """200 to a phone's re-INVITE or UPDATE answered on its leg, with our SDP
        answer (`body`, b"" for none) and the leg's session timer."""
        manager = self.manager
        resp = req.reply(200)
        if body:
            resp.body = body
            resp.headers.add("Content-Type", "application/sdp")
        resp.headers.add(
            "Contact", manager.contact(call.a_source if side == "a" else req_source(call, side))
        )
        manager.call_timers.reply(call, side, req, resp)
        manager.stack.respond(key, resp)

    def relay(self, call: Call, side: str, req: Request, key: AnyServerKey) -> None:
        """re-INVITE, UPDATE, INFO … from one side re-issued on the other (§14)."""
        manager = self.manager
        far = other_side(side)
        other = call.dialog(far)
        if other is None or (req.method == "INVITE" and call.reinvite_pending):
            # RFC 3261 §14.2: an offer while ours is outstanding gets 491.
            manager.stack.respond(key, req.reply(491 if req.method == "INVITE" else 481))
            return
        if req.method == "INVITE":
            call.reinvite_pending = True
        ctype = req.headers.get("content-type") if req.body else None
        out = other.request(req.method, req.body, ctype)
        for name in RELAYED_HEADERS:
            for value in req.headers.getall(name):
                out.headers.add(name, value)
        refresh = req.method in ("INVITE", "UPDATE")
        if refresh:
            for name, value in manager.call_timers.refresh_headers(call, far):
                out.headers.add(name, value)

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200:
                return
            if req.method == "INVITE":
                call.reinvite_pending = False
            if refresh and resp is not None and 200 <= status < 300:
                manager.call_timers.restart_uac(call, far, resp)
            reply = req.reply(status, None if resp is None else resp.reason)
            if resp is not None and resp.body:
                reply.body = resp.body
                reply.headers.add("Content-Type", resp.headers.get("content-type") or "")
            if req.method == "INVITE" and 200 <= status < 300 and resp is not None:
                reply.headers.add(
                    "Contact", manager.contact(call.a_source if side == "a" else other.peer)
                )
                manager.ack_reinvite(other, out)
            manager.call_timers.reply(call, side, req, reply)
            manager.stack.respond(key, reply)

        if manager.send_in_dialog(other, out, answered) is None:
            call.reinvite_pending = False
            manager.stack.respond(key, req.reply(500))
