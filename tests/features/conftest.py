"""Fixtures of the feature tests: an office (tests/harness/office.py) per test.

The rule tests hear the harness's beeps, never the prompts an image build left in
output/assets (paths.asset falls back to them): a spoken prompt lasts seconds and moved
the key presses of the prompted forward test, so its outcome depended on whether
`./build.sh image` had run before. As tests/conftest.start_pbx does for `pbx run`,
PBX_ASSETS names an empty directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import Office, offices


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path)


@pytest.fixture(autouse=True)
def no_built_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBX_ASSETS", str(tmp_path / "assets"))
