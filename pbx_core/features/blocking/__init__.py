"""Call blocking and the last caller (FreePBX's blacklist and Call Trace codes):
`*30` + number blocks a number for the dialling extension (prompted when nothing
follows), `*31` + number unblocks it, `*32` blocks the extension's last caller; the
installer's `pbx_blacklist` table blocks numbers, prefixes or anonymous callers for
every extension or one; the toggle `block_anonymous` refuses withheld numbers per
extension. A blocked caller gets busy (486, no forward on busy) or an announcement
then hang-up. `*69` says the last caller's number and offers 1 to call it back, with
the dialling extension's call class (Session.bridge routes it as that extension
dials).

Two features share this package because both need the last caller, which lives in
RAM (`rules.LastCallers`): `blocking` (first in the registry: a blocked caller is
refused before DND, call waiting or a forward looks at the call) and `lastcaller`
(last: its `before_ring` is asked only when no feature refused or forwarded the call,
so it remembers calls that really ring the extension). See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Reject,
    Session,
    Why,
)
from pbx_core.features.blocking import rules
from pbx_core.features.blocking.rules import (
    BLACKLIST,
    MAX_NUMBER,
    SETTINGS,
    LastCallers,
    valid_number,
)
from pbx_core.features.prompts import confirm

# The last caller of each extension, shared by both features of this package. RAM
# only, for the one engine of a daemon process (tests clear it between offices).
LAST_CALLERS = LastCallers()


def digits(number: str) -> list[str]:
    """The prompts that say a number digit by digit."""
    names = {"*": "digit-star", "#": "digit-pound"}
    return [names.get(c, f"digit-{c}") for c in number if c in names or c.isdigit()]


async def _announce_blocked(session: Session) -> None:
    """A blocked caller's announcement: keys pressed meanwhile do nothing."""
    await session.play("blocked")
    await session.wait(0.5)
    session.hangup()


def _prompted(ctx: Context, extension: str, adding: bool) -> App:
    async def app(session: Session) -> None:
        await session.play("blocking-enter" if adding else "blocking-remove-enter")
        number = await session.collect(MAX_NUMBER, first_timeout=8.0, inter_timeout=4.0)
        if session.hung_up:
            return
        await session.play(*_change(ctx, extension, number, adding))
        await session.wait(0.5)
        session.hangup()

    return app


def _change(ctx: Context, extension: str, number: str, adding: bool) -> list[str]:
    """Add or remove `number`; the prompts that say what happened."""
    if not valid_number(number):
        return ["not-available"]
    if not adding:
        if rules.remove(ctx, extension, number):
            return ["blocking-removed", *digits(number)]
        return ["blocking-not-listed"]
    refused = rules.add(ctx, extension, number)
    if refused == "full":
        return ["blocking-full"]
    return ["blocking-added", *digits(number)]


class Blocking(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.code == "*32":
            if dial.arg:
                return Reject(404, "nothing follows *32")
            last = LAST_CALLERS.get(dial.extension)
            if not last:
                return Answer(confirm("blocking-no-caller"), "blocking")
            return Answer(confirm(*_change(ctx, dial.extension, last, True)), "blocking")
        adding = dial.code == "*30"
        if not dial.arg:
            return Answer(_prompted(ctx, dial.extension, adding), "blocking")
        if not valid_number(dial.arg):
            return Reject(484, "not a number to block")
        return Answer(confirm(*_change(ctx, dial.extension, dial.arg, adding)), "blocking")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        how = rules.treatment(ctx, call, extension)
        if how is None:
            return None
        if how == "announce":
            return Answer(_announce_blocked, "blocked")
        return Reject(486, "caller blocked")

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        # The busy treatment reaches here as "busy": no forward on busy (asked after
        # this feature) may hand a blocked caller to a mobile or a voicemail.
        if rules.treatment(ctx, call, extension) is not None:
            return Reject(486, "caller blocked")
        return None

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        return None if value is None or isinstance(value, bool) else "on or off"

    def status(self, ctx: Context) -> dict[str, Any]:
        lists = ctx.state_keys("list:")
        return {"lists": len(lists), "blacklist": len(ctx.rows("pbx_blacklist"))}


def _trace(number: str | None) -> App:
    async def app(session: Session) -> None:
        if not number:
            await session.play("lastcaller-none" if number is None else "lastcaller-withheld")
            await session.wait(0.5)
            session.hangup()
            return
        if not valid_number(number):  # a name or a SIP user: said, not called back
            await session.play("lastcaller-number", *digits(number))
            await session.wait(0.5)
            session.hangup()
            return
        for _ in range(2):  # the announcement, once repeated
            key = await session.play(
                "lastcaller-number", *digits(number), "lastcaller-callback", interruptible=True
            )
            if key is None:
                key = await session.collect(1, first_timeout=5.0) or None
            if key == "1" or session.hung_up:
                break
        if key != "1" or session.hung_up:
            await session.play("goodbye")
            session.hangup()
            return
        # The dial plan as this extension dials it: its call class, no way around it.
        if await session.bridge(number) == 200:
            return
        await session.play("not-available")
        await session.wait(0.5)
        session.hangup()

    return app


class LastCaller(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return Reject(404, "nothing follows *69")
        return Answer(_trace(LAST_CALLERS.get(dial.extension)), "lastcaller")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        # Asked last: no feature refused or forwarded the call, the extension rings.
        LAST_CALLERS.remember(extension, "" if rules.withheld(call) else call.caller_number.strip())
        return None

    def status(self, ctx: Context) -> dict[str, Any]:
        return {"remembered": len(LAST_CALLERS)}


FEATURE = Blocking(
    name="blocking",
    codes={
        "*30": "block the number after the code (or prompted) for this extension",
        "*31": "unblock the number after the code (or prompted)",
        "*32": "block this extension's last caller",
    },
    toggles={"block_anonymous": None},
    tables=(BLACKLIST,),
    settings=SETTINGS,
)

LAST_CALLER = LastCaller(
    name="lastcaller",
    codes={"*69": "say the last caller's number; 1 calls it back"},
)
