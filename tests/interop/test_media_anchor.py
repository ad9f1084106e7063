"""Anchored media against SIPp phones that really send RTP (issue 6): the per-leg RTP
figures land in the CDR, a delayed offer (INVITE without SDP) is anchored too, and
the direct-media setting lets two LAN phones talk to each other without the PBX.

The PBX advertises its media on 127.0.0.9 (`--media-address`) while the phones sit
on 127.0.0.4 (caller) and 127.0.0.5 (callee), so every SDP says whose address it
carries. The phones send G.711 A-law from the pcap Debian's sip-tester ships.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FACTORY, ROOT, PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import PASSWORDS, Message, Run, Server, free_port, register, run

PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PBX_MEDIA = "127.0.0.9"
CALLER_IP, CALLEE_IP = "127.0.0.4", "127.0.0.5"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not PCAP.exists(), reason="sip-tester's g711a.pcap is not installed"),
]


@dataclass
class Env:
    pbx: PbxProcess
    tmp: Path

    @property
    def addr(self) -> tuple[str, int]:
        return (self.pbx.host, self.pbx.port)

    def cdrs(self) -> list[dict[str, str]]:
        out = subprocess.run(
            [sys.executable, "-m", "pbx_core", "cdr", "export", "--state", str(self.state)],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout
        return list(csv.DictReader(io.StringIO(out)))

    @property
    def state(self) -> Path:
        return self.tmp / "state.mdb"

    def cdr(self, call_id: str) -> dict[str, str]:
        """The CDR of the call whose caller used `call_id` (written as the call ends)."""
        deadline = time.monotonic() + 5
        while True:
            found = [r for r in self.cdrs() if r["call_id"] == call_id]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(found) == 1, (call_id, self.cdrs())
        return found[0]


def _config(dest: Path, settings: dict[str, str]) -> Path:
    shutil.copytree(FACTORY, dest)
    table = dest / "pbx_settings"
    lines = [
        line for line in table.read_text().splitlines() if line.split(":", 1)[0] not in settings
    ]
    lines += [f"{k}:{v}" for k, v in settings.items()]
    table.write_text("\n".join(lines) + "\n")
    return dest


def _start(tmp: Path, settings: dict[str, str] | None = None) -> Env:
    config = _config(tmp / "config", settings or {})
    pbx = start_pbx(
        tmp, config=config, extra=["--state", str(tmp / "state.mdb"), "--media-address", PBX_MEDIA]
    )
    return Env(pbx, tmp)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = _start(tmp_path_factory.mktemp("media"))
    yield e
    stop_pbx(e.pbx)
    assert "Traceback" not in e.pbx.log(), e.pbx.log()


def _callee(env: Env, tmp: Path, scenario: str, user: str = "101") -> tuple[Server, int]:
    port = free_port(CALLEE_IP)
    register(env.addr, tmp, user, port, contact_ip=CALLEE_IP)
    return Server(scenario, tmp, f"callee-{user}", local_ip=CALLEE_IP, port=port), port


def _call(env: Env, tmp: Path, scenario: str, callee: str = "101") -> Run:
    return run(
        scenario,
        env.addr,
        tmp,
        "caller",
        local_ip=CALLER_IP,
        keys={"user": "100", "callee": callee},
        auth=("100", PASSWORDS["100"]),
    )


def check(res: Run) -> None:
    assert res.returncode == 0 and res.failed == 0 and res.successful == 1, res.report()


def a_call_id(res: Run) -> str:
    return next(m for m in res.messages if m.direction == "sent").header("Call-ID") or ""


def sdp_address(msg: Message) -> tuple[str, int]:
    """The connection address and audio port of a message's SDP."""
    conn = re.search(r"^c=IN IP4 (\S+)", msg.body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", msg.body, re.MULTILINE)
    assert conn and port, msg.text
    return conn.group(1), int(port.group(1))


# ---------------------------------------------------------------- RTP figures in the CDR


def test_cdr_carries_each_legs_rtp_figures(env: Env, tmp_path: Path) -> None:
    callee, _port = _callee(env, tmp_path, "uas_media_talk.xml")
    try:
        res = _call(env, tmp_path, "uac_media_talk.xml")
        b = callee.finish()
    finally:
        callee.stop()
    check(res)
    check(b)
    row = env.cdr(a_call_id(res))
    assert row["disposition"] == "ANSWERED"
    # Two seconds of 50 packet/s audio from each phone went through the relay.
    for side in ("caller", "callee"):
        assert row[f"{side}_codec"] == "PCMA", row
        assert int(row[f"{side}_rtp_in"]) > 40, row
        assert int(row[f"{side}_rtp_out"]) > 40, row
        assert float(row[f"{side}_jitter_ms"]) >= 0.0
    # What the caller sent is what the PBX sent the callee (the caller also heard
    # the PBX's ringback before the answer, so not the other way round).
    assert abs(int(row["caller_rtp_in"]) - int(row["callee_rtp_out"])) <= 5, row
    assert int(row["caller_rtp_out"]) >= int(row["callee_rtp_in"]), row
