"""Calls the PBX places itself (pbx/call_originate.py, `Context.originate`) on the
office harness: the extension's phones ring as forks do (auto-answer headers when
asked, ring timeout, CANCEL, busy), the answering phone runs an application or is
bridged to a number; the originator hears the outcome once; every path leaves no
call, leg, port or application behind; the CDR row names the originator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.api import Originate, Session
from pbx_core.pbx import call_originate
from pbx_core.pbx.calls import Call
from pbx_core.pbx.cdr import Cdr
from tests.harness.office import Office, offices


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path)


def _ended(office: Office) -> list[Call]:
    ended: list[Call] = []
    before = office.engine.calls.on_end

    def on_end(call: Call) -> None:
        ended.append(call)
        if before is not None:
            before(call)

    office.engine.calls.on_end = on_end
    return ended


def originate(office: Office, req: Originate) -> int:
    return int(office.run(office.engine.features.facts.originate, req, "test"))


def test_an_answering_phone_runs_the_application(office: Office) -> None:
    phone = office.phone("101")
    ended = _ended(office)
    heard: list[object] = []

    async def app(session: Session) -> None:
        heard.append(session.hung_up)
        await session.play("tone:confirmation")
        session.hangup()

    got: list[int] = []
    req = Originate("101", "test:1", app=app, auto_answer=True, on_done=got.append)
    assert originate(office, req) == 100
    office.advance(0.1)
    (inc,) = phone.incoming
    assert inc.acked
    assert any("answer-after=0" in v for v in inc.header("call-info"))
    assert any("alert-autoanswer" in v for v in inc.header("alert-info"))
    assert got == [200] and heard == [False]
    office.advance(3)
    assert len(phone.byes) == 1  # the application hung up
    assert office.left_behind() == []
    (call,) = ended
    cdr = Cdr.from_call(call)
    assert cdr.caller.startswith("101@") and cdr.callee == "test:1"
    assert cdr.disposition == "ANSWERED" and cdr.cause.startswith("originated")


@pytest.mark.parametrize(("mode", "status"), [("busy", 486), ("ring", 480)])
def test_busy_or_unanswered_tells_the_originator(office: Office, mode: str, status: int) -> None:
    phone = office.phone("101", mode=mode)
    ended = _ended(office)
    got: list[int] = []
    req = Originate("101", "x", number="102", ring_timeout=5, on_done=got.append)
    assert originate(office, req) == 100
    office.advance(6)
    assert got == [status]
    if mode == "ring":
        assert phone.incoming[0].state == "cancelled"
    assert office.left_behind() == []
    (call,) = ended
    assert Cdr.from_call(call).disposition == ("BUSY" if mode == "busy" else "NO ANSWER")


def test_refused_at_once(office: Office) -> None:
    office.phone("101", register=False)
    got: list[int] = []

    async def app(session: Session) -> None:
        return

    assert originate(office, Originate("101", "x", app=app, on_done=got.append)) == 480
    assert originate(office, Originate("999", "x", app=app, on_done=got.append)) == 404
    office.phone("102")
    assert originate(office, Originate("102", "x", on_done=got.append)) == 400  # neither
    assert got == []
    assert office.left_behind() == []


def test_bridged_to_a_number_that_answers(office: Office) -> None:
    a = office.phone("101")
    b = office.phone("102", mode="ring")
    got: list[int] = []
    assert originate(office, Originate("101", "cb", number="102", on_done=got.append)) == 100
    office.advance(0.1)
    (inc_a,) = a.incoming
    assert inc_a.acked and got == []
    (inc_b,) = b.ringing()
    assert "101" in inc_b.invite.headers.get("from")  # the callee sees who calls back
    b.pick_up()
    office.advance(0.1)
    assert got == [200]
    (call,) = office.engine.calls.calls.values()
    assert call.media is not None and call.answered is not None
    inc_b.bye()
    assert len(a.byes) == 1
    office.advance(1)
    assert office.left_behind() == []


def test_bridged_to_a_busy_number_hangs_up(office: Office) -> None:
    a = office.phone("101")
    office.phone("102", mode="busy")
    got: list[int] = []
    assert originate(office, Originate("101", "cb", number="102", on_done=got.append)) == 100
    office.advance(1)
    assert got == [486]
    assert len(a.byes) == 1
    assert office.left_behind() == []


def test_the_phone_hanging_up_ends_the_application(office: Office) -> None:
    phone = office.phone("101")
    seen: list[bool] = []

    async def app(session: Session) -> None:
        await session.wait(60)
        seen.append(session.hung_up)

    got: list[int] = []
    assert originate(office, Originate("101", "x", app=app, on_done=got.append)) == 100
    office.advance(0.1)
    phone.incoming[0].bye()
    office.advance(2)
    assert got == [200] and seen == [True]
    assert office.left_behind() == []


def test_two_phones_of_one_extension_first_answer_wins(office: Office) -> None:
    first = office.phone("101", mode="ring")
    second = office.phone("101", mode="ring")
    got: list[int] = []

    async def app(session: Session) -> None:
        await session.wait(1)
        session.hangup()

    assert originate(office, Originate("101", "x", app=app, on_done=got.append)) == 100
    office.advance(0.1)
    assert len(first.ringing()) == 1 and len(second.ringing()) == 1
    second.pick_up()
    office.advance(0.1)
    assert first.incoming[0].state == "cancelled"
    assert got == [200]
    office.advance(2)
    assert office.left_behind() == []


def test_an_unusable_answer_is_released(office: Office) -> None:
    phone = office.phone("101", mode="ring")
    got: list[int] = []

    async def app(session: Session) -> None:
        raise AssertionError("never run")

    assert originate(office, Originate("101", "x", app=app, on_done=got.append)) == 100
    office.advance(0.1)
    (inc,) = phone.ringing()
    inc.state = "answered"
    office.run(inc.reply, 200, b"v=0\r\ns=-\r\n")  # no media line
    office.advance(0.1)
    assert got == [488]
    assert len(phone.byes) == 1  # ACKed, then released
    assert office.left_behind() == []


def test_the_pbx_places_a_bounded_number_of_calls(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_originate, "MAX_ORIGINATED", 1)
    office.phone("101", mode="ring")
    office.phone("102", mode="ring")
    got: list[int] = []
    assert originate(office, Originate("101", "x", number="103", on_done=got.append)) == 100
    assert originate(office, Originate("102", "x", number="103", on_done=got.append)) == 503
    office.advance(31)
    assert got == [480]
    assert office.left_behind() == []
