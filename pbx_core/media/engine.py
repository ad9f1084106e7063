"""The media engine: port pairs, anchored two-leg calls and standalone endpoints.

    engine = MediaEngine(loop, "192.0.2.10", 10000, 20000)
    call, offer_for_callee = engine.anchor(offer_from_caller)
    answer_for_caller = call.answer(answer_from_callee)
    ...
    call.close()

See pbx_core/media/README.md for the whole API and the theory of operation.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbx_core.media import negotiation as neg
from pbx_core.media.audio import Audio, AudioSource
from pbx_core.media.bridge import MixBridge, beep_clip
from pbx_core.media.codecs import registry
from pbx_core.media.dtmf import parse_dtmf_info
from pbx_core.media.errors import MediaError, NegotiationError, PortsExhaustedError
from pbx_core.media.events import DtmfEvent, LegStats
from pbx_core.media.leg import MediaLeg
from pbx_core.media.ports import PortAllocator
from pbx_core.media.recorder import RecordDone, Recording
from pbx_core.media.tones import tone
from pbx_core.sip.sdp import SessionDescription

log = logging.getLogger("pbx.media")

__all__ = ["AnchoredCall", "MediaEngine", "MediaSettings"]

CALLER, CALLEE = "caller", "callee"
_BUFSIZE = 65536


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """Engine settings (README "Settings" lists them with their meaning)."""

    codecs: tuple[str, ...] = ("PCMU", "PCMA")  # what the PBX offers/accepts, in order
    passthrough: bool = False  # also relay codecs the PBX cannot decode (no MOH/tones)
    country: str = "us"  # call-progress tone cadences
    rtcp_interval: float = 5.0  # seconds between RTCP reports (randomised ±50 %)
    inband_dtmf: bool = True  # listen for in-band tones on legs without telephone-event
    tick: float = 0.5  # housekeeping period (RTCP, inactivity)


class MediaEngine:
    """All RTP of one PBX.  Create it inside the running loop; ``close()`` at exit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port_min: int = 10000,
        port_max: int = 20000,
        settings: MediaSettings | None = None,
        bind: str | None = None,
    ) -> None:
        self.loop = loop
        self.address = address  # what the SDP advertises
        self.bind = bind if bind is not None else address
        self.settings = settings or MediaSettings()
        self.ports = PortAllocator(port_min, port_max)
        self.buffer = bytearray(_BUFSIZE)  # the one receive buffer of every socket
        self.view = memoryview(self.buffer)
        self.cname = f"wafer-pbx@{address}"
        self.legs: set[MediaLeg] = set()
        self.calls: set[AnchoredCall] = set()
        self.send_drops = 0
        self._family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        self._tones: dict[tuple[str, str], tuple[Audio, bool]] = {}
        self._files: dict[tuple[str, int, int], Audio] = {}
        self._tick: asyncio.TimerHandle | None = loop.call_later(
            self.settings.tick, self._housekeep
        )
        self.closed = False

    # ------------------------------------------------------------------
    # Ports and legs

    def _bind(self, port: int) -> socket.socket | None:
        s = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.bind((self.bind, port))
        except OSError:
            s.close()
            return None
        return s

    def open_leg(self, side: str, address: str | None = None) -> MediaLeg:
        """A new leg on a free even/odd port pair; PortsExhaustedError if none.
        `address`: what the leg's SDP names (default the engine's address), e.g.
        the external address for a phone outside the LAN."""
        if self.closed:
            raise MediaError("the media engine is closed")
        for port in self.ports.candidates():
            rtp = self._bind(port)
            if rtp is None:
                continue  # taken by another program: try the next pair
            rtcp = self._bind(port + 1)
            if rtcp is None:
                rtp.close()
                continue
            self.ports.take(port)
            leg = MediaLeg(self, side, port, rtp, rtcp, address)
            self.legs.add(leg)
            return leg
        raise PortsExhaustedError(
            f"no free RTP port pair ({self.ports.in_use} of {self.ports.count} in use)"
        )

    def release(self, leg: MediaLeg) -> None:
        self.legs.discard(leg)
        self.ports.release(leg.port)

    def rewire(self, leg: MediaLeg) -> None:
        """Recompute who forwards to whom after a leg's output changed."""
        legs = [leg] if leg.partner is None else [leg, leg.partner]
        for x in legs:
            p = x.partner
            if x.mode == "echo":
                x._forward_to = x
            elif p is not None and p.mode == "relay":
                x._forward_to = p
            else:
                x._forward_to = None
            if x._forward_to is not None:
                x._forward_to._resync = True

    # ------------------------------------------------------------------
    # Calls

    def anchor(
        self,
        offer: bytes,
        caller: str = CALLER,
        callee: str = CALLEE,
        addresses: tuple[str | None, str | None] = (None, None),
    ) -> tuple[AnchoredCall, bytes]:
        """Anchor a call: from the caller's SDP offer, the call and the offer to send
        the callee.  `addresses`: what each leg's SDP names (None: the engine's).
        Raises NegotiationError (488/400) or PortsExhaustedError (503)."""
        offer_sd = neg.parse_offer(offer)
        stream = neg.stream_of(offer_sd)
        a = self.open_leg(caller, addresses[0])
        try:
            b = self.open_leg(callee, addresses[1])
        except Exception:
            a.close()
            raise
        call = AnchoredCall(self, a, b, offer_sd, stream)
        try:
            body = neg.callee_offer(
                stream,
                b.address,
                b.port,
                b.local,
                self.settings.codecs,
                self.settings.passthrough,
            )
        except Exception:
            call.close()  # whatever failed, the two port pairs are free again
            raise
        self.calls.add(call)
        return call, body

    def endpoint(
        self,
        offer: bytes,
        name: str = "endpoint",
        address: str | None = None,
        nat_peer: str | None = None,
    ) -> tuple[MediaLeg, bytes]:
        """Terminate a call in the PBX (IVR, voicemail, echo test): the leg and the SDP
        answer.  The leg sends nothing until told to play, tone or echo.  `address`
        and `nat_peer` as for ``open_leg`` and ``MediaLeg.nat_peer``."""
        offer_sd = neg.parse_offer(offer)
        stream = neg.stream_of(offer_sd)
        leg = self.open_leg(name, address)
        leg.nat_peer = nat_peer
        try:
            body, choice = neg.endpoint_answer(
                offer_sd, stream, self.settings.codecs, leg.address, leg.port, leg.local
            )
            leg.mode = "silent"
            leg._pending_mode = "silent"
            leg._apply(stream, choice)
        except Exception:
            leg.close()  # whatever failed, the port pair is free again
            raise
        return leg, body

    def extend(
        self, leg: MediaLeg, side: str = CALLEE, address: str | None = None
    ) -> tuple[AnchoredCall, bytes]:
        """Anchor `leg`, already negotiated with its phone (an application's endpoint,
        or the leg that stays when its far end is transferred), to a new leg `side`:
        the call (`leg` is its caller) and the offer for the new phone: the codec in
        use on `leg` first, then the other G.711 law. The new phone's answer goes to
        `answer()` and moves only the new leg; `leg`'s phone sees no change.
        NegotiationError (500) when `leg` is not negotiated; PortsExhaustedError."""
        phone = leg.stream
        rtpmap = phone.codecs.get(leg.pt) if phone is not None else None
        if phone is None or rtpmap is None or leg.closed:
            raise NegotiationError("the leg has nothing negotiated to extend", 500)
        stream = neg.Stream(
            phone.address,
            phone.port,
            {leg.pt: rtpmap},
            {k: v for k, v in phone.fmtps.items() if k == leg.pt},
            leg.te_pt,
            phone.te_fmtp,
            phone.ptime,
        )
        other, body = self._offering_leg(stream, side, address)
        call = AnchoredCall(self, leg, other, None, phone)
        call._answer_body = b""  # the caller's SDP stays as negotiated
        leg._pending_mode = "relay"  # relays once answered; a tone meanwhile is its own
        if leg.mode != "source":
            leg.mode = "relay"
        self.calls.add(call)
        return call, body

    def join(self, caller: MediaLeg, callee: MediaLeg) -> AnchoredCall:
        """Relay two legs, each negotiated with its phone (an attended transfer joins
        the far ends of two calls): neither phone's SDP changes; the G.711 laws are
        transcoded. NegotiationError (500) when a leg is not negotiated."""
        if caller.stream is None or callee.stream is None or caller.closed or callee.closed:
            raise NegotiationError("a leg to join has nothing negotiated", 500)
        call = AnchoredCall(self, caller, callee, None, caller.stream)
        call._answer_body = b""
        call.answered = True
        for leg in (caller, callee):
            leg._pending_mode = "relay"
            if leg.mode != "source":
                leg.mode = "relay"
        call._wire()
        self.calls.add(call)
        return call

    def _offering_leg(
        self, stream: neg.Stream, side: str, address: str | None
    ) -> tuple[MediaLeg, bytes]:
        """A new leg and our offer on it for a callee of `stream` (the caller's); the
        leg is closed again when the offer cannot be made."""
        leg = self.open_leg(side, address)
        try:
            body = neg.callee_offer(
                stream,
                leg.address,
                leg.port,
                leg.local,
                self.settings.codecs,
                self.settings.passthrough,
            )
        except Exception:
            leg.close()
            raise
        return leg, body

    def offer_endpoint(self, leg: MediaLeg) -> bytes:
        """An offer for a re-INVITE without SDP on an endpoint leg (see
        ``AnchoredCall.offer``)."""
        return _leg_offer(self, leg)

    def offer_leg(
        self, caller_offer: bytes, side: str = CALLEE, address: str | None = None
    ) -> tuple[MediaLeg, bytes]:
        """A leg of its own for one callee, and our offer to it built from the caller's
        offer (as `anchor` makes the callee's): the callee's answer goes to
        `answer_endpoint`; the leg sends nothing until told (it may later be
        `join`ed to the caller's). NegotiationError (488/400), PortsExhaustedError."""
        stream = neg.stream_of(neg.parse_offer(caller_offer))
        leg, body = self._offering_leg(stream, side, address)
        leg.mode = "silent"
        leg._pending_mode = "silent"
        leg.pending_offer = body
        return leg, body

    def answer_endpoint(self, leg: MediaLeg, sdp: bytes) -> None:
        """The phone's answer to ``offer_endpoint`` (in its ACK)."""
        _take_answer(leg, sdp)

    def reoffer_endpoint(self, leg: MediaLeg, offer: bytes) -> bytes:
        """Answer a re-INVITE on an endpoint leg."""
        offer_sd = neg.parse_offer(offer)
        stream = neg.stream_of(offer_sd)
        body, choice = neg.answer_reoffer(
            offer_sd, stream, leg.codec, self.settings.codecs, leg.address, leg.port, leg.local
        )
        leg._apply(stream, choice)
        return body

    def dtmf_info_endpoint(self, leg: MediaLeg, content_type: str, body: bytes) -> DtmfEvent | None:
        """A SIP INFO on an endpoint leg: its key press, reported to the leg's
        ``on_dtmf`` callbacks (and ending a recording on a terminator), or None when
        the body is not DTMF.  MediaError(400) for a malformed DTMF body."""
        event = parse_dtmf_info(content_type, body, leg.side)
        if event is not None:
            leg._emit(event)
        return event

    # ------------------------------------------------------------------
    # Audio

    def tone_audio(self, name: str, country: str | None = None) -> tuple[Audio, bool]:
        """A tone as a clip (cached) and whether it repeats."""
        key = (name.lower(), (country or self.settings.country).lower())
        found = self._tones.get(key)
        if found is None:
            t = tone(*key)
            found = self._tones[key] = (Audio.from_tone(t, f"{key[0]} ({key[1]})"), t.repeat)
        return found

    def load(self, path: str | Path) -> Audio:
        """A WAV file as a clip (cached while the file is unchanged).  MediaError when
        the file is missing or not 8 kHz mono PCM/G.711."""
        p = Path(path)
        try:
            st = p.stat()
            key = (str(p), st.st_mtime_ns, st.st_size)
            found = self._files.get(key)
            if found is None:
                found = Audio.from_wav(p.read_bytes(), str(p))
                if len(self._files) > 256:
                    self._files.clear()
                self._files[key] = found
        except OSError as exc:
            raise MediaError(f"cannot read {p}: {exc.strerror}") from exc
        return found

    # ------------------------------------------------------------------

    def _housekeep(self) -> None:
        now = self.loop.time()
        for leg in list(self.legs):
            if now >= leg.next_rtcp:
                leg.send_rtcp(now)
            leg.check_inactive(now)
        self._tick = self.loop.call_later(self.settings.tick, self._housekeep)

    def stats(self) -> dict[str, int]:
        return {
            "calls": len(self.calls),
            "legs": len(self.legs),
            "ports_in_use": self.ports.in_use,
            "ports_free": self.ports.free,
            "send_drops": self.send_drops,
        }

    def close(self) -> None:
        """Close every call and leg (recordings are finished) and stop the tick."""
        for call in list(self.calls):
            call.close()
        for leg in list(self.legs):
            leg.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.closed = True


