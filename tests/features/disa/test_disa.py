"""DISA's rules on the harness (tests/harness/office.py): the PIN, dial tone and the
number placed with the DISA's own class; reached by its number or as a DID's
destination; wrong PINs count as failed logins and ban the caller (an extension's
source address, a trunk caller's caller ID, never the provider's address); the class
is a ceiling (no international from a `local` DISA, no feature codes at all); every
loop is bounded; `pbx db check` refuses a DISA without a good PIN."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features import disa
from pbx_core.features.api import CallInfo, Destination, Feature, Reject, pbx_table, text
from pbx_core.pbx.security import Action
from pbx_core.store.build import check_dir
from pbx_core.store.feature_schema import SchemaClash, register_features
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings
from tests.harness.office import (
    PROVIDER,
    PROVIDER_TRUNK,
    Office,
    Outgoing,
    Phone,
    extension_row,
    extensions,
    message,
    offices,
)

DIALPLAN_HEADER = (
    "id(int,auto) priority(int) pattern(string) action(string) trunk(string,null) "
    "strip(int) prepend(string,null) description(string,null) call_class(string)"
)
# 00… international, 0… local (a DISA of class local reaches 0123, never 0044…)
DIALPLAN = [
    DIALPLAN_HEADER,
    "1:5:00.:trunk:provider:0:::international",
    "2:10:0.:trunk:provider:0:::local",
]
DISA_HEADER = (
    "id(int,auto) name(string) number(string,null) pin(string) call_class(string) enabled(int)"
)
DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null)"
)
SETTINGS = [
    "name(string) value(string,null)",
    "domain:pbx.local",
    "hostname:pbx",
    "sip_port:5060",
    "net_mode:dhcp",
    "sec_ban_failures:3",
    "sec_ban_window:600",
    "sec_ban_seconds:60",
]
PIN = "4711"
TABLES = {
    "pbx_trunk": PROVIDER_TRUNK,
    "pbx_dialplan": DIALPLAN,
    "pbx_settings": SETTINGS,
    "pbx_extension": extensions(extension_row(1, "100", call_class="internal")),
    "pbx_disa": [
        DISA_HEADER,
        f"1:out:700:{PIN}:local:1",
        f"2:world:701:{PIN}:international:1",
        f"3:off:702:{PIN}:international:0",
        f"4:dark::{PIN}:international:1",  # no number: a DID's destination only
    ],
    "pbx_did": [
        DID_HEADER,
        "1:5550100:provider:disa:dark:",
        "2:5550101:provider:disa:nosuch:",
    ],
}


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables=TABLES)


def answered(call: Outgoing) -> Outgoing:
    assert call.status == 200, call.status
    assert call.office.engine.features.running_apps == 1
    return call


def enter(call: Outgoing, keys: str, wait: float = 2.0) -> None:
    call.keys(keys)
    call.office.advance(wait)


def outside(office: Office, number: str = "0301234") -> Phone:
    """An outside caller on the provider's trunk (its address, another port), with
    caller ID `number`."""
    p = Phone(office, number, PROVIDER[1] + 1, "", host=PROVIDER[0])
    office.phones[p.address] = p
    return p


def banned(office: Office, key: str) -> bool:
    return office.engine.security.banned(key, office.loop.time())


# ------------------------------------------------------------------ the way through


def test_pin_then_the_number_is_placed_with_the_disas_class(office: Office) -> None:
    provider = office.provider()
    a = office.phone("100")
    assert a.call("0123").status == 403  # 100 is internal: no way out by itself
    call = answered(a.call("700"))
    office.advance(1)  # the PIN prompt
    enter(call, PIN + "#")  # then dial tone
    assert provider.incoming == []
    enter(call, "0123#")
    (inc,) = provider.incoming  # placed with DISA out's class, local
    assert inc.invite.uri.user == "0123"
    assert office.engine.features.running_apps == 0  # bridged: the app is done
    call.hang_up()
    assert office.left_behind() == []


def test_a_did_reaches_a_disa_and_the_outside_caller_dials_out(office: Office) -> None:
    provider = office.provider()
    caller = outside(office)
    call = answered(caller.call("5550100", auth=False))
    enter(call, PIN + "#")
    enter(call, "00441234#")  # DISA dark is international
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "00441234"
    call.hang_up()
    assert office.left_behind() == []


def test_an_unknown_or_disabled_disa_is_refused(office: Office) -> None:
    a = office.phone("100")
    assert a.call("702").status == 404  # enabled 0
    caller = outside(office)
    assert caller.call("5550101", auth=False).status == 404  # names no DISA
    assert office.left_behind() == []


def test_a_wrong_pin_may_be_retried_within_the_calls_tries(office: Office) -> None:
    provider = office.provider()
    call = answered(office.phone("100").call("701"))
    enter(call, "9999#")
    enter(call, PIN + "#")
    enter(call, "0123#")
    assert len(provider.incoming) == 1
    call.hang_up()


def test_three_wrong_pins_end_the_call(office: Office) -> None:
    office.reload("pbx_settings", [*SETTINGS[:-3], "sec_ban_failures:10"])
    provider = office.provider()
    call = answered(office.phone("100").call("701"))
    for pin in ("1111", "2222", "3333"):
        enter(call, pin + "#")
    office.advance(3)  # "goodbye"
    assert call.state == "ended"  # the PBX hung up
    assert provider.incoming == []
    assert office.left_behind() == []


def test_keys_cut_short_or_no_keys_are_no_guess(office: Office) -> None:
    """Timeouts without a key use up the call's tries but count no failure."""
    for _ in range(3):
        call = answered(office.phone("100").call("701"))
        office.advance(60)  # three PIN prompts time out, goodbye
        assert call.state == "ended"
    assert not banned(office, "127.0.0.1")
    assert office.left_behind() == []


