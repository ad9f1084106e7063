"""SIP transactions (RFC 3261 §17 with RFC 6026's Accepted state): the four state
machines as tables, timers A-M, sans-IO.

Theory of operation
-------------------
Each machine is one literal table `(State, Input) -> Transition(target, actions)`
copied from the RFC figures (RFC 3261 Figures 5-8 as amended by RFC 6026 Figures 5
and 7). A transaction holds only its state and what the actions need (the request,
the last response, the ACK it built). `TransactionLayer` (transaction_layer.py)
matches messages to transactions, turns them into inputs, runs the actions and
keeps the timers in one heap.

Inputs come from three directions: the peer (a request retransmission, an ACK, a
response), the TU (a response to send) and the clock/transport (a timer, a transport
error). A pair missing from the table is a protocol error, `TransactionError`:

* from the TU (a second final response, a response on a finished transaction) it is
  raised: the TU has a bug;
* from the peer or the transport it is dropped: such input is late, duplicated or
  reordered, which the RFC tells us to absorb (§17.1.1.2, §17.1.2.2, §17.2.2) and which
  must never reach the caller as an exception;
* a timer is never missing: leaving a state cancels every timer that state does not
  list (so Timer A stops at the first 1xx, G and H at the ACK), and a zero duration
  (reliable transport) fires at once, "transition immediately" in the RFC's words.

Timers (T1 = 500 ms, T2 = 4 s, T4 = 5 s by default):

| timer | machine | value | fires in -> does |
|---|---|---|---|
| TIMER_A | INVITE client | T1, doubled each firing; UDP only | Calling -> retransmit INVITE |
| TIMER_B | INVITE client | 64*T1 | Calling -> Terminated, timeout to TU |
| TIMER_D | INVITE client | max(32 s, 64*T1) UDP, 0 reliable | Completed -> Terminated |
| TIMER_E | non-INVITE client | T1 doubling up to T2 (T2 in Proceeding); UDP only | retransmit |
| TIMER_F | non-INVITE client | 64*T1 | Trying/Proceeding -> Terminated, timeout to TU |
| TIMER_K | non-INVITE client | T4 UDP, 0 reliable | Completed -> Terminated |
| TIMER_M | INVITE client (RFC 6026) | 64*T1 | Accepted -> Terminated |
| TIMER_TRYING | INVITE server (§17.2.1) | 200 ms (`trying_delay`) | Proceeding -> send 100 Trying |
| TIMER_G | INVITE server | T1 doubling up to T2; UDP only | Completed -> retransmit final |
| TIMER_H | INVITE server | 64*T1 | Completed -> Terminated, timeout to TU (no ACK) |
| TIMER_I | INVITE server | T4 UDP, 0 reliable | Confirmed -> Terminated |
| TIMER_L | INVITE server (RFC 6026) | 64*T1 | Accepted -> Terminated |
| TIMER_J | non-INVITE server | 64*T1 UDP, 0 reliable | Completed -> Terminated |
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from pbx_core.sip.errors import SipError
from pbx_core.sip.message import Headers, Request, Response

# RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"


class TransactionError(SipError):
    """A (state, input) pair the tables do not allow, or a TU request the layer cannot
    carry out (unknown transaction, ACK as a transaction, no branch). Raised only
    towards the TU: peer input never raises."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 500)


# The three enums below hash by identity: members are singletons compared by
# identity, so that is consistent, and Enum's own __hash__ is a Python function (the
# hash of the name) run for every one of the layer's several dict lookups a message.


class State(enum.Enum):
    __hash__ = object.__hash__  # by identity (see above)

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    __hash__ = object.__hash__  # by identity (see above)

    # from the peer, through the transport
    REQUEST = "request retransmission"
    ACK = "ACK"
    RESP_1XX = "1xx from TL"
    RESP_2XX = "2xx from TL"
    RESP_300_699 = "300-699 from TL"
    # from the TU
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_300_699 = "300-699 from TU"
    # from the transport
    TRANSPORT_ERROR = "transport error"
    # timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "200 ms without a response from the TU"


TIMERS = frozenset(i for i in Input if i.name.startswith("TIMER_"))
PEER_INPUTS = frozenset(
    {Input.REQUEST, Input.ACK, Input.RESP_1XX, Input.RESP_2XX, Input.RESP_300_699}
)
TU_INPUTS = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_300_699})


