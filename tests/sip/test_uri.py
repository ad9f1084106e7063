"""URIs: parsing, serialization and RFC 3261 §19.1.4 comparison (sip, sips, tel and
opaque schemes), with the RFC's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.sip.errors import ParseError
from pbx_core.sip.uri import parse_uri

# RFC 3261 §19.1.4, "The following URIs are equivalent:" (verbatim, grouped as printed).
RFC3261_EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]

# RFC 3261 §19.1.4, "The following URIs are not equivalent:" (verbatim, with the RFC's
# reason for each pair).
RFC3261_NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # users
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # headers
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that's the address
]


@pytest.mark.parametrize(("a", "b"), RFC3261_EQUIVALENT)
def test_rfc3261_equivalent_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua.equivalent(ub)
    assert ub.equivalent(ua)


@pytest.mark.parametrize(("a", "b"), RFC3261_NOT_EQUIVALENT)
def test_rfc3261_not_equivalent_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not ua.equivalent(ub)
    assert not ub.equivalent(ua)


def test_equivalence_is_not_transitive() -> None:
    """RFC 3261 §19.1.4: 'Note that equality is not transitive'."""
    plain = parse_uri("sip:carol@chicago.com")
    on = parse_uri("sip:carol@chicago.com;security=on")
    off = parse_uri("sip:carol@chicago.com;security=off")
    assert plain.equivalent(on) and plain.equivalent(off)
    assert not on.equivalent(off)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # user, ttl, method, maddr, transport must match when present in either URI
        ("sip:carol@chicago.com;maddr=239.255.255.1", "sip:carol@chicago.com", False),
        ("sip:carol@chicago.com;ttl=15", "sip:carol@chicago.com", False),
        ("sip:carol@chicago.com;method=INVITE", "sip:carol@chicago.com", False),
        ("sip:+1212555@gw.example.com;user=phone", "sip:+1212555@gw.example.com", False),
        # ... any other parameter only counts when both have it
        ("sip:proxy.example.com;lr", "sip:proxy.example.com", True),
        ("sip:proxy.example.com;lr", "sip:proxy.example.com;LR", True),
        # parameter names and values compare case-insensitively
        ("sip:a@b.example.com;Transport=TCP", "sip:a@b.example.com;transport=tcp", True),
        # the user part is case-sensitive, the host is not
        ("sip:Alice@atlanta.com", "sip:alice@atlanta.com", False),
        ("sip:alice@ATLANTA.COM", "sip:alice@atlanta.com", True),
        # passwords are compared too, case-sensitively
        ("sip:alice:secret@atlanta.com", "sip:alice:Secret@atlanta.com", False),
        ("sip:alice:secret@atlanta.com", "sip:alice:secret@atlanta.com", True),
        # unreserved characters equal their escapes; hex case does not matter
        ("sip:%61lice@atlanta.com", "sip:alice@atlanta.com", True),
        ("sip:ali%63e@atlanta.com", "sip:ali%63e@atlanta.com", True),
        ("sip:a%2fb@atlanta.com", "sip:a%2Fb@atlanta.com", True),
        # an escaped reserved character is not the character itself
        ("sip:alice%3Bx@atlanta.com", "sip:alice;x@atlanta.com", False),
        ("sip:alice%40x@atlanta.com", "sip:alice@atlanta.com", False),
        # sip and sips never compare equal
        ("sips:alice@atlanta.com", "sip:alice@atlanta.com", False),
        # the port is compared even when it is the default one
        ("sips:alice@atlanta.com:5061", "sips:alice@atlanta.com", False),
        # header component: values unescaped, order irrelevant, names case-insensitive
        ("sip:a@b.example.com?Subject=hi%20there", "sip:a@b.example.com?subject=hi%20there", True),
        ("sip:a@b.example.com?subject=hi", "sip:a@b.example.com?subject=ho", False),
        # IPv6 references: case of hex digits does not matter, ports do
        ("sip:[2001:DB8::10]:5070", "sip:[2001:db8::10]:5070", True),
        ("sip:[2001:db8::10]:5070", "sip:[2001:db8::10]", False),
    ],
)
def test_equivalence_rules(a: str, b: str, same: bool) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua.equivalent(ub) is same
    assert ub.equivalent(ua) is same


def test_escaped_parameter_names_and_values() -> None:
    """RFC 4475 §3.1.1.3: 'n%61me=v%61lue%25%34%31' is name=value%41, never valueA:
    unescaping is not recursive."""
    uri = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.equivalent(parse_uri("sip:caller@host5.example.net;lr;name=value%2541"))
    assert not uri.equivalent(parse_uri("sip:caller@host5.example.net;lr;name=valueA"))


# ---------------------------------------------------------------------------------------
# Parsing


def test_user_password_host_port_params_headers() -> None:
    uri = parse_uri("sip:alice:secretword@atlanta.com:5070;transport=tcp;lr?subject=project%20x")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secretword"  # RFC 3261 example, not a secret
    assert uri.host == "atlanta.com"
    assert uri.port == 5070
    assert uri.param("transport") == "tcp"
    assert uri.param("TRANSPORT") == "tcp"
    assert uri.param("lr") == ""
    assert uri.has_param("lr")
    assert uri.param("maddr") is None
    assert not uri.has_param("maddr")
    assert [tuple(h) for h in uri.headers] == [("subject", "project%20x")]


@pytest.mark.parametrize(
    ("text", "user", "host", "port", "params"),
    [
        # RFC 3261 §19.1.3 examples
        ("sip:alice@atlanta.com", "alice", "atlanta.com", None, {}),
        (
            "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
            "alice",
            "atlanta.com",
            None,
            {},
        ),
        (
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            "+1-212-555-1212",
            "gateway.com",
            None,
            {"user": "phone"},
        ),
        ("sips:1212@gateway.com", "1212", "gateway.com", None, {}),
        ("sip:alice@192.0.2.4", "alice", "192.0.2.4", None, {}),
        (
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            None,
            "atlanta.com",
            None,
            {"method": "REGISTER"},
        ),
        ("sip:alice;day=tuesday@atlanta.com", "alice;day=tuesday", "atlanta.com", None, {}),
        # more parameters of RFC 3261 §19.1.1
        (
            "sip:bob@example.com:5062;transport=udp;ttl=15;maddr=239.255.255.1;method=BYE",
            "bob",
            "example.com",
            5062,
            {"transport": "udp", "ttl": "15", "maddr": "239.255.255.1", "method": "BYE"},
        ),
        ("sip:proxy.example.com;lr", None, "proxy.example.com", None, {"lr": ""}),
    ],
)
def test_rfc3261_examples_parse(
    text: str, user: str | None, host: str, port: int | None, params: dict[str, str]
) -> None:
    uri = parse_uri(text)
    assert uri.user == user
    assert uri.host == host
    assert uri.port == port
    assert {k: uri.param(k) for k, _v in uri.params} == params
    assert str(uri) == text


def test_password_of_rfc3261_example() -> None:
    uri = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.password == "1234"  # RFC 3261 example, not a secret
    assert parse_uri("sip:alice@atlanta.com").password is None


def test_uri_headers_keep_their_order_and_escapes() -> None:
    uri = parse_uri("sips:alice@atlanta.com?subject=project%20x&priority=urgent")
    assert uri.scheme == "sips"
    assert [tuple(h) for h in uri.headers] == [("subject", "project%20x"), ("priority", "urgent")]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]:5070", "2001:db8::10", 5070),
        ("sip:[2001:db8::10]", "2001:db8::10", None),
        ("sip:alice@[2001:db8::1]:5060;transport=tcp", "2001:db8::1", 5060),
        # RFC 5118 §4.3: the port inside the brackets is part of the address
        ("sip:[2001:db8::10:5070]", "2001:db8::10:5070", None),
        ("sip:user@[::ffff:192.0.2.1]", "::ffff:192.0.2.1", None),
    ],
)
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert uri.host.strip("[]") == host
    assert uri.port == port
    assert str(uri) == text


def test_scheme_is_case_insensitive() -> None:
    uri = parse_uri("SIP:alice@atlanta.com")
    assert uri.scheme == "sip"
    assert uri.equivalent(parse_uri("sip:alice@atlanta.com"))
    assert parse_uri("SiPs:alice@atlanta.com").scheme == "sips"


def test_escapes_are_kept_on_the_wire() -> None:
    """A proxy forwards what it received: serialization keeps the escapes as they came."""
    for text in (
        "sip:%61lice@atlanta.com;transport=TCP",
        "sip:sips%3Auser%40example.com@example.net",
        "sip:null-%00-null@example.com",
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
    ):
        assert str(parse_uri(text)) == text


def test_escaped_nul_users_stay_distinct() -> None:
    """RFC 4475 §3.1.1.4: %00 and %00%00 are two different users."""
    one, two = parse_uri("sip:%00@host5.example.com"), parse_uri("sip:%00%00@host5.example.com")
    assert not one.equivalent(two)


@pytest.mark.parametrize(
    "text",
    [
        "tel:+1-201-555-0123",
        "tel:7042;phone-context=example.com",
        "tel:+358-555-1234567;postd=pp22",
    ],
)
def test_tel_uris(text: str) -> None:
    uri = parse_uri(text)
    assert uri.scheme == "tel"
    assert str(uri) == text
    assert uri.equivalent(parse_uri(text))


def test_tel_number_and_parameters() -> None:
    uri = parse_uri("tel:7042;phone-context=example.com")
    assert uri.user == "7042"
    assert uri.param("phone-context") == "example.com"


def test_tel_visual_separators_do_not_count() -> None:
    """RFC 3966 §4: numbers are compared after removing visual separators."""
    assert parse_uri("tel:+1-201-555-0123").equivalent(parse_uri("tel:+12015550123"))
    assert parse_uri("tel:+1.201.555.0123").equivalent(parse_uri("tel:+1(201)5550123"))
    assert not parse_uri("tel:+1-201-555-0123").equivalent(parse_uri("tel:+1-201-555-0124"))


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("mailto:alice@example.com", "mailto"),
        ("urn:service:sos", "urn"),
        ("http://www.example.com", "http"),
        ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme"),
        ("soap.beep://192.0.2.103:3002", "soap.beep"),
        ("isbn:2983792873", "isbn"),
    ],
)
def test_other_schemes_are_kept_opaque(text: str, scheme: str) -> None:
    """Other schemes parse (so a server can answer 416 rather than 400) and round-trip."""
    uri = parse_uri(text)
    assert uri.scheme == scheme
    assert not uri.is_sip
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sips:",
        "alice@atlanta.com",  # no scheme
        ":alice@atlanta.com",
        "1sip:alice@atlanta.com",  # a scheme starts with a letter
        "sip:alice@",  # no host
        "sip:@atlanta.com",  # empty user
        "sip:alice@atlanta.com:",  # empty port
        "sip:alice@atlanta.com:port",
        "sip:alice@atlanta.com:99999",  # port out of range
        "sip:al%zzice@atlanta.com",  # not an escape
        "sip:alice%4@atlanta.com",  # truncated escape
        "sip:ali ce@atlanta.com",  # whitespace
        "sip:alice@atlanta.com; lr",  # RFC 4475 §3.1.2.8
        "sip:alice@atlanta.com;transport=t cp",
        "sip:alice@exa<mple.com",
        "<sip:alice@atlanta.com>",  # RFC 4475 §3.1.2.7
        "sip:alice@atlanta.com?subject",  # header without '='
        "sip:alice@[2001:db8::10",  # unterminated IPv6 reference
        "sip:alice@[2001:zz8::10]",
        "sip:2001:db8::10",  # RFC 5118 §4.2: IPv6 without brackets
        "sip:alice@atlanta.com;=value",  # parameter without a name
        "tel:",
        "tel:call-me",
    ],
)
def test_invalid_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


# ---------------------------------------------------------------------------------------
# Properties

_TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'", min_size=1
)
_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
_HOSTS = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
        lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]"
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | _TOKEN,
    host=_HOSTS,
    port=st.none() | st.integers(1, 65535),
    params=st.lists(st.tuples(_TOKEN, st.none() | _TOKEN), max_size=4),
)
def test_generated_uris_parse_back(
    scheme: str,
    user: str | None,
    host: str,
    port: int | None,
    params: list[tuple[str, str | None]],
) -> None:
    text = f"{scheme}:"
    if user is not None:
        text += f"{user}@"
    text += host
    if port is not None:
        text += f":{port}"
    text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
    uri = parse_uri(text)
    assert (uri.scheme, uri.user, uri.host, uri.port) == (scheme, user, host, port)
    assert [tuple(p) for p in uri.params] == params
    assert str(uri) == text
    again = parse_uri(str(uri))
    assert again == uri
    assert uri.equivalent(again)
    # the host's case never matters (RFC 3261 §19.1.4)
    shouted = parse_uri(str(uri.with_(host=host.upper())))
    assert uri.equivalent(shouted) and shouted.equivalent(uri)


def test_parsed_uris_are_remembered_within_bounds() -> None:
    from pbx_core.sip import uri as uri_module

    first = parse_uri("sip:201@pbx.local")
    assert parse_uri("sip:201@pbx.local") is first  # immutable, so shared
    # A long URI is parsed every time (a flood of them must not fill memory) ...
    long_uri = "sip:" + "a" * 1000 + "@pbx.local"
    assert parse_uri(long_uri) == parse_uri(long_uri)
    assert long_uri not in uri_module._PARSED
    # ... and ever new short ones only empty the table now and then.
    for i in range(uri_module._PARSED_MAX + 10):
        parse_uri(f"sip:{i}@pbx.local")
    assert len(uri_module._PARSED) <= uri_module._PARSED_MAX
    # A bad URI is refused every time, never remembered.
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_uri("sip:a@b:99999")
