"""The trunk's registration lifetime comes from the provider's 200 (RFC 3261 §10.2.4):
the registrar may shorten what we asked, never lengthen it, so a hostile or broken
200 cannot push the next refresh years away."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.pbx.trunk import _granted
from pbx_core.sip.message import Response, parse_message
from tests.fuzzing import fuzz_settings


def ok(*headers: str) -> Response:
    text = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n"
        "From: <sip:pbx@provider.example>;tag=a\r\n"
        "To: <sip:pbx@provider.example>;tag=b\r\n"
        "Call-ID: c1\r\nCSeq: 2 REGISTER\r\n"
        + "".join(h + "\r\n" for h in headers)
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Response)
    return msg


@pytest.mark.parametrize(
    ("headers", "granted"),
    [
        (("Contact: <sip:pbx@192.0.2.1>;expires=120",), 120),  # shortened: kept
        (("Contact: <sip:pbx@192.0.2.1>;expires=99999999",), 600),  # lengthened: what we asked
        (("Contact: <sip:pbx@192.0.2.1>", "Expires: 300"), 300),
        (("Expires: 4294967295",), 600),
        ((), 600),  # the 200 says nothing: what we asked
    ],
)
def test_granted_is_never_more_than_asked(headers: tuple[str, ...], granted: int) -> None:
    assert _granted(ok(*headers), 600) == granted


@pytest.mark.fuzz
@fuzz_settings(200)
@given(value=st.text(alphabet="0123456789x-", min_size=1, max_size=40))
def test_any_expires_param_gives_a_lifetime_within_what_was_asked(value: str) -> None:
    got = _granted(ok(f"Contact: <sip:pbx@192.0.2.1>;expires={value}"), 600)
    assert 0 <= got <= 600
