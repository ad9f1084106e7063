"""Softphones on the host of `./build.sh run` (issue 11, "tried as a new user would").

The image boots as firmware/run-qemu.py boots it: QEMU user networking forwarding SIP
and an RTP range from 127.0.0.1 to the same guest ports, and the settings run-qemu.py
hands over by fw_cfg (`host_settings`: external addresses 127.0.0.1, a LAN of
loopback only, the forwarded RTP range), which /usr/sbin/pbx-run commits at boot.
Two baresip phones on the host register to 127.0.0.1:<forwarded port> as 100 and
101; the guest sees them both at 10.0.2.2 and their SDP names 127.0.0.1, which means
the guest itself there. 100 calls 101 and each hears the other's tone, then each
calls *43 and hears its own. Without the NAT settings the SDP named 10.0.2.15, which
the host cannot reach, and the phones heard nothing.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware.qemu import READY, TOP, Machine, free_port, prepare_image, run_qemu
from tests.firmware.serial_login import reconnect, release
from tests.media.baresip import Baresip, available, dominant_frequency

pytestmark = [
    pytest.mark.firmware,
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="baresip-core is not installed"),
]

ALICE_HZ, BOB_HZ = 440.0, 1000.0
RTP_PORTS = 20  # 10 pairs: a call between the phones uses 2, an echo test 1


def free_rtp_range(count: int) -> range:
    """`count` consecutive UDP ports free on 127.0.0.1, starting on an even port."""
    for _ in range(200):
        base = free_port(socket.SOCK_DGRAM) & ~1
        if base < 1024 or base + count > 65535:
            continue
        if all(Machine._udp_free(base + i) for i in range(count)):
            return range(base, base + count)
    raise RuntimeError("no free run of UDP ports on 127.0.0.1")


@pytest.fixture(scope="module")
def machine(firmware_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    work = tmp_path_factory.mktemp("qemu-nat")
    disk = work / "cf.img"
    prepare_image(firmware_image, disk)
    sip_port = free_port(both=True)
    rtp = free_rtp_range(RTP_PORTS)
    # Exactly what `./build.sh run` (run-qemu.py main) hands the guest.
    settings = run_qemu.host_settings(sip_port, rtp)
    extra = run_qemu.fw_cfg_args(run_qemu.write_settings(work / "host-settings", settings))
    m = Machine(
        disk, work, rtp_ports=rtp, extra=tuple(extra), sip_port=sip_port, rtp_host_base=rtp.start
    )
    m.start()
    try:
        m.wait_ready(timeout=240, login=False)
        yield m
    finally:
        m.kill()


def registered(phone: Baresip, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = phone.command("reginfo")
        if "OK" in str(info.get("data", "")) or "200 OK" in phone.log():
            return
        time.sleep(0.3)
    raise AssertionError(f"{phone.user} did not register:\n{phone.log()}")


def closed_early(phone: Baresip) -> bool:
    """Whether the phone saw its call end before we hung up (the issue's symptom)."""
    for msg in phone._read_messages(0.2):
        if msg.get("event"):
            phone.events.append(msg)
    return any(e.get("type") == "CALL_CLOSED" for e in phone.events)


def talk(phone: Baresip, seconds: float) -> None:
    time.sleep(seconds)
    assert not closed_early(phone), f"{phone.user}: the call closed by itself\n{phone.log()}"


def test_two_host_softphones_call_each_other_and_the_echo_test(
    machine: Machine, tmp_path: Path
) -> None:
    registrar = f"127.0.0.1:{machine.sip_port}"
    alice = Baresip(
        tmp_path / "100", "100", tone_hz=ALICE_HZ, registrar=registrar, password="change-me-100"
    )
    bob = Baresip(
        tmp_path / "101", "101", tone_hz=BOB_HZ, registrar=registrar, password="change-me-101"
    )
    try:
        alice.start()
        bob.start()
        registered(alice)
        registered(bob)
        alice.dial(f"sip:101@{registrar}")
        bob.wait_event("CALL_ESTABLISHED", timeout=60)
        alice.wait_event("CALL_ESTABLISHED", timeout=60)
        talk(alice, 5)
        alice.hangup()
        bob.wait_event("CALL_CLOSED", timeout=60)  # our BYE reached the guest and back
        alice.wait_event("CALL_CLOSED", timeout=60)
        for phone in (alice, bob):
            phone.dial(f"sip:*43@{registrar}")
            phone.wait_event("CALL_ESTABLISHED", timeout=60)
            talk(phone, 5)
            phone.hangup()
            phone.wait_event("CALL_CLOSED", timeout=60)
    finally:
        alice.stop()
        bob.stop()
    freqs = [ALICE_HZ, BOB_HZ]

    def heard(phone: Baresip) -> list[float | None]:
        recs = sorted(phone.snd.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
        return [dominant_frequency(r, freqs) for r in recs]

    # The call (each hears the other), then the echo test (each hears itself).
    assert heard(alice) == [BOB_HZ, ALICE_HZ], alice.log()[-3000:] + machine.serial_log()[-3000:]
    assert heard(bob) == [ALICE_HZ, BOB_HZ], bob.log()[-3000:]


# ---------------------------------------------------------------- voicemail on the card

MESSAGE_SECONDS = 20  # what the caller says after the tone
GREETING_SECONDS = 12  # the built-in greeting ("Extension 1 0 1 … after the tone") and tone
VOICEMAIL_DIR = "/data/recordings/voicemail"


def at_console(machine: Machine, *commands: str) -> str:
    """Run console commands with `pbx remote` over the serial line, as an installer
    would (the first login replaces the factory password with the harness's)."""
    url = release(machine)
    try:
        cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", url, "--timeout", "5"]
        cmd += ["--retries", "10", "--password", "admin", "--new-password"]
        res = subprocess.run(
            [*cmd, machine.admin_password, "run", *commands],
            cwd=TOP,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        reconnect(machine, url)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def messages_on_card(machine: Machine) -> dict[str, int]:
    """101's message files on /data and their sizes; no unfinished (.part) ones."""
    _, out = machine.console.run(f"ls -l {VOICEMAIL_DIR}/ 2>/dev/null; echo done", timeout=30)
    assert ".part" not in out, out
    return {
        m.group(2): int(m.group(1))
        for m in re.finditer(r"\s(\d+)\s+\w{3}\s+\d+\s+[\d:]+\s+(101-\d+\.wav)\s*$", out, re.M)
    }


def test_a_voicemail_message_survives_a_reboot_and_a_power_cut(
    machine: Machine, tmp_path: Path
) -> None:
    """Issue 15: a message left before a reboot is still there after it, a power cut
    while the next one is recorded loses at most that one, and the bytes written to
    the card per minute of voicemail (printed: the README quotes them)."""
    out = at_console(machine, "set pbx_extension[101].voicemail=1", "commit")
    assert re.search(r"^committed gen-\d+", out, re.M), out
    registrar = f"127.0.0.1:{machine.sip_port}"

    def phone(user: str, hz: float, name: str) -> Baresip:
        p = Baresip(
            tmp_path / name, user, tone_hz=hz, registrar=registrar, password=f"change-me-{user}"
        )
        p.start()
        registered(p)
        return p

    # 100 leaves 101 a message: a 440 Hz tone.
    alice = phone("100", ALICE_HZ, "leave")
    try:
        written = machine.block_stats()["wr_bytes"]
        alice.dial(f"sip:*96101@{registrar}")
        alice.wait_event("CALL_ESTABLISHED", timeout=60)
        talk(alice, GREETING_SECONDS + MESSAGE_SECONDS)
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=60)
    finally:
        alice.stop()
    time.sleep(8)  # the file is fsynced at its end; ext4 commits its journal within 5 s
    written = machine.block_stats()["wr_bytes"] - written
    machine.wait_shell()
    (size,) = messages_on_card(machine).values()
    seconds = (size - 58) / 8000  # 8 kHz µ-law: 8 000 bytes a second after the header
    assert seconds >= MESSAGE_SECONDS / 2, (size, machine.console.tail())
    per_minute = written / seconds * 60
    print(f"voicemail: {seconds:.1f} s message, {written} bytes written, {per_minute:.0f} B/min")
    # Written once (no rewrite while recording): the file plus metadata and journal.
    assert size <= written <= 1.5 * size + 256 * 1024, (size, written)

    # A clean reboot: the message is there after it.
    before = dict(messages_on_card(machine))
    machine.console.mark()
    machine.console.write(b"reboot\n")
    machine.console.expect(b"SYSLINUX", 60)
    machine.console.expect(READY, 240)
    machine.wait_shell()
    assert messages_on_card(machine) == before

    # The power goes while the next message is being recorded.
    alice = phone("100", ALICE_HZ, "cut")
    try:
        alice.dial(f"sip:*96101@{registrar}")
        alice.wait_event("CALL_ESTABLISHED", timeout=60)
        talk(alice, GREETING_SECONDS + 5)
        machine.power_cut()
    finally:
        alice.stop()
    machine.start()
    machine.wait_ready(timeout=240)
    assert messages_on_card(machine) == before  # the first intact; no .part left

    # 101 listens from its own phone (no PIN): it hears 100's tone from the card.
    bob = phone("101", BOB_HZ, "listen")
    try:
        bob.dial(f"sip:*97@{registrar}")
        bob.wait_event("CALL_ESTABLISHED", timeout=60)
        time.sleep(3)
        bob.send_dtmf("1")  # the menu: 1 plays the messages
        talk(bob, 14)
        bob.hangup()
        bob.wait_event("CALL_CLOSED", timeout=60)
    finally:
        bob.stop()
    recs = sorted(bob.snd.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
    assert recs, bob.log()[-3000:]
    heard = dominant_frequency(recs[-1], [ALICE_HZ, BOB_HZ])
    assert heard == ALICE_HZ, bob.log()[-3000:] + machine.serial_log()[-3000:]
