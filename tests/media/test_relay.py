"""The engine on loopback with fake phones (real UDP sockets): relay both ways,
transcoding, latching, hold, play/record/echo, DTMF, stats, port allocation."""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pbx_core.media.codecs import g711
from pbx_core.media.dtmf import DTMF_FREQUENCIES, rfc4733_packets
from pbx_core.media.engine import MediaEngine, MediaSettings
from pbx_core.media.errors import NegotiationError, PortsExhaustedError
from pbx_core.media.events import DtmfEvent, DtmfSource
from pbx_core.media.wav import parse_wav, wav_bytes
from tests.media.phones import Phone, port_of, sdp, until


def run(coro_fn: Callable[..., Awaitable[None]], **kw: object) -> None:
    asyncio.run(coro_fn(**kw))


class Rig:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        caller_codecs: str = "0 8 101",
        callee_codecs: str = "0 101",
        settings: MediaSettings | None = None,
        port_min: int = 0,
        port_max: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.engine = MediaEngine(
            loop, host, port_min or 31000, port_max or 31999, settings=settings
        )
        self.a = Phone(loop, host)
        self.b = Phone(loop, host)
        self.call, self.offer = self.engine.anchor(sdp(self.a.port, caller_codecs, address=host))
        self.answer = self.call.answer(sdp(self.b.port, callee_codecs, address=host))
        self.pa = port_of(self.answer)  # where phone A sends
        self.pb = port_of(self.offer)  # where phone B sends

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.engine.close()


def test_relay_both_ways_same_codec() -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        assert b"PCMU/8000" in rig.answer and b"telephone-event" in rig.answer
        for i in range(10):
            rig.a.send(rig.pa, bytes([i]) * 160)
            rig.b.send(rig.pb, bytes([100 + i]) * 160)
        assert await until(lambda: len(rig.a.received) == 10 and len(rig.b.received) == 10)
        got_b = [p for p, _ in rig.b.received]
        assert [p.payload[0] for p in got_b] == list(range(10))
        assert all(p.payload_type == 0 for p in got_b)
        # Our own SSRC, consecutive sequence numbers and timestamps 160 apart.
        assert len({p.ssrc for p in got_b}) == 1 and got_b[0].ssrc != rig.a.ssrc
        assert all((q.sequence - p.sequence) & 0xFFFF == 1 for p, q in itertools.pairwise(got_b))
        assert all(
            (q.timestamp - p.timestamp) & 0xFFFFFFFF == 160 for p, q in itertools.pairwise(got_b)
        )
        assert got_b[0].marker
        # Packets come from the PBX port advertised to each phone.
        assert {addr[1] for _, addr in rig.b.received} == {rig.pb}
        assert {addr[1] for _, addr in rig.a.received} == {rig.pa}
        stats = rig.call.stats()
        assert stats["caller"].packets_received == 10 and stats["caller"].lost == 0
        assert stats["callee"].packets_sent == 10
        rig.close()

    run(body)


