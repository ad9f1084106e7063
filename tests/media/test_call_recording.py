"""Recording an anchored 2-party call (AnchoredCall.record): one WAV with both phones,
judged by its audio (440 Hz sent by the caller, 1000 Hz by the callee, each measured
in the file), while the relay goes on untouched; the file appears whole when the
recording stops or the call closes; a recording that reaches its maximum stops
listening by itself."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pbx_core.media.codecs import g711
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.recorder import Recording
from pbx_core.media.wav import parse_wav
from tests.media.phones import Phone, port_of, sdp, until

AMPLITUDE = 6000


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())


def sine(hz: float, n: int, start: int) -> bytes:
    return struct.pack(
        f"<{n}h",
        *(int(AMPLITUDE * math.sin(2 * math.pi * hz * (start + i) / 8000)) for i in range(n)),
    )


def level(pcm: bytes, hz: float) -> float:
    """The amplitude of a tone at ``hz`` in 16-bit PCM (Goertzel: |X| = A·N/2)."""
    values = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    if not values:
        return 0.0
    return 2 * math.sqrt(max(goertzel_power(values, hz), 0.0)) / len(values)


class Rig:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.engine = MediaEngine(loop, "127.0.0.1", 36000, 36099)
        self.a = Phone(loop)
        self.b = Phone(loop)
        self.call, offer = self.engine.anchor(sdp(self.a.port, "0 101"))
        answer = self.call.answer(sdp(self.b.port, "8 101"))  # transcoded: µ-law / A-law
        self.pa = port_of(answer)
        self.pb = port_of(offer)
        self.pos = 0

    async def talk(self, seconds: float, a_hz: float | None, b_hz: float | None) -> None:
        t0 = self.loop.time()
        for k in range(int(seconds * 50)):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - self.loop.time()))
            if a_hz is not None:
                self.a.send(self.pa, g711.ulaw_encode(sine(a_hz, 160, self.pos)), pt=0)
            if b_hz is not None:
                self.b.send(self.pb, g711.alaw_encode(sine(b_hz, 160, self.pos)), pt=8)
            self.pos += 160

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.engine.close()


def test_both_parties_are_in_one_file_and_the_relay_goes_on(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        done: list[Recording] = []
        path = tmp_path / "call.wav"
        rig.call.record(path, "ulaw", on_done=done.append)
        assert rig.call.recording and not path.exists()
        assert (tmp_path / "call.wav.part").exists()
        await rig.talk(1.5, 440.0, 1000.0)
        await asyncio.sleep(0.1)
        # The relay is untouched: each phone got the other's packets, in its codec.
        assert (rig.call.caller.mode, rig.call.callee.mode) == ("relay", "relay")
        assert sum(1 for p, _ in rig.b.received if p.payload_type == 8) > 50
        assert sum(1 for p, _ in rig.a.received if p.payload_type == 0) > 50
        assert rig.call.stop_record() == path
        assert not rig.call.recording and rig.call.caller._mix is None
        assert [r.reason for r in done] == ["stopped"]
        wav = parse_wav(path.read_bytes())
        assert wav.format == "ulaw"
        assert 1.0 < wav.seconds < 2.0
        middle = wav.pcm[len(wav.pcm) // 4 : 3 * len(wav.pcm) // 4]
        assert level(middle, 440.0) > 2000, level(middle, 440.0)  # the caller
        assert level(middle, 1000.0) > 2000, level(middle, 1000.0)  # the callee
        assert level(middle, 700.0) < 300  # and nothing else
        rig.close()

    run(body)


def test_one_party_alone_is_recorded_alone(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        path = tmp_path / "one.wav"
        rig.call.record(path)
        await rig.talk(1.0, None, 1000.0)
        rig.call.stop_record()
        middle = parse_wav(path.read_bytes()).pcm
        assert level(middle, 1000.0) > 1000 and level(middle, 440.0) < 300
        rig.close()

    run(body)


def test_closing_the_call_finishes_the_file(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        done: list[Recording] = []
        path = tmp_path / "closed.wav"
        rig.call.record(path, on_done=done.append)
        await rig.talk(0.5, 440.0, None)
        rig.call.close()
        assert [r.reason for r in done] == ["stopped"] and done[0].path == path
        assert path.exists() and not (tmp_path / "closed.wav.part").exists()
        assert parse_wav(path.read_bytes()).seconds > 0.2
        rig.close()

    run(body)


def test_the_maximum_ends_it_and_the_legs_stop_decoding(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        done: list[Recording] = []
        rig.call.record(tmp_path / "max.wav", max_seconds=0.3, on_done=done.append)
        await rig.talk(0.6, 440.0, 1000.0)
        assert await until(lambda: bool(done))
        assert done[0].reason == "max" and not rig.call.recording
        assert rig.call.caller._mix is None and rig.call.callee._mix is None
        assert abs(parse_wav((tmp_path / "max.wav").read_bytes()).seconds - 0.3) < 0.01
        rig.close()

    run(body)


def test_refusals(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        with pytest.raises(MediaError):
            rig.call.record(tmp_path / "missing" / "x.wav")  # no such directory
        assert not rig.call.recording and rig.call.caller._mix is None
        rig.call.record(tmp_path / "x.wav")
        with pytest.raises(MediaError):
            rig.call.record(tmp_path / "y.wav")  # already recording
        rig.call.close()
        with pytest.raises(MediaError):
            rig.call.record(tmp_path / "z.wav")  # closed
        rig.close()

    run(body)


def test_beeps_reach_one_phone_and_the_relay_comes_back(tmp_path: Path) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        rig.call.beep("caller", "on")
        assert rig.call.caller.mode == "source"
        await until(lambda: rig.call.caller.mode == "relay", timeout=2.0)
        assert rig.call.caller.mode == "relay"
        assert len(rig.a.received) >= 10  # 240 ms of beep
        with pytest.raises(MediaError):
            rig.call.beep("caller", "fanfare")
        rig.close()

    run(body)
