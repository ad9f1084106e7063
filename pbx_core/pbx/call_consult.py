"""Attended transfer by in-call keys (`*2`, Asterisk's atxfer) for phones that
cannot REFER: the transferor consults a third party while the other party waits on
hold, then hangs up to join them, or presses `*` to come back.

Theory of operation. The transferor pressed the code and its in-call application
(features/transfer) collected a number; `start` then:

1. splits the call's relay (`AnchoredCall.split`): both media legs stay open. The
   held party's dialog leaves the call's two sides as a settled `Fork` (a dialog
   where the PBX was UAS becomes one, as for REFER's attended transfer) kept in
   `call.consult` with its leg (music on hold), session timer and UPDATE flag; its
   dialog maps to side "h". When the transferor was side "b" it becomes side "a"
   (`CallOps._promote_dialogs`).
2. anchors the transferor's leg to a new leg (`MediaEngine.extend`) and rings the
   number as a replacement (`Replacement("consult")`, `Router.reroute` with the
   transferor's call class): the transferor hears ringback, then the consulted
   party when it answers (side "b").

Then, whatever comes first:

- the transferor hangs up (its BYE, `request`): the held party takes its place
  (`AnchoredCall.swap_caller`, its dialog side "a"). When the consulted phone still
  rings, it keeps ringing and the held party hears ringback until it answers
  (Asterisk's "transfer on ringing"); unanswered, the transferor is rung back, as for
  a failed blind transfer (`CallOps._recall`).
- the transferor presses `*` (its application calls `cancel`), or the consulted
  party is busy, does not answer, fails or hangs up: the consultation ends and the
  held party is back as side "b" once the application ends (`rejoin`, called from
  call_keys' `back`), after the application's announcement.
- the held party hangs up (side "h" BYE): the consultation goes on as a normal call
  between the transferor and the consulted party (still ringing: its failure ends
  the call).
- the call ends otherwise (`ended`): the held leg gets BYE and its media leg closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pbx_core.media.errors import MediaError
from pbx_core.pbx.call_state import Call, Consult, Fork, Replacement, State, Target
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

CANCELLED = 487  # the transferor pressed the cancel key, or the consulted party hung up


class CallConsult:
    """Attended transfers by keys, for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    # ------------------------------------------------------------ start
    def start(
        self, call: Call, side: str, by: str, number: str
    ) -> tuple[asyncio.Future[int], Callable[[], None]]:
        """Extension `by` (aside on `side` in its in-call application) consults
        `number`: the outcome for the application (see Consult.on_done; at once when
        refused: 403 the features or its call class refuse it, 488 the call cannot)
        and how to cancel the consultation (its `*`)."""
        m = self.manager
        outcome: asyncio.Future[int] = m.loop.create_future()

        def done(status: int) -> None:
            if not outcome.done():
                outcome.set_result(status)

        def cancel() -> None:
            if call.consult is not None and call.consult.on_done is done:
                with m.guard(call, "consultation cancelled"):
                    self._back(call, CANCELLED)

        media, fork = call.media, call.answered
        if (
            m.ops.reroute is None
            or m.media is None
            or call.state is not State.ANSWERED
            or call.aside != side
            or call.replacing is not None
            or call.consult is not None
            or call.mix is not None
            or media is None
            or fork is None
        ):
            done(488)
            return outcome, cancel
        if m.ops.transfer_refused(call, by, number) is not None:
            done(403)
            return outcome, cancel
        with m.guard(call, "consultation"):
            music = media.music_on_hold
            caller_leg, callee_leg = media.split(keep="caller" if side == "a" else "callee")
            call.media = None
            if side == "a":  # the far end (a fork) is held
                leg, held_leg = caller_leg, callee_leg
                timer = m.call_timers.drop(call, "b")
                update = call.allows_update.pop("b", False)
                call.forks.remove(fork)
                call.answered = None
                fork.final = fork.final or 200
                held = fork
            else:  # the caller is held: its UAS dialog becomes a settled fork
                leg, held_leg = callee_leg, caller_leg
                a_dialog = call.a_dialog
                assert a_dialog is not None  # noqa: S101  # an answered call has it
                target = Target(a_dialog.remote_target, call.a_source, call.caller, "", "")
                held = Fork(call, target, a_dialog, call.a_req, final=200)
                timer = m.call_timers.drop(call, "a")
                update = call.allows_update.get("a", False)
                m.ops._promote_dialogs(call)
                call.transferor = None
            m.dialogs[(held.dialog.call_id, held.dialog.local_tag)] = (call, "h")
            call.aside = "a"
            call.keys.clear()
            call.consult = Consult(by, number, held, held_leg, timer, update, leg, done, side=side)
            if music is not None and held_leg.codec in ("PCMU", "PCMA"):
                held_leg.play(music, loop=True)
            leg.side = "caller"
            try:
                consulting, offer = m.media.extend(leg, "callee")
            except MediaError as exc:
                m.hangup(call, f"no consultation: {exc.reason}")
                return outcome, cancel
            call.media = consulting
            call.b_offer = offer
            call.late_offer = False
            call.direct = False
            m.call_media.adopt(call, consulting)
            call.replacing = Replacement("consult", lambda status: self._rung(call, status))
            if leg.codec in ("PCMU", "PCMA"):
                leg.tone("ringback")
            log.info("call %s: %s consults %s (the other party on hold)", call.id, by, number)
            m.ops.reroute(call, number, by)
        return outcome, cancel

    def _rung(self, call: Call, status: int) -> None:
        """The consulted number answered (200) or failed (`failed` came first)."""
        consult = call.consult
        if consult is not None and status == 200:
            consult.talking = True

    # ------------------------------------------------------------ outcomes
    def failed(self, call: Call, status: int) -> None:
        """Routing gave up on the consulted number: back with the held party."""
        self.manager.stop_ringing(call)
        call.replacing = None
        self._back(call, status)

    def _back(self, call: Call, status: int) -> None:
        """The consultation ends: the consulted party goes (CANCEL or BYE), the
        transferor's leg waits for its application to end (an announcement), then
        `rejoin` brings the held party back."""
        m = self.manager
        consult = call.consult
        if consult is None or call.state is State.ENDED:
            return
        call.replacing = None
        m.stop_ringing(call)
        fork = call.answered
        if fork is not None:
            m._bye(fork.dialog)
            call.answered = None
        m.call_timers.drop(call, "b")
        call.allows_update.pop("b", None)
        if call.media is not None:
            call.media.detach("caller", keep_callbacks=True)
            call.media = None
        consult.leg.stop_play()
        consult.talking = False
        log.info("call %s: consultation of %s ended (%s)", call.id, consult.number, status)
        consult.on_done(status)

    def rejoin(self, call: Call) -> None:
        """The transferor's application ended after the consultation: the held party
        is side "b" again and the two talk (the application's `back`)."""
        m = self.manager
        consult = call.consult
        if consult is None or call.state is not State.ANSWERED or m.media is None:
            return
        if call.media is not None:  # still consulting (the application ended first)
            self._back(call, CANCELLED)
        call.consult = None
        call.aside = None
        held = consult.held
        call.forks.append(held)
        held.step = call.step
        call.answered = held
        call.callee = held.target.label
        m.dialogs[(held.dialog.call_id, held.dialog.local_tag)] = (call, "b")
        call.allows_update["b"] = consult.held_update
        m.call_timers.restart(call, "b", consult.held_timer)
        consult.held_leg.stop_play()
        consult.leg.side, consult.held_leg.side = "caller", "callee"
        try:
            call.media = m.media.join(consult.leg, consult.held_leg)
        except MediaError as exc:
            m.hangup(call, f"cannot rejoin the held party: {exc.reason}")
            return
        m.call_media.adopt(call, call.media)
        m.call_media.answered(call)
        log.info("call %s: %s is back with %s", call.id, consult.by, held.target.label)

    # ------------------------------------------------------------ requests
    def request(self, call: Call, side: str, req: Request, key: AnyServerKey) -> bool:
        """A request in a call with a consultation: the transferor's BYE completes the
        transfer, the held party's ends only its part, the consulted party's BYE
        ends the consultation. False: not ours (the call's usual handling)."""
        m = self.manager
        consult = call.consult
        if consult is None:
            return False
        if side == "h":
            if req.method == "BYE":
                m.stack.respond(key, req.reply(200))
                with m.guard(call, "the held party hung up"):
                    self._held_gone(call)
            elif req.method in ("INVITE", "UPDATE"):
                m.stack.respond(key, req.reply(491))  # on hold by us: try again later
            else:
                m.ops.answer_in_dialog(req, key)
            return True
        unanswered = call.media is None or not call.media.answered
        if side == "a" and req.method == "INFO" and req.body and unanswered:
            # Nobody across to relay it to yet: a key press for the transferor's
            # application (its `*`), as on an application's own call.
            self._key_info(call, consult, req, key)
            return True
        if req.method != "BYE":
            return False
        if side == "a":
            m.stack.respond(key, req.reply(200))
            with m.guard(call, "transfer completed"):
                self._complete(call)
            return True
        if side == "b" and consult.talking:
            m.stack.respond(key, req.reply(200))
            call.answered = None  # its dialog is over: no BYE to it
            with m.guard(call, "consulted party hung up"):
                self._back(call, CANCELLED)
            return True
        return False

    def _key_info(self, call: Call, consult: Consult, req: Request, key: AnyServerKey) -> None:
        """A SIP INFO key press of the transferor while nobody is across."""
        m = self.manager
        assert m.media is not None  # noqa: S101  # a consultation needs one
        ctype = req.headers.get("content-type") or ""
        try:
            event = m.media.dtmf_info_endpoint(consult.leg, ctype, req.body)
        except MediaError as exc:
            m.stack.respond(key, req.reply(exc.status))
            return
        resp = req.reply(200 if event is not None else 415)
        if event is None:
            resp.headers.add("Accept", "application/dtmf-relay, application/dtmf")
        m.stack.respond(key, resp)

    def _complete(self, call: Call) -> None:
        """The transferor hung up: the held party takes its place as side "a"."""
        m = self.manager
        consult = call.consult
        assert consult is not None  # noqa: S101  # checked by the caller
        call.consult = None
        call.aside = None
        held = consult.held
        a_dialog = call.a_dialog
        if a_dialog is not None:
            m.dialogs.pop((a_dialog.call_id, a_dialog.local_tag), None)
        for (side, cseq), waiting in list(call.awaiting_ack.items()):
            if waiting.timer is not None:
                waiting.timer.cancel()
            del call.awaiting_ack[(side, cseq)]
        consult.held_leg.stop_play()
        if call.media is None:  # back from a failed consultation: nobody to join
            consult.held_leg.close()
            consult.leg.close()
            m._bye(held.dialog)
            m.dialogs.pop((held.dialog.call_id, held.dialog.local_tag), None)
            consult.on_done(200)
            m._end(call, "ANSWERED", "transferor hung up")
            return
        m.by_key.pop(call.a_key, None)
        call.a_dialog = held.dialog
        call.a_tag = held.dialog.local_tag
        call.a_source = held.target.dest
        call.caller = held.target.label
        m.dialogs[(held.dialog.call_id, held.dialog.local_tag)] = (call, "a")
        call.allows_update["a"] = consult.held_update
        m.call_timers.drop(call, "a")
        m.call_timers.restart(call, "a", consult.held_timer)
        call.media.swap_caller(consult.held_leg)
        consult.on_done(200)
        if call.replacing is not None:  # transfer on ringing: ringback until answered
            if consult.held_leg.codec in ("PCMU", "PCMA"):
                consult.held_leg.tone("ringback")
            by = consult.by

            def done(status: int) -> None:
                if status != 200 and call.state is State.ANSWERED:
                    m.ops._recall(call, by)

            call.replacing = Replacement("transfer", done)
            log.info("call %s: %s transferred it while %s rings", call.id, by, consult.number)
            return
        log.info("call %s: %s joined it to %s", call.id, consult.by, call.callee)

    def _held_gone(self, call: Call) -> None:
        """The held party hung up: the consultation goes on as a normal call."""
        m = self.manager
        consult = call.consult
        assert consult is not None  # noqa: S101  # checked by the caller
        call.consult = None
        call.aside = None
        held = consult.held
        m.dialogs.pop((held.dialog.call_id, held.dialog.local_tag), None)
        consult.held_leg.close()
        consult.on_done(200)
        if call.media is None:  # back from a failed consultation: nobody left
            consult.leg.close()
            m.hangup(call, "held party hung up")
            return
        if call.replacing is not None:

            def done(status: int) -> None:
                if status != 200 and call.state is State.ANSWERED:
                    m.hangup(call, f"consultation not answered: {status}")

            call.replacing = Replacement("consult", done)
        log.info("call %s: the held party hung up; the consultation goes on", call.id)

    def ended(self, call: Call) -> None:
        """The call ended during a consultation: the held party gets BYE, its leg and
        the transferor's (if out of the relay) close."""
        consult, call.consult = call.consult, None
        if consult is None:
            return
        held = consult.held
        self.manager._bye(held.dialog)
        consult.held_leg.close()
        if call.media is None or consult.leg is not call.media.caller:
            consult.leg.close()
        consult.on_done(CANCELLED)
