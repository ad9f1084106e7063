"""Call recording on demand `*1` (features/recording + pbx/call_record.py) on the
office harness: `*1` starts recording (the extension stays in the call, both hear a
beep), `*1` again stops it and the file appears with the caller's audio in it; a
hang-up finishes the file and the CDR names it; the quota removes the oldest
recordings (and refuses when only recordings in progress fill it); a trunk caller's
`*1` does nothing."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.media.codecs import g711
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.wav import parse_wav
from pbx_core.pbx import call_record
from pbx_core.pbx.cdr import Cdr
from tests.harness.office import FACTORY, PROVIDER_TRUNK, Office, Outgoing, offices

MINUTE = 60 * call_record.BYTES_PER_SECOND


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def folder(office: Office) -> Path:
    return office.state_path.parent / "recordings" / "calls"


def settings_with(*lines: str) -> list[str]:
    return [*(FACTORY / "pbx_settings").read_text().splitlines(), *lines]


def talk(office: Office, call: Outgoing, seconds: float, hz: float = 440.0) -> None:
    """The caller's phone sends a tone, 20 ms a packet, as the clock moves."""
    assert call.rtp is not None
    for k in range(int(seconds * 50)):
        pcm = struct.pack(
            "<160h",
            *(int(6000 * math.sin(2 * math.pi * hz * (k * 160 + i) / 8000)) for i in range(160)),
        )
        call.rtp.audio(call.pbx_port, g711.ulaw_encode(pcm))
        office.settle_io(2)
        office.advance(0.02)


def level(pcm: bytes, hz: float) -> float:
    values = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    return 2 * math.sqrt(max(goertzel_power(values, hz), 0.0)) / max(1, len(values))


