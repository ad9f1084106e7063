"""Calls the PBX places itself (`Context.originate`, features/api.py): a camp-on's
callback, a broadcast's delivery. Every other call starts with a phone's INVITE;
these start with ours.

Theory of operation. An originated call is a `Call` whose side "a" is not there
yet: it has a stand-in INVITE that is never sent or answered (`a_final_sent` from
the start, so nothing is ever said to an "a" side and pickup never sees it ringing)
and rings one extension's registered contacts as usual forks (ring timeout, CANCEL,
busy, 408), each with a media leg and offer of its own (`MediaEngine.offer_leg`,
from a G.711 template: there is no caller's offer to copy), as a page's forks have;
the auto-answer headers (routing.AUTO_ANSWER) when asked. The first fork that
answers is ACKed, the others CANCELled, and its dialog becomes side "a" (as a
transfer's `_promote` does): its leg is the call's endpoint, so from then on the
call is exactly an application's call (`answer_locally`), and `Session.bridge`, the
in-dialog requests, hold, session timers and the hang-up work unchanged. The
extension is the call's caller (its call class applies to a bridge). The features'
`before_ring` (do not disturb, call waiting, forwards) is not asked: the originator
decides whom it rings; a bridge's far end is routed as any call (its features apply).

Then either an application runs on that leg, or the leg is bridged to a number
(`Router.reroute` with the given call class, or the extension's own): the phone
hears ringback until the far end answers; a failed bridge hangs up.

The originator hears the outcome once (`on_done`): 200 when the extension answered
(an application) or when the bridge was answered, else the status (486 busy, 480 or
408 not answered, 487 cancelled, 488 unusable answer, the bridge's status). Every
failure path ends in `CallManager._end` / `_release`, which close the forks' own
legs (`CallConfirm.ended`) and this module's `ended`, so no leg, port, timer or
call is left behind. The CDR row is the call's: caller the extension, callee the
originator's name (`campon:102`, `broadcast:700`), cause prefixed `originated:`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pbx_core.features.api import Originate
from pbx_core.media.errors import MediaError
from pbx_core.pbx.call_state import Call, Fork, State, Target, allows_update, name_addr, tag
from pbx_core.pbx.routing import AUTO_ANSWER
from pbx_core.sip.events import ServerKey
from pbx_core.sip.message import Request, Response, parse_message

if TYPE_CHECKING:
    from pbx_core.media.leg import MediaLeg
    from pbx_core.pbx.calls import CallManager
    from pbx_core.pbx.engine import Engine

log = logging.getLogger("pbx.calls")

MAX_ORIGINATED = 32  # calls the PBX places at once (features bound their own too)
MAX_RING = 300.0  # seconds an originated call may ring at most
MIN_RING = 1.0
MAX_NAME = 48  # characters of an originated call's name
MAX_NUMBER = 32  # characters of a number to bridge to
# The offer an originated fork's leg is made from: what a G.711 phone would offer.
TEMPLATE = (
    b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


@dataclass
class Origin:
    """What an originated call is for: the application or number to run on answer,
    and whom to tell the outcome."""

    name: str
    on_answer: Callable[[Call, MediaLeg], None]
    on_done: Callable[[int], None] | None
    told: bool = False

    def tell(self, status: int) -> None:
        if self.told:
            return
        self.told = True
        if self.on_done is not None:
            try:
                self.on_done(status)
            except Exception:
                log.exception("originated call %s: its outcome hook failed", self.name)


def _stand_in(call_id: str, user: str, domain: str) -> Request:
    """The INVITE an originated call pretends its side "a" sent: never sent nor
    answered; the forks copy its offer and Max-Forwards."""
    text = (
        f"INVITE sip:{user}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKorig{call_id}\r\n"
        f"From: <sip:pbx@{domain}>;tag={tag()}\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: {call_id}@originate\r\n"
        "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(TEMPLATE)}\r\n\r\n"
    ).encode() + TEMPLATE
    msg = parse_message(text)
    assert isinstance(msg, Request)  # noqa: S101  # built right above
    return msg


class CallOriginate:
    """Originated calls, for one CallManager (the SIP and media side)."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def count(self) -> int:
        return sum(1 for c in self.manager.calls.values() if c.origin is not None)

    def start(
        self, label: str, domain: str, targets: list[Target], ring_timeout: float, origin: Origin
    ) -> Call | None:
        """Ring `targets` (the contacts of extension `label`) for `origin`; None
        when nothing rings (the call is already over and `origin` was told)."""
        m = self.manager
        call_id = tag()
        user = label.partition("@")[0]
        req = _stand_in(call_id, user, domain)
        key = ServerKey(f"z9hG4bKorig{call_id}", "originate", "INVITE")
        call = Call(
            id=call_id,
            a_req=req,
            a_key=key,
            a_source=targets[0].dest,
            a_tag=tag(),
            caller=label,
            callee=origin.name,
            started=m.loop.time(),
            a_final_sent=True,  # nobody to answer on side "a"
            origin=origin,
        )
        m.calls[call.id] = call
        with m.guard(call, "originate"):
            for target in targets:
                m._fork(call, target, b"")
            if not any(f.final is None for f in call.forks):
                m.fail_a(call, 480, "no reachable contact")
            else:
                call.ring_timer = m.loop.call_later(ring_timeout, m._ring_timeout, call)
        return call if call.state is not State.ENDED else None

    def offer(self, call: Call, target: Target) -> tuple[MediaLeg, bytes]:
        """A leg and our offer of its own for one fork (MediaError when none)."""
        m = self.manager
        if m.media is None:
            raise MediaError("no media engine", 500)
        address, peer = m.call_media.facing(target.dest)
        leg, body = m.media.offer_leg(call.a_req.body, "caller", address)
        leg.nat_peer = peer
        return leg, body

    def answered(self, fork: Fork, resp: Response) -> None:
        """A fork answered: its dialog becomes side "a", its leg the endpoint."""
        m = self.manager
        call = fork.call
        m._ack(fork, b"", None)
        leg = fork.leg
        origin = call.origin
        if (
            call.state not in (State.ROUTING, State.RINGING)
            or leg is None
            or m.media is None
            or not isinstance(origin, Origin)
        ):
            m._bye(fork.dialog)
            fork.final = 200
            return
        try:
            m.media.answer_endpoint(leg, resp.body)
        except MediaError as exc:
            log.info("call %s: %s answered unusably: %s", call.id, fork.target.label, exc.reason)
            m._bye(fork.dialog)
            fork.final = 488
            leg.close()
            fork.leg = None
            if all(f.final is not None for f in call.forks if f.step == call.step):
                m._unanswered(call, 488, "no usable answer")
            return
        m.stop_ringing(call, keep=fork)
        fork.final = 200  # settled: never CANCELled, its transaction forgotten at the end
        fork.leg = None  # the call's endpoint now
        call.a_dialog = fork.dialog
        call.a_tag = fork.dialog.local_tag
        call.a_source = fork.target.dest
        m.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "a")
        call.allows_update = {"a": allows_update(resp)}
        m.call_timers.restart_uac(call, "b", resp)
        m.call_timers.restart(call, "a", m.call_timers.drop(call, "b"))
        call.state = State.ANSWERED
        call.answered_at = m.loop.time()
        m.ops._endpoint(call, leg)
        log.info("call %s: %s answered the PBX's call (%s)", call.id, call.caller, origin.name)
        origin.on_answer(call, leg)

    def ended(self, call: Call) -> None:
        """The call ended: its originator hears how, if it has not yet; the CDR's
        cause says the PBX placed it."""
        origin = call.origin
        if not isinstance(origin, Origin):
            return
        if not call.cause.startswith("originated"):
            call.cause = f"originated: {call.cause}"
        if call.answered_at is None:
            first = call.cause.removeprefix("originated: ").split(" ", 1)[0]
            origin.tell(int(first) if first.isdigit() else 487)
        else:
            origin.tell(200)


