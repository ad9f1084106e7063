"""Hotline and warm line (lobby, lift and door phones): every call an extension of
`pbx_hotline` places goes to the row's number, at once (`delay` 0: whatever the
phone dials, except the emergency numbers, which the dial plan routes first), or, on
a warm line (`delay` 1..30), when the phone is lifted (dials `s`, nothing, or the
row's `trigger`): the PBX answers with dial tone and dials the number after `delay`
seconds without a key; keys pressed before then are dialled instead. Either way the
number is placed with the extension's own call class. See README.md."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Feature,
    Redirect,
    Session,
    integer,
    pbx_table,
    text,
)

MAX_NUMBER = 32  # characters of a hotline number or a trigger
MAX_DELAY = 30  # seconds of a warm line's dial tone
MAX_DIALLED = 32  # keys a warm line takes instead of the hotline number
INTER_DIGIT = 4.0  # seconds between keys before what was keyed is dialled
LIFTED = ("", "s")  # what a phone sends when it is lifted with nothing dialled


def _dialable(value: object) -> str | None:
    text_ = str(value)
    if not 0 < len(text_) <= MAX_NUMBER or any(c not in "0123456789*#+" for c in text_):
        return f"expected 1 to {MAX_NUMBER} characters of 0-9 * # +"
    return None


def _trigger(value: object) -> str | None:
    text_ = str(value)
    if not 0 < len(text_) <= MAX_NUMBER or any(not (c.isalnum() or c in "*#+") for c in text_):
        return f"expected 1 to {MAX_NUMBER} letters, digits or * # +"
    return None


HOTLINE = pbx_table(
    "pbx_hotline",
    "Hotlines and warm lines: every call the extension places goes to `number` (the "
    "hotline feature). Emergency numbers are always dialled as they are.",
    integer("id", "row id", auto=True),
    text("extension", "the extension (of the setting `domain`)", need=True),
    text(
        "number",
        "where its calls go, dialled as the extension would dial it",
        need=True,
        check=_dialable,
    ),
    integer(
        "delay",
        "0 = at once, whatever it dials; 1..30 = warm line: seconds of dial tone after "
        "the phone is lifted before the number is dialled (keys pressed first are dialled "
        "instead)",
        default=0,
        lo=0,
        hi=MAX_DELAY,
    ),
    text(
        "trigger",
        "warm line: the number the phone sends when lifted (its auto-dial), besides `s` "
        "and an empty one",
        null=True,
        check=_trigger,
    ),
    key=("extension",),
)


def hotline(ctx: Context, extension: str) -> Mapping[str, Any] | None:
    """The extension's `pbx_hotline` row, None when it has none."""
    return next((r for r in ctx.rows("pbx_hotline") if r["extension"] == extension), None)


async def _first_key(session: Session, delay: float) -> str | None:
    """Dial tone until a key (returned; the tone stops) or `delay` seconds (None; the
    tone goes on until the bridge replaces it with ringback) or the hang-up."""
    tone = asyncio.ensure_future(session.play("tone:dial", interruptible=True))
    timer = asyncio.ensure_future(session.wait(delay))
    try:
        await asyncio.wait({tone, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not tone.done():
            tone.cancel()
    if tone.done() and not tone.cancelled():
        return tone.result()
    return None


def warm_line(number: str, delay: float) -> App:
    """The warm line's application: dial tone, then `number` or what was keyed."""

    async def app(session: Session) -> None:
        first = await _first_key(session, delay)
        if session.hung_up:
            return
        keyed = ""
        if first is not None and first != "#":
            rest = await session.collect(MAX_DIALLED - 1, INTER_DIGIT, INTER_DIGIT)
            if session.hung_up:
                return
            keyed = first + rest
        await session.transfer(keyed or number)

    return app


class Hotline(Feature):
    def outgoing(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        row = hotline(ctx, extension)
        if row is None:
            return None
        number, delay = str(row["number"]), int(row["delay"])
        if delay <= 0:
            return Redirect(number)
        if call.number in LIFTED or call.number == row["trigger"]:
            return Answer(warm_line(number, float(delay)), "hotline")
        return None  # a warm line's phone dialled a number itself: as dialled

    def status(self, ctx: Context) -> dict[str, Any]:
        rows = ctx.rows("pbx_hotline")
        return {"hotlines": len(rows)} if rows else {}


FEATURE = Hotline(name="hotline", tables=(HOTLINE,))
