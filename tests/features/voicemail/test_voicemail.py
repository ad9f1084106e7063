"""Voicemail's rules on the harness (tests/harness/office.py): a message is left after
no answer, busy (DND too) and unavailable, by `*96` + extension and by a `voicemail`
destination; the greeting names the extension (or is the owner's recording); a short
message is discarded, a full box announced; MWI NOTIFYs reach the registered contact
on every change and again when it registers; `*97`/`*98` play, save and delete with
RFC 4733 keys behind the PIN; messages outlive an office restart."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features import voicemail
from pbx_core.features.voicemail import box as mb
from pbx_core.media.codecs import CODECS
from pbx_core.pbx import features as host
from pbx_core.pbx.mwi import MAX_COUNT, summary
from tests.fuzzing import fuzz_settings
from tests.harness.office import (
    EXTENSION_HEADER,
    PROVIDER_TRUNK,
    Office,
    Outgoing,
    extension_row,
    groups,
    offices,
)

PLAYED: list[str] = []
SETTINGS = [
    "name(string) value(string,null)",
    "domain:pbx.local",
    "hostname:pbx",
    "sip_port:5060",
    "net_mode:dhcp",
    "vm_max_messages:2",
    "vm_max_seconds:20",
    "sec_ban_failures:3",
    "sec_ban_window:600",
    "sec_ban_seconds:60",
]
HEADER = EXTENSION_HEADER + " voicemail(int) vm_pin(string,null)"


def _ext(n: int, number: str, vm: bool, pin: str = "", **kw: Any) -> str:
    return extension_row(n, number, **kw) + f":{int(vm)}:{pin}"


DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null)"
)
TABLES = {
    "pbx_trunk": PROVIDER_TRUNK,
    "pbx_did": [DID_HEADER, "1:5550100:provider:voicemail:100:straight to 100's box"],
    "pbx_ring_group": groups("600:ringall:102:10:voicemail:101"),
    "pbx_settings": SETTINGS,
    "pbx_extension": [
        HEADER,
        _ext(1, "100", True, ring_timeout=10),
        _ext(2, "101", True, "4711", ring_timeout=10, forward_busy="102"),
        _ext(3, "102", False),
    ],
}


@pytest.fixture
def office(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Office]:
    PLAYED.clear()
    original = host.LocalSession.play

    async def play(self: host.LocalSession, *prompts: str, interruptible: bool = False) -> Any:
        PLAYED.extend(prompts)
        return await original(self, *prompts, interruptible=interruptible)

    monkeypatch.setattr(host.LocalSession, "play", play)
    yield from offices(tmp_path, tables=TABLES)


def _frame() -> bytes:
    pcm = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160)
    )
    return CODECS["PCMU"].encode(pcm)


def _talk(office: Office, call: Outgoing, seconds: float) -> None:
    assert call.rtp is not None
    for _ in range(int(seconds / 0.02)):
        call.rtp.audio(call.pbx_port, _frame())
        office.advance(0.02)
        office.settle_io(2)


def _leave(office: Office, call: Outgoing, seconds: float = 2.0) -> None:
    """Wait out the greeting and the tone, speak, press #."""
    assert call.status == 200, call.status
    office.advance(5)  # the built-in greeting and the tone: beeps in tests
    _talk(office, call, seconds)
    call.keys("#")
    office.advance(3)


def _box(office: Office, number: str) -> list[tuple[str, dict[str, Any]]]:
    return [(k, dict(v)) for k, v in office.engine.features.messages(number)]


def _wav(office: Office, name: str) -> Path:
    return office.tmp / "state" / "recordings" / "voicemail" / f"{name}.wav"


def _notifies(office: Office, number: str) -> list[str]:
    return [
        r.body.decode()
        for r in office.stack.sent_requests("NOTIFY")
        if r.to.uri.user == number and r.headers.get("event") == "message-summary"
    ]