@pytest.mark.parametrize(
    ("caller", "callee", "a_pt", "b_pt"), [("0 101", "8 101", 0, 8), ("8 101", "0 101", 8, 0)]
)
def test_transcoding_ulaw_alaw(caller: str, callee: str, a_pt: int, b_pt: int) -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop(), caller, callee)
        assert f"m=audio {rig.pa} RTP/AVP {a_pt} 101".encode() in rig.answer
        # Offer to callee carries both laws (the missing one appended) + telephone-event.
        assert b"PCMU/8000" in rig.offer and b"PCMA/8000" in rig.offer
        every = bytes(range(256))
        rig.a.send(rig.pa, every[:160], pt=a_pt)
        rig.a.send(rig.pa, every[160:], pt=a_pt)
        rig.b.send(rig.pb, every[:160], pt=b_pt)
        assert await until(lambda: len(rig.b.received) == 2 and len(rig.a.received) == 1)
        to_b = b"".join(p.payload for p, _ in rig.b.received)
        table_ab = g711.ULAW_TO_ALAW if a_pt == 0 else g711.ALAW_TO_ULAW
        assert to_b == every.translate(table_ab)
        assert all(p.payload_type == b_pt for p, _ in rig.b.received)
        # Check the direction by decoding: each sample survives within one step.
        dec_a = g711.ulaw_decode_sample if a_pt == 0 else g711.alaw_decode_sample
        dec_b = g711.alaw_decode_sample if a_pt == 0 else g711.ulaw_decode_sample
        for code, out in zip(every, to_b, strict=False):
            x, y = dec_a(code), dec_b(out)
            assert abs(x - y) <= max(16, abs(x) // 8), (code, x, y)
        back = rig.a.received[0][0]
        assert back.payload_type == a_pt
        rig.close()

    run(body)


def test_symmetric_rtp_latches_to_source_address() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop)
        # Phone A's SDP says port a.port but it sends from another socket (NAT):
        # two packets in sequence latch it (tests/media/test_latching.py: the rules).
        nat = Phone(loop)
        nat.send(rig.pa, b"\x00" * 160)
        nat.send(rig.pa, b"\x01" * 160)
        assert await until(lambda: rig.call.caller.latched)
        rig.b.send(rig.pb, b"\x02" * 160)
        assert await until(lambda: len(nat.received) == 1)
        assert rig.a.received == []  # not to the SDP address any more
        # A stranger with the same SSRC while the source is live is ignored.
        stranger = Phone(loop)
        stranger.ssrc = nat.ssrc
        stranger.send(rig.pa, b"\x03" * 160)
        nat.send(rig.pa, b"\x04" * 160)
        assert await until(lambda: len(rig.b.received) >= 2)
        await asyncio.sleep(0.05)
        assert [p.payload[0] for p, _ in rig.b.received] == [1, 4]
        nat.close()
        stranger.close()
        rig.close()

    run(body)


def test_port_allocator_exhaustion_and_release() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32000, 32007)  # 4 pairs: 2 calls
        calls = [engine.anchor(sdp(40000))[0] for _ in range(2)]
        ports = sorted(leg.port for c in calls for leg in (c.caller, c.callee))
        assert ports == [32000, 32002, 32004, 32006]
        with pytest.raises(PortsExhaustedError) as exc:
            engine.anchor(sdp(40000))
        assert exc.value.status == 503
        assert engine.stats()["ports_in_use"] == 4
        calls[0].close()
        calls[0].close()  # idempotent
        assert engine.stats()["ports_free"] == 2
        again, _ = engine.anchor(sdp(40000))
        assert {again.caller.port, again.callee.port} == {32000, 32002}
        # The released sockets really are free (bind them here ourselves after close).
        engine.close()
        import socket

        for p in range(32000, 32008):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", p))
            s.close()

    run(body)


def test_port_taken_by_another_program_is_skipped() -> None:
    async def body() -> None:
        import socket

        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind(("127.0.0.1", 32101))  # the RTCP port of the first pair
        engine = MediaEngine(asyncio.get_running_loop(), "127.0.0.1", 32100, 32105)
        call, _ = engine.anchor(sdp(40000))
        assert {call.caller.port, call.callee.port} == {32102, 32104}
        engine.close()
        squatter.close()

    run(body)


def test_bad_offers_are_refused_with_status() -> None:
    async def body() -> None:
        engine = MediaEngine(asyncio.get_running_loop(), "127.0.0.1", 32200, 32299)
        with pytest.raises(NegotiationError) as exc:
            engine.anchor(b"not sdp")
        assert exc.value.status == 400
        with pytest.raises(NegotiationError) as exc:
            engine.anchor(sdp(40000, "18"))  # G.729 only, no pass-through
        assert exc.value.status == 488
        assert engine.stats()["ports_in_use"] == 0  # nothing leaked
        engine.close()

    run(body)


