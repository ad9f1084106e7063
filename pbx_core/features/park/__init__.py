"""Call park (FreePBX's numbers): a call transferred to `70` waits in a parking
slot `71`-`78` with music on hold; dialling the slot retrieves it; after
`park_timeout` seconds it rings the extension that parked it, then `park_operator`.
Dialling `70` yourself (before an attended transfer to it) reserves a slot and
announces it. See README.md."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    Context,
    Decision,
    Dial,
    Feature,
    Lamp,
    Pickup,
    Reject,
    Session,
    Setting,
)

log = logging.getLogger("pbx.features.park")

PARK = "70"
SLOTS = tuple(str(n) for n in range(71, 79))
RESERVE = 60.0  # seconds a slot announced to a parker stays theirs (attended transfer)


def _digits(number: str) -> list[str]:
    return [f"digit-{c}" for c in number if c.isdigit()]


@dataclass
class Parked:
    call_id: str
    parker: str  # extension that parked it
    since: float


@dataclass(frozen=True)
class Park(Feature):
    # In RAM only (never flash): the slots and the slots announced to parkers.
    slots: dict[str, Parked] = field(default_factory=dict)
    reserved: dict[str, tuple[str, float]] = field(default_factory=dict)

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        self._tidy(ctx)
        if dial.code in SLOTS:
            parked = self.slots.get(dial.code)
            if parked is None:
                return Reject(404, f"nothing parked on {dial.code}")
            return Pickup(parked.call_id)
        if dial.call.caller == dial.aor:  # the parker dials 70 itself: announce a slot
            slot = self._free(ctx, dial.extension)
            if slot is None:
                return Reject(480, "every parking slot is taken")
            self.reserved[dial.extension] = (slot, ctx.now() + RESERVE)
            return Answer(_announce(slot), "park")
        # A transfer to 70 (blind, or completing an attended one): park the caller.
        slot = self._free(ctx, dial.extension)
        if slot is None:
            return Reject(480, "every parking slot is taken")
        self.reserved.pop(dial.extension, None)
        log.info("%s parks a call on %s", dial.extension, slot)
        # `##70`: the parker hears the slot before it is released (FreePBX); the CDR's
        # cause names it ("parked on 71 ended"), `pbx status` shows it meanwhile.
        return Answer(
            self._parked(ctx, slot, dial.extension),
            f"parked on {slot}",
            announce=("park-slot", *_digits(slot)),
        )

    def _tidy(self, ctx: Context) -> None:
        now = ctx.now()
        for ext, (_slot, until) in list(self.reserved.items()):
            if until < now:
                del self.reserved[ext]

    def _free(self, ctx: Context, parker: str) -> str | None:
        mine = self.reserved.get(parker)
        if mine is not None and mine[0] not in self.slots:
            return mine[0]
        taken = set(self.slots) | {s for e, (s, _u) in self.reserved.items() if e != parker}
        return next((s for s in SLOTS if s not in taken), None)

    def _parked(self, ctx: Context, slot: str, parker: str) -> App:
        timeout = float(ctx.setting("park_timeout"))
        operator = str(ctx.setting("park_operator") or "")

        async def app(session: Session) -> None:
            self.slots[slot] = Parked(session.call_id, parker, ctx.now())
            ctx.lamp_changed(slot)
            try:
                session.music_on_hold()
                await session.wait(timeout)
                if session.hung_up:
                    return
                self.slots.pop(slot, None)  # ringing back: no longer retrievable
                ctx.lamp_changed(slot)
                for number in (parker, operator):
                    if number and await session.bridge(number) == 200:
                        return
                    if session.hung_up:
                        return
                await session.play("park-nobody")
                session.hangup()
            finally:
                if self.slots.get(slot) is not None and self.slots[slot].call_id == session.call_id:
                    del self.slots[slot]
                    ctx.lamp_changed(slot)

        return app

    def lamp(self, ctx: Context, resource: str) -> Lamp | None:
        """A slot's busy lamp: lit while a call is parked there (retrievable)."""
        if resource not in SLOTS:
            return None
        parked = self.slots.get(resource)
        return Lamp(parked is not None)

    def status(self, ctx: Context) -> dict[str, Any]:
        now = ctx.now()
        return {
            slot: {"parker": p.parker, "seconds": round(now - p.since)}
            for slot, p in sorted(self.slots.items())
        }


def _announce(slot: str) -> App:
    async def app(session: Session) -> None:
        await session.play("park-slot", *_digits(slot))
        await session.wait(RESERVE)  # the parker completes its transfer meanwhile
        session.hangup()

    return app


FEATURE = Park(
    name="park",
    numbers={
        PARK: "park: transfer a call here (dial it first to hear the slot)",
        **{s: f"retrieve the call parked on {s}" for s in SLOTS},
    },
    settings=(
        Setting(
            "park_timeout",
            int,
            45,
            "seconds a parked call waits before it rings the extension that parked it",
            lo=10,
            hi=3600,
        ),
        Setting(
            "park_operator",
            str,
            "",
            "number a parked call rings when its parker does not answer; empty = none "
            "(the caller is told and the call ends)",
        ),
    ),
)
