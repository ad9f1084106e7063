"""Time conditions (features/timecond + the Goto of pbx/routing.py) on the harness: a
DID and a ring group's failover routed to a time condition reach its day or night
destination by the box's local time (setting timezone) at fake wall-clock times,
across a DST change and on holidays (a holiday condition chained before the office
hours one); `*28` + code overrides until the schedule's next change, survives a
restart, and dialled again returns to the schedule; a loop of conditions ends with
480."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.api import Answer, CallInfo, Dial, Reject
from pbx_core.features.registry import FEATURES
from pbx_core.pbx.routing import MAX_GOTOS
from tests.features.dnd.test_dnd import dial_code
from tests.fuzzing import fuzz_settings
from tests.harness.office import PROVIDER_TRUNK, Office, Phone, groups, offices

CET = "CET-1CEST,M3.5.0,M10.5.0/3"
DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null)"
)
GROUP_HEADER = "name(string) times(string) weekdays(string) mdays(string) months(string)"
TIME_GROUPS = [
    GROUP_HEADER,
    "hours:0800-1730:mon-fri:*:*",
    "holidays:*:*:25-26:dec",
    "holidays:*:*:1:jan",
]
CONDITION_HEADER = (
    "name(string) time_group(string) match_type(string) match(string,null) "
    "nomatch_type(string) nomatch(string,null) code(int,null)"
)
CONDITIONS = [
    CONDITION_HEADER,
    "office:hours:extension:101:extension:102:1",  # day: reception; night: the guard
    "holiday:holidays:extension:103:timecond:office:2",
    "loop:hours:timecond:loop:timecond:loop:",
]
TABLES = {
    "pbx_trunk": PROVIDER_TRUNK,
    "pbx_settings": ["name(string) value(string,null)", f"timezone:{CET}"],
    "pbx_time_group": TIME_GROUPS,
    "pbx_time_condition": CONDITIONS,
    "pbx_did": [
        DID_HEADER,
        "1:5550100:provider:timecond:holiday:main number",
        "2:5550199:provider:timecond:loop:a loop",
    ],
    "pbx_ring_group": groups("600:ringall:103:10:timecond:office"),
}


class WallClock:
    """The office's wall clock: a date the test sets, moving on with the fake loop."""

    def __init__(self, office: Office) -> None:
        self.office = office
        self.set(dt.datetime(2026, 12, 7, 9, tzinfo=dt.UTC))

    def set(self, when: dt.datetime) -> None:
        self.base = when.timestamp() - self.office.loop.time()
        self.attach()

    def attach(self) -> None:  # a restarted engine has new facts
        self.office.engine.features.facts.wall = lambda: self.base + self.office.loop.time()


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables=TABLES)


@pytest.fixture
def clock(office: Office) -> WallClock:
    return WallClock(office)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def who_rings(office: Office, phones: list[Phone], number: str = "5550100") -> str:
    """The provider calls `number`: which extension rings (or the final status)."""
    provider = office.provider()
    before = [len(p.incoming) for p in phones]
    call = provider.call(number, auth=False)
    rung = [p.number for p, n in zip(phones, before, strict=True) if len(p.incoming) > n]
    if call.status is not None and call.status >= 300:
        return str(call.status)
    call.cancel()
    office.advance(1)
    assert office.left_behind() == []
    return ",".join(rung)


@pytest.fixture
def phones(office: Office) -> list[Phone]:
    return [office.phone(n, mode="ring") for n in ("101", "102", "103")]


