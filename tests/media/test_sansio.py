"""DTMF (RFC 4733, INFO, in-band incl. tones from sox), mixer, jitter buffer, WAV,
tones, port allocator, offer/answer."""

from __future__ import annotations

import math
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media import negotiation as neg
from pbx_core.media.dtmf import (
    DTMF_FREQUENCIES,
    InbandDetector,
    Rfc4733Receiver,
    TelephoneEvent,
    dtmf_info_body,
    goertzel_power,
    parse_dtmf_info,
    rfc4733_packets,
)
from pbx_core.media.errors import MediaError, NegotiationError, WavError
from pbx_core.media.events import DtmfEvent, DtmfSource
from pbx_core.media.jitter import JitterBuffer
from pbx_core.media.mixer import mix, mix_minus
from pbx_core.media.ports import PortAllocator
from pbx_core.media.tones import COUNTRIES, TONE_NAMES, render, tone
from pbx_core.media.wav import parse_wav, wav_bytes
from pbx_core.sip.sdp import parse_sdp
from tests.media.phones import sdp

# ---------------------------------------------------------------- RFC 4733


def test_telephone_event_payload() -> None:
    ev = TelephoneEvent(11, True, 10, 800)
    assert ev.pack() == b"\x0b\x8a\x03\x20"
    assert TelephoneEvent.unpack(ev.pack()) == ev and ev.digit == "#"


def test_sender_packets() -> None:
    pkts = rfc4733_packets("1", 100, 20)
    assert [m for _, _, m in pkts] == [True] + [False] * 6
    events = [TelephoneEvent.unpack(p) for _, p, _ in pkts]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [round(t, 3) for t, _, _ in pkts][-3:] == [0.08, 0.1, 0.12]
    with pytest.raises(MediaError):
        rfc4733_packets("X")


@given(
    st.sampled_from("0123456789*#ABCD"),
    st.integers(40, 2000),
    st.lists(st.booleans(), min_size=20, max_size=20),
    st.integers(0, 0xFFFFFFFF),
)
def test_receiver_reports_each_press_once_despite_loss_and_duplicates(
    digit: str, ms: int, keep: list[bool], ts: int
) -> None:
    rx = Rfc4733Receiver()
    pkts = rfc4733_packets(digit, ms)
    started, ended = [], []
    kept = [p for i, (_, p, _) in enumerate(pkts) if keep[i % 20] or i == len(pkts) - 1]
    for p in kept + kept:  # everything twice
        s, e = rx.feed(ts, p)
        if s:
            started.append(s)
        if e:
            ended.append(e)
    assert started == [digit]
    assert ended == [(digit, max(20, ms))]  # the last end packet always got through
    # A late packet of that event after the next one started is ignored.
    s, _ = rx.feed((ts + 8000) & 0xFFFFFFFF, pkts[0][1])
    assert s == digit
    assert rx.feed(ts, pkts[0][1]) == (None, None)


def test_receiver_expire_without_end() -> None:
    rx = Rfc4733Receiver()
    rx.feed(5, rfc4733_packets("3")[0][1])
    assert rx.active == "3"
    assert rx.expire() == "3" and rx.active is None and rx.expire() is None


# ---------------------------------------------------------------- SIP INFO


def test_info_bodies() -> None:
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n") == DtmfEvent(
        "5", DtmfSource.INFO, 160
    )
    assert parse_dtmf_info("Application/DTMF-Relay; x=y", b"signal= #\nduration=250") == DtmfEvent(
        "#", DtmfSource.INFO, 250
    )
    assert parse_dtmf_info("application/dtmf", b"11", "caller") == DtmfEvent(
        "#", DtmfSource.INFO, None, "caller"
    )
    assert parse_dtmf_info("text/plain", b"5") is None
    with pytest.raises(MediaError) as exc:
        parse_dtmf_info("application/dtmf-relay", b"Duration=100")
    assert exc.value.status == 400
    with pytest.raises(MediaError):
        parse_dtmf_info("application/dtmf", b"hello")
    ctype, body = dtmf_info_body("*", 200)
    assert parse_dtmf_info(ctype, body) == DtmfEvent("*", DtmfSource.INFO, 200)


