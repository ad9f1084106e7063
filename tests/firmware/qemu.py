"""A QEMU test bench for the firmware image (TCG; KVM cannot boot BIOS guests here).

`Machine` boots a disk image with the serial console on a TCP socket (driven with
pyserial's `socket://`, every byte also logged to a file), QMP on a unix socket, user
networking that forwards SIP (UDP and TCP) and a few RTP ports from 127.0.0.1, and an
i6300esb watchdog. The serial line belongs to `pbx console`, as on a real box:
`Machine.wait_shell` logs in there and opens the console's maintenance shell, then
`Machine.console` runs shell commands on the line; `Machine.qmp` queries QEMU (block
statistics) and cuts the power (`quit`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import serial

TOP = Path(__file__).resolve().parents[2]
READY = re.compile(rb"PBX ready, SIP on [^\r\n]*")
PROMPT = re.compile(rb"wafer-pbx:[^\r\n]*# ")
# `pbx console`, which init runs on ttyS0: its password prompt (not "New password: "),
# the line it shows above that prompt while the factory password is still in force,
# and its command prompt (with a * while changes are staged).
PASSWORD_PROMPT = re.compile(rb"(?<!new )Password: ")
FACTORY_NOTICE = b"Factory password: "
CONSOLE_PROMPT = re.compile(rb"pbx\*?> ")
FACTORY_PASSWORD = "admin"


def _load_run_qemu() -> ModuleType:
    """firmware/run-qemu.py (not an importable name) owns the QEMU command line."""
    spec = importlib.util.spec_from_file_location("run_qemu", TOP / "firmware" / "run-qemu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_qemu = _load_run_qemu()


def free_port(kind: int = socket.SOCK_STREAM, *, both: bool = False) -> int:
    """A port free on 127.0.0.1 (for TCP, UDP, or both when `both`)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not both:
            return port
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


class ConsoleError(AssertionError):
    """The serial console did not show what was expected; carries the recent output."""