class Action(enum.Enum):
    __hash__ = object.__hash__  # by identity (see above)

    SEND_REQUEST = "pass the request to the transport (first time or retransmission)"
    SEND_ACK = "send the ACK for a non-2xx final response (built once, §17.1.1.3)"
    REQUEST_TO_TU = "pass the new request to the TU"
    RESPONSE_TO_TU = "pass the response to the TU"
    ACK_TO_TU = "pass the ACK (for a 2xx) to the TU (RFC 6026)"
    SEND_RESPONSE = "send the TU's response and remember it"
    RESEND_RESPONSE = "send the last response again, if there is one"
    SEND_TRYING = "send 100 Trying (§17.2.1)"
    INFORM_TIMEOUT = "tell the TU the transaction timed out"
    INFORM_TRANSPORT_ERROR = "tell the TU the transport failed"
    STOP_TRYING = "cancel the 100 Trying timer: the TU answered"
    START_A = "start Timer A"
    START_B = "start Timer B"
    START_D = "start Timer D"
    START_E = "start Timer E"
    START_F = "start Timer F"
    START_G = "start Timer G"
    START_H = "start Timer H"
    START_I = "start Timer I"
    START_J = "start Timer J"
    START_K = "start Timer K"
    START_L = "start Timer L"
    START_M = "start Timer M"
    START_TRYING = "start the 100 Trying timer"


# Which timer each START_* action arms.
STARTS: Mapping[Action, Input] = {
    a: Input["TIMER_" + a.name.removeprefix("START_")]
    for a in Action
    if a.name.startswith("START_")
}


@dataclass(frozen=True, slots=True)
class Transition:
    target: State
    actions: tuple[Action, ...] = ()


def _to(target: State, *actions: Action) -> Transition:
    return Transition(target, actions)


class Machine:
    """One transaction state machine: its start transition and its table."""

    __slots__ = ("alphabet", "name", "start", "states", "table", "timers_in")

    def __init__(
        self,
        name: str,
        start: Transition,
        alphabet: frozenset[Input],
        table: Mapping[tuple[State, Input], Transition],
    ) -> None:
        self.name = name
        self.start = start
        self.alphabet = alphabet
        self.table = dict(table)
        self.states = frozenset(
            [start.target, *(s for s, _ in table), *(t.target for t in table.values())]
        )
        # The timers a state listens to; entering a state cancels all others.
        self.timers_in: dict[State, frozenset[Input]] = {
            state: frozenset(i for (s, i) in table if s is state and i in TIMERS) for state in State
        }
        for (state, inp), tr in table.items():
            if inp not in alphabet:
                raise ValueError(f"{name}: {inp} is not in the alphabet")
            for action in tr.actions:
                timer = STARTS.get(action)
                if timer is not None and timer not in self.timers_in[tr.target]:
                    raise ValueError(f"{name}: {state}+{inp} starts {timer} it never handles")

    def step(self, state: State, inp: Input) -> Transition:
        tr = self.table.get((state, inp))
        if tr is None:
            raise TransactionError(f"{self.name} transaction: {inp.value} in {state.value}")
        return tr

    def __repr__(self) -> str:
        return f"<Machine {self.name}>"


S = State
I = Input  # noqa: E741  # short alias keeps the tables one transition per line
A = Action

_CLIENT_ALPHABET = frozenset({I.RESP_1XX, I.RESP_2XX, I.RESP_300_699, I.TRANSPORT_ERROR} | TIMERS)
_SERVER_ALPHABET = frozenset({I.REQUEST, I.ACK, I.TRANSPORT_ERROR} | TU_INPUTS | TIMERS)
# An ACK matches INVITE transactions only (§17.2.3): none reaches a non-INVITE one.
_NON_INVITE_SERVER_ALPHABET = _SERVER_ALPHABET - {I.ACK}

# RFC 3261 Figure 5, RFC 6026 Figure 5 (2xx -> Accepted instead of Terminated).
INVITE_CLIENT = Machine(
    "INVITE client",
    _to(S.CALLING, A.SEND_REQUEST, A.START_A, A.START_B),
    _CLIENT_ALPHABET,
    {
        (S.CALLING, I.TIMER_A): _to(S.CALLING, A.SEND_REQUEST, A.START_A),
        (S.CALLING, I.TIMER_B): _to(S.TERMINATED, A.INFORM_TIMEOUT),
        (S.CALLING, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.CALLING, I.RESP_1XX): _to(S.PROCEEDING, A.RESPONSE_TO_TU),
        (S.CALLING, I.RESP_2XX): _to(S.ACCEPTED, A.RESPONSE_TO_TU, A.START_M),
        (S.CALLING, I.RESP_300_699): _to(S.COMPLETED, A.SEND_ACK, A.RESPONSE_TO_TU, A.START_D),
        (S.PROCEEDING, I.RESP_1XX): _to(S.PROCEEDING, A.RESPONSE_TO_TU),
        (S.PROCEEDING, I.RESP_2XX): _to(S.ACCEPTED, A.RESPONSE_TO_TU, A.START_M),
        (S.PROCEEDING, I.RESP_300_699): _to(S.COMPLETED, A.SEND_ACK, A.RESPONSE_TO_TU, A.START_D),
        # §17.1.1.2: a retransmitted final response is ACKed again, not passed up.
        (S.COMPLETED, I.RESP_300_699): _to(S.COMPLETED, A.SEND_ACK),
        (S.COMPLETED, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.COMPLETED, I.TIMER_D): _to(S.TERMINATED),
        # RFC 6026 §8.4: every further 2xx (retransmitted or forked) goes to the TU.
        (S.ACCEPTED, I.RESP_2XX): _to(S.ACCEPTED, A.RESPONSE_TO_TU),
        (S.ACCEPTED, I.TIMER_M): _to(S.TERMINATED),
    },
)

