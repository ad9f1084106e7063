"""Session.play(interruptible=True) cancelled by the application's own timer (the warm
line's dial tone: a tone that never ends, raced against `wait`) leaves no reader of
the key queue behind: the next key reaches the application's `collect`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx_core.features.api import Answer, Context, Decision, Dial, Feature, Session
from pbx_core.features.registry import FEATURES
from tests.harness.office import Office, offices

GOT: list[str] = []


@dataclass(frozen=True)
class Race(Feature):
    """*95: dial tone for 1 s (cancelled when no key came), then collect 2 keys."""

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        async def app(session: Session) -> None:
            tone = asyncio.ensure_future(session.play("tone:dial", interruptible=True))
            await session.wait(1.0)
            tone.cancel()
            await asyncio.sleep(0)
            GOT.append(await session.collect(2, first_timeout=5.0, inter_timeout=2.0))
            session.hangup()

        return Answer(app, "race")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    GOT.clear()
    yield from offices(tmp_path, features=(*FEATURES, Race(name="race", codes={"*95": "r"})))


def test_a_cancelled_interruptible_play_leaves_the_keys_to_collect(office: Office) -> None:
    a = office.phone("100")
    call = a.call("*95")
    assert call.status == 200
    office.advance(1.5)  # the tone was cancelled
    call.keys("42")
    office.advance(1)
    assert GOT == ["42"]
    assert office.left_behind() == []
