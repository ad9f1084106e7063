"""IPv6 end to end (README: transport UDP + TCP, IPv4/IPv6): `pbx run --listen
[::1]:0`, SIPp phones on ::1 register (digest) and call each other with RTP through
the PBX's anchored relay, over UDP and over TCP. No IPv6 loopback fails the test
(tests/conftest.py `need`), it is not skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import Message, Phones, check, pbx_status, register, wait_cdr

pytestmark = [pytest.mark.interop, pytest.mark.tools("ipv6", "sipp", "sipp-pcap")]

V6 = "::1"


@dataclass
class Env:
    pbx: PbxProcess
    tmp: Path

    @property
    def phones(self) -> Phones:
        return Phones((self.pbx.host, self.pbx.port), V6, V6)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ipv6")
    pbx = start_pbx(tmp, extra=["--state", str(tmp / "state.mdb")], listen=f"[{V6}]:0")
    try:
        yield Env(pbx, tmp)
    finally:
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()


def sdp_address(msg: Message) -> tuple[str, str]:
    """The address type and connection address of a message's SDP."""
    conn = re.search(r"^c=IN (IP[46]) (\S+)", msg.body, re.MULTILINE)
    assert conn, msg.text
    return conn.group(1), conn.group(2)


def test_listens_on_ipv6_only(env: Env) -> None:
    assert env.pbx.host == V6
    status = pbx_status(env.tmp / "run" / "control.sock")
    assert status["sip"] == [f"{V6}:{env.pbx.port}"], status


def test_register_over_ipv6(env: Env, tmp_path: Path) -> None:
    res = register((env.pbx.host, env.pbx.port), tmp_path, "103", 5999, contact_ip=V6)
    assert res.statuses()[-2:] == [401, 200], res.report()
    ok = res.received()[-1]
    via = ok.header("Via") or ""
    assert "[::1]" in via or "::1" in via, ok.text
    regs = pbx_status(env.tmp / "run" / "control.sock")["registrations"]
    assert isinstance(regs, list)
    (binding,) = [r for r in regs if r["aor"] == "103@pbx.local"]
    assert "[::1]:5999" in str(binding["contact"]), binding
    assert "::1" in str(binding["source"]), binding
    register((env.pbx.host, env.pbx.port), tmp_path, "103", 5999, contact_ip=V6, expires=0)


def test_call_with_media_over_ipv6(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_media_talk.xml", "uas_media_talk.xml")
    (invite,) = b.requests("INVITE")
    assert invite.first_line.startswith("INVITE sip:101@[::1]:"), invite.text
    # Anchored: each phone is offered the PBX's relay, on ::1.
    assert sdp_address(invite) == ("IP6", V6), invite.text
    assert sdp_address(res.responses(200)[0]) == ("IP6", V6)
    row = wait_cdr(env.tmp / "state.mdb", res.call_id)
    assert row["disposition"] == "ANSWERED", row
    # Two seconds of 50 packet/s audio from each phone went through the relay.
    for side in ("caller", "callee"):
        assert int(row[f"{side}_rtp_in"]) > 40, row
        assert int(row[f"{side}_rtp_out"]) > 40, row


def test_call_over_tcp_on_ipv6(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", transport="t1")
    check(res)
    assert len(b.requests("BYE")) == 1, b.report()
    sent = res.sent("INVITE")[-1]
    assert "SIP/2.0/TCP" in (sent.header("Via") or ""), sent.text
