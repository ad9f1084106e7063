"""Requests inside a call that the B2BUA answers or passes across (RFC 3261 §14,
RFC 3311 UPDATE, RFC 6086 INFO).

Theory of operation. A request from one phone inside its dialog (CallManager.in_dialog
finds the call and the side) is either answered on its leg, when the PBX itself is
the other party of what it asks (an offer on anchored media, a key press, a pure
session refresh: `answer`), or re-issued on the other side's dialog with that side's
CSeq, tags and session timer headers, and the answer relayed back (`relay`). A
re-INVITE while one of ours is outstanding on the call gets 491 (§14.2); a relayed
re-INVITE's 2xx is ACKed on the far side by us, at once.

A re-INVITE without SDP asks for an offer, which comes in the 2xx, and the answer
comes in the ACK (RFC 3264 §8, RFC 3261 §14). Answered here (anchored media: the
offer is the engine's, call_media.py), our 2xx is retransmitted until that ACK
(§13.3.1.4, `AwaitingAck`) and the answer applied to that leg; relayed (media end to
end), the far side's offer goes back in our 2xx and our ACK to the far side waits
for the phone's and carries its answer. No ACK within 64*T1 ends the call. A phone's
second re-INVITE while we wait for the ACK of its first gets 500 with Retry-After.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import T1, T2, AwaitingAck, Call, State, other_side, req_source
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

# Headers of an in-dialog request that mean something to the far phone too.
RELAYED_HEADERS = ("event", "subscription-state", "rack", "info-package")


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
        on_ack: Callable[[Request | None], None] | None = None,
    ) -> None:
        """200 to a phone's re-INVITE or UPDATE answered on its leg, with our SDP
        (`body`, b"" for none) and the leg's session timer. With `on_ack` the body
        is an offer: the 200 is retransmitted until the ACK, which goes to `on_ack`."""
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
        if on_ack is not None:
            self._await_ack(call, side, AwaitingAck(req.cseq.seq, key, resp, on_ack))

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
        # A re-INVITE without SDP: the far side offers in its 2xx, this side answers
        # in its ACK, which our ACK to the far side waits for.
        late = req.method == "INVITE" and not req.body
        far_ack: list[Request] = []  # ours to the far side, once sent
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
            call.reinvite_pending = False
            if call.state is State.ENDED:
                return
            far_ack.append(manager.ack_reinvite(other, out, ack.body if ack is not None else b""))
            if ack is None:
                log.info("call %s: no ACK with the answer to a re-INVITE, hanging up", call.id)
                manager.hangup(call, "no ACK")

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200:
                return
            offered = late and resp is not None and 200 <= status < 300 and bool(resp.body)
            if offered and (far_ack or side in call.awaiting_ack):
                # The far side's 2xx again: our ACK was lost, or the phone's is awaited
                # (our own 2xx to it is retransmitted meanwhile).
                for ack in far_ack:
                    manager.stack.send(ack, other.destination())
                return
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
                    manager.ack_reinvite(other, out)
            manager.call_timers.reply(call, side, req, reply)
            manager.stack.respond(key, reply)
            if offered:
                self._await_ack(call, side, AwaitingAck(req.cseq.seq, key, reply, forward_ack))

        if manager.send_in_dialog(other, out, answered) is None:
            call.reinvite_pending = False
            manager.stack.respond(key, req.reply(500))

    # ------------------------------------------------------------ ACKs awaited
    def _await_ack(self, call: Call, side: str, waiting: AwaitingAck) -> None:
        call.awaiting_ack[side] = waiting
        loop = self.manager.loop
        self._retransmit(call, side, waiting, T1, loop.time() + 64 * T1)

    def _retransmit(
        self, call: Call, side: str, waiting: AwaitingAck, interval: float, give_up: float
    ) -> None:
        manager = self.manager

        def again() -> None:
            if call.awaiting_ack.get(side) is not waiting or call.state is State.ENDED:
                return
            if manager.loop.time() >= give_up:
                del call.awaiting_ack[side]
                waiting.on_ack(None)
                return
            manager.stack.respond(waiting.key, waiting.resp)  # the transaction resends it
            self._retransmit(call, side, waiting, min(2 * interval, T2), give_up)

        waiting.timer = manager.loop.call_later(interval, again)

    def on_ack(self, call: Call, side: str, ack: Request) -> bool:
        """An ACK from `side`: True when it was the one an `AwaitingAck` waited for."""
        waiting = call.awaiting_ack.get(side)
        if waiting is None or ack.cseq.seq != waiting.cseq:
            return False
        del call.awaiting_ack[side]
        if waiting.timer is not None:
            waiting.timer.cancel()
        waiting.on_ack(ack)
        return True

    def overlaps(self, call: Call, side: str, req: Request, key: AnyServerKey) -> bool:
        """A re-INVITE from `side` while the ACK of its previous one is awaited
        (RFC 3261 §14.2): 500 with Retry-After, and True."""
        if side not in call.awaiting_ack:
            return False
        resp = req.reply(500)
        resp.headers.add("Retry-After", str(secrets.randbelow(11)))
        self.manager.stack.respond(key, resp)
        return True

    def stop(self, call: Call) -> None:
        """The call ended: no more retransmissions."""
        for waiting in call.awaiting_ack.values():
            if waiting.timer is not None:
                waiting.timer.cancel()
        call.awaiting_ack.clear()
