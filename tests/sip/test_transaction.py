"""Transaction layer (RFC 3261 §17, RFC 6026) with a fake clock: every timer, the
retransmission schedules, duplicate absorption, ACK generation, Accepted, reliable vs
unreliable transports, CANCEL and RFC 2543 matching, and input robustness."""

from __future__ import annotations

import pytest

from pbx_core.sip.errors import ParseError
from pbx_core.sip.events import (
    Address,
    BadRequest,
    ClientKey,
    Event,
    LegacyServerKey,
    Overloaded,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerKey,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from pbx_core.sip.message import Headers, Request, Response, parse_message
from pbx_core.sip.transaction import (
    INVITE_SERVER,
    MAGIC_COOKIE,
    Input,
    State,
    TransactionError,
    cancel_for,
    new_branch,
    non_2xx_ack,
    trying_for,
)
from pbx_core.sip.transaction_layer import TransactionLayer

UAC: Address = ("UDP", "192.0.2.1", 5060)
UAS: Address = ("UDP", "192.0.2.2", 5060)
UAC_TCP: Address = ("TCP", "192.0.2.1", 5060)
UAS_TCP: Address = ("TCP", "192.0.2.2", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-1",
    sent_by: str = "192.0.2.1:5060",
    transport: str = "UDP",
    cseq: int = 1,
    cseq_method: str | None = None,
    uri: str = "sip:bob@example.com",
    from_tag: str = "f1",
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.1",
    routes: tuple[str, ...] = (),
) -> Request:
    """A request as it arrives from the wire (built as text, then parsed)."""
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Via: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK-lower",
        "Max-Forwards: 69",
        *(f"Route: {r}" for r in routes),
        f"From: Alice <sip:alice@example.com>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Timestamp: 54",
        "Contact: <sip:alice@192.0.2.1>",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, *, to_tag: str | None = "t1") -> Response:
    """The UAS's response to `req` (§8.2.6.2), round-tripped through bytes."""
    h = Headers()
    for v in req.headers.getall("Via"):
        h.add("Via", v)
    h.add("From", req.headers.get("From") or "")
    to = req.headers.get("To") or ""
    h.add("To", to + (f";tag={to_tag}" if to_tag and "tag=" not in to else ""))
    h.add("Call-ID", req.headers.get("Call-ID") or "")
    h.add("CSeq", req.headers.get("CSeq") or "")
    msg = parse_message(bytes(Response(status, None, h)))
    assert isinstance(msg, Response)
    return msg


def copy(msg: Request) -> Request:
    """A retransmission: same bytes, a new object."""
    out = parse_message(bytes(msg))
    assert isinstance(out, Request)
    return out


def sent(events: list[Event]) -> list[Request | Response]:
    return [e.message for e in events if isinstance(e, Send)]


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, Event]]:
    """Fire timers one deadline at a time up to `until`; (time, event) pairs."""
    out: list[tuple[float, Event]] = []
    while (t := layer.next_timer()) is not None and t <= until:
        out.extend((t, e) for e in layer.handle_timer(t))
    return out


def send_times(timed: list[tuple[float, Event]]) -> list[float]:
    return [t for t, e in timed if isinstance(e, Send)]


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in zip([0.0, *times], times, strict=False)]


def server_key(layer: TransactionLayer, req: Request, source: Address = UAC) -> ServerKey:
    events = layer.receive(req, source, 0.0)
    (got,) = [e for e in events if isinstance(e, RequestReceived)]
    assert isinstance(got.key, ServerKey)
    return got.key


# -- INVITE client (RFC 3261 §17.1.1, RFC 6026 §8.4) ---------------------------------


def test_invite_client_timer_a_doubles_until_timer_b_at_64_t1() -> None:
    layer = TransactionLayer()
    key, events = layer.send_request(request(), UAS, 0.0)
    assert key == ClientKey("z9hG4bK-1", "INVITE")
    assert [type(m).__name__ for m in sent(events)] == ["Request"]
    assert layer.state(key) is State.CALLING
    timed = run_timers(layer, 31.9)
    # Timer A: T1, 2T1, 4T1 ... no cap (only E and G stop at T2).
    assert gaps(send_times(timed)) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert layer.timers(key)[Input.TIMER_A] == 31.5 + 32.0
    timed = run_timers(layer, 100.0)
    assert [(t, type(e).__name__) for t, e in timed] == [
        (32.0, "TransactionTimeout"),
        (32.0, "TransactionTerminated"),
    ]
    assert timed[0][1] == TransactionTimeout(key, "B")
    assert layer.state(key) is None
    assert layer.next_timer() is None
    assert len(layer) == 0


