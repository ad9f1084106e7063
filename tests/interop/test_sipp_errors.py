"""The server's answers to bad and unserviceable requests, sent by SIPp (RFC 3261
§8.2, §16.3; RFC 4475 §3.3): each case is one request and the status it must get."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import PbxProcess
from tests.interop.sipp import run_sipp

pytestmark = pytest.mark.interop

TEMPLATE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="expect {status}">
  <send retrans="500">
    <![CDATA[
      {method} {ruri} {version}
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:pbx@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 7 {cseq_method}
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: {mf}
{extra}      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="{status}">
{checks}  </recv>
{ack}</scenario>
"""

ACK = """  <send>
    <![CDATA[
      ACK {ruri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 7 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

CHECK = (
    '    <action><ereg regexp="{regexp}" search_in="hdr" header="{header}:" '
    'check_it="true" assign_to="v{n}"/></action>\n'
)

CASES = {
    # RFC 4475 §3.3.2 unkscm
    "unknown-scheme": dict(ruri="nobodyKnowsThisScheme:totallyopaque", status=416),
    # RFC 4475 §3.3.5 bext01: 420 lists what we don't support
    "require-unknown": dict(
        extra="Require: nothingSupportsThis, nothingSupportsThisEither",
        status=420,
        checks=[("Unsupported", "nothingSupportsThis, nothingSupportsThisEither")],
    ),
    # RFC 4475 §3.3.11 zeromf / RFC 3261 §16.3
    "max-forwards-zero": dict(mf="0", status=483),
    # RFC 4475 §3.1.2.16 badvers: answered statelessly by the transport
    "version-7": dict(version="SIP/7.0", status=505),
    # RFC 4475 §3.1.2.4 scalar02: out-of-range Max-Forwards
    "max-forwards-300": dict(mf="300", status=400),
    # RFC 3261 §8.2.1: a method nobody knows
    "unknown-method": dict(
        method="FOOBAR", cseq_method="FOOBAR", status=501, checks=[("Allow", "OPTIONS")]
    ),
    # RFC 4475 §3.3.6 invut: a body type the PBX can't handle → 415 with Accept
    "invite-unknown-body": dict(
        method="INVITE",
        cseq_method="INVITE",
        status=415,
        extra="Content-Type: application/unknownstuff",
        body="<stuff>unknown</stuff>",
        checks=[("Accept", "application/sdp")],
        ack=True,
    ),
}


def _scenario(case: dict[str, object], tmp: Path) -> Path:
    extra = str(case.get("extra", ""))
    checks = case.get("checks", [])
    ruri = str(case.get("ruri", "sip:pbx@[remote_ip]:[remote_port]"))
    xml = TEMPLATE.format(
        method=case.get("method", "OPTIONS"),
        ruri=ruri,
        version=case.get("version", "SIP/2.0"),
        cseq_method=case.get("cseq_method", case.get("method", "OPTIONS")),
        mf=case.get("mf", "70"),
        extra=f"      {extra}\n" if extra else "",
        body=case.get("body", ""),
        status=case["status"],
        checks="".join(
            CHECK.format(header=h, regexp=r, n=i)
            for i, (h, r) in enumerate(checks)  # type: ignore[arg-type]
        ),
        ack=ACK.format(ruri=ruri) if case.get("ack") else "",
    )
    if checks:
        names = ",".join(f"v{i}" for i in range(len(checks)))  # type: ignore[arg-type]
        xml = xml.replace("</scenario>", f'  <Reference variables="{names}"/>\n</scenario>')
    path = tmp / "case.xml"
    path.write_text(xml)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_request_gets_its_status(
    shared_pbx: PbxProcess, tmp_path: Path, name: str, transport: str
) -> None:
    scenario = _scenario(CASES[name], tmp_path)
    res = run_sipp(scenario, shared_pbx.host, shared_pbx.port, tmp_path, transport=transport)
    assert res.returncode == 0, f"{name}: {res.output}\n{scenario.read_text()}"
    assert res.successful == 1


def test_garbage_datagram_gets_no_answer(shared_pbx: PbxProcess) -> None:
    """Noise and broken responses are dropped silently; a broken request is answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for junk in (
            b"\x00\xff garbage \r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n",
            b"hello world",
            b"\r\n\r\n",
        ):
            s.sendto(junk, (shared_pbx.host, shared_pbx.port))
            with pytest.raises(TimeoutError):
                s.recvfrom(65536)
        bad = (
            b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx;rport\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\n"
            b"Call-ID: g1\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: -5\r\n\r\n"
        )
        s.sendto(bad, (shared_pbx.host, shared_pbx.port))
        data, _ = s.recvfrom(65536)
        assert data.startswith(b"SIP/2.0 400 "), data
        assert b"Call-ID: g1" in data