# ------------------------------------------------------------------ bans


def test_wrong_pins_ban_an_outside_caller_by_caller_id_not_the_provider(
    office: Office,
) -> None:
    provider = office.provider()
    caller = outside(office, "0301234")
    call = answered(caller.call("5550100", auth=False))
    for pin in ("1111", "2222", "3333"):  # sec_ban_failures 3
        enter(call, pin + "#")
    office.advance(3)
    assert call.state == "ended"
    assert banned(office, "cid:provider:0301234")
    assert not banned(office, PROVIDER[0])  # the provider's address: never
    bans = office.engine.security.bans(office.loop.time())
    assert [b["source"] for b in bans] == ["cid:provider:0301234"]
    # The same caller again, now with the right PIN: refused before any answer.
    assert caller.call("5550100", auth=False).status == 403
    # Another outside caller over the same trunk is served.
    other = outside(office, "0309999")
    call = answered(other.call("5550100", auth=False))
    enter(call, PIN + "#")
    enter(call, "0123#")
    assert len(provider.incoming) == 1
    call.hang_up()
    # The ban ends after sec_ban_seconds.
    office.advance(61)
    call = answered(caller.call("5550100", auth=False))
    call.hang_up()
    assert office.left_behind() == []


def test_wrong_pins_ban_an_extensions_source_address(office: Office) -> None:
    office.reload("pbx_extension", extensions(extension_row(1, "100", call_class="internal")))
    a = office.phone("100")
    call = answered(a.call("701"))
    for pin in ("1111", "2222", "3333"):
        enter(call, pin + "#")
    office.advance(3)
    assert call.state == "ended"
    assert banned(office, "127.0.0.1")
    # Its SIP is dropped as after failed logins, so no new try reaches the DISA …
    invite = message(
        """INVITE sip:701@pbx.local SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKban
From: <sip:100@pbx.local>;tag=ban
To: <sip:701@pbx.local>
Call-ID: ban@127.0.0.1
CSeq: 1 INVITE
Max-Forwards: 70"""
    )
    verdict = office.engine.security.check("127.0.0.1", invite, office.loop.time())
    assert verdict.action is Action.DROP
    # … and the DISA itself refuses the address, whatever PIN would follow.
    ctx = office.engine.features.context(disa.FEATURE)
    info = CallInfo("100@pbx.local", "100", "internal", "701", True, source="127.0.0.1")
    decision = disa.FEATURE.destination(ctx, info, Destination("disa", "world"))
    assert isinstance(decision, Reject) and decision.status == 403
    office.advance(61)  # the ban ends
    assert not banned(office, "127.0.0.1")
    decision = disa.FEATURE.destination(ctx, info, Destination("disa", "world"))
    assert decision is not None and not isinstance(decision, Reject)


def test_the_right_pin_does_not_wipe_the_count(office: Office) -> None:
    """As with logins (security.py), a success forgives nothing: a guesser holding one
    PIN cannot reset its count between guesses at another."""
    call = answered(office.phone("100").call("701"))
    enter(call, "1111#")
    enter(call, "2222#")
    enter(call, PIN + "#")
    call.hang_up()
    call = answered(office.phone("100").call("700"))
    enter(call, "3333#")
    assert banned(office, "127.0.0.1")


# ------------------------------------------------------------------ the class is a ceiling


def test_a_local_disa_cannot_reach_an_international_route(office: Office) -> None:
    provider = office.provider()
    call = answered(office.phone("100").call("700"))  # DISA out: local
    enter(call, PIN + "#")
    enter(call, "00441234#", wait=5)  # 403: "not available", dial tone again
    assert provider.incoming == []
    assert call.state == "answered"  # the caller may dial again
    enter(call, "0123#")
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "0123"
    call.hang_up()
    assert office.left_behind() == []


@pytest.mark.parametrize("code", ["*78", "*43", "*72000441234"])
def test_no_feature_codes_through_a_disa(office: Office, code: str) -> None:
    provider = office.provider()
    dnd = next(f for f in office.features if f.name == "dnd")
    forward = next(f for f in office.features if f.name == "forward")
    call = answered(office.phone("100").call("701"))  # international
    enter(call, PIN + "#")
    enter(call, code + "#", wait=5)
    assert office.engine.features.running_apps == 1  # still the DISA, not echo
    assert call.state == "answered"
    host = office.engine.features
    assert not host.context(dnd).toggle("100", "dnd")
    assert not host.context(forward).toggle("100", "forward_all")
    assert provider.incoming == []
    call.hang_up()


