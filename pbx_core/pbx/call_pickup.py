"""A new phone takes a call's far end: call pickup (a ringing call answered from
another phone: `*8`, `**` + extension), a parked call retrieved (an application
holding the caller lets go), and INVITE with Replaces (RFC 3891: a BLF key picking
up a ringing call, a phone pulling its own answered call to another device).

Theory of operation. The new phone's INVITE (its offer) never becomes a call of its
own: it gets a media endpoint (`MediaEngine.endpoint`, our answer in its 200) and a
UAS dialog that joins the call as side "b" (a settled `Fork`, as a far end moved by
an attended transfer). For a ringing call, the caller gets the 200 it waited for
(the answer it already had in its early media, or the engine's), the forks are
CANCELled, and the caller's media leg is relayed to the new phone's
(`MediaEngine.join`). For an answered call, the leg that is replaced is released
(BYE) and the other side's media leg is relayed to the new phone's.

Who may: a ringing call, any of our extensions (the pickup feature narrows `*8` to
the pickup group); an answered leg, only the extension that leg belongs to (a call
moves between one's own phones, never to somebody else's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.media.errors import MediaError
from pbx_core.pbx.call_state import Call, Fork, State, Target, tag
from pbx_core.pbx.dialog import Dialog
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.media.leg import MediaLeg
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

MAX_REPLACES = 512  # characters of a Replaces header we look at


class CallPickup:
    """Pickup and Replaces for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def ringing(self) -> list[tuple[Call, str]]:
        """Calls ringing one of our extensions now, oldest first, with the label (AOR)
        of each extension rung."""
        out: list[tuple[Call, str]] = []
        for call in sorted(self.manager.calls.values(), key=lambda c: c.started):
            if call.state not in (State.ROUTING, State.RINGING) or call.a_final_sent:
                continue
            out.extend(
                (call, fork.target.label)
                for fork in call.forks
                if fork.final is None and not fork.cancelled and fork.step == call.step
            )
        return out

    # ------------------------------------------------------------ INVITE with Replaces
    def replaces(self, req: Request, key: AnyServerKey, source: Address, label: str) -> None:
        """An INVITE with Replaces from extension `label` (authenticated): the named
        dialog's leg is taken (RFC 3891 §3: 481 when there is none, 486 for
        early-only on an answered dialog, 403 when it is not the caller's to take)."""
        m = self.manager
        values = req.headers.getall("replaces")
        found = self.manager.ops._replaced_dialog(values[0]) if len(values) == 1 else None
        if len(values) != 1:
            m.stack.respond(key, req.reply(400, "Exactly one Replaces", to_tag=tag()))
            return
        if found is None:
            m.stack.respond(key, req.reply(481, to_tag=tag()))
            return
        call, side = found
        early_only = "early-only" in values[0][:MAX_REPLACES].lower()
        if call.state is State.ANSWERED and early_only:
            m.stack.respond(key, req.reply(486, to_tag=tag()))
            return
        if call.state in (State.ROUTING, State.RINGING) and side == "b":
            status = self.take(call, req, key, source, label)
        elif call.state is State.ANSWERED and call.replacing is None:
            fork = call.answered
            owner = call.caller if side == "a" else (fork.target.label if fork else "")
            if owner != label:
                log.info("call %s: %s may not take %s's leg", call.id, label, owner)
                status = 403
            else:
                status = self.take(call, req, key, source, label, replaced=side)
        else:
            status = 481
        if status is not None:
            m.stack.respond(key, req.reply(status, to_tag=tag()))

    # ------------------------------------------------------------ taking a call
    def take(
        self,
        call: Call,
        req: Request,
        key: AnyServerKey,
        source: Address,
        label: str,
        replaced: str | None = None,
    ) -> int | None:
        """The phone at `source` (extension `label`) whose INVITE is `req` takes
        `call`: a ringing call, or the answered leg `replaced`. None when done (the
        phone has our 200), else the status for its INVITE."""
        m = self.manager
        engine = m.media
        parked = call.state is State.ANSWERED and call.endpoint is not None
        if not req.body:
            return 488
        if engine is None or (call.media is None and not parked) or call.late_offer:
            return 480  # the PBX must hold the media to join it
        if (
            replaced is None
            and not parked
            and (call.state not in (State.ROUTING, State.RINGING) or call.a_final_sent)
        ):
            return 481
        try:
            leg, body = engine.endpoint(req.body, "callee", *m.call_media.facing(source))
        except MediaError as exc:
            return exc.status
        with m.guard(call, "pickup"):
            self._take(call, req, key, source, label, replaced, leg, body)
        return None

    def _take(
        self,
        call: Call,
        req: Request,
        key: AnyServerKey,
        source: Address,
        label: str,
        replaced: str | None,
        leg: MediaLeg,
        body: bytes,
    ) -> None:
        m = self.manager
        engine = m.media
        media = call.media
        assert engine is not None  # noqa: S101  # checked by take
        a_body = b""
        parked = call.state is State.ANSWERED and call.endpoint is not None
        if parked:  # an application holds the caller (a parked call): it lets go
            staying = call.endpoint
            assert staying is not None  # noqa: S101  # just checked
            call.endpoint = None
            m.app_taken(call.id)
            staying.unbind()
        elif media is None:
            raise MediaError("nothing to join", 480)
        elif replaced is None:  # a ringing call: the caller's answer, the forks cancelled
            try:
                a_body = media.early_answer()
            except MediaError:
                leg.close()
                raise
            m.stop_ringing(call)
            call.ringback = False
            staying = media.detach("caller")
        elif replaced == "a":
            staying = m.ops._promote(call)
        else:
            staying = media.detach("caller")
            m.ops._drop_b(call)
        gone = call.transferor
        if gone is not None:  # the replaced leg (RFC 3891 §3: the UA that is replaced gets BYE)
            m._bye(gone)
            call.transferor = None
            m.dialogs.pop((gone.call_id, gone.local_tag), None)
        staying.side, leg.side = "caller", "callee"
        call.media = engine.join(staying, leg)
        m.call_media.adopt(call, call.media)
        dialog = Dialog.as_uas(req, tag(), source, m.contact(source))
        far = Fork(
            call, Target(dialog.remote_target, source, label, "", ""), dialog, req, final=200
        )
        far.step = call.step
        call.forks.append(far)
        call.answered = far
        call.callee = label
        m.dialogs[(dialog.call_id, dialog.local_tag)] = (call, "b")
        resp = req.reply(200, to_tag=dialog.local_tag)
        resp.headers.add("Contact", m.contact(source))
        resp.body = body
        resp.headers.add("Content-Type", "application/sdp")
        m.call_acks.send_2xx(call, "b", key, resp, source)
        m.call_timers.restart(call, "b", None)
        if replaced is None and not parked:
            m.answer_a(call, a_body)
        m.call_media.answered(call)
        log.info("call %s: %s takes it%s", call.id, label, " (pickup)" if replaced is None else "")
