"""The watchdog's three layers on the booted image (QEMU with an i6300esb).

init runs `pbx watchdog` (rootfs_overlay/usr/sbin/pbx-run), which runs `pbx run` and
feeds /dev/watchdog (30 s) only while the PBX is healthy. One machine serves the
module; the tests run in file order, from the mildest fault to the ones that reset
the guest: a killed PBX, a hung PBX, a PBX that crashes in a loop (the supervisor
gives up, stops feeding, the hardware resets the box) and a hung supervisor. Every
recovery is measured from the fault to a SIP OPTIONS answered 200 through the host's
port forward, and printed (run pytest with -s to see the figures).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware.qemu import READY, Machine, prepare_image

pytestmark = [pytest.mark.firmware, pytest.mark.slow]

HW_TIMEOUT = 30  # what pbx-run gives `pbx watchdog --timeout`


@pytest.fixture(scope="module")
def machine(firmware_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    work = tmp_path_factory.mktemp("qemu-watchdog")
    disk = work / "cf.img"
    prepare_image(firmware_image, disk)
    m = Machine(disk, work)
    m.start()
    try:
        m.wait_ready(timeout=240)
        assert wait_serving(m, time.monotonic(), 60) is not None, "the PBX never answered"
        yield m
    finally:
        m.kill()


def options_answered(port: int, timeout: float) -> bool:
    """One SIP OPTIONS to 127.0.0.1:port (the guest's 5060); True on a 200 for it."""
    call_id = f"{secrets.token_hex(8)}@watchdog-test"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{lport}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            s.sendto(request.encode(), ("127.0.0.1", port))
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                data = s.recv(65535)
                if call_id.encode() in data:
                    return data.startswith(b"SIP/2.0 200 ")
        except OSError:  # timeout, or ICMP port unreachable while nothing listens
            return False
    return False


def wait_serving(machine: Machine, since: float, timeout: float) -> float | None:
    """Seconds from `since` until an OPTIONS is answered 200; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if options_answered(machine.sip_port, 1.0):
            return time.monotonic() - since
        time.sleep(0.25)
    return None


def pids(machine: Machine) -> tuple[int, int]:
    """(supervisor, pbx run) process ids in the guest."""
    _, ps = machine.console.run("ps")
    sup = [int(line.split()[0]) for line in ps.splitlines() if " pbx watchdog " in line]
    run = [int(line.split()[0]) for line in ps.splitlines() if "/usr/lib/pbx/pbx run " in line]
    assert len(sup) == 1 and len(run) == 1, ps
    return sup[0], run[0]


def watchdog_events(machine: Machine) -> list[dict[str, object]]:
    machine.qmp.execute("query-status")  # collects the events QEMU sent meanwhile
    return [e for e in machine.qmp.events if e.get("event") == "WATCHDOG"]


def wait_hardware_reset(machine: Machine, since: float, timeout: float) -> float:
    """Seconds from `since` until QEMU reports the i6300esb reset the guest."""
    before = len(watchdog_events(machine))
    deadline = time.monotonic() + timeout
    while len(events := watchdog_events(machine)) == before:
        assert time.monotonic() < deadline, (
            f"no QMP WATCHDOG event within {timeout:.0f} s; console:\n{machine.console.tail()}"
        )
        time.sleep(0.25)
    assert events[-1].get("data") == {"action": "reset"}, events[-1]
    return time.monotonic() - since


def recovered_after_reset(machine: Machine, since: float) -> float:
    """The guest boots again to PBX ready and serves; seconds from `since`."""
    machine.console.expect(READY, 180)
    serving = wait_serving(machine, since, 60)
    assert serving is not None, machine.console.tail()
    machine.wait_shell()  # log in at the console again (not part of the figure)
    return serving


def figure(what: str, seconds: float) -> None:
    print(f"\nwatchdog recovery: {what}: {seconds:.1f} s")


def test_supervisor_runs_the_pbx_and_arms_the_hardware_watchdog(machine: Machine) -> None:
    # Its routine decisions go to the RAM log (`logread`), not to the serial line
    # (that belongs to the console). The first check may come a moment after the PBX
    # answers us.
    deadline = time.monotonic() + 30
    healthy = re.compile(
        r"pbx-watchdog\[\d+\]: pbx run \(pid \d+\) is healthy: OPTIONS answered 200"
    )
    while not healthy.search(log := machine.console.run("logread")[1]):
        assert time.monotonic() < deadline, log
        time.sleep(1)
    assert f"hardware watchdog /dev/watchdog armed: timeout set to {HW_TIMEOUT} s" in log, log
    assert re.search(r"pbx\[\d+\]: configuration /data/config \(generations\) loaded", log), log
    # Their stderr formats ("pbx watchdog: ...", "... pbx INFO ...") never reached the
    # line (logread's output on it has the syslog format).
    console = machine.console.text()
    assert not re.search(r"pbx watchdog: pbx run \(pid \d+\) is healthy", console), console
    assert " pbx INFO " not in console, console
    sup, run = pids(machine)
    _, status = machine.console.run(f"cat /proc/{run}/status")
    assert re.search(rf"^PPid:\s+{sup}$", status, re.MULTILINE), status


def test_killed_pbx_is_restarted(machine: Machine) -> None:
    sup, run = pids(machine)
    machine.console.mark()
    t0 = time.monotonic()
    machine.console.run(f"kill -9 {run}")
    machine.console.expect(re.compile(rb"pbx run killed by SIGKILL: restarting in 2 s"), 20)
    serving = wait_serving(machine, t0, 60)
    assert serving is not None, machine.console.tail()
    figure("kill -9 of pbx run -> serving again", serving)
    sup2, run2 = pids(machine)
    assert sup2 == sup and run2 != run
    assert watchdog_events(machine) == []


def test_hung_pbx_is_detected_and_restarted(machine: Machine) -> None:
    sup, run = pids(machine)
    machine.console.mark()
    t0 = time.monotonic()
    machine.console.run(f"kill -STOP {run}")
    machine.console.expect(
        re.compile(rb"pbx run \(pid " + str(run).encode() + rb"\) is unhealthy: [^\r\n]*killing"),
        60,
    )
    detected = time.monotonic() - t0
    serving = wait_serving(machine, t0, 60)
    assert serving is not None, machine.console.tail()
    figure("SIGSTOP of pbx run -> detected", detected)
    figure("SIGSTOP of pbx run -> serving again", serving)
    sup2, run2 = pids(machine)
    assert sup2 == sup and run2 != run
    assert watchdog_events(machine) == []


def test_crash_loop_ends_in_a_hardware_reset(machine: Machine) -> None:
    # A configuration root whose `current` generation is missing makes every `pbx run`
    # exit at once. It is a tmpfs over /data/config, so the reboot clears it.
    _, run = pids(machine)
    machine.console.run(
        "mount -t tmpfs -o size=64k tmpfs /data/config && ln -s gen-missing /data/config/current"
    )
    machine.console.mark()
    t0 = time.monotonic()
    machine.console.run(f"kill -9 {run}")
    machine.console.expect(re.compile(rb"is a crash loop; giving up"), 90)
    gave_up = time.monotonic() - t0
    machine.console.expect(b"not feeding the hardware watchdog: gave up", 10)
    reset = wait_hardware_reset(machine, t0, gave_up + HW_TIMEOUT + 20)
    serving = recovered_after_reset(machine, t0)
    figure("crash loop -> supervisor gives up", gave_up)
    figure("crash loop -> hardware reset (QMP WATCHDOG)", reset)
    figure("crash loop -> serving again after the reboot", serving)
    assert reset - gave_up <= HW_TIMEOUT + 5
    _, current = machine.console.run("readlink /data/config/current")
    assert re.search(r"^gen-\d{6,}$", current, re.MULTILINE), current


def test_hung_supervisor_ends_in_a_hardware_reset(machine: Machine) -> None:
    sup, _ = pids(machine)
    t0 = time.monotonic()
    machine.console.run(f"kill -STOP {sup}")
    # The PBX itself still serves; nobody feeds the hardware any more.
    assert options_answered(machine.sip_port, 2.0)
    reset = wait_hardware_reset(machine, t0, HW_TIMEOUT + 20)
    serving = recovered_after_reset(machine, t0)
    figure("SIGSTOP of the supervisor -> hardware reset (QMP WATCHDOG)", reset)
    figure("SIGSTOP of the supervisor -> serving again after the reboot", serving)
    assert reset <= HW_TIMEOUT + 5
    pids(machine)  # a fresh supervisor and PBX