def test_hold_plays_music_and_resume_relays() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop)
        music = g711.ulaw_decode(bytes([0x42]) * 8000)
        from pbx_core.media.audio import Audio

        rig.call.music_on_hold = Audio(music, "moh")
        holds: list[tuple[str, bool]] = []
        rig.call.on_hold(lambda side, held: holds.append((side, held)))
        answer = rig.call.reoffer("caller", sdp(rig.a.port, "0 101", "sendonly"))
        assert b"a=recvonly" in answer and b"o=wafer" in answer
        assert holds == [("caller", True)]
        assert await until(lambda: len(rig.b.received) >= 5)
        assert all(p.payload == bytes([0x42]) * 160 for p, _ in rig.b.received)
        # The held phone gets nothing.
        rig.b.send(rig.pb, b"\x07" * 160)
        await asyncio.sleep(0.05)
        assert rig.a.received == []
        answer2 = rig.call.reoffer("caller", sdp(rig.a.port, "0 101", "sendrecv"))
        assert b"a=sendrecv" in answer2
        assert holds[-1] == ("caller", False)
        n = len(rig.b.received)
        rig.a.send(rig.pa, b"\x09" * 160)
        assert await until(lambda: any(p.payload[0] == 9 for p, _ in rig.b.received[n:]))
        rig.b.send(rig.pb, b"\x08" * 160)
        assert await until(lambda: len(rig.a.received) == 1)
        # Same offer again (a session refresh): same body, same version.
        assert rig.call.reoffer("caller", sdp(rig.a.port, "0 101", "sendrecv")) == answer2
        rig.close()

    run(body)


def test_reoffer_moves_the_stream_to_a_new_address() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop)
        c = Phone(loop)
        rig.call.reoffer("callee", sdp(c.port, "8 101"))  # new port and codec
        rig.a.send(rig.pa, b"\xff" * 160)
        assert await until(lambda: len(c.received) == 1)
        # Only PCMA offered now: the leg switches and the relay transcodes.
        assert c.received[0][0].payload_type == 8
        assert c.received[0][0].payload == b"\xd5" * 160  # A-law silence
        # A re-offer that still has PCMU keeps PCMU (no change mid-call).
        rig.call.reoffer("callee", sdp(c.port, "8 0 101"))
        assert rig.call.callee.codec == "PCMA"
        c.close()
        rig.close()

    run(body)


@pytest.mark.tools("ipv6")
def test_relay_both_ways_over_ipv6() -> None:
    """IPv6 phones (the socket reports a 4-tuple source): every packet is relayed,
    not only the one the leg latched on."""

    async def body() -> None:
        rig = Rig(asyncio.get_running_loop(), host="::1")
        assert b"c=IN IP6 ::1" in rig.answer and b"c=IN IP6 ::1" in rig.offer
        for i in range(20):
            rig.a.send(rig.pa, bytes([i]) * 160)
            rig.b.send(rig.pb, bytes([100 + i]) * 160)
            await asyncio.sleep(0.002)
        assert await until(lambda: len(rig.a.received) == 20 and len(rig.b.received) == 20), (
            len(rig.a.received),
            len(rig.b.received),
        )
        assert [p.payload[0] for p, _ in rig.b.received] == list(range(20))
        assert [p.payload[0] for p, _ in rig.a.received] == list(range(100, 120))
        stats = rig.call.stats()
        assert stats["caller"].packets_received == 20 and stats["callee"].packets_received == 20
        rig.close()

    run(body)


def _tone_pcm(f1: float, f2: float, ms: int, amp: int = 5000) -> bytes:
    n = ms * 8
    return struct.pack(
        f"<{n}h",
        *[
            int(
                amp
                * (math.sin(2 * math.pi * f1 * i / 8000) + math.sin(2 * math.pi * f2 * i / 8000))
                / 2
            )
            for i in range(n)
        ],
    )


