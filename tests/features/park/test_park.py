"""Call park (features/park) on the office harness: a blind transfer to 70 parks the
caller on the first free slot (71-78) with music on hold; dialling the slot
retrieves it (the caller's leg as it was); an empty slot is 404; after park_timeout
the parked call rings its parker, then park_operator; dialling 70 first announces a
slot that the attended transfer completing to it then uses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.park import FEATURE as PARK
from tests.harness.office import DOMAIN, Office, offices
from tests.pbx.test_call_ops import notifies, refer, replaces_of

SETTINGS = ["name(string) value(string,null)", "domain:pbx.local", "park_timeout:10"]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_settings": SETTINGS})
    assert PARK.slots == {}  # nothing parked is left behind in RAM


def parked(office: Office) -> dict[str, object]:
    return dict(office.engine.features.status().get("park", {}))


def test_a_transfer_to_70_parks_and_the_slot_retrieves(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    assert notifies(office, b)[-1] == "SIP/2.0 200 OK (terminated)"
    assert list(parked(office)) == ["71"]
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.endpoint is not None and pbx_call.endpoint.playing  # music on hold
    assert c.call("72").status == 404  # nothing parked there
    got = c.call("71")
    assert got.status == 200
    assert parked(office) == {}
    assert pbx_call.endpoint is None and pbx_call.media is not None
    assert pbx_call.media.caller.port == call.pbx_port  # the caller's leg as it was
    assert pbx_call.media.callee.port == got.pbx_port
    assert office.engine.features.running_apps == 0  # the park application let go
    call.hang_up()
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_a_parked_call_rings_its_parker_after_the_timeout(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    office.advance(11)
    assert parked(office) == {}
    assert len(b.incoming) == 2 and b.incoming[1].state == "answered"  # rung back
    call.hang_up()
    assert office.left_behind() == []


def test_then_the_operator_then_the_caller_is_told(office: Office) -> None:
    office.reload("pbx_settings", [*SETTINGS, "park_operator:103"])
    a, b = office.phone("100"), office.phone("101")
    d = office.phone("103", mode="busy")
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    b.mode = "busy"  # the parker is busy when the call comes back
    office.advance(11)
    assert len(b.incoming) == 2 and b.incoming[1].final == 486
    assert len(d.incoming) == 1 and d.incoming[0].final == 486
    office.advance(5)  # "nobody took your call", then the call ends
    assert len(a.byes) == 1 and call.state == "ended"
    assert office.left_behind() == []


def test_dialling_70_announces_the_slot_an_attended_transfer_then_uses(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    (inc_b,) = b.incoming
    consult = b.call("70")  # the parker hears "parked on 7 1"
    assert consult.status == 200
    office.advance(1)
    d = office.phone("103")
    other = c.call("103")  # meanwhile 103 parks another call: not on 71, 101's
    (inc_d,) = d.incoming
    assert refer(d, inc_d, f"<sip:70@{DOMAIN}>") == 202
    assert list(parked(office)) == ["72"]
    target = f"<sip:70@{DOMAIN}?Replaces={replaces_of(consult, b)}>"
    assert refer(b, inc_b, target) == 202
    assert sorted(parked(office)) == ["71", "72"]  # the slot announced to 101
    assert notifies(office, b)[-1] == "SIP/2.0 200 OK (terminated)"
    assert len(b.byes) == 2  # the consultation and the transferred leg released
    assert a.call("71").status == 200  # 100, whose own call is parked, may take it too
    call.hang_up()
    other.hang_up()
    assert office.left_behind() == []


def test_hash_hash_70_announces_the_slot_before_releasing(office: Office) -> None:
    a, c = office.phone("100"), office.phone("102")
    office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("##")
    office.advance(1)
    call.keys("70#")
    assert list(parked(office)) == ["71"]  # 101 is parked at once
    leaving = pbx_call.leaving
    assert leaving is not None and leaving.playing  # 100 hears "parked on 7 1"
    assert a.byes == []  # and is not released yet
    office.advance(5)
    assert len(a.byes) == 1 and pbx_call.leaving is None and leaving.closed
    assert pbx_call.endpoint is not None  # 101 on hold in the park application
    got = c.call("71")
    assert got.status == 200 and parked(office) == {}
    got.hang_up()
    assert office.left_behind() == []


def test_hanging_up_during_the_slot_announcement(office: Office) -> None:
    a = office.phone("100")
    office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("##")
    office.advance(1)
    call.keys("70#")
    assert pbx_call.leaving is not None
    call.hang_up()  # the parker does not wait for the slot
    office.advance(5)
    assert a.byes == [] and pbx_call.leaving is None  # no BYE after its own
    assert list(parked(office)) == ["71"]
    assert pbx_call.state.value == "answered"
    office.advance(11)  # park_timeout: rings 100 back, which answers
    assert len(a.incoming) == 1
    a.incoming[0].bye()
    assert office.left_behind() == []


def test_refer_to_70_releases_at_once_and_keeps_the_slot_in_log_and_status(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    (inc_b,) = b.incoming
    with caplog.at_level(logging.INFO):
        assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    # RFC 3515: the final NOTIFY says how the referred INVITE went, and the phone
    # holding the call ends it on it: no announcement waits for it.
    assert notifies(office, b)[-1] == "SIP/2.0 200 OK (terminated)"
    assert len(b.byes) == 1
    assert parked(office) == {"71": {"parker": "101", "seconds": 0}}
    assert "101 parks a call on 71" in caplog.text
    office.advance(11)  # nobody takes it: it rings 101 back; 101 now busy
    assert len(b.incoming) == 2
    call.hang_up()
    assert office.left_behind() == []
