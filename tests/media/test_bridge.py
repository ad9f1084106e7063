"""MixBridge on loopback with fake phones (real UDP sockets): each phone sends its
own tone, paced every 20 ms, and what each phone receives is judged by its audio
(the level of each tone in the decoded stream): everyone hears the others and not
itself, muted members are unheard, deaf ones hear silence, whispers and clips reach
only whom they should, removal and closing give the legs and ports back, and the
tick runs only while there are members."""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pbx_core.media.audio import Audio
from pbx_core.media.bridge import MAX_DELAY, TARGET, Member, MixBridge
from pbx_core.media.codecs import g711
from pbx_core.media.dtmf import goertzel_power, rfc4733_packets
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.events import DtmfEvent
from pbx_core.media.leg import MediaLeg
from pbx_core.media.wav import parse_wav
from tests.media.phones import Phone, port_of, sdp, until

FREQS = (500.0, 1000.0, 1500.0, 2000.0)
AMPLITUDE = 6000
HEARD = 2000  # estimated amplitude of a tone that is heard (sent at 6000)
UNHEARD = 300  # ... and of one that is not


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())


def sine(hz: float, n: int, amplitude: int = AMPLITUDE, start: int = 0) -> bytes:
    return struct.pack(
        f"<{n}h",
        *(int(amplitude * math.sin(2 * math.pi * hz * (start + i) / 8000)) for i in range(n)),
    )


def level(pcm: list[int], hz: float) -> float:
    """The amplitude of a tone at ``hz`` in ``pcm`` (Goertzel: |X| = A·N/2)."""
    if not pcm:
        return 0.0
    return 2 * math.sqrt(max(goertzel_power(pcm, hz), 0.0)) / len(pcm)


