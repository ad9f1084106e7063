"""The TCP bounds of a running PBX, from raw sockets (issue 11): a burst beyond the
connection cap, the per-source limit, a slowloris, and a registered phone's
connection that must outlive a flood. The limits are the defaults of
pbx_core/transport/connections.py; sources are spread over 127.0.0.0/8."""

from __future__ import annotations

import hashlib
import re
import resource
import socket
import time
from collections.abc import Iterator

import pytest

from pbx_core.transport.connections import DEFAULT_LIMITS
from tests.conftest import PbxProcess, start_pbx, stop_pbx

pytestmark = pytest.mark.interop

CAP = DEFAULT_LIMITS.max_connections
PER_SOURCE = DEFAULT_LIMITS.per_source
MESSAGE_TIMEOUT = DEFAULT_LIMITS.message_timeout


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CAP + 512
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"open-file limit {hard} is below the {need} a flood needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the PBX inherits it
    p = start_pbx(tmp_path_factory.mktemp("tcp"))
    yield p
    stop_pbx(p)
    assert "Traceback" not in p.log(), p.log()


def connect(pbx: PbxProcess, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((pbx.host, pbx.port))
    s.setblocking(False)
    return s


def is_closed(s: socket.socket) -> bool:
    """The server closed (FIN) or refused (RST) it; nothing is ever sent to these."""
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


def settle(socks: list[socket.socket], quiet: float = 0.7, limit: float = 8) -> list[bool]:
    """Closed flags once they stop changing for `quiet` seconds."""
    deadline = time.monotonic() + limit
    last = [is_closed(s) for s in socks]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = [is_closed(s) for s in socks]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def flood(pbx: PbxProcess, n: int, first_net: int) -> list[socket.socket]:
    """n connections spread over 127.<first_net..>.x.y, fewer than PER_SOURCE each."""
    per = PER_SOURCE // 2
    return [
        connect(pbx, f"127.{first_net + i // (per * 250)}.{i // per % 250 + 1}.9") for i in range(n)
    ]


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_burst_beyond_the_cap_never_exceeds_it(pbx: PbxProcess) -> None:
    socks = flood(pbx, CAP + 150, 10)
    try:
        closed = settle(socks)
        still_open = closed.count(False)
        assert still_open <= CAP, still_open
        assert closed.count(True) >= 150  # the cap was reached, not the timeouts
    finally:
        close_all(socks)


def test_per_source_limit(pbx: PbxProcess) -> None:
    mine = [connect(pbx, "127.0.0.5") for _ in range(PER_SOURCE + 6)]
    others = [connect(pbx, "127.0.0.6") for _ in range(5)]
    try:
        closed = settle(mine + others)
        assert closed[: len(mine)].count(False) == PER_SOURCE
        assert closed[len(mine) :].count(True) == 0
    finally:
        close_all(mine + others)


OPTIONS = (
    "OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK{branch};rport\r\n"
    "From: <sip:100@pbx.local>;tag=lim\r\nTo: <sip:pbx@127.0.0.1>\r\n"
    "Call-ID: {branch}@lim\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def read_response(s: socket.socket, timeout: float = 5) -> str:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    s.setblocking(False)
    return data.decode()


def test_slowloris_and_silent_connections_are_closed(pbx: PbxProcess) -> None:
    trickle = connect(pbx, "127.0.0.7")
    silent = connect(pbx, "127.0.0.7")
    polite = connect(pbx, "127.0.0.7")
    host, port = polite.getsockname()
    polite.sendall(OPTIONS.format(host=host, port=port, branch="polite").encode())
    assert read_response(polite).startswith("SIP/2.0 200 ")
    text = OPTIONS.format(host=host, port=port, branch="slow").encode()
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < MESSAGE_TIMEOUT + 10 and not is_closed(trickle):
            try:
                trickle.send(text[sent : sent + 1])  # a header byte every half second
            except (ConnectionResetError, BrokenPipeError):
                break
            sent += 1
            time.sleep(0.5)
        assert is_closed(trickle) or settle([trickle])[0], "the slowloris was never closed"
        lasted = time.monotonic() - start
        assert sent < len(text)  # closed for being slow, not for finishing
        assert lasted >= MESSAGE_TIMEOUT * 0.9  # and not before its time
        assert settle([silent])[0], "a connection that says nothing was never closed"
        assert not is_closed(polite)  # a whole message earned the idle timeout, not this
    finally:
        close_all([trickle, silent, polite])


def _digest(challenge: str, user: str, password: str, uri: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324  # RFC 2617
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()  # noqa: S324
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "qop" in params:
        nc, cnonce = "00000001", "0a4f113b"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
    parts += [f'response="{resp}"', "algorithm=MD5"]
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts)


def register(s: socket.socket, cseq: int, auth: str | None) -> str:
    host, port = s.getsockname()
    lines = [
        "REGISTER sip:pbx.local SIP/2.0",
        f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bKreg{cseq};rport",
        "From: <sip:100@pbx.local>;tag=phone100",
        "To: <sip:100@pbx.local>",
        "Call-ID: phone100@lim",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
        f"Contact: <sip:100@{host}:{port};transport=tcp>",
        "Expires: 600",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    s.sendall(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    return read_response(s)


def test_registered_phone_survives_a_flood(pbx: PbxProcess) -> None:
    phone = connect(pbx, "127.0.0.1")
    first = register(phone, 1, None)
    assert first.startswith("SIP/2.0 401 "), first
    md5 = [
        line.split(":", 1)[1].strip()
        for line in first.split("\r\n")
        if line.lower().startswith("www-authenticate:") and "SHA" not in line.upper()
    ]
    assert md5, first
    ok = register(phone, 2, _digest(md5[0], "100", "change-me-100", "sip:pbx.local"))
    assert ok.startswith("SIP/2.0 200 "), ok
    socks = flood(pbx, CAP + 150, 20)  # the phone's is now the least recently active
    try:
        closed = settle(socks)
        assert closed.count(False) <= CAP - 1  # room was kept for the phone
        assert closed.count(True) >= 150
        assert not is_closed(phone)
        host, port = phone.getsockname()
        phone.sendall(OPTIONS.format(host=host, port=port, branch="after").encode())
        assert read_response(phone).startswith("SIP/2.0 200 ")
    finally:
        close_all(socks)
        phone.close()
