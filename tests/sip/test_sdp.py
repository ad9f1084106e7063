"""SDP parse/serialize: RFC 4566 and RFC 4317 vectors, phone SDPs, errors, helpers,
round-trip and fuzz properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import parse_message
from pbx_core.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Bandwidth,
    Connection,
    Direction,
    Media,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    parse_sdp,
)
from tests.fuzzing import fuzz_settings

VECTORS = Path(__file__).parent / "vectors" / "sdp"
CANONICAL = sorted(p.name for p in VECTORS.glob("*.sdp") if not p.name.startswith("sloppy"))


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


@pytest.mark.parametrize("name", CANONICAL)
def test_vector_serializes_back_to_its_crlf_text(name: str) -> None:
    data = load(name)
    sd = parse_sdp(data)
    assert bytes(sd) == data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert parse_sdp(str(sd)) == sd


def test_vectors_are_present() -> None:
    assert len(CANONICAL) >= 12


def test_rfc4566_example_values() -> None:
    sd = parse_sdp(load("rfc4566-5-example.sdp"))
    assert sd.version == 0
    assert sd.origin == Origin("jdoe", "2890844526", 2890842807, "IN", "IP4", "10.47.16.5")
    assert sd.name == "SDP Seminar"
    assert sd.info == "A Seminar on the session description protocol"
    assert sd.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sd.emails == ["j.doe@example.com (Jane Doe)"]
    assert sd.connection == Connection("IN", "IP4", "224.2.17.12", ttl=127)
    assert sd.timings == [Timing(2873397496, 2873404696)]
    assert sd.attributes == [("recvonly", None)]
    assert [(m.media, m.port, m.proto, m.formats) for m in sd.media] == [
        ("audio", 49170, "RTP/AVP", ["0"]),
        ("video", 51372, "RTP/AVP", ["99"]),
    ]
    audio, video = sd.media
    assert sd.direction is Direction.RECVONLY
    assert sd.direction_of(audio) is Direction.RECVONLY  # session-level default
    assert audio.rtpmap(0) == STATIC_PAYLOAD_TYPES[0]
    assert video.rtpmap("99") == RtpMap(99, "h263-1998", 90000)
    assert sd.connection_of(video) is sd.connection


def test_rfc4317_offer_and_answer() -> None:
    offer = parse_sdp(load("rfc4317-2.1-offer.sdp"))
    answer = parse_sdp(load("rfc4317-2.1-answer.sdp"))
    assert offer.name == " "  # RFC 4317 §1: s= holds a single space
    assert [m.formats for m in offer.media] == [["0", "8", "97"], ["31", "32"]]
    assert offer.media[0].rtpmap(97) == RtpMap(97, "iLBC", 8000)
    assert [m.port for m in answer.media] == [49174, 49170]
    assert answer.media[1].rtpmap(32) == RtpMap(32, "MPV", 90000)
    assert all(answer.direction_of(m) is Direction.SENDRECV for m in answer.media)


def test_rfc4317_directions_ports_and_media_connections() -> None:
    two = parse_sdp(load("rfc4317-2.4-offer.sdp"))
    assert [two.direction_of(m) for m in two.media] == [Direction.SENDRECV, Direction.SENDONLY]
    declined = parse_sdp(load("rfc4317-2.6-answer.sdp"))
    assert declined.media[0].port == 0
    assert declined.media[1].rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    split = parse_sdp(load("rfc4317-2.8-answer.sdp"))
    video = split.media[1]
    assert video.connection == Connection("IN", "IP4", "otherhost.biloxi.example.com")
    assert split.connection_of(video) is video.connection
    assert split.connection_of(split.media[0]) is split.connection
    hold = parse_sdp(load("rfc4317-3.1-answer.sdp"))
    assert hold.direction_of(hold.media[0]) is Direction.SENDONLY
    black_hole = parse_sdp(load("rfc4317-5.2-offer.sdp"))
    assert black_hole.connection is not None and black_hole.connection.address == "0.0.0.0"


def test_polycom_session_level_direction_and_fmtp() -> None:
    sd = parse_sdp(load("phone-polycom-vvx.sdp"))
    (audio,) = sd.media
    assert sd.direction is Direction.SENDRECV
    assert audio.direction is None
    assert sd.direction_of(audio) is Direction.SENDRECV
    assert audio.fmtp(18) == "annexb=no"
    assert audio.fmtp("102") == "bitrate=32000"
    assert audio.fmtp(0) is None
    assert audio.rtpmap(127) == RtpMap(127, "telephone-event", 8000)
    assert audio.rtpmap(9) == RtpMap(9, "G722", 8000)
    assert audio.ptime is None


def test_yealink_telephone_event_and_ptime() -> None:
    sd = parse_sdp(load("phone-yealink-t46.sdp"))
    (audio,) = sd.media
    assert audio.formats == ["0", "8", "18", "9", "101"]
    assert audio.fmtp(101) == "0-15"
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert {k: m.encoding for k, m in audio.rtpmaps().items()} == {
        "0": "PCMU",
        "8": "PCMA",
        "18": "G729",
        "9": "G722",
        "101": "telephone-event",
    }


def test_linphone_ipv6_rtcp_and_bandwidth() -> None:
    sd = parse_sdp(load("phone-linphone-ipv6.sdp"))
    assert sd.origin.addrtype == "IP6"
    assert sd.connection == Connection("IN", "IP6", "2001:db8::10")
    assert sd.attribute("rtcp-xr") == (
        "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics"
    )
    audio, video = sd.media
    opus = audio.rtpmap(96)
    assert opus == RtpMap(96, "opus", 48000, "2")
    assert opus.channels == 2
    assert audio.rtcp == (7079, "2001:db8::10")
    assert audio.attribute_values("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr"]
    assert video.bandwidths == [Bandwidth("AS", 512)]
    assert video.rtpmap(96) == RtpMap(96, "VP8", 90000)  # per media, not global
    assert sd.direction_of(video) is Direction.RECVONLY
    assert sd.direction_of(audio) is Direction.SENDRECV


def test_asterisk_hold() -> None:
    sd = parse_sdp(load("pbx-asterisk-hold.sdp"))
    (audio,) = sd.media
    assert sd.bandwidths == [Bandwidth("CT", 384)]
    assert sd.origin.sess_version == 1589301233
    assert sd.direction_of(audio) is Direction.SENDONLY
    assert audio.maxptime == 150
    assert audio.rtpmap(8) == RtpMap(8, "PCMA", 8000)


def test_sloppy_sdp_is_accepted_and_normalized() -> None:
    sd = parse_sdp(load("sloppy-grandstream.sdp"))
    assert sd.connection == Connection("IN", "IP4", "172.16.0.9")
    (audio,) = sd.media
    assert audio.ptime == 30
    assert audio.rtpmap(0) == STATIC_PAYLOAD_TYPES[0]
    assert str(sd) == (
        "v=0\r\no=gs 8000 8001 IN IP4 172.16.0.9\r\ns=SIP Call\r\n"
        "c=IN IP4 172.16.0.9\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=ptime:30\r\n"
    )


def test_multicast_connection_forms() -> None:
    base = "v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 5000/2 RTP/AVP 0\n"
    sd = parse_sdp(base + "c=IN IP4 224.2.1.1/127/3\nc=IN IP6 FF15::101/3\nc=IN X25 a/b/c\n")
    (m,) = sd.media
    assert m.num_ports == 2
    assert m.connections == [
        Connection("IN", "IP4", "224.2.1.1", ttl=127, count=3),
        Connection("IN", "IP6", "FF15::101", count=3),
        Connection("IN", "X25", "a/b/c"),
    ]
    assert parse_sdp(str(sd)) == sd
    assert "m=audio 5000/2 RTP/AVP 0\r\n" in str(sd)


def test_repeat_times_and_zone() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=3034423619 3042462419\r\n"
        "r=604800 3600 0 90000\r\nr=7d 1h 0 25h\r\nt=0 0\r\n"
        "z=2882844526 -1h 2898848070 0\r\nk=prompt\r\n"
    )
    sd = parse_sdp(text)
    assert sd.timings[0].repeats == ["604800 3600 0 90000", "7d 1h 0 25h"]
    assert sd.timings[1] == Timing(0, 0)
    assert sd.zone == "2882844526 -1h 2898848070 0"
    assert sd.key == "prompt"
    assert str(sd) == text


def test_attribute_with_empty_value_differs_from_flag() -> None:
    sd = parse_sdp("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nt=0 0\na=x:\na=y\na=z:a:b\n")
    assert sd.attributes == [("x", ""), ("y", None), ("z", "a:b")]
    assert sd.attribute("x") == "" and sd.attribute("y") is None and sd.has_attribute("y")
    assert not sd.has_attribute("w")
    assert "a=x:\r\na=y\r\na=z:a:b\r\n" in str(sd)


MINIMAL = "v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nt=0 0\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("\r\n\n", "empty"),
        ("o=- 1 1 IN IP4 h\nv=0\n", "start with v="),
        ("v=x\n", "version"),
        ("v=0\nv=0\n", "line 2"),
        ("v=0\no=- 1 IN IP4 h\ns=-\nt=0 0\n", "6 fields"),
        ("v=0\no=- 1 x IN IP4 h\ns=-\nt=0 0\n", "sess-version"),
        (MINIMAL + "o=- 1 1 IN IP4 h\n", "twice"),
        (MINIMAL + "s=again\n", "twice"),
        (MINIMAL + "c=IN IP4 h\n", "twice"),
        ("v=0\no=- 1 1 IN IP4 h\nt=0 0\n", "s= line"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\n", "t= line"),
        ("v=0\ns=-\nt=0 0\n", "o= line"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4\nt=0 0\n", "3 fields"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h/300\nt=0 0\n", "TTL"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h/1/2/3\nt=0 0\n", "'/'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP6 h/1/2\nt=0 0\n", "'/'"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 /1\nt=0 0\n", "empty"),
        (MINIMAL + "b=AS\n", "<bwtype>"),
        (MINIMAL + "b=AS:fast\n", "bandwidth"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nt=0\n", "start and a stop"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nt=0 ٣\n", "stop time"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nr=1 2 3\nt=0 0\n", "follow a t="),
        (MINIMAL + "m=audio\n", "media, port and proto"),
        (MINIMAL + "m=audio 70000 RTP/AVP 0\n", "out of range"),
        (MINIMAL + "m=audio 1_000 RTP/AVP 0\n", "port"),
        (MINIMAL + "m=audio 5000/0 RTP/AVP 0\n", "at least 1"),
        ("v=0\no=- 1 " + "9" * 5000 + " IN IP4 h\ns=-\nt=0 0\n", "more than 30 digits"),
        (MINIMAL + "m=audio 5000/ RTP/AVP 0\n", "number of ports"),
        (MINIMAL + "m=audio 5000 RTP/AVP 0\no=- 1 1 IN IP4 h\n", "inside a media"),
        (MINIMAL + "m=audio 5000 RTP/AVP 0\nt=0 0\n", "inside a media"),
        (MINIMAL + "m=audio 5000 RTP/AVP 0\ni=a\ni=b\n", "twice in one media"),
        (MINIMAL + "garbage\n", "not a <type>=<value>"),
        (MINIMAL + "A=b\n", "not a <type>=<value>"),
        (MINIMAL + "a b\n", "not a <type>=<value>"),
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n", "no c= line"),
    ],
)
def test_malformed_sdp(text: str, fragment: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_sdp(text)
    assert exc.value.status == 400
    assert fragment in exc.value.reason


def test_error_names_the_line() -> None:
    with pytest.raises(ParseError) as exc:
        parse_sdp(MINIMAL + "m=audio 99999 RTP/AVP 0\n")
    assert exc.value.reason.startswith("SDP line 6 'm=audio 99999 RTP/AVP 0'")


def test_rejected_media_needs_no_connection_and_may_have_no_formats() -> None:
    sd = parse_sdp("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 0 RTP/AVP\n")
    assert sd.media[0].formats == []
    assert str(sd).endswith("m=audio 0 RTP/AVP\r\n")


def test_non_utf8_bytes_round_trip_exactly() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=Caf\xe9\r\nc=IN IP4 h\r\nt=0 0\r\n"
    sd = parse_sdp(data)
    assert bytes(sd) == data


# --- helpers -------------------------------------------------------------------------


def test_huge_numbers_in_attributes_are_ignored_not_crashed_on() -> None:
    huge = "9" * 5000
    m = Media(formats=[huge], attributes=[("rtpmap", f"{huge} X/8000"), ("rtcp", huge)])
    assert m.rtpmap(huge) is None
    assert m.rtcp is None
    assert RtpMap(1, "X", 8000, huge).channels == 1


def test_rtpmap_edge_cases() -> None:
    m = Media(
        formats=["96", "97", "8", "120", "x"],
        attributes=[
            ("rtpmap", "96 bogus"),
            ("rtpmap", "97 /8000"),
            ("rtpmap", "98"),
            ("rtpmap", "8 PCMA/8000"),
            ("rtpmap", "8 PCMU/8000"),  # a second map for one type: the first wins
            ("rtpmap", None),
        ],
    )
    assert m.rtpmap(96) is None
    assert m.rtpmap(97) is None
    assert m.rtpmap(8) == RtpMap(8, "PCMA", 8000)
    assert m.rtpmap(120) is None
    assert m.rtpmap("x") is None
    assert m.rtpmaps() == {"8": RtpMap(8, "PCMA", 8000)}
    assert RtpMap(0, "PCMU", 8000).channels == 1
    assert RtpMap(0, "X", 8000, "abc").channels == 1
    assert str(RtpMap(96, "opus", 48000, "2")) == "96 opus/48000/2"


def test_ptime_and_rtcp_tolerate_garbage() -> None:
    m = Media(attributes=[("ptime", "abc"), ("rtcp", "port")])
    assert m.ptime is None
    assert m.rtcp is None
    assert Media(attributes=[("ptime", "22.5")]).ptime == 22.5
    assert Media(attributes=[("ptime", "nan")]).ptime is None
    assert Media(attributes=[("ptime", "-20")]).ptime is None
    assert Media(attributes=[("rtcp", "53020")]).rtcp == (53020, None)
    assert Media(attributes=[("rtcp", "99999")]).rtcp is None
    assert Media().rtcp is None
    assert Media().connection is None


def test_set_direction() -> None:
    m = Media(attributes=[("rtpmap", "0 PCMU/8000"), ("sendonly", None), ("inactive", None)])
    m.set_direction(Direction.RECVONLY)
    assert m.attributes == [("rtpmap", "0 PCMU/8000"), ("recvonly", None)]
    m.set_direction(None)
    assert m.attributes == [("rtpmap", "0 PCMU/8000")]
    assert m.direction is None
    m.set_direction(Direction.INACTIVE)
    assert m.attributes[-1] == ("inactive", None)
    sd = SessionDescription(media=[m])
    sd.set_direction(Direction.SENDONLY)
    assert sd.direction_of(m) is Direction.INACTIVE
    assert sd.direction_of(Media()) is Direction.SENDONLY
    assert SessionDescription().direction_of(Media()) is Direction.SENDRECV


def test_direction_reversed() -> None:
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.RECVONLY.reversed() is Direction.SENDONLY
    assert Direction.SENDRECV.reversed() is Direction.SENDRECV
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE


def test_building_an_answer_from_scratch() -> None:
    sd = SessionDescription(
        origin=Origin("wafer", "42", 1, "IN", "IP4", "192.0.2.1"),
        name="Wafer PBX",
        connection=Connection(address="192.0.2.1"),
        media=[
            Media(
                port=40000,
                formats=["0", "101"],
                attributes=[
                    ("rtpmap", "0 PCMU/8000"),
                    ("rtpmap", "101 telephone-event/8000"),
                    ("fmtp", "101 0-16"),
                    ("ptime", "20"),
                    ("sendrecv", None),
                ],
            )
        ],
    )
    assert str(sd) == (
        "v=0\r\no=wafer 42 1 IN IP4 192.0.2.1\r\ns=Wafer PBX\r\nc=IN IP4 192.0.2.1\r\n"
        "t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    assert parse_sdp(bytes(sd)) == sd


def test_serializing_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        str(SessionDescription(name="a\r\nm=audio 1 RTP/AVP 0"))


# --- properties ------------------------------------------------------------------------

_free = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
    max_size=15,
)
_word = st.text(
    alphabet=st.characters(
        blacklist_characters="\r\n/:", blacklist_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]
    ),
    min_size=1,
    max_size=10,
).filter(lambda s: not any(c.isspace() for c in s))
_num = st.integers(min_value=0, max_value=2**40)
_attr = st.tuples(_word, st.none() | _free)


@st.composite
def _connections(draw: st.DrawFn) -> Connection:
    kind = draw(st.sampled_from(["IP4", "IP6", "ip4"]))
    ttl = count = None
    if kind.upper() == "IP4" and draw(st.booleans()):
        ttl = draw(st.integers(0, 255))
        count = draw(st.none() | st.integers(1, 10))
    elif kind == "IP6" and draw(st.booleans()):
        count = draw(st.integers(1, 10))
    return Connection(draw(_word), kind, draw(_word), ttl, count)


_bandwidths = st.lists(st.builds(Bandwidth, _word, _num), max_size=2)
_media = st.builds(
    Media,
    media=_word,
    port=st.integers(0, 65535),
    proto=_word,
    formats=st.lists(_word, max_size=4),
    num_ports=st.none() | st.integers(1, 8),
    info=st.none() | _free,
    connections=st.lists(_connections(), max_size=2),
    bandwidths=_bandwidths,
    key=st.none() | _free,
    attributes=st.lists(_attr, max_size=4),
)
_sessions = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _word, _word, _num, _word, _word, _word),
    name=_free,
    version=_num,
    info=st.none() | _free,
    uri=st.none() | _free,
    emails=st.lists(_free, max_size=2),
    phones=st.lists(_free, max_size=2),
    connection=_connections(),  # present, so every media is reachable
    bandwidths=_bandwidths,
    timings=st.lists(
        st.builds(Timing, _num, _num, st.lists(_free, max_size=2)), min_size=1, max_size=2
    ),
    zone=st.none() | _free,
    key=st.none() | _free,
    attributes=st.lists(_attr, max_size=4),
    media=st.lists(_media, max_size=3),
)


@settings(max_examples=200)
@given(_sessions)
def test_parse_serialize_round_trip(sd: SessionDescription) -> None:
    assert parse_sdp(str(sd)) == sd
    assert parse_sdp(bytes(sd)) == sd


_vector_lines = [
    line for name in CANONICAL for line in load(name).decode().replace("\r", "").split("\n")
]


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(_vector_lines) | st.text(max_size=20), min_size=1, max_size=25
        ).map("\n".join),
        st.lists(
            st.sampled_from(
                [
                    "v=",
                    "o=",
                    "s=",
                    "c=",
                    "t=",
                    "m=",
                    "a=",
                    "b=",
                    "r=",
                    "0",
                    " ",
                    "/",
                    ":",
                    "IN",
                    "IP4",
                    "IP6",
                    "audio",
                    "RTP/AVP",
                    "\n",
                    "\r\n",
                    "99999",
                ]
            ),
            max_size=60,
        ).map("".join),
    )
)
def test_parser_raises_only_parse_error(data: str | bytes) -> None:
    try:
        sd = parse_sdp(data)
    except ParseError as exc:
        assert exc.status == 400
        return
    # Whatever parses serializes to something that parses to the same thing.
    assert parse_sdp(str(sd)) == sd


def test_invite_body_through_the_message_parser() -> None:
    body = load("phone-yealink-t46.sdp")
    raw = (
        b"INVITE sip:200@pbx.lan SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.23;branch=z9hG4bK2\r\n"
        b"From: <sip:201@pbx.lan>;tag=9\r\nTo: <sip:200@pbx.lan>\r\nCall-ID: c@d\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    msg = parse_message(raw)
    assert msg.content_type == "application/sdp"
    sd = parse_sdp(msg.body)
    assert sd.media[0].port == 11800
    assert bytes(sd) == body
