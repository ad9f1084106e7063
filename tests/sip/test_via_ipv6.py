"""Via `received` with an IPv6 address (RFC 3261 §25 via-received = IPv6address, no
brackets; RFC 5118 §4.5: accept it with or without them). The PBX stamps
`received=::1` on a request from ::1 and a phone echoes that Via in its ACK: the
parser must take back what the PBX writes (found by the IPv6 SIPp call test)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.sip.errors import ParseError
from pbx_core.sip.headers import parse_via
from tests.fuzzing import fuzz_settings


@pytest.mark.parametrize(
    ("text", "received"),
    [
        ("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK-1;rport=5060;received=::1", "::1"),
        ("SIP/2.0/UDP [::1]:5060;received=::1;branch=z9hG4bK-1", "::1"),
        ("SIP/2.0/UDP [2001:db8::9]:5060;received = 2001:db8::9 ;branch=z9hG4bK-1", "2001:db8::9"),
        ("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK-1;received=[::1]", "[::1]"),
        ("SIP/2.0/UDP [::ffff:10.0.0.1];received=::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ("SIP/2.0/UDP 10.0.0.1;received=10.0.0.2;rport=5070", "10.0.0.2"),
    ],
)
def test_received_ipv6_with_or_without_brackets(text: str, received: str) -> None:
    via = parse_via(text)
    assert via.received == received
    assert parse_via(str(via)) == via
    assert via.branch is None or via.branch == "z9hG4bK-1"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP [::1]:5060;received=::1 junk",
        "SIP/2.0/UDP [::1]:5060;maddr=::1",  # only received takes a bare IPv6 address
        "SIP/2.0/UDP [::1]:5060;received=::1;;",
        "SIP/2.0/UDP [::1]:5060;received=",
        "SIP/2.0/UDP 10.0.0.1;received=10.0.0.2:5070",  # not an address
        "SIP/2.0/UDP [::1];received=1:2:3:4:5:6:7:8:9",
    ],
)
def test_other_colons_are_still_refused(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    st.ip_addresses(),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.sampled_from(["UDP", "TCP"]),
)
def test_what_the_pbx_stamps_parses_back(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None, transport: str
) -> None:
    """Every Via the PBX stamps on arrival (received_from) is one it parses again."""
    host = f"[{source}]" if source.version == 6 else str(source)
    sent = parse_via(f"SIP/2.0/{transport} {host}:5060;branch=z9hG4bK-x;rport")
    stamped = sent.received_from(str(source), port)
    again = parse_via(str(stamped))
    assert again == stamped
    assert again.received == str(source)
