"""Voice message broadcasting (features/broadcast) on the office harness: a sender
records once, every member is called (a few at a time, auto-answer when the group
says so); who answers hears it, who does not (busy, no answer, not registered) gets
it as a voicemail message (Context.deposit) with MWI; anyone else hears a refusal;
`pbx status` shows the progress and the CDR rows say who heard it."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx_core.features import broadcast
from pbx_core.media.codecs import CODECS
from pbx_core.pbx import features as host
from pbx_core.pbx.calls import Call
from pbx_core.pbx.cdr import Cdr
from tests.harness.office import (
    EXTENSION_HEADER,
    Office,
    Outgoing,
    extension_row,
    offices,
    subscribers,
)

PLAYED: list[str] = []
HEADER = EXTENSION_HEADER + " voicemail(int) vm_pin(string,null)"


def _ext(n: int, number: str, vm: bool) -> str:
    return extension_row(n, number, ring_timeout=10) + f":{int(vm)}:"


TABLES = {
    "subscriber": subscribers("100", "101", "102", "103", "104"),
    "pbx_extension": [
        HEADER,
        _ext(1, "100", False),
        _ext(2, "101", True),
        _ext(3, "102", True),
        _ext(4, "103", True),
        _ext(5, "104", False),
    ],
    "pbx_broadcast_group": [
        "number(string) name(string,null) members(string) senders(string) auto_answer(int)",
        "700:everyone:101,102,103,104:100:1",
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


def _record(office: Office, call: Outgoing, seconds: float = 2.0) -> None:
    assert call.status == 200, call.status
    office.advance(3)  # the prompt and the tone: beeps in tests
    assert call.rtp is not None
    for _ in range(int(seconds / 0.02)):
        call.rtp.audio(call.pbx_port, _frame())
        office.advance(0.02)
        office.settle_io(2)
    call.keys("#")
    office.advance(3)


def _ended(office: Office) -> list[Call]:
    ended: list[Call] = []
    before = office.engine.calls.on_end

    def on_end(call: Call) -> None:
        ended.append(call)
        if before is not None:
            before(call)

    office.engine.calls.on_end = on_end
    return ended


def _status(office: Office) -> list[dict[str, Any]]:
    return list(office.engine.features.status()["broadcast"]["broadcasts"])


def test_members_hear_it_or_find_it_in_their_mailbox(office: Office) -> None:
    sender = office.phone("100")
    hears = office.phone("101")
    busy = office.phone("102", mode="busy")
    away = office.phone("103", mode="ring")  # does not answer
    office.phone("104", register=False)  # not registered, no mailbox
    ended = _ended(office)
    out = sender.call("700")
    _record(office, out)
    assert "broadcast-sent" in PLAYED
    (job,) = _status(office)
    assert job["sender"] == "100" and job["running"]
    inc = hears.incoming[0]
    assert any("answer-after=0" in v for v in inc.header("call-info"))  # auto_answer
    assert "700" in inc.invite.headers.get("from")
    office.advance(5)  # 101 hears the 2 s message
    assert any(p == "rec:bc-700" for p in PLAYED)
    office.advance(broadcast.MEMBER_RING + 1)  # 103 rings out
    assert away.incoming[0].state == "cancelled"
    (job,) = _status(office)
    assert not job["running"]
    assert job["members"] == {
        "101": "heard",
        "102": "mailbox",
        "103": "mailbox",
        "104": "missed",
    }
    for box in ("102", "103"):
        ((msg_id, meta),) = office.engine.features.messages(box)
        assert meta["folder"] == "new" and meta["caller"] == "100"
        assert meta["broadcast"] == "700" and meta["duration"] > 1
        wav = office.tmp / "state" / "recordings" / "voicemail" / f"{box}-{msg_id}.wav"
        assert wav.stat().st_size > 8000  # the audio is where voicemail plays it from
    assert office.engine.features.messages("101") == ()
    rows = {Cdr.from_call(c).caller.partition("@")[0]: Cdr.from_call(c) for c in ended}
    assert rows["101"].callee == "broadcast:700" and rows["101"].disposition == "ANSWERED"
    assert rows["102"].disposition == "BUSY" and rows["103"].disposition == "NO ANSWER"
    assert office.left_behind() == []
    del busy


def test_no_more_than_a_few_ring_at_once(office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broadcast, "AT_ONCE", 2)
    sender = office.phone("100")
    phones = [office.phone(n, mode="ring") for n in ("101", "102", "103", "104")]
    out = sender.call("700")
    _record(office, out)
    assert sum(len(p.incoming) for p in phones) == 2
    office.advance(broadcast.MEMBER_RING + 1)
    assert sum(len(p.incoming) for p in phones) == 4  # the next two, once the first rang out
    office.advance(broadcast.MEMBER_RING + 1)
    (job,) = _status(office)
    assert not job["running"]
    assert office.left_behind() == []


def test_a_member_hanging_up_early_gets_it_in_the_mailbox_too(office: Office) -> None:
    sender = office.phone("100")
    member = office.phone("101")
    for n in ("102", "103", "104"):
        office.phone(n, register=False)
    out = sender.call("700")
    _record(office, out, seconds=4)
    member.incoming[0].bye()  # before the 4 s message is over
    office.advance(6)
    (job,) = _status(office)
    assert job["members"] == {
        "101": "heard, mailbox",
        "102": "mailbox",  # not registered, with a mailbox
        "103": "mailbox",
        "104": "missed",  # not registered, no mailbox
    }
    assert len(office.engine.features.messages("101")) == 1
    assert office.left_behind() == []


def test_only_senders_may_broadcast(office: Office) -> None:
    other = office.phone("101")
    office.phone("102")
    out = other.call("700")
    assert out.status == 200  # an announcement, never silence
    office.advance(3)
    assert "broadcast-refused" in PLAYED
    assert out.state == "ended"
    assert _status(office) == []
    assert office.left_behind() == []


def test_nothing_recorded_calls_nobody(office: Office) -> None:
    sender = office.phone("100")
    member = office.phone("101")
    out = sender.call("700")
    assert out.status == 200
    office.advance(3)
    out.keys("#")  # nothing said
    office.advance(3)
    assert "broadcast-nothing" in PLAYED
    assert member.incoming == []
    assert office.left_behind() == []


def test_the_voicemail_menu_plays_a_deposited_broadcast(office: Office) -> None:
    sender = office.phone("100")
    for n in ("101", "103", "104"):
        office.phone(n, register=False)
    owner = office.phone("102", mode="busy")
    out = sender.call("700")
    _record(office, out)
    office.advance(2)
    ((msg_id, _meta),) = office.engine.features.messages("102")
    owner.mode = "answer"
    PLAYED.clear()
    listen = owner.call("*97")  # 102 has no PIN: its own phone is enough
    assert listen.status == 200
    office.advance(1)
    assert "vm-new-message" in PLAYED  # one new message
    listen.keys("1")  # play it
    office.advance(3)
    assert f"rec:102-{msg_id}" in PLAYED
    listen.hang_up()
    office.advance(6)
    assert office.left_behind() == []


def test_deposits_count_against_the_voicemail_quota_and_a_full_box_refuses(
    office: Office,
) -> None:
    """A deposited broadcast is a voicemail message like any other: it counts in
    the card's quota (`vm_quota_minutes`), a full box refuses it ("missed"), and the
    group's own file is removed once delivered (the mailboxes keep their links)."""
    sender = office.phone("100")
    office.phone("101", register=False)
    office.phone("102", register=False)
    office.phone("103", register=False)
    # 103's box is full (vm_max_messages: 100 by default).
    for n in range(100):
        office.engine.features.set_message("103", f"{n:013d}", {"folder": "old", "duration": 0})
    before = office.engine.features.status()["voicemail"]["used_seconds"]
    out = sender.call("700")
    _record(office, out, seconds=2)
    office.advance(3)
    (job,) = _status(office)
    assert job["members"]["101"] == "mailbox" and job["members"]["102"] == "mailbox"
    assert job["members"]["103"] == "missed"
    used = office.engine.features.status()["voicemail"]["used_seconds"]
    assert used - before >= 2 * 1.5, (before, used)  # two messages of about 2 s
    assert not (office.tmp / "state" / "recordings" / "broadcast" / "bc-700.wav").exists()
    for box in ("101", "102"):
        ((msg_id, _meta),) = office.engine.features.messages(box)
        wav = office.tmp / "state" / "recordings" / "voicemail" / f"{box}-{msg_id}.wav"
        assert wav.stat().st_size > 8000
    assert office.left_behind() == []
