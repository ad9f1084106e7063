"""A new far end for an answered call (pbx/call_ops.py) on the office harness: blind
transfer by REFER from either side (RFC 3515: 202, sipfrag NOTIFYs, BYE to the
transferor), the transferring extension's call class, a failed transfer ringing the
transferor back, an application answering after ringing, and an application's
bridge to a number."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Reject,
    Session,
    Why,
)
from pbx_core.features.registry import FEATURES
from tests.harness.office import (
    DOMAIN,
    PROVIDER_TRUNK,
    Incoming,
    Office,
    Outgoing,
    Phone,
    extension_row,
    extensions,
    message,
    offices,
)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path)


def refer(phone: Phone, leg: Incoming | Outgoing, target: str, cseq: int = 50) -> int | None:
    """`phone` sends REFER inside its call `leg`; the PBX's final status."""
    if isinstance(leg, Incoming):  # the PBX called this phone
        ours = f"<sip:{phone.number}@{DOMAIN}>;tag={leg.tag}"
        theirs = leg.invite.headers.get("from")
    else:
        ours = leg.invite.headers.get("from")
        theirs = f"<sip:{leg.number}@{DOMAIN}>;tag={leg.final.to.tag}"
    req = message(
        f"""REFER sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKrefer{phone.port}x{cseq}
From: {ours}
To: {theirs}
Call-ID: {leg.call_id}
CSeq: {cseq} REFER
Max-Forwards: 70
Contact: <sip:{phone.number}@127.0.0.1:{phone.port}>
Refer-To: {target}"""
    )
    key = ("REFER", leg.call_id, cseq)
    phone.office.run(phone.office.engine.on_request, req, phone.address, key, None)
    return phone.office.stack.final(key)


def notifies(office: Office, phone: Phone) -> list[str]:
    """The sipfrag status lines of the NOTIFYs the PBX sent `phone`, in order."""
    out = []
    for req, dest, _cb in office.stack.requests:
        if req.method == "NOTIFY" and dest == phone.address:
            assert req.headers.get("event", "").startswith("refer")
            assert req.headers.get("content-type", "").startswith("message/sipfrag")
            state = req.headers.get("subscription-state") or ""
            out.append(f"{req.body.decode().strip()} ({state.split(';')[0]})")
    return out


def byes_to(phone: Phone) -> int:
    return len(phone.byes)


def the_call(office: Office) -> object:
    (call,) = office.engine.calls.calls.values()
    return call


