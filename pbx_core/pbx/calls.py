"""The B2BUA: every call is two legs the PBX controls (RFC 3261 §12 to §15, RFC 6026).

Theory of operation. A new INVITE becomes a `Call`: its A leg is the caller's INVITE
server transaction (we are UAS), and routing gives one or more `Fork`s, each an
INVITE client transaction we send (we are UAC) to a registered contact or a trunk.
Provisional responses are relayed to A with our own To tag; the first 2xx wins, the
other forks are CANCELled; that fork's dialog becomes the B side. Requests inside
the call (BYE, re-INVITE, UPDATE, INFO …) arriving on one side are re-issued on the
other side's dialog and their answers relayed back.

Media (issue 6). Every call is anchored in the media engine: each phone sees the
PBX's address in the SDP and the engine relays RTP between the legs. With the offer
in A's INVITE, the engine turns it into our offer to B and B's answer into our answer
to A. With a delayed offer (an INVITE without SDP) B's 2xx carries the offer: it is
anchored then, A gets our offer in our 2xx, and A's ACK carries the answer, which we
turn into the answer in our ACK to B (RFC 3261 §13.2.1). A 2xx without an offer or
an ACK without an answer ends the call (B gets its ACK, then BYE). Early media from
B on a delayed offer is not passed on (A could only answer it in a PRACK).

With the `direct_media` setting, a call between two extensions on the LAN keeps its
SDP end to end (RTP goes phone to phone): when the caller's SIP source and SDP
address and every callee's registered source are in `lan_networks`. Should the
callee's answer then carry an address off the LAN, the call is anchored after all:
A gets the engine's answer and B a re-INVITE with the engine's offer (Asterisk's
way back from direct media).

Session timers (RFC 4028, the sans-IO rules in session_timer.py) run on each leg on
its own: negotiated on A's INVITE (422 when too short) and on our INVITE to B,
restarted by every re-INVITE or UPDATE that succeeds on that leg. Where the PBX is
the refresher it sends an UPDATE (or, to a phone that does not allow UPDATE, a
re-INVITE without SDP whose offer the engine answers in the ACK) at half the
interval; where the phone is, a missing refresh ends the call with BYE on both legs.
A body-less UPDATE is a pure refresh and is answered on its leg, not passed across.

We ACK B's 2xx at once when the offer was in the INVITE; with a delayed offer we wait
for A's ACK. Our 2xx to A is retransmitted until A's ACK arrives (§13.3.1.4); without
one the call is torn down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pbx_core.media import negotiation as neg
from pbx_core.media.engine import AnchoredCall, MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.events import LegStats
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.dialog import Dialog
from pbx_core.pbx.session_timer import (
    Accept,
    Action,
    LegTimer,
    Reject,
    SessionTimerError,
    TimerConfig,
    negotiate_uac,
    negotiate_uas,
    retry_interval,
    uac_headers,
)
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.errors import ParseError
from pbx_core.sip.events import AnyServerKey, ClientKey
from pbx_core.sip.headers import NameAddr
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import cancel_for
from pbx_core.sip.uri import URI, parse_uri
from pbx_core.transport.manager import Address

log = logging.getLogger("pbx.calls")

T1, T2 = 0.5, 4.0
DEFAULT_LAN = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,fc00::/7,::1/128"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`lan_networks`: comma-separated CIDRs (a bare address is a /32 or /128).
    ValueError names the first bad one."""
    out: list[Network] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 192.168.1.0/24)") from None
    return tuple(out)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name: we cannot tell where it is
    return any(ip in net for net in networks)


def sdp_address(body: bytes) -> str | None:
    """The connection address of an SDP's audio stream, None when it has none."""
    try:
        return neg.stream_of(neg.parse_offer(body)).address
    except MediaError:
        return None


class State(Enum):
    ROUTING = "routing"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass
class Target:
    """One place to send the B-leg INVITE."""

    uri: URI
    dest: Address
    label: str  # extension AOR or trunk name, for status and CDR
    from_value: str  # From (name-addr, no tag) the callee sees
    to_value: str
    extra: list[tuple[str, str]] = field(default_factory=list)
    # For trunks that challenge us: (username, password)
    credentials: tuple[str, str] | None = None


@dataclass
class Fork:
    call: Call
    target: Target
    dialog: Dialog
    invite: Request
    key: ClientKey | None = None
    provisional: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    final: int | None = None
    ack: Request | None = None
    auth_tries: int = 0
    timer_retried: bool = False  # a 422 is retried once with its Min-SE (RFC 4028 §7.3)


