"""Time groups (features/timecond/rules.py) on local times, and in POSIX zones on Unix
times: across midnight, across the DST changes of both directions in central Europe
and the US east, holidays; when a group's answer next changes; the parser never
raises anything but its own clear error."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core import tz
from pbx_core.features.timecond import rules
from tests.fuzzing import fuzz_settings

CET = tz.zone("CET-1CEST,M3.5.0,M10.5.0/3")
US_EAST = tz.zone("EST5EDT,M3.2.0,M11.1.0")
HOURS = (rules.parse_spec("08:00-17:30,mon-fri,*,*"),)
HOLIDAYS = (
    rules.parse_spec("*,*,25-26,dec"),
    rules.parse_spec("*,*,1,jan"),
    rules.parse_spec("*,*,6,apr,2026"),  # Easter Monday 2026 only
)


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args)  # type: ignore[misc]  # local, naive


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


def test_office_hours_start_included_end_excluded() -> None:
    # 2026-12-07 is a Monday
    assert not rules.matches(HOURS, at(2026, 12, 7, 7, 59))
    assert rules.matches(HOURS, at(2026, 12, 7, 8, 0))
    assert rules.matches(HOURS, at(2026, 12, 7, 17, 29, 59))
    assert not rules.matches(HOURS, at(2026, 12, 7, 17, 30))
    assert not rules.matches(HOURS, at(2026, 12, 12, 10))  # Saturday


def test_a_range_across_midnight_tests_each_moments_own_weekday() -> None:
    night = (rules.parse_spec("22:00-06:00,fri,*,*"),)
    assert rules.matches(night, at(2026, 12, 11, 23, 0))  # Friday night
    assert rules.matches(night, at(2026, 12, 11, 5, 59))  # Friday early morning
    assert not rules.matches(night, at(2026, 12, 12, 2, 0))  # Saturday 02:00, as Asterisk
    assert not rules.matches(night, at(2026, 12, 11, 6, 0))
    every_night = (rules.parse_spec("2200-0600,*,*,*"),)  # HHMM: no ':' for dbtext
    assert rules.matches(every_night, at(2026, 12, 12, 0, 0))
    assert rules.matches(every_night, at(2026, 12, 12, 23, 59))
    assert not rules.matches(every_night, at(2026, 12, 12, 12, 0))


def test_wrapping_weekdays_days_and_months() -> None:
    weekend = (rules.parse_spec("*,fri-mon,*,*"),)
    assert [rules.matches(weekend, at(2026, 12, d)) for d in range(7, 14)] == [
        True, False, False, False, True, True, True,
    ]  # fmt: skip
    turn = (rules.parse_spec("*,*,30-2,nov-feb"),)
    assert rules.matches(turn, at(2026, 12, 31)) and rules.matches(turn, at(2027, 1, 2))
    assert not rules.matches(turn, at(2026, 12, 3)) and not rules.matches(turn, at(2026, 3, 31))
    lists = (rules.parse_spec("*,mon&wed&fri,*,*"),)
    assert [rules.matches(lists, at(2026, 12, d)) for d in range(7, 10)] == [True, False, True]


def test_holidays_every_year_and_once() -> None:
    assert rules.matches(HOLIDAYS, at(2026, 12, 25, 9))
    assert rules.matches(HOLIDAYS, at(2031, 12, 26, 23, 59))
    assert rules.matches(HOLIDAYS, at(2027, 1, 1))
    assert not rules.matches(HOLIDAYS, at(2026, 12, 24, 23, 59))
    assert rules.matches(HOLIDAYS, at(2026, 4, 6, 12))
    assert not rules.matches(HOLIDAYS, at(2027, 4, 6, 12))  # Easter Monday moves


@pytest.mark.parametrize(
    ("zone", "monday_before", "monday_after", "open_utc_before", "open_utc_after"),
    [
        (CET, (2026, 3, 23), (2026, 3, 30), 7, 6),  # spring: CET+1 then CEST+2
        (CET, (2026, 10, 19), (2026, 10, 26), 6, 7),  # autumn: back
        (US_EAST, (2026, 3, 2), (2026, 3, 9), 13, 12),  # EST-5 then EDT-4
        (US_EAST, (2026, 10, 26), (2026, 11, 2), 12, 13),
    ],
)
def test_opening_follows_local_time_across_the_dst_change(
    zone: tz.Zone,
    monday_before: tuple[int, int, int],
    monday_after: tuple[int, int, int],
    open_utc_before: int,
    open_utc_after: int,
) -> None:
    """08:00 local opens the office at another UTC hour after the change."""
    for day, hour in ((monday_before, open_utc_before), (monday_after, open_utc_after)):
        opening = utc(*day, hour)
        assert not rules.matches(HOURS, zone.local(opening - 60))
        assert rules.matches(HOURS, zone.local(opening))


def test_the_missing_hour_never_matches_and_the_repeated_one_matches_twice() -> None:
    def minutes_matched(zone: tz.Zone, start: float, spec: str = "02:00-03:00,sun,*,*") -> int:
        small_hours = (rules.parse_spec(spec),)
        return sum(rules.matches(small_hours, zone.local(start + 60 * m)) for m in range(6 * 60))

    assert minutes_matched(CET, utc(2026, 3, 28, 23)) == 0  # 02:00-03:00 does not exist
    assert minutes_matched(CET, utc(2026, 10, 24, 23)) == 120  # it happens twice
    assert minutes_matched(CET, utc(2026, 11, 28, 23)) == 60  # an ordinary Sunday
    assert minutes_matched(US_EAST, utc(2026, 3, 8, 4)) == 0
    # the US goes back from 02:00 EDT to 01:00 EST: 01:00-02:00 twice, 02:00-03:00 once
    assert minutes_matched(US_EAST, utc(2026, 11, 1, 4), "01:00-02:00,sun,*,*") == 120
    assert minutes_matched(US_EAST, utc(2026, 11, 1, 4)) == 60


def test_next_change_of_office_hours() -> None:
    assert rules.next_change(HOURS, at(2026, 12, 11, 16, 0)) == at(2026, 12, 11, 17, 30)
    assert rules.next_change(HOURS, at(2026, 12, 11, 18, 0)) == at(2026, 12, 14, 8, 0)
    assert rules.next_change(HOURS, at(2026, 12, 14, 8, 0, 30)) == at(2026, 12, 14, 17, 30)
    night = (rules.parse_spec("22:00-06:00,*,*,*"),)
    assert rules.next_change(night, at(2026, 12, 11, 23, 0)) == at(2026, 12, 12, 6, 0)


def test_next_change_of_holidays_and_groups_that_never_change() -> None:
    assert rules.next_change(HOLIDAYS, at(2026, 12, 25, 10)) == at(2026, 12, 27)
    assert rules.next_change(HOLIDAYS, at(2026, 4, 7)) == at(2026, 12, 25)  # 262 days on
    assert rules.next_change((), at(2026, 1, 1)) is None
    assert rules.next_change((rules.parse_spec("*,*,*,*"),), at(2026, 1, 1)) is None
    once = (rules.parse_spec("*,*,1,jan,2020"),)
    assert rules.next_change(once, at(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("8-17,*,*,*", "a time is HH:MM or HHMM"),
        ("08:00,*,*,*", "a range HH:MM-HH:MM"),
        ("08:60-17:00,*,*,*", "minutes 0-59"),
        ("25:00-26:00,*,*,*", "hours 0-24"),
        ("24:30-01:00,*,*,*", "24:00 is the day's end"),
        ("*,monday,*,*", "'monday' is not one of mon..sun"),
        ("*,1-5,*,*", "'1' is not one of mon..sun"),
        ("*,*,0,*", "0 is not 1-31"),
        ("*,*,32,*", "32 is not 1-31"),
        ("*,*,*,13", "13 is not 1-12"),
        ("*,*,*,janu", "is not one of jan..dec"),
        ("*,*,*,*,1969", "1969 is not 1970-9999"),
        ("*,*,*,*,2027-2026", "runs backwards"),
        ("*,,*,*", "weekdays: empty"),
        ("*,*,*", "times,weekdays,mdays,months[,years]"),
        ("*,*," + "&".join(["1"] * 17) + ",*", "more than 16 items"),
        ("*,mo\x00n,*,*", "only printable ASCII"),
        ("*,*,*," + "j" * 70, "longer than 64"),
    ],
)
def test_bad_specs_say_which_field_and_why(spec: str, says: str) -> None:
    with pytest.raises(rules.SpecError, match=re.escape(says)):
        rules.parse_spec(spec)


_field = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["*", "mon-fri", "08:00-17:30", "2200-0600", "25", "dec", "2026", "1-31"]),
)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.lists(_field, min_size=5, max_size=5))
def test_any_row_parses_or_says_why(fields: list[str]) -> None:
    try:
        rules.parse_row(*fields)
    except rules.SpecError as exc:
        assert str(exc)


_times = st.builds(
    lambda a, b, c, d: f"{a:02d}:{b:02d}-{c:02d}:{d:02d}",
    st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 59),
)  # fmt: skip
_days = st.builds(lambda a, b: f"{rules.WEEKDAYS[a]}-{rules.WEEKDAYS[b]}",
                  st.integers(0, 6), st.integers(0, 6))  # fmt: skip
_mdays = st.builds(lambda a, b: f"{a}-{b}", st.integers(1, 31), st.integers(1, 31))
_months = st.builds(lambda a, b: f"{a}-{b}", st.integers(1, 12), st.integers(1, 12))
_rows = st.lists(
    st.builds(
        rules.parse_row,
        st.one_of(st.just("*"), _times),
        st.one_of(st.just("*"), _days),
        st.one_of(st.just("*"), _mdays),
        st.one_of(st.just("*"), _months),
    ),
    max_size=4,
)
_moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1))


@pytest.mark.fuzz
@fuzz_settings(100)
@given(_rows, _moments)
def test_next_change_is_the_first_minute_that_answers_otherwise(
    rows: list[rules.Row], start: dt.datetime
) -> None:
    change = rules.next_change(rows, start)
    if change is None:
        return
    assert change > start and change.second == 0
    assert rules.matches(rows, change) != rules.matches(rows, start)
    # and nothing changed before it: probe the minute before and a few on the way
    before = change - dt.timedelta(minutes=1)
    if before > start:
        assert rules.matches(rows, before) == rules.matches(rows, start)