def test_cseq_method_mismatch_gets_400(shared_pbx: PbxProcess) -> None:
    """RFC 4475 §3.1.2.17 (mismatch01). Not a SIPp case: SIPp itself discards a
    response whose CSeq method differs from its request's."""
    req = (
        b"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKmm1;rport\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\n"
        b"Call-ID: mm1\r\nCSeq: 8 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(req, (shared_pbx.host, shared_pbx.port))
        data, _ = s.recvfrom(65536)
    assert data.startswith(b"SIP/2.0 400 "), data
    assert b"CSeq: 8 INVITE" in data


def test_oversized_datagram_rejected(shared_pbx: PbxProcess) -> None:
    """A message over the 64 KiB limit can't arrive over UDP; over TCP it gets 513."""
    big = b"x" * 70000
    req = (
        b"MESSAGE sip:pbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\nCall-ID: big1\r\nCSeq: 1 MESSAGE\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(big)
    ) + big
    with socket.create_connection((shared_pbx.host, shared_pbx.port), timeout=5) as s:
        s.sendall(req)
        data = s.recv(65536)
    assert data.startswith(b"SIP/2.0 513 "), data


def _request(method: str, via: str, call_id: str, drop: str = "") -> bytes:
    lines = [
        f"{method} sip:pbx@127.0.0.1 SIP/2.0",
        f"Via: {via}",
        "From: <sip:a@127.0.0.1>;tag=1",
        "To: <sip:pbx@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    lines = [line for line in lines if not (drop and line.startswith(f"{drop}:"))]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def _log_lines(pbx: PbxProcess, port: int) -> list[str]:
    return [line for line in pbx.log().splitlines() if f"127.0.0.1:{port} " in line]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "INVITE", "MESSAGE"])
def test_request_without_to_gets_400_and_one_log_line(
    shared_pbx: PbxProcess, transport: str, method: str
) -> None:
    """Issue 11: an OPTIONS without To got no answer and a traceback on the console."""
    target = (shared_pbx.host, shared_pbx.port)
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
    else:
        s = socket.create_connection(target, timeout=5)
    with s:
        s.settimeout(5)
        port = s.getsockname()[1]
        via = f"SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bKnoto{port};rport"
        s.sendto(_request(method, via, f"noto{port}", drop="To"), target)
        data = s.recv(65536)
        assert data.startswith(b"SIP/2.0 400 "), data
        assert b"To header" in data  # the Warning says why
        time.sleep(0.3)  # the log line is written after the answer
    lines = _log_lines(shared_pbx, port)
    assert len(lines) == 1, lines
    assert "Traceback" not in shared_pbx.log()


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE"], ids=["stateless", "stateful"])
@pytest.mark.parametrize("rport", [True, False])
def test_udp_request_naming_tcp_is_answered_over_udp(
    shared_pbx: PbxProcess, method: str, rport: bool
) -> None:
    """RFC 3261 §18.2.2 with RFC 3581: the answer goes back over the transport the
    request came on. A UDP request whose Via says TCP must not make the PBX connect
    to the address the Via names (a connect reflector)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as victim,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as via_udp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        victim.bind(("127.0.0.1", 0))
        victim.listen(5)
        victim.settimeout(1.5)
        vport = victim.getsockname()[1]
        via_udp.bind(("127.0.0.1", vport))  # where a Via-port answer arrives over UDP
        via_udp.settimeout(5)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        via = f"SIP/2.0/TCP 127.0.0.1:{vport};branch=z9hG4bKrefl{vport}" + (";rport" * rport)
        s.sendto(_request(method, via, f"refl{vport}{rport}"), (shared_pbx.host, shared_pbx.port))
        data, _ = (s if rport else via_udp).recvfrom(65536)
        assert data.startswith(b"SIP/2.0 "), data
        assert int(data.split()[1]) >= 200
        with pytest.raises(TimeoutError):
            victim.accept()  # the PBX never connected


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE"], ids=["stateless", "stateful"])
def test_tcp_request_naming_udp_is_answered_on_its_connection(
    shared_pbx: PbxProcess, method: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as via_udp:
        via_udp.bind(("127.0.0.1", 0))
        via_udp.settimeout(1.5)
        uport = via_udp.getsockname()[1]
        with socket.create_connection((shared_pbx.host, shared_pbx.port), timeout=5) as s:
            via = f"SIP/2.0/UDP 127.0.0.1:{uport};branch=z9hG4bKtu{uport}"
            s.sendall(_request(method, via, f"tu{uport}"))
            data = s.recv(65536)
            assert data.startswith(b"SIP/2.0 "), data
            assert int(data.split()[1]) >= 200
        with pytest.raises(TimeoutError):
            via_udp.recvfrom(65536)  # nothing went to the Via's UDP address
