"""Issue 11: the console survives whatever is typed while it starts, and `pbx remote`
with its default settings gets in from the moment the line is up (before the console
runs), or says what it saw on the line when it gives up."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pbx_core.console.session import RESPAWN_PAUSE
from tests.conftest import ROOT
from tests.console.conftest import ConsoleProc
from tests.console.test_remote import NoisyLine

# What an impatient person or `pbx remote` may send: Ctrl-C, Ctrl-\, Ctrl-Z, Ctrl-D
# (end of input in cooked mode), Ctrl-S (XOFF), Enter.
KEYS = b"\x03\x1c\x1a\x04\x13\r"


def _settled(c: ConsoleProc) -> None:
    """Wait until the console has worked through every key of a salvo (each Enter or
    Ctrl-C redraws the banner; a Ctrl-D logs out and the session pauses RESPAWN_PAUSE
    before the next banner): quiet for longer than that pause, then one Enter answered
    by one prompt and nothing after it. The next `expect` finds that prompt. A quiet
    spell alone was not enough: the login raced the salvo's last keys on a loaded CI."""
    for _ in range(10):
        quiet_since, seen = time.monotonic(), len(c.out)
        deadline = time.monotonic() + 120
        while time.monotonic() - quiet_since < RESPAWN_PAUSE + 1.5:
            assert time.monotonic() < deadline, "the console never went quiet"
            c.read(0.1)
            if len(c.out) != seen:
                quiet_since, seen = time.monotonic(), len(c.out)
        c.pos = len(c.out)
        c.type("")  # Enter: the banner and the prompt again, from the same process
        prompt = c.expect(b"Password: ", 30)
        end = len(c.out)
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            c.read(0.1)
        if len(c.out) == end:
            c.pos = prompt.start()
            return
    raise AssertionError("the console kept answering keys nobody typed")


