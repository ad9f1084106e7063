"""SDP offer/answer (RFC 3264) for an anchoring PBX, sans-IO.

Theory of operation
-------------------
The PBX stands in the media path: each phone sees an SDP whose address and port are
the PBX's port for that phone's leg, and the engine relays between the legs.

* From the caller's offer, ``callee_offer`` builds what the PBX offers the callee:
  the caller's audio codecs that the engine may carry (G.711 always, others only
  when pass-through is allowed), the other G.711 law appended when only one was
  offered (so a callee that speaks only the other law still connects, transcoded),
  and telephone-event (RFC 4733) whether or not the caller offered it.
* From the callee's answer, ``caller_answer`` answers the caller (RFC 3264 §6): one
  m-line per offered m-line (non-audio ones and extra audio ones rejected with port
  0), the caller's own payload type numbers, the codec the callee chose when the
  caller offered it, else the caller's G.711 law (and the relay transcodes).
* Hold (§8.4): a re-offer with ``sendonly``/``inactive`` or connection address
  0.0.0.0 holds; the PBX answers re-offers itself (``answer_reoffer``) and keeps the
  other leg untouched, so a phone can change address, codec or direction without
  the far phone noticing.
* Session version (§8): our o= line keeps its session id; its version goes up only
  when the body we send on a leg changes, so a refresh re-INVITE gets the same SDP.
* A re-INVITE without SDP (RFC 3261 §14, RFC 3264 §8) asks the PBX for an offer on
  that leg: ``leg_reoffer`` offers the codec in use first (so nothing need change),
  the engine's other G.711 law after it and telephone-event, with every m-line of
  the previous SDP kept in its place (§8: rejected ones stay at port 0);
  ``reoffer_answered`` reads the phone's answer (in its ACK) to it.

Packetization (``a=ptime``, ``a=maxptime``) is only a hint to the sender (RFC 4566
§6): ``stream_of`` clamps it into ``PTIME_MIN``..``PTIME_MAX`` ms and to the
stream's maxptime, so no SDP can make a frame the PBX builds or a timer it sets
larger than 120 ms of audio. Counts (media, formats, lines) are bounded by the SDP
parser (pbx_core/sip/sdp.py; too many is 488).

The connection address of the stream must be an IP address (a host name is refused
with 488: resolving it would block the event loop).

Only the first ``RTP/AVP`` audio stream is anchored (secure or video streams are
rejected in the answer); an offer without one raises NegotiationError (488).
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field

from pbx_core.media.codecs import CODECS
from pbx_core.media.errors import NegotiationError
from pbx_core.sip.errors import ParseError
from pbx_core.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Connection,
    Direction,
    Media,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    parse_sdp,
)

__all__ = [
    "G711_PARTNER",
    "PTIME_MAX",
    "PTIME_MIN",
    "LocalSession",
    "Stream",
    "answer_reoffer",
    "callee_offer",
    "caller_answer",
    "endpoint_answer",
    "leg_reoffer",
    "parse_offer",
    "reoffer_answered",
    "stream_of",
]

TELEPHONE_EVENT = "TELEPHONE-EVENT"
DEFAULT_TE_PT = 101
G711_PARTNER = {"PCMU": "PCMA", "PCMA": "PCMU"}
_G711_STATIC = {"PCMU": 0, "PCMA": 8}
_AVP = ("RTP/AVP", "RTP/AVPF")
PTIME_MIN = 10  # ms: the shortest packets the PBX sends
PTIME_MAX = 120  # ms: 960 bytes of G.711, one Ethernet frame
_DROP_ATTRS = {
    "rtpmap",
    "fmtp",
    "ptime",
    "maxptime",
    "rtcp",
    "rtcp-mux",
    "rtcp-fb",
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "crypto",
    "fingerprint",
    "setup",
    "mid",
    "ssrc",
    "msid",
    "sendrecv",
    "sendonly",
    "recvonly",
    "inactive",
}


@dataclass(slots=True)
class Stream:
    """What one SDP says about its audio stream."""

    address: str
    port: int
    codecs: dict[int, RtpMap]  # payload type -> rtpmap, in the SDP's preference order
    fmtps: dict[int, str] = field(default_factory=dict)
    te_pt: int | None = None
    te_fmtp: str | None = None
    ptime: int | None = None
    direction: Direction = Direction.SENDRECV
    index: int = 0  # which m-line of its SDP

    @property
    def held(self) -> bool:
        """RFC 3264 §8.4 hold: the phone will not receive (or 0.0.0.0, RFC 2543)."""
        return (
            self.direction in (Direction.SENDONLY, Direction.INACTIVE)
            or self.address in ("0.0.0.0", "::")
            or self.port == 0
        )

    @property
    def sends(self) -> bool:
        return self.direction in (Direction.SENDRECV, Direction.SENDONLY) and self.port != 0

    @property
    def receives(self) -> bool:
        return (
            self.direction in (Direction.SENDRECV, Direction.RECVONLY)
            and self.port != 0
            and self.address not in ("0.0.0.0", "::")
        )

    def names(self) -> dict[str, int]:
        """Encoding name (upper case) -> first payload type carrying it."""
        out: dict[str, int] = {}
        for pt, m in self.codecs.items():
            out.setdefault(m.encoding.upper(), pt)
        return out


def parse_offer(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; a parse error becomes NegotiationError with its status
    (400 malformed, 488 beyond the parser's bounds)."""
    try:
        return parse_sdp(data)
    except ParseError as exc:
        raise NegotiationError(f"bad SDP: {exc.reason}", exc.status) from exc


