"""The notifier core alone (pbx/subscriptions.py) with a package of the test's own:
the dialog it keeps (Record-Route copied into the 200, Route on every NOTIFY and the
first loose route as the next hop, the NAT-side source as the peer otherwise), the
in-dialog rules (another method: 405, an old CSeq: 500, a resource gone at refresh:
481 and noresource), a refresh from a new address, and close()."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pbx_core.pbx.subscriptions import Subscriptions
from pbx_core.sip.errors import SipError
from pbx_core.sip.message import Request, Response
from tests.harness.clock import ClockLoop
from tests.harness.office import message
from tests.harness.stack import FakeStack

NAT_SOURCE = ("UDP", "203.0.113.7", 40123)  # where the phone's SUBSCRIBE came from


class Lamp:
    event = "x-lamp"
    content_type = "text/plain"
    default_expires = 600

    def __init__(self) -> None:
        self.states = {"7": b"on"}

    def state(self, username: str, resource: str) -> bytes:
        if resource not in self.states:
            raise SipError("no such lamp", 404)
        return self.states[resource]


Core = tuple[Subscriptions, FakeStack, ClockLoop, "Lamp"]


@pytest.fixture
def core() -> Iterator[Core]:
    loop = ClockLoop()
    stack = FakeStack(loop)
    subs = Subscriptions(stack, loop, lambda _dest: "<sip:pbx@192.0.2.1:5060>", lambda _h: True)  # type: ignore[arg-type]
    lamp = Lamp()
    subs.add_package(lamp)
    try:
        yield subs, stack, loop, lamp
    finally:
        subs.close()
        loop.close()


def _subscribe(
    subs: Subscriptions, stack: FakeStack, extra: str = "", to_tag: str = "", cseq: int = 1
) -> Response:
    req: Request = message(
        f"""SUBSCRIBE sip:7@pbx.local SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKs{cseq}{to_tag}
From: <sip:101@pbx.local>;tag=phone
To: <sip:7@pbx.local>{";tag=" + to_tag if to_tag else ""}
Call-ID: lamp1
CSeq: {cseq} SUBSCRIBE
Max-Forwards: 70
Contact: <sip:101@10.0.0.5:5060>
Event: x-lamp{extra}"""
    )
    key = ("SUB", cseq, to_tag)
    if to_tag:
        assert subs.in_dialog(req, NAT_SOURCE, key)  # type: ignore[arg-type]
    else:
        subs.subscribe(req, NAT_SOURCE, key, "101")  # type: ignore[arg-type]
    (resp,) = stack.finals[key]
    return resp


def test_the_nat_side_source_is_the_peer_and_the_contact_the_target(core: Core) -> None:
    subs, stack, _loop, _lamp = core
    resp = _subscribe(subs, stack)
    assert resp.status == 200 and resp.headers.get("expires") == "600"
    ((notify, dest, _cb),) = stack.requests
    assert dest == NAT_SOURCE  # not the private 10.0.0.5 of its Contact
    assert str(notify.uri) == "sip:101@10.0.0.5:5060"
    assert notify.headers.get("contact") == "<sip:pbx@192.0.2.1:5060>"
    assert notify.headers.getall("route") == []
    assert notify.body == b"on" and notify.headers.get("content-type") == "text/plain"


def test_record_route_is_copied_and_routes_every_notify(core: Core) -> None:
    subs, stack, _loop, lamp = core
    rr = "<sip:198.51.100.9:5070;lr>"
    resp = _subscribe(subs, stack, f"\nRecord-Route: {rr}")
    assert resp.headers.getall("record-route") == [rr]
    lamp.states["7"] = b"off"
    stack.requests[0][2](stack.requests[0][0].reply(200))
    assert subs.notify_all("x-lamp", "7", b"off") == 1
    for notify, dest, _cb in stack.requests:
        assert notify.headers.getall("route") == [rr]
        assert dest == ("UDP", "198.51.100.9", 5070)
    assert stack.requests[-1][0].body == b"off"
    assert subs.notify_all("x-lamp", "8", b"x") == 0  # nobody watches lamp 8


def test_in_dialog_rules(core: Core) -> None:
    subs, stack, loop, lamp = core
    tag = _subscribe(subs, stack).to.tag
    assert tag
    assert _subscribe(subs, stack, to_tag=tag, cseq=1).status == 500  # CSeq not newer
    moved = ("UDP", "203.0.113.7", 40999)
    req = message(
        f"""SUBSCRIBE sip:7@pbx.local SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKmoved
From: <sip:101@pbx.local>;tag=phone
To: <sip:7@pbx.local>;tag={tag}
Call-ID: lamp1
CSeq: 5 SUBSCRIBE
Max-Forwards: 70
Event: x-lamp"""
    )
    stack.requests[0][2](stack.requests[0][0].reply(200))
    assert subs.in_dialog(req, moved, ("SUB", 5))  # type: ignore[arg-type]
    assert stack.finals[("SUB", 5)][0].status == 200
    assert stack.requests[-1][1] == moved  # the NAT binding moved: NOTIFYs follow it
    other = message(
        f"""NOTIFY sip:pbx@pbx.local SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKn
From: <sip:101@pbx.local>;tag=phone
To: <sip:7@pbx.local>;tag={tag}
Call-ID: lamp1
CSeq: 6 NOTIFY
Max-Forwards: 70
Event: x-lamp"""
    )
    assert subs.in_dialog(other, moved, ("N", 6))  # type: ignore[arg-type]
    assert stack.finals[("N", 6)][0].status == 405
    stack.requests[-1][2](stack.requests[-1][0].reply(200))
    del lamp.states["7"]  # the resource went away
    assert _subscribe(subs, stack, to_tag=tag, cseq=9).status == 481
    assert stack.requests[-1][0].headers.get("subscription-state") == "terminated;reason=noresource"
    assert subs.subs == {}
    loop.advance(700)  # no timer left behind to fire on a forgotten subscription
    assert stack.requests[-1][0].headers.get("subscription-state") == "terminated;reason=noresource"


def test_close_forgets_everything(core: Core) -> None:
    subs, stack, loop, _lamp = core
    _subscribe(subs, stack)
    sent = len(stack.requests)
    subs.close()
    loop.advance(700)
    assert subs.subs == {} and len(stack.requests) == sent
