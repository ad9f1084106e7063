"""The TCP connection table's bounds (transport/connections.py) on a fake clock: real
TcpConnection protocols on fake asyncio transports, no sockets, no running loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.sip.errors import ParseError
from pbx_core.transport import connections
from pbx_core.transport.connections import ConnectionTable, Peer, TcpLimits
from pbx_core.transport.tcp import TcpConnection
from tests.fuzzing import fuzz_settings

OPTIONS = (
    b"OPTIONS sip:pbx SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:pbx>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    """What TcpConnection uses of a transport. Closing is recorded; asyncio would
    report the loss later (`lose()` plays that part)."""

    def __init__(self, peer: Peer, proto: TcpConnection) -> None:
        super().__init__()
        self.peer = peer
        self.proto = proto
        self.closed = False
        self.aborted = False
        self.written = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 5060)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def lose(self) -> None:
        self.proto.connection_lost(None)


class Net:
    def __init__(self, limits: TcpLimits) -> None:
        self.clock = Clock()
        self.table = ConnectionTable(limits, self.clock)
        self.used: set[Peer] = set()
        self.table.in_use = lambda: self.used
        self.frames: list[bytes] = []
        self.conns: list[tuple[TcpConnection, FakeTransport]] = []

    def connect(self, host: str, port: int, *, inbound: bool = True) -> TcpConnection:
        conn = TcpConnection(
            self.table,
            lambda data, _c: self.frames.append(data),
            lambda _d, _e, _c: None,
            inbound=inbound,
        )
        tr = FakeTransport((host, port), conn)
        conn.connection_made(tr)
        self.conns.append((conn, tr))
        return conn

    def open(self) -> list[TcpConnection]:
        """Connections whose transport we have not closed."""
        return [c for c, tr in self.conns if not tr.closed]

    def transport(self, conn: TcpConnection) -> FakeTransport:
        return next(tr for c, tr in self.conns if c is conn)


def limits(**kw: Any) -> TcpLimits:
    base = dict(max_connections=4, per_source=100, idle_timeout=120, message_timeout=10)
    return TcpLimits(**{**base, **kw})


def test_burst_never_exceeds_the_cap() -> None:
    """Many accepts before asyncio reports any loss: the old table counted closed
    connections until connection_lost and evicted the same one again and again."""
    net = Net(limits(max_connections=4))
    for i in range(50):
        net.connect(f"10.0.0.{i}", 4000)
        assert len(net.table) <= 4
        assert len(net.open()) <= 4
    assert len(net.table) == 4
    assert net.table.stats["evicted"] == 46


def test_eviction_takes_the_least_recently_active() -> None:
    net = Net(limits(max_connections=3))
    a = net.connect("10.0.0.1", 1)
    net.clock.now += 1
    b = net.connect("10.0.0.2", 1)
    net.clock.now += 1
    c = net.connect("10.0.0.3", 1)
    net.clock.now += 1
    a.data_received(OPTIONS)  # a complete message: a is now the most recent
    net.connect("10.0.0.4", 1)
    assert b.closed and not a.closed and not c.closed


def test_eviction_spares_connections_in_use_and_refuses_when_all_are() -> None:
    net = Net(limits(max_connections=3))
    a = net.connect("10.0.0.1", 1)
    b = net.connect("10.0.0.2", 1)
    c = net.connect("10.0.0.3", 1)
    net.used = {a.peer, b.peer}  # a registered phone and a call's caller
    d = net.connect("10.0.0.4", 1)
    assert c.closed and not a.closed and not b.closed and not d.closed
    net.used |= {d.peer}
    e = net.connect("10.0.0.5", 1)
    assert e.closed and net.transport(e).aborted  # refused: everything is in use
    assert {a.peer, b.peer, d.peer} == {conn.peer for conn in net.table}
    assert net.table.stats["refused"] == 1


def test_per_source_limit() -> None:
    net = Net(limits(max_connections=100, per_source=3))
    first = [net.connect("10.0.0.1", p) for p in range(1, 4)]
    extra = net.connect("10.0.0.1", 9)
    assert extra.closed and net.transport(extra).aborted
    assert not net.connect("10.0.0.2", 1).closed  # another source is not affected
    net.transport(first[0]).close()
    net.transport(first[0]).lose()
    assert not net.connect("10.0.0.1", 10).closed  # a slot came free
    assert net.table.sources("10.0.0.1") == 3
    # Outbound connections (to phones and trunks) are not the peer's to spend.
    assert not net.connect("10.0.0.1", 11, inbound=False).closed


def test_trickled_message_is_closed_after_the_message_timeout() -> None:
    net = Net(limits())
    slow = net.connect("10.0.0.1", 1)
    net.clock.now += 5
    slow.data_received(OPTIONS[:1])  # the message starts at connect + 5 s
    start = net.clock.now
    for i in range(1, 30):  # one byte a second: never idle, never complete
        net.clock.now = start + i
        slow.data_received(OPTIONS[i : i + 1])
        net.table.sweep(net.clock.now)
        if slow.closed:
            break
    assert slow.closed
    # first byte 5 s after the connect, which started the clock for the first message
    assert net.clock.now - (start - 5) == pytest.approx(10)
    assert net.table.stats["slow"] == 1


def test_silent_connection_is_closed_after_the_message_timeout() -> None:
    net = Net(limits())
    silent = net.connect("10.0.0.1", 1)
    net.clock.now += 9.9
    net.table.sweep(net.clock.now)
    assert not silent.closed
    net.clock.now += 0.2
    net.table.sweep(net.clock.now)
    assert silent.closed


def test_message_timeout_spares_none_but_whole_messages_reset_it() -> None:
    net = Net(limits())
    phone = net.connect("10.0.0.1", 1)
    net.used = {phone.peer}
    for _ in range(5):  # a message every 8 s, each whole: never timed out
        net.clock.now += 8
        phone.data_received(OPTIONS)
        net.table.sweep(net.clock.now)
    assert not phone.closed and len(net.frames) == 5
    phone.data_received(OPTIONS[:20])  # even a phone in use may not stall mid-message
    net.clock.now += 10
    net.table.sweep(net.clock.now)
    assert phone.closed


def test_idle_timeout_spares_connections_in_use() -> None:
    net = Net(limits())
    phone = net.connect("10.0.0.1", 1)
    other = net.connect("10.0.0.2", 1)
    for conn in (phone, other):
        conn.data_received(OPTIONS)
    net.used = {phone.peer}
    for _ in range(12):  # keepalive pings are no activity
        net.clock.now += 10
        other.data_received(b"\r\n\r\n")
        net.table.sweep(net.clock.now)
    assert net.transport(other).written.count(b"\r\n") >= 12  # ponged all the same
    assert other.closed and not phone.closed
    assert net.table.stats["idle"] == 1
    net.used = set()  # the registration expired: now it may go
    net.table.sweep(net.clock.now)
    assert phone.closed


def test_outbound_connection_waits_for_no_first_message() -> None:
    net = Net(limits())
    out = net.connect("10.0.0.1", 5060, inbound=False)
    net.clock.now += 60
    net.table.sweep(net.clock.now)
    assert not out.closed
    net.clock.now += 61
    net.table.sweep(net.clock.now)
    assert out.closed


def test_framing_error_closes_and_leaves_the_table() -> None:
    net = Net(limits())
    conn = net.connect("10.0.0.1", 1)
    conn.data_received(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: x"))
    assert conn.closed and len(net.table) == 0


def test_cap_follows_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections.resource, "getrlimit", lambda _r: (1024, 4096))
    assert TcpLimits(max_connections=1024).within_fd_limit().max_connections == 768
    monkeypatch.setattr(connections.resource, "getrlimit", lambda _r: (65536, 65536))
    assert TcpLimits(max_connections=1024).within_fd_limit().max_connections == 1024


@pytest.mark.parametrize(
    "kw", [{"max_connections": 0}, {"per_source": 0}, {"idle_timeout": 0}, {"message_timeout": -1}]
)
def test_limits_must_be_positive(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        limits(**kw)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("lose"), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("message"), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("bytes"), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("use"), st.integers(0, 200), st.booleans()),
        st.tuples(st.just("tick"), st.integers(0, 30), st.booleans()),
    ),
    max_size=120,
)


@pytest.mark.fuzz
@fuzz_settings(200)
@given(ops=_ops, cap=st.integers(1, 6), per_source=st.integers(1, 4))
def test_table_invariants_under_any_sequence(
    ops: list[tuple[str, int, bool]], cap: int, per_source: int
) -> None:
    """Whatever peers do: never more than the cap, never more than per_source from one
    address, the table holds exactly the connections not closed, and a connection in
    use is closed only for stalling mid-message (never evicted, never idled out)."""
    net = Net(limits(max_connections=cap, per_source=per_source, message_timeout=10))
    port = 0
    for op, n, flag in ops:
        live = [c for c, _t in net.conns if not c.closed]
        in_use = [c for c in live if c.peer in net.used]
        conn = live[n % len(live)] if live else None
        if op == "connect":
            port += 1
            net.connect(f"10.0.0.{n}", port, inbound=flag)
        elif op == "tick":
            net.clock.now += n
            net.table.sweep(net.clock.now)
        elif conn is not None:
            if op == "lose":
                net.transport(conn).lose()
            elif op == "message":
                conn.data_received(OPTIONS)
            elif op == "bytes":
                conn.data_received(OPTIONS[:30])
            elif flag:
                net.used.add(conn.peer)
            else:
                net.used.discard(conn.peer)
        for c in in_use:
            if c.closed and not (op == "lose" and c is conn):
                assert op == "tick" and c.message_started is not None, (op, c.peer)
        in_table = {id(c) for c in net.table}
        assert len(in_table) <= cap
        assert in_table == {id(c) for c, _t in net.conns if not c.closed}
        inbound_by_host: dict[str, int] = {}
        for c in net.table:
            if c.inbound:
                inbound_by_host[c.peer[0]] = inbound_by_host.get(c.peer[0], 0) + 1
        assert all(v <= per_source for v in inbound_by_host.values())
    assert net.table.stats["evicted"] + net.table.stats["idle"] <= len(net.conns)


def test_in_use_connection_is_never_evicted_or_idled() -> None:
    """The property the fuzz test cannot see directly, spelled out: a phone in use
    survives a flood of a thousand connections and hours of quiet."""
    net = Net(limits(max_connections=50))
    phone = net.connect("10.1.1.1", 5060)
    phone.data_received(OPTIONS)
    net.used = {phone.peer}
    for i in range(1000):
        net.connect(f"10.2.{i // 250}.{i % 250}", 4000)
        if i % 100 == 0:
            net.clock.now += 600
            net.table.sweep(net.clock.now)
    assert not phone.closed
    assert len(net.table) <= 50


def test_parse_error_type_is_what_framing_raises() -> None:
    # on_error gets a ParseError: the manager answers it statelessly.
    got: list[ParseError] = []
    table = ConnectionTable(limits(), Clock())
    conn = TcpConnection(table, lambda _d, _c: None, lambda _d, e, _c: got.append(e))
    conn.connection_made(FakeTransport(("10.0.0.1", 1), conn))
    conn.data_received(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert got and got[0].status == 400