def test_dtmf_rfc4733_reported_once_and_forwarded() -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        events: list[DtmfEvent] = []
        rig.call.on_dtmf(events.append)
        for _, payload, marker in rfc4733_packets("7", 100):
            rig.a.send(rig.pa, payload, pt=101, marker=marker, ts=9000)
        # A duplicate of the whole event (retransmission) and then a new one.
        for _, payload, marker in rfc4733_packets("7", 100):
            rig.a.send(rig.pa, payload, pt=101, marker=marker, ts=9000)
        for _, payload, marker in rfc4733_packets("#", 60)[1:]:  # start packet lost
            rig.a.send(rig.pa, payload, pt=101, marker=marker, ts=9800)
        assert await until(lambda: len(events) == 2)
        await asyncio.sleep(0.05)
        assert events == [
            DtmfEvent("7", DtmfSource.RFC4733, None, "caller"),
            DtmfEvent("#", DtmfSource.RFC4733, None, "caller"),
        ]
        assert all(p.payload_type == 101 for p, _ in rig.b.received)
        assert len(rig.b.received) == 7 + 7 + 4  # relayed as they came
        rig.close()

    run(body)


def test_dtmf_to_a_phone_without_telephone_event_becomes_tones() -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop(), "0 101", "0")
        # The caller keeps RFC 4733 (the PBX takes its events and plays them as tones
        # to the callee, which negotiated no telephone-event).
        assert b"a=rtpmap:101 telephone-event/8000" in rig.answer
        assert rig.call.leg("caller").te_pt == 101
        assert rig.call.leg("callee").te_pt is None
        for _, payload, marker in rfc4733_packets("5", 200):
            rig.a.send(rig.pa, payload, pt=101, marker=marker, ts=1234)
            await asyncio.sleep(0.02)
        assert await until(lambda: len(rig.b.received) >= 5)
        pcm = g711.ulaw_decode(b"".join(p.payload for p, _ in rig.b.received))
        from pbx_core.media.dtmf import InbandDetector

        assert InbandDetector().feed(pcm) == ["5"]
        assert all(p.payload_type == 0 for p, _ in rig.b.received)
        rig.close()

    run(body)


def test_inband_dtmf_and_sip_info() -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop(), "0", "0")  # nobody has telephone-event
        events: list[DtmfEvent] = []
        rig.call.on_dtmf(events.append)
        pcm = _tone_pcm(*DTMF_FREQUENCIES["9"], 100) + bytes(1600)
        enc = g711.ulaw_encode(pcm)
        for i in range(0, len(enc), 160):
            rig.b.send(rig.pb, enc[i : i + 160])
        assert await until(lambda: len(events) == 1)
        assert events[0] == DtmfEvent("9", DtmfSource.INBAND, None, "callee")
        ev = rig.call.dtmf_info("caller", "application/dtmf-relay", b"Signal=*\r\nDuration=120\r\n")
        assert ev == DtmfEvent("*", DtmfSource.INFO, 120, "caller")
        assert events[-1] == ev
        assert rig.call.dtmf_info("caller", "application/sdp", b"v=0") is None
        rig.close()

    run(body)


