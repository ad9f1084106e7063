"""REGISTER-with-auth and call set-ups per second, SIPp as the load, against `pbx run`,
Kamailio 5.6 and sippy's B2BUA, all measured in this run.

    python bench/bench_calls.py [--seconds S] [--inflight N] [--only pbx,kamailio,sippy]
    python bench/bench_calls.py --only pbx --baseline-rev REV [--rounds N] [--seconds S]

Workloads (UDP on loopback, no media, failures must stay under 0.1 %):

- REGISTER with digest auth: REGISTER, 401, REGISTER with Authorization, 200, for
  1,000 subscribers in turn (bench/scenarios/register_auth.xml), against the PBX and
  Kamailio (a registrar with db_text auth on the same subscriber table, usrloc in
  memory, TLSF allocator, one worker: bench/kamailio/registrar.cfg).
- Call set-up: INVITE/100/180/200/ACK/BYE/200 from one SIPp to a registered SIPp
  callee (bench/scenarios/call_uac.xml, call_uas.xml): through the PBX's B2BUA (the
  caller speaks from the trunk's address, so the call is an inbound DID call and
  needs no digest, like the others), through Kamailio as a stateful proxy with
  record-route, and through sippy's B2BUA (b2bua_simple, PyPI `sippy`, installed
  into a throwaway venv outside the tree: $SIPPY_VENV, default /tmp/pbx-bench-sippy).

Each server is pinned to core 0, SIPp (caller and callee) to core 1 (taskset). Each
measurement is closed-loop with --inflight transactions or calls outstanding; when
more than 0.1 % fail while the server is busy, it is repeated with half as many in
flight. A short warm-up run sizes the measured run to about --seconds.

A closed loop measures latency as well as capacity: a server that is slow to answer
(sippy answers the BYE that follows an ACK at once only after SIPp's 500 ms
retransmission) is not busy, it waits. So the server's CPU time is read from /proc
for every run and printed; while it uses less than 70 % of its core (and nothing
failed yet), counting the time its threads were runnable but queued for a CPU
(/proc/PID/task/*/schedstat: other work on the core is no reason to idle), the
run is repeated with twice as many in flight, up to 512, until that stops paying
(then SIPp on its one core is the limit, as it is for Kamailio).
The fastest run within the failure limit is reported, with the server's CPU time
per transaction over all measured runs (the figure other load hardly moves).

--baseline-rev REV also measures the PBX as it was at git revision REV (say the
commit before a change to the call core) in the same run: REV's pbx_core and
factory tables are exported with `git archive` into the temporary directory (no
worktree is registered, nothing is left behind) and its `python -m pbx_core run`
gets that directory first on its path. The two cores are measured --rounds times,
alternating which goes first (old-new, new-old, ...) so drift in the machine's
load falls on both, and the ratio new/old is printed per round and as the median.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "bench" / "scenarios"
KAMAILIO_CFG = ROOT / "bench" / "kamailio" / "registrar.cfg"
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"
SIPPY_VENV = Path(os.environ.get("SIPPY_VENV", "/tmp/pbx-bench-sippy"))
DOMAIN = "pbx.local"
USERS = 1000
CALLEE = "101"  # a factory extension; the PBX's DID * rings it
MAX_LOSS = 0.1  # percent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() != 1 else []


# ------------------------------------------------------------------ set-up


FAILURES: list[str] = []  # servers that did not start (a failed bench, not a figure)
TRUNK = {"id": "1", "name": "provider", "enabled": "1", "host": "127.0.0.1", "port": "5999"}
TRUNK |= {"transport": "udp", "register": "0", "max_channels": "0", "codecs": "PCMU,PCMA"}


def _trunk_row(header: str) -> str:
    """The bench's trunk as a row of whatever columns `header` names (the table's
    columns differ between revisions: a row written for one broke the other)."""
    names = [col.split("(")[0] for col in header.split()]
    return ":".join(TRUNK.get(name, "") for name in names)


def write_tables(dest: Path, factory_dir: Path = FACTORY) -> Path:
    """Factory tables + 1,000 more subscribers, a trunk whose provider is 127.0.0.1
    (so the caller SIPp is the provider: trusted, no digest on INVITE) and every DID
    to extension 101. Kamailio's db_text reads the same directory (subscriber,
    version)."""
    shutil.copytree(factory_dir, dest)
    factory = (dest / "subscriber").read_text().rstrip("\n")
    next_id = len(factory.splitlines())  # header + rows: the next free id
    rows = [f"{next_id + i}:{2000 + i}:{DOMAIN}:pw-{2000 + i}::" for i in range(USERS)]
    (dest / "subscriber").write_text("\n".join([factory, *rows]) + "\n")
    head = (dest / "pbx_trunk").read_text().splitlines()[0]
    (dest / "pbx_trunk").write_text(f"{head}\n{_trunk_row(head)}\n")
    head = (dest / "pbx_did").read_text().splitlines()[0]
    (dest / "pbx_did").write_text(f"{head}\n1:*:provider:extension:{CALLEE}:every call\n")
    return dest


def _credentials(user: str, password: str) -> str:
    """One line of register_auth.xml's injection file."""
    return f"{user};[authentication username={user} password={password}]"


