"""Requests inside a call that the B2BUA answers or passes across (RFC 3261 §14,
RFC 3311 UPDATE, RFC 6086 INFO).

Theory of operation. A request from one phone inside its dialog (CallManager.in_dialog
finds the call and the side) is either answered on its leg, when the PBX itself is
the other party of what it asks (an offer on anchored media, a key press, a pure
session refresh: `answer`), or re-issued on the other side's dialog with that side's
CSeq, tags and session timer headers, and the answer relayed back (`relay`). A
re-INVITE while one of ours is outstanding on the call gets 491 (§14.2); a relayed
re-INVITE's 2xx is ACKed on the far side by us, at once. Our 2xx to a re-INVITE,
answered here or relayed, is retransmitted until the phone's ACK (§13.3.1.4,
call_acks.py); none within 64*T1 ends the call.

A re-INVITE without SDP asks for an offer, which comes in the 2xx, and the answer
comes in the ACK (RFC 3264 §8, RFC 3261 §14). Answered here (anchored media: the
offer is the engine's, call_media.py), the answer in the ACK is applied to that leg;
relayed (media end to end), the far side's offer goes back in our 2xx and our ACK to
the far side waits for the phone's and carries its answer. A phone's second
re-INVITE while we wait for the ACK with its answer gets 500 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import Call, State, other_side, req_source
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

# Headers of a relayed request (only INVITE, UPDATE and INFO cross a call:
# call_state.RELAYED_IN_DIALOG) that mean something to the far phone too.
RELAYED_HEADERS = ("info-package",)


class CallRelay:
    """In-dialog requests of every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def answer(
        self,
        call: Call,
        side: str,
        req: Request,
        key: AnyServerKey,
        body: bytes,
        source: Address,
        on_ack: Callable[[Request | None], None] | None = None,
    ) -> None:
        """200 to a phone's re-INVITE or UPDATE (from `source`) answered on its leg,
        with our SDP (`body`, b"" for none) and the leg's session timer. A re-INVITE's
        200 is retransmitted until the ACK; with `on_ack` the body is an offer and
        the ACK, with the answer, goes to `on_ack`."""
        manager = self.manager
        resp = req.reply(200)
        if body:
            resp.body = body
            resp.headers.add("Content-Type", "application/sdp")
        resp.headers.add(
            "Contact", manager.contact(call.a_source if side == "a" else req_source(call, side))
        )
        manager.call_timers.reply(call, side, req, resp)
        if req.method == "INVITE":
            offer = on_ack is not None
            manager.call_acks.send_2xx(call, side, key, resp, source, offer=offer, on_ack=on_ack)
        else:
            manager.stack.respond(key, resp)

    def relay(
        self, call: Call, side: str, req: Request, key: AnyServerKey, source: Address
    ) -> None:
        """re-INVITE, UPDATE, INFO … from one side (`source`) re-issued on the other
        (§14), and the answer relayed back."""
        manager = self.manager
        far = other_side(side)
        other = call.dialog(far)
        if other is None or (req.method == "INVITE" and call.reinvite_pending):
            # RFC 3261 §14.2: an offer while ours is outstanding gets 491.
            manager.stack.respond(key, req.reply(491 if req.method == "INVITE" else 481))
            return
        if req.method == "INVITE":
            call.reinvite_pending = True
        # A re-INVITE without SDP: the far side offers in its 2xx, this side answers
        # in its ACK, which our ACK to the far side waits for.
        late = req.method == "INVITE" and not req.body
        far_ack: list[Request] = []  # ours to the far side, once sent
        replied: list[int] = []  # the status we relayed back, once done
        ctype = req.headers.get("content-type") if req.body else None
        out = other.request(req.method, req.body, ctype)
        for name in RELAYED_HEADERS:
            for value in req.headers.getall(name):
                out.headers.add(name, value)
        refresh = req.method in ("INVITE", "UPDATE")
        if refresh:
            for name, value in manager.call_timers.refresh_headers(call, far):
                out.headers.add(name, value)

        def forward_ack(ack: Request | None) -> None:
            # The phone's ACK with its answer (None: it never came, the call is being
            # hung up: the far side's 2xx is ACKed before its BYE).
            call.reinvite_pending = False
            if call.state is State.ENDED:
                return
            far_ack.append(manager.ack_reinvite(other, out, ack.body if ack is not None else b""))

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200:
                return
            if replied:
                # The far side's 2xx again (RFC 6026 passes each one up): our ACK was
                # lost, or still waits for the phone's, whose 2xx is retransmitted.
                for ack in far_ack:
                    manager.stack.send(ack, other.destination())
                return
            replied.append(status)
            offered = late and resp is not None and 200 <= status < 300 and bool(resp.body)
            if req.method == "INVITE" and not offered:
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
                if not offered:
                    far_ack.append(manager.ack_reinvite(other, out))
                manager.call_timers.reply(call, side, req, reply)
                on_ack = forward_ack if offered else None
                manager.call_acks.send_2xx(
                    call, side, key, reply, source, offer=offered, on_ack=on_ack
                )
                return
            manager.call_timers.reply(call, side, req, reply)
            manager.stack.respond(key, reply)

        if manager.send_in_dialog(other, out, answered) is None:
            call.reinvite_pending = False
            manager.stack.respond(key, req.reply(500))