HoldCallback = Callable[[str, bool], None]


class AnchoredCall:
    """Two legs relayed to each other: ``caller`` (the phone that sent the offer)
    and ``callee``."""

    def __init__(
        self,
        engine: MediaEngine,
        caller: MediaLeg,
        callee: MediaLeg,
        offer_sd: SessionDescription | None,
        stream: neg.Stream,
    ) -> None:
        self.engine = engine
        self.caller = caller
        self.callee = callee
        caller.partner = callee
        callee.partner = caller
        self._offer_sd = offer_sd
        self._caller_stream = stream
        self._caller_choice: neg.Choice | None = None
        self._answer_body: bytes | None = None
        self.answered = False
        self.music_on_hold: Audio | None = None
        self._moh_on: set[str] = set()
        self._hold_callbacks: list[HoldCallback] = []
        self._tap: MixBridge | None = None  # listening to both legs while recording
        self.closed = False

    def leg(self, side: str) -> MediaLeg:
        if side == self.caller.side:
            return self.caller
        if side == self.callee.side:
            return self.callee
        raise MediaError(f"no leg {side!r} in this call ({self.caller.side}, {self.callee.side})")

    def early_answer(self) -> bytes:
        """An answer for the caller before the callee answered (for a 183 that
        carries the PBX's own ringback).  Fixes the caller's codec: the callee's
        answer must then use it or the other G.711 law."""
        if self._answer_body is not None:
            return self._answer_body
        if self._offer_sd is None:
            raise NegotiationError("no offer from the caller to answer", 500)
        body, choice = neg.answer_reoffer(
            self._offer_sd,
            self._caller_stream,
            None,
            self.engine.settings.codecs,
            self.caller.address,
            self.caller.port,
            self.caller.local,
        )
        self._caller_choice = choice
        self._answer_body = body
        self.caller._apply(self._caller_stream, choice)
        return body

    def answer(self, sdp: bytes) -> bytes:
        """The callee's answer (from a 183 or the 200): returns the answer for the
        caller.  Calling it again with the callee's final answer is allowed."""
        sd = neg.parse_offer(sdp)
        stream = neg.stream_of(sd)
        if not stream.codecs:
            raise NegotiationError("the callee's answer has no codec")
        if self._caller_choice is None and self._offer_sd is not None:
            body, choice = neg.caller_answer(
                self._offer_sd,
                self._caller_stream,
                stream,
                self.caller.address,
                self.caller.port,
                self.caller.local,
            )
            self._caller_choice = choice
            self._answer_body = body
            self.caller._apply(self._caller_stream, choice)
        elif self._answer_body is None:
            raise NegotiationError("no answer for the caller")
        else:
            body = self._answer_body
        # The callee's first answered codec is what we send it.
        callee_pt, callee_map = next(iter(stream.codecs.items()))
        caller_codec = self.caller.codec
        for pt, m in stream.codecs.items():
            if m.encoding.upper() == caller_codec:
                callee_pt, callee_map = pt, m
                break
        te = stream.te_pt
        self.callee._apply(stream, neg.Choice(callee_pt, callee_map, te), we_answered=False)
        self._wire()
        self.answered = True
        return body

    def _wire(self) -> None:
        a, b = self.caller, self.callee
        a._fwd = transcode_map(a, b)
        b._fwd = transcode_map(b, a)
        if not b._fwd.get(a.pt) and a.codec != b.codec:
            log.warning("call %s/%s: no way to carry %s to %s", a.port, b.port, a.codec, b.codec)
        self.engine.rewire(a)

    def reoffer(self, side: str, sdp: bytes) -> bytes:
        """A re-INVITE's offer from one side; returns the PBX's answer to it.

        The PBX answers itself and leaves the other leg as it is: a new address or
        port moves the stream, a codec change is transcoded, ``sendonly``/
        ``inactive``/0.0.0.0 holds (the other side hears ``music_on_hold`` if set)
        and ``sendrecv`` resumes.  NegotiationError (488) leaves the call unchanged."""
        leg = self.leg(side)
        sd = neg.parse_offer(sdp)
        stream = neg.stream_of(sd)
        other = leg.partner
        assert other is not None  # noqa: S101 - anchored legs always have a partner
        acceptable = tuple(self.engine.settings.codecs)
        if self.engine.settings.passthrough and other.codec not in acceptable:
            acceptable += (other.codec,)
        body, choice = neg.answer_reoffer(
            sd, stream, leg.codec, acceptable, leg.address, leg.port, leg.local
        )
        was_held = leg.held
        leg._apply(stream, choice)
        self._wire()
        if leg.held != was_held:
            self._hold_changed(leg, other)
        return body

    def offer(self, side: str) -> bytes:
        """The PBX's offer to ``side``, which re-INVITEd without SDP (RFC 3264 §8):
        the codec in use on that leg first, the engine's other G.711 law after it.
        The answer comes back to ``take_answer``; the other leg is not touched."""
        return _leg_offer(self.engine, self.leg(side))

    def take_answer(self, side: str, sdp: bytes) -> None:
        """The phone's answer (from its ACK) to our ``offer``: it may move the stream,
        change the codec (transcoded), hold or resume.  NegotiationError leaves the
        leg as it was."""
        leg = self.leg(side)
        other = leg.partner
        assert other is not None  # noqa: S101 - anchored legs always have a partner
        was_held = leg.held
        _take_answer(leg, sdp)
        self._wire()
        if leg.held != was_held:
            self._hold_changed(leg, other)

    def _hold_changed(self, leg: MediaLeg, other: MediaLeg) -> None:
        if leg.held and self.music_on_hold is not None and other.codec in ("PCMU", "PCMA"):
            other.play(self.music_on_hold, loop=True)
            self._moh_on.add(other.side)
        elif not leg.held and other.side in self._moh_on:
            self._moh_on.discard(other.side)
            other.stop_play()
        for cb in list(self._hold_callbacks):
            try:
                cb(leg.side, leg.held)
            except Exception:
                log.exception("hold callback failed")

    def on_hold(self, callback: HoldCallback) -> None:
        """Call ``callback(side, held)`` when a side holds or resumes."""
        self._hold_callbacks.append(callback)

    def on_dtmf(self, callback: Callable[[DtmfEvent], None]) -> None:
        """Call ``callback(DtmfEvent)`` for key presses from either side
        (``event.side`` says which)."""
        self.caller.on_dtmf(callback)
        self.callee.on_dtmf(callback)

    def on_inactivity(
        self, seconds: float, callback: Callable[[AnchoredCall, MediaLeg], None]
    ) -> None:
        """Call ``callback(call, leg)`` when a leg that should send has sent no RTP or
        RTCP for ``seconds`` (a dead phone or a lost BYE): tear the call down."""
        for leg in (self.caller, self.callee):
            leg.on_inactivity(seconds, lambda lg: callback(self, lg))

    def dtmf_info(
        self, side: str, content_type: str, body: bytes, relay: bool = True
    ) -> DtmfEvent | None:
        """A SIP INFO received from ``side``: its key press (reported to on_dtmf
        callbacks) or None when the body is not DTMF.  With ``relay``, the press is
        sent on to the other phone as telephone-event or in-band tones.  A malformed
        DTMF body raises MediaError(400)."""
        leg = self.leg(side)
        event = parse_dtmf_info(content_type, body, leg.side)
        if event is None:
            return None
        leg._emit(event)
        other = leg.partner
        if relay and other is not None and other.stream is not None:
            other.send_dtmf(event.digit, event.duration_ms or 100)
        return event

    def listen_only(self, side: str) -> None:
        """`side`'s phone only listens from now on: what it sends is not passed to the
        other phone (one-way intercom). A re-offer or hold keeps it so."""
        other = self.leg(side).partner
        assert other is not None  # noqa: S101 - anchored legs always have a partner
        other._pending_mode = "silent"
        if other.mode != "source":
            other._set_mode("silent")

    def aside(self, side: str) -> MediaLeg:
        """`side`'s phone steps aside (an in-call application talks to it): it hears
        nothing of the other phone, which hears music on hold (silence without any)
        and nothing of it. Its leg is returned for the application; `back` undoes it."""
        leg = self.leg(side)
        other = leg.partner
        assert other is not None  # noqa: S101 - anchored legs always have a partner
        leg.stop_play()
        leg._pending_mode = "silent"
        leg._set_mode("silent")
        other.stop_play()
        if self.music_on_hold is not None and other.codec in ("PCMU", "PCMA"):
            other.play(self.music_on_hold, loop=True)
        else:
            other._pending_mode = "silent"
            other._set_mode("silent")
        return leg

    def back(self, side: str) -> None:
        """`side` is back in the call (after `aside`): the two phones hear each other."""
        leg = self.leg(side)
        other = leg.partner
        assert other is not None  # noqa: S101 - anchored legs always have a partner
        for x in (leg, other):
            x.stop_play()
            x._pending_mode = "relay"
            x._set_mode("relay")
        self._wire()

    def split(self, keep: str) -> tuple[MediaLeg, MediaLeg]:
        """Take both legs (caller, callee) out of the call, each open and negotiated
        with its phone (silent, unpartnered; the leg `keep` keeps its key-press and
        inactivity callbacks, for the application it talks to): the call is over. An
        attended transfer by keys holds one phone aside while the other consults a
        third (pbx/call_consult.py)."""
        self.stop_record()
        self.closed = True
        self.engine.calls.discard(self)
        self._moh_on.clear()
        self._hold_callbacks.clear()
        self.caller.unbind(keep_callbacks=keep == self.caller.side)
        self.callee.unbind(keep_callbacks=keep == self.callee.side)
        return self.caller, self.callee

    def swap_caller(self, leg: MediaLeg) -> None:
        """`leg` (negotiated with its phone) takes the caller's place and the caller's
        leg closes: the callee's phone sees no change, ringing or answered (an
        attended transfer completes: the held phone takes the transferor's place).
        The G.711 laws are transcoded as for `MediaEngine.join`."""
        if leg.stream is None or leg.closed or self.closed:
            raise NegotiationError("the leg to swap in has nothing negotiated", 500)
        old, self.caller = self.caller, leg
        self._caller_stream = leg.stream
        leg.side = old.side
        leg.partner = self.callee
        self.callee.partner = leg
        self._moh_on.discard(old.side)
        old.close()
        leg._pending_mode = "relay"
        if leg.mode != "source":
            leg._set_mode("relay")
        if self.answered:
            self._wire()

    def detach(self, side: str, keep_callbacks: bool = False) -> MediaLeg:
        """Take `side`'s leg out of the call, open and still negotiated with its phone
        (silent, unpartnered, its callbacks cleared: `MediaLeg.unbind`), and close the
        other leg; the call is over (`keep_callbacks`: the leg's key-press and
        inactivity callbacks stay, for the application it returns to). The leg goes
        on as an application's endpoint or in another call (`MediaEngine.extend`,
        `join`)."""
        keep = self.leg(side)
        drop = self.callee if keep is self.caller else self.caller
        self.stop_record()
        self.closed = True
        self.engine.calls.discard(self)
        self._moh_on.clear()
        self._hold_callbacks.clear()
        drop.close()
        keep.unbind(keep_callbacks)
        return keep

    # ------------------------------------------------------------------
    # Recording both phones (a call recorded on demand)

    def record(
        self,
        path: str | Path,
        fmt: str = "ulaw",
        max_seconds: float | None = None,
        on_done: RecordDone | None = None,
    ) -> None:
        """Record both phones into one WAV (8 kHz mono, ``fmt`` as for
        ``MediaLeg.record``): what each sends, mixed (a listening MixBridge, ``tap``:
        the relay goes on untouched; the legs decode only while recording). It ends
        at ``max_seconds``, ``stop_record``, or when the call closes or a leg leaves
        it (``detach``); ``on_done(Recording)`` then, the file appearing whole.
        MediaError: the call is closed or already recording, a leg is not G.711 or not
        negotiated yet, or the file cannot be written."""
        if self.closed or self._tap is not None:
            raise MediaError("this call is closed or already recording")
        tap = MixBridge(self.engine, max_members=2, tap=True)

        def done(result: Recording) -> None:
            if self._tap is tap:  # ended by itself (max, a disk error): stop listening
                self._tap = None
                tap.close()
            if on_done is not None:
                on_done(result)

        try:
            tap.add(self.caller)
            tap.add(self.callee)
            tap.record(path, fmt, max_seconds, done)
        except MediaError:
            tap.close()  # no recorder yet: nothing written
            raise
        self._tap = tap

    @property
    def recording(self) -> bool:
        """Whether ``record`` is writing a file now."""
        return self._tap is not None

    def stop_record(self) -> Path | None:
        """Finish the recording (the file appears); its path, None if there was none
        or it could not be written."""
        tap, self._tap = self._tap, None
        if tap is None:
            return None
        path = tap.stop_record()
        tap.close()
        return path

    def beep(self, side: str, kind: str = "on") -> None:
        """A short beep to `side`'s phone over what it hears (then that comes back):
        ``on`` rising, ``off`` falling, ``error`` low. Nothing on a leg that cannot
        play (not G.711, not negotiated, closed)."""
        leg = self.leg(side)
        if leg.closed or leg.stream is None or leg.codec not in ("PCMU", "PCMA"):
            return
        clip = beep_clip(kind)
        leg._play_source(AudioSource(clip), None, temporary=True)

    def stats(self) -> dict[str, LegStats]:
        """Per side: packets, bytes, lost, jitter, remote reports (for the CDR)."""
        return {self.caller.side: self.caller.stats(), self.callee.side: self.callee.stats()}

    def close(self) -> None:
        """Stop relaying and release both port pairs (idempotent)."""
        if self.closed:
            return
        self.stop_record()  # the file is whole before the legs go
        self.closed = True
        self.caller.close()
        self.callee.close()
        self.engine.calls.discard(self)