@dataclass
class Call:
    id: str
    a_req: Request
    a_key: AnyServerKey
    a_source: Address
    a_tag: str
    caller: str
    callee: str
    started: float
    state: State = State.ROUTING
    forks: list[Fork] = field(default_factory=list)
    answered: Fork | None = None
    a_dialog: Dialog | None = None
    a_final_sent: bool = False
    a_2xx: Response | None = None
    a_2xx_timer: asyncio.TimerHandle | None = None
    ring_timer: asyncio.TimerHandle | None = None
    ack_to_b_pending: bool = False  # delayed offer: B's ACK waits for A's
    answered_at: float | None = None
    ended_at: float | None = None
    disposition: str = ""
    cause: str = ""
    did: str | None = None
    trunk: str | None = None
    reinvite_pending: bool = False  # glare: a second re-INVITE meanwhile gets 491
    direct: bool = False  # direct media: SDP passes end to end (setting direct_media)
    late_offer: bool = False  # an INVITE without SDP, anchored when B's 2xx offers
    # RFC 4028 session timers, one per leg ("a", "b"), and what A's INVITE negotiated
    a_session: Accept | None = None
    timers: dict[str, LegTimer] = field(default_factory=dict)
    timer_handles: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    allows_update: dict[str, bool] = field(default_factory=dict)
    media: AnchoredCall | None = None  # the anchored RTP of the call (issue 6)
    media_stats: dict[str, LegStats] = field(default_factory=dict)  # at hang-up, for the CDR
    endpoint: MediaLeg | None = None  # a call the PBX answers itself (echo test …)
    ringback: bool = False  # we play ringback to the caller
    # Requests relayed across: our client key -> (server key on the other side, side)
    wall_start: float = field(default_factory=time.time)


def tag() -> str:
    return secrets.token_hex(6)


