"""The B2BUA: every call is two legs the PBX controls (RFC 3261 §12 to §15, RFC 6026).

Theory of operation. A new INVITE becomes a `Call` (call_state.py): its A leg is the
caller's INVITE server transaction (we are UAS), and routing gives one or more
`Fork`s, each an INVITE client transaction we send (we are UAC) to a registered
contact or a trunk. Provisional responses are relayed to A with our own To tag; the
first 2xx wins, the other forks are CANCELled; that fork's dialog becomes the B side.
A BYE from either side ends both. Other requests inside the call (re-INVITE, UPDATE,
INFO …) arriving on one side are re-issued on the other side's dialog and their
answers relayed back (call_relay.py), except those the PBX answers on their leg
itself: offers on anchored media, re-INVITEs without SDP on anchored media (the
engine offers, the ACK answers) and key presses in INFO (call_media.py, which also
holds how media is anchored, delayed offers and direct media) and body-less UPDATEs,
which only refresh a session timer (call_timers.py, RFC 4028 on each leg).

We ACK B's 2xx at once when the offer was in the INVITE; with a delayed offer we wait
for A's ACK, which carries the answer to the offer B made. Every 2xx we send to an
INVITE (A's, or a re-INVITE from either side) is retransmitted until its ACK arrives
(§13.3.1.4, call_acks.py); without one the call is torn down.

This module is the orchestrator: it owns the calls, their dialogs and transactions,
and calls on `CallMedia`, `CallTimers`, `CallRelay` and `CallAcks` for the rest.

Every step of a call's set-up (the INVITE, each answer from a fork, A's ACK) runs
inside `guard`: whatever it raises, the call ends with a final response to A (the
error's status for a MediaError, else 500) or BYEs once answered, its forks are
CANCELled and its media legs closed, so no call is left in "routing" and no RTP port
is left taken (`abort`). One warning line says what failed; the traceback is logged
at debug level.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping

from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_acks import CallAcks
from pbx_core.pbx.call_barge import CallBarge
from pbx_core.pbx.call_confirm import CallConfirm
from pbx_core.pbx.call_keys import CallKeys
from pbx_core.pbx.call_media import DEFAULT_LAN, CallMedia
from pbx_core.pbx.call_ops import CallOps
from pbx_core.pbx.call_originate import CallOriginate
from pbx_core.pbx.call_page import CallPage
from pbx_core.pbx.call_pickup import CallPickup
from pbx_core.pbx.call_relay import CallRelay
from pbx_core.pbx.call_requests import CallRequests
from pbx_core.pbx.call_retry import CallRetries
from pbx_core.pbx.call_state import (
    Call,
    Fork,
    State,
    Target,
    allows_update,
    best_status,
    disposition,
    media_status,
    name_addr,
    tag,
)
from pbx_core.pbx.call_timers import CallTimers
from pbx_core.pbx.dialog import Dialog
from pbx_core.pbx.nat import NatPolicy
from pbx_core.pbx.session_timer import TimerConfig
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.events import AnyServerKey, ClientKey
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import cancel_for
from pbx_core.store.settings import Network, parse_networks
from pbx_core.transport.manager import Address

__all__ = ["Call", "CallManager", "State", "Target", "name_addr"]

log = logging.getLogger("pbx.calls")


class CallManager:
    """Every call of the PBX (see the module docstring)."""

    def __init__(
        self,
        stack: SipServer,
        on_end: Callable[[Call], None] | None = None,
        media: MediaEngine | None = None,
        rtp_timeout: float = 60.0,
    ) -> None:
        self.stack = stack
        self.media = media
        self.rtp_timeout = rtp_timeout
        self.direct_media = False
        self.lan: tuple[Network, ...] = parse_networks(DEFAULT_LAN)
        self.nat = NatPolicy()  # SDP addresses per leg (set by the engine, nat.py)
        # Music on hold for anchored calls (set by the engine when the file exists).
        self.music_on_hold: object | None = None
        self.loop = stack.loop
        self.on_end = on_end
        # Asked when nobody of a ring step answered: (call, status, why) -> True when
        # it rang on (ring_more) or otherwise answered the caller (the engine's plan).
        self.unanswered: Callable[[Call, int, str], bool] | None = None
        self.calls: dict[str, Call] = {}
        # (Call-ID, our tag) -> (call, side) for requests inside a call
        self.dialogs: dict[tuple[str, str], tuple[Call, str]] = {}
        self.by_key: dict[AnyServerKey, Call] = {}
        self.call_media = CallMedia(self)
        self.call_timers = CallTimers(self)
        self.call_relay = CallRelay(self)
        self.requests = CallRequests(self)  # in-dialog requests, the caller's ACK
        self.call_acks = CallAcks(self)
        self.ops = CallOps(self)
        self.keys = CallKeys(self)
        self.pickup = CallPickup(self)
        self.confirm = CallConfirm(self)
        self.barge = CallBarge(self)
        self.paging = CallPage(self)
        self.originate = CallOriginate(self)  # calls the PBX places (call_originate.py)
        self.retries = CallRetries(self)
        # Set by the engine: an application's call was taken from it (a parked call
        # picked up): its application stops.
        self.app_taken: Callable[[str], None] = lambda _call_id: None
        # Set by the engine: a callee's response or a new INVITE may change a busy
        # lamp (presence.py coalesces these pokes).
        self.changed: Callable[[], None] = lambda: None

    def configure(self, settings: Mapping[str, object]) -> None:
        """The settings calls follow (pbx_settings); a bad value is logged and the
        one in force kept. New values apply to new calls."""
        self.rtp_timeout = float(str(settings.get("rtp_timeout", 60)))
        self.direct_media = str(settings.get("direct_media", "no")).lower() == "yes"
        try:
            self.lan = parse_networks(str(settings.get("lan_networks", DEFAULT_LAN)))
        except ValueError as exc:
            log.error("lan_networks rejected, keeping the old ones: %s", exc)  # noqa: TRY400  # one line says it
        try:
            self.call_timers.config = TimerConfig(
                int(str(settings.get("session_expires", 1800))),
                int(str(settings.get("session_min_se", 90))),
            )
        except ValueError as exc:
            log.error("session timer settings rejected, keeping the old ones: %s", exc)  # noqa: TRY400  # one line says it

    # ------------------------------------------------------------------ set-up
    def contact(self, dest: Address) -> str:
        host, port = self.stack.local_address(dest)
        host = f"[{host}]" if ":" in host else host
        transport = "" if dest[0] == "UDP" else f";transport={dest[0].lower()}"
        return f"<sip:pbx@{host}:{port}{transport}>"

    def start(
        self,
        req: Request,
        key: AnyServerKey,
        source: Address,
        caller: str,
        callee: str,
        targets: list[Target],
        ring_timeout: float,
        direct_media: bool = False,
        routing: object = None,
    ) -> Call:
        """Ring `targets` for `req`. `direct_media`: the caller and every target are
        extensions (no trunk), so the call may keep its media off the PBX when the
        setting allows it and everybody is on the LAN. `routing`: the engine's plan
        for the call, asked (`unanswered`) when nobody answers."""
        call = Call(
            id=tag(),
            a_req=req,
            a_key=key,
            a_source=source,
            a_tag=tag(),
            caller=caller,
            callee=callee,
            started=self.loop.time(),
            routing=routing,
        )
        self.calls[call.id] = call
        self.by_key[key] = call
        with self.guard(call, "set-up"):
            self._start(call, req, targets, ring_timeout, direct_media)
        return call

    def _start(
        self,
        call: Call,
        req: Request,
        targets: list[Target],
        ring_timeout: float,
        direct_media: bool,
    ) -> None:
        if not self.call_timers.negotiate_a(call):
            return
        offer = req.body
        call.direct = direct_media and self.call_media.direct_ok(call, targets)
        if self.media is not None and not call.direct:
            if req.body:
                try:
                    offer = self.call_media.anchor(call, req.body)
                except MediaError as exc:
                    self.fail_a(call, exc.status, exc.reason)
                    return
            else:
                call.late_offer = True
        call.b_offer = offer or b""
        for target in targets:
            self._fork(call, target, offer)
        if not call.forks:
            self._unanswered(call, 480, "no reachable contact")
            return
        call.ring_timer = self.loop.call_later(ring_timeout, self._ring_timeout, call)

    def ring_more(self, call: Call, targets: list[Target], ring_timeout: float) -> bool:
        """Ring `targets` next on the same call (a ring group's next step, a forward
        on busy or no answer): a new step whose forks get the offer the first ones got;
        forks of earlier steps that still ring are cancelled (one of them answering
        first still wins). False when not one fork could be started."""
        if call.replacing is None and (
            call.state not in (State.ROUTING, State.RINGING) or call.a_final_sent
        ):
            return False
        if call.state is State.ENDED:
            return False
        self._cancel_timer(call, "ring_timer")
        for fork in call.forks:
            if fork.final is None and fork is not call.answered:
                self._cancel_fork(fork)
        call.step += 1
        if call.direct and not self.call_media.direct_ok(call, targets):
            # The new targets cannot take the caller's SDP end to end (a trunk, a
            # phone off the LAN): anchor now, before anyone has answered.
            call.direct = False
            if self.media is not None and call.a_req.body:
                call.b_offer = self.call_media.anchor(call, call.a_req.body)
        before = len(call.forks)
        for target in targets:
            self._fork(call, target, call.b_offer)
        if not any(f.final is None for f in call.forks[before:]):
            return False
        call.ring_timer = self.loop.call_later(ring_timeout, self._ring_timeout, call)
        return True

    def _unanswered(self, call: Call, status: int, why: str) -> None:
        """Nobody of the current step answered: the engine may ring on (hunting,
        forwarding); otherwise the caller gets `status`."""
        hook = self.unanswered
        if (
            hook is not None
            and (call.state in (State.ROUTING, State.RINGING) or call.replacing is not None)
            and call.state is not State.ENDED
            and hook(call, status, why)
        ):
            return
        if call.state is not State.ENDED:
            self.fail_a(call, status, why)

    def answer_locally(
        self,
        req: Request,
        key: AnyServerKey,
        source: Address,
        caller: str,
        callee: str,
        on_answer: Callable[[Call, MediaLeg], None],
    ) -> Call | None:
        """Answer the call in the PBX itself (a feature's application: echo test,
        toggles, later IVR and voicemail): a media endpoint, 200 with its SDP, then
        `on_answer(call, leg)`."""
        if self.media is None or not req.body:
            self.stack.respond(key, req.reply(488, to_tag=tag()))
            return None
        try:
            leg, body = self.media.endpoint(req.body, callee, *self.call_media.facing(source))
        except MediaError as exc:
            self.stack.respond(key, req.reply(exc.status, to_tag=tag()))
            return None
        now = self.loop.time()
        call = Call(tag(), req, key, source, tag(), caller, callee, now, endpoint=leg)
        self.calls[call.id] = call
        self.by_key[key] = call
        with self.guard(call, "local answer"):
            self._answer_locally(call, leg, body, on_answer)
        return call if call.state is not State.ENDED else None

    def _answer_locally(
        self,
        call: Call,
        leg: MediaLeg,
        body: bytes,
        on_answer: Callable[[Call, MediaLeg], None],
    ) -> None:
        now = call.started
        if not self.call_timers.negotiate_a(call):
            return
        self.answer_a(call, body, at=now)
        leg.on_inactivity(self.rtp_timeout, lambda _leg: self.hangup(call, "RTP timeout"))
        on_answer(call, leg)

    def answer_a(
        self,
        call: Call,
        body: bytes,
        content_type: str = "application/sdp",
        *,
        at: float | None = None,
    ) -> None:
        """Answer the caller: a 200 with `body` (the SDP it gets; none when empty),
        retransmitted until its ACK; the call is ANSWERED since `at` (default now)."""
        out = self._a_reply(call, 200, "OK")
        if body:
            out.body = body
            out.headers.add("Content-Type", content_type)
        self._send_a_2xx(call, out)
        call.state = State.ANSWERED
        call.answered_at = self.loop.time() if at is None else at

    # ------------------------------------------------------------ failures
    @contextlib.contextmanager
    def guard(self, call: Call, step: str) -> Iterator[None]:
        """Run one step of `call`; whatever it raises ends the call (`abort`)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001  # any failure ends the call, see abort
            self.abort(call, step, exc)

    def abort(self, call: Call, step: str, exc: BaseException) -> None:
        """A step of `call` failed unexpectedly: A gets a final response (the
        MediaError's status, else 500) or, once answered, both sides get BYE; ringing
        forks are CANCELled; the media legs close and the call is forgotten."""
        status = exc.status if isinstance(exc, MediaError) else 500
        why = f"{step} failed: {type(exc).__name__}: {exc}"
        log.warning("call %s: %s", call.id, why[:200].replace("\n", " "))
        log.debug("call %s: %s", call.id, step, exc_info=exc)
        try:
            for fork in call.forks:
                if fork is not call.answered and fork.final is None:
                    self._cancel_fork(fork)
            answered = call.answered
            if call.state is not State.ENDED:
                if answered is not None and answered.ack is None:
                    call.ack_to_b_pending = False
                    self._ack(answered, b"", None)  # B's 2xx is ACKed before its BYE
                if call.a_final_sent:
                    self.hangup(call, why)  # BYE to both
                else:
                    if answered is not None:
                        self._bye(answered.dialog)
                    self.fail_a(call, status, why)
        except Exception as again:  # noqa: BLE001  # last resort below, one line
            log.warning("call %s: ending it failed too: %s", call.id, again)
            if not call.a_final_sent:
                call.a_final_sent = True
                with contextlib.suppress(Exception):
                    self.stack.respond(call.a_key, call.a_req.reply(500, to_tag=call.a_tag))
        finally:
            self._release(call)

    def _release(self, call: Call) -> None:
        """What `_end` frees, whatever happened before: the call's media legs, timers
        and its place in the tables (idempotent)."""
        call.state = State.ENDED
        self._cancel_timer(call, "ring_timer")
        for closer in (
            lambda: self.call_timers.stop(call),
            lambda: self.call_acks.stop(call),
            call.media.close if call.media is not None else None,
            call.endpoint.close if call.endpoint is not None else None,
            lambda: self.paging.ended(call),
            lambda: self.confirm.ended(call),
            lambda: self.barge.ended(call),
            lambda: self.originate.ended(call),
        ):
            if closer is not None:
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001  # keep freeing the rest
                    log.warning("call %s: freeing it: %s", call.id, exc)
        if self.calls.get(call.id) is call:
            del self.calls[call.id]
        if self.by_key.get(call.a_key) is call:
            del self.by_key[call.a_key]

    def _fork(self, call: Call, target: Target, offer: bytes) -> None:
        a = call.a_req
        max_forwards = a.max_forwards
        dialog = Dialog(
            call_id=f"{tag()}{tag()}@pbx",
            local_tag=tag(),
            remote_tag=None,
            local_uri=target.from_value,
            remote_uri=target.to_value,
            remote_target=target.uri,
            peer=target.dest,
            local_cseq=1,
            contact=self.contact(target.dest),
        )
        own = (
            self.originate.offer(call, target)
            if call.origin is not None and call.replacing is None  # not its bridge's
            else self.confirm.offer(call, offer, target.dest[1])
            if target.confirm or call.page is not None
            else None
        )
        offer = self.call_media.offer_for(call, target, offer) if own is None else own[1]
        ctype = (a.headers.get("content-type") or "application/sdp") if offer else None
        invite = dialog.request("INVITE", offer, ctype)
        invite.headers.set("CSeq", "1 INVITE")
        dialog.local_cseq = 1
        invite.headers.set("Max-Forwards", str(max(0, (max_forwards or 70) - 1)))
        invite.headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO")
        for name, value in self.call_timers.invite_headers():
            invite.headers.add(name, value)
        for name, value in target.extra:
            invite.headers.add(name, value)
        fork = Fork(call, target, dialog, invite, step=call.step)
        if own is not None:
            fork.leg = own[0]  # its own media leg (call_confirm.py)
        call.forks.append(fork)
        self.dialogs[(dialog.call_id, dialog.local_tag)] = (call, "b")
        self._send_invite(fork)

    def _send_invite(self, fork: Fork) -> None:
        inv = fork.invite
        inv.headers.insert(0, "Via", str(self.stack.via_for(fork.target.dest)))
        inv.invalidate()
        try:
            fork.key = self.stack.request(
                inv, fork.target.dest, lambda r: self._b_response(fork, r)
            )
        except Exception:
            log.exception("cannot send INVITE to %s", fork.target.label)
            fork.final = 503
        self.changed()

    # ------------------------------------------------------------ B responses
    def _b_response(self, fork: Fork, resp: Response | None) -> None:
        with self.guard(fork.call, "callee's response"):
            self._on_b_response(fork, resp)
        self.changed()

    def _on_b_response(self, fork: Fork, resp: Response | None) -> None:
        call = fork.call
        status = 408 if resp is None else resp.status
        if resp is not None and status == 100:
            return
        if resp is not None and status < 200:
            self._b_provisional(fork, resp)
            return
        if 200 <= status < 300 and resp is not None:
            self._b_answer(fork, resp)
            return
        if status in (401, 407) and resp is not None and self.retries.with_auth(fork, resp):
            return
        if status == 422 and resp is not None and self.call_timers.retry_422(fork, resp):
            return
        fork.final = status
        self._forget_fork(fork)
        if call.state is State.ENDED or call.answered is not None:
            return
        if call.state is State.ANSWERED and call.replacing is None:
            return  # an application answered it: the forks were cancelled
        current = [f for f in call.forks if f.step == call.step]
        if all(f.final is not None for f in current):
            self._unanswered(call, best_status([f.final or 500 for f in current]), "no answer")

    def _b_provisional(self, fork: Fork, resp: Response) -> None:
        call = fork.call
        fork.provisional = True
        fork.dialog.update_from_response(resp)
        if resp.to.tag:
            self.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "b")
        if fork.cancel_pending:
            self._cancel_fork(fork)
            return
        if call.replacing is not None and call.state is State.ANSWERED:
            # A new far end rings (call_ops.py): the staying phone hears our ringback.
            if "100rel" in [v.lower() for v in resp.headers.getall("require")]:
                self._prack(fork, resp)
            return
        if call.state not in (State.ROUTING, State.RINGING):
            return
        call.state = State.RINGING
        if "100rel" in [v.lower() for v in resp.headers.getall("require")]:
            self._prack(fork, resp)
        if call.origin is not None:
            return  # the PBX's own call: no caller to tell
        out = self._a_reply(call, resp.status, resp.reason)
        body = resp.body
        if call.late_offer:
            body = b""  # an offer A could only answer in a PRACK we do not relay
        elif call.media is not None:
            # A 180 keeps its meaning (the phone shows "ringing") and may carry the
            # early media, which is our ringback when the callee sent none (RFC 3960).
            body = self.call_media.early_media(call, resp)
        if body:
            out.body = body
            out.headers.add("Content-Type", resp.headers.get("content-type") or "application/sdp")
        self.stack.respond(call.a_key, out)

    def _prack(self, fork: Fork, resp: Response) -> None:
        rseq = resp.headers.get("rseq")
        if not rseq or not rseq.strip().isdigit():
            return
        prack = fork.dialog.request("PRACK")
        prack.headers.add("RAck", f"{rseq.strip()} {fork.invite.cseq.seq} INVITE")
        self.send_in_dialog(fork.dialog, prack, lambda _r: None)

    def _b_answer(self, fork: Fork, resp: Response) -> None:
        call = fork.call
        fork.dialog.update_from_response(resp)
        self.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "b")
        if fork.ack is not None:
            # A retransmitted 2xx: our ACK was lost.
            self.stack.send(fork.ack, fork.dialog.destination())
            return
        if call.answered is fork and call.state is not State.ENDED:
            return  # retransmitted while our ACK waits for A's (a delayed offer)
        if call.state is State.ENDED or (call.answered is not None and call.answered is not fork):
            # Another fork won, or the caller gave up: ACK and hang up this one.
            self._ack(fork, b"", None)
            self._bye(fork.dialog)
            return
        if call.replacing is not None:
            self.ops.replaced(fork, resp)
            return
        if call.page is not None:
            self.paging.answered(fork, resp)  # one more phone hears the page
            return
        if call.origin is not None:
            self.originate.answered(fork, resp)  # the PBX's own call (call_originate.py)
            return
        if fork.leg is not None and fork.target.confirm:
            self.confirm.answered(fork, resp)  # it must accept first (call_confirm.py)
            return
        call.answered = fork
        call.state = State.ANSWERED
        call.answered_at = self.loop.time()
        self.call_media.answered(call)
        call.allows_update["b"] = allows_update(resp)
        self.call_timers.restart_uac(call, "b", resp)
        self._cancel_timer(call, "ring_timer")
        for other in call.forks:
            if other is not fork and other.final is None:
                self._cancel_fork(other)
        if call.a_req.body:
            self._ack(fork, b"", None)
        else:
            call.ack_to_b_pending = True  # A's ACK carries the answer to B's offer
        try:
            body, reanchor = self.call_media.answer_2xx(call, resp)
        except MediaError as exc:
            # The callee answered with nothing we can use: end both sides.
            log.info("call %s: answer refused: %s", call.id, exc.reason)
            if call.ack_to_b_pending:
                call.ack_to_b_pending = False
                self._ack(fork, b"", None)
            self._bye(fork.dialog)
            self.fail_a(call, exc.status, exc.reason)
            return
        content_type = resp.headers.get("content-type") or "application/sdp"
        self.answer_a(call, body, content_type, at=call.answered_at)
        if fork.target.one_way and call.media is not None:
            call.media.listen_only("callee")  # one-way intercom: the callee only listens
        if reanchor:
            self.call_media.reanchor_callee(call, fork, reanchor)

    def ack_reinvite(self, dialog: Dialog, invite: Request, body: bytes = b"") -> Request:
        """ACK a 2xx to a re-INVITE we sent (with the answer when it offered)."""
        ack = dialog.request("ACK", body, "application/sdp" if body else None)
        ack.headers.set("CSeq", f"{invite.cseq.seq} ACK")
        dest = dialog.destination()
        ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        self.stack.send(ack, dest)
        return ack

    def _ack(self, fork: Fork, body: bytes, ctype: str | None) -> None:
        ack = fork.dialog.request("ACK", body, ctype)
        ack.headers.set("CSeq", f"{fork.invite.cseq.seq} ACK")
        dest = fork.dialog.destination()
        ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        fork.ack = ack
        self.stack.send(ack, dest)

    # ------------------------------------------------------------ A side
    def _a_reply(self, call: Call, status: int, reason: str | None = None) -> Response:
        resp = call.a_req.reply(status, reason, to_tag=call.a_tag)
        if 100 < status < 300:
            resp.headers.add("Contact", self.contact(call.a_source))
            if call.a_dialog is None:
                call.a_dialog = Dialog.as_uas(
                    call.a_req, call.a_tag, call.a_source, self.contact(call.a_source)
                )
                self.dialogs[(call.a_dialog.call_id, call.a_tag)] = (call, "a")
        return resp

    def _send_a_2xx(self, call: Call, resp: Response) -> None:
        """Our 2xx to A's INVITE, until A's ACK (`call_requests.a_acked`)."""
        self.call_timers.start_a(call, resp)
        call.a_final_sent = True
        offer = bool(resp.body) and not call.a_req.body
        self.call_acks.send_2xx(
            call,
            "a",
            call.a_key,
            resp,
            call.a_source,
            offer=offer,
            on_ack=lambda ack: self.requests.a_acked(call, ack),
        )

    def fail_a(
        self, call: Call, status: int, why: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        if call.replacing is not None and call.state is State.ANSWERED:
            self.ops.failed(call, status, why)  # a new far end was not reached
            return
        if not call.a_final_sent:
            call.a_final_sent = True
            resp = self._a_reply(call, status)
            for name, value in headers or ():
                resp.headers.add(name, value)
            self.stack.respond(call.a_key, resp)
        self._end(call, disposition(status), f"{status} {why}")

    def _ring_timeout(self, call: Call) -> None:
        call.ring_timer = None
        if call.state in (State.ROUTING, State.RINGING) or (
            call.replacing is not None and call.state is State.ANSWERED
        ):
            with self.guard(call, "ring timeout"):
                for fork in call.forks:
                    if fork.final is None:
                        self._cancel_fork(fork)
                self._unanswered(call, 480, "ring timeout")

    # ------------------------------------------------------------ cancel / bye
    def _cancel_fork(self, fork: Fork) -> None:
        if fork.cancelled or fork.final is not None or fork.key is None or fork.ack is not None:
            return  # an ACKed fork answered: never CANCEL it (BYE ends it)
        if not fork.provisional:
            fork.cancel_pending = True  # RFC 3261 §9.1: not before a provisional
            return
        fork.cancelled = True
        fork.cancel_pending = False
        cancel = cancel_for(fork.invite)
        try:
            self.stack.request(cancel, fork.target.dest, lambda _r: None)
        except Exception:
            log.exception("CANCEL to %s failed", fork.target.label)

    def stop_ringing(self, call: Call, keep: Fork | None = None) -> None:
        """No more ringing for `call`: its ring timer stops and every fork still
        ringing but `keep` (the one that answered) gets CANCEL."""
        self._cancel_timer(call, "ring_timer")
        for fork in call.forks:
            if fork is not keep and fork.final is None:
                self._cancel_fork(fork)

    def cancel(self, call: Call) -> None:
        """The caller CANCELled (§9.2): 487 to the INVITE, CANCEL every fork."""
        if call.state in (State.ANSWERED, State.ENDED):
            return
        for fork in call.forks:
            self._cancel_fork(fork)
        if not call.a_final_sent:
            call.a_final_sent = True
            self.stack.respond(call.a_key, self._a_reply(call, 487))
        self._end(call, "CANCELLED", "caller cancelled")

    def _bye(self, dialog: Dialog) -> None:
        self.send_in_dialog(dialog, dialog.request("BYE"), lambda _r: None)

    def hangup(self, call: Call, why: str) -> None:
        """End an answered call from our side: BYE to both."""
        if call.state is State.ENDED:
            return
        if call.a_dialog is not None and call.a_final_sent:
            self._bye(call.a_dialog)
        if call.answered is not None:
            self._bye(call.answered.dialog)
        for fork in call.forks:
            if fork.final is None and fork is not call.answered:
                self._cancel_fork(fork)  # a new far end still ringing (call_ops.py)
        self._end(call, "ANSWERED" if call.answered_at else "FAILED", why)

    def send_in_dialog(
        self, dialog: Dialog, req: Request, cb: Callable[[Response | None], None]
    ) -> ClientKey | None:
        dest = dialog.destination()
        req.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        try:
            return self.stack.request(req, dest, cb)
        except Exception:
            log.exception("cannot send %s", req.method)
            return None

    # ------------------------------------------------------------ in-call requests
    def in_dialog(self, req: Request, source: Address, key: AnyServerKey | None) -> bool:
        """Handle a request inside a call; False if it belongs to none (call_requests.py)."""
        return self.requests.in_dialog(req, source, key)

    # ------------------------------------------------------------ end
    def _forget_fork(self, fork: Fork) -> None:
        self.dialogs.pop((fork.dialog.call_id, fork.dialog.local_tag), None)

    def _end(self, call: Call, disposition: str, cause: str) -> None:
        if call.state is State.ENDED:
            return
        call.state = State.ENDED
        call.disposition = disposition
        call.cause = cause
        call.ended_at = self.loop.time()
        self._cancel_timer(call, "ring_timer")
        if call.replacing is not None or call.consult is not None:
            self.ops.ended(call)
        self.paging.ended(call)
        self.confirm.ended(call)
        self.barge.ended(call)
        self.originate.ended(call)
        self.call_timers.stop(call)
        self.call_acks.stop(call)
        if call.media is not None:
            call.media_stats = dict(call.media.stats())
            call.media.close()
        if call.endpoint is not None:
            call.media_stats = {"caller": call.endpoint.stats()}
            call.endpoint.close()
        # The forks' INVITE transactions live on for 2xx retransmissions (RFC 6026)
        # and their callbacks would keep the whole call alive for 32 s: let go of the
        # settled ones (a fork still ringing may yet answer and must get ACK + BYE).
        for fork in call.forks:
            if fork.key is not None and (fork.final is not None or fork is call.answered):
                self.stack.forget(fork.key)
        self.calls.pop(call.id, None)
        self.by_key.pop(call.a_key, None)
        # Keep the dialog entries a little while: late BYEs/ACKs get their answer.
        self.loop.call_later(32.0, self._forget, call)
        if self.on_end is not None:
            try:
                self.on_end(call)
            except Exception:
                log.exception("call-end hook failed")

    def _forget(self, call: Call) -> None:
        for k in [k for k, (c, _s) in self.dialogs.items() if c is call]:
            del self.dialogs[k]

    @staticmethod
    def _cancel_timer(call: Call, name: str) -> None:
        handle = getattr(call, name)
        if handle is not None:
            handle.cancel()
            setattr(call, name, None)

    def status(self) -> list[dict[str, object]]:
        now = self.loop.time()
        return [
            {
                "id": c.id,
                "caller": c.caller,
                "callee": c.callee,
                "state": c.state.value,
                "seconds": round(now - (c.answered_at or c.started)),
                "legs": [f.target.label for f in c.forks],
                "media": media_status(c),
            }
            for c in self.calls.values()
        ]