def test_a_did_reaches_the_day_or_night_destination_by_local_time(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    clock.set(utc(2026, 12, 7, 6, 59))  # Monday 07:59 CET
    assert who_rings(office, phones) == "102"
    clock.set(utc(2026, 12, 7, 7, 0))  # 08:00 CET: open
    assert who_rings(office, phones) == "101"
    clock.set(utc(2026, 12, 7, 16, 29))  # 17:29
    assert who_rings(office, phones) == "101"
    office.advance(60)  # 17:30: closed
    assert who_rings(office, phones) == "102"
    clock.set(utc(2026, 12, 12, 10))  # Saturday 11:00
    assert who_rings(office, phones) == "102"


def test_opening_moves_in_utc_with_the_dst_change(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    clock.set(utc(2026, 3, 23, 6, 30))  # Monday before: 07:30 CET, closed
    assert who_rings(office, phones) == "102"
    clock.set(utc(2026, 3, 30, 6, 30))  # Monday after: 08:30 CEST, open
    assert who_rings(office, phones) == "101"
    clock.set(utc(2026, 10, 26, 6, 30))  # Monday after the autumn change: 07:30 CET
    assert who_rings(office, phones) == "102"


def test_holidays_go_first_then_the_office_hours(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    clock.set(utc(2026, 12, 25, 10))  # a Friday, Christmas: the holiday destination
    assert who_rings(office, phones) == "103"
    clock.set(utc(2026, 12, 24, 22, 59))  # 23:59 on the 24th: office hours' night
    assert who_rings(office, phones) == "102"
    clock.set(utc(2026, 12, 28, 10))  # Monday after: open
    assert who_rings(office, phones) == "101"


def test_a_ring_groups_failover_to_a_time_condition(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    caller = office.phone("100")
    clock.set(utc(2026, 12, 7, 20))  # Monday 21:00: night
    call = caller.call("600")
    assert [len(p.incoming) for p in phones] == [0, 0, 1]
    office.advance(10.05)  # 600 rings 103 for 10 s, then its failover: timecond office
    assert [len(p.incoming) for p in phones] == [0, 1, 1]
    call.cancel()
    office.advance(1)
    assert office.left_behind() == []


def test_star28_overrides_until_the_next_change_and_survives_a_restart(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    clock.set(utc(2026, 12, 11, 15))  # Friday 16:00: open
    dial_code(office.phone("100"), "*281")  # reception leaves early: night now
    assert who_rings(office, phones) == "102"
    office.restart()
    clock.attach()
    phones = [office.phone(n, mode="ring") for n in ("101", "102", "103")]
    assert who_rings(office, phones) == "102"  # kept on /data
    clock.set(utc(2026, 12, 11, 16, 35))  # 17:35: the schedule's night anyway
    assert who_rings(office, phones) == "102"
    clock.set(utc(2026, 12, 14, 7, 5))  # Monday 08:05: the override ended at 17:30
    assert who_rings(office, phones) == "101"


def test_star28_again_returns_to_the_schedule_and_night_can_be_forced_to_day(
    office: Office, clock: WallClock, phones: list[Phone]
) -> None:
    ctx = office.engine.features.context(next(f for f in FEATURES if f.name == "timecond"))
    clock.set(utc(2026, 12, 12, 10))  # Saturday: night
    dial_code(office.phone("100"), "*281")  # forced to day until Monday 08:00
    assert who_rings(office, phones) == "101"
    kept = ctx.state_get("override/office")
    assert kept["force"] is True
    assert kept["until"] == utc(2026, 12, 14, 7).timestamp()  # Monday 08:00 CET
    dial_code(office.phone("100"), "*281")  # again: back to the schedule
    assert ctx.state_get("override/office") is None
    assert who_rings(office, phones) == "102"


@pytest.mark.parametrize("code", ["*289", "*28", "*28x1", "*28123"])
def test_star28_with_no_such_code_is_refused(office: Office, code: str) -> None:
    assert office.phone("100").call(code).status == 404


def test_a_loop_of_conditions_ends_with_480_and_says_so(
    office: Office,
    clock: WallClock,
    phones: list[Phone],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pbx.routing")
    assert who_rings(office, phones, "5550199") == "480"
    assert f"more than {MAX_GOTOS} destinations in a row (a loop?)" in caplog.text
    assert not any(p.incoming for p in phones)


def test_status_shows_each_condition(office: Office, clock: WallClock) -> None:
    clock.set(utc(2026, 12, 7, 10))
    got = office.engine.features.status()["timecond"]
    assert got["timezone"] == CET
    assert got["conditions"]["office"] == {"matched": True, "override": "schedule"}
    assert got["conditions"]["holiday"] == {"matched": False, "override": "schedule"}


class FakeContext:
    """Just enough of a Context for the dial hook: the harness's tables, no state."""

    def __init__(self) -> None:
        self.kept: dict[str, object] = {}

    def rows(self, table: str) -> tuple[dict[str, object], ...]:
        header, *lines = TABLES[table]
        names = [c.split("(")[0] for c in header.split()]
        return tuple(
            {n: (v or None) for n, v in zip(names, line.split(":"), strict=False)} for line in lines
        )

    def setting(self, name: str) -> object:
        return CET if name == "timezone" else None

    def wall_time(self) -> float:
        return utc(2026, 12, 7, 10).timestamp()

    def state_get(self, key: str) -> object:
        return self.kept.get(key)

    def state_set(self, key: str, value: object) -> None:
        self.kept[key] = value


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.one_of(st.text(max_size=40), st.sampled_from(["²", "٣", "1 ", "-1", "+1"])))
def test_any_star28_argument_is_answered_or_refused(arg: str) -> None:
    feature = next(f for f in FEATURES if f.name == "timecond")
    call = CallInfo("100@pbx.local", "100", "internal", "*28" + arg, True)
    got = feature.dial(FakeContext(), Dial(call, "100@pbx.local", "100", "*28", arg))  # type: ignore[arg-type]
    assert isinstance(got, Answer | Reject)
    if isinstance(got, Answer):
        assert arg in ("1", "2", "01", "02")
