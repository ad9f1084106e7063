"""The last callers live in RAM for the one engine of a daemon; the tests build an
office each, in one process: each starts with none remembered."""

from __future__ import annotations

import pytest

from pbx_core.features.blocking import LAST_CALLERS


@pytest.fixture(autouse=True)
def no_last_callers() -> None:
    LAST_CALLERS.clear()
