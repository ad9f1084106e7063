"""Call waiting (features/callwaiting): *70 on, *71 off. Off: a second call to an
extension already in a call is busy (486), which triggers forward-on-busy. On (the
default): the second call rings the phone."""

from __future__ import annotations

from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import Office


def test_call_waiting_on_rings_a_phone_already_in_a_call(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    first = c.call("101")
    assert first.status == 200
    b.mode = "ring"
    second = a.call("101")
    assert second.status is None and len(b.ringing()) == 1  # the second call rings
    second.cancel()
    assert second.status == 487
    first.hang_up()
    assert office.left_behind() == []


def test_call_waiting_off_makes_a_busy_extension_busy(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*71")
    first = c.call("101")
    assert first.status == 200
    second = a.call("101")
    assert second.status == 486
    assert len(b.incoming) == 1  # only the first call reached the phone
    first.hang_up()
    third = a.call("101")  # not in a call any more: it rings
    assert third.status == 200
    third.hang_up()
    dial_code(b, "*70")
    first = c.call("101")
    b.mode = "ring"
    second = a.call("101")
    assert second.status is None and len(b.ringing()) == 1
    second.cancel()
    first.hang_up()
    assert office.left_behind() == []


def test_a_ringing_extension_is_busy_too_with_call_waiting_off(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*71")
    b.mode = "ring"
    first = c.call("101")
    assert first.status is None
    assert a.call("101").status == 486
    first.cancel()
    assert office.left_behind() == []


def test_call_waiting_off_triggers_forward_on_busy(office: Office) -> None:
    a, b, c, d = (office.phone(n) for n in ("100", "101", "102", "103"))
    dial_code(b, "*71")
    dial_code(b, "*90103")
    first = c.call("101")
    assert first.status == 200
    second = a.call("101")
    assert second.status == 200  # answered by 103
    (offered,) = d.incoming
    assert "100" in offered.invite.headers.get("from")
    (diversion,) = offered.header("diversion")
    assert diversion.startswith("<sip:101@") and "reason=user-busy" in diversion
    second.hang_up()
    first.hang_up()
    assert office.left_behind() == []