def test_invite_client_over_tcp_never_retransmits() -> None:
    layer = TransactionLayer()
    key, events = layer.send_request(request(transport="TCP"), UAS_TCP, 10.0)
    assert len(sent(events)) == 1
    assert set(layer.timers(key)) == {Input.TIMER_B}
    timed = run_timers(layer, 100.0)
    assert [(t, type(e).__name__) for t, e in timed] == [
        (42.0, "TransactionTimeout"),
        (42.0, "TransactionTerminated"),
    ]


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, UAS, 0.0)
    run_timers(layer, 0.6)  # one retransmission
    events = layer.receive(response(inv, 180), UAS, 0.7)
    assert kinds(events) == ["ResponseReceived"]
    assert layer.state(key) is State.PROCEEDING
    assert layer.next_timer() is None  # a ringing INVITE waits for the TU (Timer C)
    events = layer.receive(response(inv, 183), UAS, 5.0)
    assert kinds(events) == ["ResponseReceived"]


def test_invite_client_acks_non_2xx_itself() -> None:
    layer = TransactionLayer()
    inv = request(routes=("<sip:proxy.example.com;lr>", "<sip:edge.example.com;lr>"))
    key, _ = layer.send_request(inv, UAS, 0.0)
    busy = response(inv, 486, to_tag="busy-tag")
    events = layer.receive(busy, UAS, 0.2)
    assert kinds(events) == ["Send", "ResponseReceived"]
    assert events[1] == ResponseReceived(busy, key, UAS)
    ack = sent(events)[0]
    assert isinstance(ack, Request)
    assert events[0] == Send(ack, UAS, key)  # §17.1.1.3: where the INVITE went
    # §17.1.1.3: Request-URI, Call-ID, From, CSeq number, top Via, Route; To of the response.
    assert ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.call_id == inv.call_id
    assert ack.from_ == inv.from_
    assert (ack.cseq.seq, ack.cseq.method) == (1, "ACK")
    assert ack.via == [inv.top_via]
    assert ack.headers.getall("Route") == inv.headers.getall("Route")
    assert ack.to.tag == "busy-tag"
    assert ack.max_forwards == 69
    assert ack.body == b""
    assert parse_message(bytes(ack)) == ack
    assert layer.state(key) is State.COMPLETED
    # A retransmitted 486 is ACKed again with the same ACK and not passed up.
    again = layer.receive(response(inv, 486, to_tag="busy-tag"), UAS, 1.0)
    assert again == [Send(ack, UAS, key)]
    # Timer D: 32 s over UDP.
    timed = run_timers(layer, 100.0)
    assert [(t, type(e).__name__) for t, e in timed] == [(32.2, "TransactionTerminated")]


def test_invite_client_timer_d_is_zero_over_tcp() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    key, _ = layer.send_request(inv, UAS_TCP, 0.0)
    events = layer.receive(response(inv, 603), UAS_TCP, 0.1)
    assert kinds(events) == ["Send", "ResponseReceived", "TransactionTerminated"]
    assert layer.state(key) is None


def test_invite_client_accepted_passes_every_2xx_until_timer_m() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, UAS, 0.0)
    ok = response(inv, 200)
    assert layer.receive(ok, UAS, 0.1) == [ResponseReceived(ok, key, UAS)]
    assert layer.state(key) is State.ACCEPTED  # RFC 6026, not Terminated
    assert set(layer.timers(key)) == {Input.TIMER_M}
    # No ACK from the transaction: the ACK for a 2xx belongs to the TU.
    forked = response(inv, 200, to_tag="other-branch")
    assert kinds(layer.receive(forked, UAS, 1.0)) == ["ResponseReceived"]
    assert kinds(layer.receive(copy_response(ok), UAS, 2.0)) == ["ResponseReceived"]
    assert layer.receive(response(inv, 180), UAS, 2.5) == []  # late 1xx: absorbed
    timed = run_timers(layer, 100.0)
    assert [(t, type(e).__name__) for t, e in timed] == [(32.1, "TransactionTerminated")]
    late = copy_response(ok)
    assert layer.receive(late, UAS, 40.0) == [StrayResponse(late, UAS)]


def copy_response(msg: Response) -> Response:
    out = parse_message(bytes(msg))
    assert isinstance(out, Response)
    return out


