"""Page groups (features/paging + pbx/call_page.py) on the office harness: dialling
the group's number answers the caller and rings every member at once with the
auto-answer headers; every phone that answers joins one MixBridge (listening only,
unless duplex); members in a call are skipped; a member's BYE takes only it out;
the caller's BYE ends the page for everyone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import Office, offices

GROUPS = ["name(string) number(string,null) members(string) duplex(int)", "all:650:101,102,103:0"]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_page_group": GROUPS})


def test_a_page_reaches_every_free_member_at_once(office: Office) -> None:
    a, b, c, d = (office.phone(n) for n in ("100", "101", "102", "103"))
    busy = d.call("101")  # 103 (and 101) are in a call: skipped
    assert busy.status == 200
    b.incoming.clear()
    page = a.call("650")
    assert page.status == 200  # the PBX answers the caller at once
    assert b.incoming == [] and d.incoming == []  # busy ones are not paged
    (inc,) = c.incoming
    assert inc.state == "answered" and inc.acked
    assert any("answer-after=0" in v for v in inc.header("call-info"))
    call = office.engine.calls.by_key[page.key]
    assert call.page is not None
    members = call.page._members
    assert len(members) == 2  # the caller and 102
    (member,) = [mb for leg, mb in members.items() if leg is not call.endpoint]
    assert member.muted  # a page is one-way: nobody hears the members
    page.hang_up()
    assert len(c.byes) == 1  # the page ends for everyone
    busy.hang_up()
    assert office.left_behind() == []


def test_a_member_leaving_does_not_end_the_page(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    office.phone("103", register=False)
    page = a.call("650")
    (inc_b,) = b.incoming
    assert len(c.incoming) == 1
    inc_b.bye()
    call = office.engine.calls.by_key[page.key]
    assert call.state.value == "answered" and call.page is not None
    assert len(call.page._members) == 2  # the caller and 102
    assert a.byes == [] and c.byes == []
    page.hang_up()
    assert len(c.byes) == 1 and len(b.byes) == 0
    assert office.left_behind() == []


def test_a_phone_that_does_not_answer_stops_ringing(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", mode="ring")  # set not to auto-answer
    page = a.call("650")
    office.advance(11)
    assert b.incoming[0].state == "cancelled"
    page.hang_up()
    assert office.left_behind() == []
