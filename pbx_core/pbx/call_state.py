"""What the B2BUA keeps about a call (calls.py drives it): the `Call`, the `Fork`s it
rings and the `Target`s they ring, and the small pure helpers around them.

A call has two sides, named for the dialogs: "a" faces the caller (we are its UAS),
"b" the callee (we are its UAC). The media engine names its legs for the phones
("caller", "callee"); `media_side` maps one to the other.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pbx_core.media.bridge import MixBridge
from pbx_core.media.engine import AnchoredCall
from pbx_core.media.events import LegStats
from pbx_core.media.leg import MediaLeg
from pbx_core.media.multicast import MulticastSender
from pbx_core.pbx.dialog import Dialog
from pbx_core.pbx.session_timer import Accept, LegTimer
from pbx_core.sip.events import AnyServerKey, ClientKey
from pbx_core.sip.headers import NameAddr
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import URI, parse_uri
from pbx_core.transport.manager import Address

T1, T2 = 0.5, 4.0  # RFC 3261 §17.1.1.1, for the 2xx we retransmit (§13.3.1.4)

# Methods this build acts on. Allow must tell the truth (RFC 3261 §20.5).
ALLOW = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "UPDATE",
    "INFO",
    "PRACK",
    "REFER",
    "SUBSCRIBE",  # subscriptions.py (message-summary)
)
# Methods we recognise but do not serve: 405 with Allow (RFC 3261 §8.2.1). REFER is the
# core's (call_ops.py: transfer), never relayed.
KNOWN_METHODS = frozenset({"MESSAGE", "NOTIFY", "PUBLISH", "REFER", "SUBSCRIBE", *ALLOW})
# Inside a call, what the B2BUA passes to the other phone (re-issued on that dialog:
# call_relay.py); every other method is answered here (RFC 3261 §12.2.2).
RELAYED_IN_DIALOG = frozenset({"INVITE", "UPDATE", "INFO"})


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
    # The phone must accept the call (press 1) before the caller is answered: an
    # outside number of a follow-me list, whose own voicemail must not take it.
    confirm: bool = False
    # The callee only listens (one-way intercom): nothing of it reaches the caller.
    one_way: bool = False


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
    step: int = 0  # the ring step that started it (CallManager.ring_more)
    # A fork of a Target with `confirm`: its own media leg (the engine's offer), and
    # whether it answered and is being asked to accept (call_confirm.py).
    leg: MediaLeg | None = None
    confirming: bool = False
    confirm_timer: asyncio.TimerHandle | None = None


@dataclass
class AwaitingAck:
    """Our 2xx to an INVITE from one side, sent again until its ACK (RFC 3261
    §13.3.1.4, call_acks.py). `offer`: the 2xx carries an offer, the ACK the answer,
    which `on_ack` gets (None when no ACK came in 64*T1)."""

    side: str
    cseq: int
    resp: Response
    dest: Address  # where the INVITE came from
    offer: bool = False
    on_ack: Callable[[Request | None], None] | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class Replacement:
    """The far end of an answered call is being replaced (call_ops.py): the leg that
    stays hears ringback while routing rings the new one; `on_done` gets 200 when it
    answered, else the final status (487: the call ended meanwhile)."""

    kind: str  # "bridge" (an application's), "transfer" (REFER), "recall"
    on_done: Callable[[int], None]


@dataclass
class Consult:
    """An attended transfer by keys (call_consult.py): the transferor is side "a" and
    talks to the new far end (side "b", rung as a replacement); the held party's
    dialog is a settled `held` fork with its media leg (music on hold), its session
    timer and whether it takes UPDATE; its dialog maps to side "h". `leg`: the
    transferor's media leg (its in-call application's). `on_done` tells that
    application how it ended (200 joined or went on as a normal call, 487 cancelled
    by the transferor's key, else the far end's failure: back with the held party)."""

    by: str  # the transferring extension
    number: str
    held: Fork
    held_leg: MediaLeg
    held_timer: LegTimer | None
    held_update: bool
    leg: MediaLeg
    on_done: Callable[[int], None]
    side: str = "a"  # the side the transferor's application runs on (call_keys)
    talking: bool = False  # the consulted phone answered


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
    # our 2xx to INVITEs waiting for their ACK, by (side, CSeq number)
    awaiting_ack: dict[tuple[str, int], AwaitingAck] = field(default_factory=dict)
    wall_start: float = field(default_factory=time.time)
    # Hunting and forwarding ring the call again in steps (CallManager.ring_more):
    # the current step, the offer every fork gets, and the engine's routing plan.
    step: int = 0
    b_offer: bytes = b""
    routing: object = None
    # A transfer or an application's bridge ringing a new far end (call_ops.py).
    replacing: Replacement | None = None
    transferor: Dialog | None = None  # the leg that transferred, until told how it went
    # In-call key codes (call_keys.py): digits pressed so far per side, and when; the
    # side that stepped aside into an application.
    keys: dict[str, tuple[str, float]] = field(default_factory=dict)
    aside: str | None = None
    # An attended transfer by keys (`*2`, call_consult.py): the held party and the
    # transferor's consultation, while it lasts.
    consult: Consult | None = None
    # What an application that took a transferred call tells the transferor (Answer's
    # `announce`: park's slot), and the transferor's leg kept to hear it (`##`).
    announce: tuple[str, ...] = ()
    leaving: MediaLeg | None = None
    # A third phone (call_barge.py): the bridge mixing this call while one is in it,
    # the calls of the phones joined to it, what the CDR says of them; for the
    # barging phone's own call, the call it joined.
    mix: MixBridge | None = None
    bargers: list[Call] = field(default_factory=list)
    barged_by: list[str] = field(default_factory=list)
    # What features add to the CDR (`Context.cdr_note`: a queue's name, wait, agent).
    notes: list[str] = field(default_factory=list)
    barging: Call | None = None
    # A page (call_page.py): the bridge the caller talks into, every answering phone in it.
    page: MixBridge | None = None
    page_duplex: bool = False
    page_multicast: MulticastSender | None = None  # a multicast page's RTP sender
    # Files of the call recorded on demand (call_record.py), under recordings/calls/.
    recordings: list[str] = field(default_factory=list)
    # A call the PBX placed itself (call_originate.py): its `Origin`, None otherwise.
    origin: object = None

    def dialog(self, side: str) -> Dialog | None:
        """Our dialog with `side` ("a" or "b"), None before it exists."""
        if side == "a":
            return self.a_dialog
        return self.answered.dialog if self.answered is not None else None


def other_side(side: str) -> str:
    return "b" if side == "a" else "a"


def media_side(side: str) -> str:
    """The media engine's name for the leg facing `side`."""
    return "caller" if side == "a" else "callee"