# RFC 3261 Figure 6.
NON_INVITE_CLIENT = Machine(
    "non-INVITE client",
    _to(S.TRYING, A.SEND_REQUEST, A.START_E, A.START_F),
    _CLIENT_ALPHABET,
    {
        (S.TRYING, I.TIMER_E): _to(S.TRYING, A.SEND_REQUEST, A.START_E),
        (S.TRYING, I.TIMER_F): _to(S.TERMINATED, A.INFORM_TIMEOUT),
        (S.TRYING, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.TRYING, I.RESP_1XX): _to(S.PROCEEDING, A.RESPONSE_TO_TU),
        (S.TRYING, I.RESP_2XX): _to(S.COMPLETED, A.RESPONSE_TO_TU, A.START_K),
        (S.TRYING, I.RESP_300_699): _to(S.COMPLETED, A.RESPONSE_TO_TU, A.START_K),
        # §17.1.2.2: in Proceeding Timer E is reset to T2 (see TransactionLayer).
        (S.PROCEEDING, I.TIMER_E): _to(S.PROCEEDING, A.SEND_REQUEST, A.START_E),
        (S.PROCEEDING, I.TIMER_F): _to(S.TERMINATED, A.INFORM_TIMEOUT),
        (S.PROCEEDING, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.PROCEEDING, I.RESP_1XX): _to(S.PROCEEDING, A.RESPONSE_TO_TU),
        (S.PROCEEDING, I.RESP_2XX): _to(S.COMPLETED, A.RESPONSE_TO_TU, A.START_K),
        (S.PROCEEDING, I.RESP_300_699): _to(S.COMPLETED, A.RESPONSE_TO_TU, A.START_K),
        # §17.1.2.2: Completed "buffers" (absorbs) final response retransmissions.
        (S.COMPLETED, I.RESP_2XX): _to(S.COMPLETED),
        (S.COMPLETED, I.RESP_300_699): _to(S.COMPLETED),
        (S.COMPLETED, I.TIMER_K): _to(S.TERMINATED),
    },
)

