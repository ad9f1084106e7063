"""Registrar rules of RFC 3261 §10.3 on parsed REGISTERs (no network)."""

from __future__ import annotations

import pytest

from pbx_core.pbx.registrar import Registrar, ReplyError
from pbx_core.sip.errors import SipError
from pbx_core.sip.message import Request, parse_message

SRC = ("UDP", "192.0.2.7", 40000)


def register(
    contact: str | None, expires: str | None = None, cseq: int = 1, call_id: str = "c1"
) -> Request:
    lines = [
        "REGISTER sip:pbx.local SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK1;rport",
        "From: <sip:100@pbx.local>;tag=a",
        "To: <sip:100@pbx.local>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def test_binding_remembers_source_and_expires() -> None:
    r = Registrar(min_expires=60, max_expires=3600)
    resp = r.register(register("<sip:100@10.0.0.7:5060>", "300"), "100@pbx.local", SRC, 0.0, 3)
    assert resp.status == 200
    assert resp.headers.getall("contact") == ["<sip:100@10.0.0.7:5060>;expires=300"]
    (b,) = r.lookup("100@pbx.local", 10.0)
    assert b.source == SRC  # NAT: reach it where it registered from
    assert r.lookup("100@pbx.local", 301.0) == []


def test_too_brief_gets_423_with_min_expires_and_long_is_clamped() -> None:
    r = Registrar(min_expires=60, max_expires=3600)
    with pytest.raises(ReplyError) as exc:
        r.register(register("<sip:100@10.0.0.7>", "30"), "100@pbx.local", SRC, 0.0, 3)
    assert exc.value.response.status == 423
    assert exc.value.response.headers.get("Min-Expires") == "60"
    resp = r.register(register("<sip:100@10.0.0.7>;expires=99999"), "100@pbx.local", SRC, 0.0, 3)
    assert resp.headers.getall("contact") == ["<sip:100@10.0.0.7>;expires=3600"]


def test_star_unregisters_everything_and_needs_expires_zero() -> None:
    r = Registrar()
    r.register(register("<sip:100@10.0.0.7>"), "100@pbx.local", SRC, 0.0, 3)
    r.register(register("<sip:100@10.0.0.8>", call_id="c2"), "100@pbx.local", SRC, 0.0, 3)
    assert len(r.lookup("100@pbx.local", 1.0)) == 2
    with pytest.raises(SipError) as exc:
        r.register(register("*", "60", cseq=2), "100@pbx.local", SRC, 1.0, 3)
    assert exc.value.status == 400
    r.register(register("*", "0", cseq=2), "100@pbx.local", SRC, 1.0, 3)
    assert r.lookup("100@pbx.local", 1.0) == []


def test_old_cseq_on_the_same_call_id_is_refused() -> None:
    r = Registrar()
    r.register(register("<sip:100@10.0.0.7>", cseq=5), "100@pbx.local", SRC, 0.0, 3)
    with pytest.raises(SipError) as exc:
        r.register(register("<sip:100@10.0.0.7>", cseq=5), "100@pbx.local", SRC, 1.0, 3)
    assert exc.value.status == 500


def test_query_without_contact_lists_bindings_and_max_contacts_keeps_newest() -> None:
    r = Registrar()
    for i in range(4):
        r.register(
            register(f"<sip:100@10.0.0.{i}>", call_id=f"c{i}"), "100@pbx.local", SRC, float(i), 3
        )
    hosts = sorted(b.uri.host for b in r.lookup("100@pbx.local", 5.0))
    assert hosts == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    resp = r.register(register(None, call_id="q"), "100@pbx.local", SRC, 5.0, 3)
    assert len(resp.headers.getall("contact")) == 3


def test_expires_zero_removes_one_binding_and_q_orders_lookup() -> None:
    r = Registrar()
    r.register(register("<sip:100@10.0.0.1>;q=0.5", call_id="a"), "100@pbx.local", SRC, 0.0, 3)
    r.register(register("<sip:100@10.0.0.2>;q=0.9", call_id="b"), "100@pbx.local", SRC, 1.0, 3)
    assert [b.uri.host for b in r.lookup("100@pbx.local", 2.0)] == ["10.0.0.2", "10.0.0.1"]
    r.register(
        register("<sip:100@10.0.0.2>", "0", call_id="b", cseq=2), "100@pbx.local", SRC, 2.0, 3
    )
    assert [b.uri.host for b in r.lookup("100@pbx.local", 3.0)] == ["10.0.0.1"]
    status = r.status(3.0)
    assert status[0]["aor"] == "100@pbx.local"
    assert status[0]["source"] == "UDP 192.0.2.7:40000"
