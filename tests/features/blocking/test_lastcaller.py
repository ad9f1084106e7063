"""The last caller, *69 (features/blocking's `lastcaller`): the PBX answers, says the
number of the last call that rang the extension and calls it back on 1, through the
dial plan as the dialling extension dials it. No feature of this package is a way
around a call class: a *69 callback and a blocked caller's announcement are tried as
routes to the trunk, and refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.blocking import LAST_CALLERS
from tests.features.blocking.test_blocking import (
    BLACKLIST_HEADER,
    DIDS,
    from_trunk,
    hung_up,
    settings_with,
)
from tests.harness.office import (
    PROVIDER_TRUNK,
    Office,
    extension_row,
    extensions,
    offices,
)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    tables = {
        "pbx_trunk": PROVIDER_TRUNK,
        "pbx_did": DIDS,
        "pbx_blacklist": [BLACKLIST_HEADER],
    }
    yield from offices(tmp_path, tables=tables)


def test_star69_with_no_last_caller_says_so_and_hangs_up(office: Office) -> None:
    b = office.phone("101")
    code = b.call("*69")
    assert code.status == 200
    assert hung_up(office, b, code)
    assert office.stack.sent_requests("INVITE") == []
    assert b.call("*691").status == 404  # nothing follows the code
    assert office.left_behind() == []


def test_star69_calls_an_extension_back_on_1(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    assert call.status == 200
    call.hang_up()
    assert LAST_CALLERS.get("101") == "100"
    code = b.call("*69")
    assert code.status == 200
    office.advance(1)
    code.keys("1")
    office.advance(1)
    (back,) = a.incoming  # 100 rings, and answers: 101 talks to it
    assert back.state == "answered"
    assert "<sip:101@" in back.invite.headers.get("from")
    code.hang_up()
    assert office.left_behind() == []


def test_star69_without_a_key_calls_nobody(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    call.hang_up()
    code = b.call("*69")
    assert hung_up(office, b, code, seconds=60)  # said twice, then goodbye
    assert a.incoming == []
    assert office.left_behind() == []


def test_star69_calls_a_trunk_caller_back_through_the_trunk(office: Office) -> None:
    b = office.phone("101")  # national
    call = from_trunk(office, "0301234")
    assert call.status == 200
    call.hang_up()
    provider = call.phone
    code = b.call("*69")
    office.advance(1)
    code.keys("1")
    office.advance(1)
    (out,) = provider.incoming
    assert out.invite.uri.user == "301234"  # the national route strips its 0
    code.hang_up()
    assert office.left_behind() == []


def test_a_withheld_last_caller_is_not_called_back(office: Office) -> None:
    b = office.phone("101")
    call = from_trunk(office, "anonymous")
    call.hang_up()
    assert LAST_CALLERS.get("101") == ""
    code = b.call("*69")
    code.keys("1")
    assert hung_up(office, b, code)
    assert len(call.phone.incoming) == 0
    dial = b.call("*32")  # nor blocked: there is no number
    assert hung_up(office, b, dial)
    assert office.engine.features.toggles("101")["blocking.block_anonymous"] is None


# ------------------------------------------------------------------ call classes


def test_star69_is_no_way_around_the_call_class(office: Office) -> None:
    # 101 is of class internal: it may not call the national number that called it,
    # neither by dialling it nor through *69.
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    b = office.phone("101")
    call = from_trunk(office, "0301234")
    assert call.status == 200
    call.hang_up()
    provider = call.phone
    assert LAST_CALLERS.get("101") == "0301234"
    assert b.call("0301234").status == 403
    code = b.call("*69")
    assert code.status == 200
    office.advance(1)
    code.keys("1")
    assert hung_up(office, b, code)  # "not available", then the PBX hangs up
    assert provider.incoming == []
    assert [r.uri.host for r in office.stack.sent_requests("INVITE")] == ["127.0.0.1"]  # 101
    assert office.left_behind() == []


def test_a_blocked_callers_announcement_is_no_way_out(office: Office) -> None:
    # A blocked outside caller hears the announcement: keys pressed meanwhile (an
    # outside number, a feature code) dial nothing.
    office.reload("pbx_settings", settings_with("blocking_treatment:announce"))
    office.reload("pbx_blacklist", [BLACKLIST_HEADER, "1:0301234:::"])
    office.phone("101")
    call = from_trunk(office, "0301234")
    assert call.status == 200
    call.keys("00491234567#")
    call.keys("*72004912345#")
    assert hung_up(office, call.phone, call)
    assert office.stack.sent_requests("INVITE") == []
    assert office.left_behind() == []


def test_a_blocked_internal_caller_of_class_internal_gets_no_way_out(office: Office) -> None:
    office.reload(
        "pbx_extension",
        extensions(extension_row(1, "103", call_class="internal"), extension_row(2, "101")),
    )
    office.reload("pbx_settings", settings_with("blocking_treatment:announce"))
    b, d = office.phone("101"), office.phone("103")
    code = b.call("*30103")
    assert hung_up(office, b, code)
    call = d.call("101")
    assert call.status == 200 and b.incoming == []
    call.keys("00491234567#1")
    assert hung_up(office, d, call)
    assert office.stack.sent_requests("INVITE") == []
