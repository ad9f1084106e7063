"""The dependency direction of docs/architecture.md, enforced (trio checks its own layering the
same way): the sans-IO core imports no I/O, and no layer imports one above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "pbx_core"

# I/O and clocks the sans-IO core must not touch (time is passed in as `now`).
IO_MODULES = {"asyncio", "socket", "selectors", "time", "threading", "signal", "trio", "uvloop"}
SANS_IO = [
    "sip",
    "media/codecs",
    *(
        f"media/{m}.py"
        for m in (
            "rtp",
            "rtcp",
            "dtmf",
            "tones",
            "mixer",
            "jitter",
            "negotiation",
            "latch",
            "wav",
            "ports",
            "audio",
            "events",
            "errors",
        )
    ),
]

# package -> pbx_core packages it must not import
FORBIDDEN = {
    "sip": {"transport", "media", "store", "pbx", "features", "console", "watchdog", "app"},
    "store": {"transport", "media", "pbx", "features", "console", "watchdog", "app"},
    "transport": {"pbx", "features", "console", "watchdog", "app", "store"},
    "media": {"pbx", "features", "console", "watchdog", "app"},
    "pbx": {"features", "console", "watchdog", "app"},
    "features": {"console", "watchdog", "app"},
    "console": {"pbx", "features", "transport", "media", "watchdog", "app"},
    "watchdog": {"pbx", "features", "console", "media", "app"},
}


# The control socket's protocol module is how the console and the watchdog talk to
# the running daemon (DESIGN: "only through its control socket").
ALLOWED = {
    "console": {"pbx_core.pbx.control"},
    "watchdog": {"pbx_core.pbx.control"},
    # The core knows the feature platform's contract, never a feature by name.
    "pbx": {"pbx_core.features.api"},
}
# What a feature package may import of pbx_core: the contract and the shared helpers
# (features/api.py, features/prompts.py), and its own package; never the core's
# internals (it acts through its Context) nor another feature.
FEATURE_SHARED = {"pbx_core.features.api", "pbx_core.features.prompts"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(sub: str) -> list[Path]:
    base = PKG / sub
    if base.is_file():
        return [base]
    return sorted(base.rglob("*.py")) if base.exists() else []


@pytest.mark.parametrize("sub", SANS_IO)
def test_sans_io_core_imports_no_io(sub: str) -> None:
    for path in _files(sub):
        bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_down(package: str) -> None:
    for path in _files(package):
        for mod in _imports(path):
            parts = mod.split(".")
            if mod in ALLOWED.get(package, set()):
                continue
            if parts[0] == "pbx_core" and len(parts) > 1:
                assert parts[1] not in FORBIDDEN[package], f"{path.relative_to(ROOT)} imports {mod}"


def _feature_packages() -> list[Path]:
    return sorted(p for p in (PKG / "features").iterdir() if (p / "__init__.py").exists())


def test_there_are_features_to_check() -> None:
    assert len(_feature_packages()) >= 5  # echo, dnd, callwaiting, forward, ringgroup


@pytest.mark.parametrize("feature", _feature_packages(), ids=lambda p: p.name)
def test_a_feature_uses_only_the_platform(feature: Path) -> None:
    own = f"pbx_core.features.{feature.name}"
    for path in sorted(feature.rglob("*.py")):
        for mod in _imports(path):
            if not mod.startswith("pbx_core"):
                continue
            ok = mod in FEATURE_SHARED or mod == own or mod.startswith(own + ".")
            assert ok, f"{path.relative_to(ROOT)} imports {mod}"


COMPOSITION_ROOTS = {PKG / "app.py", PKG / "cli.py"}


def test_only_the_composition_roots_name_the_features() -> None:
    """The registry lists the features; app.py hands it to the engine, and app.py and
    cli.py (`pbx db`, the console) join their tables and settings to the store's;
    nothing else imports it (the core asks the features it is given)."""
    for path in PKG.rglob("*.py"):
        if path in COMPOSITION_ROOTS or path.parent.name == "features":
            continue
        mods = _imports(path)
        assert "pbx_core.features.registry" not in mods, f"{path} imports the registry"
        for mod in mods:
            parts = mod.split(".")
            if parts[:2] == ["pbx_core", "features"] and len(parts) > 2:
                assert mod in FEATURE_SHARED or path.is_relative_to(PKG / "features"), (
                    f"{path.relative_to(ROOT)} imports the feature {mod}"
                )


def test_nothing_imports_app() -> None:
    for path in PKG.rglob("*.py"):
        if path.name in ("app.py", "cli.py"):
            continue
        assert "pbx_core.app" not in _imports(path), f"{path} imports pbx_core.app"


def test_sip_core_loads_without_io_at_runtime() -> None:
    code = (
        "import sys, pkgutil, importlib, pbx_core.sip as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module('pbx_core.sip.' + m.name)\n"
        "print(' '.join(sorted(n for n in ('asyncio','socket','selectors') if n in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"sans-IO core pulled in: {out.stdout}"
