"""Hostile SDP against a real `pbx run` (issue 11), from a raw UDP socket: each INVITE
gets its final response, `pbx status --json` then shows no call and a whole RTP port
pool, and the daemon still stops at once on SIGTERM.

The raw socket plays both phones: 100 places the calls (answering the PBX's 407) and
101, registered at the same socket, rings and answers what the PBX forwards.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.sip.digest_client import DigestClient
from tests.conftest import PbxProcess, start_pbx
from tests.interop.sipp_agents import pbx_status


class RawPhone:
    """SIP over one UDP socket, written by hand."""

    def __init__(self, pbx: PbxProcess) -> None:
        self.pbx = (pbx.host, pbx.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str, body: bytes = b"") -> None:
        head = text.strip().replace("\n", "\r\n")
        data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        self.sock.sendto(data, self.pbx)

    def receive(self, wanted: str, timeout: float = 10.0) -> str:
        """The next message whose first line contains `wanted` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} from the PBX within {timeout} s"
            self.sock.settimeout(left)
            data, _src = self.sock.recvfrom(65536)
            text = data.decode(errors="replace")
            if wanted in text.split("\r\n", 1)[0]:
                return text

    @staticmethod
    def header(msg: str, name: str) -> str:
        for line in msg.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        raise AssertionError(f"no {name} in {msg!r}")

    def _authenticated(self, method: str, uri: str, user: str, build: str, body: bytes) -> str:
        """Send `build` (a request without Via/CSeq/auth), answer the challenge once;
        the final response."""
        client = DigestClient(user, f"change-me-{user}")
        auth = ""
        for cseq in (1, 2):
            branch = f"z9hG4bK{uuid.uuid4().hex}"
            self.send(
                f"""{method} {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport
{build}
CSeq: {cseq} {method}{auth}""",
                body,
            )
            while True:
                resp = self.receive("SIP/2.0")
                if not resp.startswith("SIP/2.0 "):
                    return resp  # the PBX forwards the call to 101 (this socket)
                if self.header(resp, "CSeq") == f"{cseq} {method}" and " 100 " not in resp[:13]:
                    break
            status = int(resp.split(" ", 2)[1])
            if method == "INVITE" and status >= 300:
                self.ack(resp, uri, branch)
            if status not in (401, 407) or cseq == 2:
                return resp
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            assert client.on_challenge([self.header(resp, header)])
            creds = client.authorization(method, uri, uuid.uuid4().hex[:8], b"")
            auth = f"\n{'Authorization' if status == 401 else 'Proxy-Authorization'}: {creds}"
        raise AssertionError("unreachable")

    def ack(self, resp: str, uri: str, branch: str) -> None:
        cseq = self.header(resp, "CSeq").split()[0]
        self.send(
            f"""ACK {uri} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport
From: {self.header(resp, "From")}
To: {self.header(resp, "To")}
Call-ID: {self.header(resp, "Call-ID")}
CSeq: {cseq} ACK
Max-Forwards: 70"""
        )

    def register(self, user: str) -> None:
        resp = self._authenticated(
            "REGISTER",
            "sip:pbx.local",
            user,
            f"""From: <sip:{user}@pbx.local>;tag={uuid.uuid4().hex[:8]}
To: <sip:{user}@pbx.local>
Call-ID: {uuid.uuid4().hex}
Max-Forwards: 70
Contact: <sip:{user}@127.0.0.1:{self.port}>
Expires: 300""",
            b"",
        )
        assert resp.startswith("SIP/2.0 200"), resp

    def invite(self, number: str, sdp: bytes) -> str:
        """An INVITE from 100 (sent twice: challenged, then with credentials); the
        PBX's final response to it, or what it forwarded to 101 first."""
        return self._authenticated(
            "INVITE",
            f"sip:{number}@pbx.local",
            "100",
            f"""From: <sip:100@pbx.local>;tag={uuid.uuid4().hex[:8]}
To: <sip:{number}@pbx.local>
Call-ID: {uuid.uuid4().hex}
Max-Forwards: 70
Contact: <sip:100@127.0.0.1:{self.port}>
Content-Type: application/sdp""",
            sdp,
        )

    def reply(self, request: str, status: int, reason: str) -> None:
        """101 answers a request the PBX sent it."""
        to = self.header(request, "To")
        self.sock.sendto(
            (
                f"SIP/2.0 {status} {reason}\r\n"
                + "".join(
                    f"Via: {line.partition(':')[2].strip()}\r\n"
                    for line in request.split("\r\n")
                    if line.lower().startswith("via:")
                )
                + f"From: {self.header(request, 'From')}\r\n"
                f"To: {to};tag=callee\r\n"
                f"Call-ID: {self.header(request, 'Call-ID')}\r\n"
                f"CSeq: {self.header(request, 'CSeq')}\r\n"
                f"Contact: <sip:101@127.0.0.1:{self.port}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            self.pbx,
        )


def _sdp(*extra: str) -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[PbxProcess]:
    p = start_pbx(tmp_path)
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait()


def _no_call_and_a_whole_port_pool(pbx: PbxProcess) -> None:
    status = pbx_status(pbx.stderr_path.parent / "run" / "control.sock")
    assert status["calls"] == [], status["calls"]
    media = status["media"]
    assert isinstance(media, dict)
    assert media["ports_in_use"] == 0 and media["legs"] == 0 and media["calls"] == 0, media


def test_bad_sdp_gets_a_final_answer_frees_its_ports_and_sigterm_still_stops_the_pbx(
    pbx: PbxProcess,
) -> None:
    phone = RawPhone(pbx)
    try:
        phone.register("101")
        # A bare CR inside a value (it broke the SDP the PBX wrote, after its RTP
        # ports were taken), to the echo test and to an extension.
        bad = _sdp("a=fmtp:101 0-16\rX")
        for number in ("*43", "101"):
            resp = phone.invite(number, bad)
            assert resp.startswith("SIP/2.0 400"), resp
            _no_call_and_a_whole_port_pool(pbx)
        # Too many formats: 488, and nothing rings.
        resp = phone.invite("101", _sdp().replace(b"0 8 101", b"0 " * 300 + b"101"))
        assert resp.startswith("SIP/2.0 488"), resp
        _no_call_and_a_whole_port_pool(pbx)
        # ptime:100000000 is a hint: the callee rings (ringback frames sized by the
        # clamped ptime), busy ends the call.
        resp = phone.invite("101", _sdp("a=ptime:100000000"))
        assert resp.startswith("INVITE "), resp  # the PBX rings 101 first
        assert "a=ptime:120\r\n" in resp
        phone.reply(resp, 180, "Ringing")
        assert phone.receive("180").startswith("SIP/2.0 180")  # to the caller
        phone.reply(resp, 486, "Busy Here")
        busy = phone.receive("486")
        assert busy.startswith("SIP/2.0 486"), busy
        time.sleep(0.2)
        _no_call_and_a_whole_port_pool(pbx)
    finally:
        phone.close()
    pbx.proc.terminate()
    try:
        pbx.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("pbx run ignored SIGTERM for 10 s")
    log = pbx.log()
    assert "Traceback" not in log, log