def write_users(path: Path) -> Path:
    rows = [_credentials(str(2000 + i), f"pw-{2000 + i}") for i in range(USERS)]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return path


def ensure_sippy() -> Path | None:
    """sippy's b2bua_simple from its throwaway venv (created on first use)."""
    exe = SIPPY_VENV / "bin" / "b2bua_simple"
    if exe.exists():
        return exe
    print(f"  installing sippy into {SIPPY_VENV} (never a runtime dependency)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(SIPPY_VENV)], check=True)
        subprocess.run(
            [str(SIPPY_VENV / "bin" / "pip"), "install", "-q", "sippy"],
            check=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  sippy unavailable: {exc}", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def options_answered(port: int, timeout: float = 0.2) -> bool:
    """Any answer to an OPTIONS on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: probe{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            s.recvfrom(65536)
        except OSError:
            return False
        return True


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, name: str, cmd: list[str], port: int, tmp: Path, env: dict[str, str]) -> Server:
        log = tmp / f"{name}.log"
        proc = subprocess.Popen(
            [*pin(0), *cmd],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: Kamailio forks workers
        )
        server = cls(name, proc, port, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if options_answered(port):
                return server
        server.stop()
        raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process group (Kamailio forks)."""
        return self.times()[0]

    def times(self) -> tuple[float, float]:
        """CPU time used so far by the server's process group (Kamailio forks), and
        the time its threads spent runnable but waiting for a CPU (schedstat; 0 where
        the kernel keeps none): a server kept off its core by other work is busy,
        not idle."""
        total = 0
        waited = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != self.proc.pid:  # pgrp: the server's session
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
            with contextlib.suppress(OSError, ValueError, IndexError):
                for task in (entry / "task").iterdir():
                    waited += int((task / "schedstat").read_text().split()[1])  # ns
        return total / os.sysconf("SC_CLK_TCK"), waited / 1e9

    def stop(self) -> None:
        """Stop the server and everything it forked (its process group)."""
        group = self.proc.pid
        if self.proc.poll() is None:
            os.killpg(group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break  # nobody left
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()


# ------------------------------------------------------------------ SIPp


@dataclass
class Result:
    rate: float
    ok: int
    failed: int
    inflight: int
    elapsed: float
    cpu: float | None = None  # the server's share of its core during the run
    queued: float | None = None  # its share of the run spent waiting for its core
    # The server's CPU time per successful transaction over all measured runs (not
    # the warm-up): unlike the rate, hardly moved by other work sharing the core.
    cpu_per_op: float | None = None

    @property
    def loss(self) -> float:
        return self.failed / max(1, self.ok + self.failed) * 100


def sipp(
    scenario: str,
    port: int,
    tmp: Path,
    *,
    calls: int,
    inflight: int,
    keys: dict[str, str],
    extra: list[str] | None = None,
) -> Result:
    stf = tmp / "stats.csv"
    stf.unlink(missing_ok=True)
    cmd = [*pin(1), "sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario)]
    cmd += ["-m", str(calls), "-r", "1000000", "-l", str(inflight), "-t", "u1"]
    cmd += ["-i", "127.0.0.1", "-p", str(free_port()), "-nostdin", "-trace_stat"]
    cmd += ["-stf", str(stf), "-fd", "60", "-timeout", "300s", "-recv_timeout", "5000"]
    for k, v in {"domain": DOMAIN, **keys}.items():
        cmd += ["-key", k, v]
    cmd += extra or []
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, cwd=tmp, timeout=400)
    elapsed = time.monotonic() - t0
    if not stf.exists():
        raise RuntimeError(f"sipp failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    rows = list(csv.reader(stf.open(), delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    ok, failed = int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
    return Result(ok / elapsed, ok, failed, inflight, elapsed)


MAX_INFLIGHT = 512
IDLE_CPU = 0.7  # below this share of its core a server is waiting, not working


def measure(label: str, args: argparse.Namespace, server: Server, run: object) -> Result | None:
    """Warm up, size the run to --seconds, halve the window while losses > 0.1 %,
    double it while the server idles (latency-bound, see the module docstring)."""
    assert callable(run)  # noqa: S101  # a closure taking (calls, inflight)

    def timed(calls: int, inflight: int) -> Result:
        cpu0, queued0 = server.times()
        result: Result = run(calls, inflight)
        cpu1, queued1 = server.times()
        result.cpu = (cpu1 - cpu0) / result.elapsed
        result.queued = (queued1 - queued0) / result.elapsed
        return result

    warm = timed(args.warmup, args.inflight)
    cpu_total = 0.0  # server CPU seconds and successes over the measured runs
    ok_total = 0
    if warm.ok < warm.failed:
        print(f"  {label:<34} broken: {warm.ok} ok, {warm.failed} failed in the warm-up")
        return None
    inflight = args.inflight
    best: Result | None = None  # the fastest run within the failure limit
    last = warm
    halved = growing_stopped = False
    for _ in range(8):
        calls = max(args.warmup, int(last.rate * args.seconds))
        prev, last = last, timed(calls, inflight)
        cpu_total += (last.cpu or 0.0) * last.elapsed
        ok_total += last.ok
        if last.loss <= MAX_LOSS and (best is None or last.rate > best.rate):
            best = last
        # Idle: neither running nor waiting for the core (other work on it).
        idle = last.cpu is not None and last.cpu + (last.queued or 0.0) < IDLE_CPU
        if last.loss > MAX_LOSS:
            if not idle:
                inflight = max(1, inflight // 2)  # overloaded: fewer outstanding
                halved = True
            continue  # (an idle server's losses are not overload: run again)
        if last.inflight > prev.inflight and last.rate < 1.1 * prev.rate:
            growing_stopped = True  # more in flight did not help: SIPp is the limit
        if idle and not (halved or growing_stopped) and inflight < MAX_INFLIGHT:
            inflight *= 2  # waiting on latency, not on the CPU: more outstanding
            continue
        if last.elapsed >= 0.6 * args.seconds:
            break  # else the warm-up underestimated the rate: size again
    if best is None:
        best = last
    assert best is not None  # noqa: S101  # the loop ran
    best.cpu_per_op = cpu_total / ok_total if ok_total else None
    flag = "" if best.loss <= MAX_LOSS else "   ** over 0.1 % failures **"
    cpu = "" if best.cpu is None else f", server CPU {best.cpu * 100:.0f} %"
    if best.queued:
        cpu += f", its threads queued for a CPU {best.queued * 100:.0f} %"
    if best.cpu_per_op is not None:
        cpu += f", {best.cpu_per_op * 1e6:.0f} µs CPU each"
    print(
        f"  {label:<34} {best.rate:>9.0f}/s   ({best.ok} ok, {best.failed} failed,"
        f" {best.loss:.2f} %, {best.inflight} in flight{cpu}){flag}"
    )
    return best


def register_callee(port: int, callee_port: int, tmp: Path, user: str, password: str) -> None:
    """Register the callee SIPp's address, sent from that very port (the PBX reaches a
    phone where its REGISTER came from)."""
    one = tmp / "callee.csv"
    one.write_text(f"SEQUENTIAL\n{_credentials(user, password)}\n")
    stf = tmp / "reg.csv"
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "register_auth.xml"), "-m", "1"]
    cmd += ["-t", "u1", "-i", "127.0.0.1", "-p", str(callee_port), "-nostdin"]
    cmd += ["-inf", str(one), "-key", "domain", DOMAIN, "-trace_stat", "-stf", str(stf)]
    cmd += ["-timeout", "10s", "-timeout_error"]
    proc = subprocess.run(cmd, check=False, capture_output=True, cwd=tmp, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"callee registration failed: {proc.stdout.decode()[-2000:]}")


def start_callee(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    cmd = [*pin(1), "sipp", "-sf", str(SCENARIOS / "call_uas.xml"), "-t", "u1"]
    cmd += ["-i", "127.0.0.1", "-p", str(port), "-nostdin", "-fd", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    time.sleep(0.3)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    args: argparse.Namespace,
    tmp: Path,
    *,
    registrar: bool,
    port: int,
    callee_port: int,
    workdir: Path | None = None,
) -> dict[str, Result | None]:
    work = workdir or tmp / name
    work.mkdir()
    out: dict[str, Result | None] = {}
    try:
        server = Server.start(name, cmd, port, work, env)
    except RuntimeError as exc:
        print(f"  {name}: {exc}")
        FAILURES.append(name)  # the run is no measurement: main() exits 1
        return out
    try:
        if registrar and "register" in args.workloads:
            users = write_users(work / "users.csv")
            out["register"] = measure(
                f"{name}: REGISTER with auth",
                args,
                server,
                lambda calls, inflight: sipp(
                    "register_auth.xml",
                    port,
                    work,
                    calls=calls,
                    inflight=inflight,
                    keys={},
                    extra=["-inf", str(users)],
                ),
            )
        if "call" in args.workloads:
            if registrar:
                register_callee(port, callee_port, work, CALLEE, f"change-me-{CALLEE}")
            callee = start_callee(callee_port, work)
            try:
                out["call"] = measure(
                    f"{name}: call set-ups",
                    args,
                    server,
                    lambda calls, inflight: sipp(
                        "call_uac.xml",
                        port,
                        work,
                        calls=calls,
                        inflight=inflight,
                        keys={"callee": CALLEE},
                    ),
                )
            finally:
                stop(callee)
    finally:
        server.stop()
    return out


def export_rev(rev: str, dest: Path) -> tuple[str, Path]:
    """REV's pbx_core and rootfs_overlay, extracted into dest with `git archive`;
    returns (short hash, the directory)."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--verify", "--short", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest.mkdir()
    archive = subprocess.Popen(
        [*git, "archive", "--format=tar", commit, "pbx_core", "rootfs_overlay"],
        stdout=subprocess.PIPE,
    )
    assert archive.stdout is not None  # noqa: S101  # stdout=PIPE
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=False)
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise RuntimeError(f"could not export {rev} ({commit}) with git archive")
    return commit, dest


def pbx_server(
    src: Path, tables: Path, tmp: Path, name: str
) -> tuple[list[str], dict[str, str], int]:
    """`python -m pbx_core run` from the source tree src, its command, environment and
    port (its own state and runtime directory per run: an older core need not read a
    newer one's state)."""
    port = free_port()
    cmd = [sys.executable, "-m", "pbx_core", "run", "--config", str(tables)]
    cmd += ["--listen", f"127.0.0.1:{port}", "--state", str(tmp / f"{name}.state.mdb")]
    env = {"PBX_RUNTIME_DIR": str(tmp / f"{name}.run"), "PYTHONPATH": str(src)}
    return cmd, env, port


def imported_from(env: dict[str, str], cwd: Path) -> str:
    """Where the server's interpreter finds pbx_core (so a baseline really is REV's)."""
    out = subprocess.run(
        [sys.executable, "-c", "import pbx_core; print(pbx_core.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
    )
    return str(Path(out.stdout.strip()).parent)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def compare_cores(
    args: argparse.Namespace, tmp: Path, tables: Path
) -> tuple[dict[str, Result | None], str]:
    """New core (this tree) against --baseline-rev, --rounds times, alternating
    which goes first; prints each round and the medians. Returns the new core's
    last results (for the Kamailio/sippy ratios) and the baseline's short hash."""
    commit, base_src = export_rev(args.baseline_rev, tmp / "baseline-src")
    base_tables = write_tables(
        tmp / "baseline-tables", base_src / "rootfs_overlay" / "etc" / "pbx" / "factory"
    )
    cores = {"new": (ROOT, tables), "old": (base_src, base_tables)}
    for which, (src, _) in cores.items():
        _, env, _ = pbx_server(src, tables, tmp, f"probe-{which}")
        print(f"  {which} core: {imported_from(env, tmp)}")
    # Per workload: the rate ratio new/old of each round, and the CPU-time ratio
    # old/new (µs of server CPU per transaction; > 1 means the new core is cheaper).
    ratios: dict[str, list[float]] = {"register": [], "call": []}
    cpu_ratios: dict[str, list[float]] = {"register": [], "call": []}
    rates: dict[str, dict[str, list[float]]] = {w: {"new": [], "old": []} for w in ratios}
    cpus: dict[str, dict[str, list[float]]] = {w: {"new": [], "old": []} for w in ratios}
    last: dict[str, Result | None] = {}
    for rnd in range(1, args.rounds + 1):
        order = ("old", "new") if rnd % 2 else ("new", "old")
        got: dict[str, dict[str, Result | None]] = {}
        for which in order:
            src, tabs = cores[which]
            name = f"pbx-{which}-{rnd}"
            cmd, env, port = pbx_server(src, tabs, tmp, name)
            print(f"  round {rnd}, {which} core ({load()})")
            got[which] = bench_server(
                f"pbx {which}" + (f" ({commit})" if which == "old" else ""),
                cmd,
                env,
                args,
                tmp,
                registrar=True,
                port=port,
                callee_port=free_port(),
                workdir=tmp / name,
            )
        last = got["new"]
        for workload in ("register", "call"):
            new, old = got["new"].get(workload), got["old"].get(workload)
            if not (new and old and old.rate):
                continue
            rates[workload]["new"].append(new.rate)
            rates[workload]["old"].append(old.rate)
            ratios[workload].append(new.rate / old.rate)
            line = f"  round {rnd} {workload:<8} rate new/old {new.rate / old.rate:.2f}"
            if new.cpu_per_op and old.cpu_per_op:
                cpus[workload]["new"].append(new.cpu_per_op)
                cpus[workload]["old"].append(old.cpu_per_op)
                cpu_ratios[workload].append(old.cpu_per_op / new.cpu_per_op)
                line += f", CPU per transaction old/new {old.cpu_per_op / new.cpu_per_op:.2f}"
            print(line)
    print(f"\n  new core ({ROOT.name} working tree) against old core ({commit}), {load()}:")
    for workload, label in (("register", "REGISTER with auth"), ("call", "call set-ups")):
        if not ratios[workload]:
            continue
        each = ", ".join(f"{r:.2f}" for r in ratios[workload])
        new_med, old_med = median(rates[workload]["new"]), median(rates[workload]["old"])
        verdict = "within 10 %" if median(ratios[workload]) >= 0.9 else "** over 10 % slower **"
        print(
            f"  {label:<19} rate new {new_med:.0f}/s, old {old_med:.0f}/s (medians);"
            f" new/old median {median(ratios[workload]):.2f} [{each}] {verdict}"
        )
        if cpu_ratios[workload]:
            each = ", ".join(f"{r:.2f}" for r in cpu_ratios[workload])
            new_med = median(cpus[workload]["new"]) * 1e6
            old_med = median(cpus[workload]["old"]) * 1e6
            cheap = median(cpu_ratios[workload])
            verdict = "within 10 %" if cheap >= 0.9 else "** over 10 % dearer **"
            print(
                f"  {'':<19} CPU new {new_med:.0f} µs, old {old_med:.0f} µs per transaction"
                f" (medians); old/new median {cheap:.2f} [{each}] {verdict}"
            )
    return last, commit


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    ap.add_argument("--warmup", type=int, default=500, help="transactions in the warm-up run")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--only", default="pbx,kamailio,sippy", help="servers to measure")
    ap.add_argument("--workloads", default="register,call", help="register, call or both")
    ap.add_argument(
        "--baseline-rev",
        metavar="REV",
        help="also measure the PBX of this git revision (e.g. main) against this tree's",
    )
    ap.add_argument("--rounds", type=int, default=3, help="old/new rounds with --baseline-rev")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    # A SIGTERM unwinds like Ctrl-C, so every server started here is stopped.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    only = {s.strip() for s in args.only.split(",")}
    if not shutil.which("sipp"):
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    print(
        "SIPp UDP on loopback, server on core 0, SIPp on core 1; "
        f"{args.inflight} in flight, runs of ~{args.seconds:g} s; {load()}"
    )
    results: dict[str, dict[str, Result | None]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as d:
        tmp = Path(d)
        tables = write_tables(tmp / "tables")
        if "kamailio" in only:
            if Path(kamailio).exists():
                port = free_port()
                run_dir = tmp / "kamailio-run"
                run_dir.mkdir()
                cmd = [kamailio, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-x", "tlsf"]
                cmd += ["-m", "1024", "-M", "16", "-l", f"udp:127.0.0.1:{port}"]
                cmd += ["-A", f'DBURL="text://{tables}"', "-Y", str(run_dir), "-w", str(run_dir)]
                results["kamailio"] = bench_server(
                    "kamailio",
                    cmd,
                    {},
                    args,
                    tmp,
                    registrar=True,
                    port=port,
                    callee_port=free_port(),
                )
            else:
                print("  kamailio: not installed (apt-get install kamailio)")
        if "sippy" in only:
            exe = ensure_sippy()
            if exe is not None:
                port, callee_port = free_port(), free_port()
                cmd = [str(exe), "-f", "-l", "127.0.0.1", "-p", str(port)]
                cmd += ["-n", f"127.0.0.1:{callee_port}"]
                results["sippy"] = bench_server(
                    "sippy",
                    cmd,
                    {"SIPLOG_LVL": "ERR"},
                    args,
                    tmp,
                    registrar=False,
                    port=port,
                    callee_port=callee_port,
                )
        if "pbx" in only and args.baseline_rev:
            results["pbx"], _ = compare_cores(args, tmp, tables)
        elif "pbx" in only:
            cmd, env, port = pbx_server(ROOT, tables, tmp, "pbx")
            results["pbx"] = bench_server(
                "pbx", cmd, env, args, tmp, registrar=True, port=port, callee_port=free_port()
            )
    print()
    if FAILURES:
        print(f"  did not run: {', '.join(sorted(set(FAILURES)))}")
        return 1
    if not {"kamailio", "sippy"} & only:
        return 0
    pbx = results.get("pbx", {})

    def ratio(workload: str, base: str) -> str:
        a, b = pbx.get(workload), results.get(base, {}).get(workload)
        return f"{a.rate / b.rate:.2f}" if a and b and b.rate else "n/a"

    print(f"  pbx / kamailio, REGISTER with auth: {ratio('register', 'kamailio')}   (aim >= 0.33)")
    print(f"  pbx / kamailio, call set-ups:       {ratio('call', 'kamailio')}")
    print(f"  pbx / sippy,    call set-ups:       {ratio('call', 'sippy')}   (aim >= 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
