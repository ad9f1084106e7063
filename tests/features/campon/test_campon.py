"""Camp-on / automatic ringback (features/campon) on the office harness: `*82` after a
busy call (or `*82` + extension) asks for a callback; when the callee is free again
the PBX rings the caller first, then the callee; requests expire, are cancelled by
`*83`, are bounded, are dropped when the caller does not answer its callback, wait
on when the callee is busy again; `campon_offer` lets a busy caller press 5."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features import campon
from pbx_core.features.api import Answer, CallInfo, Dial, Reject
from tests.fuzzing import fuzz_settings
from tests.harness.office import Office, Phone, offices

SETTINGS = [
    "name(string) value(string,null)",
    "domain:pbx.local",
    "hostname:pbx",
    "sip_port:5060",
    "net_mode:dhcp",
    "campon_expire_minutes:10",
]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_settings": SETTINGS})


def requests(office: Office) -> list[dict[str, Any]]:
    got = office.engine.features.status()["campon"]["requests"]
    return list(got)


def dial(office: Office, phone: Phone, number: str) -> None:
    """Dial a code; the confirmation plays and the PBX hangs up."""
    out = phone.call(number)
    assert out.status == 200, out.status
    office.advance(3)
    assert out.state == "ended"


def busy_call(office: Office, caller: Phone, callee: Phone) -> None:
    callee.mode = "busy"
    out = caller.call(callee.number)
    office.advance(0.1)
    assert out.status == 486
    callee.mode = "answer"


def test_callback_rings_the_caller_first_then_the_callee(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    talk = b.call("102")  # 101 is in a call
    assert talk.status == 200
    busy_call(office, a, b)
    dial(office, a, "*82")  # the last busy number: 101
    assert [(r["caller"], r["callee"], r["why"]) for r in requests(office)] == [
        ("100", "101", "busy")
    ]
    assert len(a.incoming) == 0  # 101 is still talking
    host = office.engine.features
    assert host.state_keys(campon.FEATURE) == () and not host._pending_state  # RAM only
    talk.hang_up()  # 101 is free: the PBX calls 100 back
    office.advance(0.5)
    (back,) = a.incoming
    assert "101" in back.invite.headers.get("from")  # the callback shows whom for
    assert back.state == "answered"
    inc_b = b.incoming[-1]
    assert "100" in inc_b.invite.headers.get("from")  # 101 sees 100 calling
    assert inc_b.at >= back.at and inc_b.acked
    assert requests(office) == []
    (call,) = office.engine.calls.calls.values()
    assert call.media is not None and call.answered is not None
    inc_b.bye()
    office.advance(1)
    assert office.left_behind() == []
    del c


def test_code_with_an_extension_and_cancel(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102")
    assert b.call("102").status == 200  # both busy: the requests wait
    dial(office, a, "*82101")
    dial(office, a, "*82102")
    assert {r["callee"] for r in requests(office)} == {"101", "102"}
    dial(office, a, "*83102")  # that one only
    assert [r["callee"] for r in requests(office)] == ["101"]
    dial(office, a, "*83")  # all of them
    assert requests(office) == []


def test_no_busy_number_and_no_such_extension_are_refused(office: Office) -> None:
    a = office.phone("100")
    assert a.call("*82").status == 404  # nothing busy yet
    assert a.call("*82999").status == 404
    assert a.call("*82100").status == 403  # oneself
    assert requests(office) == []


def test_requests_expire(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    busy_call(office, a, b)
    assert b.register(expires=0) == 200  # 101 is away: never free meanwhile
    dial(office, a, "*82")
    assert len(requests(office)) == 1
    office.advance(5 * 60)
    assert len(requests(office)) == 1
    office.advance(5 * 60 + 1)  # campon_expire_minutes
    assert requests(office) == []
    assert b.register() == 200
    office.advance(campon.POLL + 1)
    assert a.incoming == []  # nobody is called back


def test_requests_are_bounded(office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    a, d = office.phone("100"), office.phone("101")
    office.phone("102")
    assert d.call("102").status == 200  # both busy, 103 not registered: requests wait
    for n in ("101", "102", "103"):
        dial(office, a, f"*82{n}")
    assert len(requests(office)) == campon.MAX_PER_CALLER == 3
    dial(office, a, "*82101")  # again: the same request, its clock restarted
    assert len(requests(office)) == 3
    monkeypatch.setattr(campon, "MAX_PER_CALLER", 4)
    monkeypatch.setattr(campon, "MAX_TOTAL", 3)
    dial(office, d, "*82102")  # the PBX's total is full: announced, not kept
    assert len(requests(office)) == 3
    assert {r["caller"] for r in requests(office)} == {"100"}


def test_caller_not_answering_drops_the_request(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102")
    talk = b.call("102")
    busy_call(office, a, b)
    dial(office, a, "*82")
    a.mode = "ring"
    talk.hang_up()
    office.advance(0.5)
    assert len(a.ringing()) == 1
    office.advance(campon.CALLBACK_RING + 1)
    assert a.incoming[-1].state == "cancelled"
    assert len(b.incoming) == 1  # only its own call's: never rung for the callback
    assert requests(office) == []
    assert office.left_behind() == []


def test_callee_busy_again_keeps_the_request(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102")
    talk = b.call("102")
    busy_call(office, a, b)
    dial(office, a, "*82")
    b.mode = "busy"  # busy again by the time the callback rings it
    talk.hang_up()
    office.advance(5)
    (back,) = a.incoming
    assert back.state == "ended"  # told, then hung up
    (req,) = requests(office)
    assert req["state"] == "waiting" and req["callbacks"] == 1
    assert office.left_behind() == []
    b.mode = "answer"
    office.advance(campon.RETRY_AFTER + campon.POLL)  # tried again after a minute
    assert len(a.incoming) == 2
    assert b.incoming[-1].state == "answered"
    assert requests(office) == []
    b.incoming[-1].bye()
    office.advance(1)
    assert office.left_behind() == []


def test_no_answer_waits_for_the_callee_to_use_its_phone(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", mode="ring")
    c = office.phone("102")
    out = a.call("101")
    office.advance(21)  # the extension's ring_timeout
    assert out.status == 480
    dial(office, a, "*82")
    (req,) = requests(office)
    assert req["why"] == "no answer"
    office.advance(campon.POLL * 2)
    assert a.incoming == []  # free all along: CCNR waits for activity
    b.mode = "answer"
    talk = c.call("101")
    assert talk.status == 200
    talk.hang_up()
    office.advance(0.5)
    assert len(a.incoming) == 1 and a.incoming[0].state == "answered"
    assert b.incoming[-1].state == "answered"
    b.incoming[-1].bye()
    office.advance(1)
    assert office.left_behind() == []


def test_offer_at_the_busy_announcement(tmp_path: Path) -> None:
    settings = [*SETTINGS, "campon_offer:yes"]
    for office in offices(tmp_path, tables={"pbx_settings": settings}):
        a, b = office.phone("100"), office.phone("101")
        office.phone("102")
        talk = b.call("102")
        b.mode = "busy"  # it refuses a waiting call
        out = a.call("101")
        assert out.status == 200  # the PBX answers with the offer
        office.advance(0.2)
        out.keys("5")
        office.advance(4)
        assert [(r["caller"], r["callee"]) for r in requests(office)] == [("100", "101")]
        assert out.state == "ended"
        assert a.incoming == []  # 101 still talks
        b.mode = "answer"
        talk.hang_up()
        office.advance(0.5)
        assert len(a.incoming) == 1 and b.incoming[-1].state == "answered"
        b.incoming[-1].bye()
        office.advance(1)
        assert office.left_behind() == []


@pytest.mark.fuzz
def test_any_dialled_argument_gets_an_answer(office: Office) -> None:
    """Whatever follows `*82` / `*83` (keys a phone can send, too long included), the
    feature answers (a confirmation or a refusal), never raises, and keeps at most
    MAX_PER_CALLER requests, all naming existing extensions."""
    ctx = office.engine.features.context(campon.FEATURE)
    info = CallInfo("100@pbx.local", "100", "national", "*82", True)

    @fuzz_settings(60)
    @given(
        code=st.sampled_from(("*82", "*83")),
        arg=st.text(alphabet="0123456789*#", max_size=40),
    )
    def dial(code: str, arg: str) -> None:
        got = campon.FEATURE.dial(ctx, Dial(info, "100@pbx.local", "100", code, arg))
        assert isinstance(got, Answer | Reject), got
        mine = [r for r in requests(office) if r["caller"] == "100"]
        assert len(mine) <= campon.MAX_PER_CALLER
        assert all(ctx.extension(str(r["callee"])) is not None for r in mine)

    dial()


def test_requests_live_in_ram_only(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    office.phone("102")
    assert b.call("102").status == 200
    dial(office, a, "*82101")
    assert len(requests(office)) == 1
    office.restart()  # nothing of it was written to the state LMDB
    assert office.state is not None
    assert office.engine.features.state_keys(campon.FEATURE) == ()
    assert requests(office) == []
