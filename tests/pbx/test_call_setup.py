"""Call set-up against hostile SDP (issue 11), through the whole transaction user:
`Engine` with the factory configuration, a real media engine and a fake SIP stack
(tests/pbx/pbx_harness.py).

The rule under test: every INVITE gets exactly one final response, and a call that
ends leaves no call, no media leg and no RTP port behind, whatever the SDP of the
caller or the callee says and whichever step fails.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media.negotiation import PTIME_MAX, PTIME_MIN
from pbx_core.pbx.call_state import State
from pbx_core.sip.message import Request, Response
from pbx_core.sip.sdp import parse_sdp
from tests.fuzzing import fuzz_settings
from tests.pbx.pbx_harness import GOOD_SDP, Pbx, sdp


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[Pbx]:
    loop = asyncio.new_event_loop()
    try:
        p = Pbx(tmp_path, loop)
        yield p
        p.close()
    finally:
        loop.close()


def _sdp_with(*lines: str, formats: str = "0 8 101") -> bytes:
    return sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        f"m=audio 40000 RTP/AVP {formats}\na=rtpmap:101 telephone-event/8000\n" + "\n".join(lines)
    )


def _bye_to_caller_call(pbx: Pbx, key: object, final: Response) -> None:
    """The caller hangs up an answered call (ACK, then BYE on our dialog)."""
    call_id = final.call_id
    tag = final.to.tag
    branch = call_id.replace("@", "at")
    for method, cseq in (("ACK", 2), ("BYE", 3)):
        req = pbx.message(
            f"""{method} sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{method}{cseq}{branch}
