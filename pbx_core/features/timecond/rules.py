"""Time groups: parsing their specs (with clear errors) and matching local times.

A time group is rows, each `times, weekdays, mdays, months, years` as Asterisk's
GotoIfTime writes its first four (`08:00-17:30,mon-fri,*,*`); the group matches a
moment when any of its rows does, and a row when each of its fields does, each
tested on the moment's local time on its own (as Asterisk does: `22:00-06:00` with
`fri` matches Friday 23:00, not Saturday 02:00).

| field | `*` or | examples |
|---|---|---|
| times | `HH:MM-HH:MM` or `HHMM-HHMM` (see below) | `08:00-17:30`, `0800-1730` |
| weekdays | names `mon`..`sun`, ranges wrap | `mon-fri`, `sat,sun`, `fri-mon` |
| mdays | 1-31, ranges wrap | `1-15`, `25`, `28-3` |
| months | names `jan`..`dec` or 1-12, ranges wrap | `dec`, `jun-aug`, `11-2` |
| years | 1970-9999, no wrap | `2026`, `2026-2027` |

Times: the start is included, the end not (`08:00-17:30` ends at 17:29:59); an end
before the start crosses midnight (`22:00-06:00`); `HHMM` because dbtext escapes `:`.
Lists take `,` or `&` (`mon&wed&fri`), at most MAX_ITEMS items. A holiday is a row
naming its date (`*`, `*`, `25`, `dec`, `*`; Easter Monday 2026: `*`, `*`, `6`,
`apr`, `2026`). Pure: local times in, booleans out; `next_change` finds when a
group's answer next changes (the end of a temporary override).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_SPEC = 64  # characters of one field
MAX_ITEMS = 16  # list items of one field
MAX_ROWS = 64  # rows of one group (bounds next_change's work)
HORIZON_DAYS = 400  # next_change looks this far ahead (a yearly holiday is in reach)
_MINUTES = 1440

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class SpecError(ValueError):
    """A time spec this module cannot read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Span:
    """An inclusive range lo..hi of a cyclic (wrap) or plain field."""

    lo: int
    hi: int

    def has(self, v: int) -> bool:
        if self.lo <= self.hi:
            return self.lo <= v <= self.hi
        return v >= self.lo or v <= self.hi  # wraps (fri-mon, 28-3)


