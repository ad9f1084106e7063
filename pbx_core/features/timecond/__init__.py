"""Time conditions and night service: the destination type `timecond` (target: a
condition's name) goes to the condition's `match` destination while its time group
matches the box's local time (setting `timezone`), else to its `nomatch` one; `*28` +
the condition's `code` toggles a temporary override from a phone (FreePBX's). See
README.md.

The override, as FreePBX's time condition feature code: dialling it sends calls to
the destination the schedule does NOT choose now ("temporary matched/unmatched"),
until the schedule's next change (the time group's answer changes), then the schedule
rules again. Dialled while an override is in force, it ends it at once (back to the
schedule). The override is kept in the feature's state namespace on /data
(`override/<name>`), so it survives restarts and reloads.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Destination,
    Dial,
    Feature,
    Goto,
    Reject,
    Spec,
    Zone,
    ZoneError,
    destination,
    integer,
    pbx_table,
    text,
    zone,
)
from pbx_core.features.prompts import confirm
from pbx_core.features.timecond import rules

log = logging.getLogger("pbx.features.timecond")

CODE = "*28"
GROUP_TABLE = "pbx_time_group"
CONDITION_TABLE = "pbx_time_condition"
MAX_GROUP_ROWS = 1024  # rows read from the time group table
MAX_CONDITIONS = 256  # rows read from the time condition table
_KEY = "override/"


def _checker(parse: Callable[[str], object]) -> Callable[[object], str | None]:
    """A column check for `pbx db check`: the parser's message, or None."""

    def check(value: object) -> str | None:
        try:
            parse(str(value))
        except rules.SpecError as exc:
            return str(exc)
        return None

    return check


def _field(name: str, doc: str, parse: Callable[[str], object]) -> Spec:
    return text(name, doc, default="*", check=_checker(parse))


TIME_GROUP = pbx_table(
    GROUP_TABLE,
    "Time groups: each row is a span of time (GotoIfTime's times,weekdays,mdays,months, "
    "plus years); the rows of one name together make the group, which matches when "
    "any of them does. Holidays are rows naming their dates.",
    text("name", "the group's name (time conditions name it)", need=True),
    _field(
        "times",
        "HH:MM-HH:MM (start included, end not; over midnight when the end is earlier; "
        "HHMM-HHMM too, as dbtext escapes ':'), or * (all day)",
        rules.parse_times,
    ),
    _field("weekdays", "mon-fri, sat,sun, fri-mon … or *", rules.parse_weekdays),
    _field("mdays", "days of the month: 1-15, 25 … or *", rules.parse_mdays),
    _field("months", "jan-mar, dec, 1-12 … or *", rules.parse_months),
    _field("years", "2026, 2026-2027 … or * (every year)", rules.parse_years),
    text("description", "free text: a note (which holiday)", null=True),
    max_rows=MAX_GROUP_ROWS,
)

TIME_CONDITION = pbx_table(
    CONDITION_TABLE,
    "Time conditions: the destination `timecond` + a name goes to `match` while the "
    "time group matches the local time (setting timezone), else to `nomatch`; `*28` + "
    "`code` toggles a temporary override from a phone.",
    text("name", "unique name: the destination timecond + this name", need=True),
    text("time_group", "the pbx_time_group name it checks", need=True, refs=(GROUP_TABLE, "name")),
    *destination("match", "where calls go while the group matches"),
    *destination("nomatch", "where calls go otherwise"),
    integer(
        "code",
        "*28 + this number (0-99) toggles the override from a phone; NULL: no code",
        null=True,
        lo=0,
        hi=99,
    ),
    key=("name",),
    max_rows=MAX_CONDITIONS,
    targets="timecond",
)


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    group: str
    match: Destination
    nomatch: Destination
    code: int | None


@dataclass(frozen=True, slots=True)
class Config:
    """The tables, parsed: groups by name (rows) and conditions by name; what could
    not be parsed is left out with one log line (`pbx db check` refuses it first)."""

    groups: Mapping[str, tuple[rules.Row, ...]]
    conditions: Mapping[str, Condition]


def _dest(kind: Any, target: Any) -> Destination:
    return Destination(str(kind), None if target in (None, "") else str(target))


def parse_config(
    group_rows: tuple[Mapping[str, Any], ...], condition_rows: tuple[Mapping[str, Any], ...]
) -> tuple[Config, list[str]]:
    """The tables' rows parsed, and a message for each row left out."""
    problems: list[str] = []
    groups: dict[str, list[rules.Row]] = {}
    for i, row in enumerate(group_rows[:MAX_GROUP_ROWS], 1):
        name = str(row.get("name") or "")
        try:
            parsed = rules.parse_row(
                *(str(row.get(f) or "*") for f in ("times", "weekdays", "mdays", "months", "years"))
            )
        except rules.SpecError as exc:
            problems.append(f"{GROUP_TABLE} row {i} ({name}): {exc}")
            continue
        rows = groups.setdefault(name, [])
        if len(rows) >= rules.MAX_ROWS:
            problems.append(f"{GROUP_TABLE}: group {name} has more than {rules.MAX_ROWS} rows")
            continue
        rows.append(parsed)
    conditions: dict[str, Condition] = {}
    codes: set[int] = set()
    for row in condition_rows[:MAX_CONDITIONS]:
        name = str(row.get("name") or "")
        raw = row.get("code")
        code = None if raw is None else int(raw)
        if code is not None and code in codes:
            problems.append(f"{CONDITION_TABLE}: code {code} of {name} is another's: no code")
            code = None
        if code is not None:
            codes.add(code)
        group = str(row.get("time_group") or "")
        if group not in groups:
            problems.append(f"{CONDITION_TABLE}: {name} names no time group {group!r}")
        conditions[name] = Condition(
            name,
            group,
            _dest(row.get("match_type"), row.get("match")),
            _dest(row.get("nomatch_type"), row.get("nomatch")),
            code,
        )
    return Config({k: tuple(v) for k, v in groups.items()}, conditions), problems