class Conf:
    """An engine, a bridge and phones on endpoint legs (one codec string each)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, codecs: list[str], **kw: int) -> None:
        self.loop = loop
        self.engine = MediaEngine(loop, "127.0.0.1", 35000, 35199)
        self.bridge = MixBridge(self.engine, **kw)
        self.phones: list[Phone] = []
        self.legs: list[MediaLeg] = []
        self.ports: list[int] = []
        self.pts: list[int] = []
        for c in codecs:
            phone = Phone(loop)
            leg, answer = self.engine.endpoint(sdp(phone.port, c))
            self.phones.append(phone)
            self.legs.append(leg)
            self.ports.append(port_of(answer))
            self.pts.append(leg.pt)
        self._pos = [0] * len(codecs)

    async def talk(self, who: dict[int, float], seconds: float) -> None:
        """Phones ``who`` (index -> frequency) send their tone for ``seconds``,
        20 ms a packet, paced from a fixed start."""
        t0 = self.loop.time()
        for k in range(int(seconds * 50)):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - self.loop.time()))
            for i, hz in who.items():
                pcm = sine(hz, 160, start=self._pos[i])
                self._pos[i] += 160
                enc = g711.ulaw_encode(pcm) if self.pts[i] == 0 else g711.alaw_encode(pcm)
                self.phones[i].send(self.ports[i], enc, pt=self.pts[i])

    def clear(self) -> None:
        for p in self.phones:
            p.received.clear()

    def heard(self, i: int, last: float = 0.5) -> list[int]:
        """The last ``last`` seconds phone i received, decoded."""
        pkts = [p for p, _ in self.phones[i].received if p.payload_type in (0, 8)]
        pcm = b"".join(
            g711.ulaw_decode(p.payload) if p.payload_type == 0 else g711.alaw_decode(p.payload)
            for p in pkts
        )
        samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
        return samples[-int(last * 8000) :]

    def levels(self, i: int) -> dict[float, float]:
        got = self.heard(i)
        return {hz: level(got, hz) for hz in FREQS}

    def close(self) -> None:
        self.bridge.close()
        for p in self.phones:
            p.close()
        self.engine.close()


def check(conf: Conf, i: int, heard: set[float], unheard: set[float]) -> None:
    lv = conf.levels(i)
    for hz in heard:
        assert lv[hz] > HEARD, (i, hz, lv)
    for hz in unheard:
        assert lv[hz] < UNHEARD, (i, hz, lv)


def test_each_member_hears_the_others_not_itself() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0 101", "8 101", "0 101"])
        for leg in conf.legs:
            conf.bridge.add(leg)
        assert conf.bridge.ticking and len(conf.bridge) == 3
        assert conf.bridge.stats()["members"] == 3
        assert all(leg.mode == "mix" for leg in conf.legs)
        await conf.talk({0: 500.0, 1: 1000.0, 2: 1500.0}, 1.0)
        await asyncio.sleep(0.1)
        check(conf, 0, {1000.0, 1500.0}, {500.0})
        check(conf, 1, {500.0, 1500.0}, {1000.0})
        check(conf, 2, {500.0, 1000.0}, {1500.0})
        # Each phone gets 20 ms frames in its own codec, one stream numbered as such.
        for i, phone in enumerate(conf.phones):
            pkts = [p for p, _ in phone.received]
            assert {p.payload_type for p in pkts} == {conf.pts[i]}
            assert {len(p.payload) for p in pkts} == {160}
            assert len({p.ssrc for p in pkts}) == 1
            assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(pkts))
            assert all(
                (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(pkts)
            )
            # Paced in real time: about 50 frames a second, not a burst.
            assert 35 <= len(pkts) <= 80, len(pkts)
        conf.close()

    run(body)


def test_muted_member_is_unheard_and_deaf_member_hears_silence() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "0", "8"])
        a, b, c = conf.legs
        conf.bridge.add(a, muted=True)
        conf.bridge.add(b)
        conf.bridge.add(c, deaf=True)
        await conf.talk({0: 500.0, 1: 1000.0, 2: 1500.0}, 1.0)
        await asyncio.sleep(0.1)
        check(conf, 0, {1000.0, 1500.0}, {500.0})  # muted: still hears
        check(conf, 1, {1500.0}, {500.0, 1000.0})  # nobody hears the muted one
        deaf = conf.heard(2)
        assert len(deaf) >= 2000 and max(abs(x) for x in deaf) < 64  # silence, still sent
        # Unmute / undeafen take effect at once.
        conf.bridge.mute(a, False)
        conf.bridge.deafen(c, False)
        conf.clear()
        await conf.talk({0: 500.0, 1: 1000.0}, 0.8)
        await asyncio.sleep(0.1)
        check(conf, 1, {500.0}, {1000.0})
        check(conf, 2, {500.0, 1000.0}, {1500.0})
        conf.close()

    run(body)


def test_removal_and_idle_tick() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "0", "0"])
        a, b, c = conf.legs
        for leg in conf.legs:
            conf.bridge.add(leg)
        await conf.talk({0: 500.0, 1: 1000.0, 2: 1500.0}, 0.6)
        conf.bridge.remove(b)
        assert b.mode == "silent" and b._mix is None and b not in conf.bridge
        await asyncio.sleep(0.05)
        conf.clear()
        await conf.talk({0: 500.0, 1: 1000.0, 2: 1500.0}, 0.8)
        await asyncio.sleep(0.1)
        assert conf.phones[1].received == []  # the removed leg sends nothing
        check(conf, 0, {1500.0}, {500.0, 1000.0})  # and is heard no more
        conf.bridge.remove(b)  # not a member: nothing happens
        conf.bridge.remove(a)
        conf.bridge.remove(c)
        assert not conf.bridge.ticking
        ticks = conf.bridge.ticks
        await asyncio.sleep(0.1)
        assert conf.bridge.ticks == ticks  # no work while empty
        conf.bridge.add(a)
        assert conf.bridge.ticking
        await asyncio.sleep(0.1)
        assert conf.bridge.ticks > ticks
        conf.close()
        assert not conf.bridge.ticking and a.mode == "silent"
        with pytest.raises(MediaError):
            conf.bridge.add(a)

    run(body)


def test_closing_legs_leaves_the_bridge_and_frees_ports() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "8"])
        for leg in conf.legs:
            conf.bridge.add(leg)
        assert conf.engine.ports.in_use == 2
        socks = [(leg._rtp, leg._rtcp) for leg in conf.legs]
        conf.legs[0].close()
        assert len(conf.bridge) == 1 and conf.bridge.ticking
        conf.legs[1].close()
        assert len(conf.bridge) == 0 and not conf.bridge.ticking
        assert conf.engine.ports.in_use == 0 and not conf.engine.legs
        assert all(s.fileno() == -1 for pair in socks for s in pair)
        conf.close()

    run(body)


def test_telephone_events_are_reported_not_mixed() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0 101", "0 101"])
        events: list[DtmfEvent] = []
        conf.legs[0].on_dtmf(events.append)
        for leg in conf.legs:
            conf.bridge.add(leg)
        t0 = conf.loop.time()
        for offset, payload, marker in rfc4733_packets("5", 100):
            await asyncio.sleep(max(0.0, t0 + offset - conf.loop.time()))
            conf.phones[0].send(conf.ports[0], payload, pt=101, marker=marker, ts=7000)
        await conf.talk({0: 500.0}, 0.4)
        await asyncio.sleep(0.1)
        assert [e.digit for e in events] == ["5"]
        assert all(p.payload_type == 0 for p, _ in conf.phones[1].received)
        check(conf, 1, {500.0}, set())
        conf.close()

    run(body)


def test_clips_to_everyone_or_one_member_and_whisper() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "8", "0"])
        a, b, _ = conf.legs
        for leg in conf.legs:
            conf.bridge.add(leg)
        done = asyncio.Event()
        clip = Audio(sine(2000.0, 8000), "clip")
        conf.bridge.play(clip, on_done=done.set)
        await asyncio.wait_for(done.wait(), 3)
        await asyncio.sleep(0.05)
        for i in range(3):
            check(conf, i, {2000.0}, set())
        conf.clear()
        conf.bridge.play(clip, to=b, loop=True)
        await asyncio.sleep(0.6)
        check(conf, 1, {2000.0}, set())
        check(conf, 0, set(), {2000.0})
        check(conf, 2, set(), {2000.0})
        conf.bridge.stop_play(to=b)
        # Whisper: a is heard by b only.
        conf.bridge.whisper(a, [b])
        conf.clear()
        await conf.talk({0: 500.0}, 0.8)
        await asyncio.sleep(0.1)
        check(conf, 1, {500.0}, {2000.0})
        check(conf, 2, set(), {500.0})
        check(conf, 0, set(), {500.0})
        conf.bridge.beep()  # a join beep goes to everyone
        with pytest.raises(MediaError):
            conf.bridge.whisper(a, [conf.engine.open_leg("x")])
        conf.close()

    run(body)


def test_refusals() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "0", "0"], max_members=2)
        a, b, c = conf.legs
        conf.bridge.add(a)
        with pytest.raises(MediaError, match="already in a bridge"):
            conf.bridge.add(a)
        other = MixBridge(conf.engine)
        with pytest.raises(MediaError, match="already in a bridge"):
            other.add(a)
        conf.bridge.add(b)
        with pytest.raises(MediaError, match="full") as full:
            conf.bridge.add(c)
        assert full.value.status == 503
        with pytest.raises(MediaError, match="negotiated"):
            other.add(conf.engine.open_leg("raw"))
        c.codec = "G722"  # as a passthrough leg would be
        with pytest.raises(MediaError, match="G722") as g722:
            other.add(c)
        assert g722.value.status == 488
        with pytest.raises(MediaError):
            MixBridge(conf.engine, max_members=0)
        with pytest.raises(MediaError):
            conf.bridge.mute(c)
        with pytest.raises(MediaError):
            conf.bridge.play(Path("/nonexistent.wav"))
        other.close()
        conf.close()

    run(body)


def test_recording_the_mix(tmp_path: Path) -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "8"])
        for leg in conf.legs:
            conf.bridge.add(leg)
        rec = tmp_path / "mix.wav"
        results = []
        conf.bridge.record(rec, on_done=results.append)
        await conf.talk({0: 500.0, 1: 1000.0}, 1.0)
        assert not rec.exists()
        assert conf.bridge.stop_record() == rec
        audio = parse_wav(rec.read_bytes())
        pcm = list(struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm))[-4000:]
        assert level(pcm, 500.0) > HEARD and level(pcm, 1000.0) > HEARD
        assert results[0].reason == "stopped" and 0.8 < results[0].seconds < 1.5
        conf.close()

    run(body)


def test_anchored_call_legs_mix_then_relay_again() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        conf = Conf(loop, ["0"])  # C: an endpoint leg
        a, b = Phone(loop), Phone(loop)
        call, offer = conf.engine.anchor(sdp(a.port, "0 101"))
        answer = call.answer(sdp(b.port, "8 101"))
        conf.phones += [a, b]
        conf.legs += [call.caller, call.callee]
        conf.ports += [port_of(answer), port_of(offer)]
        conf.pts += [0, 8]
        conf._pos += [0, 0]
        for leg in conf.legs:
            conf.bridge.add(leg)
        await conf.talk({0: 1500.0, 1: 500.0, 2: 1000.0}, 1.0)
        await asyncio.sleep(0.1)
        check(conf, 1, {1000.0, 1500.0}, {500.0})  # A hears B and C
        check(conf, 2, {500.0, 1500.0}, {1000.0})  # B hears A and C
        check(conf, 0, {500.0, 1000.0}, {1500.0})
        # Mixed, not relayed: B gets its own law, one packet per tick.
        assert {p.payload_type for p, _ in b.received} == {8}
        conf.bridge.remove(call.caller)
        conf.bridge.remove(call.callee)
        assert call.caller.mode == call.callee.mode == "relay"
        conf.clear()
        a.send(conf.ports[1], bytes(range(160)))
        assert await until(lambda: len(b.received) == 1)
        assert b.received[0][0].payload == bytes(range(160)).translate(g711.ULAW_TO_ALAW)
        await asyncio.sleep(0.1)
        assert len(b.received) == 1  # the relay again, and nothing from the bridge
        conf.close()

    run(body)


def test_member_prompt_then_mix_and_ptime_30() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        conf = Conf(loop, ["0", "0"])
        a, b = conf.legs
        done = asyncio.Event()
        a.play(Audio(sine(2000.0, 4000), "prompt"), on_done=done.set)
        conf.bridge.add(a)
        conf.bridge.add(b)
        assert a.mode == "source"  # hears its prompt first ...
        await conf.talk({1: 1000.0}, 0.4)
        check(conf, 0, {2000.0}, {1000.0})
        await asyncio.wait_for(done.wait(), 2)
        assert a.mode == "mix"  # ... then the mix
        # B's phone sends 30 ms packets: the bridge still takes 20 ms a tick.
        t0 = loop.time()
        for k in range(40):
            await asyncio.sleep(max(0.0, t0 + k * 0.03 - loop.time()))
            b_pcm = sine(1000.0, 240, start=240 * k)
            conf.phones[1].send(conf.ports[1], g711.ulaw_encode(b_pcm))
        await asyncio.sleep(0.1)
        check(conf, 0, {1000.0}, {2000.0})
        assert {len(p.payload) for p, _ in conf.phones[0].received[-20:]} == {160}
        conf.close()

    run(body)


def test_tick_is_paced_and_restarts_after_a_stall() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        conf = Conf(loop, ["0"])
        conf.bridge.add(conf.legs[0])
        t0, n0 = loop.time(), conf.bridge.ticks
        await asyncio.sleep(0.5)
        rate = (conf.bridge.ticks - n0) / (loop.time() - t0)
        assert 35 < rate < 60, rate  # 50 ticks a second, whatever the timer lateness
        before = conf.bridge.ticks
        time.sleep(0.35)  # the loop stalls
        await asyncio.sleep(0)
        await asyncio.sleep(0.005)
        assert conf.bridge.ticks - before <= 3  # no burst of the 17 frames missed
        conf.close()

    run(body)


def test_deaf_member_hears_only_its_own_clips_and_echo_returns_to_mix() -> None:
    async def body() -> None:
        conf = Conf(asyncio.get_running_loop(), ["0", "0"])
        a, b = conf.legs
        conf.bridge.add(a, deaf=True)
        conf.bridge.add(b)
        clip = Audio(sine(2000.0, 4000), "clip")
        conf.bridge.play(Audio(sine(1500.0, 4000), "all"))
        conf.bridge.play(clip, to=a)
        await conf.talk({1: 1000.0}, 0.4)
        check(conf, 0, {2000.0}, {1000.0, 1500.0})
        check(conf, 1, {1500.0}, {2000.0, 1000.0})
        a.echo()  # *43 inside a bridge: back to the mix when it stops
        a.stop_play()
        assert a.mode == "mix"
        conf.close()

    run(body)


class _Leg:
    pass


def test_member_jitter_buffer_bounds_delay() -> None:
    """A phone whose packets pile up (a burst, then a clock faster than ours) is
    brought back near the target delay; a paused phone is not padded with delay."""
    m = Member(None, _Leg(), False, False)  # type: ignore[arg-type]
    frame = g711.ulaw_encode(sine(500.0, 160))
    ts = 0

    def put(n: int) -> None:
        nonlocal ts
        for _ in range(n):
            m.put(ts, frame, "PCMU")
            ts += 160

    assert m.pull() is None  # prefilling
    put(1)
    assert m.pull() is None
    put(1)
    assert m.pull() is not None
    put(30)  # a 600 ms burst: at most MAX_DELAY is kept
    m.pull()
    assert m.jitter.span() <= MAX_DELAY
    assert m.shed > 0
    for _ in range(400):  # then one in, one out: the excess is shed a frame a second
        put(1)
        assert m.pull() is not None
    assert m.jitter.span() <= TARGET + 160
    for _ in range(20):  # the phone pauses: playout stops, no delay kept
        m.pull()
    assert not m.playing and m.jitter.span() == 0
    ts += 160 * 100  # resumes 2 s later: heard at once, with no delay kept
    put(2)
    assert m.pull() is not None and m.jitter.span() <= 160
