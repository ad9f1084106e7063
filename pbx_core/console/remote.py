"""`pbx remote --port URL`: the console's commands from a laptop, over pyserial.

It logs in like a person would (answering the password prompts), switches the
console to machine mode (`frame.py`: every line framed with a sequence number and a
CRC-32) and then sends one request at a time, resending until a valid answer with
its sequence number arrives. Push and pull move the whole table set in chunks, each
checked, and every table's SHA-256 is verified at the end; the progress goes to
stderr. Line noise costs retries, never a wrong byte.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pbx_core import sysrec
from pbx_core.console import frame, recordings
from pbx_core.console.commands import CHUNK
from pbx_core.console.config import ConfigError, check, digest, parse_tables
from pbx_core.store.dbtext import table_files, write_file_atomic

_PROMPT = re.compile(rb"pbx\*?> $")
_PASSWORD = re.compile(rb"(?<!new )(?<!Retype new )Password: $")
_NEW = re.compile(rb"(New|Retype new) password: $")
_QUESTION = re.compile(rb"(\]: |\[y/N\] |\[Y/n\] |: )$")


# Waking the console: Ctrl-C (leaves whatever it asks) and Enter (shows the banner
# and the password prompt again), sent when the line has been silent for `timeout`;
# the pause doubles up to WAKE_MAX while nothing answers (a box that is booting).
WAKE = b"\x03\r"
WAKE_MAX = 16.0
LOGIN_WAIT = 300.0  # default: a box switched on just now boots in a minute or two
SEEN = 240  # how much of the last output a failed login quotes
SYSREC_PUSH_CHUNK = 1024  # bytes of a system recording per frame (~1.4 kB of base64)


class RemoteError(Exception):
    """The console could not be reached or refused us; the message says why."""


def _printable(data: bytes) -> str:
    """Line output for a message: control characters escaped, runs of blank lines cut."""
    text = data.decode("ascii", "backslashreplace").replace("\r\n", "\n")
    text = re.sub(r"\n{3,}", "\n\n", text)
    return "".join(c if c == "\n" or 0x20 <= ord(c) < 0x7F else f"\\x{ord(c):02x}" for c in text)


class Remote:
    def __init__(
        self,
        port: Any,
        password: str,
        *,
        new_password: str | None = None,
        timeout: float = 2.0,
        retries: int = 20,
        login_timeout: float = LOGIN_WAIT,
        progress: TextIO | None = None,
    ) -> None:
        self.port = port
        self.password = password
        self.new_password = new_password
        self.timeout = timeout
        self.retries = retries
        self.login_timeout = login_timeout
        self.progress = progress
        self.buf = bytearray()
        self.seq = secrets.randbelow(10**6) + 1
        self.resends = 0
        self.logged_in = False
        self.received = 0  # bytes seen on the line, all told
        self.seen = bytearray()  # the last SEEN of them (for a failure's message)
        self.wakes = 0

    # ------------------------------------------------------------------ bytes
    def _pump(self, wait: float) -> bool:
        """Read what arrives within `wait` s; True if anything did."""
        deadline = time.monotonic() + wait
        got = False
        while True:
            data = self.port.read(self.port.in_waiting or 1)
            if data:
                self.buf += data
                self.received += len(data)
                self.seen += data
                del self.seen[:-SEEN]
                got = True
                if len(self.buf) > 1 << 20:
                    del self.buf[: len(self.buf) - (1 << 16)]
                continue  # drain everything already there
            if got or time.monotonic() >= deadline:
                return got

    def _lines(self) -> list[bytes]:
        """Complete lines received so far (they leave the buffer)."""
        *lines, rest = bytes(self.buf).split(b"\n")
        self.buf = bytearray(rest)
        return lines

    def _say(self, text: str) -> None:
        if self.progress is not None:
            print(text, file=self.progress, flush=True)

    # ------------------------------------------------------------------ login
    def login(self) -> None:
        """Get to machine mode from wherever the console is."""
        started = time.monotonic()
        deadline = started + self.login_timeout
        self.buf.clear()
        self._wake()
        quiet_since = time.monotonic()
        pause = self.timeout
        bad_logins = 0
        while time.monotonic() < deadline:
            if not self._pump(0.2):
                if time.monotonic() - quiet_since > pause:
                    self._wake()  # no prompt in sight: ask for a fresh one
                    quiet_since = time.monotonic()
                    pause = min(pause * 2, max(WAKE_MAX, self.timeout))
                continue
            quiet_since = time.monotonic()
            pause = self.timeout
            tail = bytes(self.buf[-200:])
            for line in bytes(self.buf).split(b"\n"):
                answer = frame.decode_response(line)
                if answer is not None and answer[1].get("data") == "machine":
                    self.buf.clear()
                    self.logged_in = True
                    return
            if (at := self.buf.find(b"Login incorrect")) >= 0:
                bad_logins += 1
                if bad_logins >= 3:
                    raise RemoteError("login refused 3 times: is the password right?")
                del self.buf[: at + len(b"Login incorrect")]
                tail = bytes(self.buf[-200:])
            if _NEW.search(tail):
                if self.new_password is None:
                    raise RemoteError(
                        "the console asks for a new admin password (factory password in use): "
                        "give --new-password"
                    )
                self.buf.clear()
                self.port.write(self.new_password.encode() + b"\r")
            elif _PASSWORD.search(tail):
                self.buf.clear()
                self.port.write(self.password.encode() + b"\r")
            elif _PROMPT.search(tail):
                self.buf.clear()
                self.port.write(b"machine on\r")
            elif tail.endswith(b"> "):  # the failsafe question after boot: not now
                self.buf.clear()
                self.port.write(b"\r")
            elif _QUESTION.search(tail):  # inside a menu item
                self.buf.clear()
                self._wake()
        raise RemoteError(self._no_prompt(time.monotonic() - started))

    def _wake(self) -> None:
        self.port.write(WAKE)
        self.wakes += 1

    def _no_prompt(self, waited: float) -> str:
        """Why the login failed, from what the line showed."""
        head = f"no console prompt within {waited:.0f} s ({self.wakes} wake-ups sent)"
        if not self.received:
            return (
                f"{head}: nothing at all came back on the line. Is it the right port, "
                "is the box on, is the cable a null-modem one (115200 8N1)?"
            )
        return (
            f"{head}; {self.received} bytes came back, none of them a prompt this program "
            f"knows. The last of them:\n{_printable(bytes(self.seen))}"
        )

    # ------------------------------------------------------------------ requests
    def call(self, command: str) -> dict[str, Any]:
        """Send one command; its answer (resent until a valid one arrives)."""
        if not self.logged_in:
            self.login()
        self.seq = self.seq % 999_999_999 + 1
        request = frame.encode(self.seq, command)
        timeouts = 0
        for _attempt in range(self.retries):
            self.port.write(request)
            deadline = time.monotonic() + self.timeout
            resend = False
            while not resend and time.monotonic() < deadline:
                self._pump(0.05)
                for line in self._lines():
                    got = frame.decode_response(line)
                    if got is None:
                        continue  # noise, or a damaged answer: wait, then resend
                    seq, answer = got
                    if seq == self.seq:
                        return answer
                    if answer.get("status") == frame.BAD_FRAME:
                        resend = True  # our request arrived damaged
            self.resends += 1
            if not resend:
                timeouts += 1
                if timeouts == 3:  # the console may have restarted: log in again
                    self.logged_in = False
                    self.login()
        raise RemoteError(
            f"no valid answer to {command.split(maxsplit=1)[0]!r} after {self.retries} tries"
        )

    def run(self, command: str) -> dict[str, Any]:
        if command.strip().split()[:1] in (["passwd"], ["import"], ["machine"], ["logout"]):
            raise RemoteError(
                f"{command.split(maxsplit=1)[0]!r} is interactive: use the console itself"
            )
        return self.call(command)

    def logout(self) -> None:
        if self.logged_in:
            self.seq += 1
            self.port.write(frame.encode(self.seq, "logout"))
            self._pump(0.3)
            self.logged_in = False

    # ------------------------------------------------------------------ transfers
    def _checked(self, command: str) -> dict[str, Any]:
        answer = self.call(command)
        if not answer.get("ok"):
            raise RemoteError(f"{command.split(maxsplit=1)[0]}: {answer.get('error')}")
        return answer

    def push(self, directory: Path, commit: bool = True) -> list[str]:
        files = {p.name: p.read_bytes() for p in table_files(directory)}
        if not files:
            raise RemoteError(f"{directory}: no table files")
        try:
            check(parse_tables(files))  # nothing leaves the laptop that the box would refuse
        except ConfigError as e:
            raise RemoteError(f"{directory}: {e}") from None
        total = sum(len(d) for d in files.values())
        done = 0
        self._checked("push-begin")
        for name, data in sorted(files.items()):
            self._checked(f"push-table {name} {len(data)} {digest(data)}")
            for off in range(0, len(data), CHUNK):
                part = base64.b64encode(data[off : off + CHUNK]).decode()
                self._checked(f"push-chunk {name} {off} {part}")
                done += len(data[off : off + CHUNK])
                self._progress("push", name, done, total)
        lines = list(self._checked("push-finish").get("lines", []))
        if commit:
            lines += self._checked("commit").get("lines", [])
        return lines

    def pull(self, directory: Path) -> list[str]:
        listing: dict[str, dict[str, Any]] = self._checked("pull-list")["data"]
        total = sum(int(v["size"]) for v in listing.values())
        done = 0
        files: dict[str, bytes] = {}
        for name, meta in sorted(listing.items()):
            data = b""
            while len(data) < int(meta["size"]):
                answer = self._checked(f"pull-chunk {name} {len(data)} {CHUNK}")
                chunk = base64.b64decode(answer["data"]["b64"])
                if answer["data"]["offset"] != len(data) or not chunk:
                    raise RemoteError(f"pull: {name}: the console sent the wrong part")
                data += chunk
                done += len(chunk)
                self._progress("pull", name, done, total)
            if digest(data) != meta["sha256"]:
                raise RemoteError(f"pull: {name}: checksum mismatch after transfer")
            files[name] = data
        try:
            parse_tables(files)
        except ConfigError as e:
            raise RemoteError(f"pull: the tables do not read back: {e}") from None
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            write_file_atomic(directory / name, data)
        return [f"pulled {len(files)} tables ({total} bytes) into {directory}"]

    def pull_recordings(self, directory: Path) -> list[str]:
        """The box's call recordings into `directory`: those not already there (same
        name, size and SHA-256), each checked and written whole."""
        listing: dict[str, dict[str, Any]] = self._checked("rec-list")["data"]
        directory.mkdir(parents=True, exist_ok=True)
        fetched = have = 0
        total = 0
        for name, meta in sorted(listing.items()):
            if not recordings.NAME.fullmatch(name):
                raise RemoteError(f"pull-recordings: the box named a file {name!r}")
            size, sha = int(meta["size"]), str(meta["sha256"])
            local = directory / name
            same = local.is_file() and local.stat().st_size == size
            if same and digest(local.read_bytes()) == sha:
                have += 1
                continue
            data = b""
            while len(data) < size:
                answer = self._checked(f"rec-chunk {name} {len(data)} {recordings.CHUNK}")
                part = base64.b64decode(answer["data"]["b64"])
                if answer["data"]["offset"] != len(data) or not part:
                    raise RemoteError(f"pull-recordings: {name}: the console sent the wrong part")
                data += part
                self._progress("pull-recordings", name, len(data), size)
            if digest(data) != sha:
                raise RemoteError(f"pull-recordings: {name}: checksum mismatch after transfer")
            write_file_atomic(local, data)
            fetched += 1
            total += size
        return [
            f"pulled {fetched} recordings ({total} bytes) into {directory}; {have} there already"
        ]

    def sysrec_push(self, source: Path, name: str) -> list[str]:
        """Send a WAV file as the system recording `name`: checked and converted here
        first (nothing leaves the laptop that the box would refuse), sent in checked
        parts, checked again and written whole by the box."""
        try:
            sysrec.check_name(name)
            stored = sysrec.to_stored(sysrec.read(source), source.name)
        except sysrec.SysrecError as e:
            raise RemoteError(f"sysrec-push: {e}") from None
        self._checked(f"sysrec-begin {name} {len(stored)} {digest(stored)}")
        for off in range(0, len(stored), SYSREC_PUSH_CHUNK):
            part = base64.b64encode(stored[off : off + SYSREC_PUSH_CHUNK]).decode()
            self._checked(f"sysrec-data {off} {part}")
            done = min(off + SYSREC_PUSH_CHUNK, len(stored))
            self._progress("sysrec-push", name, done, len(stored))
        return list(self._checked("sysrec-finish").get("lines", []))

    def sysrec_pull(self, name: str, target: Path) -> list[str]:
        """The box's system recording `name` into the file `target` (written whole)."""
        listing: dict[str, dict[str, Any]] = self._checked("sysrec-list")["data"]
        meta = listing.get(name)
        if meta is None:
            raise RemoteError(f"sysrec-pull: the box has no system recording {name!r}")
        size, sha = int(meta["size"]), str(meta["sha256"])
        if size > sysrec.MAX_UPLOAD:
            raise RemoteError(f"sysrec-pull: {name} is {size} bytes, more than any can be")
        data = b""
        while len(data) < size:
            answer = self._checked(f"sysrec-chunk {name} {len(data)} {sysrec.CHUNK}")
            part = base64.b64decode(answer["data"]["b64"])
            if answer["data"]["offset"] != len(data) or not part:
                raise RemoteError(f"sysrec-pull: {name}: the console sent the wrong part")
            data += part
            self._progress("sysrec-pull", name, len(data), size)
        if digest(data) != sha:
            raise RemoteError(f"sysrec-pull: {name}: checksum mismatch after transfer")
        try:
            write_file_atomic(target, data)
        except OSError as e:
            raise RemoteError(f"sysrec-pull: {target}: {e.strerror}") from None
        return [f"pulled system recording {name} ({size} bytes) into {target}"]

    def _progress(self, what: str, name: str, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        self._say(f"{what}: {name} {done}/{total} bytes ({pct}%), {self.resends} resends")


def _print_answer(answer: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(answer), file=out)
        return
    for line in answer.get("lines", []):
        print(line, file=out)
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)