class _Cache:
    """The parsed tables and zone, kept while the configuration's rows and the
    setting are the same objects (a reload hands new ones)."""

    def __init__(self) -> None:
        self.key: tuple[object, object] | None = None
        self.config = Config({}, {})
        self.zone_text: str | None = None
        self.zone: Zone = zone("")


_cache = _Cache()


def config(ctx: Context) -> Config:
    groups, conditions = ctx.rows(GROUP_TABLE), ctx.rows(CONDITION_TABLE)
    key = (groups, conditions)
    if _cache.key is None or _cache.key[0] is not groups or _cache.key[1] is not conditions:
        _cache.config, problems = parse_config(groups, conditions)
        _cache.key = key
        for p in problems[:20]:
            log.warning("time conditions: %s", p)
    return _cache.config


def local_zone(ctx: Context) -> Zone:
    text_ = str(ctx.setting("timezone") or "")
    if text_ != _cache.zone_text:
        try:
            _cache.zone = zone(text_)
        except ZoneError as exc:  # the judge refuses it first; never a traceback here
            log.warning("setting timezone: %s (UTC instead)", exc)
            _cache.zone = zone("")
        _cache.zone_text = text_
    return _cache.zone


def scheduled(cfg: Config, cond: Condition, local: dt.datetime) -> bool:
    return rules.matches(cfg.groups.get(cond.group, ()), local)


def override(ctx: Context, cond: Condition, now: float) -> bool | None:
    """The override in force for `cond` at Unix time `now` (True: matched, False:
    unmatched), None: the schedule rules."""
    kept = ctx.state_get(_KEY + cond.name)
    if not isinstance(kept, dict) or not isinstance(kept.get("force"), bool):
        return None
    until = kept.get("until")
    if isinstance(until, int | float) and now >= until:
        return None  # the schedule changed since: it rules again
    return bool(kept["force"])


def matched(ctx: Context, cfg: Config, cond: Condition) -> tuple[bool, bool | None]:
    """Whether the condition takes its `match` destination now, and the override."""
    now = ctx.wall_time()
    forced = override(ctx, cond, now)
    if forced is not None:
        return forced, forced
    return scheduled(cfg, cond, local_zone(ctx).local(now)), None


def toggle(ctx: Context, cfg: Config, cond: Condition) -> bool | None:
    """FreePBX's toggle: flip what the condition does now; an override in force is
    ended instead. Returns the new override (None: the schedule again)."""
    now = ctx.wall_time()
    key = _KEY + cond.name
    if override(ctx, cond, now) is not None:
        ctx.state_set(key, None)
        return None
    z = local_zone(ctx)
    local = z.local(now)
    rows = cfg.groups.get(cond.group, ())
    force = not rules.matches(rows, local)
    change = rules.next_change(rows, local)
    until = None if change is None else z.to_utc(change)
    ctx.state_set(key, {"force": force, "until": until, "set": round(now, 3)})
    return force


class TimeConditions(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        cfg = config(ctx)
        cond = cfg.conditions.get(dest.target or "")
        if cond is None:
            return Reject(404, f"no time condition {dest.target}")
        is_matched, _ = matched(ctx, cfg, cond)
        return Goto(cond.match if is_matched else cond.nomatch)

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        arg = dial.arg
        if not (arg.isascii() and arg.isdigit()) or len(arg) > 2:
            return Reject(404, "*28 takes a time condition's code (0-99)")
        cfg = config(ctx)
        cond = next((c for c in cfg.conditions.values() if c.code == int(arg)), None)
        if cond is None:
            return Reject(404, f"no time condition with code {int(arg)}")
        forced = toggle(ctx, cfg, cond)
        log.info("time condition %s: %s by %s", cond.name, _said(forced), dial.extension)
        prompt = {True: "timecond-matched", False: "timecond-unmatched", None: "timecond-auto"}
        return Answer(confirm(prompt[forced]), "timecond")

    def status(self, ctx: Context) -> dict[str, Any]:
        cfg = config(ctx)
        out: dict[str, Any] = {}
        for name, cond in list(cfg.conditions.items())[:MAX_CONDITIONS]:
            is_matched, forced = matched(ctx, cfg, cond)
            out[name] = {"matched": is_matched, "override": _said(forced)}
        return {"timezone": local_zone(ctx).text, "conditions": out} if out else {}


def _said(forced: bool | None) -> str:
    return {True: "matched", False: "unmatched", None: "schedule"}[forced]


FEATURE = TimeConditions(
    name="timecond",
    codes={CODE: "toggle a time condition's override (*28 + its code)"},
    destination_types=("timecond",),
    tables=(TIME_GROUP, TIME_CONDITION),
)