def packet_time(media: Media) -> int | None:
    """The stream's ``a=ptime`` as whole ms within PTIME_MIN..PTIME_MAX and not above
    its ``a=maxptime`` (both only hints, RFC 4566 §6); None when it gave none."""
    ptime, maxptime = media.ptime, media.maxptime
    if ptime is None:
        return None
    if maxptime is not None:
        ptime = min(ptime, maxptime)
    return int(min(max(ptime, PTIME_MIN), PTIME_MAX))


def stream_of(sd: SessionDescription) -> Stream:
    """The first RTP/AVP audio stream of an SDP (port 0 streams count: a re-offer may
    disable it).  Raises NegotiationError when there is none."""
    for index, m in enumerate(sd.media):
        if m.media.lower() != "audio" or m.proto.upper() not in _AVP:
            continue
        conn = sd.connection_of(m)
        codecs: dict[int, RtpMap] = {}
        fmtps: dict[int, str] = {}
        te_pt = te_fmtp = None
        # One pass over the attributes, then one lookup per format: linear in the SDP.
        maps = m.rtpmaps()
        all_fmtps = _fmtps(m)
        for fmt in m.formats:
            if not (fmt.isascii() and fmt.isdigit()) or len(fmt) > 3 or int(fmt) > 127:
                continue
            pt = int(fmt)
            rtpmap = maps.get(str(pt)) or STATIC_PAYLOAD_TYPES.get(pt)
            if rtpmap is None:
                continue
            if rtpmap.encoding.upper() == TELEPHONE_EVENT:
                if te_pt is None and rtpmap.clock_rate == 8000:
                    te_pt, te_fmtp = pt, all_fmtps.get(fmt)
                continue
            codecs[pt] = rtpmap
            f = all_fmtps.get(fmt)
            if f is not None:
                fmtps[pt] = f
        address = conn.address if conn is not None else "0.0.0.0"
        if m.port != 0 and not _is_ip(address):
            # A host name would be resolved by every sendto, blocking the event loop.
            raise NegotiationError(f"the connection address {address[:40]!r} is not an IP address")
        return Stream(
            address=address,
            port=m.port,
            codecs=codecs,
            fmtps=fmtps,
            te_pt=te_pt,
            te_fmtp=te_fmtp,
            ptime=packet_time(m),
            direction=sd.direction_of(m),
            index=index,
        )
    raise NegotiationError("the SDP has no RTP/AVP audio stream")


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _fmtps(m: Media) -> dict[str, str]:
    """``a=fmtp`` parameters by format (the first line for a format counts)."""
    out: dict[str, str] = {}
    for n, v in m.attributes:
        if n == "fmtp" and v is not None:
            f, _, params = v.partition(" ")
            out.setdefault(f, params.strip())
    return out


class LocalSession:
    """Our o= line on one leg: fixed session id, version bumped when the body changes."""

    def __init__(self, address: str, session_id: int) -> None:
        self.origin = Origin(
            "wafer", str(session_id), 1, "IN", "IP6" if ":" in address else "IP4", address
        )
        self._last: str | None = None

    @property
    def last(self) -> str | None:
        """The last SDP we sent on this leg, its o= version at 0 (None before the
        first)."""
        return self._last

    def body(self, sd: SessionDescription) -> bytes:
        sd.origin = copy.copy(self.origin)
        sd.origin.sess_version = 0
        text = str(sd)
        if self._last is not None and text != self._last:
            self.origin.sess_version += 1
        self._last = text
        sd.origin.sess_version = self.origin.sess_version
        return bytes(sd)


def _conn(address: str) -> Connection:
    return Connection("IN", "IP6" if ":" in address else "IP4", address)


