"""The glue between the transport and the transaction layer (pbx/sipserver.py), driven
with datagrams through a recording UDP endpoint: no sockets, no running loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip import events as ev
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Headers, Request, Response, parse_message
from pbx_core.transport.manager import Address
from pbx_core.transport.udp import UdpEndpoint

PEER = ("127.0.0.1", 5070)
REGISTER = (
    b"REGISTER sip:pbx.local SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-reg1;rport\r\n"
    b"From: <sip:201@pbx.local>;tag=f1\r\nTo: <sip:201@pbx.local>\r\n"
    b"Call-ID: reg1@127.0.0.1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
    b"Contact: <sip:201@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
)


class Endpoint(UdpEndpoint):
    """A UDP endpoint that records what is sent instead of owning a socket."""

    def __init__(self) -> None:  # no socket: nothing of the parent is set up
        self.host, self.port = "127.0.0.1", 5060
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


class Registrar:
    """A TU that answers every request 200 with a Contact, as a registrar does."""

    def __init__(self, stack: SipServer) -> None:
        self.stack = stack
        self.requests = 0

    def on_request(
        self, req: Request, source: Address, key: ev.AnyServerKey | None, cancels: object
    ) -> None:
        self.requests += 1
        if key is not None:
            resp = req.reply(200, to_tag="t1")
            resp.headers.add("Contact", "<sip:201@127.0.0.1:5070>;expires=3600")
            self.stack.respond(key, resp)

    def on_stray_response(self, resp: Response, source: Address) -> None:
        pass


@pytest.fixture
def stack() -> Iterator[tuple[SipServer, Endpoint]]:
    loop = asyncio.new_event_loop()
    server = SipServer(loop)
    ep = Endpoint()
    server.transports.udp.append(ep)
    yield server, ep
    server.close()
    loop.close()


def receive(server: SipServer, ep: Endpoint, data: bytes) -> None:
    server.transports._on_datagram(data, PEER, ep)


def test_retransmitted_request_gets_the_same_final_response(
    stack: tuple[SipServer, Endpoint],
) -> None:
    # The transaction keeps only the text of its final response (its parsed views
    # are dropped once sent): a retransmission is still answered byte for byte, to
    # the address of the request's rport/received, and the TU sees one request.
    server, ep = stack
    tu = Registrar(server)
    server.tu = tu
    receive(server, ep, REGISTER)
    receive(server, ep, REGISTER)
    assert tu.requests == 1
    assert len(ep.sent) == 2
    assert ep.sent[0] == ep.sent[1]
    data, addr = ep.sent[0]
    assert addr == PEER
    resp = parse_message(data)
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.to.tag == "t1"
    assert resp.top_via.rport == 5070 and resp.top_via.received == "127.0.0.1"


def invite(branch: str) -> Request:
    h = Headers()
    h.add("Via", str(Via("UDP", "127.0.0.1", 5060, (("branch", branch), ("rport", None)))))
    h.add("From", "<sip:pbx@127.0.0.1>;tag=b1")
    h.add("To", "<sip:201@127.0.0.1>")
    h.add("Call-ID", "call1@127.0.0.1")
    h.add("CSeq", "1 INVITE")
    h.add("Max-Forwards", "70")
    return Request("INVITE", "sip:201@127.0.0.1:5070", h)


def ok_for(req: Request) -> bytes:
    resp = req.reply(200, to_tag="callee")
    resp.headers.add("Contact", "<sip:201@127.0.0.1:5070>")
    return bytes(resp)


def test_forget_stops_responses_reaching_the_callback(
    stack: tuple[SipServer, Endpoint],
) -> None:
    server, ep = stack
    got: list[int | None] = []
    req = invite("z9hG4bK-inv1")
    key = server.request(req, ("UDP", *PEER), lambda r: got.append(None if r is None else r.status))
    assert parse_message(ep.sent[0][0]).method == "INVITE"  # type: ignore[union-attr]
    ok = ok_for(req)
    receive(server, ep, ok)
    receive(server, ep, ok)  # RFC 6026: a 2xx retransmission reaches the TU too
    assert got == [200, 200]
    server.forget(key)
    receive(server, ep, ok)
    assert got == [200, 200]
    assert server.layer.state(key) is not None  # the transaction itself lives on


class Fussy(Registrar):
    """A TU that reads a header only it needs and finds it malformed (ParseError), the
    way the registrar reads Contact: before answering, or after."""

    def __init__(self, stack: SipServer, answer_first: bool) -> None:
        super().__init__(stack)
        self.answer_first = answer_first

    def on_request(
        self, req: Request, source: Address, key: ev.AnyServerKey | None, cancels: object
    ) -> None:
        if self.answer_first:
            super().on_request(req, source, key, cancels)
        _ = req.contacts  # Contact: <sip:201@127.0.0.1:5070 (unclosed)


@pytest.mark.parametrize("answer_first", [False, True])
def test_tu_error_answers_the_transaction_once_with_one_log_line(
    stack: tuple[SipServer, Endpoint], caplog: pytest.LogCaptureFixture, answer_first: bool
) -> None:
    server, ep = stack
    server.tu = Fussy(server, answer_first)
    caplog.set_level(logging.INFO, logger="pbx")
    receive(server, ep, REGISTER.replace(b"5070>\r\n", b"5070\r\n"))
    statuses = [parse_message(d).status for d, _a in ep.sent]  # type: ignore[union-attr]
    assert statuses == ([200] if answer_first else [400])
    assert len(caplog.records) == 1, caplog.records
    assert not any(r.exc_info for r in caplog.records)