class Originator:
    """The engine's side: an `Originate` from a feature becomes an originated call
    (targets from the registrar, the application run by the feature host, a bridge
    routed by the router)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, req: Originate, feature: str) -> int:
        """100 when it rings (`on_done` follows once), else the status at once."""
        eng = self.engine
        m = eng.calls
        name = req.name[:MAX_NAME] or feature
        user = eng.snap.user(req.extension, eng.domain)
        if user is None:
            return 404
        if not user.settings.enabled:
            return 480
        if (req.app is None) == (not req.number) or len(req.number) > MAX_NUMBER:
            return 400  # exactly one of an application and a number
        if eng.media is None:
            return 500
        if m.originate.count() >= MAX_ORIGINATED:
            return 503
        bindings = eng.registrar.lookup(user.aor, eng.loop.time())
        if not bindings:
            return 480
        shown = (req.caller_id or "pbx")[:MAX_NUMBER]
        from_value = name_addr(req.caller_name[:MAX_NAME] or None, f"sip:{shown}@{eng.domain}")
        to_value = name_addr(None, f"sip:{user.username}@{eng.domain}")
        extra = list(AUTO_ANSWER) if req.auto_answer else []
        targets = [
            Target(b.uri, b.dest, user.aor, from_value, to_value, list(extra)) for b in bindings
        ]
        origin = Origin(name, lambda call, leg: None, req.on_done)
        if req.app is not None:
            origin.on_answer = self._app(req, name, feature, origin)
        else:
            origin.on_answer = self._bridge(req, origin)
        ring = min(MAX_RING, max(MIN_RING, float(req.ring_timeout)))
        call = m.originate.start(user.aor, eng.domain, targets, ring, origin)
        if call is None:
            return 100  # it failed at once; the originator was told
        log.info("call %s: the PBX rings %s (%s)", call.id, user.aor, name)
        return 100

    def _app(
        self, req: Originate, name: str, feature: str, origin: Origin
    ) -> Callable[[Call, MediaLeg], None]:
        eng = self.engine
        app = req.app
        assert app is not None  # noqa: S101  # checked by the caller

        def answered(call: Call, leg: MediaLeg) -> None:
            origin.tell(200)
            eng.features.run_app(
                call.id,
                app,
                name,
                leg,
                lambda: eng.calls.hangup(call, f"{name} ended"),
                lambda: call.state is State.ENDED,
                lambda number, klass: eng.router.bridge(call, number, klass),
                feature,
            )

        return answered

    def _bridge(self, req: Originate, origin: Origin) -> Callable[[Call, MediaLeg], None]:
        eng = self.engine

        def answered(call: Call, _leg: MediaLeg) -> None:
            origin.told = True  # from now on the outcome is the bridge's (`done`)

            def done(status: int) -> None:
                origin.told = False
                origin.tell(status)
                if status != 200 and call.state is not State.ENDED:
                    eng.calls.hangup(call, f"bridge to {req.number} failed: {status}")

            refused = eng.calls.ops.start_replacement(call, "bridge", done)
            if refused is not None:
                done(500)
                return
            by = None if req.call_class is not None else eng.router.extension_of(call.caller)
            eng.router.reroute(call, req.number, by, req.call_class)

        return answered
