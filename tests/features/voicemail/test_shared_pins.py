"""Shared (group) mailboxes and PINs on the harness: a pbx_mailbox box reached by its
number, a DID's destination and `*96`, opened with `*98` and its PIN, full at its own
max_messages, checked by `pbx db check`; a PIN stored hashed (sha256, PBKDF2), the
PIN changed from the phone (0 then 5, twice) kept hashed in the state until the
table's PIN changes; pins.py's forms and bounds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.voicemail import box as mb
from pbx_core.features.voicemail import pins
from pbx_core.pbx import features as host
from pbx_core.store.errors import DbTextError, MultiError
from tests.features.voicemail.test_voicemail import DID_HEADER, HEADER, SETTINGS, _ext, _leave
from tests.fuzzing import fuzz_settings
from tests.harness.office import PROVIDER_TRUNK, Office, Outgoing, offices

PLAYED: list[str] = []
MAILBOX_HEADER = (
    "number(string) owners(string) pin(string,null) max_messages(int,null) description(string,null)"
)
SHA = "sha256$s4lt$" + hashlib.sha256(b"s4lt" + b"8642").hexdigest()  # PIN 8642


def _tables(pin_101: str = "4711", box_pin: str = "2468") -> dict[str, list[str]]:
    return {
        "pbx_settings": SETTINGS,
        "pbx_trunk": PROVIDER_TRUNK,
        "pbx_did": [DID_HEADER, "1:5550100:provider:voicemail:650:the sales box"],
        "pbx_extension": [
            HEADER,
            _ext(1, "100", True, SHA, ring_timeout=10),
            _ext(2, "101", True, pin_101, ring_timeout=10),
            _ext(3, "102", False),
        ],
        "pbx_mailbox": [MAILBOX_HEADER, f"650:100,101:{box_pin}:1:sales"],
    }


@pytest.fixture
def office(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Office]:
    PLAYED.clear()
    original = host.LocalSession.play

    async def play(self: host.LocalSession, *prompts: str, interruptible: bool = False) -> Any:
        PLAYED.extend(prompts)
        return await original(self, *prompts, interruptible=interruptible)

    monkeypatch.setattr(host.LocalSession, "play", play)
    yield from offices(tmp_path, tables=_tables())


def _login(office: Office, number: str, code: str, pin: str) -> Outgoing:
    PLAYED.clear()
    call = office.phone(number).call(code)
    assert call.status == 200, call.status
    office.advance(1)
    call.keys(pin + "#")
    office.advance(1)
    return call


def _logged_in(office: Office, number: str, code: str, pin: str) -> bool:
    call = _login(office, number, code, pin)
    ok = "vm-main-menu" in PLAYED and "vm-login-incorrect" not in PLAYED
    call.hang_up()
    office.advance(6)
    return ok


def _box(office: Office, number: str) -> list[str]:
    return [k for k, _v in office.engine.features.messages(number)]


def test_a_shared_box_by_number_did_and_star96_and_full_at_its_own_bound(office: Office) -> None:
    _leave(office, office.phone("102").call("650"))
    assert len(_box(office, "650")) == 1
    PLAYED.clear()
    call = office.phone("102").call("*96650")  # max_messages 1: full now
    office.advance(2)
    assert "vm-mailbox-full" in PLAYED
    call.hang_up()
    office.advance(6)
    assert len(_box(office, "650")) == 1
    # An owner opens it with *98 and its PIN; 102 (not an owner) may too, with the PIN
    # (as any box: *98 is the PIN's door), and a wrong PIN is refused.
    assert _logged_in(office, "101", "*98650", "2468")
    assert not _logged_in(office, "102", "*98650", "1111")
    assert office.phone("101").call("*97").status == 200  # *97 stays the own box


def test_a_did_reaches_the_shared_box(office: Office) -> None:
    provider = office.provider()
    call = provider.call("5550100", auth=False)
    _leave(office, call)
    assert len(_box(office, "650")) == 1


def test_db_check_knows_shared_boxes(tmp_path: Path) -> None:
    bad = _tables()
    bad["pbx_did"] = [DID_HEADER, "1:5550100:provider:voicemail:651:no such box"]
    with pytest.raises((DbTextError, MultiError), match="651"):
        Office(tmp_path / "a", tables=bad)
    owners = _tables()
    owners["pbx_mailbox"] = [MAILBOX_HEADER, "650:100,abc:2468::x"]
    with pytest.raises((DbTextError, MultiError), match="not an extension number"):
        Office(tmp_path / "b", tables=owners)
    pin = _tables(box_pin="12ab")
    with pytest.raises((DbTextError, MultiError), match="PIN"):
        Office(tmp_path / "c", tables=pin)
    ext_pin = _tables(pin_101="sha256$x$1234")
    with pytest.raises((DbTextError, MultiError), match="vm_pin"):
        Office(tmp_path / "d", tables=ext_pin)


def test_a_hashed_pin_in_the_table(office: Office) -> None:
    assert _logged_in(office, "102", "*98100", "8642")
    assert not _logged_in(office, "102", "*98100", "1234")


def _change(office: Office, number: str, code: str, pin: str, first: str, second: str) -> None:
    call = _login(office, number, code, pin)
    call.keys("0")
    office.advance(1)
    call.keys("5")
    office.advance(1)
    call.keys(first + "#")
    office.advance(1)
    if second:
        call.keys(second + "#")
        office.advance(1)
    call.hang_up()
    office.advance(6)


def test_the_pin_changed_from_the_phone_is_kept_hashed_until_the_table_changes(
    office: Office,
) -> None:
    _change(office, "101", "*97", "4711", "97531", "97531")
    assert "vm-password-changed" in PLAYED
    ctx = office.engine.features.context(next(f for f in office.features if f.name == "voicemail"))
    saved = ctx.state_get("pin:101")
    assert saved["hash"].startswith("pbkdf2_sha256$") and "97531" not in saved["hash"]
    assert saved["table"] == "4711"
    assert _logged_in(office, "102", "*98101", "97531")
    assert not _logged_in(office, "102", "*98101", "4711")
    office.restart()  # the state LMDB keeps it
    assert _logged_in(office, "102", "*98101", "97531")
    # The installer changes the table's PIN: that one is in force again.
    tables = _tables(pin_101="1357")
    office.reload("pbx_extension", tables["pbx_extension"])
    assert _logged_in(office, "102", "*98101", "1357")
    assert not _logged_in(office, "102", "*98101", "97531")


@pytest.mark.parametrize(
    ("first", "second", "says"),
    [
        ("97531", "97532", "vm-password-mismatch"),
        ("123", "", "invalid-option"),  # too short
        ("12345678901", "", "invalid-option"),  # too long
    ],
)
def test_a_pin_change_that_fails_changes_nothing(
    office: Office, first: str, second: str, says: str
) -> None:
    _change(office, "101", "*97", "4711", first, second)
    assert says in PLAYED and "vm-password-changed" not in PLAYED
    assert _logged_in(office, "102", "*98101", "4711")


def test_a_shared_box_pin_changed_by_an_owner(office: Office) -> None:
    _change(office, "100", "*98650", "2468", "1122", "1122")
    assert _logged_in(office, "101", "*98650", "1122")
    assert not _logged_in(office, "101", "*98650", "2468")


def test_pin_forms() -> None:
    assert pins.form("0042") == "plain" and pins.matches("0042", "0042")
    assert not pins.matches("0042", "42") and not pins.matches("0042", "")
    assert pins.form(SHA) == "sha256" and pins.matches(SHA, "8642")
    assert not pins.matches(SHA, SHA) and not pins.matches(SHA, SHA.split("$")[2])
    stored = pins.hashed("2468")
    assert pins.form(stored) == "pbkdf2_sha256" and pins.matches(stored, "2468")
    assert not pins.matches(stored, "2469")
    assert pins.hashed("2468") != stored  # a fresh salt each time
    slow = "pbkdf2_sha256$999999$s$" + "0" * 64  # over MAX_ITERATIONS: no form, no match
    assert pins.form(slow) is None and not pins.matches(slow, "1")
    assert pins.form("md5$x$" + "0" * 32) is None
    assert pins.valid("1234") and pins.valid("1234567890")
    assert not pins.valid("123") and not pins.valid("12345678901") and not pins.valid("12a4")
    assert not pins.valid("١٢٣٤")  # Arabic-Indic digits are digits, not keys
    assert pins.main(["1234"]) == 0 and pins.main(["12"]) == 2


@fuzz_settings(200)
@given(stored=st.text(max_size=120), entry=st.text(max_size=20))
def test_any_stored_pin_and_entry_is_answered(stored: str, entry: str) -> None:
    got = pins.matches(stored, entry)
    assert isinstance(got, bool)
    if got:
        assert pins.form(stored) is not None and entry.isascii()


def test_box_rules_without_the_office() -> None:
    class Ctx:
        def extension(self, number: str) -> dict[str, Any] | None:
            return {"voicemail": 1, "vm_pin": None} if number in ("100", "101") else None

        def rows(self, table: str) -> tuple[dict[str, Any], ...]:
            assert table == mb.SHARED
            return ({"number": "650", "owners": " 101, 100,101 ,", "pin": None},)

        def state_get(self, key: str) -> Any:
            return None

    ctx: Any = Ctx()
    assert mb.owners(ctx, "650") == ("101", "100")  # duplicates and blanks dropped
    assert mb.owners(ctx, "101") == ("101",) and mb.owners(ctx, "102") == ()
    assert mb.boxes_of(ctx, "101") == ("101", "650")
    assert mb.boxes_of(ctx, "102") == ()
    assert not mb.has_pin(ctx, "650") and not mb.check_pin(ctx, "650", "")