def tag() -> str:
    return secrets.token_hex(6)


def allows_update(msg: Request | Response) -> bool:
    """The phone said (Allow) that it takes UPDATE (RFC 3311)."""
    return any(
        t.strip().upper() == "UPDATE" for v in msg.headers.getall("allow") for t in v.split(",")
    )


def req_source(call: Call, side: str) -> Address:
    """Where the other side of `call` talks to us from (for our Contact)."""
    if side == "b" and call.answered is not None:
        return call.answered.target.dest
    return call.a_source


def best_status(statuses: list[int]) -> int:
    """The response to give the caller when every fork failed (§16.7 step 6, simplified):
    a 6xx wins, then busy, then the lowest class."""
    six = [s for s in statuses if s >= 600]
    if six:
        return min(six)
    if 486 in statuses:
        return 486
    return min(statuses, key=lambda s: (s // 100, s != 480, s))


def disposition(status: int) -> str:
    if status in (486, 600):
        return "BUSY"
    if status in (408, 480, 487):
        return "NO ANSWER"
    return "FAILED"


def name_addr(display: str | None, uri: str) -> str:
    """A From/To value (no tag) for the B leg."""
    return str(NameAddr(parse_uri(uri), display))


def media_status(call: Call) -> dict[str, object]:
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
            "stray": st.stray,  # from elsewhere than the latched source (NAT trouble)
        }
        for side, st in legs.items()
    }
