"""`pbx console` as a real process on a pty (what a serial line looks like to it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FACTORY, ROOT

PROMPT = re.compile(rb"pbx\*?> $")


WRAPPER = ROOT / "rootfs_overlay" / "usr" / "sbin" / "pbx-console"


def _controlling_tty() -> None:
    """In the child (a new session): make stdin, the pty, its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class ConsoleProc:
    """The console on a pty; the test types on the master side.

    With `as_init`, it is started the way busybox init starts it on ttyS0: through
    the image's wrapper script (/usr/sbin/pbx-console), in a session of its own whose
    controlling terminal is the pty, left in the kernel's cooked mode (Ctrl-C is
    SIGINT there). `start=False` opens the pty only: `start()` runs the console later."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        control: Path | None = None,
        as_init: bool = False,
        start: bool = True,
    ) -> None:
        self.tmp = tmp
        self.root = tmp / "config"
        self.netconf = tmp / "etc" / "network.conf"
        self.netconf.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "run").mkdir(exist_ok=True)
        self.master, self.slave = os.openpty()
        self.stderr = tmp / "console.stderr"
        args = ["--config-root", str(self.root)]
        args += ["--factory", str(FACTORY), "--control", str(control or tmp / "no-daemon.sock")]
        args += ["--network-conf", str(self.netconf), "--runtime", str(tmp / "run")]
        args += ["--login-delay", "0.1", "--failsafe", "0", *extra]
        self.args = args
        self.as_init = as_init
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = bytearray()
        self.pos = 0
        if start:
            self.start()

    def start(self) -> None:
        env = dict(os.environ)
        if self.as_init:
            # The wrapper runs `pbx console`: here, the source tree's.
            bindir = self.tmp / "bin"
            bindir.mkdir(exist_ok=True)
            shim = bindir / "pbx"
            shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pbx_core "$@"\n')
            shim.chmod(0o755)
            env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
            env["PBX_RUNTIME_DIR"] = str(self.tmp / "run")
            (self.tmp / "run" / "console-started").touch()  # not the first start: no wait
            cmd = ["/bin/sh", str(WRAPPER), *self.args]
        else:
            cmd = [sys.executable, "-m", "pbx_core", "console", *self.args]
        slave = self.slave
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=self.stderr.open("wb"),
            close_fds=True,
            start_new_session=self.as_init,
            preexec_fn=_controlling_tty if self.as_init else None,  # noqa: PLW1509
        )
        os.close(slave)

    def read(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            with contextlib.suppress(OSError):
                self.out += os.read(self.master, 65536)

    def wait_exit(self, timeout: float = 30) -> int:
        """The process's exit status, reading its output meanwhile (a full pty
        buffer would block a shell that is exiting)."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s:\n{self.out[-2000:]!r}")
            self.read(0.1)
        return self.proc.returncode

    def expect(self, pattern: bytes | re.Pattern[bytes], timeout: float = 10) -> re.Match[bytes]:
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.out, self.pos)
            if m:
                self.pos = m.end()
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {rx.pattern!r} in the console output:\n"
                    + self.out[-3000:].decode(errors="replace")
                    + "\nstderr:\n"
                    + self.stderr.read_text(errors="replace")
                )
            self.read(0.05)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def type(self, line: str) -> None:
        self.send(line.encode() + b"\r")

    def command(self, line: str, timeout: float = 10) -> str:
        """Type a command at the prompt; the output up to the next prompt."""
        self.type(line)
        self.expect(line.encode() + b"\r\n", timeout)
        start = self.pos
        m = self.expect(PROMPT, timeout)
        return self.out[start : m.start()].decode().replace("\r\n", "\n")

    def login(self, password: str = "admin", new: str | None = "s3cret-pw") -> None:
        self.expect(b"Password: ")
        self.type(password)
        if password == "admin" and new is not None:
            self.expect(b"New password: ")
            self.type(new)
            self.expect(b"Retype new password: ")
            self.type(new)
        self.expect(PROMPT)

    def close(self) -> None:
        if self.proc is None:
            os.close(self.slave)
        elif self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.master)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ConsoleProc]:
    c = ConsoleProc(tmp_path)
    yield c
    c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")
