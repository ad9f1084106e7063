"""Requests inside a call: which side of which call a request belongs to, and what
it gets (RFC 3261 §12.2.2), and the caller's ACK to our 2xx (RFC 3261 §13.3.1.4).

`in_dialog` finds the call and side from the Call-ID and To tag (calls.py's
`dialogs`); ACKs go to call_acks.py; a call being transferred by keys gets its
requests first (call_consult.py), the transferor's side of a REFER its own
(call_ops.py); BYE ends the call (or only the phone asked to accept, or one of a
page); REFER is a transfer; methods no call relays are answered here
(`CallOps.answer_in_dialog`: OPTIONS 200, PRACK 481, 405/501 with Allow); INVITE and
UPDATE pass the session timers' checks; then anchored media answers (call_media.py)
or the request crosses to the other side (call_relay.py).

A delayed offer (an INVITE without SDP) gets its answer in the caller's ACK, which our
ACK to the callee waits for (`a_acked`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.media.errors import MediaError
from pbx_core.pbx.call_state import RELAYED_IN_DIALOG, Call, State
from pbx_core.sip.errors import ParseError
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")


class CallRequests:
    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def in_dialog(self, req: Request, source: Address, key: AnyServerKey | None) -> bool:
        """Handle a request inside a call; False if it belongs to none."""
        m = self.manager
        try:
            found = m.dialogs.get((req.call_id, req.to.tag or ""))
        except ParseError:
            return False
        if found is None:
            return False
        call, side = found
        if req.method == "ACK":
            # Every ACK reaching us is for a 2xx of ours (the transaction layer keeps
            # those for non-2xx finals); an unmatched one is a retransmission.
            m.call_acks.on_ack(call, side, req)
            return True
        if key is None:
            return True
        if side == "a" and call.a_dialog is not None:
            call.a_dialog.remote_cseq = max(call.a_dialog.remote_cseq, req.cseq.seq)
        if call.consult is not None and m.ops.consult.request(call, side, req, key):
            return True  # an attended transfer by keys (call_consult.py)
        if side == "t":
            m.ops.from_transferor(call, req, key)
            return True
        if req.method == "BYE":
            m.stack.respond(key, req.reply(200))
            if call.state is State.ENDED:
                return True
            if side == "a":
                if call.answered is not None:
                    m._bye(call.answered.dialog)
                else:
                    for fork in call.forks:
                        m._cancel_fork(fork)
                m._end(call, "ANSWERED" if call.answered_at else "CANCELLED", "caller hung up")
            elif m.confirm.hung_up(call, req.call_id) or m.paging.hung_up(call, req.call_id):
                pass  # a phone asked to accept, or one of a page, hung up: only it is gone
            else:
                if call.a_dialog is not None:
                    m._bye(call.a_dialog)
                m._end(call, "ANSWERED", "callee hung up")
            return True
        if call.state is State.ENDED:
            m.stack.respond(key, req.reply(481))
            return True
        if side == "b" and m.confirm.request(call, req, key):
            return True
        if req.method == "REFER":
            with m.guard(call, "transfer"):
                m.ops.refer(call, side, req, key)
            return True
        if req.method not in RELAYED_IN_DIALOG:
            m.ops.answer_in_dialog(req, key)
            return True
        if req.method == "INVITE" and m.call_acks.overlaps(call, side, req, key):
            return True
        if req.method in ("INVITE", "UPDATE") and not m.call_timers.on_request(
            call, side, req, key, source
        ):
            return True
        if m.call_media.request(call, side, req, key, source):
            return True
        m.call_relay.relay(call, side, req, key, source)
        return True

    def a_acked(self, call: Call, ack: Request | None) -> None:
        """A's ACK to our 2xx to its INVITE (None: none came, the call is being hung
        up). With a delayed offer it carries the answer that our ACK to B waits for."""
        with self.manager.guard(call, "caller's ACK"):
            self._on_a_ack(call, ack)

    def _on_a_ack(self, call: Call, ack: Request | None) -> None:
        m = self.manager
        if not call.ack_to_b_pending or call.answered is None:
            return
        call.ack_to_b_pending = False
        if ack is None:
            m._ack(call.answered, b"", None)  # B's 2xx is ACKed before its BYE
            return
        ctype = ack.headers.get("content-type") if ack.body else None
        if call.late_offer and call.media is not None:
            # A's answer to the engine's offer; B gets the engine's answer.
            try:
                body = m.call_media.ack_answer(call, ack)
            except MediaError as exc:
                log.info("call %s: %s, hanging up", call.id, exc.reason)
                m._ack(call.answered, b"", None)
                m.hangup(call, f"no usable answer in ACK: {exc.reason}")
                return
            m._ack(call.answered, body, "application/sdp")
            return
        m._ack(call.answered, ack.body, ctype)
