"""Media of the B2BUA's calls: the glue between CallManager's SIP and the media
engine's SDP offer/answer (pbx_core/media/engine.py).

Theory of operation. Every call is anchored in the media engine (issue 6): each phone
sees the PBX's address in the SDP and the engine relays RTP between the legs. With
the offer in A's INVITE, the engine turns it into our offer to B and B's answer into
our answer to A. With a delayed offer (an INVITE without SDP) B's 2xx carries the
offer: it is anchored then, A gets our offer in our 2xx, and A's ACK carries the
answer, which we turn into the answer in our ACK to B (RFC 3261 §13.2.1). A 2xx
without an offer or an ACK without an answer ends the call (B gets its ACK, then
BYE). Early media from B on a delayed offer is not passed on (A could only answer it
in a PRACK).

Once anchored, offers inside the call are answered by the PBX on that leg alone
(hold, codec or address changes; the other side hears music on hold), SIP INFO key
presses become RTP events for the other phone, and the offer in a phone's 2xx to our
body-less refresh re-INVITE (call_timers.py) is answered in our ACK. A phone's own
re-INVITE without SDP gets the engine's offer for its leg in our 2xx (the codec in
use first) and its ACK's answer is applied to that leg; the other phone hears of
none of it. An ACK without a usable answer, or none at all, ends the call.

With the `direct_media` setting, a call between two extensions on the LAN keeps its
SDP end to end (RTP goes phone to phone): when the caller's SIP source and SDP
address and every callee's registered source are in `lan_networks`. Should the
callee's answer then carry an address off the LAN, the call is anchored after all:
A gets the engine's answer and B a re-INVITE with the engine's offer (Asterisk's
way back from direct media).

Which address each leg's SDP names (nat.py): a phone whose SIP address is outside
`lan_networks` is given `external_media_address` when it is set, every other phone
the engine's own. The caller's leg follows A's source; the callee's leg follows each
fork's destination (forks to phones on and off the LAN get their own copy of the
offer) and, once a fork answers, that fork's. A phone outside the LAN is also
`nat_peer` of its leg: until its RTP is latched, the engine sends to its public
address when its SDP names a private one.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import partial
from typing import TYPE_CHECKING

from pbx_core.media import negotiation as neg
from pbx_core.media.engine import AnchoredCall
from pbx_core.media.errors import MediaError
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_state import Call, Fork, State, media_side
from pbx_core.pbx.nat import NatPolicy
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.sip.sdp import Connection
from pbx_core.store.schema import SETTINGS
from pbx_core.store.settings import Network
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.call_state import Target
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

DEFAULT_LAN = str(SETTINGS["lan_networks"].default)


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


def _nat_peer(nat: NatPolicy, host: str) -> str | None:
    """A phone outside the LAN may sit behind NAT: its SIP address is where its RTP
    goes until latched, should its SDP name a private address."""
    return None if nat.is_local(host) else host


def _fork_of(call: Call, resp: Response) -> Fork | None:
    """The fork a response belongs to (each fork's dialog has its own Call-ID)."""
    call_id = resp.call_id
    return next((f for f in call.forks if f.dialog.call_id == call_id), None)


def _readdress(body: bytes, address: str) -> bytes:
    """Our SDP with every connection and origin address replaced by `address`."""
    sd = neg.parse_offer(body)
    kind = "IP6" if ":" in address else "IP4"
    conns = [sd.connection] if sd.connection is not None else []
    for m in sd.media:
        conns.extend(m.connections)
    for c in conns:
        if isinstance(c, Connection):
            c.address, c.addrtype = address, kind
    sd.origin.address, sd.origin.addrtype = address, kind
    return bytes(sd)


class CallMedia:
    """The media side of every call of one CallManager (its `media` engine and its
    settings direct_media, lan_networks, rtp_timeout, music on hold)."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    # ------------------------------------------------------------ set-up
    def direct_ok(self, call: Call, targets: list[Target]) -> bool:
        """Direct media for this call: the setting is on, the caller offered in its
        INVITE, and its source, its SDP address and every target are on the LAN."""
        manager = self.manager
        if not manager.direct_media or not call.a_req.body or not targets:
            return False
        address = sdp_address(call.a_req.body)
        hosts = [call.a_source[1], *(t.dest[1] for t in targets)]
        if address is None or not all(in_networks(h, manager.lan) for h in hosts):
            return False
        # 0.0.0.0 (an offer on hold) says nothing about where the phone is.
        return address in ("0.0.0.0", "::") or in_networks(address, manager.lan)

    def _answer_on_lan(self, body: bytes) -> bool:
        address = sdp_address(body)
        return address is not None and (
            address in ("0.0.0.0", "::") or in_networks(address, self.manager.lan)
        )

    def anchor(self, call: Call, offer: bytes, offerer: str = "caller") -> bytes:
        """Anchor the call's media on `offerer`'s SDP offer; the offer for the other
        side. The legs are named for the phones ("caller" faces A, "callee" B) even
        when B made the offer (a delayed offer)."""
        manager = self.manager
        assert manager.media is not None  # noqa: S101  # only called with an engine
        other = "callee" if offerer == "caller" else "caller"
        b_host = call.answered.target.dest[1] if call.answered is not None else None
        hosts: dict[str, str | None] = {"caller": call.a_source[1], "callee": b_host}
        nat = manager.nat

        def address(side: str) -> str | None:
            host = hosts[side]
            return nat.media_address_for(host) if host else None

        addresses = (address(offerer), address(other))
        media, body = manager.media.anchor(offer, offerer, other, addresses)
        for leg in (media.caller, media.callee):
            host = hosts[leg.side]
            leg.nat_peer = _nat_peer(nat, host) if host else None
        call.media = media
        if manager.music_on_hold is not None:
            media.music_on_hold = manager.music_on_hold  # type: ignore[assignment]
        media.on_inactivity(manager.rtp_timeout, self._media_dead)
        manager.keys.watch(call, media)
        return body

    def _media_dead(self, media: AnchoredCall, leg: MediaLeg) -> None:
        manager = self.manager
        for call in list(manager.calls.values()):
            if call.media is media and (call.state is not State.ANSWERED or call.replacing):
                # Ringing (a hunt may ring for minutes): a phone need not send before
                # the answer, and hanging up here left the caller without a final
                # response. `answered` counts the silence again from the answer.
                log.debug("call %s: no RTP from the %s while ringing", call.id, leg.side)
                continue
            if call.media is media:
                log.info(
                    "call %s: no RTP from the %s for %s s", call.id, leg.side, manager.rtp_timeout
                )
                manager.hangup(call, "RTP timeout")

    @staticmethod
    def answered(call: Call) -> None:
        """The call was answered: the RTP timeout counts from now on both legs."""
        if call.media is not None:
            call.media.caller.rearm_inactivity()
            call.media.callee.rearm_inactivity()

    def offer_for(self, call: Call, target: Target, offer: bytes) -> bytes:
        """The offer for one fork: the anchored offer naming the address that fork's
        phone reaches the PBX on (a copy when it differs from the callee leg's)."""
        media = call.media
        if media is None or not offer or call.late_offer:
            return offer
        leg = media.leg("callee")
        address = self._address_for(target.dest[1])
        return offer if address == leg.address else _readdress(offer, address)

    def facing(self, source: Address) -> tuple[str | None, str | None]:
        """For a leg facing the phone at `source`: the address its SDP names (None:
        the engine's) and its NAT peer."""
        nat = self.manager.nat
        return nat.media_address_for(source[1]), _nat_peer(nat, source[1])

    def _address_for(self, host: str) -> str:
        engine = self.manager.media
        assert engine is not None  # noqa: S101  # only asked with an engine
        return self.manager.nat.media_address_for(host) or engine.address

    def adopt(self, call: Call, media: AnchoredCall) -> None:
        """A relay made for a new far end (call_ops.py): music on hold and the RTP
        timeout as for every anchored call."""
        manager = self.manager
        if manager.music_on_hold is not None:
            media.music_on_hold = manager.music_on_hold  # type: ignore[assignment]
        media.on_inactivity(manager.rtp_timeout, self._media_dead)
        manager.keys.watch(call, media)

    def callee_answers(self, call: Call, fork: Fork | None) -> None:
        """The callee leg now faces `fork`'s phone (see `_callee_answers`)."""
        self._callee_answers(call, fork)

    def _callee_answers(self, call: Call, fork: Fork | None) -> None:
        """The callee leg now faces `fork`'s phone: its address and NAT peer."""
        media = call.media
        if media is None or fork is None:
            return
        leg = media.leg("callee")
        host = fork.target.dest[1]
        address = self._address_for(host)
        if address != leg.address:
            leg.set_address(address)
        leg.nat_peer = _nat_peer(self.manager.nat, host)

    @staticmethod
    def anchored(call: Call) -> AnchoredCall:
        assert call.media is not None  # noqa: S101  # callers anchored it just before
        return call.media

    # ------------------------------------------------------------ B's answer
    def early_media(self, call: Call, resp: Response) -> bytes:
        """The SDP for a provisional to the caller: the callee's early media, or our
        own ringback when the callee rings without any (issue 6)."""
        media = self.anchored(call)
        try:
            if resp.body:
                self._callee_answers(call, _fork_of(call, resp))
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

    def answer_2xx(self, call: Call, resp: Response) -> tuple[bytes, bytes]:
        """B's 2xx to our INVITE: the body of our 2xx to A, and the offer of a
        re-INVITE that moves B's media to the PBX (b"" when none is needed).
        MediaError when B's SDP is of no use."""
        if call.late_offer:
            if not resp.body:
                raise MediaError("the callee's 2xx to an INVITE without SDP has no offer", 502)
            return self.anchor(call, resp.body, offerer="callee"), b""
        if call.media is not None:
            if call.ringback:
                call.ringback = False
                call.media.leg("caller").stop_play()
            self._callee_answers(call, call.answered)
            return call.media.answer(resp.body), b""
        if (
            call.direct
            and self.manager.media is not None
            and resp.body
            and not self._answer_on_lan(resp.body)
        ):
            # Direct media was promised to a callee that answers from off the LAN:
            # anchor after all (A's answer from the engine, B re-INVITEd).
            log.info("call %s: callee's media is off the LAN, anchoring it", call.id)
            reanchor = self.anchor(call, call.a_req.body)
            body = self.anchored(call).answer(resp.body)
            call.direct = False
            return body, reanchor
        return resp.body, b""

    def reanchor_callee(self, call: Call, fork: Fork, offer: bytes) -> None:
        """Move B's media to the PBX: a re-INVITE with the engine's offer; its answer
        updates the engine's leg to B. A refusal ends the call: B would keep sending
        to A directly while the engine waits for it in vain."""
        manager = self.manager
        reinvite = fork.dialog.request("INVITE", offer, "application/sdp")
        call.reinvite_pending = True

        def answered(resp: Response | None) -> None:
            with manager.guard(call, "re-anchoring"):
                on_answer(resp)

        def on_answer(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200 or call.state is State.ENDED:
                return
            call.reinvite_pending = False
            if resp is not None and 200 <= status < 300:
                manager.ack_reinvite(fork.dialog, reinvite)
                try:
                    self.anchored(call).answer(resp.body)
                except MediaError as exc:
                    log.info("call %s: re-anchoring refused: %s", call.id, exc.reason)
                    manager.hangup(call, "media not anchored")
                return
            log.info("call %s: callee refused re-anchoring (%s)", call.id, status)
            manager.hangup(call, f"{status} media not anchored")

        if manager.send_in_dialog(fork.dialog, reinvite, answered) is None:
            manager.hangup(call, "media not anchored")

    def ack_answer(self, call: Call, ack: Request) -> bytes:
        """A delayed offer: A's answer (in its ACK) to the engine's offer; the answer
        for our ACK to B. MediaError when the ACK has no usable answer."""
        if not ack.body:
            raise MediaError("the caller's ACK carries no answer", 400)
        return self.anchored(call).answer(ack.body)

    # ------------------------------------------------------------ in the call
    def request(
        self, call: Call, side: str, req: Request, key: AnyServerKey, source: Address
    ) -> bool:
        """With anchored media the PBX answers offers itself (hold, codec or address
        changes stay on that leg; the other side hears music on hold), makes one for
        a re-INVITE without SDP, and turns SIP INFO key presses into RTP events for
        the other phone. False when the request (from `source`) is for the other
        side."""
        manager = self.manager
        media = call.media
        if call.endpoint is None and (media is None or not media.answered):
            return False
        if req.method in ("INVITE", "UPDATE") and req.body:
            try:
                body = self._reoffer(call, side, req.body)
            except MediaError as exc:
                manager.stack.respond(key, req.reply(exc.status))
                return True
            manager.call_relay.answer(call, side, req, key, body, source)
            return True
        if req.method == "INVITE":
            self._offer(call, side, req, key, source)
            return True
        if req.method == "INFO" and req.body and (media is not None or call.endpoint):
            ctype = req.headers.get("content-type") or ""
            try:
                if media is not None:
                    event = media.dtmf_info(media_side(side), ctype, req.body)
                else:  # an application's call: the key press is the application's
                    assert manager.media is not None and call.endpoint is not None  # noqa: S101
                    event = manager.media.dtmf_info_endpoint(call.endpoint, ctype, req.body)
            except MediaError as exc:
                manager.stack.respond(key, req.reply(exc.status))
                return True
            if event is not None:
                manager.stack.respond(key, req.reply(200))
                return True
        if req.method == "INFO" and call.endpoint is not None:
            # Nobody across the call to pass it to: a key press is all the PBX reads
            # (RFC 6086 §4.2.2: 415 with what it takes), a body-less INFO is fine.
            resp = req.reply(415 if req.body else 200)
            if req.body:
                resp.headers.add("Accept", "application/dtmf-relay, application/dtmf")
            manager.stack.respond(key, resp)
            return True
        return False

    def _reoffer(self, call: Call, side: str, offer: bytes) -> bytes:
        """The engine's answer to a phone's offer inside the call."""
        if call.endpoint is not None:
            assert self.manager.media is not None  # noqa: S101  # endpoints come from it
            return self.manager.media.reoffer_endpoint(call.endpoint, offer)
        return self.anchored(call).reoffer(media_side(side), offer)

    def _offer(
        self, call: Call, side: str, req: Request, key: AnyServerKey, source: Address
    ) -> None:
        """A re-INVITE without SDP (RFC 3264 §8): the engine's offer for that leg in
        our 200; the answer comes in the ACK (`_offer_answered`)."""
        manager = self.manager
        if call.reinvite_pending:
            # §14.2: one of our re-INVITEs is out; the phone tries again later.
            manager.stack.respond(key, req.reply(491))
            return
        try:
            if call.endpoint is not None:
                assert manager.media is not None  # noqa: S101  # endpoints come from it
                body = manager.media.offer_endpoint(call.endpoint)
            else:
                body = self.anchored(call).offer(media_side(side))
        except MediaError as exc:
            manager.stack.respond(key, req.reply(exc.status))
            return
        on_ack = partial(self._offer_answered, call, side)
        manager.call_relay.answer(call, side, req, key, body, source, on_ack=on_ack)

    def _offer_answered(self, call: Call, side: str, ack: Request | None) -> None:
        manager = self.manager
        if call.state is State.ENDED:
            return
        who = media_side(side)
        if ack is None:
            return  # none came: call_acks.py hangs up
        try:
            if not ack.body:
                raise MediaError(f"the {who}'s ACK carries no answer", 400)  # noqa: TRY301  # handled just below
            if call.endpoint is not None:
                assert manager.media is not None  # noqa: S101  # endpoints come from it
                manager.media.answer_endpoint(call.endpoint, ack.body)
            else:
                self.anchored(call).take_answer(who, ack.body)
        except MediaError as exc:
            log.info("call %s: %s, hanging up", call.id, exc.reason)
            manager.hangup(call, f"no usable answer in ACK: {exc.reason}")

    def answer_refresh_offer(self, call: Call, side: str, invite: Request, resp: Response) -> bool:
        """The phone's offer in its 2xx to our body-less refresh re-INVITE: answered
        by the engine in our ACK. False (and the call ended) when it is unusable."""
        manager = self.manager
        dialog = call.dialog(side)
        assert dialog is not None  # noqa: S101  # the refresh went out on it
        body = b""
        try:
            if not resp.body:
                raise MediaError("no offer in the 2xx to a refresh re-INVITE", 400)  # noqa: TRY301  # handled just below
            if call.endpoint is not None:
                assert manager.media is not None  # noqa: S101  # endpoints come from it
                body = manager.media.reoffer_endpoint(call.endpoint, resp.body)
            elif call.media is not None:
                body = call.media.reoffer(media_side(side), resp.body)
        except MediaError as exc:
            manager.ack_reinvite(dialog, invite)
            log.info("call %s: refresh answer refused: %s", call.id, exc.reason)
            manager.hangup(call, "session refresh failed")
            return False
        manager.ack_reinvite(dialog, invite, body)
        return True