def test_callee_transfers_the_caller_blind(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    assert call.status == 200
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:102@{DOMAIN}>") == 202
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert "<sip:100@" in inc_c.invite.headers.get("from")  # the caller's identity
    assert notifies(office, b) == ["SIP/2.0 100 Trying (active)", "SIP/2.0 200 OK (terminated)"]
    assert byes_to(b) == 1 and byes_to(a) == 0 and byes_to(c) == 0
    assert office.stack.sent_requests("CANCEL") == []  # an answered INVITE is never CANCELled
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.answered is not None and pbx_call.answered.target.label == f"102@{DOMAIN}"
    assert pbx_call.media is not None
    # The caller's media leg is the one it had (its SDP never changed), now relayed
    # to a new leg facing 102's SDP address.
    assert pbx_call.media.caller.port == call.pbx_port
    assert pbx_call.media.callee.remote is not None
    assert pbx_call.media.callee.remote[1] == 41000 + c.port % 1000
    call.hang_up()
    assert byes_to(c) == 1
    assert office.left_behind() == []


def test_caller_transfers_the_callee_blind(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    assert call.status == 200
    (inc_b,) = b.incoming
    assert refer(a, call, f"<sip:102@{DOMAIN}>") == 202
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert "<sip:101@" in inc_c.invite.headers.get("from")  # the one who stays
    assert notifies(office, a)[-1] == "SIP/2.0 200 OK (terminated)"
    assert byes_to(a) == 1 and byes_to(b) == 0
    assert office.stack.sent_requests("CANCEL") == []
    pbx_call = office.engine.calls.calls[next(iter(office.engine.calls.calls))]
    assert pbx_call.media is not None
    assert pbx_call.media.caller.remote is not None
    assert pbx_call.media.caller.remote[1] == 41000 + b.port % 1000  # b's leg stayed
    inc_b.bye()  # the one who stayed hangs up: the new far end hears BYE
    assert byes_to(c) == 1
    assert office.left_behind() == []


def test_transferor_hanging_up_early_does_not_end_the_transfer(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102", mode="ring")
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:102@{DOMAIN}>") == 202
    inc_b.bye()  # many phones hang up right after the 202
    assert office.bye_status[("BYE", inc_b.call_id, inc_b.tag)] == 200
    assert byes_to(a) == 0
    c.pick_up()
    office.loop.settle()
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.answered is not None and pbx_call.answered.target.label == f"102@{DOMAIN}"
    call.hang_up()
    assert office.left_behind() == []


def test_failed_blind_transfer_rings_the_transferor_back(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102", mode="busy")
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:102@{DOMAIN}>") == 202
    assert notifies(office, b) == [
        "SIP/2.0 100 Trying (active)",
        "SIP/2.0 486 Busy Here (terminated)",
    ]
    # The transferor's old leg got BYE; its phone rang again and answered (recall).
    assert byes_to(b) == 1
    assert len(b.incoming) == 2 and b.incoming[1].state == "answered"
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.answered is not None and pbx_call.answered.target.label == f"101@{DOMAIN}"
    call.hang_up()
    assert office.left_behind() == []


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


@pytest.mark.parametrize(("klass", "reaches_trunk"), [("internal", False), ("national", True)])
def test_transfer_to_an_outside_number_needs_the_transferors_call_class(
    trunk_office: Office, klass: str, reaches_trunk: bool
) -> None:
    office = trunk_office
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class=klass)))
    a, b = office.phone("100"), office.phone("101")
    provider = office.provider()
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:0123456@{DOMAIN}>") == 202
    if reaches_trunk:
        assert notifies(office, b)[-1] == "SIP/2.0 200 OK (terminated)"
        (inc,) = provider.incoming
        assert (inc.invite.uri.user or "").endswith("123456")  # the route strips the 0
    else:
        assert notifies(office, b)[-1] == "SIP/2.0 403 Forbidden (terminated)"
        assert provider.incoming == []
    call.hang_up()
    assert office.left_behind() == []


def test_refer_from_an_unanswered_or_app_call_is_refused(office: Office) -> None:
    a = office.phone("100")
    echo = a.call("*43")  # an application's call: nothing to transfer
    assert echo.status == 200
    status = refer(a, echo, f"<sip:101@{DOMAIN}>")
    assert status == 488
    echo.hang_up()
    assert office.left_behind() == []


# ---------------------------------------------------------------- applications


@dataclass(frozen=True)
class Operator(Feature):
    """A test feature: *99N bridges the caller to N; unanswered calls to 101 go to
    an application (as voicemail will)."""

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        number = dial.arg
        klass = "national" if dial.code == "*95" else None  # as DISA grants its own

        async def app(session: Session) -> None:
            status = await session.bridge(number, klass)
            RESULTS.append(status)
            if status != 200:
                await session.play("tone:confirmation")
                session.hangup()

        return Answer(app, "operator")

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        if extension != "101" or why is not Why.NO_ANSWER:
            return None

        async def app(session: Session) -> None:
            RESULTS.append("after-ringing")
            await session.play("tone:confirmation")
            session.hangup()

        return Answer(app, "after-ringing")


RESULTS: list[object] = []


@pytest.fixture
def op_office(tmp_path: Path) -> Iterator[Office]:
    RESULTS.clear()
    codes = {"*99": "bridge to a number", "*95": "bridge with the national class"}
    operator = Operator(name="operator", codes=codes)
    yield from offices(tmp_path, features=(*FEATURES, operator))


def test_an_application_answers_after_ringing(op_office: Office) -> None:
    office = op_office
    a, b = office.phone("100"), office.phone("101", mode="ring")
    call = a.call("101")
    assert call.status is None and 180 in call.provisionals
    office.advance(61)  # the extension's ring timeout
    assert call.status == 200
    assert (b.incoming[0].state, b.incoming[0].final) == ("cancelled", 487)
    office.advance(3)
    assert RESULTS == ["after-ringing"]
    assert byes_to(a) == 1  # the application hung up
    assert office.left_behind() == []


def test_an_application_bridges_its_caller(op_office: Office) -> None:
    office = op_office
    a, c = office.phone("100"), office.phone("102")
    call = a.call("*99102")
    assert call.status == 200
    office.advance(1)
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert RESULTS == [200]
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.endpoint is None and pbx_call.media is not None
    assert pbx_call.media.caller.port == call.pbx_port  # the caller's leg stayed
    call.hang_up()
    assert byes_to(c) == 1
    assert office.left_behind() == []


def test_an_application_may_bridge_with_a_class_of_its_own(op_office: Office) -> None:
    office = op_office
    office.reload("pbx_trunk", PROVIDER_TRUNK)
    office.reload("pbx_extension", extensions(extension_row(1, "100", call_class="internal")))
    a = office.phone("100")
    provider = office.provider()
    a.call("*950123456")  # the class the application grants, not 100's
    office.advance(3)
    assert RESULTS == [200]
    (inc,) = provider.incoming
    assert (inc.invite.uri.user or "").endswith("123456")
    a.call("*95*43")  # no feature codes with a class of its own
    office.advance(3)
    assert RESULTS[1] == 404


def test_a_bridge_to_a_busy_number_returns_to_the_application(op_office: Office) -> None:
    office = op_office
    a = office.phone("100")
    office.phone("102", mode="busy")
    call = a.call("*99102")
    office.advance(3)
    assert RESULTS == [486]
    assert byes_to(a) == 1  # the application played its tone, then hung up
    assert call.status == 200
    assert office.left_behind() == []


def test_an_applications_bridge_keeps_the_callers_call_class(op_office: Office) -> None:
    # An outside number through a bridge needs the caller's class (100: internal).
    office = op_office
    office.reload("pbx_trunk", PROVIDER_TRUNK)
    office.reload("pbx_extension", extensions(extension_row(1, "100", call_class="internal")))
    a = office.phone("100")
    provider = office.provider()
    a.call("*990123456")
    office.advance(3)
    assert RESULTS == [403]
    assert provider.incoming == []
    assert office.left_behind() == []


# ---------------------------------------------------------------- attended transfer


def replaces_of(leg: Incoming | Outgoing, phone: Phone) -> str:
    """The Replaces a phone puts in its Refer-To for its call `leg` (RFC 3891):
    Call-ID;to-tag=<remote tag>;from-tag=<local tag>, URI-escaped."""
    if isinstance(leg, Incoming):
        local, remote = leg.tag, leg.invite.from_.tag
    else:
        local, remote = leg.from_tag, leg.final.to.tag
    value = f"{leg.call_id};to-tag={remote};from-tag={local}"
    return value.replace("@", "%40").replace(";", "%3B").replace("=", "%3D")


def test_attended_transfer_joins_the_two_far_ends(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    first = a.call("101")  # 100 -> 101 (101 is the far end)
    (inc_b,) = b.incoming
    consult = b.call("102")  # 101 -> 102 (101 called: it is the caller there)
    assert consult.status == 200
    (inc_c,) = c.incoming
    target = f"<sip:102@{DOMAIN}?Replaces={replaces_of(consult, b)}>"
    assert refer(b, inc_b, target) == 202
    assert notifies(office, b) == ["SIP/2.0 100 Trying (active)", "SIP/2.0 200 OK (terminated)"]
    assert byes_to(b) == 2  # both of the transferor's legs
    assert byes_to(a) == 0 and byes_to(c) == 0
    assert office.stack.sent_requests("CANCEL") == []
    (call,) = office.engine.calls.calls.values()
    assert call.answered is not None and call.answered.target.label == f"102@{DOMAIN}"
    assert call.media is not None
    assert call.media.caller.port == first.pbx_port  # 100's leg as it was
    assert call.media.callee.port == int(inc_c.invite.body.split(b"m=audio ")[1].split()[0])
    assert call.media.caller.partner is call.media.callee
    first.hang_up()
    assert byes_to(c) == 1
    assert office.left_behind() == []


def test_attended_transfer_when_the_far_ends_called_the_transferor(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    first = b.call("100")  # 101 -> 100: the transferor is side "a" here
    assert len(a.incoming) == 1
    second = c.call("101")  # 102 -> 101: the transferor is the far end there
    incs = b.incoming
    assert first.status == 200 and second.status == 200 and len(incs) == 1
    target = f"<sip:102@{DOMAIN}?Replaces={replaces_of(incs[0], b)}>"
    assert refer(b, first, target) == 202
    assert notifies(office, b)[-1] == "SIP/2.0 200 OK (terminated)"
    assert byes_to(b) == 2 and byes_to(a) == 0 and byes_to(c) == 0
    (call,) = office.engine.calls.calls.values()
    assert call.media is not None and call.media.callee.port == second.pbx_port
    second.hang_up()  # 102 hangs up the call it placed: 100 hears BYE
    assert byes_to(a) == 1
    assert office.left_behind() == []


def test_attended_transfer_to_a_call_that_is_not_the_transferors_is_refused(
    office: Office,
) -> None:
    a, b, c, d = (office.phone(n) for n in ("100", "101", "102", "103"))
    first = a.call("101")
    (inc_b,) = b.incoming
    other = c.call("103")  # not 101's call
    target = f"<sip:103@{DOMAIN}?Replaces={replaces_of(other, c)}>"
    assert refer(b, inc_b, target) == 403
    bogus = f"<sip:103@{DOMAIN}?Replaces=nosuch%3Bto-tag%3Dx%3Bfrom-tag%3Dy>"
    assert refer(b, inc_b, bogus, cseq=51) == 481
    assert len(office.engine.calls.calls) == 2
    first.hang_up()
    other.hang_up()
    assert byes_to(d) == 1 and byes_to(b) == 1  # each call ended as its own
    assert office.left_behind() == []


@dataclass(frozen=True)
class NoTransfer(Feature):
    """A test feature: 101 may not transfer calls anywhere but 103."""

    def transfer(
        self, ctx: Context, call: CallInfo, extension: str, number: str
    ) -> Decision | None:
        if extension == "101" and number != "103":
            return Reject(403, "101 transfers to 103 only")
        return None


def test_a_feature_may_refuse_a_transfer(tmp_path: Path) -> None:
    feature = NoTransfer(name="notransfer")
    for office in offices(tmp_path, features=(*FEATURES, feature)):
        a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
        d = office.phone("103")
        call = a.call("101")
        (inc_b,) = b.incoming
        assert refer(b, inc_b, f"<sip:102@{DOMAIN}>") == 403
        assert c.incoming == [] and notifies(office, b) == []
        pbx_call = office.engine.calls.by_key[call.key]
        assert pbx_call.answered is not None and pbx_call.answered.target.label.startswith("101@")
        assert refer(b, inc_b, f"<sip:103@{DOMAIN}>", cseq=51) == 202
        assert len(d.incoming) == 1
        call.hang_up()
        assert office.left_behind() == []