def test_responses_report_where_they_came_from() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    key, _ = layer.send_request(req, UAS, 0.0)
    elsewhere: Address = ("UDP", "203.0.113.7", 5062)  # e.g. a stateless proxy's other leg
    ok = response(req, 200)
    assert layer.receive(ok, elsewhere, 0.1) == [ResponseReceived(ok, key, elsewhere)]


def test_invite_client_2xx_after_1xx_goes_to_accepted() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, UAS, 0.0)
    layer.receive(response(inv, 100, to_tag=None), UAS, 0.1)
    assert kinds(layer.receive(response(inv, 200), UAS, 3.0)) == ["ResponseReceived"]
    assert layer.state(key) is State.ACCEPTED
    assert layer.timers(key) == {Input.TIMER_M: 35.0}


def test_invite_client_transport_error() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(request(), UAS, 0.0)
    events = layer.transport_error(key, 0.01)
    assert events == [TransportError(key), TransactionTerminated(key)]
    assert layer.next_timer() is None
    assert layer.transport_error(key, 0.02) == []  # late report: ignored


# -- non-INVITE client (§17.1.2) -------------------------------------------------------


def test_non_invite_client_timer_e_caps_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    key, events = layer.send_request(request("OPTIONS"), UAS, 0.0)
    assert layer.state(key) is State.TRYING
    assert len(sent(events)) == 1
    timed = run_timers(layer, 100.0)
    sends = send_times(timed)
    assert gaps(sends) == [0.5, 1.0, 2.0, 4.0] + [4.0] * 6
    assert sends[-1] == 31.5
    assert [type(e).__name__ for t, e in timed if t == 32.0] == [
        "TransactionTimeout",
        "TransactionTerminated",
    ]
    assert TransactionTimeout(key, "F") in [e for _t, e in timed]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    key, _ = layer.send_request(req, UAS, 0.0)
    run_timers(layer, 0.5)  # E fired once: next at 1.5
    assert kinds(layer.receive(response(req, 100, to_tag=None), UAS, 0.7)) == ["ResponseReceived"]
    assert layer.state(key) is State.PROCEEDING
    timed = run_timers(layer, 14.0)
    # The pending E keeps its deadline; every later one is T2 (§17.1.2.2).
    assert send_times(timed) == [1.5, 5.5, 9.5, 13.5]
    events = layer.receive(response(req, 200), UAS, 14.0)
    assert kinds(events) == ["ResponseReceived"]
    assert layer.state(key) is State.COMPLETED
    assert layer.timers(key) == {Input.TIMER_K: 19.0}  # T4, E and F gone


def test_non_invite_client_completed_absorbs_then_timer_k() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    layer.send_request(req, UAS, 0.0)
    assert kinds(layer.receive(response(req, 481), UAS, 0.1)) == ["ResponseReceived"]
    assert layer.receive(response(req, 481), UAS, 0.2) == []
    assert layer.receive(response(req, 200), UAS, 0.3) == []
    assert layer.receive(response(req, 180), UAS, 0.3) == []
    timed = run_timers(layer, 100.0)
    assert [(t, type(e).__name__) for t, e in timed] == [(5.1, "TransactionTerminated")]


def test_non_invite_client_over_tcp_terminates_on_final() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport="TCP")
    key, _ = layer.send_request(req, UAS_TCP, 0.0)
    assert set(layer.timers(key)) == {Input.TIMER_F}
    events = layer.receive(response(req, 200), UAS_TCP, 0.1)
    assert kinds(events) == ["ResponseReceived", "TransactionTerminated"]


def test_non_invite_client_transport_error_in_proceeding() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    key, _ = layer.send_request(req, UAS, 0.0)
    layer.receive(response(req, 100, to_tag=None), UAS, 0.1)
    assert layer.transport_error(key, 0.2) == [TransportError(key), TransactionTerminated(key)]


def test_send_request_refuses_what_is_not_a_transaction() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError, match="ACK"):
        layer.send_request(request("ACK"), UAS, 0.0)
    with pytest.raises(TransactionError, match="magic cookie"):
        layer.send_request(request(branch="1234"), UAS, 0.0)
    with pytest.raises(TransactionError, match="magic cookie"):
        layer.send_request(request(branch=None), UAS, 0.0)
    with pytest.raises(TransactionError, match="CSeq"):
        layer.send_request(request("INVITE", cseq_method="BYE"), UAS, 0.0)
    broken = request()
    broken.headers.set("CSeq", "x INVITE")
    with pytest.raises(TransactionError, match="CSeq"):
        layer.send_request(broken, UAS, 0.0)
    layer.send_request(request(), UAS, 0.0)
    with pytest.raises(TransactionError, match="already exists"):
        layer.send_request(request(), UAS, 0.0)
    # A CANCEL shares the INVITE's branch and is a transaction of its own.
    key, _ = layer.send_request(cancel_for(request()), UAS, 0.0)
    assert key == ClientKey("z9hG4bK-1", "CANCEL")
    assert len(layer) == 2


