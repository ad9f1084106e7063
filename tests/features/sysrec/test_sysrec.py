"""System recordings on the office harness (features/sysrec + pbx_core/sysrec.py +
Session.play("sys:NAME")): an extension with a pbx_sysrec row records one with *77,
hears it back and keeps it on 1 (2 records again, nothing kept otherwise); others
get 403; *94 plays it; an application's `sys:NAME` plays it, a missing one is a
warning and a beep, never a crash."""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx_core import sysrec
from pbx_core.features.api import Answer, Context, Decision, Dial, Feature, Session
from pbx_core.features.registry import FEATURES
from pbx_core.media.codecs import CODECS
from tests.harness.office import Office, Outgoing, offices

PERMITTED = ["extension(string)", "100"]
HEARD: list[object] = []


@dataclass(frozen=True)
class Player(Feature):
    """*59NAME: an application that plays sys:NAME (as an IVR would)."""

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        async def app(session: Session) -> None:
            HEARD.append(session.has_recording(f"sys:{dial.arg}"))
            HEARD.append(await session.play(f"sys:{dial.arg}", "sys:../etc/passwd"))
            session.hangup()

        return Answer(app, "player")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    HEARD.clear()
    player = Player(name="player", codes={"*59": "play a system recording"})
    yield from offices(tmp_path, tables={"pbx_sysrec": PERMITTED}, features=(*FEATURES, player))


def _speech() -> bytes:
    pcm = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160)
    )
    return CODECS["PCMU"].encode(pcm)


def _talk(office: Office, call: Outgoing, frames: int) -> None:
    assert call.rtp is not None
    for _ in range(frames):
        call.rtp.audio(call.pbx_port, _speech())
        office.advance(0.02)
        office.settle_io(2)


def _system(office: Office) -> Path:
    return sysrec.folder(office.tmp / "state" / "recordings")


def _until(office: Office, done: Callable[[], bool]) -> None:
    """Let the loop run (no clock moving) until the store's write, done by a worker
    thread, has reported back and `done()` (or 10 s of real time)."""
    for _ in range(2000):
        office.settle_io(1)
        if done():
            return
        time.sleep(0.005)


def _record(office: Office, call: Outgoing, seconds: float) -> None:
    office.advance(2)  # the prompt (a beep here) and the tone
    _talk(office, call, int(seconds * 50))
    call.keys("#")
    office.advance(0.5)


def test_record_listen_and_keep(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*7712")
    assert call.status == 200
    _record(office, call, 1.5)
    office.advance(2.5)  # its playback and the review prompt
    assert not (_system(office) / "12.wav").exists()  # nothing kept before 1
    call.keys("1")
    office.advance(0.1)
    _until(office, (_system(office) / "12.wav").exists)
    # The worker thread renamed the file; its report back (then the "saved"
    # prompt, then the draft's removal) follows in real time: move the clock on
    # until the draft is gone (at most 10 s of real time under a loaded CI box).
    draft = office.tmp / "state" / "recordings" / "sysrec" / "draft-100.wav"
    for _ in range(200):
        office.advance(0.5)
        if not draft.exists():
            break
        time.sleep(0.05)
    kept = (_system(office) / "12.wav").read_bytes()
    assert kept[:4] == b"RIFF" and kept[:58] == sysrec.header(len(kept) - 58)
    assert 1.0 <= (len(kept) - 58) / 8000 <= 1.8
    assert not draft.exists()
    assert office.left_behind() == []
    HEARD.clear()
    assert office.phone("101").call("*5912").status == 200  # anyone's app plays it
    office.advance(5)
    assert HEARD == [True, None]


def test_recording_again_then_hanging_up_keeps_nothing(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*7713")
    _record(office, call, 1.5)
    office.advance(2.5)
    call.keys("2")  # record again
    _record(office, call, 1.5)
    call.hang_up()
    office.advance(6)
    assert not (_system(office) / "13.wav").exists()
    assert not (office.tmp / "state" / "recordings" / "sysrec" / "draft-100.wav").exists()
    assert office.left_behind() == []


def test_a_full_store_keeps_nothing_and_says_so(
    office: Office, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, "pbx.features")
    sysrec.save(_system(office), "5", sysrec.header(800) + b"\x80" * 800)
    monkeypatch.setattr(sysrec, "MAX_COUNT", 1)  # the store is full
    call = office.phone("100").call("*7712")
    _record(office, call, 1.5)
    office.advance(2.5)
    call.keys("1")
    office.advance(0.1)
    _until(office, lambda: "not kept" in caplog.text)
    assert "system recording '12' not kept: 1 system recordings already" in caplog.text
    office.advance(5)  # "could not be saved", then the end
    assert sorted(p.name for p in _system(office).iterdir()) == ["5.wav"]
    assert call.pbx_call is None and office.left_behind() == []


def test_only_with_the_permission(office: Office) -> None:
    b = office.phone("101")
    assert b.call("*7712").status == 403
    assert b.call("*9412").status == 403
    assert office.phone("100").call("*7712345678901").status == 404  # 13 digits: no name
    assert office.left_behind() == []


def test_a_missing_system_recording_is_a_warning_and_a_beep(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pbx.features")
    assert office.phone("101").call("*59nothing").status == 200
    office.advance(5)
    assert HEARD == [False, None]  # both played (beeps), the call went on to its end
    assert "system recording 'nothing' missing" in caplog.text
    assert office.left_behind() == []


def test_check_code_plays_it(office: Office) -> None:
    _system(office).mkdir(parents=True)
    sysrec.save(_system(office), "7", sysrec.header(800) + b"\x80" * 800)
    call = office.phone("100").call("*947")
    assert call.status == 200
    office.advance(4)
    assert call.pbx_call is None  # played, then hung up
    assert office.left_behind() == []