def test_a_message_is_left_after_no_answer(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", mode="ring")
    call = a.call("101")
    office.advance(10)  # 101 rings out
    assert call.status == 200 and b.incoming[0].state == "cancelled"
    assert PLAYED[:4] == ["vm-extension", "digit-1", "digit-0", "digit-1"]
    _leave(office, call)
    assert PLAYED[4:7] == ["vm-unavailable", "vm-leave-message", "tone:confirmation"]
    ((msg_id, meta),) = _box(office, "101")
    assert meta["folder"] == "new" and meta["caller"] == "100"
    assert 1.5 <= meta["duration"] <= 2.5
    assert _wav(office, f"101-{msg_id}").exists()
    assert call.state == "ended"  # goodbye, hung up
    assert office.left_behind() == []


def test_forward_on_busy_wins_over_voicemail(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="busy")
    c = office.phone("102", mode="ring")
    call = a.call("101")  # 101 forwards on busy to 102: the forward, not voicemail
    assert len(c.incoming) == 1 and call.status is None
    assert "vm-busy" not in PLAYED
    call.cancel()
    office.advance(1)
    assert _box(office, "101") == []


def test_busy_gives_the_busy_greeting(office: Office) -> None:
    busy = office.phone("100", mode="busy")
    call = office.phone("102").call("100")
    assert len(busy.incoming) == 1
    assert call.status == 200
    assert "vm-busy" in PLAYED and "vm-unavailable" not in PLAYED
    _leave(office, call)
    assert len(_box(office, "100")) == 1


def test_dnd_lands_in_voicemail(office: Office) -> None:
    office.reload(
        "pbx_extension",
        [HEADER, _ext(1, "100", True, dnd=True), _ext(2, "101", True), _ext(3, "102", False)],
    )
    office.phone("100")
    call = office.phone("101").call("100")
    assert call.status == 200 and "vm-busy" in PLAYED
    _leave(office, call)
    assert len(_box(office, "100")) == 1


def test_unregistered_and_direct_and_destination(office: Office) -> None:
    a = office.phone("102")
    call = a.call("100")  # 100 not registered: unavailable
    assert call.status == 200 and "vm-unavailable" in PLAYED
    _leave(office, call)
    call = a.call("*96100")  # straight to the box, no ringing
    assert call.status == 200
    _leave(office, call)
    assert len(_box(office, "100")) == 2
    assert a.call("*96102").status == 404  # 102 has no mailbox
    assert a.call("*96").status == 404


def test_a_did_and_a_ring_group_failover_name_a_mailbox(office: Office) -> None:
    outside = office.provider()
    call = outside.call("5550100", auth=False)
    assert call.status == 200 and "vm-unavailable" in PLAYED
    _leave(office, call)
    ((_id, meta),) = _box(office, "100")
    assert meta["caller"] == "provider"  # the trunk caller's number as shown
    group_member = office.phone("102", mode="ring")
    call = office.phone("100").call("600")
    office.advance(10)  # the group rings out: its failover, 101's box
    assert group_member.incoming[0].state == "cancelled"
    _leave(office, call)
    assert len(_box(office, "101")) == 1


def test_a_short_message_is_discarded(office: Office) -> None:
    call = office.phone("102").call("*96100")
    _leave(office, call, seconds=0.4)
    assert _box(office, "100") == []
    assert list((office.tmp / "state" / "recordings" / "voicemail").glob("*.wav")) == []


def test_a_full_box_is_announced_and_nothing_recorded(office: Office) -> None:
    a = office.phone("102")
    for _ in range(2):  # vm_max_messages 2
        _leave(office, a.call("*96100"))
    PLAYED.clear()
    call = a.call("*96100")
    office.advance(3)
    assert PLAYED == ["vm-mailbox-full", "goodbye"]
    assert call.state == "ended" and len(_box(office, "100")) == 2


def test_zero_goes_to_the_operator_keeping_what_was_said(office: Office) -> None:
    office.reload("pbx_settings", [*SETTINGS, "operator:102"])
    operator = office.phone("102", mode="ring")
    call = office.phone("101").call("*96100")
    office.advance(5)  # greeting and tone: recording
    _talk(office, call, 1.5)
    call.keys("0")
    office.advance(1)
    assert len(operator.incoming) == 1  # the caller is put through
    assert len(_box(office, "100")) == 1  # and the message kept
    operator.pick_up()
    office.advance(1)
    assert office.engine.features.running_apps == 0  # bridged: the app is done
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def _quota(office: Office, seconds: float) -> None:
    """Pretend the boxes together already hold `seconds` of messages."""
    host = office.engine.features
    host.state_set(voicemail.FEATURE, mb.TOTAL, seconds)


def test_the_card_quota_is_counted_announced_and_stops_a_message(office: Office) -> None:
    office.reload("pbx_settings", [*SETTINGS, "vm_quota_minutes:1"])
    a = office.phone("102")
    _leave(office, a.call("*96100"), seconds=2.0)
    ((_first, meta),) = _box(office, "100")
    ctx = office.engine.features.context(voicemail.FEATURE)
    assert mb.used(ctx) == pytest.approx(meta["duration"])
    status = office.engine.status()["features"]["voicemail"]
    assert status == {"used_seconds": round(meta["duration"], 1), "quota_seconds": 60}
    _quota(office, 57.0)  # 3 s left: the next message stops there
    call = a.call("*96101")
    office.advance(5)
    _talk(office, call, 5.0)
    office.advance(2)
    ((_id, capped),) = _box(office, "101")
    assert 2.0 <= capped["duration"] <= 3.2
    assert call.state == "ended"
    assert mb.room(ctx) <= 0.5
    PLAYED.clear()
    call = a.call("*96100")  # the card is full: announced, nothing recorded
    office.advance(3)
    assert PLAYED == ["vm-mailbox-full", "goodbye"] and len(_box(office, "100")) == 1
    # deleting gives the room back
    listen = _listen(office, "101", "*97", "4711")
    listen.keys("1")
    office.advance(1)
    listen.keys("7")
    office.advance(2)
    assert _box(office, "101") == [] and mb.room(ctx) >= 2.0
    listen.hang_up()
    office.advance(6)
    assert office.left_behind() == []


def test_mwi_on_every_change_and_on_register(office: Office) -> None:
    owner = office.phone("101")
    assert _notifies(office, "101") == [summary(0, 0, "sip:101@pbx.local").decode()]
    _leave(office, office.phone("102").call("*96101"))
    got = _notifies(office, "101")[-1]
    assert "Messages-Waiting: yes\r\n" in got and "Voice-Message: 1/0 (0/0)\r\n" in got
    (notify,) = [r for r in office.stack.requests if r[0].method == "NOTIFY"][-1:]
    req, dest, _cb = notify
    assert dest == owner.address
    assert req.headers.get("content-type") == "application/simple-message-summary"
    assert req.uri.port == owner.port
    before = len(_notifies(office, "101"))
    owner.register()  # a refresh: nothing new
    assert len(_notifies(office, "101")) == before
    office.restart()
    office.phone("101")  # registers anew after the restart: the lamp again
    assert "Voice-Message: 1/0 (0/0)" in _notifies(office, "101")[-1]
    assert _notifies(office, "102") == []  # no mailbox: never a NOTIFY


def _listen(office: Office, number: str, code: str, pin: str | None) -> Outgoing:
    call = office.phone(number).call(code)
    assert call.status == 200, call.status
    if pin is not None:
        office.advance(1)
        call.keys(pin + "#")
    office.advance(1)
    return call


def test_listen_save_delete_and_mwi(office: Office) -> None:
    caller = office.phone("102")
    _leave(office, caller.call("*96100"))
    _leave(office, caller.call("*96100"))
    (first, _m1), (second, _m2) = _box(office, "100")
    call = _listen(office, "100", "*97", None)  # 100 has no PIN: its own phone is enough
    assert "vm-enter-password" not in PLAYED
    assert "number-2" in PLAYED and "vm-new-messages" in PLAYED
    call.keys("1")  # play
    office.advance(1)
    call.keys("9")  # save the first
    office.advance(2)
    call.keys("7")  # delete the second
    office.advance(3)
    assert [(k, v["folder"]) for k, v in _box(office, "100")] == [(first, "old")]
    assert not _wav(office, f"100-{second}").exists()
    assert _wav(office, f"100-{first}").exists()
    assert "vm-message-saved" in PLAYED and "vm-message-deleted" in PLAYED
    assert "Voice-Message: 0/1 (0/0)" in _notifies(office, "100")[-1]
    assert "Messages-Waiting: no" in _notifies(office, "100")[-1]
    call.keys("#")
    office.advance(3)
    assert call.state == "ended"
    assert office.left_behind() == []


def test_the_envelope_says_who_called_and_how_long(office: Office) -> None:
    _leave(office, office.phone("102").call("*96100"), seconds=3.0)
    call = _listen(office, "100", "*97", None)
    call.keys("1")
    office.advance(1)
    PLAYED.clear()
    call.keys("3")
    office.advance(1)
    assert PLAYED[:4] == ["vm-message-from", "digit-1", "digit-0", "digit-2"]
    assert PLAYED[4] == "vm-received-on" and "vm-at" in PLAYED
    length = PLAYED.index("vm-length")
    assert PLAYED[length + 1 : length + 3] == ["number-3", "vm-seconds"]
    office.advance(20)  # the envelope, then the keys again: not the message
    assert PLAYED[length + 3] == "vm-message-menu"
    assert not any(p.startswith("rec:") for p in PLAYED)
    call.hang_up()
    office.advance(6)
    assert office.left_behind() == []


def test_pin_wrong_then_right_and_any_box(office: Office) -> None:
    _leave(office, office.phone("102").call("*96101"))
    call = _listen(office, "101", "*97", "1111")  # 101 has a PIN: asked even at home
    assert "vm-login-incorrect" in PLAYED
    call.keys("4711#")
    office.advance(1)
    assert "vm-main-menu" in PLAYED
    call.hang_up()
    office.advance(6)
    PLAYED.clear()
    call = _listen(office, "102", "*98101", "4711")  # any phone, with the PIN
    assert "vm-main-menu" in PLAYED and "vm-login-incorrect" not in PLAYED
    call.hang_up()
    office.advance(6)
    assert office.phone("102").call("*98100").status == 403  # 100 has no PIN
    assert office.phone("102").call("*97").status == 404  # 102 has no box
    assert office.left_behind() == []


def test_a_message_survives_a_restart(office: Office) -> None:
    _leave(office, office.phone("102").call("*96100"))
    ((msg_id, meta),) = _box(office, "100")
    office.restart()
    assert _box(office, "100") == [(msg_id, meta)]
    PLAYED.clear()
    call = _listen(office, "100", "*97", None)
    assert "number-1" in PLAYED and "vm-new-message" in PLAYED
    call.keys("1")
    office.advance(1)
    assert f"rec:100-{msg_id}" in PLAYED
    call.hang_up()
    office.advance(6)


def test_the_owner_records_a_greeting_callers_hear(office: Office) -> None:
    call = _listen(office, "100", "*97", None)
    call.keys("0")
    office.advance(1)
    call.keys("1")  # the unavailable greeting
    office.advance(2)
    _talk(office, call, 1.5)
    call.keys("#")
    office.advance(2)
    assert _wav(office, "greet-100-unavail").exists()
    call.hang_up()
    office.advance(6)
    PLAYED.clear()
    call = office.phone("102").call("*96100")
    office.advance(1)
    assert PLAYED[0] == "rec:greet-100-unavail"
    call.hang_up()
    office.advance(6)
    assert office.left_behind() == []


def _record_greeting(office: Office, key: str, seconds: float) -> None:
    call = _listen(office, "100", "*97", None)
    call.keys("0")
    office.advance(1)
    call.keys(key)
    office.advance(2)
    if seconds:
        _talk(office, call, seconds)
    call.keys("#")
    office.advance(2)
    call.hang_up()
    office.advance(6)


def test_the_name_and_the_temporary_greeting(office: Office) -> None:
    _record_greeting(office, "3", 1.5)  # the name: said instead of the number
    PLAYED.clear()
    call = office.phone("102").call("*96100")
    office.advance(1)
    assert PLAYED[:2] == ["vm-extension", "rec:greet-100-name"]
    call.hang_up()
    office.advance(6)
    _record_greeting(office, "4", 1.5)  # temporary: for every call while it exists
    PLAYED.clear()
    call = office.phone("102").call("*96100")
    office.advance(1)
    assert PLAYED[0] == "rec:greet-100-temp"
    call.hang_up()
    office.advance(6)
    _record_greeting(office, "4", 0)  # nothing said: the temporary greeting goes
    assert "vm-greeting-removed" in PLAYED
    assert not _wav(office, "greet-100-temp").exists()
    PLAYED.clear()
    call = office.phone("102").call("*96100")
    office.advance(1)
    assert PLAYED[:2] == ["vm-extension", "rec:greet-100-name"]
    call.hang_up()
    office.advance(6)
    assert office.left_behind() == []


@pytest.mark.fuzz
@fuzz_settings(200)
@given(new=st.integers(-10, 10**7), old=st.integers(-10, 10**7))
def test_the_summary_body_is_always_well_formed(new: int, old: int) -> None:
    body = summary(new, old, "sip:100@pbx.local").decode()
    lines = body.split("\r\n")
    assert lines[0] == f"Messages-Waiting: {'yes' if min(max(new, 0), MAX_COUNT) else 'no'}"
    n, o = lines[2].removeprefix("Voice-Message: ").removesuffix(" (0/0)").split("/")
    assert 0 <= int(n) <= MAX_COUNT and 0 <= int(o) <= MAX_COUNT and body.endswith("\r\n")


@pytest.mark.fuzz
@fuzz_settings(200)
@given(arg=st.text("0123456789*#", max_size=40))
def test_any_box_argument_is_refused_or_served(arg: str) -> None:
    """`*98` + whatever was dialled: a box that exists with a PIN is opened, anything
    else refused with 403/404, never an exception."""
    from pbx_core.features.api import Answer, CallInfo, Dial, Reject

    class Ctx:
        def banned(self, key: str) -> bool:
            return False

        def extension(self, number: str) -> dict[str, Any] | None:
            return {"voicemail": 1, "vm_pin": "12"} if number == "100" else None

        def rows(self, table: str) -> tuple[dict[str, Any], ...]:
            return ()

        def state_get(self, key: str) -> Any:
            return None

    call = CallInfo("100@pbx.local", "100", "internal", "*98" + arg, True)
    got = voicemail.FEATURE.dial(Ctx(), Dial(call, "100@pbx.local", "100", "*98", arg))  # type: ignore[arg-type]
    if arg in ("100", ""):
        assert isinstance(got, Answer)
    else:
        assert isinstance(got, Reject) and got.status in (403, 404)
    assert len(mb.digit_prompts(arg)) == len(arg)