def test_responses_match_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    inv = request()
    inv_key, _ = layer.send_request(inv, UAS, 0.0)
    cancel = cancel_for(inv)
    cancel_key, _ = layer.send_request(cancel, UAS, 0.1)
    # 200 to the CANCEL goes to the CANCEL transaction, 487 to the INVITE one.
    ok = response(cancel, 200)
    assert layer.receive(ok, UAS, 0.2) == [ResponseReceived(ok, cancel_key, UAS)]
    terminated = response(inv, 487)
    events = layer.receive(terminated, UAS, 0.3)
    assert ResponseReceived(terminated, inv_key, UAS) in events
    other = response(request(branch="z9hG4bK-other"), 200)
    assert layer.receive(other, UAS, 0.4) == [StrayResponse(other, UAS)]
    no_branch = response(request(branch=None), 200)
    assert layer.receive(no_branch, UAS, 0.4) == [StrayResponse(no_branch, UAS)]


def test_malformed_and_out_of_range_responses_are_dropped() -> None:
    layer = TransactionLayer()
    inv = request()
    key, _ = layer.send_request(inv, UAS, 0.0)
    bad = response(inv, 200)
    bad.headers.set("CSeq", "one INVITE")
    bad.invalidate()
    assert layer.receive(bad, UAS, 0.1) == []
    weird = response(inv, 200)
    weird.status = 799
    assert layer.receive(weird, UAS, 0.1) == []
    assert layer.state(key) is State.CALLING


# -- INVITE server (§17.2.1, RFC 6026 §8.5-8.7) --------------------------------------


def test_invite_server_sends_100_trying_after_200_ms_of_silence() -> None:
    layer = TransactionLayer()
    inv = request()
    events = layer.receive(inv, UAC, 0.0)
    key = ServerKey("z9hG4bK-1", "192.0.2.1:5060", "INVITE")
    assert events == [RequestReceived(inv, UAC, key)]
    assert layer.state(key) is State.PROCEEDING
    timed = run_timers(layer, 10.0)
    assert [(t, type(e).__name__) for t, e in timed] == [(0.2, "Send")]
    trying = sent([e for _t, e in timed])[0]
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.via == inv.via
    assert trying.to.tag is None  # §17.2.1: no tag on the 100
    assert trying.headers.get("Timestamp") == "54"
    assert trying.cseq == inv.cseq and trying.call_id == inv.call_id
    # A retransmitted INVITE gets the 100 again and does not reach the TU.
    assert layer.receive(copy(inv), UAC, 0.5) == [Send(trying, UAC, key)]


def test_invite_server_no_100_when_the_tu_answers_in_time() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    ringing = response(inv, 180)
    assert layer.send_response(key, ringing, 0.1) == [Send(ringing, UAC, key)]
    assert run_timers(layer, 10.0) == []
    assert layer.receive(copy(inv), UAC, 0.6) == [Send(ringing, UAC, key)]


@pytest.mark.parametrize(("delay", "expected"), [(None, []), (0.0, [0.0]), (1.0, [1.0])])
def test_trying_delay_is_configurable(delay: float | None, expected: list[float]) -> None:
    layer = TransactionLayer(trying_delay=delay)
    events = layer.receive(request(), UAC, 0.0)
    times = [0.0 for m in sent(events)] + send_times(run_timers(layer, 10.0))
    assert times == expected


def test_invite_server_non_2xx_timer_g_until_timer_h() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    busy = response(inv, 486)
    assert layer.send_response(key, busy, 0.0) == [Send(busy, UAC, key)]
    assert layer.state(key) is State.COMPLETED
    timed = run_timers(layer, 100.0)
    sends = send_times(timed)
    assert gaps(sends) == [0.5, 1.0, 2.0, 4.0] + [4.0] * 6  # capped at T2
    assert all(e == Send(busy, UAC, key) for _t, e in timed if isinstance(e, Send))
    assert [(t, e) for t, e in timed if not isinstance(e, Send)] == [
        (32.0, TransactionTimeout(key, "H")),
        (32.0, TransactionTerminated(key)),
    ]


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    busy = response(inv, 486)
    layer.send_response(key, busy, 0.0)
    run_timers(layer, 1.0)  # G fired once
    assert layer.receive(copy(inv), UAC, 1.2) == [Send(busy, UAC, key)]
    ack = non_2xx_ack(inv, busy)
    assert layer.receive(ack, UAC, 1.3) == []
    assert layer.state(key) is State.CONFIRMED
    assert layer.timers(key) == {Input.TIMER_I: 6.3}  # T4; G and H cancelled
    assert layer.receive(copy(ack), UAC, 2.0) == []  # absorbed
    assert layer.receive(copy(inv), UAC, 2.0) == []  # late INVITE: dropped
    assert run_timers(layer, 100.0) == [(6.3, TransactionTerminated(key))]


