"""The box's time zone: POSIX TZ strings (and a list of IANA names), with no system data.

The setting `timezone` takes what a Linux `TZ` variable takes, as POSIX (XBD 8.3)
and RFC 8536 (the footer of a TZif file) define it:

    std offset [dst [offset] [,start[/time],end[/time]]]

- `std`, `dst`: 3 to 16 letters (`CET`), or `<...>` with letters, digits, `+`, `-`
  (`<+03>`);
- `offset`: `[+-]hh[:mm[:ss]]`, hours 0-24, WEST of Greenwich is positive (`EST5`,
  `CET-1`); the DST offset defaults to one hour east of the standard one;
- `start`, `end`: `Mm.w.d` (day d, 0 = Sunday, of week w, 5 = the last, of month m),
  `Jn` (day 1-365, 29 February never counted) or `n` (day 0-365, counting it);
- `/time`: local time of the change, `[+-]hh[:mm[:ss]]`, hours -167..167 (RFC 8536),
  default 02:00:00 (start in standard time, end in daylight time);
- a DST name without rules takes glibc's default, `M3.2.0,M11.1.0`.

Examples: `CET-1CEST,M3.5.0,M10.5.0/3` (central Europe), `EST5EDT,M3.2.0,M11.1.0`
(US eastern), `IST-5:30` (India), `<+03>-3`, `UTC0`.

IANA names are accepted from the built-in list `NAMES` only (each maps to its POSIX
string, the last line of its /usr/share/zoneinfo file), never from the machine's
zoneinfo files: the image carries none, and a name accepted on a laptop would make
the device refuse the configuration. Another zone is written as its POSIX string
(`tail -1 /usr/share/zoneinfo/Asia/Kathmandu` prints `<+0545>-5:45`).

Pure: no clock, no files. `zone(text)` parses (ZoneError, a ValueError naming the
problem, on anything else) and the `Zone` converts Unix times to local times.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["NAMES", "UTC", "Rule", "Zone", "ZoneError", "zone"]

MAX_TEXT = 128  # the setting's text (the longest real TZ string is under 50)
_NAME_MAX = 16
_DAY = 86_400
_EPOCH = dt.datetime(1970, 1, 1)  # naive on purpose: local times
# Unix times the conversions accept: years 1900-9998 (datetime's range, with a margin).
MIN_TIME = -2_208_988_800
MAX_TIME = 253_370_764_800


class ZoneError(ValueError):
    """Not a time zone this PBX understands; the message says what is wrong."""


# IANA name -> POSIX TZ (tzdata 2024a; tests/pbx/test_tz.py checks them against the
# machine's zoneinfo files where it has them).
NAMES: dict[str, str] = {
    "UTC": "UTC0",
    "Etc/UTC": "UTC0",
    "GMT": "GMT0",
    "Europe/London": "GMT0BST,M3.5.0/1,M10.5.0",
    "Europe/Dublin": "IST-1GMT0,M10.5.0,M3.5.0/1",
    "Europe/Lisbon": "WET0WEST,M3.5.0/1,M10.5.0",
    **{
        f"Europe/{city}": "CET-1CEST,M3.5.0,M10.5.0/3"
        for city in (
            "Amsterdam",
            "Berlin",
            "Brussels",
            "Budapest",
            "Copenhagen",
            "Madrid",
            "Oslo",
            "Paris",
            "Prague",
            "Rome",
            "Stockholm",
            "Vienna",
            "Warsaw",
            "Zurich",
            "Luxembourg",
            "Belgrade",
            "Zagreb",
            "Ljubljana",
            "Bratislava",
        )
    },
    **{
        f"Europe/{city}": "EET-2EEST,M3.5.0/3,M10.5.0/4"
        for city in (
            "Athens",
            "Bucharest",
            "Helsinki",
            "Kyiv",
            "Riga",
            "Sofia",
            "Tallinn",
            "Vilnius",
        )
    },
    "Europe/Moscow": "MSK-3",
    "Europe/Istanbul": "<+03>-3",
    "America/New_York": "EST5EDT,M3.2.0,M11.1.0",
    "America/Toronto": "EST5EDT,M3.2.0,M11.1.0",
    "America/Chicago": "CST6CDT,M3.2.0,M11.1.0",
    "America/Denver": "MST7MDT,M3.2.0,M11.1.0",
    "America/Phoenix": "MST7",
    "America/Los_Angeles": "PST8PDT,M3.2.0,M11.1.0",
    "America/Vancouver": "PST8PDT,M3.2.0,M11.1.0",
    "America/Anchorage": "AKST9AKDT,M3.2.0,M11.1.0",
    "America/Mexico_City": "CST6",
    "America/Sao_Paulo": "<-03>3",
    "Pacific/Honolulu": "HST10",
    "Asia/Tokyo": "JST-9",
    "Asia/Shanghai": "CST-8",
    "Asia/Hong_Kong": "HKT-8",
    "Asia/Singapore": "<+08>-8",
    "Asia/Kolkata": "IST-5:30",
    "Asia/Dubai": "<+04>-4",
    "Australia/Sydney": "AEST-10AEDT,M10.1.0,M4.1.0/3",
    "Australia/Melbourne": "AEST-10AEDT,M10.1.0,M4.1.0/3",
    "Australia/Brisbane": "AEST-10",
    "Australia/Adelaide": "ACST-9:30ACDT,M10.1.0,M4.1.0/3",
    "Australia/Perth": "AWST-8",
    "Pacific/Auckland": "NZST-12NZDT,M9.5.0,M4.1.0/3",
    "Africa/Johannesburg": "SAST-2",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """When a change happens in a year: `kind` M (month, week, weekday), J (1-365
    without 29 February) or N (0-365), and the local time of day `at` in seconds."""

    kind: str
    month: int = 0
    week: int = 0
    day: int = 0  # weekday for M (0 = Sunday), the day number for J and N
    at: int = 7200

    def date(self, year: int) -> dt.date:
        if self.kind == "J":
            n = self.day + (1 if calendar.isleap(year) and self.day >= 60 else 0)
            return dt.date(year, 1, 1) + dt.timedelta(days=n - 1)
        if self.kind == "N":
            return dt.date(year, 1, 1) + dt.timedelta(days=self.day)  # 365: 1 Jan next
        first = dt.date(year, self.month, 1)
        day = 1 + (self.day - (first.weekday() + 1) % 7) % 7 + (self.week - 1) * 7
        last = calendar.monthrange(year, self.month)[1]
        while day > last:  # week 5: the last such weekday
            day -= 7
        return dt.date(year, self.month, day)

    def utc(self, year: int, utcoff: int) -> int:
        """The change's Unix time in `year`, its local time read with `utcoff`."""
        days = (self.date(year) - _EPOCH.date()).days
        return days * _DAY + self.at - utcoff


