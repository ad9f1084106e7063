"""The transaction tables driven through the real layer: every (state, input) pair of
every machine, random walks checked against the tables (Hypothesis), and two layers
joined by a lossy, reordering fake network that must still finish their transactions.

Policy under test (transaction.py): a listed pair lands in the listed state; an
unlisted pair raises TransactionError when the TU causes it, is dropped (no event, no
change) when the peer or the transport causes it, and cannot happen for a timer
(the timer is never armed in that state)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.sip.events import (
    Address,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from pbx_core.sip.message import Headers, Request, Response, parse_message
from pbx_core.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    MACHINES,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    PEER_INPUTS,
    STARTS,
    TIMERS,
    TU_INPUTS,
    Action,
    Input,
    Machine,
    State,
    TransactionError,
    non_2xx_ack,
)
from pbx_core.sip.transaction_layer import TransactionLayer
from tests.fuzzing import fuzz_settings

CLIENT_ADDR: Address = ("UDP", "192.0.2.1", 5060)
SERVER_ADDR: Address = ("UDP", "192.0.2.2", 5060)
CLIENTS = (INVITE_CLIENT, NON_INVITE_CLIENT)
STATUS = {
    Input.RESP_1XX: 180,
    Input.RESP_2XX: 200,
    Input.RESP_300_699: 486,
    Input.TU_1XX: 180,
    Input.TU_2XX: 200,
    Input.TU_300_699: 486,
}
# Timers that are zero over a reliable transport (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
ZERO_WHEN_RELIABLE = frozenset({Input.TIMER_D, Input.TIMER_I, Input.TIMER_J, Input.TIMER_K})
RETRANSMIT_TIMERS = frozenset({Input.TIMER_A, Input.TIMER_E, Input.TIMER_G})


def build_request(
    method: str, branch: str | None, transport: str = "UDP", to_tag: str | None = None
) -> Request:
    via = f"SIP/2.0/{transport} 192.0.2.1:5060" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a\r\nTo: {to}\r\nCall-ID: walk@192.0.2.1\r\n"
        f"CSeq: 1 {method}\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def build_response(req: Request, status: int, to_tag: str | None = "b") -> Response:
    h = Headers()
    for v in req.headers.getall("Via"):
        h.add("Via", v)
    for name in ("From", "Call-ID", "CSeq"):
        h.add(name, req.headers.get(name) or "")
    to = req.headers.get("To") or ""
    h.add("To", to if to_tag is None or "tag=" in to else f"{to};tag={to_tag}")
    msg = parse_message(bytes(Response(status, None, h)))
    assert isinstance(msg, Response)
    return msg


class Harness:
    """One transaction of `machine` in a fresh layer, fed inputs through the public API."""

    def __init__(self, machine: Machine, *, legacy: bool = False, reliable: bool = False):
        self.machine = machine
        self.legacy = legacy
        self.layer = TransactionLayer()
        self.now = 0.0
        transport = "TCP" if reliable else "UDP"
        self.peer: Address = (transport, "192.0.2.9", 5060)
        method = "INVITE" if machine in (INVITE_CLIENT, INVITE_SERVER) else "OPTIONS"
        self.request = build_request(method, None if legacy else "z9hG4bK-walk", transport)
        self.responded = False  # has the server transaction sent a response yet
        self.key: TransactionKey
        if machine in CLIENTS:
            self.key, self.events = self.layer.send_request(self.request, self.peer, 0.0)
        else:
            self.events = self.layer.receive(self.request, self.peer, 0.0)
            got = self.events[0]
            assert isinstance(got, RequestReceived) and got.key is not None
            self.key = got.key
        self.record(self.events)

    def state(self) -> State:
        return self.layer.state(self.key) or State.TERMINATED

    def record(self, events: list[Event]) -> None:
        if any(isinstance(e, Send) and isinstance(e.message, Response) for e in events):
            self.responded = True

    def armed(self) -> dict[Input, float]:
        return self.layer.timers(self.key)

    def apply(self, inp: Input) -> list[Event]:
        """Deliver `inp`; for a timer, run the clock to its deadline (timers due
        earlier fire first: they are all retransmission self-loops)."""
        self.now += 0.001
        layer = self.layer
        if inp in TIMERS:
            deadline = self.armed()[inp]
            self.now = max(self.now, deadline)
            events = layer.handle_timer(deadline)
        elif inp is Input.REQUEST:
            events = layer.receive(parse_message(bytes(self.request)), self.peer, self.now)
        elif inp is Input.ACK:
            branch = self.request.top_via.branch
            ack = build_request("ACK", branch, self.peer[0], to_tag="b")
            events = layer.receive(ack, self.peer, self.now)
        elif inp in TU_INPUTS:
            resp = build_response(self.request, STATUS[inp])
            events = layer.send_response(self.key, resp, self.now)  # type: ignore[arg-type]  # server key
        elif inp is Input.TRANSPORT_ERROR:
            events = layer.transport_error(self.key, self.now)
        else:
            events = layer.receive(build_response(self.request, STATUS[inp]), self.peer, self.now)
        self.record(events)
        return events


def expected_target(machine: Machine, state: State, inp: Input, reliable: bool) -> State:
    """The table's answer, following zero-duration timers on reliable transports."""
    tr = machine.step(state, inp)
    target = tr.target
    if reliable:
        for action in tr.actions:
            timer = STARTS.get(action)
            if timer in ZERO_WHEN_RELIABLE and target is not State.TERMINATED:
                target = machine.step(target, timer).target
    return target


