"""Multicast paging (features/paging `multicast` + pbx/call_page.py +
media/multicast.py) on the office harness: the caller is answered, a tone and then
its audio reach a multicast group joined on the loopback interface (as a phone set
to listen to it would) as RTP with payload type 0, one SSRC, the sequence and the
timestamps continuous; the socket closes with the page; `pbx db check` refuses a
unicast group, a port out of range, a TTL beyond the bound."""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.paging import parse_group
from pbx_core.media.errors import MediaError
from pbx_core.media.multicast import MulticastSender
from tests.fuzzing import fuzz_settings
from tests.harness.office import Office, offices

GROUP, PORT = "239.255.42.7", 15002
HEADER = (
    "name(string) number(string,null) members(string) duplex(int) multicast(string,null) "
    "multicast_ttl(int) multicast_codec(string)"
)
GROUPS = [
    HEADER,
    rf"mc:651:-:0:{GROUP}\:{PORT}:1:PCMU",
    r"both:652:101:0:239.255.42.8\:15004:1:PCMA",
]
LOUD = bytes([0x10, 0x20, 0x30, 0x40] * 40)  # one 20 ms µ-law frame, loud


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_page_group": GROUPS})


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A phone listening to the group on the loopback interface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", PORT))
    membership = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    yield sock
    sock.close()


def heard(sock: socket.socket) -> list[tuple[int, bool, int, int, int, bytes]]:
    """(pt, marker, seq, ts, ssrc, payload) of every packet that came."""
    out = []
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return out
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        assert b0 == 0x80  # RTP version 2, no padding, extension or CSRC
        out.append((b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[12:]))


def test_the_tone_then_the_caller_reach_the_group(office: Office, listener: socket.socket) -> None:
    a = office.phone("100")
    page = a.call("651")
    assert page.status == 200  # answered at once; no SIP member
    call = office.engine.calls.by_key[page.key]
    sender = call.page_multicast
    assert sender is not None and call.forks == []
    assert page.rtp is not None
    for _ in range(100):  # 2 s: the tone, then the caller talking
        page.rtp.audio(page.pbx_port, LOUD)
        office.advance(0.02)
    office.settle_io()
    got = heard(listener)
    assert len(got) >= 90
    assert {p[0] for p in got} == {0}  # PCMU
    assert got[0][1] and not any(p[1] for p in got[1:])  # the marker on the first only
    assert len({p[4] for p in got}) == 1  # one SSRC
    for prev, nxt in itertools.pairwise(got):
        assert (nxt[2] - prev[2]) & 0xFFFF == 1  # sequence continuous
        assert (nxt[3] - prev[3]) & 0xFFFFFFFF == 160  # 20 ms a packet
    assert all(len(p[5]) == 160 for p in got)
    assert any(p[5] not in (LOUD, bytes([0xFF]) * 160) for p in got[:10])  # the tone
    assert LOUD not in [p[5] for p in got[:5]]  # the caller is muted during the tone
    assert LOUD in [p[5] for p in got[-20:]]  # then heard
    page.hang_up()
    assert sender.closed and call.page_multicast is None
    office.advance(1)
    heard(listener)
    office.advance(1)
    assert heard(listener) == []  # nothing after the end
    assert office.left_behind() == []


def test_members_are_paged_by_sip_as_well(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    page = a.call("652")
    (inc,) = b.incoming
    assert inc.state == "answered"
    call = office.engine.calls.by_key[page.key]
    assert call.page_multicast is not None and call.page_multicast.pt == 8  # PCMA
    page.hang_up()
    assert len(b.byes) == 1
    assert office.left_behind() == []


def test_the_table_is_checked(office: Office) -> None:
    from pbx_core.store.build import check_dir

    office.write_table(
        "pbx_page_group",
        [
            HEADER,
            r"a:653:101:0:10.0.0.1\:5001:1:PCMU",
            r"b:654:101:0:239.1.1.1\:80:1:PCMU",
            r"c:655:101:0:239.1.1.1\:5001:64:PCMU",
            r"d:656:101:0:239.1.1.1\:5001:1:G722",
            r"e:657:-:0:[ff02\:\:1]\:5001:1:PCMU",
            r"f:658:-:0:239.1.1.1\:5001:1:PCMU",
        ],
    )
    errors = [str(e) for e in check_dir(office.config).errors]
    assert len(errors) == 4, errors
    assert any("not a multicast address" in e for e in errors), errors
    assert any("port 80" in e for e in errors), errors
    assert any("64" in e for e in errors), errors
    assert any("G722" in e for e in errors), errors


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("239.1.1.1", "address:port"),
        ("239.1.1.1:70000", "port 70000 outside"),
        ("239.1.1.1:999999", "address:port"),
        ("192.168.1.1:5001", "not a multicast"),
        ("ff02::1:5001", "[ff02::1]"),
        ("[fe80::1]:5001", "not a multicast"),
        ("host:5001", "not an IP"),
    ],
)
def test_bad_groups_say_why(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_group(value)
    assert parse_group("[FF02::1]:5001") == ("ff02::1", 5001)


def test_the_sender_refuses_what_the_table_would() -> None:
    with pytest.raises(MediaError):
        MulticastSender("10.0.0.1", 5001)
    with pytest.raises(MediaError):
        MulticastSender("239.1.1.1", 5001, ttl=33)
    with pytest.raises(MediaError):
        MulticastSender("239.1.1.1", 5001, codec="G722")


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(
            lambda a, p: f"{a}:{p}",
            st.ip_addresses(v=4).map(str),
            st.integers(-10, 100_000),
        ),
        st.builds(
            lambda a, p: f"[{a}]:{p}",
            st.ip_addresses(v=6).map(str),
            st.integers(-10, 100_000),
        ),
    )
)
def test_a_group_value_is_a_multicast_group_or_a_reason(value: str) -> None:
    """Whatever the table holds: a multicast address and a port in range, or a
    ValueError saying why (what `pbx db check` prints); never another error."""
    try:
        address, port = parse_group(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert ipaddress.ip_address(address).is_multicast
    assert 1024 <= port <= 65535