def test_invite_server_over_tcp_no_g_and_i_is_zero() -> None:
    layer = TransactionLayer()
    inv = request(transport="TCP")
    key = server_key(layer, inv, UAC_TCP)
    layer.send_response(key, response(inv, 404), 0.0)
    assert set(layer.timers(key)) == {Input.TIMER_H}
    events = layer.receive(non_2xx_ack(inv, response(inv, 404)), UAC_TCP, 0.1)
    assert events == [TransactionTerminated(key)]


def test_invite_server_accepted_absorbs_invites_and_passes_acks() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    ok = response(inv, 200)
    assert layer.send_response(key, ok, 0.0) == [Send(ok, UAC, key)]
    assert layer.state(key) is State.ACCEPTED
    assert layer.timers(key) == {Input.TIMER_L: 32.0}
    assert layer.receive(copy(inv), UAC, 0.5) == []  # the TU retransmits the 2xx
    assert layer.send_response(key, ok, 0.5) == [Send(ok, UAC, key)]
    # The ACK for a 2xx has a branch of its own: no transaction, straight to the TU.
    ack = request("ACK", branch="z9hG4bK-ack", to_tag="t1")
    assert layer.receive(ack, UAC, 0.6) == [RequestReceived(ack, UAC, None)]
    # One that (wrongly) reuses the INVITE's branch matches Accepted: also to the TU.
    same = request("ACK", to_tag="t1")
    assert layer.receive(same, UAC, 0.7) == [RequestReceived(same, UAC, None)]
    assert layer.transport_error(key, 0.8) == [TransportError(key)]
    assert layer.state(key) is State.ACCEPTED
    with pytest.raises(TransactionError):
        layer.send_response(key, response(inv, 486), 1.0)
    assert run_timers(layer, 100.0) == [(32.0, TransactionTerminated(key))]


def test_server_refuses_tu_responses_the_table_does_not_allow() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    with pytest.raises(TransactionError, match="status 700"):
        layer.send_response(key, response(inv, 700), 0.0)
    layer.send_response(key, response(inv, 486), 0.0)
    with pytest.raises(TransactionError, match="INVITE server transaction"):
        layer.send_response(key, response(inv, 200), 0.1)
    with pytest.raises(TransactionError, match="INVITE server transaction"):
        layer.send_response(key, response(inv, 180), 0.1)
    assert layer.state(key) is State.COMPLETED  # unchanged by the refused input
    with pytest.raises(TransactionError, match="no server transaction"):
        layer.send_response(ServerKey("z9hG4bK-none", "x", "INVITE"), response(inv, 200), 0.0)


def test_invite_server_transport_error() -> None:
    layer = TransactionLayer()
    inv = request()
    key = server_key(layer, inv)
    assert layer.transport_error(key, 0.1) == [TransportError(key), TransactionTerminated(key)]
    # The TU answering afterwards is told the transaction is gone.
    with pytest.raises(TransactionError):
        layer.send_response(key, response(inv, 180), 0.2)


# -- non-INVITE server (§17.2.2) -------------------------------------------------------


def test_non_invite_server_absorbs_then_answers_retransmissions() -> None:
    layer = TransactionLayer()
    req = request("REGISTER", uri="sip:example.com")
    key = server_key(layer, req)
    assert key.method == "REGISTER"
    assert layer.state(key) is State.TRYING
    assert layer.next_timer() is None  # no automatic 100 for non-INVITE
    assert layer.receive(copy(req), UAC, 0.5) == []  # Trying: discarded
    trying = response(req, 100, to_tag=None)
    layer.send_response(key, trying, 0.6)
    assert layer.state(key) is State.PROCEEDING
    assert layer.receive(copy(req), UAC, 1.0) == [Send(trying, UAC, key)]
    ok = response(req, 200)
    assert layer.send_response(key, ok, 1.1) == [Send(ok, UAC, key)]
    assert layer.receive(copy(req), UAC, 2.0) == [Send(ok, UAC, key)]
    with pytest.raises(TransactionError):
        layer.send_response(key, response(req, 500), 2.0)
    assert run_timers(layer, 100.0) == [(33.1, TransactionTerminated(key))]  # J = 64*T1
    # A retransmission after the transaction is gone starts a new one (§17.2.3).
    assert kinds(layer.receive(copy(req), UAC, 40.0)) == ["RequestReceived"]