class Console:
    """The guest's serial console: a reader thread collects everything it prints."""

    def __init__(self, port: int, *, connect_timeout: float = 10) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.ser = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.2)
                break
            except serial.SerialException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = bytearray()
        self.pos = 0  # expect() searches from here
        self.lock = threading.Condition()
        self.closed = False
        self.seq = itertools.count(1)
        self.reader = threading.Thread(target=self._read, name="serial-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.ser.read(self.ser.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError):
                # The socket went away: QEMU quit (a power cut) or close() ran.
                break
            if data:
                with self.lock:
                    self.buf += data
                    self.lock.notify_all()
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.ser.close()
        self.reader.join(timeout=2)

    def text(self, start: int = 0) -> str:
        with self.lock:
            return self.buf[start:].decode(errors="replace")

    def tail(self, n: int = 3000) -> str:
        with self.lock:
            return self.buf[-n:].decode(errors="replace")

    def mark(self) -> int:
        """Expect from the end of what has been seen so far."""
        with self.lock:
            self.pos = len(self.buf)
            return self.pos

    def expect(self, pattern: re.Pattern[bytes] | bytes, timeout: float) -> re.Match[bytes]:
        """Wait for `pattern` after the last match (or mark); move past it."""
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                m = rx.search(self.buf, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    why = "console closed" if self.closed else f"{timeout:.0f} s passed"
                    raise ConsoleError(
                        f"{why} without {rx.pattern!r} on the console; last output:\n"
                        + self.buf[-3000:].decode(errors="replace")
                    )
                self.lock.wait(min(left, 0.5))

    def write(self, data: bytes) -> None:
        self.ser.write(data)

    def before(self, end: int, n: int) -> bytes:
        """The `n` bytes seen before offset `end`."""
        with self.lock:
            return bytes(self.buf[max(0, end - n) : end])

    def run(self, command: str, timeout: float = 30, check: bool = True) -> tuple[int, str]:
        """Run a shell command on the console; return (exit status, its output).

        The output is framed by markers the shell prints; the echo of the typed line
        cannot match them because the markers are split by quotes in the command."""
        n = next(self.seq)
        begin, end = f"@@B{n}@@", f"@@E{n}@@"
        line = f"echo '@@B''{n}@@'; {command}; echo '@@E''{n}@@' $?\n"
        self.mark()
        self.write(line.encode())
        self.expect(re.compile(re.escape(begin.encode()) + rb"\r?\n"), timeout)
        start = self.pos
        m = self.expect(re.compile(re.escape(end.encode()) + rb" (\d+)"), timeout)
        output = self.buf[start : m.start()].decode(errors="replace").replace("\r\n", "\n")
        status = int(m.group(1))
        if check and status != 0:
            raise ConsoleError(f"`{command}` exited {status}:\n{output}")
        return status, output

    def value(self, command: str, timeout: float = 30) -> str:
        """The output of `command` as one line (newlines become spaces), picked out of
        the console by its own markers: the PBX's log lines, which share the console,
        may land between the shell's markers but not inside this one line."""
        _, out = self.run(f"printf '@@V%s@@\\n' \"$({command} | tr '\\n' ' ')\"", timeout)
        m = re.search(r"@@V(.*?)@@", out)
        if m is None:
            raise ConsoleError(f"no value from `{command}`:\n{out}")
        return m.group(1).strip()


class Qmp:
    """A minimal QMP client (QEMU Machine Protocol over a unix socket)."""

    def __init__(self, path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self._recv()  # the greeting
        self.execute("qmp_capabilities")

    def _recv(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._recv()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


@dataclass
class Machine:
    """One QEMU guest booting `image` (a copy the caller owns: the guest writes to it)."""

    image: Path
    workdir: Path
    rtp_ports: range = range(10000, 10004)
    memory_mb: int = 256
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    console: Console = field(init=False)
    qmp: Qmp = field(init=False)
    sip_port: int = 0
    rtp_host_base: int = 0
    started_at: float = 0.0
    boots: int = 0
    # The admin password the harness logs in with at the console; it replaces the
    # factory one whenever the console says that one is still in force.
    admin_password: str = "wafer-harness-4711"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        serial_port = free_port()
        if not self.sip_port:
            self.sip_port = free_port(both=True)
            self.rtp_host_base = free_port(socket.SOCK_DGRAM)
            # Take a run of free UDP ports for RTP; fall back to single probes.
            while not all(
                self._udp_free(self.rtp_host_base + i) for i in range(len(self.rtp_ports))
            ):
                self.rtp_host_base = free_port(socket.SOCK_DGRAM)
        qmp_path = self.workdir / "qmp.sock"
        with contextlib.suppress(FileNotFoundError):
            qmp_path.unlink()
        self.boots += 1
        log = self.workdir / f"serial-{self.boots}.log"
        chardev = f"socket,id=s0,host=127.0.0.1,port={serial_port},server=on,wait=off,logfile={log}"
        cmd = run_qemu.qemu_command(
            self.image,
            serial=["-chardev", chardev, "-serial", "chardev:s0"],
            sip_port=self.sip_port,
            rtp_ports=self.rtp_ports,
            rtp_host_base=self.rtp_host_base,
            qmp=qmp_path,
            memory_mb=self.memory_mb,
            extra=self.extra,
        )
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "qemu.out").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            self.console = Console(serial_port)
            self.qmp = Qmp(qmp_path)
        except Exception:
            self.kill()
            raise

    @staticmethod
    def _udp_free(port: int) -> bool:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

    def wait_ready(self, timeout: float = 180, *, login: bool = True) -> float:
        """Wait for the PBX's ready line, then (unless `login` is false) log in at the
        console and open its shell; seconds from QEMU's start to the ready line."""
        self.console.expect(READY, timeout)
        elapsed = time.monotonic() - self.started_at
        if login:
            self.wait_shell()
        return elapsed

    def wait_shell(self, timeout: float = 120) -> None:
        """Get the harness a root shell on ttyS0, as an installer would: log in at
        `pbx console` (setting `admin_password` if the factory one is still in force)
        and run its `shell` command. For a freshly booted machine, or after the shell
        was left."""
        con = self.console
        deadline = time.monotonic() + timeout
        # Ctrl-C leaves whatever the console was asking (the failsafe question after
        # boot, a menu); Enter alone at the password prompt shows the banner again.
        con.mark()
        con.write(b"\x03\r")
        while True:
            try:
                prompt = con.expect(PASSWORD_PROMPT, 3)
                break
            except ConsoleError:
                if time.monotonic() > deadline:
                    raise
                con.mark()
                con.write(b"\r")
        factory = FACTORY_NOTICE in con.before(prompt.start(), 160)
        con.write((FACTORY_PASSWORD if factory else self.admin_password).encode() + b"\r")
        if factory:
            for _ in range(2):
                con.expect(re.compile(rb"(New|Retype new) password: "), 60)
                con.write(self.admin_password.encode() + b"\r")
        con.expect(CONSOLE_PROMPT, 60)
        con.write(b"shell\r")
        con.expect(b"Maintenance shell", 10)
        con.expect(PROMPT, 20)
        while True:  # the shell answers commands (its prompt may come before it reads)
            try:
                con.run("true", timeout=3)
            except ConsoleError:
                if time.monotonic() > deadline:
                    raise
                con.write(b"\n")
            else:
                return

    def block_stats(self) -> dict[str, int]:
        """The disk's I/O counters (QMP query-blockstats of the IDE disk)."""
        for dev in self.qmp.execute("query-blockstats"):
            if dev.get("device", "").startswith("ide0-hd0") or dev.get("qdev", "").endswith(
                "ide0-hd0"
            ):
                stats: dict[str, int] = dev["stats"]
                return stats
        raise RuntimeError("QMP query-blockstats: no ide0-hd0 disk")

    def power_cut(self) -> None:
        """QMP `quit`: the guest stops dead, nothing flushed (like pulling the plug)."""
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self.qmp.execute("quit")
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        with contextlib.suppress(Exception):
            self.console.close()
        with contextlib.suppress(Exception):
            self.qmp.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def serial_log(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("serial-*.log"))
        )


def image_build_id() -> str:
    """BUILD_ID of the staged root filesystem (the image's `pbx --version` build)."""
    for line in (TOP / "output" / "target" / "etc" / "os-release").read_text().splitlines():
        if line.startswith("BUILD_ID="):
            return line.split("=", 1)[1]
    raise AssertionError("output/target/etc/os-release has no BUILD_ID")


def prepare_image(source: Path, dest: Path, *, drop_data_partition: bool = False) -> None:
    """A sparse copy of `source` for one test session. With `drop_data_partition` the
    copy looks like a card flashed with p1-p3 only: p4 gone from the partition table
    and its blocks zeroed, so the first boot must create and format it."""
    tmp = dest.with_suffix(".tmp")
    subprocess.run(["cp", "--sparse=always", str(source), str(tmp)], check=True)
    if drop_data_partition:
        dump = subprocess.run(
            ["sfdisk", "-d", str(tmp)], check=True, capture_output=True, text=True
        ).stdout
        m = re.search(r"^\S*4 : start=\s*(\d+), size=\s*(\d+)", dump, re.MULTILINE)
        if m is None:
            raise RuntimeError(f"{source}: no partition 4 in\n{dump}")
        start, size = int(m.group(1)) * 512, int(m.group(2)) * 512
        subprocess.run(["sfdisk", "-q", "--no-reread", "--delete", str(tmp), "4"], check=True)
        subprocess.run(
            ["fallocate", "--punch-hole", "--offset", str(start), "--length", str(size), str(tmp)],
            check=True,
        )
    os.replace(tmp, dest)
