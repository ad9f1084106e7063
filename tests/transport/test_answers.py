"""Every request gets one final answer and at most one log line, never a traceback
(RFC 3261 §8.1.1, §8.2; issue 11), and what the PBX says in Server and User-Agent
(the `user_agent` setting). The real engine and store run in-process behind the
SipServer, fed datagrams through a recording UDP endpoint."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.pbx.engine import Engine
from pbx_core.pbx.sipserver import SipServer, header_text
from pbx_core.sip.message import MAX_HOPS, Request, Response, parse_message
from pbx_core.store.generations import Store
from pbx_core.version import VERSION
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings
from tests.transport.test_sipserver import Endpoint

METHODS = ("OPTIONS", "REGISTER", "INVITE", "BYE", "CANCEL", "ACK", "MESSAGE", "SUBSCRIBE", "FOO")
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
# Statuses that refuse a request for what it is: each comes with one log line.
REFUSALS = frozenset({400, 416, 420, 483, 505, 513})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[logging.LogRecord]:
        """What reaches a log (INFO and above)."""
        return [r for r in self.records if r.levelno >= logging.INFO]


@dataclass
class Pbx:
    loop: asyncio.AbstractEventLoop
    server: SipServer
    ep: Endpoint
    engine: Engine
    log: Records

    def receive(self, data: bytes, source: tuple[str, int]) -> list[bytes]:
        """Feed one datagram; what was sent because of it."""
        self.ep.sent.clear()
        self.log.records.clear()
        self.server.transports._on_datagram(data, source, self.ep)
        return [d for d, _addr in self.ep.sent]


def _config(tmp: Path, settings: dict[str, str], trunk: str | None = None) -> Path:
    cfg = tmp / "cfg"
    shutil.copytree(FACTORY, cfg)
    with (cfg / "pbx_settings").open("a") as f:
        for name, value in settings.items():
            f.write(f"{name}:{value}\n")
    if trunk is not None:
        head = (cfg / "pbx_trunk").read_text().splitlines()[0]
        (cfg / "pbx_trunk").write_text(f"{head}\n{trunk}\n")
    return cfg


def _pbx(tmp: Path, settings: dict[str, str], trunk: str | None = None) -> Iterator[Pbx]:
    loop = asyncio.new_event_loop()
    server = SipServer(loop)
    ep = Endpoint()
    server.transports.udp.append(ep)
    store = Store(_config(tmp, settings, trunk), runtime_dir=tmp / "run")
    engine = Engine(server, store)
    records = Records()
    logger = logging.getLogger("pbx")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield Pbx(loop, server, ep, engine, records)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        engine.close()
        store.close()
        server.close()
        loop.close()


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    yield from _pbx(tmp_path_factory.mktemp("answers"), {})


_branches = itertools.count(10**6)
_sources = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))


def source() -> tuple[str, int]:
    """A fresh address per request: the security policy's rate limit stays out of it."""
    return (next(_sources), 5070)


def request(method: str, n: int, changes: dict[str, str | None], extra: str = "") -> bytes:
    """A valid request, with headers replaced (None: dropped) as `changes` says."""
    cseq_method = "INVITE" if method == "ACK" else method
    headers = {
        "Via": f"SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bK-p{n};rport",
        "From": f"<sip:100@pbx.local>;tag=f{n}",
        "To": "<sip:101@pbx.local>",
        "Call-ID": f"prop{n}@10.9.9.9",
        "CSeq": f"1 {cseq_method}",
        "Max-Forwards": "70",
        "Content-Length": "0",
    }
    lines = [f"{method} sip:101@pbx.local SIP/2.0"]
    for name, value in headers.items():
        value = changes.get(name, value) if name in changes else value  # noqa: PLW2901
        if value is not None:
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("utf-8", "surrogateescape")


def finals(sent: list[bytes]) -> list[Response]:
    out = []
    for data in sent:
        msg = parse_message(data)
        assert isinstance(msg, Response), data
        if msg.status >= 200:
            out.append(msg)
    return out


