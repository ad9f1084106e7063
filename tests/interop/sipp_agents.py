"""SIPp agents for the call and security tests: phones, callees and a "provider".

Every run gets its own directory under the test's tmp dir with the message trace
(`-trace_msg`), the statistics (`-trace_stat`) and SIPp's output, so a failing test
shows what went over the wire. Client runs block until done; servers (a callee, the
provider) run in the background until their calls are done.
"""

from __future__ import annotations

import csv
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.interop.sipp import SCENARIOS, sipp_path

DOMAIN = "pbx.local"
PASSWORDS = {n: f"change-me-{n}" for n in ("100", "101", "102", "103")}
_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
# "UDP message received [463] bytes :" / "UDP message sent (276 bytes):"
_HEAD = re.compile(
    r"^(\w+) message (received|sent) (?:\[\d+\] bytes|\(\d+ bytes\)) ?:\s*$", re.MULTILINE
)


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Message:
    direction: str  # "received" or "sent"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        m = re.match(r"([A-Z]+) \S+ SIP/2\.0", self.first_line)
        return m.group(1) if m else None

    def header(self, name: str) -> str | None:
        """First value of a header (full name, case-insensitive), or None."""
        values = self.headers(name)
        return values[0] if values else None

    def headers(self, name: str) -> list[str]:
        head = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)[0]
        out = []
        for line in head.splitlines()[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                out.append(value.strip())
        return out

    @property
    def body(self) -> str:
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1] if len(parts) > 1 else ""


def parse_trace(path: Path) -> list[Message]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    out = []
    for chunk in _SEPARATOR.split(text):
        m = _HEAD.search(chunk)
        if m is None:
            continue
        out.append(Message(m.group(2), chunk[m.end() :].lstrip("\r\n")))
    return out


@dataclass
class Run:
    """One SIPp process: its stats, output and message trace."""

    name: str
    dir: Path
    returncode: int | None = None
    output: str = ""

    @property
    def stats(self) -> dict[str, str]:
        stf = self.dir / "stats.csv"
        if not stf.exists():
            return {}
        rows = list(csv.reader(stf.open(), delimiter=";"))
        return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0"))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0"))

    @property
    def messages(self) -> list[Message]:
        return parse_trace(self.dir / "messages.log")

    def received(self) -> list[Message]:
        return [m for m in self.messages if m.direction == "received"]

    def statuses(self) -> list[int]:
        return [m.status for m in self.received() if m.status is not None]

    def requests(self, method: str | None = None) -> list[Message]:
        return [
            m
            for m in self.received()
            if m.method is not None and (method is None or m.method == method)
        ]

    def report(self) -> str:
        """Everything needed to see why a run failed."""
        trace = (self.dir / "messages.log").read_text(errors="replace")[-6000:]
        errors = "".join(p.read_text(errors="replace")[-3000:] for p in self.dir.glob("*error*"))
        return (
            f"--- sipp {self.name} rc={self.returncode}\n{self.output[-3000:]}\n{errors}\n{trace}"
        )


def _fresh_dir(tmp: Path, name: str) -> Path:
    """tmp/name, or tmp/name-2, -3 … when a run of that name already happened."""
    path, n = tmp / name, 1
    while path.exists():
        n += 1
        path = tmp / f"{name}-{n}"
    path.mkdir(parents=True)
    return path


def _command(
    scenario: str,
    run_dir: Path,
    *,
    local_ip: str,
    port: int | None,
    remote: tuple[str, int] | None,
    keys: dict[str, str],
    auth: tuple[str, str] | None,
    calls: int,
    rate: float,
    timeout: float,
    recv_timeout: float | None,
    transport: str = "u1",
    extra: list[str] | None = None,
) -> list[str]:
    cmd = [sipp_path()]
    if remote is not None:
        cmd.append(f"{remote[0]}:{remote[1]}")
    cmd += ["-sf", str(SCENARIOS / scenario), "-i", local_ip, "-t", transport]
    if port is not None:
        cmd += ["-p", str(port)]
    cmd += ["-m", str(calls), "-r", str(rate), "-rp", "1000", "-nostdin"]
    cmd += ["-trace_msg", "-message_file", str(run_dir / "messages.log")]
    cmd += ["-trace_stat", "-stf", str(run_dir / "stats.csv"), "-fd", "1"]
    cmd += ["-trace_err", "-error_file", str(run_dir / "errors.log")]
    cmd += ["-timeout", f"{int(timeout)}s", "-timeout_error"]
    if recv_timeout is not None:
        cmd += ["-recv_timeout", str(int(recv_timeout * 1000))]
    if auth is not None:
        cmd += ["-au", auth[0], "-ap", auth[1]]
    for k, v in {"domain": DOMAIN, **keys}.items():
        cmd += ["-key", k, v]
    return cmd + (extra or [])


