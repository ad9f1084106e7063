"""NAT rules (pbx_core/pbx/nat.py) and the settings that drive them, without network:
when a registration is reached at its source and when at its Contact (Kamailio's
nat_uac_test 1+2+16, the `nat` setting), which SIP and SDP address a phone outside
`lan_networks` is given, and the store's checks of the RTP range and the external
addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media.errors import MediaError
from pbx_core.media.ports import PortAllocator
from pbx_core.pbx.call_media import _readdress
from pbx_core.pbx.nat import NatPolicy, contact_address, is_private, looks_natted
from pbx_core.pbx.registrar import Registrar
from pbx_core.sip.message import Request, parse_message
from pbx_core.sip.uri import parse_uri
from pbx_core.store import settings
from pbx_core.store.build import build_config
from pbx_core.store.dbtext import Table, read_dir
from pbx_core.store.errors import DbTextError
from tests.fuzzing import fuzz_settings

FACTORY = "rootfs_overlay/etc/pbx/factory"


def register(via: str, contact: str, transport: str = "UDP") -> Request:
    text = (
        "REGISTER sip:pbx.local SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK1;rport\r\n"
        "From: <sip:100@pbx.local>;tag=a\r\n"
        "To: <sip:100@pbx.local>\r\n"
        "Call-ID: c1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: {contact}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


# ------------------------------------------------------------ NAT detection


@pytest.mark.parametrize(
    ("via", "source", "contact", "natted"),
    [
        # Sent-by is the source, Contact on the same host: no NAT.
        ("192.168.1.20:5060", ("UDP", "192.168.1.20", 5060), "<sip:100@192.168.1.20>", False),
        # The same, the Contact on another port (a phone with two sockets): no NAT.
        ("192.168.1.20:5060", ("UDP", "192.168.1.20", 5060), "<sip:100@192.168.1.20:5070>", False),
        # Third-party registration from a public host for another public host: no NAT.
        ("198.51.100.9:5060", ("UDP", "198.51.100.9", 5060), "<sip:100@203.0.113.5>", False),
        # Test 2: sent-by host differs from the source.
        ("192.168.1.20:5060", ("UDP", "203.0.113.7", 5060), "<sip:100@192.168.1.20>", True),
        # Test 16: same host, another port (a NAT that keeps the address).
        ("203.0.113.7:5060", ("UDP", "203.0.113.7", 40123), "<sip:100@203.0.113.7>", True),
        # Sent-by without a port means 5060.
        ("203.0.113.7", ("UDP", "203.0.113.7", 5060), "<sip:100@203.0.113.7>", False),
        ("203.0.113.7", ("UDP", "203.0.113.7", 5062), "<sip:100@203.0.113.7>", True),
        # Test 1 (narrowed): a private Contact from a public source.
        ("203.0.113.7:5060", ("UDP", "203.0.113.7", 5060), "<sip:100@10.1.2.3>", True),
        ("203.0.113.7:5060", ("UDP", "203.0.113.7", 5060), "<sip:100@100.64.0.9>", True),
        # ... but from a private source it is just a LAN phone's other address.
        ("10.0.0.5:5060", ("UDP", "10.0.0.5", 5060), "<sip:100@10.1.2.3>", False),
        # A host name in Via cannot be compared: taken as NAT.
        ("phone.example.com:5060", ("UDP", "203.0.113.7", 5060), "<sip:100@203.0.113.7>", True),
        # QEMU user networking: the host's phone says 127.0.0.1, arrives from 10.0.2.2.
        ("127.0.0.1:5062", ("UDP", "10.0.2.2", 5062), "<sip:100@127.0.0.1:5062>", True),
        # TLS default port 5061.
        ("203.0.113.7", ("TLS", "203.0.113.7", 5061), "<sips:100@203.0.113.7>", False),
    ],
)
def test_looks_natted_as_nathelper(
    via: str, source: tuple[str, str, int], contact: str, natted: bool
) -> None:
    req = register(via, contact, transport=source[0])
    assert looks_natted(req, source) is natted


def test_reach_follows_the_nat_setting() -> None:
    lan_phone = register("192.168.1.20:5060", "<sip:100@192.168.1.20:5070>")
    src = ("UDP", "192.168.1.20", 5060)
    uri = parse_uri("sip:100@192.168.1.20:5070")
    assert NatPolicy("auto").reach(lan_phone, src, uri) == (("UDP", "192.168.1.20", 5070), False)
    assert NatPolicy("force_rport").reach(lan_phone, src, uri) == (src, True)
    assert NatPolicy("no").reach(lan_phone, src, uri) == (("UDP", "192.168.1.20", 5070), False)
    natted = register("192.168.1.20:5060", "<sip:100@192.168.1.20:5060>")
    nat_src = ("UDP", "203.0.113.7", 40000)
    nat_uri = parse_uri("sip:100@192.168.1.20:5060")
    assert NatPolicy("auto").reach(natted, nat_src, nat_uri) == (nat_src, True)
    # `no` believes the Contact even then (the installer said so).
    assert NatPolicy("no").reach(natted, nat_src, nat_uri)[0] == ("UDP", "192.168.1.20", 5060)


def test_contact_transport_host_name_and_tcp_connection() -> None:
    assert contact_address(parse_uri("sip:1@192.0.2.1;transport=tcp"), "UDP") == (
        "TCP",
        "192.0.2.1",
        5060,
    )
    assert contact_address(parse_uri("sips:1@192.0.2.1"), "TCP") == ("TLS", "192.0.2.1", 5061)
    assert contact_address(parse_uri("sip:1@phone.example.com"), "UDP") is None
    # A host name: reached at the source.
    req = register("192.0.2.1:5060", "<sip:100@phone.example.com>")
    src = ("UDP", "192.0.2.1", 5060)
    assert NatPolicy().reach(req, src, parse_uri("sip:100@phone.example.com")) == (src, True)
    # TCP from the phone's listening port: its connection, not a new one.
    req = register("192.0.2.1:5060", "<sip:100@192.0.2.1;transport=tcp>", "TCP")
    tcp = ("TCP", "192.0.2.1", 5060)
    assert NatPolicy().reach(req, tcp, parse_uri("sip:100@192.0.2.1;transport=tcp")) == (
        tcp,
        False,
    )


def test_registrar_reaches_a_contact_on_another_port_and_a_nat_at_its_source() -> None:
    r = Registrar()
    lan = register("192.168.1.20:5060", "<sip:100@192.168.1.20:5070>")
    r.register(lan, "100@pbx.local", ("UDP", "192.168.1.20", 5060), 0.0, 3)
    (b,) = r.lookup("100@pbx.local", 1.0)
    assert b.dest == ("UDP", "192.168.1.20", 5070) and b.nat is False
    assert b.source == ("UDP", "192.168.1.20", 5060)
    r.nat = NatPolicy("force_rport")
    nat = register("10.0.0.7:5060", "<sip:101@10.0.0.7>")
    r.register(nat, "101@pbx.local", ("UDP", "203.0.113.7", 40000), 0.0, 3)
    (b,) = r.lookup("101@pbx.local", 1.0)
    assert b.dest == ("UDP", "203.0.113.7", 40000) and b.nat is True
    status = {row["aor"]: row for row in r.status(1.0)}
    assert status["100@pbx.local"]["reached_at"] == "UDP 192.168.1.20:5070"


# A REGISTER with any Via sent-by, source and Contact: a decision, never an exception,
# and a NATed phone is always reached at its source.
_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.sampled_from(["pbx.local", "10.0.0.1", "127.0.0.1", "192.168.0.9", "203.0.113.1"]),
)
_ports = st.one_of(st.none(), st.integers(1, 65535))


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    via_host=_hosts,
    via_port=_ports,
    src_host=st.ip_addresses(v=4).map(str),
    src_port=st.integers(1, 65535),
    c_host=_hosts,
    c_port=_ports,
    mode=st.sampled_from(["auto", "force_rport", "no"]),
    transport=st.sampled_from(["UDP", "TCP"]),
)
def test_reach_is_total_and_natted_means_source(
    via_host: str,
    via_port: int | None,
    src_host: str,
    src_port: int,
    c_host: str,
    c_port: int | None,
    mode: str,
    transport: str,
) -> None:
    via = via_host + (f":{via_port}" if via_port else "")
    contact = f"sip:100@{c_host}" + (f":{c_port}" if c_port else "")
    req = register(via, f"<{contact}>", transport)
    source = (transport, src_host, src_port)
    dest, natted = NatPolicy(mode).reach(req, source, parse_uri(contact))
    if natted:
        assert dest == source
    if mode == "force_rport":
        assert dest == source
    if mode == "auto" and looks_natted(req, source):
        assert dest == source
    if mode == "auto" and not natted and dest != source:
        # Believed: the Contact, on an address (never a name).
        assert ipaddress.ip_address(dest[1]) == ipaddress.ip_address(c_host)


# ------------------------------------------------------------ addresses given out


def test_external_addresses_only_for_phones_outside_lan_networks() -> None:
    nat = NatPolicy.from_settings(
        {
            "lan_networks": "192.168.1.0/24",
            "external_media_address": "203.0.113.50",
            "external_signaling_address": "pbx.example.com:5080",
        }
    )
    assert nat.media_address_for("192.168.1.20") is None  # the engine's own
    assert nat.media_address_for("198.51.100.4") == "203.0.113.50"
    assert nat.media_address_for("10.0.0.1") == "203.0.113.50"  # not in this LAN
    local = ("192.168.1.2", 5060)
    assert nat.signaling_address_for("192.168.1.20", local) == local
    assert nat.signaling_address_for("198.51.100.4", local) == ("pbx.example.com", 5080)
    no_port = NatPolicy.from_settings({"external_signaling_address": "203.0.113.50"})
    assert no_port.signaling_address_for("198.51.100.4", local) == ("203.0.113.50", 5060)
    # Unset: everybody gets the PBX's own address.
    plain = NatPolicy.from_settings({})
    assert plain.media_address_for("198.51.100.4") is None
    assert plain.signaling_address_for("198.51.100.4", local) == local


def test_bad_values_reaching_the_daemon_keep_the_old_ones() -> None:
    old = NatPolicy.from_settings({"lan_networks": "10.0.0.0/8", "nat": "no"})
    new = NatPolicy.from_settings(
        {"lan_networks": "nonsense", "nat": "maybe", "external_media_address": "x.y"}, old
    )
    assert new.lan == old.lan and new.mode == "no" and new.media_address == ""


def test_is_private() -> None:
    for host in ("10.1.1.1", "172.16.0.1", "192.168.5.5", "100.64.1.1", "127.0.0.1", "fd00::1"):
        assert is_private(host), host
    for host in ("203.0.113.1", "8.8.8.8", "2001:4860::1", "pbx.example.com"):
        assert not is_private(host), host


# ------------------------------------------------------------ settings in the store


def config_with(**settings: str) -> None:
    tables = read_dir(FACTORY)
    old = tables["pbx_settings"]
    rows = [r for r in old.rows if r[0] not in settings]
    rows += list(settings.items())
    tables["pbx_settings"] = Table("pbx_settings", old.columns, rows, file="pbx_settings")
    build_config(tables)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rtp_port_min": "10001"}, "must be even"),
        ({"rtp_port_min": "20000", "rtp_port_max": "10000"}, "must be above"),
        ({"rtp_port_min": "10000", "rtp_port_max": "10000"}, "must be above"),
        ({"rtp_port_min": "80", "rtp_port_max": "200"}, "65535"),
        ({"rtp_port_max": "70000"}, "65535"),
        ({"rtp_port_min": "10000", "rtp_port_max": "60000"}, "at most 20000"),
        ({"external_media_address": "pbx.example.com"}, "not an IP address"),
        ({"external_media_address": "0.0.0.0"}, "cannot receive RTP"),
        ({"external_signaling_address": "a b"}, "neither an IP address nor a host name"),
        ({"external_signaling_address": "203.0.113.5:0"}, "1-65535"),
        ({"external_signaling_address": "[::1"}, "expected [ADDRESS]"),
        ({"nat": "yes"}, "must be one of auto, force_rport, no"),
    ],
)
def test_store_refuses_bad_nat_settings(settings: dict[str, str], message: str) -> None:
    with pytest.raises(DbTextError) as exc:
        config_with(**settings)
    assert message in str(exc.value)


def test_store_accepts_good_nat_settings() -> None:
    config_with(
        rtp_port_min="10000",
        rtp_port_max="10039",
        external_media_address="203.0.113.50",
        external_signaling_address="[2001:db8::5]:5080",
        lan_networks="192.168.1.0/24",
        nat="force_rport",
    )
    config_with(external_signaling_address="pbx.example.com")


@pytest.mark.fuzz
@fuzz_settings(400)
@given(lo=st.integers(-10, 70000), hi=st.integers(-10, 70000))
def test_rtp_range_the_store_accepts_is_one_the_allocator_serves(lo: int, hi: int) -> None:
    """Whatever range passes the store's check makes a working allocator with at most
    RTP_RANGE_MAX / 2 pairs (the socket bound): no range the store accepts can fail
    the daemon's start."""
    problem = settings.check_rtp_range(lo, hi)
    if problem is None:
        alloc = PortAllocator(lo, hi)
        assert 1 <= alloc.count <= settings.RTP_RANGE_MAX // 2
        assert alloc.first == lo
    else:
        assert isinstance(problem, str) and problem
        if not (1024 <= lo <= hi <= 65535):
            with pytest.raises(MediaError):
                PortAllocator(lo, hi)


def test_a_forks_offer_is_readdressed_whole() -> None:
    """Forks to phones on and off the LAN each get the PBX address they can reach:
    every c= line and the o= line of our offer, nothing else."""
    body = (
        b"v=0\r\no=wafer 42 1 IN IP4 192.168.1.2\r\ns=wafer\r\nc=IN IP4 192.168.1.2\r\n"
        b"t=0 0\r\nm=audio 10000 RTP/AVP 0 101\r\nc=IN IP4 192.168.1.2\r\n"
        b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    out = _readdress(body, "203.0.113.50")
    assert b"192.168.1.2" not in out
    assert out.count(b"203.0.113.50") == 3
    assert out.replace(b"203.0.113.50", b"192.168.1.2") == body
    v6 = _readdress(body, "2001:db8::5")
    assert b"c=IN IP6 2001:db8::5" in v6 and b"o=wafer 42 1 IN IP6 2001:db8::5" in v6
