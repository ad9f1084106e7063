"""*43, the echo test (features/echo): the PBX answers and sends back what the caller
sends, until the caller hangs up; *431 is not the echo test (nothing follows *43)."""

from __future__ import annotations

from tests.harness.office import Office


def test_star43_is_answered_and_echoes_what_the_caller_sends(office: Office) -> None:
    phone = office.phone("100")
    call = phone.call("*43")
    assert call.status == 200
    assert b"m=audio " in call.final.body
    assert office.engine.features.running_apps == 1
    assert call.rtp is not None
    for frame in (b"\x11" * 160, b"\x22" * 160, b"\x33" * 160):
        call.rtp.audio(call.pbx_port, frame)
    office.settle_io()
    office.advance(0.1)
    office.settle_io()
    echoed = [p[12:] for p in call.rtp.received()]
    assert echoed == [b"\x11" * 160, b"\x22" * 160, b"\x33" * 160]
    # The application never hangs up by itself within the call (only the RTP
    # timeout or the caller ends it).
    for _ in range(5):
        call.rtp.audio(call.pbx_port, b"\x44" * 160)
        office.settle_io()
        office.advance(10)
    assert call.state == "answered" and phone.byes == []
    call.hang_up()
    assert office.left_behind() == []


def test_star431_is_not_the_echo_test(office: Office) -> None:
    call = office.phone("100").call("*431")
    assert call.status == 404  # no extension, no route: nothing answered it
    assert office.engine.features.running_apps == 0
    assert office.left_behind() == []


def test_the_echo_test_ends_when_the_caller_stops_sending(office: Office) -> None:
    # The RTP timeout (setting rtp_timeout, 60 s) ends the echo test: BYE to the caller.
    phone = office.phone("100")
    call = phone.call("*43")
    assert call.status == 200
    office.advance(61)
    assert [b.call_id for b in phone.byes] == [call.call_id]
    assert office.left_behind() == []
