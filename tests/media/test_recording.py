"""Recording for voicemail on loopback (a fake phone's real UDP socket): a recording
ends on silence after speech (trimmed of the silence it waited for), on silence
alone after ``initial_silence``, on a terminator key, at ``max_seconds``, at
``stop_record`` or when the leg closes, says why in its ``Recording``, and its file
appears only complete."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pbx_core.media.codecs import g711
from pbx_core.media.dtmf import DTMF_FREQUENCIES, rfc4733_packets
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.events import DtmfEvent
from pbx_core.media.leg import MediaLeg
from pbx_core.media.recorder import Recording
from pbx_core.media.wav import parse_wav
from tests.media.phones import Phone, port_of, sdp, until


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())


def speech(frames: int, amplitude: int = 8000) -> list[bytes]:
    """µ-law 20 ms frames of a 440 Hz tone (loud: -12 dBFS RMS)."""
    pcm = struct.pack(
        f"<{160 * frames}h",
        *(int(amplitude * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(160 * frames)),
    )
    enc = g711.ulaw_encode(pcm)
    return [enc[i : i + 160] for i in range(0, len(enc), 160)]


def hush(frames: int, amplitude: int = 40) -> list[bytes]:
    """µ-law frames of faint noise (about -58 dBFS: 'silence' to the default)."""
    return speech(frames, amplitude)


class Rig:
    def __init__(self, loop: asyncio.AbstractEventLoop, codecs: str = "0 101") -> None:
        self.engine = MediaEngine(loop, "127.0.0.1", 35200, 35299)
        self.phone = Phone(loop)
        leg, answer = self.engine.endpoint(sdp(self.phone.port, codecs))
        self.leg: MediaLeg = leg
        self.port = port_of(answer)
        self.results: list[Recording] = []

    async def send(self, frames: list[bytes]) -> None:
        for i, f in enumerate(frames):
            self.phone.send(self.port, f)
            if i % 20 == 19:
                await asyncio.sleep(0.005)  # let the leg drain its socket

    def close(self) -> None:
        self.phone.close()
        self.engine.close()


def wav_seconds(path: Path) -> float:
    return parse_wav(path.read_bytes()).seconds


def test_ends_on_silence_after_speech_trimmed(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "vm.wav"
        rig.leg.record(path, silence_seconds=1.0, on_done=rig.results.append)
        await rig.send(hush(10) + speech(25))  # 0.2 s quiet, 0.5 s "speech"
        await rig.send(hush(40))  # 0.8 s: not enough yet
        await asyncio.sleep(0.05)
        assert rig.results == [] and not path.exists()
        assert path.with_name("vm.wav.part").exists()
        await rig.send(hush(20))
        assert await until(lambda: rig.results)
        r = rig.results[0]
        assert r.reason == "silence" and r.path == path and r.digit is None
        assert r.seconds == pytest.approx(0.7)  # the second of silence cut off
        assert wav_seconds(path) == pytest.approx(0.7)
        assert not path.with_name("vm.wav.part").exists()
        assert rig.leg.stop_record() is None  # already ended
        rig.close()

    run(body)


def test_silence_before_speech_needs_initial_silence(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "quiet.wav"
        # Without speech, trailing silence does not end it; initial_silence does.
        rig.leg.record(path, silence_seconds=0.5, initial_silence=2.0, on_done=rig.results.append)
        await rig.send(hush(75))  # 1.5 s
        await asyncio.sleep(0.05)
        assert rig.results == []
        await rig.send(hush(30))
        assert await until(lambda: rig.results)
        r = rig.results[0]
        assert r.reason == "silence" and r.seconds == 0.0 and wav_seconds(path) == 0.0
        rig.close()

    run(body)


def test_ends_on_terminator_key(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        events: list[DtmfEvent] = []
        rig.leg.on_dtmf(events.append)
        path = tmp_path / "key.wav"
        rig.leg.record(path, silence_seconds=5.0, terminators="*#", on_done=rig.results.append)
        await rig.send(speech(30))
        for _, payload, marker in rfc4733_packets("1", 60):  # not a terminator
            rig.phone.send(rig.port, payload, pt=101, marker=marker, ts=90000)
        await asyncio.sleep(0.05)
        assert rig.results == [] and [e.digit for e in events] == ["1"]
        for _, payload, marker in rfc4733_packets("#", 60):
            rig.phone.send(rig.port, payload, pt=101, marker=marker, ts=99000)
        assert await until(lambda: rig.results)
        r = rig.results[0]
        assert (r.reason, r.digit) == ("key", "#")
        assert r.seconds == pytest.approx(0.6) and wav_seconds(path) == pytest.approx(0.6)
        assert [e.digit for e in events] == ["1", "#"]  # still reported as a key press
        rig.close()

    run(body)


def test_ends_at_max_seconds_and_on_close(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "max.wav"
        rig.leg.record(path, fmt="ulaw", max_seconds=0.3, on_done=rig.results.append)
        await rig.send(speech(50))
        assert await until(lambda: rig.results)
        r = rig.results[0]
        assert r.reason == "max" and r.seconds == pytest.approx(0.3)
        audio = parse_wav(path.read_bytes())
        assert audio.format == "ulaw" and audio.seconds == pytest.approx(0.3)
        await asyncio.sleep(0.05)  # the rest of the burst arrives while not recording
        # A hang-up: the leg closes and the recording so far is kept.
        path2 = tmp_path / "hangup.wav"
        rig.leg.record(path2, silence_seconds=3.0, on_done=rig.results.append)
        await rig.send(speech(20))
        await asyncio.sleep(0.05)
        assert not path2.exists()
        rig.leg.close()
        assert rig.results[1].reason == "closed" and rig.results[1].seconds == pytest.approx(0.4)
        assert wav_seconds(path2) == pytest.approx(0.4)
        rig.close()

    run(body)


def test_stop_record_and_bad_options(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "stop.wav"
        for bad in (
            {"terminators": "x"},
            {"silence_seconds": -1.0},
            {"max_seconds": 0.0},
            {"initial_silence": 1e9},
            {"silence_db": 3.0},
            {"fmt": "mp3"},
        ):
            with pytest.raises(MediaError):
                rig.leg.record(path, **bad)  # type: ignore[arg-type]
        assert list(tmp_path.iterdir()) == []  # nothing left behind
        with pytest.raises(MediaError):
            rig.leg.record(tmp_path / "no" / "such" / "dir.wav")
        rig.leg.record(path, on_done=rig.results.append)
        with pytest.raises(MediaError, match="already"):
            rig.leg.record(tmp_path / "other.wav")
        await rig.send(speech(10))
        await asyncio.sleep(0.05)
        assert rig.leg.stop_record() == path
        assert rig.results[0].reason == "stopped"
        assert rig.results[0].seconds == pytest.approx(0.2)
        rig.close()

    run(body)


def test_info_and_inband_terminators(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "info.wav"
        rig.leg.record(path, terminators="#", on_done=rig.results.append)
        await rig.send(speech(10))
        await asyncio.sleep(0.05)
        assert rig.engine.dtmf_info_endpoint(rig.leg, "application/sdp", b"v=0") is None
        ev = rig.engine.dtmf_info_endpoint(
            rig.leg, "application/dtmf-relay", b"Signal=#\r\nDuration=100\r\n"
        )
        assert ev is not None and ev.digit == "#"
        assert [(r.reason, r.digit) for r in rig.results] == [("key", "#")]
        assert rig.results[0].seconds == pytest.approx(0.2)
        rig.close()
        # A phone without telephone-event: the key comes in-band.
        rig = Rig(asyncio.get_running_loop(), "0")
        path = tmp_path / "inband.wav"
        rig.leg.record(path, terminators="*#", on_done=rig.results.append)
        pcm = _dtmf_pcm("*", 120) + bytes(1600)
        enc = g711.ulaw_encode(pcm)
        await rig.send(speech(10) + [enc[i : i + 160] for i in range(0, len(enc), 160)])
        assert await until(lambda: rig.results)
        assert (rig.results[0].reason, rig.results[0].digit) == ("key", "*")
        rig.close()

    run(body)


def _dtmf_pcm(digit: str, ms: int) -> bytes:
    low, high = DTMF_FREQUENCIES[digit]
    n = 8 * ms
    return struct.pack(
        f"<{n}h",
        *(
            int(
                6000
                * (math.sin(2 * math.pi * low * i / 8000) + math.sin(2 * math.pi * high * i / 8000))
            )
            for i in range(n)
        ),
    )
