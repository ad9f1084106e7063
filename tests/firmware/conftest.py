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


@pytest.fixture(scope="session")
def firmware_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """output/images/cf.img, (re)built from the current sources by firmware/build-image.sh.

    The build is incremental (cached .debs, PyInstaller only when pbx_core changed),
    so this costs ~20 s when nothing changed; it guarantees the image under test is
    the one the sources make."""
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        pytest.skip("the firmware build needs a Debian 12 host (see the Vagrantfile)")
    missing = [t for t in ("qemu-system-x86_64", "genimage", "mksquashfs") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: ./build.sh test installs firmware/apt-packages")
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