def check_answered(pbx: Pbx, data: bytes, method: str, routable: bool) -> Response | None:
    sent = pbx.receive(data, source())
    records = pbx.log.records
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], [
        r.getMessage() for r in records
    ]
    got = finals(sent)
    if method == "ACK" or not routable:
        assert got == [], data  # never answered (§17.1.1.3), or nothing to route with
        assert len(pbx.log.lines()) <= 1
        return None
    assert len(got) == 1, (data, sent)
    resp = got[0]
    lines = pbx.log.lines()
    if resp.status in REFUSALS:
        assert len(lines) == 1, (data, [r.getMessage() for r in lines])
        assert resp.headers.get("warning"), resp  # the reason travels with the status
    else:
        assert len(lines) <= 1, [r.getMessage() for r in lines]
    return resp


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ACK"])
@pytest.mark.parametrize("header", ["To", "From", "Call-ID", "CSeq"])
def test_missing_mandatory_header_gets_400(pbx: Pbx, method: str, header: str) -> None:
    """The issue's case (OPTIONS without To answered nothing and logged a traceback),
    for every method and header."""
    resp = check_answered(pbx, request(method, 1, {header: None}), method, True)
    assert resp is not None and resp.status == 400, resp
    assert header.lower() in (resp.headers.get("warning") or "").lower()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("To", "<sip:101@pbx.local"),  # unclosed
        ("From", "not an address at all <<"),
        ("Call-ID", "two words"),
        ("CSeq", "x OPTIONS"),
        ("CSeq", "1 INVITE"),  # the method does not match (RFC 4475 §3.1.2.17)
        ("Max-Forwards", "300"),
        ("Max-Forwards", "seventy"),
        ("Content-Length", "-1"),
        ("Content-Length", "99"),
    ],
)
def test_malformed_mandatory_header_gets_400(pbx: Pbx, header: str, value: str) -> None:
    resp = check_answered(pbx, request("OPTIONS", 2, {header: value}), "OPTIONS", True)
    assert resp is not None and resp.status == 400, resp


def test_without_via_nothing_can_be_answered(pbx: Pbx) -> None:
    check_answered(pbx, request("OPTIONS", 3, {"Via": None}), "OPTIONS", False)


def test_malformed_ack_is_dropped_with_one_line(pbx: Pbx) -> None:
    check_answered(pbx, request("ACK", 4, {"To": None}), "ACK", True)
    assert len(pbx.log.lines()) == 1


@pytest.mark.parametrize("header", ["Via", "Route", "Record-Route"])
@pytest.mark.parametrize("one_line", [False, True], ids=["lines", "commas"])
def test_thousands_of_hop_headers_are_refused(pbx: Pbx, header: str, one_line: bool) -> None:
    """A bound on repetition: more Via/Route/Record-Route values than hops exist."""
    value = "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKx" if header == "Via" else "<sip:10.1.1.1;lr>"
    n = 1000
    extra = f"{header}: " + ", ".join([value] * n) + "\r\n" if one_line else (
        f"{header}: {value}\r\n" * n
    )  # fmt: skip
    resp = check_answered(pbx, request("OPTIONS", 5, {}, extra), "OPTIONS", True)
    assert resp is not None and resp.status == 400, resp
    warning = resp.headers.get("warning") or ""
    assert f"at most {MAX_HOPS}" in warning or "header lines" in warning, warning


def test_hops_within_the_bound_are_served(pbx: Pbx) -> None:
    extra = "Record-Route: <sip:10.1.1.1;lr>\r\n" * MAX_HOPS
    resp = check_answered(pbx, request("OPTIONS", 6, {}, extra), "OPTIONS", True)
    assert resp is not None and resp.status == 200, resp


_text = st.text(st.sampled_from("abcxyz019 <>@:;=,\"'\\/.-_!%*+~?&[]\t\x00\x7f\xe9"), max_size=40)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    method=st.sampled_from(METHODS),
    header=st.sampled_from(MANDATORY),
    action=st.sampled_from(("drop", "garble", "empty", "twice")),
    garbage=_text,
)
def test_each_mandatory_header_dropped_or_garbled(
    pbx: Pbx, method: str, header: str, action: str, garbage: str
) -> None:
    """Whatever happens to one mandatory header of any method, the request gets one
    final answer (none for ACK, none without a Via to route it), no traceback, and a
    refusal comes with exactly one log line."""
    changes: dict[str, str | None]
    extra = ""
    if action == "drop":
        changes = {header: None}
    elif action == "empty":
        changes = {header: ""}
    elif action == "garble":
        changes = {header: garbage}
    else:
        changes = {}
        extra = f"{header}: {garbage}\r\n"
    # A new branch each time: a repeated one is a retransmission, answered again from
    # its transaction without a new log line.
    data = request(method, next(_branches), changes, extra)
    check_answered(pbx, data, method, routable=not (header == "Via" and action == "drop"))


