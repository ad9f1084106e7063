"""pbx_core/tz.py: POSIX TZ strings parsed and applied without system data, checked
against hand-computed change instants and against the machine's zoneinfo files."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core import tz
from tests.fuzzing import fuzz_settings

CET = "CET-1CEST,M3.5.0,M10.5.0/3"
US_EAST = "EST5EDT,M3.2.0,M11.1.0"
ZONEINFO = Path("/usr/share/zoneinfo")


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


def test_central_europe_changes_on_the_last_sundays_at_one_utc() -> None:
    z = tz.zone(CET)
    spring, autumn = utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)
    assert z.utcoffset(spring - 1) == 3600 and z.abbreviation(spring - 1) == "CET"
    assert z.utcoffset(spring) == 7200 and z.abbreviation(spring) == "CEST"
    assert z.local(spring - 1) == dt.datetime(2026, 3, 29, 1, 59, 59)
    assert z.local(spring) == dt.datetime(2026, 3, 29, 3, 0)
    assert z.utcoffset(autumn - 1) == 7200
    assert z.utcoffset(autumn) == 3600
    assert z.local(autumn - 1) == dt.datetime(2026, 10, 25, 2, 59, 59)
    assert z.local(autumn) == dt.datetime(2026, 10, 25, 2, 0)


def test_us_eastern_changes_on_the_second_and_first_sundays() -> None:
    z = tz.zone(US_EAST)
    spring, autumn = utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)
    assert z.local(spring - 1) == dt.datetime(2026, 3, 8, 1, 59, 59)
    assert z.local(spring) == dt.datetime(2026, 3, 8, 3, 0)
    assert z.local(autumn - 1) == dt.datetime(2026, 11, 1, 1, 59, 59)
    assert z.local(autumn) == dt.datetime(2026, 11, 1, 1, 0)
    assert z.aware(autumn).isoformat() == "2026-11-01T01:00:00-05:00"


def test_southern_summer_spans_the_new_year() -> None:
    z = tz.zone("AEST-10AEDT,M10.1.0,M4.1.0/3")
    assert z.utcoffset(utc(2026, 1, 15)) == 11 * 3600
    assert z.utcoffset(utc(2026, 7, 15)) == 10 * 3600
    assert z.utcoffset(utc(2026, 12, 15)) == 11 * 3600


def test_julian_and_zero_based_days_and_negative_dst() -> None:
    # J60 is 1 March in every year; 59 (zero-based) is 29 February in a leap year.
    j = tz.zone("AAA0BBB,J60/0,J300/0")
    assert j.utcoffset(utc(2028, 2, 29, 23)) == 0 and j.utcoffset(utc(2028, 3, 1, 0)) == 3600
    n = tz.zone("AAA0BBB,59/0,300/0")
    assert n.utcoffset(utc(2028, 2, 28, 23)) == 0 and n.utcoffset(utc(2028, 2, 29, 0)) == 3600
    dublin = tz.zone("Europe/Dublin")  # IST in summer is the standard time, GMT "daylight"
    assert dublin.utcoffset(utc(2026, 7, 1)) == 3600 and dublin.utcoffset(utc(2026, 1, 1)) == 0


def test_defaults_dst_offset_and_rules_like_glibc() -> None:
    z = tz.zone("EST5EDT")
    assert (z.std_off, z.dst_off) == (-5 * 3600, -4 * 3600)
    assert z.start == tz.Rule("M", 3, 2, 0) and z.end == tz.Rule("M", 11, 1, 0)
    assert tz.zone("IST-5:30").std_off == 5 * 3600 + 1800
    assert tz.zone("<+0545>-5:45").std == "+0545"
    assert tz.zone("").text == "UTC0" and tz.zone("utc") is tz.UTC


def test_all_year_daylight_time_rfc8536() -> None:
    z = tz.zone("EST5EDT,0/0,J365/25")
    for month in range(1, 13):
        assert z.utcoffset(utc(2026, month, 1, 12)) == -4 * 3600


def test_to_utc_takes_the_earlier_of_a_repeated_hour_and_skips_the_missing_one() -> None:
    z = tz.zone(CET)
    assert z.to_utc(dt.datetime(2026, 10, 25, 2, 30)) == utc(2026, 10, 25, 0, 30)
    assert z.to_utc(dt.datetime(2026, 3, 29, 2, 30)) == utc(2026, 3, 29, 1, 30)
    assert z.to_utc(dt.datetime(2026, 6, 1, 12)) == utc(2026, 6, 1, 10)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("CET", "expected the offset"),
        ("CE-1", "standard time name"),
        ("CET-25", "out of range"),
        ("CET-1:60", "out of range"),
        ("CET-1CEST,M13.5.0,M10.5.0", "month 1-12"),
        ("CET-1CEST,M3.6.0,M10.5.0", "week 1-5"),
        ("CET-1CEST,M3.5.7,M10.5.0", "weekday 0-6"),
        ("CET-1CEST,J0,J100", "1-365"),
        ("CET-1CEST,366,100", "0-365"),
        ("CET-1CEST,M3.5.0", "change back"),
        ("CET-1CEST,M3.5.0/200,M10.5.0", "out of range"),
        ("CET-1CEST,M3.5.0,M10.5.0/3x", "unexpected text"),
        ("CET-1CEST;M3.5.0", "expected ','"),
        ("Europe/Atlantis", "built-in list"),
        (":Mars/Olympus", "built-in list"),
        ("CET-1\x00", "printable"),
        ("X" * 200, "longer than"),
    ],
)
def test_bad_zones_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(tz.ZoneError, match=says):
        tz.zone(text)


def test_the_built_in_names_agree_with_the_zoneinfo_files() -> None:
    """Each name's POSIX string is its zoneinfo file's footer, and the offsets agree
    with Python's zoneinfo over 2024-2040 (the rules in force now; this machine's tzdata)."""
    assert ZONEINFO.is_dir(), "this test needs tzdata (/usr/share/zoneinfo)"
    rng = random.Random(13)
    for name, posix in tz.NAMES.items():
        footer = (ZONEINFO / name).read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
        assert footer == posix, name
        ours, theirs = tz.zone(name), zoneinfo.ZoneInfo(name)
        for _ in range(400):
            t = rng.randint(int(utc(2024, 1, 1)), int(utc(2040, 1, 1)))
            want = dt.datetime.fromtimestamp(t, theirs).utcoffset()
            assert want is not None
            assert ours.utcoffset(t) == int(want.total_seconds()), (name, t)


_names = st.text(st.sampled_from("ABCDEFGHIJ"), min_size=3, max_size=5)
_offsets = st.builds(
    lambda s, h, m: f"{s}{h}" + (f":{m:02d}" if m else ""),
    st.sampled_from(["", "+", "-"]),
    st.integers(0, 24),
    st.integers(0, 59),
)
_rules = st.one_of(
    st.builds(
        lambda m, w, d: f"M{m}.{w}.{d}", st.integers(1, 12), st.integers(1, 5), st.integers(0, 6)
    ),
    st.builds(lambda n: f"J{n}", st.integers(1, 365)),
    st.builds(str, st.integers(0, 365)),
)
_times = st.one_of(st.just(""), st.builds(lambda h: f"/{h}", st.integers(-167, 167)))
_valid = st.builds(
    lambda a, o, b, o2, r1, t1, r2, t2: f"{a}{o}{b}{o2},{r1}{t1},{r2}{t2}",
    _names, _offsets, _names, st.one_of(st.just(""), _offsets), _rules, _times, _rules, _times,
)  # fmt: skip


@pytest.mark.fuzz
@fuzz_settings(300)
@given(st.one_of(st.text(max_size=60), _valid, _valid.map(lambda s: s[: len(s) // 2])),
       st.integers(tz.MIN_TIME - 10**9, tz.MAX_TIME + 10**9))  # fmt: skip
def test_any_text_is_a_zone_or_a_zone_error(text: str, t: int) -> None:
    try:
        z = tz.zone(text)
    except tz.ZoneError as exc:
        assert str(exc)
        return
    clamped = min(max(t, tz.MIN_TIME), tz.MAX_TIME)
    local = z.local(t)
    assert (local - dt.datetime(1970, 1, 1)).total_seconds() == clamped + z.utcoffset(t)
    assert z.utcoffset(t) in (z.std_off, z.dst_off)
    z.to_utc(local)


@pytest.mark.fuzz
@fuzz_settings(200)
@given(_valid)
def test_generated_posix_strings_parse(text: str) -> None:
    assert tz.zone(text).text == text
