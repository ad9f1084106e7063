"""`pbx console` on the serial line of a QEMU `Machine` (tests/firmware/qemu.py).

The harness drives a root shell on ttyS0. These helpers go between that shell and the
PBX's serial console tool: start the console on the line from the shell, hand the
line to another client (`pbx remote`, which connects to the same socket), take it
back, and log in at the console and open its maintenance shell (`shell`) so the
harness's `Console.run` works again.
"""

from __future__ import annotations

import re
import time

from tests.firmware.qemu import PROMPT, Console, ConsoleError, Machine

CONSOLE_PROMPT = re.compile(rb"pbx\*?> ")
PASSWORD = re.compile(rb"(?<!new )Password: ")


def serial_url(machine: Machine) -> str:
    """The `socket://127.0.0.1:PORT` URL of the guest's serial line."""
    url: str = machine.console.ser.port
    assert url.startswith("socket://"), url
    return url


def release(machine: Machine) -> str:
    """Disconnect the harness from the serial line (one client at a time); its URL."""
    url = serial_url(machine)
    machine.console.close()
    return url


def reconnect(machine: Machine, url: str) -> Console:
    """Connect the harness to the serial line again."""
    machine.console = Console(int(url.rsplit(":", 1)[1]))
    return machine.console


def start_console(machine: Machine, timeout: float = 60) -> None:
    """From the shell on ttyS0: `exec pbx console` (the line's shell becomes the
    console; init respawns the shell when it ends). Waits for its banner."""
    machine.console.mark()
    machine.console.write(b"exec pbx console\n")
    machine.console.expect(b"serial console", timeout)


def console_to_shell(
    machine: Machine, password: str, *, new_password: str | None = None, timeout: float = 90
) -> None:
    """Log in at the console on the line and run `shell`: the harness's shell is back.

    Presses Enter until the password prompt shows (Enter alone at that prompt shows
    the banner again; Ctrl-C leaves whatever the console was asking)."""
    con = machine.console
    deadline = time.monotonic() + timeout
    con.mark()
    con.write(b"\x03\r")
    while True:
        try:
            con.expect(PASSWORD, 3)
            break
        except ConsoleError:
            if time.monotonic() > deadline:
                raise
            con.mark()
            con.write(b"\r")
    con.write(password.encode() + b"\r")
    if new_password is not None:
        for _ in range(2):
            con.expect(re.compile(rb"(New|Retype new) password: "), 60)
            con.write(new_password.encode() + b"\r")
    con.expect(CONSOLE_PROMPT, 60)
    con.write(b"shell\r")
    con.expect(b"Maintenance shell", 10)
    con.expect(PROMPT, 20)
    machine.wait_shell(30)