# ---------------------------------------------------------------- in-band


def _pair(digit: str, ms: int, amp: float = 6000, rate: int = 8000) -> list[int]:
    f1, f2 = DTMF_FREQUENCIES[digit]
    return [
        int(
            amp
            * (math.sin(2 * math.pi * f1 * i / rate) + math.sin(2 * math.pi * f2 * i / rate))
            / 2
        )
        for i in range(ms * rate // 1000)
    ]


def _pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_inband_detects_every_digit_once() -> None:
    det = InbandDetector()
    found: list[str] = []
    for d in "0123456789*#ABCD":
        found += det.feed(_pcm(_pair(d, 70)))
        found += det.feed(bytes(2 * 400))
    assert found == list("0123456789*#ABCD")


def test_inband_ignores_short_quiet_and_single_tones() -> None:
    det = InbandDetector()
    assert det.feed(_pcm(_pair("5", 20))) == []  # too short (Q.24: < 40 ms)
    assert det.feed(bytes(3200)) == []
    assert det.feed(_pcm(_pair("5", 100, amp=200))) == []  # below the level floor
    single = [int(6000 * math.sin(2 * math.pi * 770 * i / 8000)) for i in range(800)]
    assert det.feed(_pcm(single)) == []
    speechy = [
        int(3000 * math.sin(2 * math.pi * f * i / 8000))
        for f in (300, 500, 1100)
        for i in range(400)
    ]
    assert det.feed(_pcm(speechy)) == []


def test_goertzel_finds_the_tone() -> None:
    samples = [int(8000 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(800)]
    assert goertzel_power(samples, 1000) > 1000 * goertzel_power(samples, 440)


@pytest.mark.tools("sox")
def test_inband_detects_tones_made_by_sox(tmp_path: Path) -> None:
    # sox's synth makes each key's two sines; pauses between keys.
    keys = "159#"
    parts = []
    for i, d in enumerate(keys):
        f1, f2 = DTMF_FREQUENCIES[d]
        wav = tmp_path / f"{i}.wav"
        subprocess.run(
            [
                "sox",
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                str(wav),
                "synth",
                "0.08",
                "sin",
                str(f1),
                "sin",
                str(f2),
                "remix",
                "1-2",
                "gain",
                "-n",
                "-8",
                "pad",
                "0",
                "0.06",
            ],
            check=True,
        )
        parts.append(str(wav))
    out = tmp_path / "keys.wav"
    subprocess.run(["sox", *parts, str(out)], check=True)
    audio = parse_wav(out.read_bytes())
    assert InbandDetector().feed(audio.pcm) == list(keys)


# ---------------------------------------------------------------- mixer


def test_mix_saturates() -> None:
    a = _pcm([30000, -30000, 100])
    b = _pcm([10000, -10000, 100])
    assert struct.unpack("<3h", mix([a, b])) == (32767, -32768, 200)


def test_mix_minus_each_hears_the_others() -> None:
    frames = {"a": _pcm([1000, 20000]), "b": _pcm([2000, 20000]), "c": _pcm([4000, -5]), "d": None}
    out = {k: struct.unpack("<2h", v) for k, v in mix_minus(frames, 4).items()}
    assert out["a"] == (6000, 19995)
    assert out["b"] == (5000, 19995)
    assert out["c"] == (3000, 32767)  # saturated
    assert out["d"] == (7000, 32767)
    solo = mix_minus({"a": _pcm([5, 5]), "b": None}, 4)
    assert solo["a"] == bytes(4) and struct.unpack("<2h", solo["b"]) == (5, 5)
    assert mix_minus({"a": None}, 4) == {"a": bytes(4)}
    with pytest.raises(ValueError, match="same length"):
        mix_minus({"a": b"\x00\x00", "b": b"\x00\x00\x00\x00"}, 4)


# ---------------------------------------------------------------- jitter buffer


@given(st.permutations(list(range(12))), st.integers(0, 0xFFFFFFFF), st.sets(st.integers(1, 10)))
def test_jitter_buffer_orders_and_fills_gaps(order: list[int], ts0: int, lost: set[int]) -> None:
    jb = JitterBuffer(depth=160 * 12)
    jb.put(ts0, bytes([0]) * 160, 160)  # the first frame sets the playout point
    for k in order:
        if k and k not in lost:
            jb.put((ts0 + 160 * k) & 0xFFFFFFFF, bytes([k]) * 160, 160)
    out = []
    while (item := jb.pop()) is not None:
        out.append(item)
    out += jb.flush()
    last = max(k for k in range(12) if k not in lost)
    flat = []
    for payload, n in out:
        flat += [None if payload is None else payload[0]] * (n // 160)
    assert flat == [None if k in lost else k for k in range(last + 1)]


def test_jitter_buffer_late_duplicate_restart() -> None:
    jb = JitterBuffer(depth=320)
    jb.put(1000, b"a" * 160, 160)
    assert jb.pop() == (b"a" * 160, 160)
    assert not jb.put(1000, b"a" * 160, 160) and jb.late == 1
    assert jb.put(1160, b"b" * 160, 160) and not jb.put(1160, b"b" * 160, 160)
    assert jb.duplicates == 1
    jb.put(1000 + 8000 * 60, b"c" * 160, 160)  # a restarted sender
    assert jb.restarts == 1 and jb.pop() == (b"c" * 160, 160)


# ---------------------------------------------------------------- WAV


@pytest.mark.parametrize("fmt", ["pcm", "ulaw", "alaw"])
def test_wav_round_trip(fmt: str) -> None:
    pcm = _pcm([0, 8, -8, 1000, -1000, 32000, -32000])
    audio = parse_wav(wav_bytes(pcm, fmt))
    assert audio.format == fmt
    if fmt == "pcm":
        assert audio.pcm == pcm
    else:
        assert len(audio.pcm) == len(pcm)


@pytest.mark.tools("sox")
def test_wav_from_sox_and_clear_errors(tmp_path: Path) -> None:
    for enc, fmt in (("signed-integer", "pcm"), ("u-law", "ulaw"), ("a-law", "alaw")):
        f = tmp_path / f"{fmt}.wav"
        bits = "16" if fmt == "pcm" else "8"
        subprocess.run(
            [
                "sox",
                "-n",
                "-r",
                "8000",
                "-c",
                "1",
                "-e",
                enc,
                "-b",
                bits,
                str(f),
                "synth",
                "0.1",
                "sine",
                "1000",
            ],
            check=True,
        )
        assert parse_wav(f.read_bytes()).format == fmt
        assert len(parse_wav(f.read_bytes()).pcm) == 1600
    wide = tmp_path / "wide.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            str(wide),
            "synth",
            "0.1",
            "sine",
            "1000",
        ],
        check=True,
    )
    with pytest.raises(WavError, match=r"16000 Hz.*sox"):
        parse_wav(wide.read_bytes(), "wide.wav")


def test_wav_errors() -> None:
    with pytest.raises(WavError, match="not a RIFF"):
        parse_wav(b"hello")
    with pytest.raises(WavError, match="no fmt"):
        parse_wav(b"RIFF\x04\x00\x00\x00WAVE")


# ---------------------------------------------------------------- tones


def test_every_tone_of_every_country_renders() -> None:
    for country in COUNTRIES:
        for name in TONE_NAMES:
            t = tone(name, country)
            pcm = render(t)
            cycle = sum(on + off for on, off in t.cadence) if t.cadence else 1000
            assert len(pcm) == 2 * 8 * cycle, (country, name)
    with pytest.raises(MediaError, match="country"):
        tone("busy", "xx")
    with pytest.raises(MediaError, match="no tone"):
        tone("buzz", "us")


def test_tone_frequencies_and_cadence() -> None:
    t = tone("busy", "us")
    pcm = render(t)
    samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    on, off = samples[:4000], samples[4000:]
    assert max(map(abs, off)) == 0
    p480, p620 = goertzel_power(on, 480), goertzel_power(on, 620)
    assert p480 > 100 * goertzel_power(on, 440) and p620 > 100 * goertzel_power(on, 440)


# ---------------------------------------------------------------- ports


def test_port_allocator() -> None:
    alloc = PortAllocator(10001, 10008)  # even pairs 10002, 10004, 10006 (10008 has no odd)
    assert alloc.count == 3
    ports = []
    for _ in range(3):
        p = next(alloc.candidates())
        alloc.take(p)
        ports.append(p)
    assert ports == [10002, 10004, 10006]
    assert list(alloc.candidates()) == []
    alloc.release(10004)
    assert list(alloc.candidates()) == [10004]
    with pytest.raises(MediaError):
        alloc.take(10005)
    with pytest.raises(MediaError):
        PortAllocator(10000, 10000)


# ---------------------------------------------------------------- offer/answer


def _offer(codecs: str, direction: str = "sendrecv") -> tuple[object, neg.Stream]:
    sd = parse_sdp(sdp(4000, codecs, direction))
    return sd, neg.stream_of(sd)


def test_callee_offer_adds_the_other_law_and_telephone_event() -> None:
    _, caller = _offer("0")
    body = neg.callee_offer(caller, "192.0.2.1", 30000, neg.LocalSession("192.0.2.1", 7))
    out = parse_sdp(body)
    m = out.media[0]
    assert m.port == 30000 and out.connection is not None and out.connection.address == "192.0.2.1"
    assert m.formats == ["0", "8", "101"]
    assert m.rtpmap(101) is not None and m.ptime == 20
    assert out.origin.username == "wafer" and out.origin.sess_id == "7"


def test_caller_answer_and_transcoding_choice() -> None:
    offer_sd = parse_sdp(
        sdp(4000, "0 101").replace(b"t=0 0\r\n", b"t=0 0\r\n") + b"m=video 4002 RTP/AVP 31\r\n"
    )
    caller = neg.stream_of(offer_sd)
    callee = neg.stream_of(parse_sdp(sdp(5000, "8 101")))
    body, choice = neg.caller_answer(
        offer_sd, caller, callee, "192.0.2.1", 30002, neg.LocalSession("192.0.2.1", 8)
    )
    ans = parse_sdp(body)
    assert [m.port for m in ans.media] == [30002, 0]  # video rejected, lines kept
    assert ans.media[0].formats == ["0", "101"] and choice.pt == 0
    bad = neg.stream_of(parse_sdp(sdp(5000, "18")))
    with pytest.raises(NegotiationError):
        neg.caller_answer(offer_sd, caller, bad, "192.0.2.1", 1, neg.LocalSession("x", 1))


def test_hold_detection() -> None:
    assert _offer("0", "sendonly")[1].held
    assert _offer("0", "inactive")[1].held
    assert not _offer("0", "recvonly")[1].held
    sd = parse_sdp(sdp(4000, "0").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0"))
    assert neg.stream_of(sd).held


def test_session_version_goes_up_only_on_change() -> None:
    local = neg.LocalSession("192.0.2.1", 1)
    sd, s = _offer("0 8")
    a1, _ = neg.answer_reoffer(sd, s, None, ("PCMU", "PCMA"), "192.0.2.1", 1000, local)  # type: ignore[arg-type]
    a2, _ = neg.answer_reoffer(sd, s, None, ("PCMU", "PCMA"), "192.0.2.1", 1000, local)  # type: ignore[arg-type]
    assert a1 == a2
    sd3, s3 = _offer("0 8", "sendonly")
    a3, _ = neg.answer_reoffer(sd3, s3, None, ("PCMU", "PCMA"), "192.0.2.1", 1000, local)  # type: ignore[arg-type]
    assert parse_sdp(a3).origin.sess_version == parse_sdp(a1).origin.sess_version + 1
    assert b"a=recvonly" in a3


def test_offers_without_usable_audio() -> None:
    with pytest.raises(NegotiationError):
        neg.stream_of(parse_sdp(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n"))
    srtp = sdp(4000, "0").replace(b"RTP/AVP", b"RTP/SAVP")
    with pytest.raises(NegotiationError):
        neg.stream_of(parse_sdp(srtp))
    with pytest.raises(NegotiationError) as exc:
        neg.parse_offer(b"garbage")
    assert exc.value.status == 400


def test_leg_reoffer_keeps_the_codec_in_use_first_and_every_m_line() -> None:
    """A re-INVITE without SDP (RFC 3264 §8): our offer on the caller's leg has the
    codec in use first, then the other law and telephone-event, sendrecv, and the
    rejected video line stays in its place at port 0; its version goes up."""
    offer_sd = parse_sdp(sdp(4000, "8 101") + b"m=video 4002 RTP/AVP 31\r\n")
    caller = neg.stream_of(offer_sd)
    callee = neg.stream_of(parse_sdp(sdp(5000, "8 101")))
    local = neg.LocalSession("192.0.2.1", 9)
    answer, choice = neg.caller_answer(offer_sd, caller, callee, "192.0.2.1", 30002, local)
    held = neg.stream_of(parse_sdp(sdp(4000, "8 101", "sendonly")))  # and the phone held
    body = neg.leg_reoffer(
        held, choice.pt, choice.te_pt, ("PCMU", "PCMA"), "192.0.2.1", 30002, local
    )
    out = parse_sdp(body)
    assert [(m.media, m.port) for m in out.media] == [("audio", 30002), ("video", 0)]
    assert out.media[0].formats == ["8", "0", "101"]
    assert out.direction_of(out.media[0]).value == "sendrecv"
    assert out.origin.sess_version == parse_sdp(answer).origin.sess_version + 1
    assert local.last is not None and "RTP/AVP 8 0 101" in local.last
    # Nothing negotiated yet on a leg: no offer to make.
    with pytest.raises(NegotiationError) as exc:
        neg.leg_reoffer(held, 8, None, (), "192.0.2.1", 1, neg.LocalSession("192.0.2.1", 1))
    assert exc.value.status == 500


def test_leg_reoffer_of_a_pass_through_codec_offers_only_it() -> None:
    sd = parse_sdp(sdp(4000, "18"))
    stream = neg.stream_of(sd)
    local = neg.LocalSession("192.0.2.1", 3)
    neg.answer_reoffer(sd, stream, None, ("G729",), "192.0.2.1", 1000, local)
    body = neg.leg_reoffer(stream, 18, None, ("PCMU", "PCMA"), "192.0.2.1", 1000, local)
    assert parse_sdp(body).media[0].formats == ["18", "101"]


def test_reoffer_answered_keeps_the_current_codec_else_the_first_offered() -> None:
    ours = sdp(30000, "0 8 101")
    stream, choice = neg.reoffer_answered(ours, parse_sdp(sdp(4000, "8 0 101")), "PCMU")
    assert choice.pt == 0 and choice.te_pt == 101 and stream.port == 4000
    _, choice = neg.reoffer_answered(ours, parse_sdp(sdp(4000, "8")), "PCMU")
    assert choice.pt == 8 and choice.rtpmap.encoding == "PCMA" and choice.te_pt is None
    with pytest.raises(NegotiationError) as exc:
        neg.reoffer_answered(ours, parse_sdp(sdp(4000, "18")), "PCMU")
    assert "no codec we offered" in exc.value.reason
