"""The auto attendant's rules on the harness (tests/harness/office.py): each key's
destination type (extension, ring group, another menu, voicemail, an outside number,
hangup), no key / a wrong key replaying the greeting then taking `t` / `i` (goodbye
without them), direct dial on and off, menu loops bounded, a DID's welcome played
before its destination, a trunk's caller never dialling out above the class the core
gives it, a missing prompt never silent; `pbx db check` refusing what cannot work."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core import sysrec
from pbx_core.features import ivr
from pbx_core.features.ivr import prompts
from pbx_core.media.prompts_build import PROMPTS
from pbx_core.pbx import features as host
from pbx_core.store.build import check_dir
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings
from tests.harness.office import (
    EXTENSION_HEADER,
    PROVIDER,
    PROVIDER_TRUNK,
    Office,
    Outgoing,
    Phone,
    extension_row,
    groups,
    offices,
)

PLAYED: list[str] = []
DIALPLAN = [
    "id(int,auto) priority(int) pattern(string) action(string) trunk(string,null) "
    "strip(int) prepend(string,null) description(string,null) call_class(string)",
    "1:5:00.:trunk:provider:0:::international",
    "2:10:0.:trunk:provider:0:::national",
]
MENU_HEADER = (
    "id(int,auto) name(string) number(string,null) prompt(string) timeout(int) "
    "retries(int) direct_dial(int)"
)
OPTION_HEADER = "id(int,auto) menu(string) digit(string) dest_type(string) dest(string,null)"
DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null) welcome(string,null)"
)
TABLES = {
    "pbx_trunk": PROVIDER_TRUNK,
    "pbx_dialplan": DIALPLAN,
    "pbx_extension": [
        EXTENSION_HEADER + " voicemail(int)",
        extension_row(1, "100", call_class="national") + ":0",
        extension_row(2, "101", ring_timeout=10) + ":1",
        extension_row(3, "102") + ":0",
        extension_row(4, "103") + ":0",
    ],
    "pbx_ring_group": groups("600:ringall:101,102:10:hangup:"),
    "pbx_ivr_menu": [
        MENU_HEADER,
        "1:main:700:welcome:5:1:0",
        "2:sales:701:no-such-recording:5:0:1",
        "3:loop1::please-hold:2:0:0",
        "4:loop2::please-hold:2:0:0",
        "5:loop3::please-try-again:2:0:0",
        "6:slow:702:transferring:60:10:0",
    ],
    "pbx_ivr_option": [
        OPTION_HEADER,
        "1:main:1:extension:101",
        "2:main:2:group:600",
        "3:main:3:ivr:sales",
        "4:main:4:external:0123",
        "5:main:5:hangup:",
        "6:main:6:voicemail:101",
        "7:main:0:external:00441234",
        "8:main:t:extension:102",
        "9:main:i:ivr:sales",
        "10:main:#:ivr:main",
        "11:sales:1:extension:102",
        "12:loop1:t:ivr:loop2",
        "13:loop2:t:ivr:loop1",
        "14:loop3:t:timecond:back",
    ],
    "pbx_time_group": ["name(string) times(string)", "always:*"],
    "pbx_time_condition": [
        "name(string) time_group(string) match_type(string) match(string,null) "
        "nomatch_type(string) nomatch(string,null)",
        "back:always:ivr:loop3:ivr:loop3",
    ],
    "pbx_did": [
        DID_HEADER,
        "1:5550100:provider:ivr:main::",
        "2:5550101:provider:extension:101::welcome",
        "3:5550103:provider:ivr:loop1::",
        "4:5550104:provider:ivr:main::please-hold",
        "5:5550105:provider:ivr:loop3::",
        "6:5550106:provider:external:0123::",
    ],
}


@pytest.fixture
def office(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Office]:
    PLAYED.clear()
    original = host.LocalSession.play

    async def play(self: host.LocalSession, *names: str, interruptible: bool = False) -> Any:
        PLAYED.extend(names)
        return await original(self, *names, interruptible=interruptible)

    monkeypatch.setattr(host.LocalSession, "play", play)
    yield from offices(tmp_path, tables=TABLES)


def outside(office: Office, number: str = "0301234") -> Phone:
    """An outside caller on the provider's trunk."""
    p = Phone(office, number, PROVIDER[1] + 1, "", host=PROVIDER[0])
    office.phones[p.address] = p
    return p


def menu(office: Office, number: str = "700", caller: str = "100") -> Outgoing:
    call = office.phone(caller).call(number)
    assert call.status == 200, call.status
    office.advance(1)  # the greeting
    return call


def press(call: Outgoing, keys: str, wait: float = 1.0) -> None:
    call.keys(keys)
    call.office.advance(wait)


# ------------------------------------------------------------------ keys


