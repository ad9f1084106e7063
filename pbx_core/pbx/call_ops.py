"""Operations on a call beyond ringing it once: an application that answers after
ringing, a new far end for an answered call (an application's bridge, a transfer),
and the REFER that asks for one (RFC 3515).

Theory of operation. A call is two legs, "a" and "b", each a SIP dialog with its
media leg; the media engine relays the two media legs (an `AnchoredCall`). To give
a call a new far end, the leg that stays keeps its dialog and its media leg, and
only the other one changes:

1. `start_replacement` takes the staying media leg out of the call's relay
   (`AnchoredCall.detach`, or the application's endpoint), anchors it to a new leg
   (`MediaEngine.extend`: an offer with the codec already in use, so the staying
   phone's SDP never changes) and plays ringback on it. The leg that goes (a
   transferor) is kept only to hear how it went: its dialog maps to side "t".
   When the staying leg was side "b", it becomes side "a" first (`_promote`): "a" is
   always the leg that stays.
2. Routing rings the new number on the same call (`Router.reroute`: the dial plan
   with the call class of the extension that asked), through the usual
   `CallManager.ring_more`: forks, hunting, forwards and failovers all apply. While
   `call.replacing` is set, the forks' provisionals are not relayed (the staying
   phone answered long ago) and their answer completes the replacement
   (`replaced`) instead of answering the caller.
3. The outcome goes to `Replacement.on_done`: 200 when a fork answered (the relay
   joins the staying leg and the new one), else the final status; the staying leg is
   then the application's endpoint again (a bridge), or rings the transferor back
   (a failed blind transfer: `recall`), or the call ends.

A REFER (`refer`) from an extension in an answered, anchored call is a blind
transfer: 202, NOTIFY `100 Trying` (message/sipfrag, RFC 3515 §2.4.5), the
replacement rung with the transferring extension's call class, NOTIFY with the
final status (`Subscription-State: terminated`), then BYE to the transferor.
A REFER whose Refer-To carries Replaces (an attended transfer, RFC 3891) joins the
far ends of the transferor's two calls (`_attended`): their media legs are relayed
to each other (`MediaEngine.join`), the other call's far end moves into this one as
side "b", and the other call ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pbx_core import paths
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_consult import CallConsult
from pbx_core.pbx.call_state import (
    ALLOW,
    KNOWN_METHODS,
    Call,
    Fork,
    Replacement,
    State,
    Target,
    allows_update,
)
from pbx_core.pbx.dialog import Dialog
from pbx_core.pbx.session_timer import LegTimer
from pbx_core.sip.errors import ParseError
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.headers import parse_name_addr
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import unescape

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}
MAX_REFER_TO = 512  # characters of a Refer-To we look at
MAX_ANNOUNCE = 8  # prompts a transferor by keys hears (park: "parked on", two digits)
ANNOUNCE_SECONDS = 15.0  # at most this long before it is released

# (call, number, the extension number whose call class applies, or None) -> rings it
Reroute = Callable[[Call, str, "str | None"], None]


class CallOps:
    """The operations above, for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        # Set by the engine: routing rings a number for a call being replaced.
        self.reroute: Reroute | None = None
        # Set by the engine: the extension number of an AOR label, None when the
        # label is not one of our extensions (a trunk).
        self.extension_of: Callable[[str], str | None] = lambda _label: None
        # Set by the engine: the features' refusal of a transfer (a status), or None.
        self.transfer_refused: Callable[[Call, str, str], int | None] = lambda *_a: None
        self.consult = CallConsult(manager)  # attended transfer by keys (`*2`)

    # ------------------------------------------------------------ applications
    def answer_app(self, call: Call, on_answer: Callable[[Call, MediaLeg], None]) -> bool:
        """An application takes a call routing already rang (voicemail after no
        answer, a transfer to an application): the caller's media leg becomes its
        endpoint. False when the call cannot (an INVITE without SDP still ringing:
        the caller would get our offer in the 200, which no application handles)."""
        m = self.manager
        if call.state is State.ENDED or call.consult is not None:
            return False  # a consultation (`*2`) is with a phone, never an application
        if call.replacing is not None:
            if call.media is None:
                return False
            leg = call.media.detach("caller")
            call.media = None
            self._endpoint(call, leg)
            self._finish(call, 200)
            on_answer(call, leg)
            return True
        if call.state not in (State.ROUTING, State.RINGING) or call.a_final_sent:
            return False
        m.stop_ringing(call)
        if call.media is not None:
            body = call.media.early_answer()
            leg = call.media.detach("caller")
            call.media = None
        elif m.media is not None and call.a_req.body:
            leg, body = m.media.endpoint(
                call.a_req.body, "caller", *m.call_media.facing(call.a_source)
            )
        else:
            return False
        call.ringback = False
        m.answer_a(call, body)
        self._endpoint(call, leg)
        on_answer(call, leg)
        return True

    def _endpoint(self, call: Call, leg: MediaLeg) -> None:
        m = self.manager
        call.endpoint = leg
        leg.rearm_inactivity()
        leg.on_inactivity(m.rtp_timeout, lambda _leg: m.hangup(call, "RTP timeout"))

    # ------------------------------------------------------------ a new far end
    def start_replacement(
        self,
        call: Call,
        kind: str,
        on_done: Callable[[int], None],
        stay: str = "a",
        keep_leaving: bool = False,
    ) -> str | None:
        """Make ready to ring a new far end for the answered `call`; the leg `stay`
        stays (see the module docstring). `keep_leaving`: the leaving phone's media
        leg stays open in `call.leaving` (it may hear an announcement before it is
        released: `blind_transfer`). None when ready, else why not."""
        m = self.manager
        if call.state is not State.ANSWERED or call.replacing is not None:
            return "the call is not answered or already being transferred"
        if m.media is None:
            return "no media engine"
        if call.endpoint is not None:
            if stay != "a":
                return "an application's call changes only its far end"
            leg = call.endpoint
            call.endpoint = None
        elif call.media is not None and call.answered is not None:
            if keep_leaving:
                caller_leg, callee_leg = call.media.split(keep="")
                if stay == "b":
                    self._promote_dialogs(call)
                    leg, call.leaving = callee_leg, caller_leg
                else:
                    self._drop_b(call)
                    leg, call.leaving = caller_leg, callee_leg
            elif stay == "b":
                leg = self._promote(call)
            else:
                leg = call.media.detach("caller")
                self._drop_b(call)
            call.media = None
        else:
            return "the call's media does not pass through the PBX (direct media)"
        leg.side = "caller"
        try:
            media, offer = m.media.extend(leg, "callee")
        except MediaError as exc:
            leg.close()
            if call.leaving is not None:
                self._let_go(call)
            m.hangup(call, f"no new far end: {exc.reason}")
            return exc.reason
        call.media = media
        call.b_offer = offer
        call.late_offer = False
        call.direct = False
        m.call_media.adopt(call, media)
        call.replacing = Replacement(kind, on_done)
        if leg.codec in ("PCMU", "PCMA"):
            leg.tone("ringback")
        return None

    def _drop_b(self, call: Call) -> None:
        """Side "b" leaves the call: its dialog only hears how the transfer went."""
        m = self.manager
        fork = call.answered
        assert fork is not None  # noqa: S101  # an answered, anchored call
        m.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "t")
        call.transferor = fork.dialog
        fork.final = fork.final or 200  # settled: the next ring step must not CANCEL it
        m.call_timers.drop(call, "b")
        call.answered = None
        call.allows_update.pop("b", None)

    def _promote(self, call: Call) -> MediaLeg:
        """Side "b" stays and side "a" goes: b's dialog becomes side "a" (so "b" is
        the new far end, as for every ring), a's dialog side "t"."""
        media = call.media
        assert media is not None  # noqa: S101  # checked by the caller
        self._promote_dialogs(call)
        return media.detach("callee")

    def _promote_dialogs(self, call: Call) -> None:
        """`_promote`'s dialogs, session timers and labels (the media is the
        caller's business: an attended transfer by keys keeps both legs)."""
        m = self.manager
        fork = call.answered
        assert fork is not None  # noqa: S101  # checked by the caller
        old = call.a_dialog
        if old is not None:
            m.dialogs[(old.call_id, old.local_tag)] = (call, "t")
            call.transferor = old
        for (side, cseq), waiting in list(call.awaiting_ack.items()):
            if waiting.timer is not None:
                waiting.timer.cancel()
            del call.awaiting_ack[(side, cseq)]
        timer = m.call_timers.drop(call, "b")
        m.call_timers.drop(call, "a")
        fork.final = fork.final or 200  # settled: the next ring step must not CANCEL it
        call.a_dialog = fork.dialog
        call.a_tag = fork.dialog.local_tag
        call.a_source = fork.target.dest
        m.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "a")
        m.by_key.pop(call.a_key, None)
        call.allows_update = {"a": call.allows_update.get("b", False)}
        call.caller, call.callee = call.callee, call.caller
        call.answered = None
        m.call_timers.restart(call, "a", timer)

    def replaced(self, fork: Fork, resp: Response) -> None:
        """A fork rung for a new far end answered: it becomes side "b"."""
        m = self.manager
        call = fork.call
        media = call.media
        m._ack(fork, b"", None)
        if media is None:
            m._bye(fork.dialog)
            return
        m.call_media.callee_answers(call, fork)
        try:
            media.answer(resp.body)
        except MediaError as exc:
            log.info("call %s: new far end's answer refused: %s", call.id, exc.reason)
            m._bye(fork.dialog)
            fork.final = exc.status
            self._settle(call)
            return
        call.answered = fork
        call.callee = fork.target.label
        call.allows_update["b"] = allows_update(resp)
        m.call_timers.restart_uac(call, "b", resp)
        m.stop_ringing(call, keep=fork)
        media.caller.stop_play()
        m.call_media.answered(call)
        self._finish(call, 200)

    def _settle(self, call: Call) -> None:
        """A fork's answer was refused: when no other fork of the step rings, the
        step went unanswered."""
        current = [f for f in call.forks if f.step == call.step]
        if all(f.final is not None for f in current):
            self.manager._unanswered(call, 488, "no usable answer")

    def failed(self, call: Call, status: int, why: str) -> None:
        """Routing gave up on the new far end: the staying leg goes back to the
        application (a bridge) or the outcome's owner decides (a transfer)."""
        m = self.manager
        log.info("call %s: new far end not reached: %s %s", call.id, status, why)
        if call.consult is not None:
            self.consult.failed(call, status)
            return
        m.stop_ringing(call)
        if call.media is not None:
            leg = call.media.detach("caller", keep_callbacks=True)
            call.media = None
            self._endpoint(call, leg)
        self._finish(call, status)

    def _finish(self, call: Call, status: int) -> None:
        rep, call.replacing = call.replacing, None
        if rep is None:
            return
        try:
            rep.on_done(status)
        except Exception:
            log.exception("call %s: replacement outcome failed", call.id)

    def ended(self, call: Call) -> None:
        """The call ended while a new far end rang (its owner hears 487) or while
        its transferor consulted (call_consult.py)."""
        self._finish(call, 487)
        self.consult.ended(call)

    # ------------------------------------------------------------ in-dialog requests
    def from_transferor(self, call: Call, req: Request, key: AnyServerKey) -> None:
        """A request from a leg that transferred the call away (call_ops.py): its BYE
        ends its part; anything else finds no call here any more (481)."""
        if req.method == "BYE":
            self.manager.stack.respond(key, req.reply(200))
            dialog = call.transferor
            if dialog is not None and dialog.call_id == req.call_id:
                call.transferor = None
            self.manager.dialogs.pop((req.call_id, req.to.tag or ""), None)
            return
        self.manager.stack.respond(key, req.reply(481))

    def answer_in_dialog(self, req: Request, key: AnyServerKey) -> None:
        """What no phone across the call is asked (RFC 3261 §12.2.2): an in-dialog
        OPTIONS (a keep-alive) is ours to answer; a PRACK matches none of our
        provisionals (we send none reliably: RFC 3262 §3, 481); a method we know but
        do not serve gets 405, an unknown one 501, both with Allow."""
        if req.method == "OPTIONS":
            resp = req.reply(200)
        elif req.method == "PRACK":
            resp = req.reply(481)
        else:
            resp = req.reply(405 if req.method in KNOWN_METHODS else 501)
        if resp.status != 481:
            resp.headers.add("Allow", ", ".join(ALLOW))
        self.manager.stack.respond(key, resp)

    # ------------------------------------------------------------ REFER
    def refer(self, call: Call, side: str, req: Request, key: AnyServerKey) -> None:
        """A REFER inside an answered call (RFC 3515): a blind transfer of the other
        side to the Refer-To, or an attended one when it carries Replaces."""
        m = self.manager
        values = req.headers.getall("refer-to")
        if len(values) != 1:
            m.stack.respond(key, req.reply(400, "Exactly one Refer-To"))
            return
        try:
            target = parse_name_addr(values[0][:MAX_REFER_TO]).uri
        except (ParseError, ValueError):
            m.stack.respond(key, req.reply(400, "Bad Refer-To"))
            return
        fork = call.answered
        label = call.caller if side == "a" else (fork.target.label if fork else "")
        by = self.extension_of(label)
        if by is None:
            m.stack.respond(key, req.reply(403, "Only extensions transfer"))
            return
        if call.state is not State.ANSWERED or call.replacing is not None:
            m.stack.respond(key, req.reply(491))
            return
        number = unescape(target.user or "")
        if not number or len(number) > 32 or target.scheme not in ("sip", "sips", "tel"):
            m.stack.respond(key, req.reply(400, "Refer-To names no number"))
            return
        refused_by = self.transfer_refused(call, by, number)
        if refused_by is not None:
            m.stack.respond(key, req.reply(refused_by))
            return
        replaces = [unescape(v) for k, v in target.headers if k.lower() == "replaces"]
        if replaces:
            self._attended(call, side, req, key, by, replaces[0])
            return
        self._blind_refer(call, side, req, key, number, by)

    def _blind_refer(
        self, call: Call, side: str, req: Request, key: AnyServerKey, number: str, by: str
    ) -> None:
        """The REFER's blind transfer of the other side of `call` to `number`."""
        m = self.manager
        dialog = call.dialog(side)
        if dialog is None or self.reroute is None:
            m.stack.respond(key, req.reply(500))
            return
        stay = "b" if side == "a" else "a"
        event = f"refer;id={req.cseq.seq}"

        def done(status: int) -> None:
            self._notify(dialog, event, status, final=True)
            if dialog is call.transferor:
                m._bye(dialog)
                call.transferor = None
                m.dialogs.pop((dialog.call_id, dialog.local_tag), None)
            if status != 200 and call.state is State.ANSWERED:
                self._recall(call, by)

        refused = self.start_replacement(call, "transfer", done, stay=stay)
        if refused is not None:
            m.stack.respond(key, req.reply(488, refused[:80]))
            return
        m.stack.respond(key, req.reply(202))
        self._notify(dialog, event, 100, final=False)
        log.info("call %s: %s transfers it to %s", call.id, by, number)
        self.reroute(call, number, by)

    def blind_transfer(self, call: Call, side: str, number: str, by: str) -> int:
        """Extension `by` on `side` transfers the other party to `number` without a
        REFER (an in-call code): its leg is released as soon as the number is routed
        (after the announcement of an application that took the call at once: park's
        slot, `Answer.announce`); a failed transfer rings it back. 200 once the new far
        end rings, else why not (a SIP status)."""
        if self.reroute is None:
            return 500
        if self.transfer_refused(call, by, number) is not None:
            return 403

        def done(status: int) -> None:
            if status != 200:
                self._let_go(call)  # released before it is rung back
                if call.state is State.ANSWERED:
                    self._recall(call, by)

        stay = "b" if side == "a" else "a"
        call.announce = ()
        if self.start_replacement(call, "transfer", done, stay, keep_leaving=True) is not None:
            return 488
        log.info("call %s: %s transfers it to %s (in-call code)", call.id, by, number)
        self.reroute(call, number, by)
        announce, call.announce = call.announce, ()
        if announce and call.replacing is None and call.endpoint is not None:
            self._announce(call, announce)  # an application took it: park's slot
        else:
            self._let_go(call)
        return 200

    def _announce(self, call: Call, prompts: tuple[str, ...]) -> None:
        """Play `prompts` to the transferor that is leaving (`call.leaving`), then
        release it; at most ANNOUNCE_SECONDS."""
        m = self.manager
        leg, dialog = call.leaving, call.transferor
        queue = list(prompts[:MAX_ANNOUNCE])

        def finish() -> None:
            cap.cancel()
            if call.leaving is leg and leg is not None:
                call.leaving = None
                leg.close()
            if dialog is not None and call.transferor is dialog:
                self._let_go(call)  # BYE (unless it hung up itself)

        def next_prompt() -> None:
            if leg is None or leg.closed or not queue or call.transferor is not dialog:
                finish()
                return
            path = paths.asset(f"prompts/{queue.pop(0)}.wav")
            if path.exists():
                leg.play(path, on_done=next_prompt)
            else:  # a build without prompts: a beep says it
                leg.tone("confirmation", on_done=next_prompt)

        cap = m.loop.call_later(ANNOUNCE_SECONDS, finish)
        log.info("call %s: the transferor hears %s", call.id, " ".join(queue))
        next_prompt()

    def _let_go(self, call: Call) -> None:
        """The transferor by keys is released: BYE, and its kept media leg closes."""
        m = self.manager
        leg, call.leaving = call.leaving, None
        if leg is not None:
            leg.close()
        dialog, call.transferor = call.transferor, None
        if dialog is not None:
            m._bye(dialog)
            m.dialogs.pop((dialog.call_id, dialog.local_tag), None)

    # ------------------------------------------------------------ attended transfer
    def _attended(
        self, call: Call, side: str, req: Request, key: AnyServerKey, by: str, replaces: str
    ) -> None:
        """REFER with Replaces (RFC 3891 in the Refer-To): the transferor is in
        `call` and in the call the Replaces names; the far ends of the two are joined
        in `call` and the transferor's two legs released."""
        m = self.manager
        found = self._replaced_dialog(replaces)
        if found is None:
            m.stack.respond(key, req.reply(481, "Replaces names no call here"))
            return
        call2, side2 = found
        fork2 = call2.answered
        label2 = call2.caller if side2 == "a" else (fork2.target.label if fork2 else "")
        if call2 is call or self.extension_of(label2) != by:
            m.stack.respond(key, req.reply(403, "Only your own two calls are joined"))
            return
        if call2.state is not State.ANSWERED or call2.replacing is not None:
            m.stack.respond(key, req.reply(488, "The other call is not answered"))
            return
        if call2.endpoint is not None and side2 == "a":
            # The other call is the transferor's call to an application (it dialled the
            # park number and heard its slot): the party goes where that call went.
            m.hangup(call2, "transferred to where it was going")
            self._blind_refer(call, side, req, key, call2.callee, by)
            return
        if call.media is None or call2.media is None or fork2 is None or m.media is None:
            m.stack.respond(key, req.reply(488, "Media does not pass through the PBX"))
            return
        dialog = call.dialog(side)
        assert dialog is not None  # noqa: S101  # the REFER came on it
        m.stack.respond(key, req.reply(202))
        event = f"refer;id={req.cseq.seq}"
        self._notify(dialog, event, 100, final=False)
        leg1 = self._promote(call) if side == "a" else call.media.detach("caller")
        if side == "b":
            self._drop_b(call)
        call.media = None
        leg2, far, timer, update = self._take_far_end(call2, side2)
        leg1.side, leg2.side = "caller", "callee"
        call.media = m.media.join(leg1, leg2)
        m.call_media.adopt(call, call.media)
        far.call = call
        far.step = call.step
        call.forks.append(far)
        call.answered = far
        call.callee = far.target.label
        m.dialogs[(far.dialog.call_id, far.dialog.local_tag)] = (call, "b")
        call.allows_update["b"] = update
        m.call_timers.restart(call, "b", timer)
        m.call_media.answered(call)
        log.info("call %s: %s joins it to call %s's far end", call.id, by, call2.id)
        m._end(call2, "ANSWERED", "transferred")
        self._notify(dialog, event, 200, final=True)
        if dialog is call.transferor:
            m._bye(dialog)
            call.transferor = None
            m.dialogs.pop((dialog.call_id, dialog.local_tag), None)

    def _replaced_dialog(self, replaces: str) -> tuple[Call, str] | None:
        """The call and side of our dialog that a Replaces value names: Call-ID, then
        to-tag and from-tag (RFC 3891 §6.1); one of the tags is ours."""
        parts = [p.strip() for p in replaces[:MAX_REFER_TO].split(";")]
        call_id = parts[0]
        tags = {}
        for p in parts[1:]:
            name, _, value = p.partition("=")
            tags[name.strip().lower()] = value.strip()
        for tag in (tags.get("to-tag"), tags.get("from-tag")):
            if call_id and tag:
                found = self.manager.dialogs.get((call_id, tag))
                if found is not None and found[1] in ("a", "b"):
                    return found
        return None

    def _take_far_end(
        self, call2: Call, t_side: str
    ) -> tuple[MediaLeg, Fork, LegTimer | None, bool]:
        """The far end of `call2` (the side that is not the transferor's) leaves it:
        its media leg, its dialog as a settled `Fork` (a dialog where the PBX was UAS
        becomes one too), its session timer and whether it takes UPDATE. The
        transferor's leg of `call2` gets BYE; `call2` is left to end."""
        m = self.manager
        media = call2.media
        fork = call2.answered
        assert media is not None and fork is not None  # noqa: S101  # checked by _attended
        if t_side == "a":  # the transferor called the far end (a consultation call)
            leg = media.detach("callee")
            timer = m.call_timers.drop(call2, "b")
            update = call2.allows_update.get("b", False)
            call2.forks.remove(fork)
            call2.answered = None
            t_dialog = call2.a_dialog
            far = fork
        else:  # the far end called the transferor: its dialog is ours as UAS
            leg = media.detach("caller")
            timer = m.call_timers.drop(call2, "a")
            update = call2.allows_update.get("a", False)
            a_dialog = call2.a_dialog
            assert a_dialog is not None  # noqa: S101  # an answered call has it
            target = Target(a_dialog.remote_target, call2.a_source, call2.caller, "", "")
            far = Fork(call2, target, a_dialog, call2.a_req, final=200)
            for waiting in call2.awaiting_ack.values():
                if waiting.timer is not None:
                    waiting.timer.cancel()
            call2.awaiting_ack.clear()
            call2.a_dialog = None
            t_dialog = fork.dialog
        far.final = far.final or 200
        call2.media = None
        if t_dialog is not None:
            m._bye(t_dialog)
        return leg, far, timer, update

    def _recall(self, call: Call, by: str) -> None:
        """A blind transfer failed: ring the extension that transferred (once)."""
        if self.reroute is None:
            return

        def done(status: int) -> None:
            if status != 200 and call.state is State.ANSWERED:
                self.manager.hangup(call, f"transfer and recall failed: {status}")

        if self.start_replacement(call, "recall", done) is None:
            self.reroute(call, by, by)
        else:
            self.manager.hangup(call, "transfer failed, no recall")

    def _notify(self, dialog: Dialog, event: str, status: int, *, final: bool) -> None:
        """Progress of a REFER, as message/sipfrag (RFC 3515 §2.4.5)."""
        frag = f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}\r\n".encode()
        notify = dialog.request("NOTIFY", frag, "message/sipfrag;version=2.0")
        notify.headers.add("Event", event)
        state = "terminated;reason=noresource" if final else "active;expires=60"
        notify.headers.add("Subscription-State", state)
        self.manager.send_in_dialog(dialog, notify, lambda _r: None)
