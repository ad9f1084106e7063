"""The documentation says what is built (issue 12: "the design lives in the
repository ... the code and README point there and to nothing outside the
repository"): every registered feature has its README naming its codes, the top
README's feature table and docs/architecture.md list the registry as it is, and no
file points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbx_core.features.registry import FEATURES

ROOT = Path(__file__).resolve().parent.parent
ARCH = ROOT / "docs" / "architecture.md"
FEATURE_DIR = ROOT / "pbx_core" / "features"
TEXT_SUFFIXES = {".py", ".md", ".txt", ".sh", ".cfg", ".toml", ".xml", ""}
# Pointers to the design notes that live beside the repository, not in it.
OUTSIDE = re.compile(r"\.\./shared|shared/[A-Z-]+\.md|\b(?:DESIGN|STYLE|[A-Z]+-FACTS)\.md\b")


def _tracked_text_files() -> list[Path]:
    out = [ROOT / "README.md", ROOT / "build.sh"]
    for sub in ("pbx_core", "tests", "bench", "firmware", "board", "rootfs_overlay", "docs"):
        out.extend(
            path
            for path in (ROOT / sub).rglob("*")
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts
        )
    return out


def test_nothing_points_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    bad = []
    for path in _tracked_text_files():
        if path.resolve() == this:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_the_readme_points_to_the_architecture_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in readme
    for heading in ("## Layers", "## The dial plan order", "## The feature platform"):
        assert heading in ARCH.read_text(encoding="utf-8")
    assert "## How to add a feature" in ARCH.read_text(encoding="utf-8")


def package_of(feature: object) -> str:
    """The package under pbx_core/features that defines a feature: its name, except
    where one package serves two features (blocking: blocking and lastcaller)."""
    return type(feature).__module__.split(".")[2]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_each_feature_has_a_readme_with_its_codes(feature: object) -> None:
    from pbx_core.features.api import Feature

    assert isinstance(feature, Feature)
    readme = FEATURE_DIR / package_of(feature) / "README.md"
    assert readme.exists(), f"{feature.name} has no README.md"
    text = readme.read_text(encoding="utf-8")
    if package_of(feature) != feature.name:
        assert f"`{feature.name}`" in text, f"{readme.relative_to(ROOT)} does not name it"
    for code in (*feature.codes, *feature.numbers, *feature.call_codes):
        assert f"`{code}" in text, f"{readme.relative_to(ROOT)} does not name {code}"
    for section in ("Tests",):
        assert section in text, f"{readme.relative_to(ROOT)} has no {section} part"
    for toggle in feature.toggles:
        assert toggle in text, f"{readme.relative_to(ROOT)} does not describe toggle {toggle}"


def test_the_top_readme_lists_every_code_and_only_built_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Features") : readme.index("## Using it")]
    built = {code for f in FEATURES for code in (*f.codes, *f.numbers, *f.call_codes)}
    for code in built:
        assert f"`{code}" in table, f"README's feature table lacks {code}"
    listed = set(re.findall(r"`(\*\d+)", table))
    assert listed <= built, f"README lists codes nothing serves: {sorted(listed - built)}"
    for f in FEATURES:
        assert f"features/{package_of(f)}/README.md" in table, f"README's table lacks {f.name}"


def test_the_architecture_page_states_the_registry_order() -> None:
    text = ARCH.read_text(encoding="utf-8")
    order = ", ".join(f.name for f in FEATURES)
    assert f"`{order}`" in text, f"docs/architecture.md should state the registry order {order}"
    listing = (FEATURE_DIR / "README.md").read_text(encoding="utf-8")
    for f in FEATURES:
        assert f"`{f.name}`" in listing, f"features/README.md lacks {f.name}"