def _wait_signals_ignored(pid: int, timeout: float = 20.0) -> None:
    """Until the process ignores SIGINT (its /proc status SigIgn mask)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:") and int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)):
                return
        time.sleep(0.001)
    raise AssertionError("the console wrapper never ignored SIGINT")


def test_keyboard_signals_while_the_console_starts_do_not_kill_it(tmp_path: Path) -> None:
    # As init starts it: the wrapper script, a session of its own, the pty as its
    # controlling terminal in cooked mode (where these keys are signals), hammered from
    # the first instant until its password prompt shows.
    c = ConsoleProc(tmp_path, as_init=True)
    try:
        assert c.proc is not None
        # busybox init hands every respawn a sane (signal-generating) line, so the keys
        # are safe from the wrapper's first line on (`trap '' INT QUIT TSTP`): between
        # init's fork and that line (one sh start-up, milliseconds) nothing can protect
        # it. Hammer from that instant, not from the fork: under a loaded CI the fork to
        # first line gap alone made this test lose the race now and then.
        _wait_signals_ignored(c.proc.pid)
        deadline = time.monotonic() + 60
        while b"Password: " not in c.out:
            assert c.proc.poll() is None, (
                f"the console died ({c.proc.returncode}) while starting:\n"
                + c.out[-2000:].decode(errors="replace")
                + c.stderr.read_text(errors="replace")
            )
            assert time.monotonic() < deadline, c.out[-2000:].decode(errors="replace")
            c.send(KEYS)
            c.read(0.005)
        time.sleep(0.5)  # a last salvo after the prompt
        c.send(KEYS * 20)
        _settled(c)
        assert c.proc.poll() is None
        c.login()
        assert c.command("get settings.domain").strip() == "pbx.local"
        # The maintenance shell gets the line back in cooked mode with Ctrl-C working.
        c.type("shell")
        c.expect(b"Maintenance shell")
        # As a person would: type once the shell prompts (a line typed while the
        # console hands the line over was lost on a loaded CI).
        c.expect(re.compile(rb"[#$] $", re.M), 20)
        c.type("stty -a; echo stty-''done")
        c.expect(b"stty-done\r\n", 20)
        settings = c.out[c.pos - 2000 : c.pos].decode(errors="replace")
        words = set(settings.replace(";", " ").split())
        assert {"isig", "icanon", "echo", "icrnl", "opost"} <= words, settings
        assert not {"-isig", "-icanon", "-echo"} & words, settings
        c.type("sleep 30; echo not-''interrupted")
        time.sleep(0.5)
        c.send(b"\x03")
        time.sleep(0.3)
        c.type("echo after-''ctrl-c")
        c.expect(b"after-ctrl-c\r\n", 20)
        assert b"not-interrupted\r\n" not in c.out
    finally:
        c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")


def test_pbx_remote_with_defaults_started_before_the_console(tmp_path: Path) -> None:
    # The line is up, the console not yet (a box booting): pbx remote with its default
    # timings must keep waking it and get in once it runs.
    c = ConsoleProc(tmp_path, as_init=True, start=False)
    line = NoisyLine(c)
    cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", f"socket://127.0.0.1:{line.port}"]
    cmd += ["--password", "admin", "--new-password", "boot-pw-42", "run", "status"]
    remote = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)  # pbx remote wakes a console that is not there yet
        assert remote.poll() is None
        c.start()
        out, err = remote.communicate(timeout=120)
        assert remote.returncode == 0, out + err + c.out[-2000:].decode(errors="replace")
        assert "PBX: " in out, out
    finally:
        if remote.poll() is None:
            remote.kill()
        line.close()
        c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")


class Talker:
    """A TCP server standing for a serial line: it sends `chatter` to whoever
    connects (again each time something arrives) and records what it receives."""

    def __init__(self, chatter: bytes) -> None:
        self.chatter = chatter
        self.received = bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            conn.settimeout(10)
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                self.received += data
                if self.chatter:
                    conn.sendall(self.chatter)

    def close(self) -> None:
        self.server.close()


def remote_against(talker: Talker, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pbx_core", "remote", "--port"]
    cmd += [f"socket://127.0.0.1:{talker.port}", "--password", "pw", *extra, "run", "status"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_pbx_remote_gives_up_saying_nothing_came_back(tmp_path: Path) -> None:
    talker = Talker(b"")
    try:
        res = remote_against(talker, "--wait", "3", "--timeout", "0.5")
    finally:
        talker.close()
    assert res.returncode == 1, res.stderr
    assert "no console prompt within 3 s" in res.stderr, res.stderr
    assert "nothing at all came back on the line" in res.stderr, res.stderr
    assert talker.received.count(b"\x03\r") >= 2  # it kept waking the console


def test_pbx_remote_gives_up_quoting_what_it_saw(tmp_path: Path) -> None:
    talker = Talker(b"U-Boot 2011.09 \x1b[0mHit any key to stop autoboot:  3 \r\n=> ")
    try:
        res = remote_against(talker, "--wait", "2", "--timeout", "0.5")
    finally:
        talker.close()
    assert res.returncode == 1, res.stderr
    assert "none of them a prompt this program knows" in res.stderr, res.stderr
    assert "Hit any key to stop autoboot:" in res.stderr, res.stderr
    assert "\\x1b[0m" in res.stderr and "\x1b" not in res.stderr, res.stderr  # escaped


def test_pbx_remote_refuses_bad_timings(tmp_path: Path) -> None:
    for flag, value in (("--wait", "0"), ("--timeout", "-1"), ("--retries", "0")):
        cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", "socket://127.0.0.1:9"]
        cmd += ["--password", "pw", flag, value, "run", "status"]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 2, res.stderr
        assert flag in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_console_ignores_keyboard_signals_once_running(tmp_path: Path) -> None:
    # A signal sent to it (as the line discipline would) changes nothing.
    c = ConsoleProc(tmp_path)
    try:
        assert c.proc is not None
        c.expect(b"Password: ")
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
            os.kill(c.proc.pid, sig)
        time.sleep(0.3)
        assert c.proc.poll() is None
        c.pos = 0  # the prompt already seen is the one to log in at
        c.login()
        assert c.command("get settings.domain").strip() == "pbx.local"
    finally:
        c.close()
