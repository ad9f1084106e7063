"""The running daemon picks up a newly committed configuration generation and keeps
serving; a broken configuration is refused at start with a clear message."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from pbx_core.store.generations import Generations
from tests.conftest import FACTORY, ROOT, start_pbx, stop_pbx
from tests.interop.sipp import SCENARIOS, run_sipp


def test_new_generation_is_loaded_without_restart(tmp_path: Path) -> None:
    root = tmp_path / "config"
    gens = Generations(root)
    gens.commit_dir(FACTORY)
    pbx = start_pbx(tmp_path, root)
    try:
        edited = tmp_path / "edited"
        shutil.copytree(FACTORY, edited)
        gens.commit_dir(edited)
        deadline = time.monotonic() + 15
        while "configuration reloaded" not in pbx.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "configuration reloaded" in pbx.log(), pbx.log()
        res = run_sipp(SCENARIOS / "options.xml", pbx.host, pbx.port, tmp_path)
        assert res.returncode == 0, res.output
    finally:
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log()


def test_broken_configuration_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "subscriber").write_text("username(str) domain(str) ha1(str)\nalice:example.com\n")
    out = subprocess.run(
        [sys.executable, "-m", "pbx_core", "run", "--config", str(bad), "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PBX_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 2
    assert "cannot load the configuration" in out.stderr
    assert "subscriber" in out.stderr
    assert "Traceback" not in out.stderr


def test_status_over_the_control_socket(tmp_path: Path) -> None:
    pbx = start_pbx(tmp_path)
    try:
        env = {"PBX_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-m", "pbx_core", "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert f"127.0.0.1:{pbx.port}" in out.stdout
        assert "registrations 0" in out.stdout
        js = subprocess.run(
            [sys.executable, "-m", "pbx_core", "status", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert '"ok": true' in js.stdout
    finally:
        stop_pbx(pbx)
    # The daemon removed its socket on the way out; status now says so clearly.
    gone = subprocess.run(
        [sys.executable, "-m", "pbx_core", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert gone.returncode == 1
    assert "no daemon answering" in gone.stderr
    assert "Traceback" not in gone.stderr