def test_non_invite_server_over_tcp_terminates_with_the_final() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport="TCP")
    key = server_key(layer, req, UAC_TCP)
    ok = response(req, 200)
    assert layer.send_response(key, ok, 0.1) == [Send(ok, UAC_TCP, key), TransactionTerminated(key)]


def test_non_invite_server_transport_error() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    key = server_key(layer, req)
    assert layer.transport_error(key, 0.0) == []  # nothing sent yet: not in the table
    layer.send_response(key, response(req, 200), 0.0)
    assert layer.transport_error(key, 0.1) == [TransportError(key), TransactionTerminated(key)]


# -- server matching (§17.2.3, §9.2) ---------------------------------------------------


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    a = server_key(layer, request())
    # Same branch from another sent-by: another transaction.
    b = server_key(layer, request(sent_by="192.0.2.99:5060"), ("UDP", "192.0.2.99", 5060))
    # sent-by compares hosts case-insensitively.
    assert layer.receive(request(sent_by="HOST.example.com"), UAC, 0.0)
    assert kinds(layer.receive(request(sent_by="host.EXAMPLE.com"), UAC, 0.1)) == []
    # Same branch, another method: another transaction.
    c = server_key(layer, request("OPTIONS"))
    assert len({a, b, c}) == 3
    assert len(layer) == 4


def test_cancel_names_the_invite_transaction_it_matches() -> None:
    layer = TransactionLayer()
    inv = request()
    inv_key = server_key(layer, inv)
    cancel = cancel_for(inv)
    events = layer.receive(cancel, UAC, 0.1)
    cancel_key = ServerKey("z9hG4bK-1", "192.0.2.1:5060", "CANCEL")
    assert events == [RequestReceived(cancel, UAC, cancel_key, cancels=inv_key)]
    ok = response(cancel, 200)
    layer.send_response(cancel_key, ok, 0.1)
    assert layer.receive(copy(cancel), UAC, 0.5) == [Send(ok, UAC, cancel_key)]
    layer.send_response(inv_key, response(inv, 487), 0.1)
    # A CANCEL for an INVITE we never saw: no reference (the TU answers 481).
    stray = cancel_for(request(branch="z9hG4bK-unknown"))
    (got,) = layer.receive(stray, UAC, 0.2)
    assert isinstance(got, RequestReceived) and got.cancels is None
    # A CANCEL does not cancel a non-INVITE transaction.
    opt = request("OPTIONS", branch="z9hG4bK-opt")
    server_key(layer, opt)
    (got,) = layer.receive(cancel_for(opt), UAC, 0.3)
    assert isinstance(got, RequestReceived) and got.cancels is None


def rfc2543(method: str = "INVITE", **kw: object) -> Request:
    return request(method, branch=None, **kw)  # type: ignore[arg-type]  # test helper


def test_rfc2543_requests_match_on_uri_tags_call_id_cseq_and_via() -> None:
    layer = TransactionLayer()
    inv = rfc2543()
    (got,) = layer.receive(inv, UAC, 0.0)
    assert isinstance(got, RequestReceived) and isinstance(got.key, LegacyServerKey)
    key = got.key
    assert (key.call_id, key.cseq, key.method, key.from_tag, key.to_tag) == (
        "call-1@192.0.2.1",
        1,
        "INVITE",
        "f1",
        None,
    )
    ringing = response(inv, 180, to_tag="uas")
    layer.send_response(key, ringing, 0.1)
    assert layer.receive(copy(inv), UAC, 0.5) == [Send(ringing, UAC, key)]
    # Request-URI host compares case-insensitively.
    assert layer.receive(rfc2543(uri="sip:bob@EXAMPLE.com"), UAC, 0.6) == [Send(ringing, UAC, key)]
    # Anything else different: a new transaction.
    for other in (
        rfc2543(uri="sip:carol@example.com"),
        rfc2543(from_tag="f2"),
        rfc2543(call_id="call-2"),
        rfc2543(cseq=2),
        rfc2543(sent_by="192.0.2.1:5070"),
    ):
        assert kinds(layer.receive(other, UAC, 0.7)) == ["RequestReceived"]
    assert len(layer) == 6


