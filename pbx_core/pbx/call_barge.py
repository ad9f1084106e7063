"""A third phone in a call: listen, whisper, barge (busy override).

Theory of operation. The barging phone's INVITE is answered by the PBX as a call of
its own (a media endpoint, `CallManager.answer_locally`); its leg then joins the
answered, anchored call it names in a `MixBridge` (media/bridge.py) together with
that call's two legs, which leave their 2-party relay for the mix while it lasts:
`listen` joins muted (it hears both, nobody hears it), `whisper` is heard by the one
extension only, `barge` by everyone. When the barging phone hangs up, its leg leaves
the bridge; when the last one has gone, the two legs go back to their relay and the
bridge closes. When the call ends, every barging call gets BYE. The call's record
(CDR) names who barged and how. Who may is the features' (features/barge), never the
core's: it only joins what a decision names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.media.bridge import MixBridge
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_state import Call, State
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

MODES = ("listen", "whisper", "barge")
MAX_BARGERS = 4  # phones joined to one call at once


class CallBarge:
    """Barging for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def talking(self) -> list[tuple[Call, str, str]]:
        """Answered calls whose media passes through the PBX: (call, side, label) for
        each side ("a", "b") with its leg's label (an AOR for extensions)."""
        out = []
        for call in self.manager.calls.values():
            if call.state is not State.ANSWERED or call.media is None or call.replacing:
                continue
            out.append((call, "a", call.caller))
            if call.answered is not None:
                out.append((call, "b", call.answered.target.label))
        return out

    def join(
        self,
        target: Call,
        req: Request,
        key: AnyServerKey,
        source: Address,
        label: str,
        mode: str,
        side: str,
    ) -> int | None:
        """The phone at `source` (extension `label`) joins `target` as `mode`
        (`side`: the side a whisper is heard by). None when its INVITE was answered,
        else the status for it."""
        m = self.manager
        if mode not in MODES or side not in ("a", "b"):
            return 500
        if target.state is not State.ANSWERED or target.media is None or target.replacing:
            return 480
        if len(target.bargers) >= MAX_BARGERS:
            return 486

        def joined(call: Call, leg: MediaLeg) -> None:
            self._attach(target, call, leg, mode, side)

        call = m.answer_locally(req, key, source, label, f"{mode}:{target.callee}", joined)
        if call is not None:
            call.barging = target
        return None

    def _attach(self, target: Call, call: Call, leg: MediaLeg, mode: str, side: str) -> None:
        m = self.manager
        media = target.media
        if target.state is not State.ANSWERED or media is None or m.media is None:
            m.hangup(call, "nothing to join")
            return
        try:
            bridge = target.mix
            if bridge is None:
                bridge = MixBridge(m.media)
                bridge.add(media.caller)
                bridge.add(media.callee)
                target.mix = bridge
            bridge.add(leg, muted=mode == "listen")
            if mode == "whisper":
                bridge.whisper(leg, to=[media.caller if side == "a" else media.callee])
        except MediaError as exc:
            log.info("call %s: %s cannot join it: %s", target.id, call.caller, exc.reason)
            self._release_bridge(target)
            m.hangup(call, f"cannot join: {exc.reason}")
            return
        target.bargers.append(call)
        target.barged_by.append(f"{call.caller} ({mode})")
        log.info("call %s: %s joins it (%s)", target.id, call.caller, mode)

    def ended(self, call: Call) -> None:
        """A call ended: a barging phone leaves its target's bridge; a barged call's
        barging phones get BYE and the bridge closes."""
        m = self.manager
        target = call.barging
        if target is not None:
            call.barging = None
            if call in target.bargers:
                target.bargers.remove(call)
                bridge = target.mix
                if bridge is not None and call.endpoint is not None:
                    bridge.remove(call.endpoint)
                if not target.bargers:
                    self._release_bridge(target)
        for barger in list(call.bargers):
            barger.barging = None
            m.hangup(barger, "the call it joined ended")
        call.bargers.clear()
        self._release_bridge(call)

    @staticmethod
    def _release_bridge(call: Call) -> None:
        """The call's two legs back to their relay, the bridge closed."""
        bridge, call.mix = call.mix, None
        if bridge is None:
            return
        media = call.media
        if media is not None:
            for leg in (media.caller, media.callee):
                bridge.remove(leg)
        bridge.close()
