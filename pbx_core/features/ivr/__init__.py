"""Auto attendant (IVR): the destination type `ivr` (target: a menu's name) answers,
plays the menu's prompt and sends the caller where the key pressed says
(`pbx_ivr_option`: 0-9 * #, `t` no key in time, `i` a wrong key, once the menu's
`retries` are used up); with `direct_dial` the caller may key an extension's number.
Also the destination type `external` (a number dialled out through the dial plan with
the caller's call class: a trunk's caller has the class `internal`, never more). See
README.md.

Bounds: MAX_HOPS menus per call (a menu naming itself, two naming each other: then
goodbye), MAX_DIRECT digits of a direct dial, MAX_SECONDS a call spends in menus
(prompts and keys, across applications; ringing a destination not counted: the
core bounds it), the tables' row bounds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pbx_core.features.api import (
    BOOL,
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Destination,
    Feature,
    Reject,
    Session,
    destination,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.ivr.prompts import prompt_name, resolve

log = logging.getLogger("pbx.features.ivr")

MENU_TABLE = "pbx_ivr_menu"
OPTION_TABLE = "pbx_ivr_option"
MAX_MENUS = 200
MAX_OPTIONS = MAX_MENUS * 14  # 0-9 * # t i per menu
MAX_HOPS = 10  # menus one call passes through (loops end with goodbye)
MAX_DIRECT = 10  # digits of an extension number keyed in a menu
MAX_SECONDS = 300.0  # a call's time in menus (not ringing), then the PBX hangs up
MAX_TRIES = 11  # prompts one menu plays at most (retries is 0..10)
KEYS = "0123456789*#ti"
NUMBER = re.compile(r"\+?[0-9]{1,32}")
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_CALLS = 4096  # calls whose menu hops are remembered (the oldest forgotten)


def _digit(value: object) -> str | None:
    v = str(value)
    if len(v) == 1 and v in KEYS:
        return None
    return "a digit is one of 0-9, *, #, t (no key in time), i (a wrong key)"


def _name(value: object) -> str | None:
    return None if NAME.fullmatch(str(value)) else "letters, digits, _ and - (at most 32)"


MENU = pbx_table(
    MENU_TABLE,
    "IVR menus (auto attendants): the destination ivr + a name answers, plays the "
    "prompt and follows the key pressed (pbx_ivr_option).",
    integer("id", "row id", auto=True),
    text("name", "unique name: the destination ivr + this name", need=True, check=_name),
    text(
        "number", "internal number extensions dial to reach it; NULL = none", null=True, dials="ivr"
    ),
    text(
        "prompt",
        "the greeting: a prompt name (letters, digits, . _ -); an unknown one plays "
        "'welcome, please enter the extension' and logs a warning",
        need=True,
        check=prompt_name,
    ),
    text(
        "invalid_prompt",
        "played after a wrong key before the greeting again",
        default="invalid-option",
        check=prompt_name,
    ),
    integer("timeout", "seconds to wait for a key after the greeting", default=5, lo=1, hi=60),
    integer(
        "retries",
        "greetings played again after no key (or a wrong key) before the t (or i) key's "
        "destination is taken (none: goodbye)",
        default=3,
        lo=0,
        hi=10,
    ),
    integer(
        "direct_dial",
        "1 = the caller may key an extension's number (digits up to digit_timeout apart)",
        default=0,
        **BOOL,
    ),
    integer(
        "digit_timeout",
        "seconds between the digits of an extension's number (direct_dial)",
        default=3,
        lo=1,
        hi=10,
    ),
    text("description", "free text", null=True),
    key=("name",),
    max_rows=MAX_MENUS,
    targets="ivr",
)

OPTION = pbx_table(
    OPTION_TABLE,
    "Keys of IVR menus: digit 0-9, *, #; t = no key in time, i = a wrong key (taken "
    "once the menu's retries are used up).",
    integer("id", "row id", auto=True),
    text("menu", "the pbx_ivr_menu name", need=True, refs=(MENU_TABLE, "name")),
    text("digit", "0-9, *, #, t or i", need=True, check=_digit),
    *destination("dest", "where the key sends the call"),
    key=("menu", "digit"),
    max_rows=MAX_OPTIONS,
)


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    prompt: str
    invalid_prompt: str
    timeout: float
    retries: int
    direct_dial: bool
    digit_timeout: float
    options: Mapping[str, Destination]


class _Cache:
    """The parsed tables, kept while the configuration hands the same rows."""

    def __init__(self) -> None:
        self.key: tuple[object, object] | None = None
        self.menus: dict[str, Menu] = {}


_cache = _Cache()


def menus(ctx: Context) -> Mapping[str, Menu]:
    menu_rows, option_rows = ctx.rows(MENU_TABLE), ctx.rows(OPTION_TABLE)
    key = (menu_rows, option_rows)
    if _cache.key is not None and _cache.key[0] is menu_rows and _cache.key[1] is option_rows:
        return _cache.menus
    options: dict[str, dict[str, Destination]] = {}
    for row in option_rows[:MAX_OPTIONS]:
        digit = str(row["digit"])
        target = row["dest"]
        dest = Destination(str(row["dest_type"]), None if target in (None, "") else str(target))
        options.setdefault(str(row["menu"]), {})[digit] = dest
    out: dict[str, Menu] = {}
    for row in menu_rows[:MAX_MENUS]:
        name = str(row["name"])
        out[name] = Menu(
            name,
            str(row["prompt"]),
            str(row["invalid_prompt"]),
            float(min(max(int(row["timeout"]), 1), 60)),
            min(max(int(row["retries"]), 0), MAX_TRIES - 1),
            bool(row["direct_dial"]),
            float(min(max(int(row["digit_timeout"]), 1), 10)),
            options.get(name, {}),
        )
    _cache.key, _cache.menus = key, out
    return out


class _Hops:
    """Menus each call has passed through and the seconds it spent in them, across
    applications (a menu's key to a time condition that comes back to a menu starts
    a new application); forgotten when the caller hangs up in a menu, else the
    oldest beyond MAX_CALLS."""

    def __init__(self) -> None:
        self.calls: OrderedDict[str, int] = OrderedDict()
        self.seconds: dict[str, float] = {}

    def add(self, call_id: str) -> int:
        n = self.calls.pop(call_id, 0) + 1
        self.calls[call_id] = n
        while len(self.calls) > MAX_CALLS:
            old, _ = self.calls.popitem(last=False)
            self.seconds.pop(old, None)
        return n

    def spent(self, call_id: str) -> float:
        return self.seconds.get(call_id, 0.0)

    def spend(self, call_id: str, seconds: float) -> None:
        if call_id in self.calls:
            self.seconds[call_id] = self.spent(call_id) + max(0.0, seconds)

    def forget(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        self.seconds.pop(call_id, None)


hops = _Hops()


async def outside(session: Session, call: CallInfo, number: str) -> int:
    """Dial `number` out for the caller: an extension's call with its own class (and
    caller ID), anyone else's with the class the core gives a trunk's caller
    (`internal`: only routes of that class, and emergency numbers)."""
    if not NUMBER.fullmatch(number):
        return 404
    if call.from_extension:
        return await session.bridge(number)
    return await session.bridge(number, call.caller_class)


class Attendant:
    """One caller in the menus, from `start` on."""

    def __init__(self, ctx: Context, session: Session, call: CallInfo, start: str) -> None:
        self.ctx, self.session, self.call, self.name = ctx, session, call, start
        self.loop = asyncio.get_running_loop()
        # The call's time in menus, across applications, is MAX_SECONDS at most.
        self.budget = MAX_SECONDS - hops.spent(session.call_id)
        self.timer: asyncio.TimerHandle | None = None
        self.armed_at = 0.0

    def _arm(self) -> None:
        self.timer = self.loop.call_later(max(0.0, self.budget), self.session.hangup)
        self.armed_at = self.loop.time()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            elapsed = self.loop.time() - self.armed_at
            self.budget -= elapsed
            hops.spend(self.session.call_id, elapsed)  # what a next menu app has left

    async def run(self) -> None:
        self._arm()
        try:
            await self._menus()
        finally:
            self._disarm()
            if self.session.hung_up:  # the call is over: its count goes
                hops.forget(self.session.call_id)

    async def _goodbye(self) -> None:
        s = self.session
        if not s.hung_up:
            await s.play("goodbye")
            s.hangup()

    async def _menus(self) -> None:
        s = self.session
        while not s.hung_up:
            if hops.add(s.call_id) > MAX_HOPS:
                log.warning("call %s: more than %d IVR menus (a loop?)", s.call_id, MAX_HOPS)
                await self._goodbye()
                return
            menu = menus(self.ctx).get(self.name)
            if menu is None:
                log.warning("IVR menu %s is gone (a reload?)", self.name)
                await self._goodbye()
                return
            dest = await self._keys(menu)
            if s.hung_up:
                return
            if dest is None or dest.type == "hangup":
                await self._goodbye()
                return
            if dest.type == "ivr":
                self.name = dest.target or ""
                continue
            self._disarm()  # ringing is bounded by the core's ring timeouts
            if dest.type == "external":
                status = await outside(s, self.call, dest.target or "")
            else:
                status = await s.goto(dest)
            if status == 200 or s.hung_up:
                return
            self._arm()
            log.info("IVR %s: %s %s gave %d", menu.name, dest.type, dest.target, status)
            await s.play("not-available")  # and the same menu again

    async def _keys(self, menu: Menu) -> Destination | None:
        """The greeting and the caller's key: where it sends the call, None for
        goodbye (no t/i key once the retries are used up)."""
        s = self.session
        timeouts = invalids = 0
        greeting = resolve(menu.prompt, "greeting", s)
        extra: tuple[str, ...] = ()
        for _ in range(2 * MAX_TRIES):
            key = await s.play(*extra, *greeting, interruptible=True)
            if s.hung_up:
                return None
            if key is None:
                key = await s.collect(1, menu.timeout, menu.timeout, "")
            if s.hung_up:
                return None
            extra = ()
            if not key:
                timeouts += 1
                if timeouts > menu.retries:
                    return menu.options.get("t")
                continue
            entry = key
            if menu.direct_dial and key.isdigit():
                more = await s.collect(MAX_DIRECT - 1, menu.digit_timeout, menu.digit_timeout, "#")
                if s.hung_up:
                    return None
                entry += more
            if len(entry) == 1 and entry in menu.options and entry not in "ti":
                return menu.options[entry]
            if menu.direct_dial and entry.isdigit() and self.ctx.extension(entry) is not None:
                return Destination("extension", entry)
            invalids += 1
            if invalids > menu.retries:
                return menu.options.get("i")
            extra = resolve(menu.invalid_prompt, "invalid", s)
        return None


def _attendant(ctx: Context, call: CallInfo, name: str) -> App:
    async def app(session: Session) -> None:
        await Attendant(ctx, session, call, name).run()

    return app


def _external(call: CallInfo, number: str) -> App:
    async def app(session: Session) -> None:
        status = await outside(session, call, number)
        if status != 200 and not session.hung_up:
            log.info("external %s for %s: %d", number, call.caller, status)
            await session.play("not-available")
            session.hangup()

    return app


class Ivr(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        if dest.type == "external":
            if not NUMBER.fullmatch(dest.target or ""):
                return Reject(404, f"external {dest.target!r} is not a number")
            return Answer(_external(call, dest.target or ""), "external")
        name = dest.target or ""
        if name not in menus(ctx):
            return Reject(404, f"no IVR menu {name}")
        return Answer(_attendant(ctx, call, name), "ivr")

    def status(self, ctx: Context) -> dict[str, Any]:
        names = sorted(menus(ctx))
        return {"menus": names} if names else {}


FEATURE = Ivr(
    name="ivr",
    destination_types=("ivr", "external"),
    tables=(MENU, OPTION),
)
