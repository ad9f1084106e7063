"""A callee that must accept the call before the caller is answered: an outside number
of a follow-me list (the "press 1 to accept" of FreePBX's find-me/follow-me), so a
mobile's own voicemail, which answers every call, never takes it.

Theory of operation. A fork to a `Target` with `confirm` gets a media leg of its own
and the engine's offer for it (`MediaEngine.offer_leg`), not the call's shared
callee leg. When it answers (2xx) it is ACKed at once and asked, on its own leg,
to press 1 (a prompt, then CONFIRM_SECONDS); the caller still hears ringback and
the other forks still ring. On 1 the call is answered through it: the caller gets
its 200 (the answer it had for its ringback) and its media leg is relayed to the
fork's (`MediaEngine.join`), the other forks CANCELled. Any other key, silence or
the call having been answered or ended meanwhile: the fork gets BYE and counts as
not answered (603). A fork being asked is never CANCELled (it answered), and the
call's end BYEs it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core import paths
from pbx_core.media.dtmf import parse_dtmf_info
from pbx_core.media.errors import MediaError
from pbx_core.media.events import DtmfEvent
from pbx_core.pbx.call_state import Call, Fork, State, allows_update
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response

if TYPE_CHECKING:
    from pbx_core.media.leg import MediaLeg
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

CONFIRM_SECONDS = 15.0  # to press 1 after the prompt starts
PROMPT = "followme-confirm"


class CallConfirm:
    """Forks that must accept, for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def offer(self, call: Call, fork_offer: bytes, host: str) -> tuple[MediaLeg, bytes] | None:
        """A leg and an offer of its own for a confirming fork to `host` (None: the
        call's media is not anchored, the fork rings as any other)."""
        m = self.manager
        if m.media is None or call.late_offer or not call.a_req.body:
            return None
        if call.media is None and call.page is None:
            return None
        try:
            return m.media.offer_leg(
                call.a_req.body, "callee", m.nat.media_address_for(host) or None
            )
        except MediaError as exc:
            log.info("call %s: no leg to confirm on: %s", call.id, exc.reason)
            return None

    def answered(self, fork: Fork, resp: Response) -> None:
        """A confirming fork answered: ACK it and ask its phone to accept."""
        m = self.manager
        call = fork.call
        leg = fork.leg
        m._ack(fork, b"", None)
        if leg is None or m.media is None or call.state not in (State.ROUTING, State.RINGING):
            self._drop(fork)
            return
        try:
            m.media.answer_endpoint(leg, resp.body)
        except MediaError as exc:
            log.info("call %s: confirming fork's answer refused: %s", call.id, exc.reason)
            self._drop(fork)
            return
        fork.confirming = True
        fork.dialog.update_from_response(resp)
        leg.on_dtmf(lambda event: self._key(fork, resp, event))
        prompt = paths.asset(f"prompts/{PROMPT}.wav")
        try:
            if prompt.exists():
                leg.play(prompt)
            else:
                leg.tone("confirmation")
        except MediaError as exc:
            log.info("call %s: cannot prompt the confirming phone: %s", call.id, exc.reason)
        fork.confirm_timer = m.loop.call_later(CONFIRM_SECONDS, self._drop, fork)
        log.info("call %s: %s answered, asked to accept", call.id, fork.target.label)

    def _key(self, fork: Fork, resp: Response, event: DtmfEvent) -> None:
        if not fork.confirming:
            return
        with self.manager.guard(fork.call, "confirming"):
            if event.digit == "1":
                self._accept(fork, resp)
            else:
                self._drop(fork)

    def _accept(self, fork: Fork, resp: Response) -> None:
        m = self.manager
        call = fork.call
        media, leg = call.media, fork.leg
        if (
            call.state not in (State.ROUTING, State.RINGING)
            or call.a_final_sent
            or media is None
            or leg is None
            or m.media is None
        ):
            self._drop(fork)
            return
        self._stop(fork)
        a_body = media.early_answer()
        staying = media.detach("caller")
        leg.unbind()
        staying.side, leg.side = "caller", "callee"
        call.media = m.media.join(staying, leg)
        fork.leg = None  # the call's relay owns it now
        m.call_media.adopt(call, call.media)
        call.answered = fork
        call.callee = fork.target.label
        call.ringback = False
        m.stop_ringing(call, keep=fork)
        call.allows_update["b"] = allows_update(resp)
        m.call_timers.restart_uac(call, "b", resp)
        m.answer_a(call, a_body)
        m.call_media.answered(call)
        log.info("call %s: %s accepted it", call.id, fork.target.label)

    def _stop(self, fork: Fork) -> None:
        fork.confirming = False
        if fork.confirm_timer is not None:
            fork.confirm_timer.cancel()
            fork.confirm_timer = None

    def _drop(self, fork: Fork) -> None:
        """Not accepted (a key other than 1, no key, or nothing left to accept): BYE,
        its leg closed, counted as not answered."""
        m = self.manager
        call = fork.call
        self._stop(fork)
        if fork.final is None:
            fork.final = 603
            m._bye(fork.dialog)
        if fork.leg is not None:
            fork.leg.close()
            fork.leg = None
        if call.state in (State.ROUTING, State.RINGING) and call.answered is None:
            current = [f for f in call.forks if f.step == call.step]
            if all(f.final is not None for f in current):
                m._unanswered(call, 480, "not accepted")

    @staticmethod
    def _asked(call: Call, call_id: str) -> Fork | None:
        """The fork of `call` with this dialog's Call-ID that is being asked."""
        return next((f for f in call.forks if f.confirming and f.dialog.call_id == call_id), None)

    def hung_up(self, call: Call, call_id: str) -> bool:
        """A BYE on side "b": True when it came from a phone being asked (it declined
        by hanging up: only it is gone, the others ring on)."""
        fork = self._asked(call, call_id)
        if fork is None or fork is call.answered:
            return False
        fork.final = 603  # it ended its dialog itself: no BYE from us
        self._drop(fork)
        return True

    def request(self, call: Call, req: Request, key: AnyServerKey) -> bool:
        """A request from a phone being asked: its SIP INFO key press is its answer
        (1 accepts); anything else is refused there (the call is not its yet)."""
        fork = self._asked(call, req.call_id)
        m = self.manager
        if fork is None or fork.leg is None or m.media is None:
            return False
        if req.method == "INFO" and req.body:
            ctype = req.headers.get("content-type") or ""
            try:
                event = parse_dtmf_info(ctype, req.body, fork.leg.side)
            except MediaError as exc:
                m.stack.respond(key, req.reply(exc.status))
                return True
            # The INFO is answered before what the key does (a BYE when it declines).
            m.stack.respond(key, req.reply(200 if event is not None else 415))
            if event is not None:
                m.media.dtmf_info_endpoint(fork.leg, ctype, req.body)
            return True
        m.stack.respond(key, req.reply(200 if req.method == "OPTIONS" else 491))
        return True

    def ended(self, call: Call) -> None:
        """The call ended: forks still asked get BYE, their legs close."""
        for fork in call.forks:
            if fork.confirming or (fork.leg is not None and fork is not call.answered):
                self._stop(fork)
                if fork.ack is not None and fork.final is None:
                    fork.final = 603
                    self.manager._bye(fork.dialog)
                if fork.leg is not None:
                    fork.leg.close()
                    fork.leg = None