# ------------------------------------------------------------------ bounds


def test_dial_tries_are_bounded_then_the_pbx_hangs_up(office: Office) -> None:
    call = answered(office.phone("100").call("700"))
    enter(call, PIN + "#")
    for _ in range(3):  # dial_attempts 3, every one refused
        enter(call, "00441234#", wait=5)
    office.advance(3)
    assert call.state == "ended"
    assert office.left_behind() == []


def test_an_idle_caller_is_hung_up_after_max_seconds(office: Office) -> None:
    office.reload("pbx_disa", [f"{DISA_HEADER} max_seconds(int)", f"1:out:700:{PIN}:local:1:30"])
    call = answered(office.phone("100").call("700"))
    enter(call, PIN + "#")  # dial tone, and nothing more (the RTP timeout is 60 s)
    office.advance(25)
    assert call.state == "answered"
    office.advance(5)  # max_seconds 30 from the answer
    assert call.state == "ended"
    assert office.left_behind() == []


def test_too_many_digits_are_cut_at_max_digits(office: Office) -> None:
    provider = office.provider()
    call = answered(office.phone("100").call("701"))
    enter(call, PIN + "#")
    enter(call, "0" + "1" * 30, wait=8)  # max_digits 15: placed after the 15th
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "0" + "1" * 14
    call.hang_up()


# ------------------------------------------------------------------ pbx db check


def _check(tmp_path: Path, *rows: str) -> list[str]:
    d = tmp_path / "cfg"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(FACTORY, d)
    (d / "pbx_disa").write_text("\n".join([DISA_HEADER, *rows]) + "\n")
    return [e.message for e in check_dir(d).errors]


def test_db_check_refuses_a_disa_without_a_good_pin(tmp_path: Path) -> None:
    assert _check(tmp_path, "1:out:700:4711:local:1") == []
    assert _check(tmp_path, "1:out:700:0007:local:1") == []  # leading zeros are digits
    for pin in ("", "123", "12a4", "12345678901234567"):
        problems = _check(tmp_path, f"1:out:700:{pin}:local:1")
        assert len(problems) == 1, (pin, problems)
        assert "pin" in problems[0] or "PIN" in problems[0], problems
    headless = "id(int,auto) name(string) number(string,null) call_class(string)"
    d = tmp_path / "cfg"
    (d / "pbx_disa").write_text(f"{headless}\n1:out:700:local\n")
    assert any("pin" in e.message for e in check_dir(d).errors)


def test_db_check_refuses_a_bad_class_or_a_taken_number(tmp_path: Path) -> None:
    assert _check(tmp_path, "1:out:700:4711:galactic:1") != []
    # 100 is an extension of the factory tables; two DISAs cannot share a number
    assert any("already" in p for p in _check(tmp_path, "1:out:100:4711:local:1"))
    assert any(
        "already" in p for p in _check(tmp_path, "1:a:700:4711:local:1", "2:b:700:4711:local:1")
    )
    assert any("dialable" in p for p in _check(tmp_path, "1:out:7x0:4711:local:1"))


def test_a_number_column_must_dial_a_type_of_its_own() -> None:
    table = pbx_table(
        "pbx_thief",
        "numbers that would reach another feature's type",
        text("name", "name", need=True),
        text("number", "number", null=True, dials="disa"),
        key=("name",),
    )
    with pytest.raises(SchemaClash, match="dials 'disa'"):
        register_features((Feature(name="thief", tables=(table,)),))


# ------------------------------------------------------------------ any keys at all


@pytest.mark.fuzz
@fuzz_settings(15)
@given(
    login=st.booleans(),
    keys=st.lists(st.text(alphabet="0123456789*#", max_size=24), min_size=1, max_size=4),
)
def test_whatever_a_caller_presses_a_local_disa_reaches_no_further(
    login: bool, keys: list[str]
) -> None:
    """Any key presses into a `local` DISA: only local numbers reach the trunk (never
    00…, never a code), the call ends within the DISA's bounds, nothing is left."""
    with tempfile.TemporaryDirectory() as tmp:
        office = Office(Path(tmp), tables=TABLES)
        try:
            provider = office.provider()
            call = answered(office.phone("100").call("700"))
            if login:
                enter(call, PIN + "#")
            for chunk in keys:
                if call.state != "answered":
                    break
                enter(call, chunk, wait=3)
            for inc in provider.incoming:
                number = inc.invite.uri.user or ""
                assert number.startswith("0") and not number.startswith("00"), number
            if call.state == "answered":
                office.advance(130)  # max_seconds 120, whatever was pressed
            if provider.incoming and call.state == "answered":
                call.hang_up()  # bridged: the app is done, the call goes on
            assert call.state == "ended"
            office.advance(40)
            assert office.left_behind() == []
        finally:
            office.close()