class CallManager:
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
        self.session_timers = TimerConfig()
        # Music on hold for anchored calls (set by the engine when the file exists).
        self.music_on_hold: object | None = None
        self.loop = stack.loop
        self.on_end = on_end
        self.calls: dict[str, Call] = {}
        # (Call-ID, our tag) -> (call, side) for requests inside a call
        self.dialogs: dict[tuple[str, str], tuple[Call, str]] = {}
        self.by_key: dict[AnyServerKey, Call] = {}

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
            self.session_timers = TimerConfig(
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
    ) -> Call:
        """Ring `targets` for `req`. `direct_media`: the caller and every target are
        extensions (no trunk), so the call may keep its media off the PBX when the
        setting allows it and everybody is on the LAN."""
        call = Call(
            id=tag(),
            a_req=req,
            a_key=key,
            a_source=source,
            a_tag=tag(),
            caller=caller,
            callee=callee,
            started=self.loop.time(),
        )
        self.calls[call.id] = call
        self.by_key[key] = call
        if not self._a_session(call):
            return call
        offer = req.body
        call.direct = direct_media and self._on_lan(call, targets)
        if self.media is not None and not call.direct:
            if req.body:
                try:
                    offer = self._anchor(call, req.body)
                except MediaError as exc:
                    self._fail_a(call, exc.status, exc.reason)
                    return call
            else:
                call.late_offer = True
        for target in targets:
            self._fork(call, target, offer)
        if not call.forks:
            self._fail_a(call, 480, "no reachable contact")
            return call
        call.ring_timer = self.loop.call_later(ring_timeout, self._ring_timeout, call)
        return call

    def _a_session(self, call: Call) -> bool:
        """Negotiate A's session timer from its INVITE (sent with our 2xx); False
        when the call was refused (422 with our Min-SE, or 400)."""
        req = call.a_req
        try:
            got = negotiate_uas(req.headers, self.session_timers)
        except SessionTimerError as exc:
            self._fail_a(call, exc.status, exc.reason)
            return False
        if isinstance(got, Reject):
            self._fail_a(call, got.status, "session interval too small", got.headers())
            return False
        call.a_session = got
        call.allows_update["a"] = _allows_update(req)
        return True

    def _on_lan(self, call: Call, targets: list[Target]) -> bool:
        """Direct media for this call: the setting is on, the caller offered in its
        INVITE, and its source, its SDP address and every target are on the LAN."""
        if not self.direct_media or not call.a_req.body or not targets:
            return False
        address = sdp_address(call.a_req.body)
        hosts = [call.a_source[1], *(t.dest[1] for t in targets)]
        if address is None or not all(in_networks(h, self.lan) for h in hosts):
            return False
        # 0.0.0.0 (an offer on hold) says nothing about where the phone is.
        return address in ("0.0.0.0", "::") or in_networks(address, self.lan)

    def _anchor(self, call: Call, offer: bytes, offerer: str = "caller") -> bytes:
        """Anchor the call's media on `offerer`'s SDP offer; the offer for the other
        side. The legs are named for the phones ("caller" faces A, "callee" B) even
        when B made the offer (a delayed offer)."""
        assert self.media is not None  # noqa: S101  # only called with an engine
        other = "callee" if offerer == "caller" else "caller"
        media, body = self.media.anchor(offer, offerer, other)
        call.media = media
        if self.music_on_hold is not None:
            media.music_on_hold = self.music_on_hold  # type: ignore[assignment]
        media.on_inactivity(self.rtp_timeout, self._media_dead)
        return body

    def _media_dead(self, media: AnchoredCall, leg: MediaLeg) -> None:
        for call in list(self.calls.values()):
            if call.media is media:
                log.info(
                    "call %s: no RTP from the %s for %s s", call.id, leg.side, self.rtp_timeout
                )
                self.hangup(call, "RTP timeout")

    def answer_locally(
        self,
        req: Request,
        key: AnyServerKey,
        source: Address,
        caller: str,
        callee: str,
        on_answer: Callable[[MediaLeg], None],
    ) -> Call | None:
        """Answer the call in the PBX itself (echo test, later IVR and voicemail):
        a media endpoint, 200 with its SDP, then `on_answer(leg)`."""
        if self.media is None or not req.body:
            self.stack.respond(key, req.reply(488, to_tag=tag()))
            return None
        try:
            leg, body = self.media.endpoint(req.body, callee)
        except MediaError as exc:
            self.stack.respond(key, req.reply(exc.status, to_tag=tag()))
            return None
        now = self.loop.time()
        call = Call(tag(), req, key, source, tag(), caller, callee, now, endpoint=leg)
        self.calls[call.id] = call
        self.by_key[key] = call
        if not self._a_session(call):
            return None
        out = self._a_reply(call, 200, "OK")
        out.body = body
        out.headers.add("Content-Type", "application/sdp")
        self._send_a_2xx(call, out)
        call.state = State.ANSWERED
        call.answered_at = now
        leg.on_inactivity(self.rtp_timeout, lambda _leg: self.hangup(call, "RTP timeout"))
        on_answer(leg)
        return call

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
        ctype = (a.headers.get("content-type") or "application/sdp") if offer else None
        invite = dialog.request("INVITE", offer, ctype)
        invite.headers.set("CSeq", "1 INVITE")
        dialog.local_cseq = 1
        invite.headers.set("Max-Forwards", str(max(0, (max_forwards or 70) - 1)))
        invite.headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO")
        for name, value in uac_headers(self.session_timers):
            invite.headers.add(name, value)
        for name, value in target.extra:
            invite.headers.add(name, value)
        fork = Fork(call, target, dialog, invite)
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

    # ------------------------------------------------------------ B responses
    def _b_response(self, fork: Fork, resp: Response | None) -> None:
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
        if status in (401, 407) and resp is not None and self._retry_with_auth(fork, resp):
            return
        if status == 422 and resp is not None and self._retry_with_interval(fork, resp):
            return
        fork.final = status
        self._forget_fork(fork)
        if call.state is State.ENDED or call.answered is not None:
            return
        if all(f.final is not None for f in call.forks):
            self._fail_a(call, _best_status([f.final or 500 for f in call.forks]), "no answer")

    def _b_provisional(self, fork: Fork, resp: Response) -> None:
        call = fork.call
        fork.provisional = True
        fork.dialog.update_from_response(resp)
        if resp.to.tag:
            self.dialogs[(fork.dialog.call_id, fork.dialog.local_tag)] = (call, "b")
        if fork.cancel_pending:
            self._cancel_fork(fork)
            return
        if call.state not in (State.ROUTING, State.RINGING):
            return
        call.state = State.RINGING
        if "100rel" in [v.lower() for v in resp.headers.getall("require")]:
            self._prack(fork, resp)
        out = self._a_reply(call, resp.status, resp.reason)
        body = resp.body
        if call.late_offer:
            body = b""  # an offer A could only answer in a PRACK we do not relay
        elif call.media is not None:
            # A 180 keeps its meaning (the phone shows "ringing") and may carry the
            # early media, which is our ringback when the callee sent none (RFC 3960).
            body = self._early_media(call, resp)
        if body:
            out.body = body
            out.headers.add("Content-Type", resp.headers.get("content-type") or "application/sdp")
        self.stack.respond(call.a_key, out)

    def _early_media(self, call: Call, resp: Response) -> bytes:
        """The SDP for a provisional to the caller: the callee's early media, or our
        own ringback when the callee rings without any (issue 6)."""
        media = call.media
        assert media is not None  # noqa: S101  # the caller checked
        try:
            if resp.body:
                if call.ringback:
                    call.ringback = False
                    media.leg("caller").stop_play()
                return media.answer(resp.body)
            if not call.ringback and resp.status == 180:
                body = media.early_answer()
                media.leg("caller").tone("ringback")
                call.ringback = True
                return body
        except MediaError as exc:
            log.info("call %s: early media refused: %s", call.id, exc.reason)
        return b""

    def _prack(self, fork: Fork, resp: Response) -> None:
        rseq = resp.headers.get("rseq")
        if not rseq or not rseq.strip().isdigit():
            return
        prack = fork.dialog.request("PRACK")
        prack.headers.add("RAck", f"{rseq.strip()} {fork.invite.cseq.seq} INVITE")
        self._send_in_dialog(fork.dialog, prack, lambda _r: None)

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
        call.answered = fork
        call.state = State.ANSWERED
        call.answered_at = self.loop.time()
        call.allows_update["b"] = _allows_update(resp)
        self._restart_uac_timer(call, "b", resp)
        self._cancel_timer(call, "ring_timer")
        for other in call.forks:
            if other is not fork and other.final is None:
                self._cancel_fork(other)
        if call.a_req.body:
            self._ack(fork, b"", None)
        else:
            call.ack_to_b_pending = True  # A's ACK carries the answer to B's offer
        out = self._a_reply(call, 200, "OK")
        out.body = resp.body
        reanchor = b""
        try:
            if call.late_offer:
                if not resp.body:
                    raise MediaError("the callee's 2xx to an INVITE without SDP has no offer", 502)  # noqa: TRY301  # handled just below, with the other refusals
                out.body = self._anchor(call, resp.body, offerer="callee")
            elif call.media is not None:
                if call.ringback:
                    call.ringback = False
                    call.media.leg("caller").stop_play()
                out.body = call.media.answer(resp.body)
            elif call.direct and resp.body and not self._answer_on_lan(resp.body):
                # Direct media was promised to a callee that answers from off the LAN:
                # anchor after all (A's answer from the engine, B re-INVITEd below).
                log.info("call %s: callee's media is off the LAN, anchoring it", call.id)
                reanchor = self._anchor(call, call.a_req.body)
                out.body = self._media(call).answer(resp.body)
                call.direct = False
        except MediaError as exc:
            # The callee answered with nothing we can use: end both sides.
            log.info("call %s: answer refused: %s", call.id, exc.reason)
            if call.ack_to_b_pending:
                call.ack_to_b_pending = False
                self._ack(fork, b"", None)
            self._bye(fork.dialog)
            self._fail_a(call, exc.status, exc.reason)
            return
        if out.body:
            out.headers.add("Content-Type", resp.headers.get("content-type") or "application/sdp")
        self._send_a_2xx(call, out)
        if reanchor:
            self._reanchor_callee(call, fork, reanchor)

    def _media(self, call: Call) -> AnchoredCall:
        assert call.media is not None  # noqa: S101  # callers anchored it just before
        return call.media

    def _answer_on_lan(self, body: bytes) -> bool:
        address = sdp_address(body)
        return address is not None and (
            address in ("0.0.0.0", "::") or in_networks(address, self.lan)
        )

    def _reanchor_callee(self, call: Call, fork: Fork, offer: bytes) -> None:
        """Move B's media to the PBX: a re-INVITE with the engine's offer; its answer
        updates the engine's leg to B. A refusal ends the call: B would keep sending
        to A directly while the engine waits for it in vain."""
        reinvite = fork.dialog.request("INVITE", offer, "application/sdp")
        call.reinvite_pending = True

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200 or call.state is State.ENDED:
                return
            call.reinvite_pending = False
            if resp is not None and 200 <= status < 300:
                self._ack_reinvite(fork.dialog, reinvite)
                try:
                    self._media(call).answer(resp.body)
                except MediaError as exc:
                    log.info("call %s: re-anchoring refused: %s", call.id, exc.reason)
                    self.hangup(call, "media not anchored")
                return
            log.info("call %s: callee refused re-anchoring (%s)", call.id, status)
            self.hangup(call, f"{status} media not anchored")

        if self._send_in_dialog(fork.dialog, reinvite, answered) is None:
            self.hangup(call, "media not anchored")

    def _ack_reinvite(self, dialog: Dialog, invite: Request) -> None:
        ack = dialog.request("ACK")
        ack.headers.set("CSeq", f"{invite.cseq.seq} ACK")
        dest = dialog.destination()
        ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        self.stack.send(ack, dest)

    def _ack(self, fork: Fork, body: bytes, ctype: str | None) -> None:
        ack = fork.dialog.request("ACK", body, ctype)
        ack.headers.set("CSeq", f"{fork.invite.cseq.seq} ACK")
        dest = fork.dialog.destination()
        ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        fork.ack = ack
        self.stack.send(ack, dest)

    def _retry_with_interval(self, fork: Fork, resp: Response) -> bool:
        """B wants a longer session interval (422, RFC 4028 §7.3): ask again, once."""
        try:
            asked = fork.invite.headers.get("session-expires") or ""
            interval = retry_interval(resp.headers, int(asked.split(";")[0] or 0))
        except (SessionTimerError, ValueError):
            return False
        if interval is None or fork.timer_retried or fork.call.state is State.ENDED:
            return False
        fork.timer_retried = True
        old = fork.invite
        new = Request("INVITE", old.uri, old.headers.copy(), old.body)
        new.headers.remove("via")
        fork.dialog.local_cseq += 1
        new.headers.set("CSeq", f"{fork.dialog.local_cseq} INVITE")
        new.headers.set("Session-Expires", str(interval))
        new.headers.set("Min-SE", str(interval))
        fork.invite = new
        fork.provisional = False
        self._send_invite(fork)
        return True

    def _retry_with_auth(self, fork: Fork, resp: Response) -> bool:
        """A trunk challenged our INVITE: send it again with credentials (once)."""
        from pbx_core.sip.digest import DigestClient  # noqa: PLC0415  # trunks only

        if (
            fork.target.credentials is None
            or fork.auth_tries >= 1
            or fork.call.state is State.ENDED
        ):
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        client = DigestClient(*fork.target.credentials)
        if not client.on_challenge(resp.headers.getall(header)):
            return False
        fork.auth_tries += 1
        old = fork.invite
        new = Request("INVITE", old.uri, old.headers.copy(), old.body)
        new.headers.remove("via")
        fork.dialog.local_cseq += 1
        new.headers.set("CSeq", f"{fork.dialog.local_cseq} INVITE")
        creds = client.authorization("INVITE", str(old.uri), tag())
        if creds is None:
            return False
        new.headers.add("Authorization" if resp.status == 401 else "Proxy-Authorization", creds)
        fork.invite = new
        fork.provisional = False
        self._send_invite(fork)
        return True

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
        resp.headers.add("Supported", "timer")
        if call.a_session is not None:
            for name, value in call.a_session.headers():
                resp.headers.add(name, value)
            self._restart_timer(call, "a", LegTimer.start(self.loop.time(), call.a_session))
        call.a_2xx = resp
        call.a_final_sent = True
        self.stack.respond(call.a_key, resp)
        self._retransmit_2xx(call, T1, self.loop.time() + 64 * T1)

    def _retransmit_2xx(self, call: Call, interval: float, give_up: float) -> None:
        def again() -> None:
            if call.a_2xx is None or call.state is State.ENDED:
                return
            if self.loop.time() >= give_up:
                log.info("call %s: no ACK for our 2xx, hanging up", call.id)
                call.a_2xx = None
                self.hangup(call, "no ACK")
                return
            self.stack.send(call.a_2xx, call.a_source)
            self._retransmit_2xx(call, min(2 * interval, T2), give_up)

        call.a_2xx_timer = self.loop.call_later(interval, again)

    def _fail_a(
        self, call: Call, status: int, why: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        if not call.a_final_sent:
            call.a_final_sent = True
            resp = self._a_reply(call, status)
            for name, value in headers or ():
                resp.headers.add(name, value)
            self.stack.respond(call.a_key, resp)
        self._end(call, _disposition(status), f"{status} {why}")

    def _ring_timeout(self, call: Call) -> None:
        call.ring_timer = None
        if call.state in (State.ROUTING, State.RINGING):
            for fork in call.forks:
                if fork.final is None:
                    self._cancel_fork(fork)
            self._fail_a(call, 480, "ring timeout")

    # ------------------------------------------------------------ cancel / bye
    def _cancel_fork(self, fork: Fork) -> None:
        if fork.cancelled or fork.final is not None or fork.key is None:
            return
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
        self._send_in_dialog(dialog, dialog.request("BYE"), lambda _r: None)

    def hangup(self, call: Call, why: str) -> None:
        """End an answered call from our side: BYE to both."""
        if call.state is State.ENDED:
            return
        if call.a_dialog is not None and call.a_final_sent:
            self._bye(call.a_dialog)
        if call.answered is not None:
            self._bye(call.answered.dialog)
        self._end(call, "ANSWERED" if call.answered_at else "FAILED", why)

    def _send_in_dialog(
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
        """Handle a request inside a call; False if it belongs to none."""
        try:
            found = self.dialogs.get((req.call_id, req.to.tag or ""))
        except ParseError:
            return False
        if found is None:
            return False
        call, side = found
        if req.method == "ACK":
            self._on_ack(call, side, req)
            return True
        if key is None:
            return True
        if side == "a" and call.a_dialog is not None:
            call.a_dialog.remote_cseq = max(call.a_dialog.remote_cseq, req.cseq.seq)
        if req.method == "BYE":
            self.stack.respond(key, req.reply(200))
            if call.state is State.ENDED:
                return True
            if side == "a":
                if call.answered is not None:
                    self._bye(call.answered.dialog)
                else:
                    for fork in call.forks:
                        self._cancel_fork(fork)
                self._end(call, "ANSWERED" if call.answered_at else "CANCELLED", "caller hung up")
            else:
                if call.a_dialog is not None:
                    self._bye(call.a_dialog)
                self._end(call, "ANSWERED", "callee hung up")
            return True
        if call.state is State.ENDED:
            self.stack.respond(key, req.reply(481))
            return True
        if req.method in ("INVITE", "UPDATE") and not self._refresh_request(call, side, req, key):
            return True
        if self._media_request(call, side, req, key):
            return True
        self._relay(call, side, req, key)
        return True

    def _media_request(self, call: Call, side: str, req: Request, key: AnyServerKey) -> bool:
        """With anchored media the PBX answers offers itself (hold, codec or address
        changes stay on that leg; the other side hears music on hold) and turns SIP
        INFO key presses into RTP events for the other phone."""
        media_side = "caller" if side == "a" else "callee"
        if call.endpoint is not None and req.method in ("INVITE", "UPDATE") and req.body:
            assert self.media is not None  # noqa: S101  # endpoints come from it
            try:
                body = self.media.reoffer_endpoint(call.endpoint, req.body)
            except MediaError as exc:
                self.stack.respond(key, req.reply(exc.status))
                return True
            self._answer_offer(call, side, req, key, body)
            return True
        media = call.media
        if media is None or not media.answered:
            return False
        if req.method in ("INVITE", "UPDATE") and req.body:
            try:
                body = media.reoffer(media_side, req.body)
            except MediaError as exc:
                self.stack.respond(key, req.reply(exc.status))
                return True
            self._answer_offer(call, side, req, key, body)
            return True
        if req.method == "INFO" and req.body:
            try:
                event = media.dtmf_info(media_side, req.headers.get("content-type") or "", req.body)
            except MediaError as exc:
                self.stack.respond(key, req.reply(exc.status))
                return True
            if event is not None:
                self.stack.respond(key, req.reply(200))
                return True
        return False

    def _answer_offer(
        self, call: Call, side: str, req: Request, key: AnyServerKey, body: bytes
    ) -> None:
        resp = req.reply(200)
        if body:
            resp.body = body
            resp.headers.add("Content-Type", "application/sdp")
        resp.headers.add(
            "Contact", self.contact(call.a_source if side == "a" else req_source(call, side))
        )
        self._timer_reply(call, side, req, resp)
        self.stack.respond(key, resp)

    def _other_dialog(self, call: Call, side: str) -> Dialog | None:
        if side == "a":
            return call.answered.dialog if call.answered is not None else None
        return call.a_dialog

    def _relay(self, call: Call, side: str, req: Request, key: AnyServerKey) -> None:
        """re-INVITE, UPDATE, INFO … from one side re-issued on the other (§14)."""
        other = self._other_dialog(call, side)
        if other is None or (req.method == "INVITE" and call.reinvite_pending):
            # RFC 3261 §14.2: an offer while ours is outstanding gets 491.
            self.stack.respond(key, req.reply(491 if req.method == "INVITE" else 481))
            return
        if req.method == "INVITE":
            call.reinvite_pending = True
        ctype = req.headers.get("content-type") if req.body else None
        out = other.request(req.method, req.body, ctype)
        for name in ("event", "subscription-state", "rack", "info-package"):
            for value in req.headers.getall(name):
                out.headers.add(name, value)
        other_side = "b" if side == "a" else "a"
        refresh = req.method in ("INVITE", "UPDATE")
        if refresh:
            for name, value in self._refresh_headers(call, other_side):
                out.headers.add(name, value)

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200:
                return
            if req.method == "INVITE":
                call.reinvite_pending = False
            if refresh and resp is not None and 200 <= status < 300:
                self._restart_uac_timer(call, other_side, resp)
            reply = req.reply(status, None if resp is None else resp.reason)
            if resp is not None and resp.body:
                reply.body = resp.body
                reply.headers.add("Content-Type", resp.headers.get("content-type") or "")
            if req.method == "INVITE" and 200 <= status < 300 and resp is not None:
                reply.headers.add(
                    "Contact", self.contact(call.a_source if side == "a" else other.peer)
                )
                ack = other.request("ACK")
                ack.headers.set("CSeq", f"{out.cseq.seq} ACK")
                dest = other.destination()
                ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
                self.stack.send(ack, dest)
            self._timer_reply(call, side, req, reply)
            self.stack.respond(key, reply)

        if self._send_in_dialog(other, out, answered) is None:
            call.reinvite_pending = False
            self.stack.respond(key, req.reply(500))

    def _on_ack(self, call: Call, side: str, req: Request) -> None:
        if side != "a":
            return  # B ACKs nothing of ours (we never answer B's INVITEs)
        if call.a_2xx is not None:
            call.a_2xx = None
            self._cancel_timer(call, "a_2xx_timer")
        if call.ack_to_b_pending and call.answered is not None:
            call.ack_to_b_pending = False
            ctype = req.headers.get("content-type") if req.body else None
            if call.late_offer and call.media is not None:
                # A's answer to the engine's offer; B gets the engine's answer.
                try:
                    if not req.body:
                        raise MediaError("the caller's ACK carries no answer", 400)  # noqa: TRY301  # handled just below
                    body = call.media.answer(req.body)
                except MediaError as exc:
                    log.info("call %s: %s, hanging up", call.id, exc.reason)
                    self._ack(call.answered, b"", None)
                    self.hangup(call, f"no usable answer in ACK: {exc.reason}")
                    return
                self._ack(call.answered, body, "application/sdp")
                return
            self._ack(call.answered, req.body, ctype)

    # ------------------------------------------------------------ session timers
    def _refresh_request(self, call: Call, side: str, req: Request, key: AnyServerKey) -> bool:
        """A re-INVITE or UPDATE from a phone (RFC 4028 §9): False when it was
        answered here (422, 400, or a body-less UPDATE, which is only a refresh)."""
        try:
            got = negotiate_uas(req.headers, self.session_timers)
        except SessionTimerError as exc:
            self.stack.respond(key, req.reply(exc.status))
            return False
        if isinstance(got, Reject):
            resp = req.reply(got.status)
            for name, value in got.headers():
                resp.headers.add(name, value)
            self.stack.respond(key, resp)
            return False
        if req.method == "UPDATE" and not req.body:
            self._answer_offer(call, side, req, key, b"")
            return False
        return True

    def _timer_reply(self, call: Call, side: str, req: Request, resp: Response) -> None:
        """Our 2xx to a phone's re-INVITE/UPDATE carries the leg's new session timer,
        which starts again now."""
        if req.method not in ("INVITE", "UPDATE") or not 200 <= resp.status < 300:
            return
        try:
            got = negotiate_uas(req.headers, self.session_timers)
        except SessionTimerError:
            return  # answered with 400 before it got here
        if isinstance(got, Reject):
            return
        resp.headers.add("Supported", "timer")
        for name, value in got.headers():
            resp.headers.add(name, value)
        self._restart_timer(call, side, LegTimer.start(self.loop.time(), got))

    def _refresh_headers(self, call: Call, side: str) -> list[tuple[str, str]]:
        """Session timer headers of a re-INVITE/UPDATE we send on `side`: the leg's
        interval, and the same refresher as now."""
        timer = call.timers.get(side)
        if timer is None:
            return uac_headers(self.session_timers)
        return uac_headers(self.session_timers, timer.interval, timer.we_refresh)

    def _restart_uac_timer(self, call: Call, side: str, resp: Response) -> None:
        """A 2xx to our INVITE/UPDATE on `side` (RFC 4028 §7.2) restarts its timer."""
        try:
            got = negotiate_uac(resp.headers, self.session_timers)
        except SessionTimerError as exc:
            log.info("call %s: bad session timer in a 2xx (%s): no timer", call.id, exc)
            got = None
        self._restart_timer(call, side, LegTimer.start(self.loop.time(), got))

    def _restart_timer(self, call: Call, side: str, timer: LegTimer | None) -> None:
        old = call.timer_handles.pop(side, None)
        if old is not None:
            old.cancel()
        if timer is None:
            call.timers.pop(side, None)
            return
        call.timers[side] = timer
        when, action = timer.due()
        call.timer_handles[side] = self.loop.call_at(when, self._session_timer, call, side, action)

    def _session_timer(self, call: Call, side: str, action: Action) -> None:
        call.timer_handles.pop(side, None)
        if call.state is State.ENDED:
            return
        who = "caller" if side == "a" else "callee"
        if action is Action.EXPIRE:
            log.info("call %s: no session refresh from the %s, hanging up", call.id, who)
            self.hangup(call, f"session timer expired ({who})")
            return
        self._send_refresh(call, side)

    def _send_refresh(self, call: Call, side: str) -> None:
        """We are the refresher on `side` (RFC 4028 §10): UPDATE without a body when
        the phone allows it, else a re-INVITE without SDP whose offer (in the 2xx)
        the media engine answers in the ACK."""
        timer = call.timers.get(side)
        dialog = call.a_dialog if side == "a" else (call.answered.dialog if call.answered else None)
        if timer is None or dialog is None:
            return
        method = "UPDATE" if call.allows_update.get(side) else "INVITE"
        if method == "INVITE" and (
            call.reinvite_pending or (call.media is None and call.endpoint is None)
        ):
            if call.reinvite_pending:  # our relayed re-INVITE is out: try again soon
                call.timer_handles[side] = self.loop.call_later(
                    2.0, self._session_timer, call, side, Action.REFRESH
                )
                return
            # Media passes end to end and the phone takes no UPDATE: we have no SDP
            # to answer its offer with, so this leg goes without a timer.
            log.info("call %s: cannot refresh the %s leg, its session timer is off", call.id, side)
            self._restart_timer(call, side, None)
            return
        req = dialog.request(method)
        for name, value in uac_headers(self.session_timers, timer.interval, we_refresh=True):
            req.headers.add(name, value)
        if method == "INVITE":
            call.reinvite_pending = True

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200 or call.state is State.ENDED:
                return
            if method == "INVITE":
                call.reinvite_pending = False
            if resp is not None and 200 <= status < 300:
                if method == "INVITE" and not self._answer_refresh_offer(call, side, req, resp):
                    return
                self._restart_uac_timer(call, side, resp)
                return
            if status in (408, 481):  # §10: the session is gone
                self.hangup(call, f"session refresh failed ({status})")
                return
            # Refused for another reason: stop refreshing, and end the call at expiry
            # unless the phone refreshes meanwhile.
            log.info("call %s: session refresh got %s", call.id, status)
            self._restart_timer(call, side, LegTimer(timer.interval, False, timer.refreshed_at))

        if self._send_in_dialog(dialog, req, answered) is None:
            call.reinvite_pending = False
            self.hangup(call, "session refresh failed")

    def _answer_refresh_offer(self, call: Call, side: str, invite: Request, resp: Response) -> bool:
        """The phone's offer in its 2xx to our body-less refresh re-INVITE: answered
        by the engine in our ACK. False (and the call ended) when it is unusable."""
        dialog = call.a_dialog if side == "a" else (call.answered.dialog if call.answered else None)
        assert dialog is not None  # noqa: S101  # the refresh went out on it
        body = b""
        try:
            if not resp.body:
                raise MediaError("no offer in the 2xx to a refresh re-INVITE", 400)  # noqa: TRY301  # handled just below
            if call.endpoint is not None:
                assert self.media is not None  # noqa: S101  # endpoints come from it
                body = self.media.reoffer_endpoint(call.endpoint, resp.body)
            elif call.media is not None:
                body = call.media.reoffer("caller" if side == "a" else "callee", resp.body)
        except MediaError as exc:
            self._ack_reinvite(dialog, invite)
            log.info("call %s: refresh answer refused: %s", call.id, exc.reason)
            self.hangup(call, "session refresh failed")
            return False
        ack = dialog.request("ACK", body, "application/sdp" if body else None)
        ack.headers.set("CSeq", f"{invite.cseq.seq} ACK")
        dest = dialog.destination()
        ack.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        self.stack.send(ack, dest)
        return True

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
        for handle in call.timer_handles.values():
            handle.cancel()
        call.timer_handles.clear()
        if call.media is not None:
            call.media_stats = dict(call.media.stats())
            call.media.close()
        if call.endpoint is not None:
            call.media_stats = {"caller": call.endpoint.stats()}
            call.endpoint.close()
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
        self._cancel_timer(call, "a_2xx_timer")
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
                "media": _media_status(c),
            }
            for c in self.calls.values()
        ]


