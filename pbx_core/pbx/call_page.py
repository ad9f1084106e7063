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

A multicast page (the group's `multicast` column) also sends the bridge's mix, one
RTP packet per 20 ms tick (media/multicast.py: continuous sequence and timestamps,
silence included), to the multicast group: a tone first (the caller is muted until
it ends), then the caller. The sender's socket closes with the page.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.features.api import Page
from pbx_core.media.bridge import MixBridge, beep_clip
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.media.multicast import MulticastSender
from pbx_core.pbx.call_state import Call, Fork, State, Target
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

PAGE_RING = 10.0  # seconds a member's phone may take to answer the page
Multicast = tuple[str, int, int, str]  # group address, port, TTL, codec


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
        page: Page,
    ) -> Call | None:
        """Answer the caller and page `targets` (and `page`'s multicast group); None
        when it could not be answered."""
        m = self.manager
        duplex = page.duplex
        multicast: Multicast | None = None
        if page.multicast is not None:
            multicast = (*page.multicast, page.multicast_ttl, page.multicast_codec)

        def answered(call: Call, leg: MediaLeg) -> None:
            if m.media is None:
                return
            bridge = MixBridge(m.media)
            bridge.add(leg, deaf=not duplex)
            call.page = bridge
            call.page_duplex = duplex
            if multicast is not None and not self._multicast(call, bridge, leg, multicast):
                return
            for target in targets:
                m._fork(call, target, b"")
            call.ring_timer = m.loop.call_later(PAGE_RING, m.stop_ringing, call)
            log.info("call %s: paging %d phones", call.id, len(call.forks))

        return m.answer_locally(req, key, source, caller, callee, answered)

    def _multicast(self, call: Call, bridge: MixBridge, leg: MediaLeg, how: Multicast) -> bool:
        """Send the page's mix to a multicast group as RTP: the tone, then the caller
        (muted until the tone ends); the caller hears the tone too. False: no socket
        (the call is hung up)."""
        m = self.manager
        group, port, ttl, codec = how
        assert m.media is not None  # noqa: S101  # checked by the caller
        try:
            sender = MulticastSender(group, port, codec=codec, ttl=ttl, interface=m.media.address)
        except MediaError as exc:
            log.warning("call %s: multicast page to %s:%d: %s", call.id, group, port, exc.reason)
            m.hangup(call, f"multicast page: {exc.reason}")
            return False
        call.page_multicast = sender
        bridge.listeners.append(sender.send)
        bridge.mute(leg)

        def tone_done() -> None:
            if not bridge.closed and leg in bridge:
                bridge.mute(leg, on=False)

        bridge.beep(to=leg)
        bridge.play(beep_clip("on"), on_done=tone_done)
        log.info("call %s: paging multicast %s:%d (ttl %d, %s)", call.id, group, port, ttl, codec)
        return True

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
        sender, call.page_multicast = call.page_multicast, None
        if sender is not None:
            sender.close()
