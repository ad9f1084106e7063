"""Shared fixtures: running `pbx run` from the source tree as a real process, and the
one rule for peer tools (SIPp, Kamailio, baresip, sox …) a test needs: see `need`."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from pbx_core.features.registry import FEATURES
from pbx_core.store.feature_schema import register_features

ROOT = Path(__file__).resolve().parent.parent

# As the composition roots do (app.py, cli.py): the features' own tables and settings
# join the core's before any test reads tables. A test that registers another feature
# puts this back when it ends (tests/features/probe.py).
register_features(FEATURES)
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"

# ---------------------------------------------------------------- peer tools
#
# A test whose peer tool is missing proves nothing, so by default it fails. Only a
# developer who says so (PBX_ALLOW_MISSING_TOOLS=1) gets a skip instead, and never
# under CI (CI=true): there a missing tool always fails the run.


def _kamailio_ok() -> bool:
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    return Path(binary).exists() and KAMAILIO_MODULES.is_dir()


def _ipv6_loopback_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")

# name -> (is it there?, how to get it)
TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "sipp": (lambda: shutil.which("sipp") is not None, "apt install sip-tester"),
    "sipp-pcap": (SIPP_PCAP.exists, f"{SIPP_PCAP}: apt install sip-tester"),
    "kamailio": (_kamailio_ok, "apt install kamailio"),
    "baresip": (
        lambda: shutil.which("baresip") is not None and (BARESIP_MODULES / "ctrl_tcp.so").exists(),
        "apt install baresip-core",
    ),
    "sox": (lambda: shutil.which("sox") is not None, "apt install sox"),
    "espeak-ng": (lambda: shutil.which("espeak-ng") is not None, "apt install espeak-ng"),
    "ipv6": (_ipv6_loopback_ok, "an IPv6 loopback (::1) that can be bound"),
}


def missing_tools_allowed() -> bool:
    """PBX_ALLOW_MISSING_TOOLS=1 outside CI: a missing tool skips instead of failing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return os.environ.get("PBX_ALLOW_MISSING_TOOLS", "") == "1"


def missing(what: str, hint: str) -> NoReturn:
    """`what` this test needs is not there: fail, or skip when the developer allows it."""
    message = f"{what} is missing ({hint}); ./build.sh test installs it"
    if missing_tools_allowed():
        pytest.skip(message)
    pytest.fail(f"{message}. Set PBX_ALLOW_MISSING_TOOLS=1 to skip instead (not under CI).")


def need(*names: str) -> None:
    """Every tool of `names` (keys of TOOLS) is there, or the test fails (see `missing`)."""
    for name in names:
        present, hint = TOOLS[name]
        if not present():
            missing(name, hint)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "tools(*names): peer tools the test needs (tests/conftest.py TOOLS); a missing one "
        "fails the test unless PBX_ALLOW_MISSING_TOOLS=1 outside CI",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("tools"):
        need(*mark.args)


@dataclass
class PbxProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    stderr_path: Path

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_pbx(
    tmp: Path,
    config: Path | None = None,
    extra: list[str] | None = None,
    listen: str = "127.0.0.1:0",
) -> PbxProcess:
    """Start `python -m pbx_core run` on `listen` (default 127.0.0.1 with a free port;
    "[::1]:0" for IPv6); wait for ready. `host` is the listener's address, unbracketed."""
    cfg = config or FACTORY
    err = tmp / "pbx.stderr"
    cmd = [sys.executable, "-m", "pbx_core", "run", "--config", str(cfg), "--listen", listen]
    proc = subprocess.Popen(
        [*cmd, *(extra or [])],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=err.open("wb"),
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PBX_RUNTIME_DIR": str(tmp / "run"),
            "PBX_DATA_DIR": str(tmp / "data"),
            # no assets: the built-in music on hold, whose notes the tests know
            "PBX_ASSETS": str(tmp / "assets"),
        },
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = err.read_text(errors="replace")
        m = re.search(r"PBX ready, SIP on (\S+):(\d+)", text)
        if m:
            return PbxProcess(proc, m.group(1).strip("[]"), int(m.group(2)), err)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"pbx run did not become ready:\n{err.read_text(errors='replace')}")


def stop_pbx(pbx: PbxProcess) -> None:
    if pbx.proc.poll() is None:
        pbx.proc.terminate()
        try:
            pbx.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pbx.proc.kill()
            pbx.proc.wait()


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[PbxProcess]:
    p = start_pbx(tmp_path)
    yield p
    stop_pbx(p)
    # A clean shutdown leaves no traceback behind.
    assert "Traceback" not in p.log(), p.log()


@pytest.fixture(scope="module")
def shared_pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    p = start_pbx(tmp_path_factory.mktemp("pbx"))
    yield p
    stop_pbx(p)
    assert "Traceback" not in p.log(), p.log()
