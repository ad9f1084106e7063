"""DISA (Direct Inward System Access): a number (or a DID) that answers, asks for a
PIN and then gives dial tone; the number dialled is placed with the DISA's own call
class (`Session.bridge(number, call_class=...)`: no feature codes). See README.md.

A wrong PIN counts as a failed login (`ctx.failed_auth`): an extension's call against
its source address, a trunk's call against `cid:<trunk>:<caller ID>`, never the
provider's address. A banned caller is refused (403) before anything is answered.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Mapping
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
    integer,
    pbx_table,
    text,
)

MIN_PIN = 4  # digits: `pbx db check` refuses a shorter PIN
MAX_PIN = 16
CALL_CLASSES = ("internal", "local", "national", "international")
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
DIALLED = re.compile(r"[0-9*#+]{1,20}")
PIN_TRIES = 8  # a call's PIN tries can never exceed this, whatever the row says
DIAL_TRIES = 8


def _pin(value: object) -> str | None:
    pin = str(value)
    if not pin.isdigit() or not pin.isascii() or not MIN_PIN <= len(pin) <= MAX_PIN:
        return f"a PIN is {MIN_PIN} to {MAX_PIN} digits (0-9)"
    return None


def _name(value: object) -> str | None:
    return None if NAME.fullmatch(str(value)) else "letters, digits, _ and - (at most 32)"


DISA_TABLE = pbx_table(
    "pbx_disa",
    "DISA: a number or DID that asks for a PIN, then places the number dialled with "
    "its own call class.",
    integer("id", "row id", auto=True),
    text(
        "name", "the DISA's name (a DID's destination `disa`, target NAME)", need=True, check=_name
    ),
    text(
        "number",
        "internal number extensions dial to reach it (none: only as a DID's destination)",
        null=True,
        dials="disa",
    ),
    text("pin", f"the PIN, {MIN_PIN} to {MAX_PIN} digits; required", need=True, check=_pin),
    text(
        "call_class",
        "the class calls placed through it get (internal < local < national < international)",
        default="internal",
        choices=CALL_CLASSES,
    ),
    integer("max_digits", "digits a number dialled may have", default=15, lo=1, hi=20),
    integer("pin_attempts", "PIN tries per call", default=3, lo=1, hi=5),
    integer("dial_attempts", "numbers a call may try after the PIN", default=3, lo=1, hi=5),
    integer(
        "first_timeout", "seconds to wait for the first key of an entry", default=10, lo=2, hi=30
    ),
    integer("digit_timeout", "seconds to wait for each further key", default=5, lo=1, hi=15),
    integer(
        "max_seconds",
        "seconds a caller may spend in the DISA (PIN, dial tone, prompts) before the "
        "PBX hangs up; ringing a number does not count",
        default=120,
        lo=20,
        hi=600,
    ),
    integer("enabled", "0 = the DISA refuses calls (404)", default=1, **BOOL),
    text("description", "free text", null=True),
    key=("name",),
    max_rows=100,
)


def caller_key(call: CallInfo) -> str:
    """Who a wrong PIN counts against: an extension's own call by its source
    address (as a failed login); anything else by `cid:` + the caller label
    (`trunk:caller-id` for a trunk's call), which is never an address."""
    return call.source if call.source else f"cid:{call.caller}"


class Disa(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        row = next((r for r in ctx.rows("pbx_disa") if r["name"] == dest.target), None)
        if row is None or not row["enabled"]:
            return Reject(404, f"no DISA {dest.target}")
        key = caller_key(call)
        if ctx.banned(key):
            return Reject(403, f"DISA {dest.target}: {key} is banned after wrong PINs")
        return Answer(_app(ctx, dict(row), key), "disa")

    def status(self, ctx: Context) -> dict[str, Any]:
        names = sorted(str(r["name"]) for r in ctx.rows("pbx_disa") if r["enabled"])
        return {"disas": names} if names else {}


def _app(ctx: Context, row: Mapping[str, Any], key: str) -> App:
    async def app(session: Session) -> None:
        await Call(ctx, session, row, key).run()

    return app


class Call:
    """One caller in a DISA: the PIN, then dial tone and the number, bounded in tries
    and (outside the bridge's ringing) in time: at `max_seconds` the PBX hangs up."""

    def __init__(self, ctx: Context, session: Session, row: Mapping[str, Any], key: str) -> None:
        self.ctx, self.session, self.key = ctx, session, key
        self.name = str(row["name"])
        self.pin = str(row["pin"])
        self.call_class = str(row["call_class"])
        self.max_digits = min(int(row["max_digits"]), 20)
        self.pin_attempts = min(int(row["pin_attempts"]), PIN_TRIES)
        self.dial_attempts = min(int(row["dial_attempts"]), DIAL_TRIES)
        self.first = float(row["first_timeout"])
        self.inter = float(row["digit_timeout"])
        self.budget = float(row["max_seconds"])
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.armed_at = 0.0

    def _arm(self) -> None:
        self.timer = self.loop.call_later(max(0.0, self.budget), self.session.hangup)
        self.armed_at = self.loop.time()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.budget -= self.loop.time() - self.armed_at

    async def run(self) -> None:
        self._arm()
        try:
            if await self._login() and await self._dial():
                return  # bridged: the call goes on without us
            if not self.session.hung_up:
                await self.session.play("goodbye")
                self.session.hangup()
        finally:
            self._disarm()

    async def _login(self) -> bool:
        s = self.session
        for _ in range(self.pin_attempts):
            await s.play("disa-enter-pin")
            entry = await s.collect(MAX_PIN, self.first, self.inter, "#")
            if s.hung_up:
                return False  # an entry cut short counts for nothing
            if entry and hmac.compare_digest(entry.encode(), self.pin.encode()):
                return True
            if entry:  # nothing entered (a timeout) is no guess
                banned = self.ctx.failed_auth(self.key)
                if banned or self.ctx.banned(self.key):
                    return False
            await s.play("vm-login-incorrect")
        return False

    async def _dial(self) -> bool:
        """Dial tone until the first key, the number, the bridge; True once bridged."""
        s = self.session
        for _ in range(self.dial_attempts):
            first = await s.play("tone:dial", interruptible=True)
            if s.hung_up:
                return False
            number = "" if first in (None, "#") else str(first)
            if number and self.max_digits > 1:
                number += await s.collect(self.max_digits - 1, self.inter, self.inter, "#")
            if s.hung_up:
                return False
            if DIALLED.fullmatch(number):
                self._disarm()  # ringing is bounded by the core's ring timeouts
                status = await s.bridge(number, self.call_class)
                if status == 200:
                    return True
                if s.hung_up:
                    return False
                self._arm()
            await s.play("not-available")
        return False


FEATURE = Disa(name="disa", destination_types=("disa",), tables=(DISA_TABLE,))
