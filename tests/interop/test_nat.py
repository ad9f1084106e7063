"""NAT with real phones (issue 11): baresip phones outside `lan_networks` are offered
`external_media_address` and still hear each other and the echo test (their RTP is
latched where it comes from); a SIPp phone that registers a Contact on another port
than it sends from, with no NAT in between, is called at that Contact (the `nat`
setting's `auto`), and at its source with `nat` = force_rport or when its Via names
another address (behind NAT)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from pbx_core.pbx.control import query
from tests.conftest import FACTORY, PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import PASSWORDS, Phones, Server, free_port, run
from tests.media.baresip import Baresip, available, dominant_frequency

pytestmark = pytest.mark.interop

ALICE_HZ, BOB_HZ = 440.0, 1000.0
# On loopback every phone is 127.0.0.1; a LAN that excludes it puts them all
# "outside". 127.0.0.2 is another address of this host: the PBX's RTP sockets listen
# on every address, as behind a router that forwards the public address unchanged.
EXTERNAL = "127.0.0.2"


def config(tmp: Path, **settings: str) -> Path:
    dest = tmp / "config"
    shutil.copytree(FACTORY, dest)
    rows = "".join(f"{k}:{v.replace(':', chr(92) + ':')}\n" for k, v in settings.items())
    with (dest / "pbx_settings").open("a") as f:
        f.write(rows)
    return dest


def agent(tmp: Path, pbx: PbxProcess, user: str, hz: float) -> Baresip:
    phone = Baresip(
        tmp / user,
        user,
        tone_hz=hz,
        registrar=f"127.0.0.1:{pbx.port}",
        password=f"change-me-{user}",
    )
    phone.start()
    sock = pbx.stderr_path.parent / "run" / "control.sock"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        regs = query(sock, {"cmd": "status"}).get("registrations", [])
        if any(r["aor"] == f"{user}@pbx.local" for r in regs):
            return phone
        time.sleep(0.2)
    phone.stop()
    raise AssertionError(f"{user} did not register:\n{phone.log()}")


_TRACE_HEAD = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (?:<<|>>) (in|out) ", re.MULTILINE)


def sdp_addresses(trace: str, direction: str) -> set[str]:
    """c= addresses of the SDP bodies the PBX sent (direction "out") or received."""
    parts = _TRACE_HEAD.split(trace)  # [before, direction, message, direction, ...]
    found: set[str] = set()
    for d, message in zip(parts[1::2], parts[2::2], strict=True):
        if d == direction:
            found.update(re.findall(r"c=IN IP4 (\S+)", message))
    return found


@pytest.mark.skipif(not available(), reason="baresip-core is not installed")
def test_phones_outside_the_lan_get_the_external_address_and_audio_flows(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, lan_networks="10.0.0.0/8", external_media_address=EXTERNAL)
    trace = tmp_path / "sip.trace"
    run_dir = tmp_path / "pbx"
    run_dir.mkdir()
    pbx = start_pbx(run_dir, cfg, extra=["--trace", str(trace)])
    alice = bob = None
    try:
        alice = agent(tmp_path, pbx, "100", ALICE_HZ)
        bob = agent(tmp_path, pbx, "101", BOB_HZ)
        alice.dial(f"sip:101@127.0.0.1:{pbx.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=30)
        alice.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(3)
        sock = run_dir / "run" / "control.sock"
        (call,) = query(sock, {"cmd": "status"})["calls"]
        legs = call["media"].values()
        assert all(leg["received"] > 50 and leg["stray"] >= 0 for leg in legs), call
        alice.hangup()
        bob.wait_event("CALL_CLOSED", timeout=30)
        # The echo test from outside: the caller hears itself.
        alice.dial(f"sip:*43@127.0.0.1:{pbx.port}")
        alice.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(3)
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=30)
    finally:
        for phone in (alice, bob):
            if phone is not None:
                phone.stop()
        stop_pbx(pbx)
    log = pbx.log()
    assert "Traceback" not in log, log
    text = trace.read_text(errors="replace")
    # Every SDP the PBX sent names the external address, never its own.
    assert sdp_addresses(text, "out") == {EXTERNAL}, text[-3000:]
    freqs = [ALICE_HZ, BOB_HZ]
    bob_heard = dominant_frequency(bob.recording("dec"), freqs) if bob else None
    assert bob_heard == ALICE_HZ
    assert alice is not None
    alice_recs = sorted(alice.snd.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
    assert len(alice_recs) == 2, alice_recs
    assert dominant_frequency(alice_recs[0], freqs) == BOB_HZ  # the call
    assert dominant_frequency(alice_recs[1], freqs) == ALICE_HZ  # the echo


@pytest.mark.parametrize(
    ("nat", "via", "reached"),
    [
        ("auto", None, "contact"),
        ("force_rport", None, "source"),
        # Behind NAT: the phone names its private address in Via and Contact.
        ("auto", "192.168.77.7:5060", "source"),
    ],
)
def test_a_registered_phone_is_called_at_its_contact_or_its_source(
    tmp_path: Path, nat: str, via: str | None, reached: str
) -> None:
    """101 registers from one port a Contact on another. With its Via telling the
    truth there is no NAT, so the INVITE goes to the Contact (RFC 3261 §10), unless
    the installer forces the source (the old behaviour, which left such a phone
    unreachable); with a Via naming another address (a NAT) it goes to the source."""
    cfg = config(tmp_path, nat=nat)
    run_dir = tmp_path / "pbx"
    run_dir.mkdir()
    pbx = start_pbx(run_dir, cfg)
    try:
        source_port, contact_port = free_port(), free_port()
        contact_host = "192.168.77.7" if via else "127.0.0.1"
        keys = {"user": "101", "contact": f"<sip:101@{contact_host}:{contact_port}>"}
        keys["expires"] = "600"
        if via:
            keys["via"] = via
        reg = run(
            "register_via.xml" if via else "register.xml",
            (pbx.host, pbx.port),
            tmp_path,
            "register-101",
            local_port=source_port,
            keys=keys,
            auth=("101", PASSWORDS["101"]),
        )
        assert reg.returncode == 0 and reg.statuses()[-1:] == [200], reg.report()
        sock = run_dir / "run" / "control.sock"
        (binding,) = query(sock, {"cmd": "status"})["registrations"]
        want = contact_port if reached == "contact" else source_port
        assert binding["reached_at"] == f"UDP 127.0.0.1:{want}", binding
        assert binding["nat"] is (reached == "source"), binding
        server = Server("uas_answer.xml", tmp_path, "callee", port=want)
        try:
            res = Phones((pbx.host, pbx.port)).call(tmp_path, "uac_call.xml", "101")
            answered = server.finish()
        finally:
            server.stop()
        assert res.returncode == 0 and res.successful == 1, res.report()
        assert answered.successful == 1, answered.report()
    finally:
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()