From: <sip:100@pbx.local>;tag={final.from_.tag}
To: <sip:x@pbx.local>;tag={tag}
Call-ID: {call_id}
CSeq: {cseq} {method}
Max-Forwards: 70"""
        )
        bye_key = None if method == "ACK" else (method, key)
        pbx.engine.on_request(req, ("UDP", "127.0.0.1", 5062), bye_key, None)
        if bye_key is not None:
            assert pbx.final(bye_key) == 200


# --------------------------------------------------------------- regressions (spec)


def test_a_huge_ptime_is_only_a_hint_clamped_for_the_callee_and_for_ringback(pbx: Pbx) -> None:
    # RFC 4566 §6: ptime is a hint. The PBX clamps it (10..120 ms) before it sizes
    # anything: the offer to the callee and the frames of the ringback it plays.
    key = pbx.invite("101", _sdp_with("a=ptime:100000000", "a=maxptime:1e300"))
    ((fork, _cb),) = pbx.forks()
    assert b"a=ptime:120\r\n" in fork.body
    assert b"100000000" not in fork.body
    pbx.answer(fork, 180)  # no SDP: the PBX plays ringback to the caller
    (call,) = pbx.engine.calls.calls.values()
    assert call.media is not None and call.ringback
    caller_leg = call.media.leg("caller")
    assert caller_leg.playing and caller_leg.ptime == PTIME_MAX
    assert [r.status for r in pbx.stack.provisionals[key]] == [180]
    pbx.answer(fork, 486)
    assert pbx.final(key) == 486
    assert pbx.left_behind() == []


def test_maxptime_lowers_the_ptime_and_a_tiny_ptime_is_raised(pbx: Pbx) -> None:
    pbx.invite("101", _sdp_with("a=ptime:60", "a=maxptime:30"))
    pbx.invite("101", _sdp_with("a=ptime:1"))
    bodies = [f.body for f, _cb in pbx.forks()]
    assert b"a=ptime:30\r\n" in bodies[0]
    assert b"a=ptime:10\r\n" in bodies[1]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_sdp_with(*[f"a=x-{i}:{i}" for i in range(300)]), 488),  # 300 attributes
        (_sdp_with(formats=" ".join(["0"] * 200)), 488),  # 200 formats
        (_sdp_with() + b"m=audio 0 RTP/AVP 0\r\n" * 20, 488),  # 21 media sections
        (_sdp_with("a=fmtp:101 0-16\rX"), 400),  # a bare CR inside a value
        (_sdp_with("a=rtcp:9\x00"), 400),  # NUL
        (_sdp_with("c=IN IP4 phone.example.com"), 488),  # would be resolved per packet
        (_sdp_with("c=IN IP4 \u0080"), 488),  # not even a host name
    ],
    ids=["attributes", "formats", "media", "bare-CR", "NUL", "host-name", "non-ASCII"],
)
def test_sdp_beyond_the_bounds_or_the_grammar_gets_a_final_answer(
    pbx: Pbx, body: bytes, status: int
) -> None:
    for number in ("101", "*43"):
        key = pbx.invite(number, body)
        assert pbx.final(key) == status
        assert pbx.forks() == []
        assert pbx.left_behind() == []


def test_an_exception_anywhere_in_set_up_answers_500_and_frees_the_legs(
    pbx: Pbx, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A defect after the media legs were opened (here: building the fork's INVITE).
    def broken(*_a: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pbx.engine.calls, "_fork", broken)
    key = pbx.invite("101", GOOD_SDP)
    assert pbx.final(key) == 500
    assert pbx.left_behind() == []


def test_an_exception_in_the_echo_test_answer_is_a_500_without_a_leg(
    pbx: Pbx, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(pbx.engine.calls, "_send_a_2xx", broken)
    key = pbx.invite("*43", GOOD_SDP)
    assert pbx.final(key) == 500
    assert pbx.left_behind() == []


def test_an_exception_on_the_callees_answer_ends_both_sides(
    pbx: Pbx, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = pbx.invite("101", GOOD_SDP)
    ((fork, _cb),) = pbx.forks()

    def broken(*_a: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(pbx.engine.calls.call_media, "answer_2xx", broken)
    pbx.answer(fork, 200, GOOD_SDP)
    assert pbx.final(key) == 500
    assert any(isinstance(m, Request) and m.method == "ACK" for m in pbx.stack.sent)
    assert [r.method for r, _d, _cb in pbx.stack.requests].count("BYE") == 1
    assert pbx.left_behind() == []


def test_the_engine_keeps_no_list_of_ended_calls(pbx: Pbx) -> None:
    key = pbx.invite("101", GOOD_SDP)
    ((fork, _cb),) = pbx.forks()
    pbx.answer(fork, 480)
    assert pbx.final(key) == 480
    assert not hasattr(pbx.engine, "ended_calls")
    assert pbx.engine.status()["media"]["ports_in_use"] == 0


# --------------------------------------------------------------- property test

_ATTRIBUTES = [
    "a=ptime:{v}",
    "a=ptime:{v}",
    "a=fmtp:{pt} {v}",
    "a=fmtp:{pt} {v}",
    "a=maxptime:{v}",
    "a=rtpmap:{pt} PCMU/{v}",
    "a=rtpmap:{pt} telephone-event/{v}",
    "a=rtpmap:{pt} {v}/8000/{v}",
    "a=fmtp:{pt} {v}",
    "a=rtcp:{v} IN IP4 127.0.0.1",
    "b=AS:{d}",
    "c=IN IP4 127.0.0.1/{d}/{d}",
    "a=sendonly",
    "a=inactive",
    "a=candidate:{v} 1 UDP {v} 127.0.0.1 {v} typ host",
]
_PTS = st.sampled_from(["0", "8", "101", "18", "96", "127"])
_HOSTILE = st.sampled_from(
    [
        "20",
        "100000000",
        "1e300",
        "-1",
        "nan",
        "0x10",
        "99999999999",
        "\u0663",
        "0-16\rX",
        "1\x00",
        "PCMA",
    ]
)
_VALUES = st.integers(0, 4).flatmap(lambda i: st.text(max_size=12) if i == 0 else _HOSTILE)


_DIGITS = st.sampled_from(["0", "1", "255", "256", "65536", "9" * 30, "9" * 31])


@st.composite
def _attribute(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=30))  # anything at all
    line = draw(st.sampled_from(_ATTRIBUTES))
    while "{pt}" in line:
        line = line.replace("{pt}", draw(_PTS), 1)
    while "{d}" in line:
        line = line.replace("{d}", draw(_DIGITS), 1)
    while "{v}" in line:  # each place its own value
        line = line.replace("{v}", draw(_VALUES), 1)
    return line


@st.composite
def _media(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["audio", "audio", "video", "x"]))
    ports = ["40000", "40000", "40000", "0", "40000/2", "65536", "1/0"]
    port = draw(st.sampled_from(ports))
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP", "RTP/AVPF"]))
    formats = draw(st.lists(st.one_of(_PTS, _PTS, _PTS, _VALUES), max_size=5))
    if draw(st.integers(0, 15)) == 0:
        formats *= 60  # beyond MAX_FORMATS when there are 3 or more
    lines = [f"m={kind} {port} {proto} {' '.join(formats)}".rstrip()]
    lines += draw(st.lists(_attribute(), max_size=6))
    if draw(st.integers(0, 15)) == 0:
        lines += ["a=x-many"] * 300  # beyond MAX_SECTION_LINES
    return lines


@st.composite
def hostile_sdp(draw: st.DrawFn) -> bytes:
    """An SDP with the usual session lines and 1 to 3 media sections whose lines
    carry hostile values (huge, negative, non-ASCII digits, CR, NUL, …)."""
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += draw(st.lists(_attribute().filter(lambda a: a.startswith("a=")), max_size=2))
    for _ in range(draw(st.integers(1, 3))):
        lines += draw(_media())
    if draw(st.integers(0, 15)) == 0:
        del lines[draw(st.integers(1, len(lines) - 1))]
    end = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    return end.join(lines).encode("utf-8", "surrogatepass") + end.encode()


@pytest.mark.fuzz
@fuzz_settings(100)
@given(
    number=st.sampled_from(["101", "*43"]),
    offer=hostile_sdp(),
    ringing=st.one_of(st.none(), hostile_sdp(), st.just(b"")),
    answer=st.one_of(hostile_sdp(), st.just(b"")),
    answer_status=st.sampled_from([200, 486, 503]),
)
def test_random_sdp_through_call_set_up_leaves_nothing_behind(
    number: str,
    offer: bytes,
    ringing: bytes | None,
    answer: bytes,
    answer_status: int,
) -> None:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        pbx = Pbx(Path(tmp), loop)
        try:
            _one_call(pbx, number, offer, ringing, answer, answer_status)
        finally:
            pbx.close()
            loop.close()


def _one_call(
    pbx: Pbx, number: str, offer: bytes, ringing: bytes | None, answer: bytes, answer_status: int
) -> None:
    key = pbx.invite(number, offer)
    for fork, _cb in pbx.forks():
        # What the PBX offers the callee is within the bounds, whatever came in.
        sd = parse_sdp(fork.body)
        assert len(sd.media) == 1
        ptime = sd.media[0].ptime
        assert ptime is None or PTIME_MIN <= ptime <= PTIME_MAX
        if ringing is not None:
            pbx.answer(fork, 180, ringing)
        pbx.answer(fork, answer_status, answer if answer_status == 200 else b"")
    finals = pbx.finals.get(key, [])
    assert len(finals) == 1, "exactly one final response to the INVITE"
    final = finals[0]
    if final.status == 200:
        _bye_to_caller_call(pbx, key, final)
    else:
        assert 400 <= final.status < 700
    calls = [c for c in pbx.engine.calls.calls.values() if c.state is not State.ENDED]
    assert calls == []
    assert pbx.left_behind() == []
