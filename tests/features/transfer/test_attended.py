"""In-call attended transfer `*2` (features/transfer + pbx/call_consult.py) on the
office harness: the extension presses *2 and a number, the other party is held
(music on hold) while the number rings the extension; then its hang-up joins the two
(answered or still ringing), `*` or a failed number brings it back with the held
party, the held party's hang-up leaves a normal call. Nothing is left behind."""

from __future__ import annotations

from pbx_core.pbx.call_state import Call
from tests.harness.office import Office, Outgoing, RtpSocket


def consult(office: Office, call: Outgoing, number: str, wait: float = 1.0) -> Call:
    """The caller presses *2 and dials `number`; the PBX's call."""
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("*2")
    assert pbx_call.aside == "a"
    office.advance(1)  # the prompt (a beep on a build without prompts)
    call.keys(number + "#")
    office.advance(wait)
    return pbx_call


def relaying(pbx_call: Call) -> bool:
    media = pbx_call.media
    return media is not None and (media.caller.mode, media.callee.mode) == ("relay", "relay")


def test_consult_then_hang_up_joins_the_two(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    (inc_b,) = b.incoming
    pbx_call = consult(office, call, "102")
    consulting = pbx_call.consult
    assert consulting is not None and consulting.talking
    assert consulting.held_leg.playing or consulting.held_leg.mode == "silent"  # on hold
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert "<sip:100@" in inc_c.invite.headers.get("from")  # the transferor consults
    assert a.byes == [] and b.byes == [] and c.byes == []
    assert pbx_call.media is not None and pbx_call.media.caller is consulting.leg
    call.hang_up()  # 100 hangs up: 101 and 102 talk
    assert pbx_call.consult is None and pbx_call.state.value == "answered"
    assert b.byes == [] and c.byes == []
    assert pbx_call.caller.startswith("101@") and pbx_call.callee.startswith("102@")
    assert pbx_call.media is not None and pbx_call.media.caller is consulting.held_leg
    assert relaying(pbx_call)
    office.advance(1)
    assert office.engine.features.running_apps == 0
    inc_b.bye()  # the held party's dialog is side "a" now: its BYE reaches 102
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_star_ends_the_consultation(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    c = office.phone("102", mode="ring")
    call = a.call("101")
    pbx_call = consult(office, call, "102")
    (inc_c,) = c.incoming
    assert inc_c.state == "ringing"
    call.keys("*")
    office.advance(1)
    assert inc_c.state == "cancelled"
    assert pbx_call.consult is None and pbx_call.aside is None
    assert relaying(pbx_call)
    assert pbx_call.answered is not None and pbx_call.answered.target.label.startswith("101@")
    assert a.byes == [] and b.byes == []
    call.keys("*2")  # and it can consult again
    assert pbx_call.aside == "a"
    office.advance(12)  # nothing dialled: back
    assert pbx_call.aside is None and relaying(pbx_call)
    call.hang_up()
    assert len(b.byes) == 1
    assert office.left_behind() == []


def test_star_after_the_answer_too(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    pbx_call = consult(office, call, "102")
    call.keys("*")
    office.advance(1)
    assert len(c.byes) == 1  # the consulted party is released
    assert pbx_call.consult is None and relaying(pbx_call)
    call.hang_up()
    assert len(b.byes) == 1
    assert office.left_behind() == []


def test_a_busy_number_brings_it_back_with_an_announcement(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102", mode="busy")
    call = a.call("101")
    pbx_call = consult(office, call, "102", wait=0)
    assert pbx_call.consult is not None and pbx_call.media is None  # the announcement
    assert pbx_call.consult.leg.playing
    office.advance(3)
    assert pbx_call.consult is None and relaying(pbx_call)
    assert a.byes == [] and b.byes == []
    call.hang_up()
    assert office.left_behind() == []


def test_the_consulted_party_hanging_up_brings_it_back(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    pbx_call = consult(office, call, "102")
    (inc_c,) = c.incoming
    inc_c.bye()
    office.advance(1)
    assert pbx_call.consult is None and relaying(pbx_call)
    assert a.byes == [] and b.byes == []
    call.hang_up()
    assert len(b.byes) == 1
    assert office.left_behind() == []


def test_hanging_up_while_it_rings_transfers_on_ringing(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    c = office.phone("102", mode="ring")
    call = a.call("101")
    (inc_b,) = b.incoming
    pbx_call = consult(office, call, "102")
    held = pbx_call.consult
    assert held is not None and not held.talking
    call.hang_up()
    assert pbx_call.consult is None and pbx_call.replacing is not None
    assert held.held_leg.playing  # the held party hears ringback now
    (inc_c,) = c.incoming
    assert inc_c.state == "ringing"  # the same INVITE rings on
    c.pick_up()
    assert pbx_call.replacing is None and relaying(pbx_call)
    assert pbx_call.caller.startswith("101@") and pbx_call.callee.startswith("102@")
    inc_b.bye()
    assert len(c.byes) == 1
    office.advance(1)
    assert office.left_behind() == []


def test_transfer_on_ringing_unanswered_rings_the_transferor_back(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102", mode="ring")
    call = a.call("101")
    (inc_b,) = b.incoming
    consult(office, call, "102")
    call.hang_up()
    office.advance(40)  # 102's ring timeout
    assert len(a.incoming) == 1 and a.incoming[0].state == "answered"  # rung back
    inc_b.bye()
    assert len(a.byes) == 1
    assert office.left_behind() == []


def test_the_held_party_hanging_up_leaves_a_normal_call(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    (inc_b,) = b.incoming
    pbx_call = consult(office, call, "102")
    inc_b.bye()
    office.advance(1)
    assert pbx_call.consult is None and pbx_call.aside is None
    assert a.byes == [] and c.byes == []
    assert relaying(pbx_call)
    assert office.engine.features.running_apps == 0
    call.hang_up()
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_the_callee_consults_too(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    (inc_b,) = b.incoming
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.media is not None
    rtp = RtpSocket()  # 101's phone sends its keys from its RTP port
    office.sockets.append(rtp)
    port = pbx_call.media.callee.port

    def press(digits: str) -> None:
        for d in digits:
            rtp.key(port, d)
            office.settle_io()

    press("*2")
    assert pbx_call.aside == "b"
    office.advance(1)
    press("102#")
    office.advance(1)
    assert pbx_call.consult is not None and pbx_call.consult.talking
    assert pbx_call.caller.startswith("101")  # the transferor is side "a" meanwhile
    assert c.incoming[0].state == "answered"
    inc_b.bye()  # 101 hangs up: 100 and 102 talk
    assert pbx_call.consult is None
    assert pbx_call.caller.startswith("100@") and pbx_call.callee.startswith("102@")
    assert a.byes == [] and c.byes == [] and relaying(pbx_call)
    assert pbx_call.media is not None and call.rtp is not None
    sent = pbx_call.media.callee.stats().packets_sent
    for _ in range(5):  # 100's audio now reaches 102's leg
        call.rtp.audio(pbx_call.media.caller.port, bytes([0x10] * 160))
        office.settle_io()
    assert pbx_call.media.callee.stats().packets_sent >= sent + 5
    office.advance(1)
    call.hang_up()
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_the_call_class_applies(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = consult(office, call, "0123456")  # no outbound route: refused
    office.advance(3)
    assert pbx_call.consult is None and relaying(pbx_call)
    assert a.byes == [] and b.byes == []
    call.hang_up()
    assert office.left_behind() == []


def test_a_number_the_pbx_answers_is_not_consulted(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = consult(office, call, "*43", wait=0)  # the echo test
    assert pbx_call.endpoint is None  # no application took the transferor's leg
    office.advance(3)
    assert pbx_call.consult is None and relaying(pbx_call)
    assert office.engine.features.running_apps == 0
    call.hang_up()
    assert len(b.byes) == 1
    assert office.left_behind() == []


def test_hanging_up_during_the_failure_announcement_ends_it(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102", mode="busy")
    call = a.call("101")
    pbx_call = consult(office, call, "102", wait=0)
    assert pbx_call.consult is not None and pbx_call.media is None  # announcing
    call.hang_up()
    assert len(b.byes) == 1 and pbx_call.state.value == "ended"
    office.advance(1)
    assert office.left_behind() == []


def test_the_held_party_hanging_up_during_the_announcement(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102", mode="busy")
    call = a.call("101")
    (inc_b,) = b.incoming
    pbx_call = consult(office, call, "102", wait=0)
    assert pbx_call.consult is not None and pbx_call.media is None
    inc_b.bye()
    assert len(a.byes) == 1 and pbx_call.state.value == "ended"
    office.advance(1)
    assert office.left_behind() == []
