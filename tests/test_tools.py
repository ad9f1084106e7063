"""The rule for peer tools (tests/conftest.py): a missing SIPp, Kamailio, baresip,
sox … fails the test; only PBX_ALLOW_MISSING_TOOLS=1 outside CI turns that into a skip."""

from __future__ import annotations

import pytest

from tests import conftest
from tests.conftest import TOOLS, need


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(TOOLS, "no-such-tool", (lambda: False, "apt install nothing"))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PBX_ALLOW_MISSING_TOOLS", raising=False)
    return "no-such-tool"


def test_a_missing_tool_fails_by_default(absent: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="no-such-tool is missing"):
        need(absent)


def test_a_developer_may_allow_the_skip(absent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBX_ALLOW_MISSING_TOOLS", "1")
    with pytest.raises(pytest.skip.Exception):
        need(absent)


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_under_ci_a_missing_tool_always_fails(
    absent: str, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("PBX_ALLOW_MISSING_TOOLS", "1")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception):
        need(absent)


def test_a_present_tool_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOOLS, "here", (lambda: True, ""))
    need("here")


def test_sipp_on_a_path_without_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interop helpers go through the same rule (tests/interop/sipp.py)."""
    from tests.interop.sipp import sipp_path

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("PBX_ALLOW_MISSING_TOOLS", raising=False)
    with pytest.raises(pytest.fail.Exception, match="sipp is missing"):
        sipp_path()


def test_the_marker_runs_the_check(absent: str) -> None:
    """`@pytest.mark.tools(...)` fails a test at set-up when a tool is missing."""

    class Item:
        def iter_markers(self, name: str) -> list[pytest.Mark]:
            return [pytest.mark.tools("sipp", absent).mark] if name == "tools" else []

    with pytest.raises(pytest.fail.Exception, match="no-such-tool"):
        conftest.pytest_runtest_setup(Item())  # type: ignore[arg-type]