def test_a_key_reaches_an_extension(office: Office) -> None:
    b = office.phone("101", mode="ring")
    call = menu(office)
    assert PLAYED[:1] == ["welcome"] and b.incoming == []
    press(call, "1")
    assert len(b.incoming) == 1  # 101 rings for the caller
    b.pick_up()
    assert office.engine.features.running_apps == 0  # the menu is done
    call.hang_up()
    assert office.left_behind() == []


def test_a_key_reaches_a_ring_group(office: Office) -> None:
    b, c = office.phone("101", mode="ring"), office.phone("102", mode="ring")
    call = menu(office)
    press(call, "2")
    assert len(b.incoming) == 1 and len(c.incoming) == 1
    call.hang_up()


def test_a_key_reaches_another_menu_and_a_missing_prompt_is_never_silent(
    office: Office,
) -> None:
    c = office.phone("102", mode="ring")
    call = menu(office)
    press(call, "3")  # to sales, whose prompt is no built-in one
    assert PLAYED[-2:] == list(prompts.FALLBACK["greeting"])  # welcome, enter the extension
    press(call, "1", wait=4)  # sales' direct dial waits digit_timeout (3 s) for more
    assert len(c.incoming) == 1
    call.hang_up()


def test_a_key_reaches_voicemail(office: Office) -> None:
    call = menu(office)
    press(call, "6")
    assert "vm-extension" in PLAYED  # voicemail's greeting for 101
    assert office.engine.features.running_apps == 1  # voicemail's application now
    call.hang_up()


def test_the_hangup_key_says_goodbye(office: Office) -> None:
    call = menu(office)
    press(call, "5", wait=2)
    assert PLAYED[-1] == "goodbye"
    assert call.state == "ended"
    assert office.left_behind() == []


def test_an_extension_dials_out_with_its_own_class_only(office: Office) -> None:
    provider = office.provider()
    call = menu(office)  # 100 is national
    press(call, "0")  # 00441234 is international: refused, the menu again
    assert provider.incoming == []
    assert "not-available" in PLAYED
    office.advance(1)
    press(call, "4")  # 0123 is national: out over the trunk
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "0123"
    call.hang_up()


def test_a_trunk_caller_never_dials_out_above_the_dids_class(office: Office) -> None:
    provider = office.provider()
    b = office.phone("101", mode="ring")
    call = outside(office).call("5550100", auth=False)
    assert call.status == 200
    office.advance(1)
    press(call, "4")  # national: a trunk's caller has the class internal
    assert provider.incoming == []
    assert "not-available" in PLAYED
    office.advance(1)
    press(call, "0")
    assert provider.incoming == []
    office.advance(1)
    press(call, "1")  # our own extensions: yes
    assert len(b.incoming) == 1
    call.hang_up()


def test_a_dids_external_destination_keeps_the_trunk_callers_class(office: Office) -> None:
    """external is a destination type of every table: a DID naming 0123 (national)
    does not let an outside caller out (the PBX says so and hangs up)."""
    provider = office.provider()
    call = outside(office).call("5550106", auth=False)
    assert call.status == 200
    office.advance(3)
    assert provider.incoming == []
    assert PLAYED[-1] == "not-available" and call.state == "ended"
    assert office.left_behind() == []


# ------------------------------------------------------------------ retries, t and i


def test_no_key_replays_the_greeting_then_takes_t(office: Office) -> None:
    c = office.phone("102", mode="ring")
    menu(office)
    office.advance(6)  # main: timeout 5, retries 1: the greeting again
    assert PLAYED.count("welcome") == 2 and c.incoming == []
    office.advance(6)
    assert len(c.incoming) == 1  # t: extension 102


def test_a_wrong_key_says_so_then_takes_i(office: Office) -> None:
    call = menu(office)
    press(call, "9", wait=2)
    assert PLAYED[-2:] == ["invalid-option", "welcome"]
    press(call, "8", wait=2)  # retries 1 used up: i is menu sales
    assert PLAYED[-2:] == list(prompts.FALLBACK["greeting"])
    call.hang_up()


def test_without_t_the_menu_says_goodbye(office: Office) -> None:
    call = menu(office, "701")  # sales: retries 0, no t
    office.advance(10)
    assert PLAYED[-1] == "goodbye" and call.state == "ended"
    assert office.left_behind() == []


# ------------------------------------------------------------------ direct dial


def test_direct_dial_reaches_an_extension(office: Office) -> None:
    d = office.phone("103", mode="ring")
    call = menu(office, "701")
    press(call, "103", wait=4)
    assert len(d.incoming) == 1
    call.hang_up()