@dataclass(frozen=True, slots=True)
class Zone:
    """A time zone: `text` as given, offsets in seconds EAST of UTC (CET: 3600)."""

    text: str
    std: str
    std_off: int
    dst: str | None = None
    dst_off: int = 0
    start: Rule | None = None
    end: Rule | None = None

    def _is_dst(self, t: float) -> bool:
        if self.dst is None or self.start is None or self.end is None:
            return False
        year = (_EPOCH + dt.timedelta(seconds=int(t // 1) + self.std_off)).year
        start = self.start.utc(year, self.std_off)
        end = self.end.utc(year, self.dst_off)
        if start < end:  # the northern hemisphere: summer inside the year
            return start <= t < end
        return not end <= t < start  # the southern: summer across the new year

    def utcoffset(self, t: float) -> int:
        """Seconds east of UTC in force at Unix time `t`."""
        return self.dst_off if self._is_dst(_clamp(t)) else self.std_off

    def abbreviation(self, t: float) -> str:
        return (self.dst or self.std) if self._is_dst(_clamp(t)) else self.std

    def local(self, t: float) -> dt.datetime:
        """The naive local wall-clock time at Unix time `t`."""
        t = _clamp(t)
        return _EPOCH + dt.timedelta(seconds=t + self.utcoffset(t))

    def aware(self, t: float) -> dt.datetime:
        """The local time with its offset (for ISO 8601 with `+02:00`)."""
        t = _clamp(t)
        off = self.utcoffset(t)
        return (_EPOCH + dt.timedelta(seconds=t + off)).replace(
            tzinfo=dt.timezone(dt.timedelta(seconds=off))
        )

    def to_utc(self, local: dt.datetime) -> float:
        """The Unix time of a naive local time: the earlier of two (the hour the
        clocks go back), and for a time that does not exist (the hour they go
        forward) the instant it would be with the offset before the change."""
        naive = (local.replace(tzinfo=None) - _EPOCH).total_seconds()
        before = self.utcoffset(naive - self.std_off - _DAY)
        after = self.utcoffset(naive - self.std_off + _DAY)
        valid = [naive - off for off in {before, after} if self.utcoffset(naive - off) == off]
        return min(valid) if valid else naive - before


def _clamp(t: float) -> float:
    return min(max(t, MIN_TIME), MAX_TIME)


UTC = Zone("UTC0", "UTC", 0)

# ------------------------------------------------------------------ the parser

_QUOTED = re.compile(r"<([A-Za-z0-9+-]{3,16})>")
_ALPHA = re.compile(r"[A-Za-z]{3,16}")
_OFFSET = re.compile(r"([+-]?)(\d{1,3})(?::(\d{1,2})(?::(\d{1,2}))?)?")
_IANA = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)+")
_RULE = re.compile(r"M(\d{1,2})\.(\d)\.(\d)|J(\d{1,3})|(\d{1,3})")


class _Text:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ZoneError:
        at = self.text[self.pos : self.pos + 12] or "the end"
        return ZoneError(f"time zone {self.text!r}: {what} at {at!r}")

    def match(self, rx: re.Pattern[str]) -> re.Match[str] | None:
        m = rx.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def take(self, ch: str) -> bool:
        if self.text.startswith(ch, self.pos):
            self.pos += len(ch)
            return True
        return False


def _name(p: _Text, what: str) -> str:
    m = p.match(_QUOTED) or p.match(_ALPHA)
    if m is None:
        raise p.fail(f"expected the {what} name (3-16 letters, or <+03> quoted)")
    return m.group(1) if m.re is _QUOTED else m.group(0)


def _hms(p: _Text, what: str, max_hours: int) -> int | None:
    m = p.match(_OFFSET)
    if m is None:
        return None
    sign, hh, mm, ss = m.groups()
    hours, minutes, seconds = int(hh), int(mm or 0), int(ss or 0)
    if hours > max_hours or minutes > 59 or seconds > 59:
        p.pos = m.start()
        raise p.fail(f"{what} out of range (hours 0-{max_hours}, minutes and seconds 0-59)")
    value = hours * 3600 + minutes * 60 + seconds
    return -value if sign == "-" else value


def _rule(p: _Text) -> Rule:
    at = p.pos
    m = p.match(_RULE)
    if m is None:
        raise p.fail("expected a change rule (Mm.w.d, Jn or n)")
    month, week, wday, julian, zero = m.groups()
    if month is not None:
        rule = Rule("M", int(month), int(week), int(wday))
        if not (1 <= rule.month <= 12 and 1 <= rule.week <= 5 and 0 <= rule.day <= 6):
            p.pos = at
            raise p.fail("Mm.w.d needs month 1-12, week 1-5, weekday 0-6")
    elif julian is not None:
        rule = Rule("J", day=int(julian))
        if not 1 <= rule.day <= 365:
            p.pos = at
            raise p.fail("Jn needs a day 1-365")
    else:
        rule = Rule("N", day=int(zero))
        if not 0 <= rule.day <= 365:
            p.pos = at
            raise p.fail("a day number is 0-365")
    if p.take("/"):
        t = _hms(p, "change time", 167)
        if t is None:
            raise p.fail("expected a time after /")
        rule = Rule(rule.kind, rule.month, rule.week, rule.day, t)
    return rule


def parse_posix(text: str) -> Zone:
    """A POSIX TZ string (see the module's doc); ZoneError says what is wrong."""
    p = _Text(text)
    std = _name(p, "standard time")
    off = _hms(p, "offset", 24)
    if off is None:
        raise p.fail(f"expected the offset of {std} from UTC, west positive (CET-1, EST5)")
    std_off = -off
    if p.done():
        return Zone(text, std, std_off)
    dst = _name(p, "daylight time")
    dst_west = _hms(p, "offset", 24)
    dst_off = std_off + 3600 if dst_west is None else -dst_west
    start, end = Rule("M", 3, 2, 0), Rule("M", 11, 1, 0)  # glibc's default rules
    if not p.done():
        if not p.take(","):
            raise p.fail("expected ',' and the change rules")
        start = _rule(p)
        if not p.take(","):
            raise p.fail("expected ',' and the rule of the change back")
        end = _rule(p)
    if not p.done():
        raise p.fail("unexpected text")
    return Zone(text, std, std_off, dst, dst_off, start, end)


def zone(text: str) -> Zone:
    """The zone of the setting `timezone`: empty or `UTC` = UTC, a name of `NAMES`,
    else a POSIX TZ string (a leading `:` names a zone of `NAMES`)."""
    if not isinstance(text, str):
        raise ZoneError("a time zone is text")
    raw = text.strip()
    if len(raw) > MAX_TEXT:
        raise ZoneError(f"time zone longer than {MAX_TEXT} characters")
    if not raw or raw.upper() == "UTC":
        return UTC
    name = raw.removeprefix(":")
    if name in NAMES:
        return _with_text(parse_posix(NAMES[name]), raw)
    if _IANA.fullmatch(name) or raw.startswith(":"):
        raise ZoneError(
            f"time zone {raw!r} is not in the built-in list: give its POSIX TZ string "
            "(the last line of its /usr/share/zoneinfo file), e.g. CET-1CEST,M3.5.0,M10.5.0/3"
        )
    if not raw.isascii() or not raw.isprintable():
        raise ZoneError(f"time zone {raw!r}: only printable ASCII")
    return parse_posix(raw)


def _with_text(z: Zone, text: str) -> Zone:
    return Zone(text, z.std, z.std_off, z.dst, z.dst_off, z.start, z.end)
