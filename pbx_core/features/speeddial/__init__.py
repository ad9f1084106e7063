"""Speed dial (FreePBX's codes): `*0NN` dials entry NN, `*75NN` + number sets a
personal one from the phone (prompted for what is missing). An entry is looked up in
the extension's own list set from the phone (the feature's state), then the core's
`pbx_speed_dial` table (the extension's row, then the row for everyone). The number
is placed with `Redirect`: the engine routes it as if the extension had dialled it,
its call class included, so a speed dial is never a way around the toll-fraud guard.
See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    Context,
    Decision,
    Dial,
    Feature,
    Redirect,
    Reject,
    Session,
)
from pbx_core.features.prompts import confirm

DIAL = "*0"
SET = "*75"
LOCATION = 2  # digits of a personal entry's location (00..99: at most 100 entries)
MAX_CODE = 3  # digits of a table's code (pbx_speed_dial: 1 to 3)
MAX_NUMBER = 24  # characters of a personal entry's number (E.164 is 15; room for a prefix)
CLEAR = "*"  # `*75NN*`: remove personal entry NN


def valid_number(number: str) -> bool:
    return 0 < len(number) <= MAX_NUMBER and all(c in "0123456789*#+" for c in number)


def _digits(text: str) -> list[str]:
    names = {"*": "digit-star", "#": "digit-pound"}
    return [names.get(c, f"digit-{c}") for c in text if c in names or c.isdigit()]


def personal(ctx: Context, extension: str) -> dict[str, str]:
    """An extension's own list (location -> number), as the state keeps it."""
    kept = ctx.state_get(extension)
    if not isinstance(kept, dict):
        return {}
    return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, str)}


def lookup(ctx: Context, extension: str, code: str) -> str | None:
    """Entry `code` for `extension`: its own list, then the table's rows."""
    own = personal(ctx, extension).get(code)
    if own is not None:
        return own
    return ctx.speed_dial(extension, code)


def _store(ctx: Context, extension: str, location: str, number: str) -> str | None:
    """Set (or, with CLEAR, remove) personal entry `location`: None, else why not."""
    if len(location) != LOCATION or not location.isdigit():
        return f"a location is {LOCATION} digits"
    entries = personal(ctx, extension)
    if number == CLEAR:
        entries.pop(location, None)
    else:
        if not valid_number(number):
            return "not a number"
        if not ctx.may_dial(number, extension):
            return "not allowed for this extension"
        entries[location] = number
    try:
        ctx.state_set(extension, dict(sorted(entries.items())) or None)
    except ValueError:  # the namespace is full (1000 extensions with lists)
        return "no room for more speed dials"
    return None


def _prompted(ctx: Context, extension: str, location: str) -> App:
    """`*75` or `*75NN` alone: ask for what is missing, then set the entry."""

    async def app(session: Session) -> None:
        where = location
        if not where:
            await session.play("speeddial-enter-location")
            where = await session.collect(LOCATION, first_timeout=8.0, inter_timeout=4.0)
        number = ""
        if len(where) == LOCATION:
            await session.play("speeddial-enter-number")
            number = await session.collect(MAX_NUMBER, first_timeout=8.0, inter_timeout=4.0)
        if session.hung_up:
            return
        refused = _store(ctx, extension, where, number) if number else "nothing dialled"
        if refused is not None:
            await session.play("not-available")
        elif number == CLEAR:
            await session.play("feature-off")
        else:
            await session.play("speeddial-set", *_digits(where), *_digits(number))
        await session.wait(0.5)
        session.hangup()

    return app


class SpeedDial(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.code == DIAL:
            code = dial.arg
            if not code or len(code) > MAX_CODE or not code.isdigit():
                return Reject(484, f"a speed dial is {DIAL} and 1 to {MAX_CODE} digits")
            number = lookup(ctx, dial.extension, code)
            if number is None:
                return Reject(404, f"no speed dial {code}")
            return Redirect(number)
        location, number = dial.arg[:LOCATION], dial.arg[LOCATION:]
        if not dial.arg:
            return Answer(_prompted(ctx, dial.extension, ""), "speeddial")
        if len(location) < LOCATION or not location.isdigit():
            return Reject(484, f"{SET} is followed by a {LOCATION}-digit location")
        if not number:
            return Answer(_prompted(ctx, dial.extension, location), "speeddial")
        refused = _store(ctx, dial.extension, location, number)
        if refused is not None:
            return Reject(403, f"speed dial refused: {refused}")
        if number == CLEAR:
            return Answer(confirm("feature-off"), "speeddial")
        return Answer(confirm("speeddial-set", *_digits(location), *_digits(number)), "speeddial")

    def status(self, ctx: Context) -> dict[str, Any]:
        lists = ctx.state_keys()
        return {"personal_lists": len(lists)} if lists else {}


FEATURE = SpeedDial(
    name="speeddial",
    codes={
        DIAL: "speed dial: *0 and the entry (the extension's own, else everyone's)",
        SET: "set a personal speed dial: *75, 2-digit location, number (or prompted)",
    },
)