@dataclass(frozen=True, slots=True)
class Times:
    """Minutes of the day: start included, end excluded; end < start crosses midnight."""

    start: int
    end: int

    def has(self, minute: int) -> bool:
        if self.start == self.end:
            return True  # 00:00-00:00: the whole day
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a time group; None = `*` (any)."""

    times: Times | None = None
    weekdays: tuple[Span, ...] | None = None  # 0 = Monday
    mdays: tuple[Span, ...] | None = None
    months: tuple[Span, ...] | None = None  # 1 = January
    years: tuple[Span, ...] | None = None

    def day_matches(self, day: dt.date) -> bool:
        return (
            _any(self.weekdays, day.weekday())
            and _any(self.mdays, day.day)
            and _any(self.months, day.month)
            and _any(self.years, day.year)
        )

    def matches(self, local: dt.datetime) -> bool:
        if self.times is not None and not self.times.has(local.hour * 60 + local.minute):
            return False
        return self.day_matches(local.date())


def _any(spans: tuple[Span, ...] | None, v: int) -> bool:
    return spans is None or any(s.has(v) for s in spans)


# ------------------------------------------------------------------ parsing

_TIME = re.compile(r"(\d{1,2}):?(\d{2})")


def _minute(text: str, field: str) -> int:
    m = _TIME.fullmatch(text.strip())
    if m is None:
        raise SpecError(f"{field} {text!r}: a time is HH:MM or HHMM")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24 or (h == 24 and mi):
        raise SpecError(f"{field} {text!r}: hours 0-24, minutes 0-59 (24:00 is the day's end)")
    return (h * 60 + mi) % _MINUTES


def parse_times(text: str) -> Times | None:
    t = _clean(text, "times")
    if t == "*":
        return None
    start, sep, end = t.partition("-")
    if not sep:
        raise SpecError(f"times {text!r}: a range HH:MM-HH:MM (or *)")
    return Times(_minute(start, "times"), _minute(end, "times"))


def _clean(text: str, field: str) -> str:
    if not isinstance(text, str):
        raise SpecError(f"{field}: text expected")
    t = text.strip().lower()
    if not t:
        raise SpecError(f"{field}: empty (write * for any)")
    if len(t) > MAX_SPEC:
        raise SpecError(f"{field}: longer than {MAX_SPEC} characters")
    if not t.isascii() or not t.isprintable():
        raise SpecError(f"{field} {text!r}: only printable ASCII")
    return t


def _spans(
    text: str, field: str, lo: int, hi: int, names: Sequence[str] = (), wrap: bool = True
) -> tuple[Span, ...] | None:
    t = _clean(text, field)
    if t == "*":
        return None
    items = [i.strip() for i in re.split(r"[,&]", t)]
    if len(items) > MAX_ITEMS:
        raise SpecError(f"{field} {text!r}: more than {MAX_ITEMS} items")

    def value(item: str) -> int:
        if item in names:
            return names.index(item) + (0 if lo == 0 else lo)
        if item.isdigit() and len(item) <= 4 and not (names and lo == 0):
            v = int(item)
            if lo <= v <= hi:
                return v
            raise SpecError(f"{field} {text!r}: {item} is not {lo}-{hi}")
        known = f"{names[0]}..{names[-1]}" if names else f"{lo}-{hi}"
        raise SpecError(f"{field} {text!r}: {item!r} is not one of {known}")

    out = []
    for item in items:
        a, sep, b = item.partition("-")
        span = Span(value(a.strip()), value(b.strip())) if sep else Span(value(a), value(a))
        if span.lo > span.hi and not wrap:
            raise SpecError(f"{field} {text!r}: {item} runs backwards")
        out.append(span)
    return tuple(out)


def parse_weekdays(text: str) -> tuple[Span, ...] | None:
    return _spans(text, "weekdays", 0, 6, WEEKDAYS)


def parse_mdays(text: str) -> tuple[Span, ...] | None:
    return _spans(text, "mdays", 1, 31)


def parse_months(text: str) -> tuple[Span, ...] | None:
    return _spans(text, "months", 1, 12, MONTHS)


def parse_years(text: str) -> tuple[Span, ...] | None:
    return _spans(text, "years", 1970, 9999, wrap=False)


def parse_row(times: str, weekdays: str, mdays: str, months: str, years: str = "*") -> Row:
    """One time group row from its five fields; SpecError names the bad one."""
    return Row(
        parse_times(times),
        parse_weekdays(weekdays),
        parse_mdays(mdays),
        parse_months(months),
        parse_years(years),
    )


def parse_spec(text: str) -> Row:
    """A GotoIfTime-style spec in one string, `times,weekdays,mdays,months[,years]`
    with `|` between the fields too (Asterisk's old form)."""
    t = text.strip()
    fields = t.split("|") if "|" in t else t.split(",")
    if not 4 <= len(fields) <= 5:
        raise SpecError(f"time spec {text[:MAX_SPEC]!r}: times,weekdays,mdays,months[,years]")
    return parse_row(*fields)


# ------------------------------------------------------------------ matching


def matches(rows: Sequence[Row], local: dt.datetime) -> bool:
    """Whether a group (its rows) matches the local time `local` (naive)."""
    return any(r.matches(local) for r in rows[:MAX_ROWS])


def next_change(rows: Sequence[Row], start: dt.datetime) -> dt.datetime | None:
    """The first local time after `start` (to the minute) at which `matches` answers
    otherwise than at `start`; None within HORIZON_DAYS. Within a day the answer can
    change only at midnight and at the rows' start and end minutes; a day whose rows
    (by their day fields) are the previous whole day's has that day's answers."""
    rows = rows[:MAX_ROWS]
    state = matches(rows, start)
    first = start.replace(second=0, microsecond=0)
    previous: tuple[int, ...] | None = None
    for d in range(HORIZON_DAYS + 1):
        day = first.date() + dt.timedelta(days=d)
        active = tuple(i for i, r in enumerate(rows) if r.day_matches(day))
        if d >= 2 and active == previous:
            continue
        if d >= 1:
            previous = active  # a whole day scanned
        minutes = {0}
        for i in active:
            times = rows[i].times
            if times is not None:
                minutes.update((times.start, times.end))
        midnight = dt.datetime.combine(day, dt.time())
        for m in sorted(minutes):
            at = midnight + dt.timedelta(minutes=m)
            if at > first and matches(rows, at) != state:
                return at
    return None