def run(
    scenario: str,
    pbx: tuple[str, int],
    tmp: Path,
    name: str,
    *,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    keys: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    calls: int = 1,
    rate: float = 10,
    timeout: float = 15,
    recv_timeout: float | None = None,
    transport: str = "u1",
    extra: list[str] | None = None,
) -> Run:
    """Run a client scenario against the PBX until it is done (from local_port when
    given, else from a free port), over UDP ("u1") or TCP ("t1"); `extra`: more
    SIPp options (`-nr`: no retransmissions, and no absorbing of identical ones)."""
    run_dir = _fresh_dir(tmp, name)
    cmd = _command(
        scenario,
        run_dir,
        local_ip=local_ip,
        port=local_port or free_port(local_ip),
        remote=pbx,
        keys=keys or {},
        auth=auth,
        calls=calls,
        rate=rate,
        timeout=timeout,
        recv_timeout=recv_timeout,
        transport=transport,
        extra=extra,
    )
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=timeout + 20, cwd=run_dir
    )
    return Run(name, run_dir, proc.returncode, proc.stdout + proc.stderr)


class Server:
    """A SIPp UAS scenario in the background on local_ip:port, for `calls` calls."""

    def __init__(
        self,
        scenario: str,
        tmp: Path,
        name: str,
        *,
        local_ip: str = "127.0.0.1",
        port: int | None = None,
        keys: dict[str, str] | None = None,
        calls: int = 1,
        timeout: float = 20,
        extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port(local_ip)
        self.ip = local_ip
        self.run = Run(name, _fresh_dir(tmp, name))
        cmd = _command(
            scenario,
            self.run.dir,
            local_ip=local_ip,
            port=self.port,
            remote=None,
            keys=keys or {},
            auth=None,
            calls=calls,
            rate=10,
            timeout=timeout,
            recv_timeout=None,
            extra=extra,
        )
        self._out = (self.run.dir / "output.txt").open("w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=self.run.dir, text=True
        )
        self._wait_bound()

    def _wait_bound(self) -> None:
        """SIPp has bound its port once a probe bind fails."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((self.ip, self.port))
                except OSError:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"sipp {self.run.name} did not start:\n{self.finish(0).report()}")

    def finish(self, timeout: float = 15) -> Run:
        """Wait for the scenario's calls (killing it after `timeout`); the result."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self.run.returncode = self.proc.returncode
        self.run.output = (self.run.dir / "output.txt").read_text(errors="replace")
        return self.run

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.finish(0)


def register(
    pbx: tuple[str, int],
    tmp: Path,
    user: str,
    contact_port: int,
    *,
    contact_ip: str = "127.0.0.1",
    expires: int = 3600,
) -> Run:
    """Register `user` at contact_ip:contact_port, sent from that very address (the
    PBX reaches a phone where its REGISTER came from, as behind a NAT), so a callee
    SIPp started there afterwards gets the calls. Asserts the 200."""
    res = run(
        "register.xml",
        pbx,
        tmp,
        f"register-{user}-{contact_port}",
        local_ip=contact_ip,
        local_port=contact_port,
        keys={
            "user": user,
            "contact": f"<sip:{user}@{contact_ip}:{contact_port}>",
            "expires": str(expires),
        },
        auth=(user, PASSWORDS[user]),
    )
    assert res.returncode == 0 and res.statuses()[-1:] == [200], res.report()
    return res
