"""A fresh image configured over its serial line by `pbx remote`, then used by phones.

One machine serves the module; the tests run in file order. init runs `pbx console` on
ttyS0. The first test lets go of the line the moment QEMU starts and runs `pbx remote`
with its default settings, as an installer would right after switching the box on: it
keeps waking the console (Ctrl-C) while the box boots and the console starts, logs in
with the factory password, sets a new one and runs a command; the console must have
survived all of it (started once). Then `pbx remote --port socket://127.0.0.1:PORT`
(QEMU's serial socket) sets a static network address, adds two extensions with their
passwords, sets the trunk and commits. Refused commands change nothing. Then the harness
logs in at the console, opens its maintenance shell and reboots; after the boot two SIPp
phones register with the new credentials and call each other through the PBX (SIP
forwarded from the host).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.firmware.qemu import PASSWORD_PROMPT, READY, TOP, Machine, prepare_image
from tests.firmware.serial_login import reconnect, release
from tests.interop.sipp_agents import Run, Server, free_port, run

pytestmark = [pytest.mark.firmware, pytest.mark.slow]

ADMIN_PASSWORD = "wafer-admin-7"
# A static address in QEMU's user network (what its DHCP would give), its gateway
# and its DNS forwarder: the box must come up on these after the reboot, not on DHCP.
NETWORK = {
    "net_mode": "static",
    "net_address": "10.0.2.15/24",
    "net_gateway": "10.0.2.2",
    "net_dns": "10.0.2.3",
}
EXTENSIONS = {"200": "sales-pw-8342", "201": "support-pw-1177"}
TRUNK = {
    # A documentation address (RFC 5737): with register=0 and no outbound call in these
    # tests nothing is sent there. Not 10.0.2.2: every packet from the host comes from
    # that address through QEMU's NAT, and the PBX trusts its trunk's address.
    "host": "192.0.2.10",
    "port": "5099",
    "username": "wafer-office",
    "password": "trunk-secret-55",
    "register": "0",
    "enabled": "1",
}


@dataclass
class Box:
    machine: Machine
    url: str = ""
    generation: str = ""
    pulled: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def box(firmware_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    work = tmp_path_factory.mktemp("qemu-console")
    disk = work / "cf.img"
    prepare_image(firmware_image, disk)
    m = Machine(disk, work, admin_password=ADMIN_PASSWORD)
    m.start()
    try:
        # Still booting: the first test's `pbx remote` takes the line right away.
        yield Box(m)
    finally:
        m.kill()


def remote(
    box: Box, *args: str, new_password: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", box.url]
    cmd += ["--timeout", "5", "--retries", "10"]
    if new_password is not None:
        cmd += ["--password", "admin", "--new-password", new_password]
    else:
        cmd += ["--password", ADMIN_PASSWORD]
    return subprocess.run(
        [*cmd, *args],
        cwd=TOP,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def pull(box: Box, dest: Path) -> dict[str, bytes]:
    res = remote(box, "--quiet", "pull", str(dest))
    assert res.returncode == 0, res.stdout + res.stderr
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir())}


def test_pbx_remote_with_its_defaults_gets_in_while_the_box_boots(box: Box) -> None:
    m = box.machine
    log = m.workdir / f"serial-{m.boots}.log"
    url = release(m)  # QEMU has just started
    before = log.read_bytes() if log.exists() else b""
    assert not PASSWORD_PROMPT.search(before), "the console was up before pbx remote started"
    cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", url]
    cmd += ["--password", "admin", "--new-password", ADMIN_PASSWORD, "run", "status"]
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=TOP, capture_output=True, text=True, timeout=900, check=False)
    took = time.monotonic() - started
    print(f"pbx remote from QEMU's start to its answer: {took:.0f} s")
    assert res.returncode == 0, res.stdout + res.stderr + log.read_text(errors="replace")[-3000:]
    assert "PBX: up" in res.stdout and "registered phones: 0" in res.stdout, res.stdout
    # It got in during the boot, and the console it woke never died: started once.
    assert READY.search(log.read_bytes()), log.read_text(errors="replace")[-3000:]
    reconnect(m, url)
    m.wait_shell()
    starts = m.console.value("logread | grep -c 'pbx-console.*console starting'")
    assert starts == "1", m.console.value("logread | grep pbx-console")
    # Leave the shell: init brings the console back on the line.
    m.console.mark()
    m.console.write(b"exit\n")
    m.console.expect(PASSWORD_PROMPT, 120)


def test_the_serial_line_belongs_to_the_console(box: Box) -> None:
    # No shell on ttyS0 without the admin password: the line shows the console's
    # banner and asks for the password (no longer the factory one: pbx remote set it).
    con = box.machine.console
    con.mark()
    con.write(b"\r")
    prompt = con.expect(PASSWORD_PROMPT, 30)
    seen = con.text(0)
    assert "serial console" in seen, seen
    assert b"Factory password: " not in con.before(prompt.start(), 160), seen
    start = con.mark()
    con.write(b"id; echo not-a-shell\r")  # a password attempt, not a command
    con.expect(b"Login incorrect", 30)
    after = con.text(start)
    assert "uid=0" not in after and "not-a-shell" not in after, after


def test_configured_over_the_serial_line_by_pbx_remote(box: Box, tmp_path: Path) -> None:
    box.url = release(box.machine)
    commands = [f"set settings.{k}={v}" for k, v in NETWORK.items()]
    for ext, password in EXTENSIONS.items():
        commands += [
            f"add subscriber username={ext} domain=pbx.local password={password}",
            f"add pbx_extension username={ext} display_name=Ext{ext} voicemail=0 ring_timeout=20",
        ]
    commands += [f"set pbx_trunk[provider].{k}={v}" for k, v in TRUNK.items()]
    res = remote(box, "run", *commands, "commit")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"^committed (gen-\d{6,})$", res.stdout, re.MULTILINE)
    assert m is not None, res.stdout
    box.generation = m.group(1)
    # The box took it: read back over the same line.
    res = remote(box, "run", "get settings.net_mode", "get subscriber[201].password", "status")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["static", EXTENSIONS["201"]], res.stdout
    assert f"configuration {box.generation}" in res.stdout, res.stdout
    box.pulled = pull(box, tmp_path / "before")
    trunk = box.pulled["pbx_trunk"].decode()
    assert ":192.0.2.10:5099:udp:wafer-office:trunk-secret-55:0:" in trunk, trunk


def test_refused_commands_change_nothing(box: Box, tmp_path: Path) -> None:
    assert box.pulled, "needs the configuration of the previous test"
    # A bad value stops the run before its commit; the staged change dies with the session.
    res = remote(
        box,
        "run",
        "set subscriber[200].password=other-pw",
        "set pbx_trunk[provider].port=x",
        "commit",
    )
    assert res.returncode == 1 and "takes an integer" in res.stderr, res.stdout + res.stderr
    res = remote(box, "run", "set settings.net_mode=bogus")
    assert res.returncode == 1, res.stdout + res.stderr
    res = remote(box, "run", "add subscriber username=200 domain=pbx.local password=dup-pw-1")
    assert res.returncode == 1, res.stdout + res.stderr
    res = remote(box, "run", "frobnicate", "commit")
    assert res.returncode == 2 and "unknown command" in res.stderr, res.stdout + res.stderr
    # A commit the cross-table check refuses writes nothing either.
    res = remote(box, "run", "add pbx_extension username=555 voicemail=0 ring_timeout=20", "commit")
    assert res.returncode == 1 and "no subscriber 555@pbx.local" in res.stderr, res.stderr
    assert pull(box, tmp_path / "after") == box.pulled
    res = remote(box, "run", "status")
    assert f"configuration {box.generation}" in res.stdout, res.stdout


def test_reboot_keeps_the_configuration(box: Box) -> None:
    assert box.generation, "needs the configuration of the first test"
    m = box.machine
    reconnect(m, box.url)
    m.wait_shell()
    # (The PBX's log lines share the console: look for the value on a line of its own.)
    generation = re.compile(rf"^{box.generation}\r?$", re.MULTILINE)
    _, current = m.console.run("readlink /data/config/current")
    assert generation.search(current), current
    m.console.mark()
    m.console.write(b"reboot\n")
    m.console.expect(b"SYSLINUX", 60)
    m.console.expect(READY, 180)
    m.wait_shell()
    _, out = m.console.run(
        "readlink /data/config/current; ip -4 addr show eth0; ip route; cat /etc/resolv.conf"
    )
    assert generation.search(out), out
    assert "inet 10.0.2.15/24" in out, out
    assert "default via 10.0.2.2 dev eth0" in out, out
    assert "nameserver 10.0.2.3" in out, out
    status, _ = m.console.run("pidof udhcpc", check=False)
    assert status == 1, "udhcpc runs although the network is static"


def register(box: Box, tmp: Path, user: str, port: int, password: str, expires: int = 600) -> Run:
    return run(
        "register.xml",
        ("127.0.0.1", box.machine.sip_port),
        tmp,
        f"register-{user}-{port}",
        local_port=port,
        keys={"user": user, "contact": f"<sip:{user}@127.0.0.1:{port}>", "expires": str(expires)},
        auth=(user, password),
        timeout=20,
    )


def call(box: Box, tmp: Path, caller: str, callee: str, callee_port: int) -> tuple[Run, Run]:
    answer = Server("uas_answer.xml", tmp, f"callee-{callee}", port=callee_port, timeout=40)
    try:
        res = run(
            "uac_call.xml",
            ("127.0.0.1", box.machine.sip_port),
            tmp,
            f"caller-{caller}",
            keys={"user": caller, "callee": callee},
            auth=(caller, EXTENSIONS[caller]),
            timeout=30,
        )
    finally:
        callee_run = answer.finish(15)
    return res, callee_run


def test_phones_register_and_call_each_other(box: Box, tmp_path: Path) -> None:
    ports = {ext: free_port() for ext in EXTENSIONS}
    for ext, password in EXTENSIONS.items():
        res = register(box, tmp_path, ext, ports[ext], password)
        assert res.returncode == 0 and res.statuses()[-1:] == [200], res.report()
    _, status = box.machine.console.run("pbx status")
    for ext in EXTENSIONS:
        assert f"{ext}@pbx.local" in status, status
    for caller, callee in (("200", "201"), ("201", "200")):
        res, answered = call(box, tmp_path, caller, callee, ports[callee])
        assert res.returncode == 0 and res.successful == 1, res.report() + answered.report()
        assert answered.successful == 1, answered.report()
        invite = answered.requests("INVITE")[0]
        assert f"sip:{caller}@" in (invite.header("From") or ""), invite.text
    # The factory credentials of the new extensions do not exist; a wrong password fails.
    res = register(box, tmp_path, "200", free_port(), "change-me-200")
    assert 200 not in res.statuses(), res.report()
