"""Requests inside an answered call (RFC 3261 §12.2.2): each method is served by the
core or refused with its status and Allow, never relayed without what makes it mean
something (a REFER reached the other phone without its Refer-To before)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.pbx.call_state import ALLOW
from pbx_core.sip.message import Response
from tests.pbx.pbx_harness import GOOD_SDP, Pbx


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[Pbx]:
    loop = asyncio.new_event_loop()
    try:
        p = Pbx(tmp_path, loop)
        yield p
        p.close()
    finally:
        loop.close()


def _answered(pbx: Pbx) -> Response:
    key = pbx.invite("101", GOOD_SDP)
    ((fork, _cb),) = pbx.forks()
    pbx.answer(fork, 200, GOOD_SDP)
    (final,) = pbx.finals[key]
    assert final.status == 200
    return final


def _in_dialog(pbx: Pbx, final: Response, method: str, cseq: int, extra: str = "") -> Response:
    req = pbx.message(
        f"""{method} sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{method}{cseq}
From: <sip:100@pbx.local>;tag={final.from_.tag}
To: <sip:101@pbx.local>;tag={final.to.tag}
Call-ID: {final.call_id}
CSeq: {cseq} {method}
Max-Forwards: 70{extra}"""
    )
    key = (method, cseq)
    sent_before = len(pbx.stack.requests)
    pbx.engine.on_request(req, ("UDP", "127.0.0.1", 5062), key, None)
    (resp,) = pbx.finals[key]
    # Answered by the PBX: nothing went to the other phone.
    relayed = [r.method for r, _d, _cb in pbx.stack.requests[sent_before:]]
    assert method not in relayed, relayed
    return resp


@pytest.mark.parametrize(
    ("method", "extra", "status"),
    [
        ("REFER", "", 400),  # a transfer names its target (RFC 3515 §2.4.1)
        ("REFER", "\nRefer-To: <sip:102@pbx.local>\nRefer-To: <sip:103@pbx.local>", 400),
        ("REFER", "\nRefer-To: <sip:pbx.local>", 400),  # no number to ring
        ("MESSAGE", "", 405),
        ("NOTIFY", "\nEvent: refer\nSubscription-State: active", 405),
        ("SUBSCRIBE", "\nEvent: dialog", 405),
        ("FROBNICATE", "", 501),
        ("OPTIONS", "", 200),  # an in-dialog keep-alive
        ("PRACK", "\nRAck: 1 1 INVITE", 481),  # we send no reliable provisionals
    ],
)
def test_in_dialog_methods_are_answered_by_the_core(
    pbx: Pbx, method: str, extra: str, status: int
) -> None:
    final = _answered(pbx)
    resp = _in_dialog(pbx, final, method, 5, extra)
    assert resp.status == status
    if status in (405, 501, 200):
        assert resp.headers.get("allow") == ", ".join(ALLOW)
    # The call is still up.
    (call,) = pbx.engine.calls.calls.values()
    assert call.state.value == "answered"


def test_info_is_still_relayed_to_the_other_phone(pbx: Pbx) -> None:
    final = _answered(pbx)
    req = pbx.message(
        f"""INFO sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinfo9
From: <sip:100@pbx.local>;tag={final.from_.tag}
To: <sip:101@pbx.local>;tag={final.to.tag}
Call-ID: {final.call_id}
CSeq: 9 INFO
Max-Forwards: 70""",
        b"hello",
        "application/x-test",
    )
    before = len(pbx.stack.requests)
    pbx.engine.on_request(req, ("UDP", "127.0.0.1", 5062), ("INFO", 9), None)
    assert [r.method for r, _d, _cb in pbx.stack.requests[before:]] == ["INFO"]
