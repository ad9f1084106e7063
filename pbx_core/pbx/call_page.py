"""Paging: one caller heard by many phones at once (a page group).

Theory of operation. The PBX answers the caller itself (a media endpoint) and puts
its leg in a `MixBridge`; then it rings every member's phones at once with the
auto-answer headers (routing.AUTO_ANSWER), each fork with a media leg and offer of
its own (`MediaEngine.offer_leg`, as confirming forks have). Every fork that answers
is ACKed and its leg joins the bridge muted (it only listens; `duplex` lets the
caller hear it too) after a short tone; unlike a normal call, answers do not end the
ringing of the others. Phones that are busy refuse and are skipped; those still
ringing after PAGE_RING seconds are CANCELled. A member's BYE takes only it out; the
caller's BYE (or hang-up) ends the page: every member gets BYE.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.media.bridge import MixBridge
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_state import Call, Fork, State, Target
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

PAGE_RING = 10.0  # seconds a member's phone may take to answer the page


class CallPage:
    """Pages, for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def start(
        self,
        req: Request,
        key: AnyServerKey,
        source: Address,
        caller: str,
        callee: str,
        targets: list[Target],
        duplex: bool,
    ) -> Call | None:
        """Answer the caller and page `targets`; None when it could not be answered."""
        m = self.manager

        def answered(call: Call, leg: MediaLeg) -> None:
            if m.media is None:
                return
            bridge = MixBridge(m.media)
            bridge.add(leg, deaf=not duplex)
            call.page = bridge
            call.page_duplex = duplex
            for target in targets:
                m._fork(call, target, b"")
            call.ring_timer = m.loop.call_later(PAGE_RING, m.stop_ringing, call)
            log.info("call %s: paging %d phones", call.id, len(call.forks))

        return m.answer_locally(req, key, source, caller, callee, answered)

    def answered(self, fork: Fork, resp: Response) -> None:
        """A member's phone answered: it joins the page (muted unless duplex)."""
        m = self.manager
        call = fork.call
        m._ack(fork, b"", None)
        bridge, leg = call.page, fork.leg
        if call.state is not State.ANSWERED or bridge is None or leg is None or m.media is None:
            m._bye(fork.dialog)
            fork.final = 200
            return
        try:
            m.media.answer_endpoint(leg, resp.body)
            bridge.add(leg, muted=not call.page_duplex)
            bridge.beep(to=leg)
        except MediaError as exc:
            log.info("call %s: %s cannot join the page: %s", call.id, fork.target.label, exc.reason)
            m._bye(fork.dialog)
            fork.final = 488
            leg.close()
            fork.leg = None
            return
        log.info("call %s: %s hears the page", call.id, fork.target.label)

    def hung_up(self, call: Call, call_id: str) -> bool:
        """A member's BYE: only it leaves the page. False when not a page member."""
        if call.page is None:
            return False
        fork = next(
            (f for f in call.forks if f.dialog.call_id == call_id and f.leg is not None), None
        )
        if fork is None or fork.leg is None:
            return False
        call.page.remove(fork.leg)
        fork.leg.close()
        fork.leg = None
        fork.final = 200
        return True

    def ended(self, call: Call) -> None:
        """The page ended: the bridge closes (the forks' BYEs and legs follow in
        `CallConfirm.ended`, which releases every fork with a leg of its own)."""
        bridge, call.page = call.page, None
        if bridge is not None:
            bridge.close()