def transcode_map(leg: MediaLeg, other: MediaLeg) -> dict[int, tuple[int, bytes | None]]:
    """How packets from ``other`` are mapped into ``leg``: other's payload types
    -> (leg's payload type, translate table or None)."""
    ours = {name: pt for pt, name in reversed(list(leg._pts.items()))}
    ours[leg.codec] = leg.pt
    out: dict[int, tuple[int, bytes | None]] = {}
    for pt, name in other._pts.items():
        if name in ours:
            out[pt] = (ours[name], None)
        else:
            table = registry.transcode_table(name, leg.codec)
            if table is not None:
                out[pt] = (leg.pt, table)
    return out


def _leg_offer(engine: MediaEngine, leg: MediaLeg) -> bytes:
    if leg.stream is None:
        raise NegotiationError("nothing negotiated on this leg yet", 500)
    body = neg.leg_reoffer(
        leg.stream,
        leg.pt,
        leg.te_pt,
        engine.settings.codecs,
        leg.address,
        leg.port,
        leg.local,
    )
    leg.pending_offer = body
    return body


def _take_answer(leg: MediaLeg, sdp: bytes) -> None:
    offer, leg.pending_offer = leg.pending_offer, None
    if offer is None:
        raise NegotiationError("an answer to no offer of ours", 400)
    stream, choice = neg.reoffer_answered(offer, neg.parse_offer(sdp), leg.codec)
    leg._apply(stream, choice, we_answered=False)
