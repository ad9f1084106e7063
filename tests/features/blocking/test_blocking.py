"""Call blocking (features/blocking): *30/*31 a number (after the code or prompted),
*32 the last caller; the installer's pbx_blacklist (numbers, prefixes, anonymous, one
extension or all); the block_anonymous toggle (Privacy: id, a withheld From); the
treatments busy (486, no forward on busy) and announce (answered, a prompt, hang-up);
ring-group members skipped; the lists bounded and kept across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.harness.office as harness
from pbx_core.features.blocking import FEATURE, LAST_CALLERS
from pbx_core.features.blocking.rules import MAX_PERSONAL, personal
from tests.features.dnd.test_dnd import dial_code
from tests.fuzzing import fuzz_settings
from tests.harness.office import (
    FACTORY,
    PROVIDER_TRUNK,
    Office,
    Outgoing,
    Phone,
    groups,
    offices,
)

BLACKLIST_HEADER = (
    "id(int,auto) number(string) extension(string,null) treatment(string,null) "
    "description(string,null)"
)
DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null)"
)
DIDS = [DID_HEADER, "1:5550100:provider:extension:101:", "2:5550600:provider:group:600:"]


def blocked_list(office: Office, ext: str) -> list[str]:
    return personal(office.engine.features.context(FEATURE), ext)


def settings_with(*lines: str) -> list[str]:
    return [*(FACTORY / "pbx_settings").read_text().splitlines(), *lines]


def hung_up(office: Office, phone: Phone, call: Outgoing, seconds: int = 30) -> bool:
    """Whether the PBX hangs up `call` within `seconds` (the clock moves)."""
    for _ in range(seconds):
        office.advance(1)
        if call.call_id in [b.call_id for b in phone.byes]:
            return True
    return False


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    tables = {
        "pbx_trunk": PROVIDER_TRUNK,
        "pbx_did": DIDS,
        "pbx_ring_group": groups("600:ringall:101,102:15:hangup:"),
        "pbx_blacklist": [BLACKLIST_HEADER],
    }
    yield from offices(tmp_path, tables=tables)


def from_trunk(office: Office, caller: str, did: str = "5550100") -> Outgoing:
    provider = office.provider()
    provider.number = caller
    return provider.call(did, auth=False)


# ------------------------------------------------------------------ the codes


def test_star30_blocks_a_number_and_star31_lets_it_ring_again(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*30100")
    assert blocked_list(office, "101") == ["100"]
    call = a.call("101")
    assert call.status == 486
    assert b.incoming == []  # its phone never rang
    dial_code(b, "*31100")
    assert blocked_list(office, "101") == []
    call = a.call("101")
    assert call.status == 200 and len(b.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []


def test_a_blocked_number_is_prompted_for_with_key_presses(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    code = b.call("*30")
    assert code.status == 200
    office.advance(3)  # the prompt (a beep without prompt files)
    code.keys("100#")
    assert hung_up(office, b, code)
    assert blocked_list(office, "101") == ["100"]
    assert a.call("101").status == 486
    code = b.call("*31")
    office.advance(3)
    code.keys("100#")
    assert hung_up(office, b, code)
    assert blocked_list(office, "101") == []
    assert office.left_behind() == []


def test_codes_take_only_numbers(office: Office) -> None:
    b = office.phone("101")
    assert b.call("*30*72").status == 484
    assert b.call("*32123").status == 404
    dial_code(b, "*31999")  # not on the list: said so, nothing changes
    assert blocked_list(office, "101") == []


def test_the_list_is_bounded(office: Office) -> None:
    b = office.phone("101")
    ctx = office.engine.features.context(FEATURE)
    ctx.state_set("list:101", [str(1000 + i) for i in range(MAX_PERSONAL)])
    dial_code(b, "*305550123")  # "your block list is full"
    assert len(blocked_list(office, "101")) == MAX_PERSONAL
    assert "5550123" not in blocked_list(office, "101")


def test_the_list_survives_a_restart(office: Office) -> None:
    b = office.phone("101")
    dial_code(b, "*30100")
    office.restart()
    a = office.phone("100")
    office.phone("101")
    assert blocked_list(office, "101") == ["100"]
    assert a.call("101").status == 486


def test_lists_are_per_extension(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*30100")
    call = a.call("102")
    assert call.status == 200 and len(c.incoming) == 1
    call.hang_up()


# ------------------------------------------------------------------ treatments


def test_busy_treatment_is_not_forwarded_on_busy(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*90102")  # forward on busy to 102
    dial_code(b, "*72102")  # and forward all: blocking comes first
    dial_code(b, "*30100")
    assert a.call("101").status == 486
    assert b.incoming == [] and c.incoming == []
    assert office.left_behind() == []


def test_announce_treatment_answers_says_so_and_hangs_up(office: Office) -> None:
    office.reload("pbx_settings", settings_with("blocking_treatment:announce"))
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*30100")
    call = a.call("101")
    assert call.status == 200  # the PBX answered, not 101
    assert b.incoming == []
    assert hung_up(office, a, call)
    assert b.incoming == []
    assert office.left_behind() == []


def test_dnd_does_not_let_a_blocked_caller_reach_forward_on_busy(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*78")
    dial_code(b, "*90102")
    dial_code(b, "*30100")
    assert a.call("101").status == 486
    assert c.incoming == []
    call = office.phone("103").call("101")  # not blocked: DND, then forward on busy
    assert call.status == 200 and len(c.incoming) == 1
    call.hang_up()


def test_a_forwarded_call_is_refused_where_it_is_blocked(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*72102")
    dial_code(c, "*30100")
    assert a.call("101").status == 486
    assert b.incoming == [] and c.incoming == []


# ------------------------------------------------------------------ the blacklist


def test_blacklist_rows_numbers_prefixes_and_scope(trunk_office: Office) -> None:
    office = trunk_office
    office.reload(
        "pbx_blacklist",
        [
            BLACKLIST_HEADER,
            "1:0900*::busy:premium numbers",
            "2:0301234:102::only for 102",
            "3:0307777::announce:",
        ],
    )
    b, c = office.phone("101"), office.phone("102")
    assert from_trunk(office, "09001234").status == 486  # a prefix, every extension
    assert b.incoming == []
    call = from_trunk(office, "0301234")  # only 102 blocks it
    assert call.status == 200 and len(b.incoming) == 1
    call.hang_up()
    call = from_trunk(office, "0307777")  # announce
    assert call.status == 200 and len(b.incoming) == 1
    assert hung_up(office, call.phone, call)
    # The scoped row refuses 0301234 for 102, reached over the group: 101 rings alone.
    call = from_trunk(office, "0301234", did="5550600")
    assert call.status == 200
    assert len(b.incoming) == 2 and c.incoming == []
    call.hang_up()
    assert office.left_behind() == []


def test_a_group_member_that_blocks_is_skipped(trunk_office: Office) -> None:
    office = trunk_office
    b, c = office.phone("101", mode="ring"), office.phone("102", mode="ring")
    dial_code(b, "*300309999")
    call = from_trunk(office, "0309999", did="5550600")
    assert [p.number for p in (b, c) if p.ringing()] == ["102"]
    call.cancel()
    # With the announcement treatment, too: the member does not ring; when every
    # member blocks, the group is busy.
    office.reload("pbx_settings", settings_with("blocking_treatment:announce"))
    dial_code(c, "*300309999")
    call = from_trunk(office, "0309999", did="5550600")
    assert call.status == 486
    assert len(b.incoming) == 0 and len(c.incoming) == 1
    assert office.left_behind() == []


# ------------------------------------------------------------------ anonymous


def test_anonymous_callers_blocked_per_extension(trunk_office: Office) -> None:
    office = trunk_office
    b = office.phone("101")
    host = office.engine.features
    call = from_trunk(office, "anonymous")
    assert call.status == 200
    call.hang_up()
    host.set_by_name("101", "blocking.block_anonymous", True)
    assert from_trunk(office, "anonymous").status == 486
    assert len(b.incoming) == 1
    call = from_trunk(office, "0301234")  # a number shown: rings
    assert call.status == 200 and len(b.incoming) == 2
    call.hang_up()
    with pytest.raises(ValueError, match="on or off"):
        host.set_by_name("101", "blocking.block_anonymous", "yes")
    host.set_by_name("101", "blocking.block_anonymous", None)
    call = from_trunk(office, "anonymous")
    assert call.status == 200
    call.hang_up()


def test_privacy_id_counts_as_anonymous(
    trunk_office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    office = trunk_office
    b = office.phone("101")
    office.engine.features.set_by_name("101", "blocking.block_anonymous", True)
    real = harness.message

    def private(text: str, body: bytes = b"", ctype: str | None = None) -> Any:
        if text.startswith("INVITE") and "127.0.0.2" in text:
            text = text.rstrip() + "\nPrivacy: id"
        return real(text, body, ctype)

    monkeypatch.setattr(harness, "message", private)
    assert from_trunk(office, "0301234").status == 486
    monkeypatch.setattr(harness, "message", real)
    call = from_trunk(office, "0301234")
    assert call.status == 200 and len(b.incoming) == 1
    call.hang_up()


def test_an_anonymous_blacklist_row(trunk_office: Office) -> None:
    office = trunk_office
    office.reload("pbx_blacklist", [BLACKLIST_HEADER, "1:anonymous:101::"])
    office.phone("101")
    assert from_trunk(office, "anonymous").status == 486
    assert from_trunk(office, "Unknown").status == 486  # what some networks show


# ------------------------------------------------------------------ *32


def test_star32_blocks_the_last_caller_that_rang(trunk_office: Office) -> None:
    office = trunk_office
    b = office.phone("101")
    dial_code(b, "*32")  # nobody called yet: said so, nothing blocked
    assert blocked_list(office, "101") == []
    call = from_trunk(office, "0301234")
    assert call.status == 200
    call.hang_up()
    dial_code(b, "*32")
    assert blocked_list(office, "101") == ["0301234"]
    assert from_trunk(office, "0301234").status == 486
    assert len(b.incoming) == 1


def test_the_last_caller_is_only_a_call_that_rang(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*78")  # DND: calls are refused before they ring
    assert a.call("101").status == 486
    assert LAST_CALLERS.get("101") is None
    dial_code(b, "*79")
    dial_code(b, "*30100")
    assert a.call("101").status == 486  # blocked: did not ring either
    assert LAST_CALLERS.get("101") is None
    call = office.phone("102").call("101")
    assert call.status == 200
    call.hang_up()
    assert LAST_CALLERS.get("101") == "102"


# ------------------------------------------------------------------ the table's checks


def test_the_blacklist_table_is_checked() -> None:
    from pbx_core.store import schema

    table = next(t for t in schema.PBX_TABLES if t.name == "pbx_blacklist")
    number, scope = table.spec("number"), table.spec("extension")
    assert number is not None and scope is not None and number.check and scope.check
    for good in ("0900*", "0301234", "+4930*", "anonymous", "ANONYMOUS"):
        assert number.check(good) is None, good
    for bad in ("*", "09x", "1" * 21, "", "0900**"):
        assert number.check(bad) is not None, bad
    assert scope.check("101") is None and scope.check("10 1") is not None


@pytest.mark.fuzz
@fuzz_settings(60)
@given(st.text(alphabet="0123456789*#+", max_size=40))
def test_any_dial_argument_is_refused_or_kept_as_a_number(arg: str) -> None:
    from pbx_core.features.api import Answer, CallInfo, Dial, Reject

    class Ctx:
        def __init__(self) -> None:
            self.kept: dict[str, Any] = {}

        def state_get(self, key: str) -> Any:
            return self.kept.get(key)

        def state_set(self, key: str, value: Any) -> None:
            self.kept[key] = value

    ctx = Ctx()
    info = CallInfo("101@pbx.local", "101", "national", "*30" + arg, True)
    dial = Dial(info, "101@pbx.local", "101", "*30", arg)
    decision = FEATURE.dial(ctx, dial)  # type: ignore[arg-type]  # only the state is used
    kept = ctx.kept.get("list:101", [])
    if isinstance(decision, Reject):
        assert decision.status == 484 and kept == []
    else:
        assert isinstance(decision, Answer)
        assert kept == ([arg] if arg else [])  # "": prompted for, nothing kept yet
    assert all(n.lstrip("+").isdigit() and len(n) <= 21 for n in kept)
