"""`pbx db commit DIR ROOT` and `pbx db rollback ROOT` from the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"


def pbx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx_core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_commit_rollback_and_a_refused_commit(tmp_path: Path) -> None:
    root = tmp_path / "config"
    first = pbx("db", "commit", str(FACTORY), str(root))
    assert first.returncode == 0, first.stdout + first.stderr
    gen1 = (root / "current").readlink().name
    second = pbx("db", "commit", str(FACTORY), str(root))
    assert second.returncode == 0
    gen2 = (root / "current").readlink().name
    assert gen1 != gen2
    # A broken directory is refused and the current generation stays.
    bad = tmp_path / "bad"
    shutil.copytree(FACTORY, bad)
    (bad / "subscriber").write_text("username(str) domain(str)\nalice:example.com:extra:x\n")
    refused = pbx("db", "commit", str(bad), str(root))
    assert refused.returncode == 1
    assert "nothing committed" in refused.stdout
    assert "subscriber" in refused.stdout
    assert (root / "current").readlink().name == gen2
    back = pbx("db", "rollback", str(root))
    assert back.returncode == 0, back.stdout
    assert (root / "current").readlink().name == gen1
    assert "Traceback" not in refused.stderr + back.stderr