# RFC 3261 Figure 7, RFC 6026 Figure 7 (2xx -> Accepted).
INVITE_SERVER = Machine(
    "INVITE server",
    _to(S.PROCEEDING, A.REQUEST_TO_TU, A.START_TRYING),
    _SERVER_ALPHABET,
    {
        (S.PROCEEDING, I.TIMER_TRYING): _to(S.PROCEEDING, A.SEND_TRYING),
        (S.PROCEEDING, I.REQUEST): _to(S.PROCEEDING, A.RESEND_RESPONSE),
        (S.PROCEEDING, I.TU_1XX): _to(S.PROCEEDING, A.STOP_TRYING, A.SEND_RESPONSE),
        (S.PROCEEDING, I.TU_2XX): _to(S.ACCEPTED, A.SEND_RESPONSE, A.START_L),
        (S.PROCEEDING, I.TU_300_699): _to(S.COMPLETED, A.SEND_RESPONSE, A.START_G, A.START_H),
        (S.PROCEEDING, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.COMPLETED, I.REQUEST): _to(S.COMPLETED, A.RESEND_RESPONSE),
        (S.COMPLETED, I.TIMER_G): _to(S.COMPLETED, A.RESEND_RESPONSE, A.START_G),
        (S.COMPLETED, I.TIMER_H): _to(S.TERMINATED, A.INFORM_TIMEOUT),
        (S.COMPLETED, I.ACK): _to(S.CONFIRMED, A.START_I),
        (S.COMPLETED, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        # §17.2.1: Confirmed absorbs ACK retransmissions.
        (S.CONFIRMED, I.ACK): _to(S.CONFIRMED),
        (S.CONFIRMED, I.TIMER_I): _to(S.TERMINATED),
        # RFC 6026 §8.7: INVITE retransmissions are absorbed (the TU retransmits the
        # 2xx), ACKs go to the TU, further 2xx from the TU are sent.
        (S.ACCEPTED, I.REQUEST): _to(S.ACCEPTED),
        (S.ACCEPTED, I.ACK): _to(S.ACCEPTED, A.ACK_TO_TU),
        (S.ACCEPTED, I.TU_2XX): _to(S.ACCEPTED, A.SEND_RESPONSE),
        (S.ACCEPTED, I.TRANSPORT_ERROR): _to(S.ACCEPTED, A.INFORM_TRANSPORT_ERROR),
        (S.ACCEPTED, I.TIMER_L): _to(S.TERMINATED),
    },
)

# RFC 3261 Figure 8.
NON_INVITE_SERVER = Machine(
    "non-INVITE server",
    _to(S.TRYING, A.REQUEST_TO_TU),
    _NON_INVITE_SERVER_ALPHABET,
    {
        # §17.2.2: retransmissions in Trying are discarded.
        (S.TRYING, I.REQUEST): _to(S.TRYING),
        (S.TRYING, I.TU_1XX): _to(S.PROCEEDING, A.SEND_RESPONSE),
        (S.TRYING, I.TU_2XX): _to(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
        (S.TRYING, I.TU_300_699): _to(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
        (S.PROCEEDING, I.REQUEST): _to(S.PROCEEDING, A.RESEND_RESPONSE),
        (S.PROCEEDING, I.TU_1XX): _to(S.PROCEEDING, A.SEND_RESPONSE),
        (S.PROCEEDING, I.TU_2XX): _to(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
        (S.PROCEEDING, I.TU_300_699): _to(S.COMPLETED, A.SEND_RESPONSE, A.START_J),
        (S.PROCEEDING, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.COMPLETED, I.REQUEST): _to(S.COMPLETED, A.RESEND_RESPONSE),
        (S.COMPLETED, I.TRANSPORT_ERROR): _to(S.TERMINATED, A.INFORM_TRANSPORT_ERROR),
        (S.COMPLETED, I.TIMER_J): _to(S.TERMINATED),
    },
)

MACHINES = (INVITE_CLIENT, NON_INVITE_CLIENT, INVITE_SERVER, NON_INVITE_SERVER)


def response_input(status: int, *, from_tu: bool) -> Input | None:
    """The input a response of this status is; None outside 100-699."""
    if 100 <= status < 200:
        return I.TU_1XX if from_tu else I.RESP_1XX
    if 200 <= status < 300:
        return I.TU_2XX if from_tu else I.RESP_2XX
    if 300 <= status < 700:
        return I.TU_300_699 if from_tu else I.RESP_300_699
    return None


# -- messages the transaction layer builds itself ------------------------------------


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits (§8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def non_2xx_ack(invite: Request, response: Response) -> Request:
    """The ACK an INVITE client transaction sends for a 300-699 response (§17.1.1.3):
    the INVITE's Request-URI, Call-ID, From, CSeq number, top Via and Route; the
    response's To (with the tag)."""
    h = Headers()
    h.add("Via", invite.headers.getall("via")[0])
    h.add("Max-Forwards", invite.headers.get("max-forwards") or "70")
    for route in invite.headers.getall("route"):
        h.add("Route", route)
    h.add("From", _value(invite, "From"))
    h.add("To", response.headers.get("To") or _value(invite, "To"))
    h.add("Call-ID", _value(invite, "Call-ID"))
    h.add("CSeq", f"{invite.cseq.seq} ACK")
    return Request("ACK", invite.uri, h)


def cancel_for(request: Request) -> Request:
    """The CANCEL for a pending request (§9.1): same Request-URI, Call-ID, To, From,
    CSeq number and single top Via (so the same branch), Route copied."""
    h = Headers()
    h.add("Via", request.headers.getall("via")[0])
    h.add("Max-Forwards", request.headers.get("max-forwards") or "70")
    for route in request.headers.getall("route"):
        h.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        h.add(name, _value(request, name))
    h.add("CSeq", f"{request.cseq.seq} CANCEL")
    return Request("CANCEL", request.uri, h)


def _value(msg: Request | Response, name: str) -> str:
    return msg.headers.get(name) or ""


def trying_for(request: Request) -> Response:
    """100 Trying for a request (§8.2.6.1): Via, From, To, Call-ID, CSeq and Timestamp
    copied, no To tag added (§17.2.1)."""
    h = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Timestamp"):
        for value in request.headers.getall(name):
            h.add(name, value)
    return Response(100, None, h)
