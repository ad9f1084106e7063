"""Fixtures of the firmware tests: the image (built first) and QEMU machines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
IMAGE = TOP / "output" / "images" / "cf.img"
# What the firmware tests run besides build-image.sh's own tools (it checks those):
# QEMU, the image tools, sfdisk and fallocate for the test copies, SIPp.
TOOLS = ("qemu-system-x86_64", "genimage", "mksquashfs", "sfdisk", "fallocate", "sipp")


def missing_host(reason: str) -> None:
    """Skip on a developer's non-Debian machine; fail under CI, which sets CI=true."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{reason} (CI=true: the firmware tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def firmware_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """output/images/cf.img, (re)built from the current sources by firmware/build-image.sh.

    The build is incremental (cached .debs, PyInstaller only when pbx_core changed),
    so this costs ~20 s when nothing changed; it guarantees the image under test is
    the one the sources make."""
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        # Another OS can only skip (the Vagrantfile gives a Debian 12 box); under CI
        # (CI=true), where the image must be tested, that is a failure.
        missing_host("the firmware build needs a Debian 12 host (see the Vagrantfile)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        # On a Debian host a missing tool is an installation fault, never a skip.
        pytest.fail(f"missing {', '.join(missing)}: ./build.sh test installs firmware/apt-packages")
    log = tmp_path_factory.mktemp("build") / "build-image.log"
    venv = Path(sys.prefix)
    with log.open("wb") as out:
        rc = subprocess.run(
            [str(TOP / "firmware" / "build-image.sh")],
            cwd=TOP,
            env={**os.environ, "VENV": str(venv)},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if rc != 0:
        pytest.fail(f"firmware/build-image.sh failed ({rc}):\n{log.read_text()[-4000:]}")
    assert IMAGE.is_file()
    return IMAGE