def test_rfc2543_ack_matches_by_the_to_tag_of_the_final_response() -> None:
    layer = TransactionLayer()
    inv = rfc2543()
    key = layer.receive(inv, UAC, 0.0)[0].key  # type: ignore[union-attr]  # RequestReceived
    assert key is not None
    busy = response(inv, 486, to_tag="uas-tag")
    layer.send_response(key, busy, 0.0)
    wrong = rfc2543("ACK", to_tag="someone-else")
    assert layer.receive(wrong, UAC, 0.1) == [RequestReceived(wrong, UAC, None)]
    assert layer.state(key) is State.COMPLETED
    assert layer.receive(non_2xx_ack(inv, busy), UAC, 0.2) == []
    assert layer.state(key) is State.CONFIRMED
    # CANCEL in RFC 2543 style finds its INVITE the same way.
    inv2 = rfc2543(cseq=7, call_id="call-7")
    key2 = layer.receive(inv2, UAC, 0.3)[0].key  # type: ignore[union-attr]  # RequestReceived
    (got,) = layer.receive(cancel_for(inv2), UAC, 0.4)
    assert isinstance(got, RequestReceived)
    assert isinstance(got.key, LegacyServerKey) and got.key.method == "CANCEL"
    assert got.cancels == key2
    run_timers(layer, 100.0)
    assert len(layer) == 2  # inv2 and its CANCEL wait for the TU
    assert len(layer._legacy_acks) == 1  # the first INVITE's ACK index entry is gone


def test_rfc2543_accepted_passes_the_ack_to_the_tu() -> None:
    layer = TransactionLayer()
    inv = rfc2543()
    key = layer.receive(inv, UAC, 0.0)[0].key  # type: ignore[union-attr]  # RequestReceived
    assert key is not None
    layer.send_response(key, response(inv, 200, to_tag="dlg"), 0.0)
    ack = rfc2543("ACK", to_tag="dlg")
    assert layer.receive(ack, UAC, 0.1) == [RequestReceived(ack, UAC, None)]
    assert layer.state(key) is State.ACCEPTED


# -- robustness -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Via", "garbage"),
        ("CSeq", "1x INVITE"),
        ("From", "<sip:alice@example.com"),
        ("To", '"unterminated <sip:bob@example.com>'),
        ("Call-ID", "has space"),
        ("CSeq", "1 BYE"),  # CSeq method differs from the request method
    ],
)
def test_malformed_requests_become_bad_request(header: str, value: str) -> None:
    layer = TransactionLayer()
    req = request()
    req.headers.set(header, value)
    req.invalidate()
    (got,) = layer.receive(req, UAC, 0.0)
    assert isinstance(got, BadRequest)
    assert got.request is req and got.source == UAC
    assert isinstance(got.error, ParseError) and got.error.status == 400
    assert len(layer) == 0
    # An ACK is never answered: a malformed one is dropped.
    ack = request("ACK")
    ack.headers.set(header, value)
    ack.invalidate()
    assert layer.receive(ack, UAC, 0.0) == []


def test_missing_headers_become_bad_request() -> None:
    layer = TransactionLayer()
    for name in ("Via", "CSeq", "From", "To", "Call-ID"):
        req = request("OPTIONS")
        req.headers.remove(name)
        req.invalidate()
        (got,) = layer.receive(req, UAC, 0.0)
        assert isinstance(got, BadRequest), name
    rfc = rfc2543()
    rfc.headers.remove("From")
    rfc.invalidate()
    assert kinds(layer.receive(rfc, UAC, 0.0)) == ["BadRequest"]


def test_server_transactions_are_bounded() -> None:
    layer = TransactionLayer(max_server_transactions=3)
    for i in range(3):
        server_key(layer, request("OPTIONS", branch=f"z9hG4bK-{i}"))
    extra = request("OPTIONS", branch="z9hG4bK-extra")
    assert layer.receive(extra, UAC, 0.0) == [Overloaded(extra, UAC)]
    # Retransmissions and ACKs still match; client transactions are not limited.
    assert layer.receive(request("OPTIONS", branch="z9hG4bK-0"), UAC, 0.0) == []
    layer.send_request(request("OPTIONS", branch="z9hG4bK-mine"), UAS, 0.0)
    assert len(layer) == 4


