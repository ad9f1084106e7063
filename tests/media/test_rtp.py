"""RTP/RTCP packets and RFC 3550 reception statistics, with wraparound properties."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media import rtcp
from pbx_core.media.errors import RtpError
from pbx_core.media.rtp import ReceptionStats, RtpPacket, parse_rtp, seq_delta, ts_delta
from tests.fuzzing import fuzz_settings

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(
        st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_parse_serialize_round_trip(p: RtpPacket) -> None:
    assert parse_rtp(bytes(p)) == p


@pytest.mark.fuzz
@fuzz_settings(100)
@given(st.binary(max_size=40))
def test_parser_raises_only_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_rtp(data)


def test_malformed_packets() -> None:
    with pytest.raises(RtpError, match="version"):
        parse_rtp(b"\x40" + bytes(11))
    with pytest.raises(RtpError, match="shorter"):
        parse_rtp(b"\x80\x00")
    with pytest.raises(RtpError, match="padding"):
        parse_rtp(b"\xa0" + bytes(11) + b"\x05")


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_delta_wraps(a: int, d: int) -> None:
    assert seq_delta(a, (a + d) & 0xFFFF) == d


@given(st.integers(0, 0xFFFFFFFF), st.integers(-(2**31), 2**31 - 1))
def test_ts_delta_wraps(a: int, d: int) -> None:
    assert ts_delta(a, (a + d) & 0xFFFFFFFF) == d


@given(
    start=st.integers(0, 0xFFFF),
    count=st.integers(1, 400),
    lost=st.sets(st.integers(1, 399), max_size=40),
    ts0=st.integers(0, 0xFFFFFFFF),
)
def test_stats_count_losses_across_wraparound(
    start: int, count: int, lost: set[int], ts0: int
) -> None:
    stats = ReceptionStats()
    sent = [i for i in range(count) if i not in lost]
    for i in sent:
        stats.update(7, (start + i) & 0xFFFF, (ts0 + 160 * i) & 0xFFFFFFFF, i * 0.02)
    assert stats.received == len(sent)
    assert stats.expected == sent[-1] + 1
    assert stats.lost == sent[-1] + 1 - len(sent)
    assert stats.extended_max == start + sent[-1]
    assert stats.jitter == pytest.approx(0, abs=1e-6)  # perfectly paced


def test_jitter_follows_rfc3550_a8() -> None:
    stats = ReceptionStats()
    arrivals = [0.0, 0.025, 0.040, 0.065, 0.080]
    for i, t in enumerate(arrivals):
        stats.update(1, i, 160 * i, t)
    j = 0.0
    transit = [t * 8000 - 160 * i for i, t in enumerate(arrivals)]
    for a, b in itertools.pairwise(transit):
        j += (abs(b - a) - j) / 16
    assert stats.jitter == pytest.approx(j)


def test_big_jump_is_a_restart_only_when_confirmed() -> None:
    stats = ReceptionStats()
    for i in range(5):
        stats.update(1, i, 0, 0)
    assert not stats.update(1, 20000, 0, 0)  # one stray packet: not accepted
    assert stats.update(1, 20001, 0, 0)  # confirmed: a restart
    assert stats.received == 1 and stats.base_seq == 20001


def test_new_ssrc_starts_over() -> None:
    stats = ReceptionStats()
    for i in range(5):
        stats.update(1, i, 0, 0)
    stats.update(2, 900, 0, 0)
    assert stats.received == 1 and stats.ssrc == 2


def test_fraction_lost_per_interval() -> None:
    stats = ReceptionStats()
    for i in (0, 1, 2, 3, 5, 6, 7, 9):
        stats.update(1, i, 160 * i, i * 0.02)
    assert stats.interval_report() == (2 * 256 // 10, 2)
    for i in range(10, 20):
        stats.update(1, i, 160 * i, i * 0.02)
    assert stats.interval_report() == (0, 2)


def test_rtcp_compound_round_trip() -> None:
    block = rtcp.ReportBlock(0xABCDEF01, 25, -3, 70000, 123, 0x11112222, 0x00010000)
    sr = rtcp.SenderReport(1, rtcp.ntp_from_unix(1_700_000_000.5), 160, 10, 1600, (block,))
    rr = rtcp.ReceiverReport(2, (block,))
    sdes = rtcp.Sdes(((1, {rtcp.SDES_CNAME: "wafer@127.0.0.1"}),))
    bye = rtcp.Bye((1,), "done")
    data = rtcp.build_compound([sr, sdes, bye])
    assert rtcp.parse_rtcp(data) == [sr, sdes, bye]
    assert rtcp.parse_rtcp(rtcp.build_compound([rr])) == [rr]


def test_rtcp_round_trip_time() -> None:
    sent = rtcp.ntp_from_unix(1000.0)
    block = rtcp.ReportBlock(1, 0, 0, 0, 0, rtcp.ntp_middle(sent), 65536 // 2)  # held 0.5 s
    rtt = rtcp.round_trip(block, rtcp.ntp_from_unix(1000.6))
    assert rtt == pytest.approx(0.1, abs=1e-3)


@pytest.mark.fuzz
@fuzz_settings(100)
@given(st.binary(max_size=80))
def test_rtcp_parser_raises_only_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        rtcp.parse_rtcp(data)