def main(args: argparse.Namespace, open_port: Callable[[str, int], Any] | None = None) -> int:
    password = args.password or os.environ.get("PBX_PASSWORD")
    if not password:
        print("pbx remote: give --password or set PBX_PASSWORD", file=sys.stderr)
        return 2
    for flag, value, good in (
        ("--wait", args.wait, 0 < args.wait <= 86_400),
        ("--timeout", args.timeout, 0 < args.timeout <= 3600),
        ("--retries", args.retries, 1 <= args.retries <= 10_000),
    ):
        if not good:
            print(f"pbx remote: {flag} {value} is out of range", file=sys.stderr)
            return 2
    if open_port is None:
        import serial  # noqa: PLC0415  # pyserial only for this command

        def open_port(url: str, baud: int) -> Any:
            return serial.serial_for_url(url, baudrate=baud, timeout=0.1)

    try:
        port = open_port(args.port, args.baud)
    except Exception as e:  # noqa: BLE001  # pyserial raises SerialException, OSError, ValueError
        print(f"pbx remote: cannot open {args.port}: {e}", file=sys.stderr)
        return 1
    remote = Remote(
        port,
        password,
        new_password=args.new_password,
        timeout=args.timeout,
        retries=args.retries,
        login_timeout=args.wait,
        progress=None if args.quiet else sys.stderr,
    )
    status = 0
    try:
        if args.action == "push":
            lines = remote.push(Path(args.args[0]), commit=not args.no_commit)
            print("\n".join(lines))
        elif args.action == "pull":
            print("\n".join(remote.pull(Path(args.args[0]))))
        elif args.action == "pull-recordings":
            print("\n".join(remote.pull_recordings(Path(args.args[0]))))
        elif args.action == "sysrec-push":
            print("\n".join(remote.sysrec_push(Path(args.args[0]), args.args[1])))
        elif args.action == "sysrec-pull":
            print("\n".join(remote.sysrec_pull(args.args[0], Path(args.args[1]))))
        elif args.action in ("sysrec-list", "sysrec-delete"):
            answer = remote.run(" ".join([args.action, *args.args]))
            _print_answer(answer, args.json, sys.stdout)
            status = 0 if answer.get("ok") else int(answer.get("status") or 1)
        else:
            commands = args.args
            if commands == ["-"]:
                commands = [c for c in sys.stdin.read().splitlines() if c.strip()]
            for command in commands:
                answer = remote.run(command)
                _print_answer(answer, args.json, sys.stdout)
                if not answer.get("ok"):
                    status = int(answer.get("status") or 1)
                    break
    except RemoteError as e:
        print(f"pbx remote: {e}", file=sys.stderr)
        status = 1
    except OSError as e:
        print(f"pbx remote: {args.port}: {e}", file=sys.stderr)
        status = 1
    finally:
        with contextlib.suppress(OSError):
            remote.logout()
        port.close()
    return status
