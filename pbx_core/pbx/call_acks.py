"""Every 2xx the B2BUA sends to an INVITE, retransmitted until its ACK (RFC 3261
§13.3.1.4).

Theory of operation. Since RFC 6026 the INVITE server transaction sends a 2xx once
and, in its Accepted state, absorbs the retransmitted INVITEs without passing them
up: over UDP a lost 2xx is repaired only by the TU sending it again. So every 2xx the
PBX gives an INVITE — the caller's initial INVITE, a re-INVITE from either phone
answered on its leg or relayed from the other side — goes through `send_2xx`: sent
on its transaction, then passed to the transport again, the very same bytes, at T1,
2*T1 … capped at T2, until the ACK with the same CSeq number arrives on that side's
dialog (`on_ack`). When none has come after 64*T1 the session ends: BYE on both legs,
the CDR cause says whose ACK never came.

An ACK may matter beyond stopping the retransmissions: after a 2xx carrying an
offer (a delayed offer, a re-INVITE without SDP) it carries the answer, which the
2xx's `on_ack` receives (None when it never came, just before the hang-up). Until
then the phone may make no new offer: its next re-INVITE gets 500 with Retry-After
(`overlaps`, RFC 3261 §14.2).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import T1, T2, AwaitingAck, Call, State, media_side
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")


class CallAcks:
    """The 2xx responses to INVITEs of every call of one CallManager that wait for
    their ACK."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def send_2xx(
        self,
        call: Call,
        side: str,
        key: AnyServerKey,
        resp: Response,
        dest: Address,
        *,
        offer: bool = False,
        on_ack: Callable[[Request | None], None] | None = None,
    ) -> None:
        """Send `resp`, the 2xx to the INVITE transaction `key` from `side` (which
        came from `dest`), and again until its ACK. `offer`: the 2xx carries an offer,
        so the ACK brings the answer. `on_ack` gets the ACK, or None when none came
        in 64*T1 (the call is hung up right after)."""
        manager = self.manager
        cseq = resp.cseq.seq
        manager.stack.respond(key, resp)
        waiting = AwaitingAck(side, cseq, resp, dest, offer, on_ack)
        old = call.awaiting_ack.get((side, cseq))
        if old is not None and old.timer is not None:
            old.timer.cancel()
        call.awaiting_ack[(side, cseq)] = waiting
        now = manager.loop.time()
        self._arm(call, waiting, now, T1, now + 64 * T1)

    def _arm(
        self, call: Call, waiting: AwaitingAck, now: float, interval: float, give_up: float
    ) -> None:
        loop = self.manager.loop

        def again() -> None:
            if call.awaiting_ack.get((waiting.side, waiting.cseq)) is not waiting:
                return
            if call.state is State.ENDED:
                return
            now = loop.time()
            if now >= give_up:
                self._give_up(call, waiting)
                return
            # Outside the transaction (it only absorbs retransmitted INVITEs now):
            # the same Response object, so the same bytes.
            self.manager.stack.send(waiting.resp, waiting.dest)
            self._arm(call, waiting, now, min(2 * interval, T2), give_up)

        waiting.timer = loop.call_at(min(now + interval, give_up), again)

    def _give_up(self, call: Call, waiting: AwaitingAck) -> None:
        del call.awaiting_ack[(waiting.side, waiting.cseq)]
        who = media_side(waiting.side)
        log.info(
            "call %s: no ACK from the %s for our 2xx to its INVITE (CSeq %s), hanging up",
            call.id,
            who,
            waiting.cseq,
        )
        if waiting.on_ack is not None:
            waiting.on_ack(None)
        self.manager.hangup(call, f"no ACK from the {who}")

    def on_ack(self, call: Call, side: str, ack: Request) -> bool:
        """An ACK from `side`: True when a 2xx of ours waited for it (matched by the
        CSeq number, RFC 3261 §17.1.1.3); a retransmitted ACK matches nothing."""
        waiting = call.awaiting_ack.pop((side, ack.cseq.seq), None)
        if waiting is None:
            return False
        if waiting.timer is not None:
            waiting.timer.cancel()
        if waiting.on_ack is not None:
            waiting.on_ack(ack)
        return True

    def overlaps(self, call: Call, side: str, req: Request, key: AnyServerKey) -> bool:
        """A re-INVITE from `side` while the ACK with the answer to our offer is
        awaited (RFC 3261 §14.2): 500 with Retry-After, and True."""
        if not any(w.side == side and w.offer for w in call.awaiting_ack.values()):
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
