"""The image build itself: pinned inputs, warm cache, rebuilt only what changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.firmware, pytest.mark.slow]

TOP = Path(__file__).resolve().parents[2]


def build() -> tuple[str, str]:
    """Run firmware/build-image.sh; return its output and the bundle's build stamp."""
    res = subprocess.run(
        [str(TOP / "firmware" / "build-image.sh")],
        cwd=TOP,
        env={**os.environ, "VENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"^    Wafer PBX \S+ \((\S+)\), ", out, re.MULTILINE)
    assert m is not None, out
    return out, m.group(1)


def test_a_second_build_downloads_and_refreezes_nothing(firmware_image: Path) -> None:
    lock = [
        line.split()
        for line in (TOP / "firmware" / "packages.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    _, stamp = build()
    # Others may be editing pbx_core in this tree: then the stamp moves, and the
    # bundle is rightly rebuilt. With the same sources it must not be.
    for _attempt in range(3):
        out, again = build()
        if again == stamp:
            break
        stamp = again
    else:
        pytest.fail("pbx_core kept changing during three builds")
    assert f"fetched nothing: all {len(lock)} pinned packages are in dl/" in out
    assert re.search(r"freeze pbx .*\n\s+up to date \(", out), out
    # Every step says how long it took.
    steps = re.findall(r"^==> (.+)$", out, re.MULTILINE)
    timed = re.findall(r"^    (.+): \d+\.\ds$", out, re.MULTILINE)
    assert steps[:-1] == timed, (steps, timed)
    # The version is stamped in the bundle, never in the source tree.
    assert 'BUILD = "dev"' in (TOP / "pbx_core" / "version.py").read_text()


def test_packages_lock_pins_name_version_and_sha256() -> None:
    for line in (TOP / "firmware" / "packages.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version, sha = line.split()
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name), line
        assert re.fullmatch(r"(\d+:)?[0-9][A-Za-z0-9.+~-]*", version), line
        assert re.fullmatch(r"[0-9a-f]{64}", sha), line


def test_os_release_has_the_version_of_pbx_core(firmware_image: Path) -> None:
    from pbx_core.version import VERSION  # the source tree's version

    fields = dict(
        line.split("=", 1)
        for line in (TOP / "output" / "target" / "etc" / "os-release").read_text().splitlines()
        if "=" in line
    )
    assert fields.get("VERSION_ID") == VERSION, fields
    assert fields["PRETTY_NAME"].startswith(f'"Wafer PBX {VERSION} ('), fields


def test_the_bundle_leaves_out_the_build_time_prompt_generator(firmware_image: Path) -> None:
    from PyInstaller.archive.readers import pkg_archive_contents

    # The program in the staged root filesystem, as it goes into the image.
    program = TOP / "output" / "target" / "usr" / "lib" / "pbx" / "pbx"
    modules = set(pkg_archive_contents(str(program)))
    assert "pbx_core.console.session" in modules  # the listing is the real one
    assert "pbx_core.media.engine" in modules
    assert "pbx_core.media.prompts_build" not in modules