def test_endpoint_play_record_echo(tmp_path: Path) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32300, 32399)
        phone = Phone(loop)
        leg, answer = engine.endpoint(sdp(phone.port, "8 101"))
        assert b"PCMA/8000" in answer
        port = port_of(answer)
        # Play: a 100 ms clip comes as 5 paced frames, then on_done.
        clip = tmp_path / "clip.wav"
        clip.write_bytes(wav_bytes(_tone_pcm(1000, 1000, 100)))
        done = asyncio.Event()
        t0 = loop.time()
        leg.play(clip, on_done=done.set)
        await asyncio.wait_for(done.wait(), 2)
        assert 0.07 < loop.time() - t0 < 0.5
        assert len(phone.received) == 5
        assert all(p.payload_type == 8 for p, _ in phone.received)
        # Record what the phone sends, reordered on the way.
        rec = tmp_path / "rec.wav"
        leg.record(rec)
        frames = [g711.alaw_encode(struct.pack("<160h", *[k * 100] * 160)) for k in range(6)]
        order = [0, 2, 1, 3, 5, 4]
        for k in order:
            phone.send(port, frames[k], pt=8, ts=1000 + 160 * k, seq=10 + k)
        await asyncio.sleep(0.1)
        assert not rec.exists()  # only complete files appear
        assert leg.stop_record() == rec
        audio = parse_wav(rec.read_bytes())
        samples = struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm)
        assert len(samples) == 960
        levels = [samples[i * 160] for i in range(6)]
        assert levels == [
            g711.alaw_decode_sample(g711.alaw_encode_sample(k * 100)) for k in range(6)
        ]
        # Echo: what the phone sends comes back.
        phone.received.clear()
        leg.echo()
        phone.send(port, b"\x11" * 160, pt=8)
        assert await until(lambda: len(phone.received) == 1)
        assert phone.received[0][0].payload == b"\x11" * 160
        phone.close()
        engine.close()

    run(body)


def test_tone_is_paced_from_a_fixed_start() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32400, 32499)
        phone = Phone(loop)
        leg, _ = engine.endpoint(sdp(phone.port, "0"))
        leg.tone("ringback", "de")
        t0 = loop.time()
        await asyncio.sleep(0.5)
        leg.stop_play()
        n = len(phone.received)
        elapsed = loop.time() - t0
        assert abs(n - elapsed / 0.02) <= 3, (n, elapsed)
        ts = [p.timestamp for p, _ in phone.received]
        assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(ts))
        phone.close()
        engine.close()

    run(body)


def test_inactivity_callback() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop, settings=MediaSettings(tick=0.05))
        dead: list[str] = []
        rig.call.on_inactivity(0.2, lambda call, leg: dead.append(leg.side))
        for _ in range(8):
            rig.a.send(rig.pa, b"\x00" * 160)  # caller keeps talking, callee is silent
            await asyncio.sleep(0.04)
        assert dead == ["callee"]
        rig.close()

    run(body)


def test_rtcp_reports_loss_and_jitter() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop)
        for i in range(20):
            if i not in (5, 6):
                rig.a.send(rig.pa, b"\x00" * 160, seq=100 + i, ts=160 * i)
        assert await until(lambda: rig.call.caller.rx_packets == 18)
        st = rig.call.stats()["caller"]
        assert st.lost == 2 and abs(st.loss_fraction - 0.1) < 1e-9
        # The caller leg's RTCP goes to the phone's port + 1.
        import socket

        from pbx_core.media.rtcp import ReceiverReport, SenderReport, parse_rtcp

        rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp_sock.bind(("127.0.0.1", 0))
        rig.call.caller.rtcp_remote = rtcp_sock.getsockname()
        rig.call.caller.send_rtcp(loop.time())
        data = rtcp_sock.recv(2048)
        packets = parse_rtcp(data)
        assert isinstance(packets[0], ReceiverReport | SenderReport)
        block = packets[0].reports[0]
        assert block.ssrc == rig.a.ssrc and block.cumulative_lost == 2
        assert block.fraction_lost == 2 * 256 // 20
        rtcp_sock.close()
        rig.close()

    run(body)


def test_early_answer_ringback_then_relay() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32500, 32599)
        a, b = Phone(loop), Phone(loop)
        call, offer = engine.anchor(sdp(a.port, "8 0 101"))
        early = call.early_answer()
        assert b"m=audio" in early and b"RTP/AVP 8 101" in early  # caller's first law
        call.caller.tone("ringback", "uk")
        assert await until(lambda: len(a.received) >= 3)
        assert all(p.payload_type == 8 for p, _ in a.received)
        # The callee answers with PCMU only: the caller keeps PCMA, relay transcodes.
        assert call.answer(sdp(b.port, "0 101")) == early
        call.caller.stop_play()
        a.received.clear()
        b.send(port_of(offer), b"\xff" * 160, pt=0)
        assert await until(lambda: len(a.received) == 1)
        assert a.received[0][0].payload == b"\xd5" * 160 and a.received[0][0].marker
        a.close()
        b.close()
        engine.close()

    run(body)


