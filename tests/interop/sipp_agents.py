"""SIPp agents for the call and security tests: phones, callees and a "provider",
and what the PBX under test says about them (its CDRs and `pbx status`).

Every run gets its own directory under the test's tmp dir with the message trace
(`-trace_msg`), the statistics (`-trace_stat`) and SIPp's output, so a failing test
shows what went over the wire. Client runs block until done; servers (a callee, the
provider) run in the background until their calls are done. `Phones` puts them
together: a callee registered for the length of a call, a caller that answers the
PBX's challenge, and `talk` for the usual "a callee answers, a caller calls, both
finish" of a call test.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.conftest import ROOT
from tests.interop.sipp import SCENARIOS, sipp_path

DOMAIN = "pbx.local"
PASSWORDS = {n: f"change-me-{n}" for n in ("100", "101", "102", "103")}
# "----------------------------------------------- 2026-11-26 11:18:51.046995"
_SEPARATOR = re.compile(r"^-{20,} (.*)$", re.MULTILINE)
# "UDP message received [463] bytes :" / "UDP message sent (276 bytes):"
_HEAD = re.compile(
    r"^(\w+) message (received|sent) (?:\[\d+\] bytes|\(\d+ bytes\)) ?:\s*$", re.MULTILINE
)


def family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def hostport(ip: str, port: int) -> str:
    """ip:port for a URI or SIPp's command line ([::1]:5060 for IPv6, RFC 3261 §25)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket(family(ip), socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Message:
    direction: str  # "received" or "sent"
    text: str
    at: float | None = None  # when SIPp logged it (Unix time), when it says

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
    parts = _SEPARATOR.split(text)  # text, stamp, text, stamp, text …
    for stamp, chunk in zip(parts[1::2], parts[2::2], strict=True):
        m = _HEAD.search(chunk)
        if m is None:
            continue
        try:
            at: float | None = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            at = None
        out.append(Message(m.group(2), chunk[m.end() :].lstrip("\r\n"), at))
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

    def responses(self, status: int, cseq: str = "INVITE") -> list[Message]:
        """The responses with `status` received to requests whose CSeq is `cseq`
        ("2 INVITE") or whose method is (a bare "INVITE")."""

        def matches(msg: Message) -> bool:
            value = msg.header("CSeq") or ""
            return value == cseq if " " in cseq else value.split()[-1:] == [cseq]

        return [m for m in self.received() if m.status == status and matches(m)]

    def sent(self, method: str) -> list[Message]:
        """The requests with `method` this agent sent."""
        return [m for m in self.messages if m.direction == "sent" and m.method == method]

    @property
    def call_id(self) -> str:
        """The Call-ID of the first message this agent sent (a caller's call)."""
        return next(m for m in self.messages if m.direction == "sent").header("Call-ID") or ""

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
        cmd.append(hostport(*remote))
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
            with socket.socket(family(self.ip), socket.SOCK_DGRAM) as s:
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
            "contact": f"<sip:{user}@{hostport(contact_ip, contact_port)}>",
            "expires": str(expires),
        },
        auth=(user, PASSWORDS[user]),
    )
    assert res.returncode == 0 and res.statuses()[-1:] == [200], res.report()
    return res


def check(res: Run) -> None:
    """The run completed its one call, as its scenario says."""
    assert res.returncode == 0 and res.failed == 0 and res.successful == 1, res.report()


@dataclass(frozen=True)
class Phones:
    """SIPp phones of the PBX at `pbx`: extensions call from `caller_ip`, callees
    answer on `callee_ip`; `keys` go to every scenario (a call's own win)."""

    pbx: tuple[str, int]
    caller_ip: str = "127.0.0.1"
    callee_ip: str = "127.0.0.1"
    keys: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 15  # a caller's whole run

    @contextmanager
    def callee(
        self,
        tmp: Path,
        scenario: str,
        user: str = "101",
        *,
        keys: Mapping[str, str] | None = None,
        extra: list[str] | None = None,
    ) -> Iterator[Server]:
        """A SIPp callee registered as `user` for the duration, unregistered after.
        The REGISTER is sent from the callee's port before the callee starts there."""
        port = free_port(self.callee_ip)
        register(self.pbx, tmp, user, port, contact_ip=self.callee_ip)
        server = None
        try:
            server = Server(
                scenario,
                tmp,
                f"callee-{user}",
                local_ip=self.callee_ip,
                port=port,
                keys={**self.keys, **(keys or {})},
                extra=extra,
            )
            yield server
        finally:
            if server is not None:
                server.stop()
            register(self.pbx, tmp, user, port, contact_ip=self.callee_ip, expires=0)

    def call(
        self,
        tmp: Path,
        scenario: str,
        number: str = "101",
        *,
        user: str = "100",
        name: str = "caller",
        keys: Mapping[str, str] | None = None,
        **kw: object,
    ) -> Run:
        """Extension `user` (answering the PBX's challenge) calls `number`; more
        keyword arguments go to `run`."""
        options: dict[str, object] = {"timeout": self.timeout, **kw}
        return run(
            scenario,
            self.pbx,
            tmp,
            name,
            local_ip=self.caller_ip,
            keys={**self.keys, "user": user, "callee": number, **(keys or {})},
            auth=(user, PASSWORDS[user]),
            **options,  # type: ignore[arg-type]  # run's keyword arguments
        )

    def talk(
        self,
        tmp: Path,
        caller: str,
        callee: str,
        number: str = "101",
        *,
        callee_keys: Mapping[str, str] | None = None,
        callee_extra: list[str] | None = None,
        callee_completes: bool = True,
        **kw: object,
    ) -> tuple[Run, Run]:
        """A callee running scenario `callee` registered as `number`, called by 100
        running `caller` (keyword arguments as for `call`): the caller's run and the
        callee's, each checked to have completed its call (the callee's not when
        `callee_completes` is False: the PBX is to cut its scenario short)."""
        with self.callee(tmp, callee, number, keys=callee_keys, extra=callee_extra) as server:
            res = self.call(tmp, caller, number, **kw)
            answered = server.finish()
        check(res)
        if callee_completes:
            check(answered)
        return res, answered


# ---------------------------------------------------------------- what the PBX says


def pbx_command(*args: str) -> str:
    """What `pbx ARGS…` (from the source tree) prints; it must succeed."""
    return subprocess.run(
        [sys.executable, "-m", "pbx_core", *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=10,
    ).stdout


def cdrs(state: Path) -> list[dict[str, str]]:
    """Every CDR in the state LMDB at `state`, as `pbx cdr export` writes them."""
    out = pbx_command("cdr", "export", "--state", str(state))
    return list(csv.DictReader(io.StringIO(out)))


def wait_cdr(state: Path, call_id: str) -> dict[str, str]:
    """The CDR of the call whose caller used `call_id` (written as the call ends,
    so given up to 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in cdrs(state) if r["call_id"] == call_id]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(found) == 1, (call_id, cdrs(state))
    return found[0]


def pbx_status(control: Path) -> dict[str, object]:
    """`pbx status --json` of the PBX whose control socket is `control`."""
    answer: dict[str, object] = json.loads(
        pbx_command("status", "--json", "--control", str(control))
    )
    return answer
