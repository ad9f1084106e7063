"""RFC 4475 "SIP Torture Test Messages" against the parser and the UAS checks.

The messages are in vectors/rfc4475/*.dat (exact wire bytes) and what the RFC expects of
each is in vectors/rfc4475/expected.json; vectors/README.md explains both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.headers import NameAddr, Via
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.sip.uri import URI, parse_uri, unescape

VECTORS = Path(__file__).parent / "vectors" / "rfc4475"
MESSAGES: dict[str, dict[str, Any]] = json.loads(
    (VECTORS / "expected.json").read_text(encoding="utf-8")
)["messages"]
SCHEMES = {"sip", "sips", "tel"}


def names(kind: str) -> list[str]:
    return sorted(name for name, entry in MESSAGES.items() if entry["kind"] == kind)


def load(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def first_error(data: bytes) -> ParseError | None:
    """What a server meets first on the way in: parse, then validate."""
    try:
        parse_message(data).validate()
    except ParseError as exc:
        return exc
    return None


# --------------------------------------------------------------------------------------
# The vectors themselves


def test_every_message_has_a_file_and_an_expectation() -> None:
    on_disk = {p.stem for p in VECTORS.glob("*.dat")}
    assert on_disk == set(MESSAGES)
    assert len(on_disk) == 49
    # RFC 4475 §3.1.1 has 13 valid messages, §3.1.2 19 invalid ones.
    sections = [entry["section"] for entry in MESSAGES.values()]
    assert sum(s.startswith("3.1.1.") for s in sections) == 13
    assert sum(s.startswith("3.1.2.") for s in sections) == 19


def test_files_are_intact() -> None:
    """An editor or a line-end conversion would silently change what is tested."""
    sums = {}
    for line in (VECTORS / "SHA256SUMS").read_text(encoding="ascii").splitlines():
        digest, name = line.split()
        sums[name] = digest
    assert set(sums) == {f"{name}.dat" for name in MESSAGES}
    for name, digest in sums.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


def test_files_keep_the_octets_the_rfc_is_about() -> None:
    assert load("trws").split(b"\r\n", 1)[0].endswith(b"SIP/2.0  ")
    assert b"NUL:\\\x00 DEL:\\\x7f" in load("intmeth")
    body = load("mpart01").split(b"\r\n\r\n", 1)[1]
    assert len(body) == 553 and b"\x00" in body
    assert not load("baddn").endswith(b"\r\n\r\n")
    assert b"\r\n\r\nINVITE sip:joe@example.com" in load("dblreq")


# --------------------------------------------------------------------------------------
# Valid messages: parse, validate, extract, round-trip


def check_uri_text(uri: URI, expected: str) -> None:
    assert str(uri) == expected


def check_name_addr(na: NameAddr, exp: dict[str, Any]) -> None:
    if "display" in exp:
        assert na.display == exp["display"]
    if "uri" in exp:
        check_uri_text(na.uri, exp["uri"])
    if "tag" in exp:
        assert na.tag == exp["tag"]
    if "uri_port" in exp:
        assert na.uri.port == exp["uri_port"]
    if "uri_params" in exp:
        assert [list(p) for p in na.uri.params] == exp["uri_params"]
    if "uri_headers" in exp:
        assert [list(h) for h in na.uri.headers] == exp["uri_headers"]
    if "params" in exp:
        assert {k: na.param(k) for k, _v in na.params} == exp["params"]
        assert len(na.params) == len(exp["params"])
    if "equivalent_to" in exp:
        assert na.uri.equivalent(parse_uri(exp["equivalent_to"]))
        assert parse_uri(exp["equivalent_to"]).equivalent(na.uri)
    if "not_equivalent_to" in exp:
        assert not na.uri.equivalent(parse_uri(exp["not_equivalent_to"]))
        assert not parse_uri(exp["not_equivalent_to"]).equivalent(na.uri)


def check_via(via: Via, exp: list[Any]) -> None:
    transport, host, port, branch = exp
    assert (via.transport, via.host, via.port, via.branch) == (transport, host, port, branch)


def check_expectations(msg: Request | Response, exp: dict[str, Any]) -> None:
    if "method" in exp:
        assert isinstance(msg, Request)
        assert msg.method == exp["method"]
    if isinstance(msg, Request):
        uri = msg.uri
        if "ruri" in exp:
            check_uri_text(uri, exp["ruri"])
        if "ruri_scheme" in exp:
            assert uri.scheme == exp["ruri_scheme"]
        if "ruri_user" in exp:
            assert uri.user == exp["ruri_user"]
        if "ruri_user_unescaped" in exp:
            assert uri.user is not None
            assert unescape(uri.user) == exp["ruri_user_unescaped"]
        if "ruri_password" in exp:
            assert uri.password == exp["ruri_password"]
        if "ruri_host" in exp:
            assert uri.host == exp["ruri_host"]
        if "ruri_params" in exp:
            assert [list(p) for p in uri.params] == exp["ruri_params"]
    if "status" in exp:
        assert isinstance(msg, Response)
        assert msg.status == exp["status"]
        assert msg.reason == exp["reason"]
    if "call_id" in exp:
        assert msg.call_id == exp["call_id"]
    if "cseq" in exp:
        assert [msg.cseq.seq, msg.cseq.method] == exp["cseq"]
    if "max_forwards" in exp:
        assert msg.max_forwards == exp["max_forwards"]
    if "to" in exp:
        check_name_addr(msg.to, exp["to"])
    if "from" in exp:
        check_name_addr(msg.from_, exp["from"])
    if "vias" in exp:
        assert len(msg.via) == len(exp["vias"])
        for via, want in zip(msg.via, exp["vias"], strict=True):
            check_via(via, want)
        assert msg.top_via == msg.via[0]
    if "via_count" in exp:
        assert len(msg.via) == exp["via_count"]
    if "top_via" in exp:
        check_via(msg.via[0], exp["top_via"])
    if "bottom_via" in exp:
        check_via(msg.via[-1], exp["bottom_via"])
    if exp.get("top_via_rport_flag"):
        assert msg.top_via.has_rport and msg.top_via.rport is None
    if "contacts" in exp:
        contacts = msg.contacts
        assert contacts is not None and not msg.contact_star
        assert len(contacts) == len(exp["contacts"])
        for na, want in zip(contacts, exp["contacts"], strict=True):
            check_name_addr(na, want)
        if exp.get("contacts_distinct"):
            assert not contacts[0].uri.equivalent(contacts[1].uri)
    if "content_type" in exp:
        assert msg.content_type == exp["content_type"]
    if "body_length" in exp:
        assert len(msg.body) == exp["body_length"]
    if exp.get("body_contains_nul"):
        assert b"\x00" in msg.body
    for name, values in exp.get("headers", {}).items():
        assert msg.headers.getall(name) == values, name


@pytest.mark.parametrize("name", names("valid"))
def test_valid_message(name: str) -> None:
    """RFC 4475 §3.1.1 and the well-formed messages of §3.2-§3.4: they must parse, pass
    validation, yield the values the RFC names, and survive a round trip."""
    entry = MESSAGES[name]
    msg = parse_message(load(name))
    msg.validate()
    check_expectations(msg, entry["expect"])
    again = parse_message(bytes(msg))
    assert again == msg
    again.validate()
    check_expectations(again, entry["expect"])
    # Serializing is stable: a second trip gives the same bytes.
    assert bytes(again) == bytes(msg)


def test_wsinv_compact_and_long_forms_are_one_header() -> None:
    """RFC 4475 §3.1.1.1: 'v:' and 'Via' (and 'm', 's', 'l') are the same headers."""
    msg = parse_message(load("wsinv"))
    assert msg.headers.getall("v") == msg.headers.getall("VIA") == msg.headers.getall("via")
    assert len(msg.headers.getall("Via")) == 3
    assert msg.headers.get("m") == msg.headers.get("Contact")
    assert "s" in msg.headers and "SUBJECT" in msg.headers
    assert msg.headers.get("Content-Length") == "150"


def test_dblreq_ignores_the_second_request() -> None:
    """RFC 4475 §3.1.1.8: the extra octets are not a body and not a second message."""
    msg = parse_message(load("dblreq"))
    assert msg.body == b""
    assert b"INVITE" not in bytes(msg)


def test_esc02_is_not_register() -> None:
    """RFC 4475 §3.1.1.5: % is not an escape in a method or a header name."""
    msg = parse_message(load("esc02"))
    assert isinstance(msg, Request)
    assert msg.method != "REGISTER"
    assert msg.cseq.method == msg.method
    assert "C%6Fntact" in msg.headers and "Contact" in msg.headers
    assert msg.headers.getall("C%6Fntact") != msg.headers.getall("Contact")


# --------------------------------------------------------------------------------------
# Invalid messages: the parser's own error, with the status to answer with


@pytest.mark.parametrize("name", names("invalid"))
def test_invalid_message(name: str) -> None:
    entry = MESSAGES[name]
    err = first_error(load(name))
    assert err is not None, f"{name} ({entry['section']}) was accepted: {entry['note']}"
    assert isinstance(err, ParseError)
    assert isinstance(err.reason, str) and err.reason
    if entry["status"] is not None:
        assert err.status in entry["status"], f"{name}: {err!r}, want {entry['status']}"


def test_badvers_is_505_not_400() -> None:
    """RFC 4475 §3.1.2.16: an unknown version is answered 505, whatever else is wrong."""
    err = first_error(load("badvers"))
    assert err is not None and err.status == 505


# --------------------------------------------------------------------------------------
# Semantic cases: well formed, but a server answers with an error


@pytest.mark.parametrize("name", names("semantic"))
def test_semantic_message(name: str) -> None:
    from pbx_core.sip.validate import check_request

    entry = MESSAGES[name]
    msg = parse_message(load(name))  # the RFC: parsers must not fail on these
    assert isinstance(msg, Request)
    if entry["validate_ok"]:
        msg.validate()
        check_expectations(msg, entry.get("expect", {}))
    err = check_request(msg, set(), SCHEMES)
    assert err is not None, f"{name} ({entry['section']}) passed: {entry['note']}"
    assert isinstance(err, SipError)
    assert err.status in entry["status"], f"{name}: {err!r}, want {entry['status']}"


def test_bext01_lists_the_unsupported_options() -> None:
    """RFC 4475 §3.3.5: the 420 carries Unsupported with the options of Require (as a
    UAS) or of Proxy-Require (as a proxy)."""
    from pbx_core.sip.validate import check_request

    msg = parse_message(load("bext01"))
    assert isinstance(msg, Request)
    err = check_request(msg, set(), SCHEMES)
    assert err is not None and err.status == 420
    listed = {
        option.strip().lower()
        for name, value in err.headers
        if name.lower() == "unsupported"
        for option in value.split(",")
    }
    require = {"nothingsupportsthis", "nothingsupportsthiseither"}
    proxy_require = {"noproxiessupportthis", "nordoanyproxiessupportthis"}
    assert require <= listed or proxy_require <= listed


def test_supported_extension_is_not_refused() -> None:
    """The 420 of bext01 is about *unknown* options: supporting them lifts it."""
    from pbx_core.sip.validate import check_request

    msg = parse_message(load("bext01"))
    assert isinstance(msg, Request)
    supported = {
        "nothingsupportsthis",
        "nothingsupportsthiseither",
        "noproxiessupportthis",
        "nordoanyproxiessupportthis",
    }
    assert check_request(msg, supported, SCHEMES) is None


def test_known_scheme_is_not_416() -> None:
    """unkscm's 416 comes from the scheme: a server serving it goes on."""
    from pbx_core.sip.validate import check_request

    msg = parse_message(load("unkscm"))
    assert isinstance(msg, Request)
    err = check_request(msg, set(), SCHEMES | {"nobodyknowsthisscheme"})
    assert err is None or err.status != 416


@pytest.mark.parametrize("name", ["lwsdisp", "transports", "semiuri", "escnull"])
def test_plain_valid_requests_pass_the_uas_checks(name: str) -> None:
    """Valid requests with nothing a UAS objects to get no error at all."""
    from pbx_core.sip.validate import check_request

    msg = parse_message(load(name))
    assert isinstance(msg, Request)
    assert check_request(msg, set(), SCHEMES) is None
