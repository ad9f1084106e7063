"""Handing the serial line of a QEMU `Machine` (tests/firmware/qemu.py) to another
client: QEMU's serial socket takes one client at a time, so the harness lets go of
it for `pbx remote` and connects again afterwards (then `Machine.wait_shell` logs in
at the console, which init runs on the line, and opens its shell)."""

from __future__ import annotations

from tests.firmware.qemu import Console, Machine


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