def test_sip_info_relayed_as_telephone_event() -> None:
    async def body() -> None:
        rig = Rig(asyncio.get_running_loop())
        rig.call.dtmf_info("caller", "application/dtmf-relay", b"Signal=4\r\nDuration=60\r\n")
        assert await until(lambda: len(rig.b.received) >= 4)
        from pbx_core.media.dtmf import TelephoneEvent

        events = [TelephoneEvent.unpack(p.payload) for p, _ in rig.b.received]
        assert all(p.payload_type == 101 for p, _ in rig.b.received)
        assert {e.digit for e in events} == {"4"} and events[-1].end
        assert len({p.timestamp for p, _ in rig.b.received}) == 1  # one event timestamp
        rig.close()

    run(body)


def test_endpoint_reoffer_and_stats() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32600, 32699)
        phone = Phone(loop)
        leg, answer = engine.endpoint(sdp(phone.port, "0"))
        again = engine.reoffer_endpoint(leg, sdp(phone.port, "0", "inactive"))
        assert b"a=inactive" in again and leg.held
        leg.tone("busy")
        await asyncio.sleep(0.1)
        assert phone.received == []  # a held phone is not sent to
        engine.reoffer_endpoint(leg, sdp(phone.port, "0"))
        assert await until(lambda: len(phone.received) >= 2)
        assert leg.stats().packets_sent >= 2 and leg.stats().codec == "PCMU"
        leg.close()
        assert engine.stats()["legs"] == 0
        phone.close()
        engine.close()
        del answer

    run(body)


def test_offer_on_a_leg_and_its_answer_from_the_ack() -> None:
    """A re-INVITE without SDP from the caller: the engine offers the leg's codec
    first; the phone's answer (in its ACK) moves the stream to a new port and to
    PCMA, which the relay then transcodes; the callee's leg is untouched."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        rig = Rig(loop, "0 101", "0 101")
        offer = rig.call.offer("caller")
        assert port_of(offer) == rig.pa
        assert b"m=audio %d RTP/AVP 0 8 101" % rig.pa in offer and b"a=sendrecv" in offer
        callee_before = (rig.call.callee.codec, rig.call.callee.remote)
        c = Phone(loop)
        rig.call.take_answer("caller", sdp(c.port, "8 101"))
        assert rig.call.caller.codec == "PCMA"
        assert (rig.call.callee.codec, rig.call.callee.remote) == callee_before
        rig.b.send(rig.pb, b"\xff" * 160)  # µ-law silence from the callee
        assert await until(lambda: len(c.received) == 1)
        assert c.received[0][0].payload_type == 8
        assert c.received[0][0].payload == b"\xd5" * 160  # A-law silence
        # An answer needs an offer; one with no codec we offered is refused.
        with pytest.raises(NegotiationError):
            rig.call.take_answer("caller", sdp(c.port, "8 101"))
        rig.call.offer("callee")
        with pytest.raises(NegotiationError):
            rig.call.take_answer("callee", sdp(rig.b.port, "18"))
        assert rig.call.callee.codec == "PCMU"  # left as it was
        c.close()
        rig.close()

    run(body)


def test_offer_on_an_endpoint_leg() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        engine = MediaEngine(loop, "127.0.0.1", 32700, 32799)
        phone = Phone(loop)
        leg, answer = engine.endpoint(sdp(phone.port, "0"))
        offer = engine.offer_endpoint(leg)
        assert port_of(offer) == port_of(answer) and b"RTP/AVP 0 8 101" in offer
        engine.answer_endpoint(leg, sdp(phone.port, "0 101", "sendonly"))
        assert leg.held and leg.te_pt == 101 and leg.codec == "PCMU"
        leg.close()
        phone.close()
        engine.close()

    run(body)
