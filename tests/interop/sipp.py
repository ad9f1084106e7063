"""Driving SIPp (Debian `sip-tester`) from tests and benchmarks."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def sipp_path() -> str:
    """SIPp's path; a test without it fails (tests/conftest.py `need`)."""
    need("sipp")
    path = shutil.which("sipp")
    assert path is not None
    return path


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]
    output: str

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", "0"))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", "0"))


def run_sipp(
    scenario: Path | str,
    host: str,
    port: int,
    tmp: Path,
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: int = 10,
    keys: dict[str, str] | None = None,
    timeout: float = 30,
    extra: list[str] | None = None,
) -> SippResult:
    """Run a client scenario against host:port; return exit code and final stats."""
    sipp = sipp_path()
    stf = tmp / "sipp_stats.csv"
    if stf.exists():
        stf.unlink()
    cmd = [sipp, f"{host}:{port}", "-sf", str(scenario), "-m", str(calls), "-r", str(rate)]
    cmd += ["-t", transport, "-i", "127.0.0.1", "-nostdin", "-trace_stat", "-stf", str(stf)]
    cmd += ["-fd", "1", "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_err"]
    for k, v in (keys or {}).items():
        cmd += ["-key", k, v]
    cmd += extra or []
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=timeout + 30, cwd=tmp
    )
    stats: dict[str, str] = {}
    if stf.exists():
        rows = list(csv.reader(stf.open(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(proc.returncode, stats, proc.stdout + proc.stderr)