def _media_status(call: Call) -> dict[str, object]:
    """Per leg, the RTCP-style figures (RFC 3550 A.3/A.8) for `pbx status`."""
    legs = call.media.stats() if call.media is not None else {}
    if call.endpoint is not None:
        legs = {"caller": call.endpoint.stats()}
    return {
        side: {
            "codec": st.codec,
            "remote": st.remote_address,
            "received": st.packets_received,
            "sent": st.packets_sent,
            "lost": st.lost,
            "jitter_ms": round(st.jitter_ms, 1),
        }
        for side, st in legs.items()
    }


def _allows_update(msg: Request | Response) -> bool:
    """The phone said (Allow) that it takes UPDATE (RFC 3311)."""
    return any(
        t.strip().upper() == "UPDATE" for v in msg.headers.getall("allow") for t in v.split(",")
    )


def req_source(call: Call, side: str) -> Address:
    """Where the other side of `call` talks to us from (for our Contact)."""
    if side == "b" and call.answered is not None:
        return call.answered.target.dest
    return call.a_source


def _best_status(statuses: list[int]) -> int:
    """The response to give the caller when every fork failed (§16.7 step 6, simplified):
    a 6xx wins, then busy, then the lowest class."""
    six = [s for s in statuses if s >= 600]
    if six:
        return min(six)
    if 486 in statuses:
        return 486
    return min(statuses, key=lambda s: (s // 100, s != 480, s))


def _disposition(status: int) -> str:
    if status in (486, 600):
        return "BUSY"
    if status in (408, 480, 487):
        return "NO ANSWER"
    return "FAILED"


def name_addr(display: str | None, uri: str) -> str:
    """A From/To value (no tag) for the B leg."""
    return str(NameAddr(parse_uri(uri), display))
