"""pbx_core imports nothing the firmware's frozen `pbx` leaves out.

firmware/build-image.sh freezes with `--exclude-module` for what the box never needs
(the XML parsers, decimal, bz2, lzma, Tk...). A module of pbx_core importing one of
them works on the host and in every in-process test, and crashes `pbx run` on the
image at start (the presence code's `xml.sax.saxutils` did: the QEMU tests caught it
twenty minutes into CI). This finds it in a second, from the sources."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / "firmware" / "build-image.sh"


def excluded() -> set[str]:
    names = set(re.findall(r"--exclude-module (\S+)", BUILD.read_text()))
    assert "xml" in names, "firmware/build-image.sh no longer lists its exclusions"
    return names


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_no_module_of_the_bundle_imports_what_the_freeze_leaves_out() -> None:
    out = excluded()
    bad = []
    for path in sorted((TOP / "pbx_core").rglob("*.py")):
        module = ".".join(path.relative_to(TOP).with_suffix("").parts)
        if module in out:  # left out itself (the build-time prompt generator)
            continue
        bad += [
            f"{path.relative_to(TOP)} imports {name}"
            for name in sorted(imports(path))
            if any(name == x or name.startswith(x + ".") for x in out)
        ]
    assert bad == [], bad
