"""Shared fixtures: running `pbx run` from the source tree as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"


@dataclass
class PbxProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    stderr_path: Path

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_pbx(tmp: Path, config: Path | None = None, extra: list[str] | None = None) -> PbxProcess:
    """Start `python -m pbx_core run` on 127.0.0.1 with a free port; wait for ready."""
    cfg = config or FACTORY
    err = tmp / "pbx.stderr"
    cmd = [sys.executable, "-m", "pbx_core", "run", "--config", str(cfg), "--listen", "127.0.0.1:0"]
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
        m = re.search(r"PBX ready, SIP on 127\.0\.0\.1:(\d+)", text)
        if m:
            return PbxProcess(proc, "127.0.0.1", int(m.group(1)), err)
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
