"""`shell` at the console prompt: the admin's maintenance shell (OpenWrt's way in)."""

from __future__ import annotations

import re
from pathlib import Path

from pbx_core.console import frame
from tests.console.conftest import ConsoleProc

SHELL_PROMPT = re.compile(rb"[#$] $", re.MULTILINE)


def test_shell_replaces_the_console_after_login(console: ConsoleProc) -> None:
    console.login()
    console.type("shell")
    console.expect(b"Maintenance shell: exit (or Ctrl-D) returns to the console.")
    # Type only at the shell's prompt: bytes queued while the line was still raw
    # keep their bare CR once the shell's cooked mode is back (as a person would).
    console.expect(SHELL_PROMPT)
    # The console process became the shell (init's respawn brings the console back).
    console.type("echo shell-$((6 * 7)) $$")
    m = console.expect(re.compile(rb"shell-42 (\d+)"))
    assert int(m.group(1)) == console.proc.pid
    assert Path(f"/proc/{console.proc.pid}/cmdline").read_bytes().split(b"\0")[0] == b"-sh"
    console.type("exit 0")
    assert console.wait_exit() == 0


def test_shell_refused_with_staged_changes(console: ConsoleProc) -> None:
    console.login()
    console.command("set settings.hostname=office")
    out = console.command("shell")
    assert "error: commit or revert the staged changes first" in out
    assert console.proc.poll() is None
    console.command("revert")
    console.type("shell")
    console.expect(b"Maintenance shell")
    console.expect(SHELL_PROMPT)
    console.type("exit")
    assert console.wait_exit() == 0


def test_shell_is_not_a_machine_mode_command(console: ConsoleProc) -> None:
    console.login()
    console.type("machine on")
    console.expect(b'"data":"machine"')
    console.send(frame.encode(1, "shell"))
    console.expect(b"unknown command 'shell'")
    console.send(frame.encode(2, "ping"))
    console.expect(b'"data":"pong"')
    assert console.proc.poll() is None
