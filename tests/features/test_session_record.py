"""Session.record on the office harness (pbx/features.py LocalSession.record over the
media engine's recorder): a test feature's application records the caller into its
own recording, which ends at `#`, on silence after speech, at the maximum, or when
the caller hangs up (what was said is kept); names that could leave the feature's
directory are refused; `play("rec:NAME")` plays it back."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx_core.features.api import Answer, Context, Decision, Dial, Feature, Recorded, Session
from pbx_core.features.registry import FEATURES
from pbx_core.media.codecs import CODECS
from pbx_core.pbx.features import APP_GRACE
from tests.harness.office import DOMAIN, Office, Outgoing, message, offices

RESULTS: list[Recorded | str] = []


@dataclass(frozen=True)
class Memo(Feature):
    """*58NAME records NAME (then plays it back); *58 alone asks for a bad name."""

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.code == "*56":
            return Answer(_stubborn, "stubborn")
        name = dial.arg or "../escape"

        async def app(session: Session) -> None:
            got = await session.record(name, max_seconds=3.0, silence_seconds=1.0)
            RESULTS.append(got)
            if got.reason in ("key", "silence", "max"):
                await session.play(f"rec:{name}")
                RESULTS.append("played")
                RESULTS.append(str(session.delete_recording(name)))
                session.hangup()

        return Answer(app, "memo")


async def _stubborn(session: Session) -> None:
    """An application that never looks at its session."""
    while True:
        await asyncio.sleep(0.5)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    RESULTS.clear()
    memo = Memo(name="memo", codes={"*58": "memo", "*56": "an app that ignores hang-ups"})
    yield from offices(tmp_path, features=(*FEATURES, memo))


def _frame(loud: bool) -> bytes:
    if not loud:
        return b"\xff" * 160  # µ-law silence
    pcm = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160)
    )
    return CODECS["PCMU"].encode(pcm)


def _talk(office: Office, call: Outgoing, frames: int, loud: bool = True) -> None:
    assert call.rtp is not None
    for _ in range(frames):
        call.rtp.audio(call.pbx_port, _frame(loud))
        office.advance(0.02)
        office.settle_io(2)


def _file(office: Office, name: str) -> Path:
    return office.tmp / "state" / "recordings" / "memo" / f"{name}.wav"


def test_record_ends_at_the_key_and_plays_back(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*58greeting")
    assert call.status == 200
    _talk(office, call, 50)  # a second of speech
    call.keys("#")
    office.advance(0.5)
    (got, *_rest) = RESULTS
    assert isinstance(got, Recorded)
    assert (got.name, got.reason, got.digit) == ("greeting", "key", "#")
    assert 0.6 <= got.seconds <= 1.3
    assert _file(office, "greeting").exists()
    office.advance(5)
    assert RESULTS[1:] == ["played", "True"]  # played back, then deleted
    assert not _file(office, "greeting").exists()
    assert office.left_behind() == []


def test_record_ends_on_silence_after_speech(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*58quiet")
    _talk(office, call, 40)
    _talk(office, call, 80, loud=False)  # 1.6 s of silence: it ends after 1 s of it
    office.advance(0.5)
    got = RESULTS[0]
    assert isinstance(got, Recorded) and got.reason == "silence"
    assert got.seconds <= 1.0  # the silence it waited for is cut off
    office.advance(5)
    assert office.left_behind() == []


def test_hanging_up_keeps_what_was_said(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*58message")
    _talk(office, call, 30)
    call.hang_up()
    office.advance(2)  # the application finishes within its grace
    got = RESULTS[0]
    assert isinstance(got, Recorded) and got.reason == "hangup"
    assert 0.3 <= got.seconds <= 0.8
    assert _file(office, "message").exists()
    assert office.left_behind() == []


def test_a_name_that_could_leave_the_directory_is_refused(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*58")  # the app asks for ../escape
    office.advance(1)
    got = RESULTS[0]
    assert isinstance(got, Recorded) and got.reason == "error"
    assert not (office.tmp / "state" / "recordings" / "escape.wav").exists()
    call.hang_up()
    assert office.left_behind() == []


def test_an_application_that_ignores_the_hang_up_is_cancelled_after_its_grace(
    office: Office,
) -> None:
    a = office.phone("100")
    call = a.call("*56")
    assert call.status == 200
    call.hang_up()
    office.advance(APP_GRACE - 1)
    assert office.engine.features.running_apps == 1  # its grace
    office.advance(2)
    assert office.left_behind() == []


def _info(office: Office, call: Outgoing, body: bytes, ctype: str, cseq: int) -> int | None:
    phone = call.phone
    req = message(
        f"""INFO sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKinfo{phone.port}x{cseq}
From: {call.invite.headers.get("from")}
To: <sip:{call.number}@{DOMAIN}>;tag={call.final.to.tag}
Call-ID: {call.call_id}
CSeq: {cseq} INFO
Max-Forwards: 70""",
        body,
        ctype,
    )
    key = ("INFO", call.call_id, cseq)
    office.run(office.engine.on_request, req, phone.address, key, None)
    return office.stack.final(key)


def test_a_key_press_in_sip_info_ends_a_recording(office: Office) -> None:
    # Phones set to SIP INFO DTMF (Yealink "SIP INFO", Snom "SIP INFO only").
    a = office.phone("100")
    call = a.call("*58info")
    _talk(office, call, 30)
    assert _info(office, call, b"hello", "text/plain", 20) == 415  # nothing else is read
    status = _info(office, call, b"Signal=#\r\nDuration=160\r\n", "application/dtmf-relay", 21)
    assert status == 200
    office.advance(0.5)
    got = RESULTS[0]
    assert isinstance(got, Recorded) and (got.reason, got.digit) == ("key", "#")
    office.advance(5)
    assert office.left_behind() == []