def _audio_media(
    port: int,
    codecs: list[tuple[int, RtpMap, str | None]],
    te: tuple[int, str | None] | None,
    ptime: int | None,
    direction: Direction,
    extra: list[tuple[str, str | None]] | None = None,
) -> Media:
    m = Media("audio", port, "RTP/AVP", [str(pt) for pt, _, _ in codecs])
    for pt, rtpmap, fmtp in codecs:
        m.attributes.append(
            ("rtpmap", str(RtpMap(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.params)))
        )
        if fmtp is not None:
            m.attributes.append(("fmtp", f"{pt} {fmtp}"))
    if te is not None:
        m.formats.append(str(te[0]))
        m.attributes.append(("rtpmap", f"{te[0]} telephone-event/8000"))
        m.attributes.append(("fmtp", f"{te[0]} {te[1] or '0-16'}"))
    if ptime is not None:
        m.attributes.append(("ptime", str(ptime)))
    m.attributes.extend(extra or [])
    m.attributes.append((direction.value, None))
    return m


def _session(address: str, media: list[Media]) -> SessionDescription:
    return SessionDescription(
        name="wafer", connection=_conn(address), timings=[Timing()], media=media
    )


def callee_offer(
    caller: Stream,
    address: str,
    port: int,
    local: LocalSession,
    allowed: tuple[str, ...] = ("PCMU", "PCMA"),
    passthrough: bool = False,
) -> bytes:
    """The offer the PBX sends the callee for a caller's stream (see module doc)."""
    allowed_up = tuple(a.upper() for a in allowed)
    chosen: list[tuple[int, RtpMap, str | None]] = []
    names: set[str] = set()
    for pt, rtpmap in caller.codecs.items():
        name = rtpmap.encoding.upper()
        known = name in CODECS and rtpmap.clock_rate == 8000
        usable = (known and name in allowed_up) or (passthrough and not known)
        if usable and name not in names:
            chosen.append((pt, rtpmap, caller.fmtps.get(pt)))
            names.add(name)
    for _, rtpmap, _ in list(chosen):
        partner = G711_PARTNER.get(rtpmap.encoding.upper())
        if partner and partner not in names and partner in allowed_up:
            static = _G711_STATIC[partner]
            chosen.append((static, RtpMap(static, partner, 8000), None))
            names.add(partner)
    if not chosen:
        offered = ", ".join(m.encoding for m in caller.codecs.values()) or "none"
        raise NegotiationError(
            f"no codec in common (offered: {offered}; allowed: {', '.join(allowed)})"
        )
    te_pt = caller.te_pt if caller.te_pt is not None else _free_pt(chosen)
    media = _audio_media(port, chosen, (te_pt, caller.te_fmtp), caller.ptime, Direction.SENDRECV)
    return local.body(_session(address, [media]))


def _free_pt(chosen: list[tuple[int, RtpMap, str | None]]) -> int:
    used = {pt for pt, _, _ in chosen}
    candidates: list[int] = [DEFAULT_TE_PT, *range(96, 128)]
    for pt in candidates:
        if pt not in used:
            return pt
    raise NegotiationError("no free dynamic payload type for telephone-event")


@dataclass(frozen=True, slots=True)
class Choice:
    """The outcome of answering one offer: which payload types the offerer will use
    (codec pt, its rtpmap) and telephone-event pt, or None."""

    pt: int
    rtpmap: RtpMap
    te_pt: int | None


def _answer_sd(
    offer_sd: SessionDescription,
    offer: Stream,
    address: str,
    port: int,
    choice: Choice,
    ptime: int | None,
) -> SessionDescription:
    media: list[Media] = []
    for index, m in enumerate(offer_sd.media):
        if index != offer.index:
            # RFC 3264 §6: reject by port 0, keeping the m-line's media and formats.
            media.append(Media(m.media, 0, m.proto, list(m.formats) or ["0"]))
            continue
        te = (choice.te_pt, offer.te_fmtp) if choice.te_pt is not None else None
        fmtp = offer.fmtps.get(choice.pt)
        media.append(
            _audio_media(
                port, [(choice.pt, choice.rtpmap, fmtp)], te, ptime, offer.direction.reversed()
            )
        )
    return _session(address, media)


def caller_answer(
    offer_sd: SessionDescription,
    caller: Stream,
    callee: Stream,
    address: str,
    port: int,
    local: LocalSession,
) -> tuple[bytes, Choice]:
    """The PBX's answer to the caller given the callee's answer (see module doc)."""
    callee_names = [m.encoding.upper() for m in callee.codecs.values()]
    caller_names = caller.names()
    pick: str | None = None
    for name in callee_names:
        if name in caller_names:
            pick = name
            break
        partner = G711_PARTNER.get(name)
        if partner and partner in caller_names:
            pick = partner
            break
    if pick is None:
        raise NegotiationError("the callee answered with no codec the caller offered")
    pt = caller_names[pick]
    choice = Choice(pt, caller.codecs[pt], caller.te_pt)
    sd = _answer_sd(offer_sd, caller, address, port, choice, caller.ptime)
    return local.body(sd), choice