def test_without_direct_dial_only_the_menu_keys_count(office: Office) -> None:
    b, d = office.phone("101", mode="ring"), office.phone("103", mode="ring")
    call = menu(office, "700")  # main: direct_dial 0
    press(call, "103")
    assert d.incoming == []  # 1 was the key: extension 101
    assert len(b.incoming) == 1
    call.hang_up()


def test_direct_dial_of_no_extension_is_a_wrong_key(office: Office) -> None:
    call = menu(office, "701")
    press(call, "999", wait=4)  # no extension 999; retries 0, no i: goodbye
    assert PLAYED[-1] == "goodbye" and call.state == "ended"


# ------------------------------------------------------------------ bounds


def test_menu_loops_end_after_max_hops(office: Office) -> None:
    call = outside(office).call("5550103", auth=False)
    assert call.status == 200
    office.advance(ivr.MAX_HOPS * 4 + 10)
    assert PLAYED.count("please-hold") == ivr.MAX_HOPS
    assert PLAYED[-1] == "goodbye"
    assert office.left_behind() == []


def test_loops_through_another_destination_are_bounded_too(office: Office) -> None:
    """loop3's t is a time condition leading back to loop3: each lap is a new
    application on the same call, counted all the same."""
    call = outside(office).call("5550105", auth=False)
    assert call.status == 200
    office.advance(ivr.MAX_HOPS * 4 + 10)
    assert PLAYED.count("please-try-again") == ivr.MAX_HOPS
    assert PLAYED[-1] == "goodbye"
    assert office.left_behind() == []


def test_a_callers_time_in_menus_is_bounded(office: Office) -> None:
    """slow: 60 s for a key, 10 retries (11 minutes); the PBX hangs up at MAX_SECONDS."""
    office.reload(
        "pbx_settings",
        [
            "name(string) value(string,null)",
            "domain:pbx.local",
            "hostname:pbx",
            "sip_port:5060",
            "net_mode:dhcp",
            "rtp_timeout:3600",  # a silent harness phone is not what ends it
        ],
    )
    call = menu(office, "702")
    office.advance(ivr.MAX_SECONDS - 10)
    assert call.state != "ended"
    office.advance(20)
    assert call.state == "ended"
    assert 1 < PLAYED.count("transferring") < 11
    assert office.left_behind() == []


def test_a_calls_menu_count_goes_when_it_hangs_up(office: Office) -> None:
    before = dict(ivr.hops.calls)
    call = menu(office)
    press(call, "3")  # two menus
    assert len(ivr.hops.calls) == len(before) + 1
    call.hang_up()
    office.advance(1)
    assert ivr.hops.calls == before


def test_a_menu_naming_itself_is_bounded_too(office: Office) -> None:
    call = menu(office)
    for _ in range(ivr.MAX_HOPS + 2):
        press(call, "#")  # main's # is main again
        if call.state == "ended":
            break
    assert PLAYED.count("welcome") == ivr.MAX_HOPS
    assert PLAYED[-1] == "goodbye"


# ------------------------------------------------------------------ DID welcome


def test_a_dids_welcome_plays_before_its_destination(office: Office) -> None:
    b = office.phone("101", mode="ring")
    call = outside(office).call("5550101", auth=False)
    assert call.status == 200  # the PBX answers to play it
    assert PLAYED == ["welcome"] and b.incoming == []
    office.advance(2)
    assert len(b.incoming) == 1  # then the DID's destination rings
    b.pick_up()
    call.hang_up()
    assert office.left_behind() == []


def test_a_dids_welcome_then_a_menu(office: Office) -> None:
    call = outside(office).call("5550104", auth=False)
    assert call.status == 200
    office.advance(2)
    assert PLAYED[:2] == ["please-hold", "welcome"]
    call.hang_up()


def test_a_did_without_welcome_is_routed_at_once(office: Office) -> None:
    """No welcome: not answered by the PBX, the DID's destination rings."""
    office.reload("pbx_did", [DID_HEADER, "1:5550101:provider:extension:101::"])
    b = office.phone("101", mode="ring")
    call = outside(office).call("5550101", auth=False)
    assert call.status is None and len(b.incoming) == 1
    assert PLAYED == []
    call.cancel()


# ------------------------------------------------------------------ pbx db check


def _check(tmp_path: Path, tables: dict[str, list[str]]) -> list[str]:
    d = tmp_path / "cfg"
    shutil.copytree(FACTORY, d)
    for name, lines in tables.items():
        (d / name).write_text("\n".join(lines) + "\n")
    return [e.message for e in check_dir(d).errors]