def expected_events(h: Harness, state: State, inp: Input, reliable: bool) -> list[str]:
    """Event types the listed transition must produce (for non-timer inputs)."""
    out: list[str] = []
    tr = h.machine.step(state, inp)
    kinds = {
        Action.SEND_REQUEST: "Send",
        Action.SEND_ACK: "Send",
        Action.SEND_RESPONSE: "Send",
        Action.SEND_TRYING: "Send",
        Action.REQUEST_TO_TU: "RequestReceived",
        Action.ACK_TO_TU: "RequestReceived",
        Action.RESPONSE_TO_TU: "ResponseReceived",
        Action.INFORM_TIMEOUT: "TransactionTimeout",
        Action.INFORM_TRANSPORT_ERROR: "TransportError",
    }
    for action in tr.actions:
        if action is Action.RESEND_RESPONSE and h.responded:
            out.append("Send")
        elif action in kinds:
            out.append(kinds[action])
    if expected_target(h.machine, state, inp, reliable) is State.TERMINATED:
        out.append("TransactionTerminated")
    return sorted(out)


def check_step(h: Harness, inp: Input, reliable: bool = False) -> None:
    """Apply `inp` in the harness's current state and hold the layer to the table."""
    before = h.state()
    listed = (before, inp) in h.machine.table
    what = f"{h.machine.name}: {inp.name} in {before.name}"
    if inp in TIMERS:
        if not listed:
            assert inp not in h.armed(), f"{what}: an unlisted timer is armed"
            with pytest.raises(TransactionError):
                h.machine.step(before, inp)
            return
        if inp not in h.armed():
            return  # e.g. the 100 Trying timer after it fired: it simply cannot fire
        h.apply(inp)
        assert h.state() is expected_target(h.machine, before, inp, reliable), what
        return
    if not listed:
        if inp in TU_INPUTS:
            with pytest.raises(TransactionError):
                h.apply(inp)
        else:
            events = h.apply(inp)
            if h.legacy and inp is Input.ACK and before is not State.ACCEPTED:
                # RFC 2543: an ACK matches only once a final response gave it a To tag
                # to carry; before that it is an ACK of no transaction, for the TU.
                assert [type(e) for e in events] == [RequestReceived], what
                assert isinstance(events[0], RequestReceived) and events[0].key is None
            else:
                assert events == [], f"{what}: unlisted peer input must be dropped"
        assert h.state() is before, f"{what}: unlisted input changed the state"
        return
    expected = expected_events(h, before, inp, reliable)
    events = h.apply(inp)
    assert h.state() is expected_target(h.machine, before, inp, reliable), what
    assert sorted(type(e).__name__ for e in events) == expected, what


def check_invariants(h: Harness, reliable: bool) -> None:
    state = h.state()
    armed = h.armed()
    assert set(armed) <= h.machine.timers_in[state], f"{state}: armed {set(armed)}"
    if reliable:
        assert not set(armed) & RETRANSMIT_TIMERS, "reliable transports never retransmit"
    assert h.layer._armed == len(armed)  # the count that decides when to sweep the heap
    if state is State.TERMINATED:
        assert len(h.layer) == 0 and h.layer.next_timer() is None
    else:
        assert h.layer.next_timer() == (min(armed.values()) if armed else None)


# How to reach every state of every machine through the public API.
PATHS: dict[str, dict[State, list[Input]]] = {
    INVITE_CLIENT.name: {
        State.CALLING: [],
        State.PROCEEDING: [Input.RESP_1XX],
        State.COMPLETED: [Input.RESP_300_699],
        State.ACCEPTED: [Input.RESP_2XX],
    },
    NON_INVITE_CLIENT.name: {
        State.TRYING: [],
        State.PROCEEDING: [Input.RESP_1XX],
        State.COMPLETED: [Input.RESP_2XX],
    },
    INVITE_SERVER.name: {
        State.PROCEEDING: [],
        State.COMPLETED: [Input.TU_300_699],
        State.CONFIRMED: [Input.TU_300_699, Input.ACK],
        State.ACCEPTED: [Input.TU_2XX],
    },
    NON_INVITE_SERVER.name: {
        State.TRYING: [],
        State.PROCEEDING: [Input.TU_1XX],
        State.COMPLETED: [Input.TU_2XX],
    },
}
VARIANTS = [(m, False) for m in MACHINES] + [(INVITE_SERVER, True), (NON_INVITE_SERVER, True)]


@pytest.mark.parametrize(
    ("machine", "legacy"), VARIANTS, ids=[f"{m.name}{' 2543' * lg}" for m, lg in VARIANTS]
)
def test_every_state_input_pair_follows_the_table(machine: Machine, legacy: bool) -> None:
    paths = PATHS[machine.name]
    assert set(paths) == machine.states - {State.TERMINATED}, "a state has no path"
    pairs = 0
    for state, path in paths.items():
        for inp in sorted(Input, key=lambda i: i.name):
            h = Harness(machine, legacy=legacy)
            for step in path:
                h.apply(step)
            assert h.state() is state
            if inp not in machine.alphabet:
                # Not deliverable to this kind of transaction; the table refuses it too.
                with pytest.raises(TransactionError):
                    machine.step(state, inp)
                continue
            if inp in TIMERS and (state, inp) in machine.table:
                assert inp in h.armed(), f"{machine.name}: {inp.name} not armed in {state.name}"
            check_step(h, inp)
            check_invariants(h, reliable=False)
            pairs += 1
    assert pairs == len(paths) * len(machine.alphabet)


def test_the_tables_are_closed() -> None:
    for m in MACHINES:
        for (state, inp), tr in m.table.items():
            assert state is not State.TERMINATED
            assert inp in m.alphabet
            assert tr.target in m.states
        # Terminated is reachable and nothing leaves it.
        assert State.TERMINATED in m.states
        assert not [k for k in m.table if k[0] is State.TERMINATED]
    assert PEER_INPUTS.isdisjoint(TU_INPUTS)


def test_a_terminated_transaction_refuses_the_tu_and_ignores_the_transport() -> None:
    h = Harness(NON_INVITE_SERVER)
    h.apply(Input.TU_2XX)
    h.apply(Input.TIMER_J)
    assert h.state() is State.TERMINATED
    with pytest.raises(TransactionError):
        h.apply(Input.TU_2XX)
    assert h.apply(Input.TRANSPORT_ERROR) == []


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    data=st.data(),
    variant=st.sampled_from(VARIANTS),
    reliable=st.booleans(),
)
def test_random_walks_follow_the_table(
    data: st.DataObject, variant: tuple[Machine, bool], reliable: bool
) -> None:
    machine, legacy = variant
    h = Harness(machine, legacy=legacy, reliable=reliable)
    # The start transition (a zero 100 Trying delay aside) needs no input.
    assert h.state() is machine.start.target
    alphabet = sorted(machine.alphabet, key=lambda i: i.name)
    inputs = data.draw(st.lists(st.sampled_from(alphabet), max_size=15))
    for inp in inputs:
        if h.state() is State.TERMINATED:
            break
        check_step(h, inp, reliable)
        check_invariants(h, reliable)


# -- two endpoints over a lossy fake network --------------------------------------------


@dataclass
class Sim:
    """A client layer and a server layer exchanging bytes. The server TU answers
    OPTIONS with 200 and INVITE with 180 then, after a second, `final`; it retransmits
    a 2xx itself until the ACK (RFC 3261 §13.3.1.4). The client TU ACKs every 2xx."""

    drop: Callable[[int], bool]
    delay: Callable[[], float]
    final: int = 486
    now: float = 0.0
    client: TransactionLayer = field(default_factory=TransactionLayer)
    server: TransactionLayer = field(default_factory=TransactionLayer)
    inflight: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    tasks: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    packets: int = 0
    dropped: int = 0
    client_got: list[Event] = field(default_factory=list)
    server_got: list[Event] = field(default_factory=list)
    acked: bool = False
    seq: int = 0

    def transmit(self, to: str, events: list[Event]) -> None:
        """Events of one side: Sends go on the wire, the rest to that side's TU."""
        for e in events:
            if not isinstance(e, Send):
                (self.on_server if to == "client" else self.on_client)(e)
                continue
            index = self.packets
            self.packets += 1
            if self.drop(index):
                self.dropped += 1
                continue
            heapq.heappush(self.inflight, (self.now + self.delay(), index, to, bytes(e.message)))

    def later(self, delay: float, task: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.tasks, (self.now + delay, self.seq, task))

    def on_server(self, e: Event) -> None:
        self.server_got.append(e)
        if not isinstance(e, RequestReceived):
            return
        req = e.request
        if req.method == "ACK":
            self.acked = True
            return
        key = e.key
        assert key is not None
        if req.method == "OPTIONS":
            self.transmit(
                "client", self.server.send_response(key, build_response(req, 200), self.now)
            )
            return
        self.transmit("client", self.server.send_response(key, build_response(req, 180), self.now))

        def answer() -> None:
            final = build_response(req, self.final)
            self.transmit("client", self.server.send_response(key, final, self.now))
            if self.final < 300:
                self.retransmit_2xx(key, final, self.server.t1, self.now)

        self.later(1.0, answer)

    def retransmit_2xx(
        self, key: TransactionKey, final: Response, interval: float, start: float
    ) -> None:
        def again() -> None:
            if self.acked or self.now - start >= 64 * self.server.t1:
                return
            events = self.server.send_response(key, final, self.now)  # type: ignore[arg-type]  # server key
            self.transmit("client", events)
            self.retransmit_2xx(key, final, min(2 * interval, self.server.t2), start)

        self.later(interval, again)

    def on_client(self, e: Event) -> None:
        self.client_got.append(e)
        if (
            isinstance(e, ResponseReceived)
            and e.handle.method == "INVITE"
            and 200 <= e.response.status < 300
        ):
            invite = build_request("INVITE", "z9hG4bK-sim")
            ack = non_2xx_ack(invite, e.response)  # same fields as a 2xx ACK ...
            ack.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ack")
            ack.invalidate()  # ... but a branch of its own (§13.2.2.4)
            self.transmit("server", [Send(ack, SERVER_ADDR)])

    def run(self, request: Request, until: float = 200.0) -> None:
        _key, events = self.client.send_request(request, SERVER_ADDR, 0.0)
        self.transmit("server", events)
        while True:
            due = [
                t
                for t in (
                    self.client.next_timer(),
                    self.server.next_timer(),
                    self.inflight[0][0] if self.inflight else None,
                    self.tasks[0][0] if self.tasks else None,
                )
                if t is not None
            ]
            if not due or min(due) > until:
                return
            self.now = min(due)
            if self.inflight and self.inflight[0][0] <= self.now:
                _t, _i, to, data = heapq.heappop(self.inflight)
                msg = parse_message(data)
                if to == "server":
                    self.transmit("client", self.server.receive(msg, CLIENT_ADDR, self.now))
                else:
                    self.transmit("server", self.client.receive(msg, SERVER_ADDR, self.now))
            elif self.tasks and self.tasks[0][0] <= self.now:
                heapq.heappop(self.tasks)[2]()
            else:
                self.transmit("server", self.client.handle_timer(self.now))
                self.transmit("client", self.server.handle_timer(self.now))


def finals(events: list[Event]) -> list[int]:
    return [
        e.response.status
        for e in events
        if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]


def check_sim(sim: Sim, method: str) -> None:
    assert not [e for e in sim.client_got + sim.server_got if isinstance(e, TransactionTimeout)]
    assert not [e for e in sim.client_got + sim.server_got if isinstance(e, TransportError)]
    requests = [
        e for e in sim.server_got if isinstance(e, RequestReceived) and e.request.method == method
    ]
    assert len(requests) == 1, "retransmissions must not reach the TU"
    got = finals(sim.client_got)
    if method == "OPTIONS":
        assert got == [200], "exactly one final response reaches the client TU"
    elif sim.final >= 300:
        assert got == [sim.final]
        # The server saw the ACK (Confirmed, not Timer H): its transaction ended quietly.
        assert not sim.acked
    else:
        assert got and set(got) == {200}  # RFC 6026: every 2xx copy reaches the TU
        assert sim.acked
    # Both sides forgot everything: bounded memory.
    assert len(sim.client) == 0 and len(sim.server) == 0
    assert sim.client.next_timer() is None and sim.server.next_timer() is None
    ends = [e for e in sim.client_got + sim.server_got if isinstance(e, TransactionTerminated)]
    assert len(ends) == 2


SCENARIOS = [("OPTIONS", 200), ("INVITE", 486), ("INVITE", 200)]


@pytest.mark.parametrize(("method", "final"), SCENARIOS)
def test_lossy_network_transactions_complete(method: str, final: int) -> None:
    dropped = 0
    for seed in range(12):
        rng = random.Random(seed)
        sim = Sim(
            drop=lambda _i, rng=rng: rng.random() < 0.3,  # type: ignore[misc]  # bound default
            delay=lambda rng=rng: rng.uniform(0.01, 0.3),  # type: ignore[misc]  # reorders too
            final=final,
        )
        sim.run(build_request(method, "z9hG4bK-sim"))
        check_sim(sim, method)
        dropped += sim.dropped
    assert dropped >= 5, "the network must actually lose packets"


@settings(max_examples=60, deadline=None)
@given(
    scenario=st.sampled_from(SCENARIOS),
    drops=st.sets(st.integers(0, 15), max_size=4),
    rng=st.randoms(use_true_random=False),
)
def test_any_few_lost_packets_are_recovered(
    scenario: tuple[str, int], drops: set[int], rng: random.Random
) -> None:
    method, final = scenario
    sim = Sim(drop=drops.__contains__, delay=lambda: rng.uniform(0.01, 0.2), final=final)
    sim.run(build_request(method, "z9hG4bK-sim"))
    check_sim(sim, method)
