"""Transport behaviour on real loopback sockets: TCP framing, keepalives, response
routing (RFC 3261 §18.2.2, RFC 3581), the UDP→TCP switch (§18.1.1)."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.transport.manager import Address, TransportManager, parse_listen
from tests.fuzzing import fuzz_settings

OPTIONS = (
    b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK%s\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\n"
    b"Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def run_async(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper() -> None:
        asyncio.run(fn())

    return wrapper


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[Request | Response, Address]] = []
        self.event = asyncio.Event()

    def __call__(self, msg: Request | Response, source: Address) -> None:
        self.got.append((msg, source))
        self.event.set()

    async def wait(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.got) < n:
                self.event.clear()
                await self.event.wait()


async def _manager(rec: Recorder) -> TransportManager:
    m = TransportManager(asyncio.get_running_loop(), rec)
    await m.listen("127.0.0.1", 0)
    return m


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:5070") == ("127.0.0.1", 5070)
    assert parse_listen("[::1]:5080") == ("::1", 5080)
    assert parse_listen("0.0.0.0") == ("0.0.0.0", 5060)
    for bad in ("host:port", "1.2.3.4:99999", ":5060"):
        with pytest.raises(ValueError, match="invalid listen address"):
            parse_listen(bad)


@run_async
async def test_tcp_framing_split_and_pipelined() -> None:
    rec = Recorder()
    m = await _manager(rec)
    host, port = m.addresses[0]
    _reader, writer = await asyncio.open_connection(host, port)
    data = OPTIONS % (b"a1", b"c1") + OPTIONS % (b"a2", b"c2")
    # byte-by-byte for the first message, then the second in one go
    for i in range(len(OPTIONS % (b"a1", b"c1"))):
        writer.write(data[i : i + 1])
        await writer.drain()
    writer.write(data[len(OPTIONS % (b"a1", b"c1")) :])
    await rec.wait(2)
    assert [msg.call_id for msg, _ in rec.got] == ["c1", "c2"]
    # RFC 3261 §18.2.1: received= only when the sent-by host differs from the source
    assert rec.got[0][0].top_via.received is None
    writer.close()
    m.close()


@run_async
async def test_tcp_keepalive_ping_gets_pong() -> None:
    rec = Recorder()
    m = await _manager(rec)
    reader, writer = await asyncio.open_connection(*m.addresses[0])
    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"
    writer.close()
    m.close()


@run_async
async def test_response_goes_back_on_the_same_tcp_connection() -> None:
    rec = Recorder()
    m = await _manager(rec)
    reader, writer = await asyncio.open_connection(*m.addresses[0])
    writer.write(OPTIONS % (b"r1", b"resp1"))
    await rec.wait(1)
    req, source = rec.got[0]
    assert isinstance(req, Request)
    m.send(req.reply(200, to_tag="t"), source)
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    resp = parse_message(head)
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.call_id == "resp1"
    writer.close()
    m.close()


@run_async
async def test_udp_response_routing_rport_and_received() -> None:
    """rport present: answer to the source port; absent: to the Via port (§18.2.2)."""
    rec = Recorder()
    m = await _manager(rec)
    host, port = m.addresses[0]
    loop = asyncio.get_running_loop()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b.setblocking(False)
    bport = b.getsockname()[1]
    # From a, rport requested: the answer must come back to a's port.
    req1 = OPTIONS.replace(b"TCP 127.0.0.1:5999", b"UDP 127.0.0.1:5999") % (b"u1;rport", b"u1")
    # From a again, no rport, Via names b's port: the answer must go to b.
    req2 = OPTIONS.replace(b"TCP 127.0.0.1:5999", b"UDP 127.0.0.1:%d" % bport) % (b"u2", b"u2")
    for req in (req1, req2):
        await loop.sock_sendto(a, req, (host, port))
    await rec.wait(2)
    for msg, source in rec.got:
        assert isinstance(msg, Request)
        m.send(msg.reply(200, to_tag="x"), source)
    async with asyncio.timeout(5):
        data_a = await loop.sock_recv(a, 65536)
        data_b = await loop.sock_recv(b, 65536)
    assert b"Call-ID: u1" in data_a and b"rport=" in data_a
    assert b"Call-ID: u2" in data_b
    a.close()
    b.close()
    m.close()


@run_async
async def test_large_request_over_udp_moves_to_tcp() -> None:
    """RFC 3261 §18.1.1: a request over 1300 bytes goes over TCP, Via saying so."""
    server_rec = Recorder()
    server = await _manager(server_rec)
    client = TransportManager(asyncio.get_running_loop(), Recorder())
    await client.listen("127.0.0.1", 0)
    async with asyncio.TaskGroup() as tg:
        client.tasks = tg
        host, port = server.addresses[0]
        req = parse_message(
            OPTIONS.replace(b"TCP 127.0.0.1:5999", b"UDP 127.0.0.1:5999") % (b"big", b"big")
        )
        assert isinstance(req, Request)
        req.headers.add("X-Padding", "p" * 1400)
        client.send(req, ("UDP", host, port))
        await server_rec.wait(1)
    got, source = server_rec.got[0]
    assert source[0] == "TCP"
    assert got.top_via.transport == "TCP"
    client.close()
    server.close()


@pytest.mark.parametrize(
    ("via", "source", "stamped"),
    [
        # RFC 3581 §4: rport filled in, received added even when the host matches.
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport",
            ("UDP", "10.0.0.5", 5062),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=5062;received=10.0.0.5",
        ),
        # A stale received/rport from the sender is replaced, not repeated.
        (
            "SIP/2.0/UDP phone.lan;RPORT=1;received=1.1.1.1;branch=z9hG4bKb",
            ("UDP", "192.0.2.7", 40000),
            "SIP/2.0/UDP phone.lan;branch=z9hG4bKb;rport=40000;received=192.0.2.7",
        ),
        # RFC 3261 §18.2.1: received only when the sent-by host is not the source.
        (
            "SIP/2.0/UDP phone.lan:5060;branch=z9hG4bKc",
            ("UDP", "192.0.2.7", 5060),
            "SIP/2.0/UDP phone.lan:5060;branch=z9hG4bKc;received=192.0.2.7",
        ),
        ("SIP/2.0/TCP [2001:db8::1];branch=z9hG4bKd", ("TCP", "2001:db8::1", 5060), None),
        # A received the sender wrote is not believed, even when its host matches.
        (
            "SIP/2.0/UDP 192.0.2.7;received=198.51.100.9;branch=z9hG4bKe",
            ("UDP", "192.0.2.7", 5060),
            "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKe;received=192.0.2.7",
        ),
    ],
)
def test_received_and_rport_stamping(
    via: str, source: tuple[str, str, int], stamped: str | None
) -> None:
    data = (
        f"OPTIONS sip:pbx SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bKp\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:pbx>\r\nCall-ID: s\r\nCSeq: 1 OPTIONS\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    _ = msg.headers.get("via")  # the index is kept up to date, not rebuilt
    TransportManager._stamp_via(msg, source)
    assert msg.headers.getall("via") == [stamped or via, "SIP/2.0/UDP proxy;branch=z9hG4bKp"]
    assert str(msg.top_via) == (stamped or via)
    assert parse_message(bytes(msg)).top_via == msg.top_via


@pytest.mark.parametrize(
    ("via", "arrived", "target"),
    [
        # RFC 3581 §4: to received and rport.
        ("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=5062;received=192.0.2.1", "UDP",
         ("UDP", "192.0.2.1", 5062)),
        # RFC 3261 §18.2.2: received, the sent-by port (5060 when absent).
        ("SIP/2.0/UDP phone.lan;received=192.0.2.1;branch=z9hG4bKb", "UDP",
         ("UDP", "192.0.2.1", 5060)),
        ("SIP/2.0/UDP phone.lan:5070;branch=z9hG4bKc", "UDP", ("UDP", "phone.lan", 5070)),
        # maddr is not followed (it would reflect answers anywhere); an rport without a
        # value (not filled in) is no port.
        ("SIP/2.0/UDP h:5080;maddr=239.1.1.1;received=192.0.2.1;rport", "UDP",
         ("UDP", "192.0.2.1", 5080)),
        ("SIP/2.0/UDP [2001:db8::1];rport;branch=z9hG4bKd", "UDP", ("UDP", "2001:db8::1", 5060)),
        # The first of a repeated parameter counts, whatever its case.
        ("SIP/2.0/UDP h;RECEIVED=192.0.2.1;received=192.0.2.9;rport=7;rport=8", "UDP",
         ("UDP", "192.0.2.1", 7)),
        # A TCP request whose connection is gone: a new one to its host, sent-by port.
        ("SIP/2.0/TCP h:5070;received=192.0.2.1", "TCP", ("TCP", "192.0.2.1", 5070)),
        # The transport the request came on wins over the Via's (§18.2.2 + RFC 3581):
        # a UDP request whose Via names TCP is answered over UDP, never by connecting.
        ("SIP/2.0/TCP h:5070;received=192.0.2.1;rport=4000", "UDP", ("UDP", "192.0.2.1", 4000)),
        ("SIP/2.0/TCP h:5070;received=192.0.2.1", "UDP", ("UDP", "192.0.2.1", 5070)),
        ("SIP/2.0/UDP h:5070;received=192.0.2.1", "TCP", ("TCP", "192.0.2.1", 5070)),
    ],
)  # fmt: skip
def test_response_goes_where_the_top_via_says(via: str, arrived: str, target: Address) -> None:
    loop = asyncio.new_event_loop()
    try:
        m = TransportManager(loop, lambda _msg, _src: None)
        resp = parse_message(
            f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
            "Call-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n".encode()
        )
        assert isinstance(resp, Response)
        assert m._response_target(resp, (arrived, "192.0.2.1", 1)) == target
    finally:
        loop.close()


_via_params = st.lists(
    st.sampled_from(
        ["rport", "rport=1", "rport=65000", "received=198.51.100.9", "maddr=239.1.1.1",
         "maddr=203.0.113.5", "branch=z9hG4bKq", "transport=tcp", "ttl=1"]
    ),
    max_size=5,
)  # fmt: skip


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    via_transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]),
    via_host=st.sampled_from(["192.0.2.1", "phone.lan", "203.0.113.7", "[2001:db8::5]"]),
    via_port=st.one_of(st.none(), st.integers(1, 65535)),
    params=_via_params,
    arrived=st.sampled_from(["UDP", "TCP"]),
    source=st.sampled_from([("192.0.2.1", 5062), ("10.1.2.3", 40000), ("2001:db8::5", 5070)]),
)
def test_answers_go_to_the_source_over_its_transport(
    via_transport: str,
    via_host: str,
    via_port: int | None,
    params: list[str],
    arrived: str,
    source: tuple[str, int],
) -> None:
    """Whatever the Via says, a response goes back over the transport its request came
    on, to the host it came from: the message cannot pick another host (received,
    maddr) or another transport (RFC 3261 §18.2.2 with RFC 3581; issue 11)."""
    sent_by = via_host + (f":{via_port}" if via_port is not None else "")
    via = f"SIP/2.0/{via_transport} {sent_by}" + "".join(f";{p}" for p in params)
    data = (
        f"OPTIONS sip:pbx SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:pbx>\r\n"
        "Call-ID: r\r\nCSeq: 1 OPTIONS\r\n\r\n"
    ).encode()
    req = parse_message(data)
    assert isinstance(req, Request)
    dest: Address = (arrived, *source)
    TransportManager._stamp_via(req, dest)
    loop = asyncio.new_event_loop()
    try:
        m = TransportManager(loop, lambda _msg, _src: None)
        target = m._response_target(req.reply(200, to_tag="t"), dest)
    finally:
        loop.close()
    assert target[0] == arrived
    assert target[1] == source[0]
    if arrived == "UDP" and "rport" in "".join(params).lower():
        assert target[2] == source[1]  # RFC 3581: the port it came from
