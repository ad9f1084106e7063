"""Fuzzing the media side (issue 11): SDP parsing, offer/answer and anchoring, RTP,
RTCP, telephone-events, SIP INFO key presses, the jitter buffer and the frames the
PBX builds. Each test feeds hostile input and asserts two things: only the documented
error type escapes (ParseError for SDP, MediaError and its subclasses for media), and
what comes out stays within the documented bounds.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from types import FrameType
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pbx_core.media import negotiation as neg
from pbx_core.media.audio import Audio, AudioSource, dtmf_audio
from pbx_core.media.dtmf import MAX_PRESS_MS, Rfc4733Receiver, parse_dtmf_info, rfc4733_packets
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError, RtpError
from pbx_core.media.jitter import MAX_FRAMES, JitterBuffer
from pbx_core.media.rtcp import parse_rtcp
from pbx_core.media.rtp import parse_rtp, payload_offset
from pbx_core.sip.errors import ParseError
from pbx_core.sip.sdp import MAX_FORMATS, MAX_MEDIA, MAX_SECTION_LINES, parse_sdp
from tests.fuzzing import fuzz_settings

BASE = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)

_VALUE = st.one_of(
    st.sampled_from(
        ["0", "8", "18", "96", "101", "127", "128", "-5", "1e400", "nan", "inf", "9" * 40]
    ),
    st.integers(-(10**12), 10**12).map(str),
    st.text(max_size=10),
)
_TEMPLATE_LINE = st.one_of(
    st.tuples(
        st.sampled_from(
            [
                "a=ptime:{}",
                "a=maxptime:{}",
                "a=rtpmap:{} PCMU/8000",
                "a=rtpmap:{} PCMA/8000",
                "a=rtpmap:{} telephone-event/8000",
                "a=rtpmap:96 {}/8000",
                "a=fmtp:101 {}",
                "a=rtcp:{}",
                "m=audio {} RTP/AVP 0",
                "m=audio 4000 RTP/AVP {}",
                "m=video 4000 RTP/AVP {}",
                "c=IN IP4 {}",
                "b=AS:{}",
                "a={}",
            ]
        ),
        _VALUE,
    ).map(lambda t: t[0].format(t[1])),
)
_LINE = st.integers(0, 9).flatmap(lambda i: st.text(max_size=40) if i == 0 else _TEMPLATE_LINE)


@st.composite
def sdp_bodies(draw: st.DrawFn) -> bytes:
    """A usable offer with hostile lines mixed in (and sometimes far too many)."""
    lines = BASE.split("\r\n")[:-1]
    for _ in range(draw(st.integers(0, 8))):
        low = 1 if draw(st.integers(0, 3)) == 0 else 6  # mostly inside the audio m=
        lines.insert(draw(st.integers(low, len(lines))), draw(_LINE))
    if draw(st.integers(0, 9)) == 0:
        lines += [draw(_LINE)] * draw(st.sampled_from([MAX_SECTION_LINES, MAX_FORMATS, 20]))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogatepass")


def _bounded(sd: Any) -> None:
    assert len(sd.media) <= MAX_MEDIA
    assert len(sd.attributes) < MAX_SECTION_LINES
    for m in sd.media:
        assert len(m.formats) <= MAX_FORMATS
        assert len(m.attributes) < MAX_SECTION_LINES


# ------------------------------------------------------------------ SDP


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=2000), sdp_bodies()))
def test_parse_sdp_raises_only_parse_error_and_stays_bounded(data: bytes) -> None:
    try:
        sd = parse_sdp(data)
    except ParseError as exc:
        assert exc.status in (400, 488)
        return
    _bounded(sd)
    assert parse_sdp(bytes(sd)) == sd  # what we read we can write and read back


@pytest.mark.fuzz
@fuzz_settings(300)
@given(sdp_bodies(), st.booleans())
def test_negotiation_raises_only_media_errors_and_bounds_ptime(
    offer: bytes, passthrough: bool
) -> None:
    local = neg.LocalSession("127.0.0.1", 1)
    try:
        sd = neg.parse_offer(offer)
        stream = neg.stream_of(sd)
    except MediaError as exc:
        assert exc.status in (400, 488)
        return
    assert stream.ptime is None or neg.PTIME_MIN <= stream.ptime <= neg.PTIME_MAX
    assert all(0 <= pt <= 127 for pt in stream.codecs)
    try:
        body = neg.callee_offer(stream, "127.0.0.1", 30000, local, passthrough=passthrough)
    except MediaError:
        pass
    else:
        out = parse_sdp(body)  # what we send parses, has one audio stream, in bounds
        assert len(out.media) == 1
        ptime = out.media[0].ptime
        assert ptime is None or neg.PTIME_MIN <= ptime <= neg.PTIME_MAX
        # the callee answers with our own offer: the caller's answer has one m-line
        # per offered m-line (RFC 3264 §6)
        answer, choice = neg.caller_answer(
            sd, stream, neg.stream_of(out), "127.0.0.1", 30002, neg.LocalSession("127.0.0.1", 2)
        )
        assert len(parse_sdp(answer).media) == len(sd.media)
        assert choice.pt in stream.codecs
    try:
        answer, choice = neg.endpoint_answer(sd, stream, ("PCMU", "PCMA"), "127.0.0.1", 1, local)
    except MediaError:
        return
    assert len(parse_sdp(answer).media) == len(sd.media)
    assert choice.rtpmap.encoding.upper() in ("PCMU", "PCMA")


@pytest.mark.fuzz
@fuzz_settings(40)
@given(st.lists(sdp_bodies(), min_size=1, max_size=4))
def test_anchoring_any_sdp_frees_every_port_it_took(bodies: list[bytes]) -> None:
    async def run() -> None:
        engine = MediaEngine(asyncio.get_running_loop(), "127.0.0.1", 34000, 34015)
        try:
            calls = []
            for offer, answer in itertools.pairwise([*bodies, bodies[0]]):
                try:
                    call, _body = engine.anchor(offer)
                except MediaError:
                    continue
                calls.append(call)
                try:
                    call.answer(answer)
                    call.leg("caller").tone("ringback")  # frames sized by the ptime
                    await asyncio.sleep(0)
                    call.reoffer("callee", offer)
                    ours = parse_sdp(call.offer("caller"))  # a re-INVITE without SDP
                    assert len(ours.media) == len(parse_sdp(offer).media)
                    call.take_answer("caller", answer)
                except MediaError:
                    pass
                assert call.caller.ptime <= neg.PTIME_MAX
                assert call.callee.ptime <= neg.PTIME_MAX
            for call in calls:
                call.close()
            assert engine.stats()["ports_in_use"] == 0
            assert not engine.legs
        finally:
            engine.close()

    asyncio.run(run())


# ------------------------------------------------------------------ frames


def _reference(clip: bytes, loop: bool, sizes: list[int], silence: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    stream = itertools.cycle(clip) if loop else iter(clip)
    finished = False
    for n in sizes:
        if finished or (not loop and not clip):
            out.append(None)
            continue
        got = bytes(itertools.islice(stream, n))
        if not got:
            finished = True
            out.append(None)
            continue
        out.append(got + bytes([silence]) * (n - len(got)))
    return out


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    st.binary(min_size=1, max_size=50),
    st.booleans(),
    st.lists(st.integers(1, 500), min_size=1, max_size=12),
)
def test_audio_frames_are_the_clip_in_order(clip: bytes, loop: bool, sizes: list[int]) -> None:
    audio = Audio(b"\0\0" * len(clip))
    audio._encoded["PCMU"] = clip  # the G.711 bytes under test, as the cache holds them
    src = AudioSource(audio, loop)
    got = [src.frame("PCMU", n) for n in sizes]
    assert got == _reference(clip, loop, sizes, 0xFF)


def test_a_long_frame_of_a_short_looped_clip_is_built_in_a_few_steps() -> None:
    # The old loop appended the clip once per turn to an immutable bytes object:
    # quadratic, and minutes for a frame the size a huge ptime asked for. Count the
    # lines the frame builder runs (not the time): a few, whatever the frame size.
    audio = Audio(b"\0\0")
    audio._encoded["PCMU"] = b"\x01"
    src = AudioSource(audio, loop=True)
    code = AudioSource.frame.__code__
    lines = 0

    def tracer(frame: FrameType, event: str, _arg: object) -> Any:
        nonlocal lines
        if frame.f_code is code and event == "line":
            lines += 1
        return tracer

    sys.settrace(tracer)
    try:
        out = src.frame("PCMU", 200_000)
    finally:
        sys.settrace(None)
    assert out == b"\x01" * 200_000
    assert lines < 30


def test_a_key_press_is_at_most_max_press_ms_long() -> None:
    assert dtmf_audio("5", 10**6).samples == MAX_PRESS_MS * 8
    event = parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=999999\r\n")
    assert event is not None and event.duration_ms == MAX_PRESS_MS


# ------------------------------------------------------------------ RTP, RTCP, DTMF


@pytest.mark.fuzz
@fuzz_settings(500)
@given(st.binary(max_size=300))
def test_rtp_parsing_raises_only_rtp_error(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RtpError:
        start, end = payload_offset(data, len(data)) if data else (-1, -1)
        assert (start, end) == (-1, -1) or len(data) < 12 or start <= end <= len(data)
        return
    assert len(pkt.payload) <= len(data) - 12
    assert 0 <= pkt.payload_type <= 127
    start, end = payload_offset(data, len(data))
    assert data[start:end] == pkt.payload


@pytest.mark.fuzz
@fuzz_settings(500)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(
            st.integers(0, 255), st.sampled_from([200, 201, 202, 203, 204]), st.binary(max_size=200)
        ).map(
            lambda t: (
                bytes([0x80 | (t[0] & 0x1F), t[1]]) + (len(t[2]) // 4).to_bytes(2, "big") + t[2]
            )
        ),
    )
)
def test_rtcp_parsing_raises_only_rtp_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtpError:
        return
    assert len(packets) <= len(data) // 4


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=30))
def test_telephone_events_raise_only_media_error(packets: list[tuple[int, bytes]]) -> None:
    rx = Rfc4733Receiver()
    for ts, payload in packets:
        try:
            _started, ended = rx.feed(ts, payload)
        except MediaError:
            continue
        if ended is not None:
            assert 0 <= ended[1] <= 0xFFFF * 1000 // 8000


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    st.sampled_from(["application/dtmf-relay", "application/dtmf", "text/plain"]),
    st.binary(max_size=200),
)
def test_sip_info_key_presses_raise_only_media_error(ctype: str, body: bytes) -> None:
    try:
        event = parse_dtmf_info(ctype, body)
    except MediaError as exc:
        assert exc.status == 400
        return
    if event is not None and event.duration_ms is not None:
        assert 0 <= event.duration_ms <= MAX_PRESS_MS
        packets = rfc4733_packets(event.digit, event.duration_ms, neg.PTIME_MIN)
        assert len(packets) <= 0xFFFF // 80 + 4


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    st.one_of(
        st.lists(
            st.tuples(st.integers(0, 40_000) | st.integers(0, 2**32 - 1), st.integers(1, 400)),
            max_size=600,
        ),
        st.builds(  # a steady stream, as a phone sends it (the first packet lost)
            lambda base, n, step: [(base + i * step, step) for i in range(1, n)],
            st.integers(0, 2**32 - 1),
            st.integers(0, 600),
            st.sampled_from([1, 80, 160, 960]),
        ),
    ),
    st.booleans(),
)
def test_the_jitter_buffer_holds_at_most_max_frames(
    frames: list[tuple[int, int]], drain: bool
) -> None:
    jb = JitterBuffer()
    for ts, samples in frames:
        jb.put(ts, b"\xff" * samples, samples)
        assert len(jb) <= MAX_FRAMES
        while drain and jb.pop() is not None:
            pass
    assert len(jb.flush()) <= 2 * MAX_FRAMES  # frames and the gaps between them


@pytest.mark.fuzz
@fuzz_settings(15)
@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=30))
def test_a_leg_survives_any_datagrams_on_its_rtp_and_rtcp_ports(datagrams: list[bytes]) -> None:
    assume(any(datagrams))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
        engine = MediaEngine(loop, "127.0.0.1", 34100, 34115)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        try:
            call, _offer = engine.anchor(BASE.encode())
            call.answer(BASE.encode())
            for leg in (call.caller, call.callee):
                for data in datagrams:
                    sock.sendto(data, ("127.0.0.1", leg.port))
                    sock.sendto(data, ("127.0.0.1", leg.port + 1))
            for _ in range(20):
                await asyncio.sleep(0.005)
            assert errors == []
            stats = call.stats()
            assert all(s.packets_received <= len(datagrams) for s in stats.values())
            call.close()
            assert engine.stats()["ports_in_use"] == 0
        finally:
            sock.close()
            engine.close()

    asyncio.run(run())