def answer_reoffer(
    offer_sd: SessionDescription,
    offer: Stream,
    current: str | None,
    acceptable: tuple[str, ...],
    address: str,
    port: int,
    local: LocalSession,
    te_ok: bool = True,
) -> tuple[bytes, Choice]:
    """Answer an offer the PBX terminates itself (re-INVITE on an anchored leg, or a
    call the PBX answers).  Keeps ``current`` codec when it is still offered (no
    transcoding change mid-call), else the first offered codec in ``acceptable``."""
    names = offer.names()
    acceptable_up = [a.upper() for a in acceptable]
    pick = None
    if current is not None and current.upper() in names and current.upper() in acceptable_up:
        pick = current.upper()
    else:
        for pt, m in offer.codecs.items():
            del pt
            if m.encoding.upper() in acceptable_up:
                pick = m.encoding.upper()
                break
    if pick is None:
        offered = ", ".join(m.encoding for m in offer.codecs.values()) or "none"
        raise NegotiationError(f"no acceptable codec offered (offered: {offered})")
    pt = names[pick]
    choice = Choice(pt, offer.codecs[pt], offer.te_pt if te_ok else None)
    sd = _answer_sd(offer_sd, offer, address, port, choice, offer.ptime)
    return local.body(sd), choice


def endpoint_answer(
    offer_sd: SessionDescription,
    offer: Stream,
    acceptable: tuple[str, ...],
    address: str,
    port: int,
    local: LocalSession,
) -> tuple[bytes, Choice]:
    """Answer a call the PBX terminates (IVR, voicemail, echo test): G.711 only."""
    return answer_reoffer(offer_sd, offer, None, acceptable, address, port, local)


def leg_reoffer(
    phone: Stream,
    pt: int,
    te_pt: int | None,
    more: tuple[str, ...],
    address: str,
    port: int,
    local: LocalSession,
) -> bytes:
    """The PBX's offer on a negotiated leg, for a phone that re-INVITEd without SDP.

    ``phone`` is the phone's last SDP stream on the leg and ``pt`` the payload type of
    the codec in use (a number of that SDP); ``more`` are further codecs (G.711) to
    offer after it. The m-lines of our previous SDP on the leg keep their places
    (RFC 3264 §8); only the audio one has a port. NegotiationError when the leg has
    not been negotiated."""
    previous = local.last
    rtpmap = phone.codecs.get(pt)
    if previous is None or rtpmap is None:
        raise NegotiationError("nothing negotiated on this leg yet", 500)
    chosen: list[tuple[int, RtpMap, str | None]] = [(pt, rtpmap, phone.fmtps.get(pt))]
    if rtpmap.encoding.upper() in CODECS:  # pass-through codecs are never swapped
        for name in more:
            static = _G711_STATIC.get(name.upper())
            if static is not None and all(
                c[1].encoding.upper() != name.upper() and c[0] != static for c in chosen
            ):
                chosen.append((static, RtpMap(static, name.upper(), 8000), None))
    te = te_pt if te_pt is not None else _free_pt(chosen)
    audio = _audio_media(port, chosen, (te, phone.te_fmtp), phone.ptime, Direction.SENDRECV)
    before = parse_offer(previous).media
    if phone.index >= len(before):
        raise NegotiationError("the leg's audio stream is not in our last SDP", 500)
    media = [
        audio if index == phone.index else Media(m.media, 0, m.proto, list(m.formats) or ["0"])
        for index, m in enumerate(before)
    ]
    return local.body(_session(address, media))


def reoffer_answered(
    offer: bytes, answer: SessionDescription, current: str
) -> tuple[Stream, Choice]:
    """The phone's answer to our ``leg_reoffer``: its stream and the codec we send
    from now on, which stays ``current`` when the answer keeps it (no transcoding
    change mid-call), else the answer's first codec that we offered.
    NegotiationError (400) when it names none."""
    ours = stream_of(parse_offer(offer)).names()
    stream = stream_of(answer)
    pick: int | None = None
    for pt, m in stream.codecs.items():
        name = m.encoding.upper()
        if name == current.upper():
            pick = pt
            break
        if pick is None and name in ours:
            pick = pt
    if pick is None:
        answered = ", ".join(m.encoding for m in stream.codecs.values()) or "none"
        raise NegotiationError(f"the answer has no codec we offered (answered: {answered})")
    return stream, Choice(pick, stream.codecs[pick], stream.te_pt)