def test_star_one_starts_and_stops_a_recording_of_the_call(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    assert call.status == 200
    pbx_call = office.engine.calls.by_key[call.key]
    media = pbx_call.media
    assert media is not None
    call.keys("*1")
    assert media.recording and pbx_call.aside is None  # the extension stays in the call
    (name,) = pbx_call.recordings
    assert (folder(office) / (name + ".part")).exists()
    assert media.caller.playing and media.callee.playing  # the start beep, to both
    talk(office, call, 1.0)
    assert (media.caller.mode, media.callee.mode) == ("relay", "relay")  # talking again
    call.keys("*1")
    assert not media.recording
    wav = parse_wav((folder(office) / name).read_bytes())
    assert wav.format == "ulaw" and 0.8 < wav.seconds < 1.5
    assert level(wav.pcm, 440.0) > 1000  # the caller's tone is in it
    assert media.caller.playing  # the stop beep
    call.keys("*1")  # a second recording of the same call
    assert media.recording and len(pbx_call.recordings) == 2
    assert pbx_call.recordings[1].endswith("-2.wav")
    call.hang_up()
    assert a.byes == [] and len(b.byes) == 1
    assert office.left_behind() == []


def test_the_hang_up_finishes_the_file_and_the_cdr_names_it(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("*1")
    talk(office, call, 0.6)
    (inc,) = b.incoming
    inc.bye()  # the callee hangs up while recording
    (name,) = pbx_call.recordings
    assert (folder(office) / name).exists() and not (folder(office) / (name + ".part")).exists()
    assert parse_wav((folder(office) / name).read_bytes()).seconds > 0.4
    cdr = Cdr.from_call(pbx_call)
    assert cdr.recordings == (name,)
    assert Cdr.from_record(cdr.record()).recordings == (name,)
    assert office.left_behind() == []
    assert office.engine.calls.keys.recordings.active == {}
    status = office.engine.status()["recordings"]
    assert status["recording"] == 0 and status["kept"] == 1
    assert status["bytes"] == (folder(office) / name).stat().st_size


def _old_files(office: Office, sizes: list[int]) -> list[Path]:
    where = folder(office)
    where.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        p = where / f"2020010{i + 1}-000000-old-1.wav"
        with p.open("wb") as f:
            f.truncate(size)  # sparse: counts its size, takes no disk
        os.utime(p, (1_577_836_800 + i * 86400,) * 2)
        paths.append(p)
    return paths


def test_the_quota_removes_the_oldest_recordings(office: Office) -> None:
    office.reload("pbx_settings", settings_with("record_quota_minutes:1"))
    old = _old_files(office, [MINUTE // 4] * 4)  # a full minute already kept
    (folder(office) / "20200101-000000-cut-1.wav.part").write_bytes(b"x")  # a power cut's
    a, _b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("*1")
    assert office.engine.calls.keys.recordings.active
    # Room for 30 s of the new one: the two oldest went, the newer two stay.
    assert [p.exists() for p in old] == [False, False, True, True]
    assert not (folder(office) / "20200101-000000-cut-1.wav.part").exists()
    talk(office, call, 0.5)
    office.advance(31)  # the check at 30 s: 30 s more of it need the room of the rest
    assert pbx_call.media is not None and pbx_call.media.recording
    assert [p.exists() for p in old] == [False] * 4
    call.hang_up()
    assert office.left_behind() == []


def test_recordings_in_progress_over_the_quota_end_the_longest(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_record, "CHECK_EVERY", 5.0)
    office.reload("pbx_settings", settings_with("record_quota_minutes:1"))
    a, _b, c, _d = (office.phone(n) for n in ("100", "101", "102", "103"))
    first = a.call("101")
    first.keys("*1")  # t = 0
    office.advance(20)
    second = c.call("103")
    second.keys("*1")  # t = 20
    one, two = first.pbx_call, second.pbx_call
    assert one is not None and two is not None and one.media and two.media
    assert one.media.recording and two.media.recording
    office.advance(21)  # the check at 40 s: 40 s + 20 s in progress fill the minute
    assert not one.media.recording and two.media.recording
    # Ended, it is the oldest kept recording, and the minute is still full: removed.
    assert not (folder(office) / one.recordings[0]).exists()
    office.advance(36)  # 57 s in progress: no room for a new one, nothing to remove
    first.keys("*1")
    assert not one.media.recording and len(one.recordings) == 1
    assert two.media.recording
    office.advance(4)  # the second reaches the quota: the longest a recording can be
    assert not two.media.recording
    assert abs(parse_wav((folder(office) / two.recordings[0]).read_bytes()).seconds - 60) < 0.1
    first.hang_up()
    second.hang_up()
    assert office.left_behind() == []


def test_a_full_disk_refuses(office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_record, "free_bytes", lambda _folder: call_record.MIN_FREE)
    a, _b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("*1")
    assert pbx_call.media is not None and not pbx_call.media.recording
    assert pbx_call.recordings == []
    assert pbx_call.media.caller.playing and not pbx_call.media.callee.playing  # error beep
    call.hang_up()
    assert office.left_behind() == []


def test_a_trunk_callers_star_one_does_nothing(trunk_office: Office) -> None:
    office = trunk_office
    office.phone("100")
    provider = office.provider()
    call = provider.call("5550100", auth=False)  # the factory DID rings group 600
    assert call.status == 200
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("*1")
    assert pbx_call.media is not None and not pbx_call.media.recording
    assert pbx_call.recordings == [] and not folder(office).exists()
    call.hang_up()
    assert office.left_behind() == []


def test_a_transfer_ends_the_recording_with_the_call_it_recorded(office: Office) -> None:
    a, _b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    media = pbx_call.media
    assert media is not None
    call.keys("*1")
    talk(office, call, 0.4)
    call.keys("##")  # in-call blind transfer of 101 to 102
    office.advance(1)
    call.keys("102#")
    office.advance(1)
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert not media.recording and office.engine.calls.keys.recordings.active == {}
    (name,) = pbx_call.recordings
    assert parse_wav((folder(office) / name).read_bytes()).seconds > 0.3
    assert pbx_call.media is not None and not pbx_call.media.recording  # the new relay
    inc_c.bye()
    assert office.left_behind() == []
