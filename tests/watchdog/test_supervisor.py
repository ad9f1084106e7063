"""`pbx watchdog` as a real process supervising a real `pbx run` on loopback, with a
plain file standing in for /dev/watchdog (it takes the feeds; the ioctls fail)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx_core.pbx.control import query
from tests.conftest import FACTORY, ROOT

FAST = [
    *("--check-interval", "0.3", "--check-timeout", "0.5", "--failures", "2"),
    *("--feed-interval", "0.1", "--timeout", "30", "--restart-delay", "0.2"),
    *("--start-timeout", "20", "--stop-timeout", "5"),
]


@dataclass
class Watchdog:
    proc: subprocess.Popen[bytes]
    log_path: Path
    device: Path
    control: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 20, count: int = 1) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log()))
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {pattern!r} in the log:\n{self.log()}")
            time.sleep(0.05)

    def child_pid(self, count: int = 1) -> int:
        return int(self.wait_log(r"started pbx run \(pid (\d+)\)", count=count).group(1))

    def feeds(self) -> bytes:
        return self.device.read_bytes()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def start_watchdog(tmp: Path, *extra: str, config: Path = FACTORY, device: bool = True) -> Watchdog:
    dev = tmp / "watchdog"
    if device:
        dev.write_bytes(b"")
    control = tmp / "control.sock"
    log = tmp / "watchdog.log"
    cmd = [sys.executable, "-m", "pbx_core", "watchdog", "--config", str(config)]
    cmd += ["--listen", "127.0.0.1:0", "--control", str(control), "--device", str(dev)]
    proc = subprocess.Popen(
        [*cmd, *FAST, *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PBX_RUNTIME_DIR": str(tmp / "run"),
            "PBX_DATA_DIR": str(tmp / "data"),  # the daemon's state LMDB: never the host's /data
        },
    )
    return Watchdog(proc, log, dev, control)


@pytest.fixture
def watchdog(tmp_path: Path) -> Iterator[Watchdog]:
    w = start_watchdog(tmp_path)
    try:
        w.wait_log(r"is healthy: OPTIONS answered 200")
        yield w
    finally:
        w.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent can reap it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_9_is_restarted(watchdog: Watchdog) -> None:
    first = watchdog.child_pid()
    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    watchdog.wait_log(r"pbx run killed by SIGKILL: restarting in 0\.2 s \(restart 1 of at most 5")
    second = watchdog.child_pid(count=2)
    assert second != first
    watchdog.wait_log(r"is healthy", count=2)
    assert time.monotonic() - killed < 10
    assert query(watchdog.control, {"cmd": "ping"})["ok"]


def test_a_hang_sigstop_is_detected_and_restarted(watchdog: Watchdog) -> None:
    first = watchdog.child_pid()
    os.kill(first, signal.SIGSTOP)
    watchdog.wait_log(r"health check failed \(1 of 2\): control socket ping not answered")
    # While a check fails the hardware watchdog is not fed.
    watchdog.wait_log(r"not feeding the hardware watchdog: health check failing")
    watchdog.wait_log(rf"pbx run \(pid {first}\) is unhealthy: .*; killing it")
    watchdog.wait_log(r"was killed \(.*killed by SIGKILL\)")
    assert watchdog.child_pid(count=2) != first
    watchdog.wait_log(r"is healthy", count=2)
    assert not alive(first)


def test_magic_close_on_sigterm_and_the_pbx_stops(watchdog: Watchdog) -> None:
    pid = watchdog.child_pid()
    time.sleep(0.5)
    fed = watchdog.feeds()
    assert len(fed) >= 3 and set(fed) == {ord("k")}, fed
    assert watchdog.stop() == 0
    assert watchdog.feeds().endswith(b"V")
    assert b"V" not in watchdog.feeds()[:-1]
    assert not alive(pid)
    assert "SIGTERM: stopping pbx run" in watchdog.log()
    assert "hardware watchdog stopped (magic close)" in watchdog.log()
    assert "Traceback" not in watchdog.log()


def test_crash_loop_stops_feeding(tmp_path: Path) -> None:
    # A generation root whose `current` points nowhere: pbx run fails at every start.
    root = tmp_path / "config"
    root.mkdir()
    (root / "current").symlink_to("gen-000001")
    w = start_watchdog(tmp_path, "--limit", "3", "--window", "60", config=root)
    try:
        w.wait_log(r"restarting in 0\.2 s \(restart 3 of at most 3 within 60 s\)")
        w.wait_log(r"3 restarts within 60 s is a crash loop; giving up, the hardware watchdog")
        w.wait_log(r"not feeding the hardware watchdog: gave up restarting the PBX")
        fed = len(w.feeds())
        time.sleep(1.0)  # ten feed intervals
        assert len(w.feeds()) == fed
        assert w.log().count("started pbx run") == 4  # the first start and 3 restarts
        assert w.proc.poll() is None  # it waits for the reset, it does not exit
    finally:
        assert w.stop() == 0
    assert w.feeds().endswith(b"V")  # a clean stop still disarms it


def test_without_a_hardware_watchdog_it_says_so_and_supervises(tmp_path: Path) -> None:
    w = start_watchdog(tmp_path, device=False)
    try:
        w.wait_log(r"no hardware watchdog at .*watchdog: supervising without one")
        w.wait_log(r"is healthy")
        os.kill(w.child_pid(), signal.SIGKILL)
        w.wait_log(r"is healthy", count=2)
    finally:
        assert w.stop() == 0
    assert not w.device.exists()


def test_a_killed_supervisor_takes_its_pbx_along(watchdog: Watchdog) -> None:
    pid = watchdog.child_pid()
    watchdog.proc.kill()
    watchdog.proc.wait()
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, "the PBX outlived its supervisor"
        time.sleep(0.05)
    # Killed without the magic close: the hardware watchdog is left running.
    assert not watchdog.feeds().endswith(b"V")


def test_first_boot_commits_the_factory_tables(tmp_path: Path) -> None:
    root = tmp_path / "data-config"
    w = start_watchdog(tmp_path, "--factory", str(FACTORY), config=root)
    try:
        w.wait_log(r"committed the factory tables as gen-000001")
        w.wait_log(r"is healthy")
        status = query(w.control, {"cmd": "status"})
        assert status["config"]["kind"] == "generations"
        assert status["config"]["generation"] == "gen-000001"
    finally:
        w.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--feed-interval", "40"], "--feed-interval must be above 0 and below --timeout"),
        (["--limit", "0"], "restart policy"),
        (["--failures", "0"], "--failures must be at least 1"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    w = start_watchdog(tmp_path, *args)
    assert w.proc.wait(10) == 2
    assert message in w.log()
    assert "Traceback" not in w.log()
    assert w.feeds() == b""


def test_missing_configuration_is_refused(tmp_path: Path) -> None:
    w = start_watchdog(tmp_path, config=tmp_path / "nope")
    assert w.proc.wait(10) == 2
    assert "not found" in w.log()