# ---------------------------------------------------------------- Server / User-Agent


def _options(n: int) -> bytes:
    return request("OPTIONS", 100 + n, {})


def _agents(sent: list[bytes]) -> list[str]:
    out = []
    for data in sent:
        msg = parse_message(data)
        out += msg.headers.getall("server") + msg.headers.getall("user-agent")
    return out


TRUNK = "1:provider:1:127.0.0.1:5999:udp:acct:secret:1::0"


def test_no_message_carries_the_version_by_default(tmp_path: Path) -> None:
    for pbx in _pbx(tmp_path, {}, TRUNK):
        pbx.engine.start()  # the trunk registers: its REGISTER is in ep.sent
        register = [d for d, _a in pbx.ep.sent if d.startswith(b"REGISTER ")]
        assert register, pbx.ep.sent
        sent = list(register)
        sent += pbx.receive(_options(1), source())
        sent += pbx.receive(request("REGISTER", 201, {}), source())  # 401
        sent += pbx.receive(request("INVITE", 202, {}), source())  # 407
        sent += pbx.receive(request("OPTIONS", 203, {"To": None}), source())  # 400
        agents = _agents(sent)
        assert agents.count("Wafer PBX") == 2, agents  # the 200's Server, the trunk's UA
        assert set(agents) == {"Wafer PBX"}
        for data in sent:
            assert f"Wafer PBX {VERSION}".encode() not in data
            assert VERSION.encode() not in data, data


def test_user_agent_setting_names_server_and_user_agent(tmp_path: Path) -> None:
    for pbx in _pbx(tmp_path, {"user_agent": "Acme Office Phone System"}, TRUNK):
        pbx.engine.start()
        sent = [d for d, _a in pbx.ep.sent if d.startswith(b"REGISTER ")]
        sent += pbx.receive(_options(2), source())
        assert _agents(sent) == ["Acme Office Phone System"] * 2


def test_user_agent_setting_follows_a_reload(tmp_path: Path) -> None:
    for pbx in _pbx(tmp_path, {}):
        assert _agents(pbx.receive(_options(3), source())) == ["Wafer PBX"]
        with (pbx.engine.store.path / "pbx_settings").open("a") as f:
            f.write("user_agent:Branch PBX\n")
        assert pbx.engine.store.reload()
        pbx.engine.reloaded()
        assert _agents(pbx.receive(_options(4), source())) == ["Branch PBX"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Acme", "Acme"),
        ("  Acme \t PBX ", "Acme PBX"),
        ("Acme\r\nX-Injected: 1", "Acme X-Injected: 1"),  # no header injection
        ("", "Wafer PBX"),
        ("\r\n", "Wafer PBX"),
        ("x" * 500, "x" * 100),
    ],
)
def test_header_text_is_one_safe_line(value: str, expected: str) -> None:
    assert header_text(value) == expected


def test_streams_in_use_are_tcp_registrations_and_trunks(tmp_path: Path) -> None:
    """What the engine tells the transport to spare (eviction, idle timeout)."""
    trunk = "1:provider:1:127.0.0.1:5999:tcp:acct:secret:1::0"
    for pbx in _pbx(tmp_path, {}, trunk):
        pbx.engine.start()
        now = pbx.loop.time()
        for n, src in enumerate([("TCP", "10.5.5.5", 40000), ("UDP", "10.5.5.6", 5060)]):
            req = parse_message(request("REGISTER", 300 + n, {"To": "<sip:100@pbx.local>"}))
            assert isinstance(req, Request)
            req.headers.add("Contact", f"<sip:100@{src[1]}:{src[2]}>")
            pbx.engine.registrar.register(req, "100@pbx.local", src, now, 5)
        used = pbx.engine._streams_in_use()
        assert used == {("10.5.5.5", 40000), ("127.0.0.1", 5999)}
        for found in pbx.engine.registrar.bindings.values():
            for b in found.values():
                b.expires_at = now - 1  # expired: no longer in use
        assert pbx.engine._streams_in_use() == {("127.0.0.1", 5999)}
