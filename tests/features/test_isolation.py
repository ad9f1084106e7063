"""A feature's bug disturbs no other call (pbx/features.py): a hook that raises counts
as "not mine" (one warning line), an application that raises ends its own call
cleanly (BYE, media freed, one warning line) while other calls go on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Session,
    Why,
)
from pbx_core.features.registry import FEATURES
from tests.harness.office import Office, offices


class BrokenError(RuntimeError):
    pass


async def _crashing_app(session: Session) -> None:
    await session.wait(2.0)
    raise BrokenError("the application's bug")


class Boom(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg == "1":
            raise BrokenError("the dial hook's bug")
        return Answer(_crashing_app, "boom")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        if extension == "102":
            raise BrokenError("the before_ring hook's bug")
        return None

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        raise BrokenError("the unanswered hook's bug")


BOOM = Boom(name="boom", codes={"*99": "a feature with bugs"})


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, features=(*FEATURES, BOOM))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_application_that_raises_ends_its_own_call_only(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    talking = c.call("101")
    assert talking.status == 200
    echo = c.call("*43")
    assert echo.status == 200
    caplog.clear()
    crash = a.call("*99")
    assert crash.status == 200
    office.advance(3)
    assert [x.call_id for x in a.byes] == [crash.call_id]  # its call ended with a BYE
    assert len(warnings(caplog)) == 1
    assert "boom" in warnings(caplog)[0] and "BrokenError" in warnings(caplog)[0]
    # the other calls are still up
    assert talking.state == "answered" and echo.state == "answered"
    assert b.byes == [] and c.byes == []
    assert office.engine.features.running_apps == 1  # the echo test
    assert len(office.engine.calls.calls) == 2
    talking.hang_up()
    echo.hang_up()
    assert office.left_behind() == []


def test_a_hook_that_raises_counts_as_no_answer_and_the_call_goes_on(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    a, c = office.phone("100"), office.phone("102")
    caplog.clear()
    call = a.call("102")  # Boom.before_ring raises for 102: as if it said nothing
    assert call.status == 200 and len(c.incoming) == 1
    assert len(warnings(caplog)) == 1 and "before_ring" in warnings(caplog)[0]
    call.hang_up()
    caplog.clear()
    assert a.call("*991").status == 404  # the dial hook raised: refused, not routed
    assert len(warnings(caplog)) == 1 and "dial" in warnings(caplog)[0]
    assert office.left_behind() == []


def test_an_unanswered_hook_that_raises_still_ends_the_call_with_its_status(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    a = office.phone("100")
    office.phone("101", mode="busy")
    caplog.clear()
    call = a.call("101")
    assert call.status == 486
    assert [m for m in warnings(caplog) if "unanswered" in m] != []
    assert office.left_behind() == []