def test_constructor_rejects_impossible_timers() -> None:
    with pytest.raises(ValueError, match="t1"):
        TransactionLayer(t1=0)
    with pytest.raises(ValueError, match="t1"):
        TransactionLayer(t1=5, t2=4)
    with pytest.raises(ValueError, match="trying_delay"):
        TransactionLayer(trying_delay=-1)
    with pytest.raises(ValueError, match="max_server"):
        TransactionLayer(max_server_transactions=0)


def test_custom_t1_scales_every_timer() -> None:
    layer = TransactionLayer(t1=0.1, t2=0.4, t4=1.0)
    key, _ = layer.send_request(request("OPTIONS"), UAS, 0.0)
    timed = run_timers(layer, 100.0)
    assert gaps(send_times(timed)) == [0.1, 0.2, 0.4] + [0.4] * 14
    assert timed[-1] == (pytest.approx(6.4), TransactionTerminated(key))


@pytest.mark.parametrize("slack", [1024, 0])
def test_late_handle_timer_replays_the_schedule_in_order(slack: int) -> None:
    layer = TransactionLayer()
    layer.sweep_slack = slack  # 0: the heap is swept while handle_timer walks it
    key, _ = layer.send_request(request(), UAS, 0.0)
    other = request("OPTIONS", branch="z9hG4bK-2")
    other_key, _ = layer.send_request(other, UAS, 0.0)
    layer.receive(response(other, 200), UAS, 0.1)  # leaves stale E and F entries
    events = layer.handle_timer(1000.0)  # the loop was asleep: catch up
    # A at 0.5, 1.5, 3.5; K (the OPTIONS) at 5.1; A at 7.5 ... 31.5; B at 32.
    assert kinds(events) == ["Send"] * 3 + ["TransactionTerminated"] + ["Send"] * 3 + [
        "TransactionTimeout",
        "TransactionTerminated",
    ]
    assert events[3] == TransactionTerminated(other_key)
    assert layer.state(key) is None
    assert layer._armed == 0  # the live-timer count the sweep relies on


def test_sweeping_the_heap_inside_handle_timer_loses_no_timer() -> None:
    layer = TransactionLayer()
    layer.sweep_slack = 0  # sweep as soon as stale entries outnumber live ones
    for i in range(10):  # their Timer H at 5 s leaves ten stale Timer G entries
        old = request(branch=f"z9hG4bK-old{i}")
        (got,) = layer.receive(old, UAC, -27.0)
        assert isinstance(got, RequestReceived) and got.key is not None
        layer.send_response(got.key, response(old, 486), -27.0)
    inv = request()
    key = server_key(layer, inv)
    busy = response(inv, 486)
    layer.send_response(key, busy, 0.0)
    events = layer.handle_timer(1000.0)  # G at 7.5 s sweeps mid-loop
    mine = [e for e in events if isinstance(e, Send) and e.key == key]
    assert len(mine) == 10  # G at 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5
    assert TransactionTimeout(key, "H") in events
    assert len(layer) == 0 and layer._armed == 0


def test_many_transactions_keep_the_timer_heap_small() -> None:
    layer = TransactionLayer()
    now = 0.0
    for i in range(3000):
        req = request("OPTIONS", branch=f"z9hG4bK-{i}")
        layer.send_request(req, UAS, now)
        layer.receive(response(req, 200), UAS, now)  # cancels E and F at once
        now += 0.001
        layer.handle_timer(now)
    assert len(layer) == 3000  # all in Completed, waiting for Timer K
    assert len(layer._heap) <= 3 * 3000 + 1024
    run_timers(layer, now + 10)
    assert len(layer) == 0
    assert layer.next_timer() is None
    assert layer._armed == 0


def test_message_builders() -> None:
    inv = request(routes=("<sip:p.example.com;lr>",))
    cancel = cancel_for(inv)
    assert cancel.method == "CANCEL" and cancel.uri == inv.uri
    assert cancel.via == [inv.top_via] and cancel.cseq.seq == 1
    assert cancel.cseq.method == "CANCEL"
    assert (cancel.from_, cancel.to, cancel.call_id) == (inv.from_, inv.to, inv.call_id)
    assert cancel.headers.getall("Route") == ["<sip:p.example.com;lr>"]
    cancel.validate()
    trying = trying_for(inv)
    trying.validate()
    assert parse_message(bytes(trying)) == trying
    branch = new_branch()
    assert branch.startswith(MAGIC_COOKIE) and len(branch) == 23
    assert new_branch() != branch
    assert INVITE_SERVER.step(State.PROCEEDING, Input.TU_2XX).target is State.ACCEPTED
