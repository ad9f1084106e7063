"""Follow-me (features/followme + pbx/call_confirm.py) on the office harness: the
extension rings alone for the pre-ring, then with its list; an outside number's
phone must press 1 before the caller is answered (its voicemail, which answers
everything, never takes the call); anything else or silence releases it; *21
switches follow-me off and on (kept across a restart); the follow-me owner's call
class applies to its outside numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import (
    PROVIDER_TRUNK,
    Incoming,
    Office,
    RtpSocket,
    extension_row,
    extensions,
    message,
    offices,
)

HEADER = (
    "extension(string) numbers(string) strategy(string) prering(int) ring_time(int) "
    "confirm(int) enabled(int)"
)


def followme(*rows: str) -> list[str]:
    return [HEADER, *rows]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    tables = {
        "pbx_trunk": PROVIDER_TRUNK,
        "pbx_followme": followme("101:102,0123456:ringall:5:20:1:1"),
    }
    yield from offices(tmp_path, tables=tables)


def press(office: Office, inc: Incoming, digit: str) -> None:
    """The phone of `inc` presses a key: RFC 4733 to the PBX's port in its INVITE."""
    port = int(inc.invite.body.split(b"m=audio ")[1].split()[0])
    rtp = RtpSocket()
    office.sockets.append(rtp)
    rtp.key(port, digit)
    office.settle_io()


def test_the_extension_rings_alone_then_with_its_list(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    c = office.phone("102", mode="ring")
    provider = office.provider()
    provider.mode = "ring"
    call = a.call("101")
    assert len(b.incoming) == 1 and c.incoming == [] and provider.incoming == []
    office.advance(5.5)  # the pre-ring
    assert len(c.incoming) == 1 and len(provider.incoming) == 1
    (out,) = provider.incoming
    assert any("reason=follow-me" in d for d in out.header("diversion"))
    assert "<sip:100@" in c.incoming[0].invite.headers.get("from")
    c.pick_up()  # an extension of the list takes it at once: no confirmation
    assert call.status == 200
    assert provider.incoming[0].state == "cancelled"
    call.hang_up()
    assert office.left_behind() == []


def test_an_outside_phone_must_press_1(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    provider = office.provider()  # answers at once, as a mobile's voicemail would
    call = a.call("101")
    office.advance(5.5)
    (out,) = provider.incoming
    assert out.state == "answered" and out.acked
    assert call.status is None  # the caller still hears ringback
    office.advance(2)
    press(office, out, "1")
    assert call.status == 200
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.answered is not None and pbx_call.answered.target.label == "provider"
    assert pbx_call.media is not None and pbx_call.media.caller.port == call.pbx_port
    call.hang_up()
    assert len(provider.byes) == 1
    assert office.left_behind() == []


def test_silence_or_another_key_releases_the_outside_phone(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    provider = office.provider()
    call = a.call("101")
    office.advance(5.5)
    (out,) = provider.incoming
    press(office, out, "2")
    assert len(provider.byes) == 1 and call.status is None  # others still ring
    office.advance(25)  # the step rings out: nobody took it
    assert call.status == 480
    assert office.left_behind() == []


def test_no_confirmation_answer_never_reaches_the_caller(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    provider = office.provider()
    call = a.call("101")
    office.advance(5.5)
    office.advance(16)  # the confirming phone says nothing for 15 s
    assert len(provider.byes) == 1 and call.status is None
    call.cancel()
    assert office.left_behind() == []


def test_star21_switches_it_off_and_on(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    c = office.phone("102", mode="ring")
    dial_code(b, "*21")
    assert office.engine.features.toggles("101")["followme.followme"] is False
    call = a.call("101")
    office.advance(10)
    assert c.incoming == []  # only 101 rings
    call.cancel()
    office.restart()
    a, b = office.phone("100"), office.phone("101", mode="ring")
    c = office.phone("102", mode="ring")
    dial_code(b, "*21")
    call = a.call("101")
    office.advance(5.5)
    assert len(c.incoming) == 1
    call.cancel()
    assert office.left_behind() == []


def test_the_owners_call_class_applies_to_outside_numbers(office: Office) -> None:
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    a = office.phone("100")
    office.phone("101", mode="ring")
    c = office.phone("102", mode="ring")
    provider = office.provider()
    call = a.call("101")
    office.advance(5.5)
    assert provider.incoming == []  # 101 may not call outside: that number is skipped
    assert len(c.incoming) == 1
    call.cancel()
    assert office.left_behind() == []


def test_an_outside_phone_hanging_up_instead_only_leaves_itself(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    provider = office.provider()
    call = a.call("101")
    office.advance(5.5)
    (out,) = provider.incoming
    out.bye()  # declines by hanging up while asked
    assert call.status is None and a.byes == []  # the caller still hears ringback
    b.pick_up()  # and the extension can still take it
    assert call.status == 200
    call.hang_up()
    assert office.left_behind() == []


def test_a_key_in_sip_info_accepts_too(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    provider = office.provider()
    call = a.call("101")
    office.advance(5.5)
    (out,) = provider.incoming
    info = message(
        f"""INFO sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {provider.address[1]}:{provider.port};branch=z9hG4bKfminfo1
From: <sip:provider@{provider.address[1]}>;tag={out.tag}
To: {out.invite.headers.get("from")}
Call-ID: {out.call_id}
CSeq: 5 INFO
Max-Forwards: 70""",
        b"Signal=1\r\nDuration=160\r\n",
        "application/dtmf-relay",
    )
    key = ("INFO", out.call_id, 5)
    office.run(office.engine.on_request, info, provider.address, key, None)
    assert office.stack.final(key) == 200
    assert call.status == 200
    call.hang_up()
    assert office.left_behind() == []