def test_db_check_accepts_the_tables_of_these_tests(tmp_path: Path) -> None:
    assert _check(tmp_path, TABLES) == []


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("1:nosuch:1:extension:101", "nosuch"),
        ("1:main:1:ivr:nosuch", "no ivr 'nosuch' in pbx_ivr_menu"),
        ("1:main:x:extension:101", "a digit is one of"),
        ("1:main:12:extension:101", "a digit is one of"),
        ("1:main:1:queue:1", "no queue '1' in pbx_queue"),  # features/queue's targets
        ("1:main:1:external:call-me", "is not a number"),
        ("1:main:1:group:999", "no ring group '999'"),
    ],
)
def test_db_check_refuses_what_cannot_work(tmp_path: Path, row: str, why: str) -> None:
    problems = _check(tmp_path, {**TABLES, "pbx_ivr_option": [OPTION_HEADER, row]})
    assert len(problems) == 1 and why in problems[0], problems


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("1:5550100::ivr:nosuch::", "no ivr 'nosuch' in pbx_ivr_menu"),
        ("1:5550101::extension:101::../etc/x", "a prompt name is"),
    ],
)
def test_db_check_refuses_a_did_naming_a_missing_menu_or_a_bad_welcome(
    tmp_path: Path, row: str, why: str
) -> None:
    problems = _check(tmp_path, {**TABLES, "pbx_did": [DID_HEADER, row]})
    assert len(problems) == 1 and why in problems[0], problems


def test_a_menu_number_clashing_with_an_extension_is_refused(tmp_path: Path) -> None:
    menus = [MENU_HEADER, "1:main:101:welcome:5:1:0"]
    tables = {**TABLES, "pbx_ivr_menu": menus, "pbx_ivr_option": [OPTION_HEADER]}
    problems = _check(tmp_path, tables)
    assert any("101" in p for p in problems), problems


# ------------------------------------------------------------------ prompts


def test_built_in_prompt_names_are_the_prompt_sets() -> None:
    assert prompts.BUILT_IN.issubset(PROMPTS)
    for names in prompts.FALLBACK.values():
        assert set(names) <= set(PROMPTS)


def test_an_unknown_prompt_falls_back_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    prompts._warned.discard("never-recorded")
    assert prompts.resolve("welcome") == ("welcome",)
    assert prompts.resolve("never-recorded") == ("welcome", "enter-extension")
    assert prompts.resolve("never-recorded", "invalid") == ("invalid-option",)
    warned = [r for r in caplog.records if "never-recorded" in r.getMessage()]
    assert len(warned) == 1


@pytest.mark.fuzz
@given(st.text(max_size=3))
@fuzz_settings(200)
def test_digit_check_takes_exactly_the_menu_keys(value: str) -> None:
    ok = ivr._digit(value) is None
    assert ok == (len(value) == 1 and value in "0123456789*#ti")


# ------------------------------------------------------------------ any keys at all


@pytest.mark.fuzz
@fuzz_settings(12)
@given(
    start=st.sampled_from(["5550100", "5550105"]),
    keys=st.lists(st.text(alphabet="0123456789*#", max_size=12), min_size=1, max_size=4),
)
def test_whatever_a_trunk_caller_presses_it_never_dials_out_and_ends(
    start: str, keys: list[str]
) -> None:
    """Any keys from an outside caller in the menus: nothing reaches the trunk (the
    only outside numbers are national and international), and the call ends within
    the menus' bounds, leaving nothing behind."""
    with tempfile.TemporaryDirectory() as tmp:
        office = Office(Path(tmp), tables=TABLES)
        try:
            provider = office.provider()
            for n in ("101", "102", "103"):
                office.phone(n, mode="ring")
            call = outside(office).call(start, auth=False)
            assert call.status == 200
            office.advance(1)
            for chunk in keys:
                if call.state != "answered":
                    break
                press(call, chunk, wait=3)
            assert provider.incoming == []
            if call.state == "answered" and office.engine.features.running_apps:
                office.advance(ivr.MAX_SECONDS + 10)  # whatever was pressed
            if call.state == "answered":
                call.hang_up()  # routed to a phone (ringing) or voicemail
            assert call.state == "ended"
            office.advance(40)
            assert office.left_behind() == []
        finally:
            office.close()


# ------------------------------------------------------------------ system recordings


def test_a_system_recording_of_the_prompts_name_is_what_callers_hear(office: Office) -> None:
    """A menu's and a DID's prompt name a system recording when one exists (*77 or
    `pbx remote sysrec-push`): the office's own greeting, not the built-in one."""
    directory = sysrec.folder(office.tmp / "state" / "recordings")
    sysrec.save(directory, "welcome", sysrec.header(8000) + b"\xff" * 8000)
    call = menu(office)
    assert PLAYED[:1] == ["sys:welcome"], PLAYED
    call.hang_up()
    PLAYED.clear()
    b = office.phone("101", mode="ring")
    call = outside(office).call("5550101", auth=False)
    assert call.status == 200 and PLAYED == ["sys:welcome"], PLAYED
    office.advance(3)
    assert len(b.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []
