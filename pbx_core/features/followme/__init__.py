"""Follow-me / find-me (FreePBX's): a call to an extension with a follow-me list rings
the extension alone for `prering` seconds, then the list (with the extension) all at
once or one number after another; an outside number's phone must press 1 to take the
call (`confirm`), so a mobile's voicemail never does. `*21` switches it on and off
from the phone. See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Hunt,
    Step,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.prompts import confirm

MAX_NUMBERS = 8  # numbers in one list
MAX_NUMBER = 32  # digits of one


def _numbers(value: object) -> list[str]:
    return [n.strip() for n in str(value or "").split(",") if n.strip()]


def _check_numbers(value: object) -> str | None:
    numbers = _numbers(value)
    if not numbers:
        return "at least one number"
    if len(numbers) > MAX_NUMBERS:
        return f"at most {MAX_NUMBERS} numbers"
    bad = [n for n in numbers if len(n) > MAX_NUMBER or not all(c in "0123456789+*#" for c in n)]
    return f"not a number: {bad[0]}" if bad else None


TABLE = pbx_table(
    "pbx_followme",
    "Follow-me lists (feature followme): a call to `extension` rings it alone for "
    "`prering` seconds, then the numbers (and the extension) as `strategy` says.",
    text("extension", "the extension whose calls follow", need=True),
    text(
        "numbers",
        "comma-separated numbers, dialled as the extension would dial them (its call class)",
        need=True,
        check=_check_numbers,
    ),
    text(
        "strategy",
        "ringall: the extension and every number together after the "
        "pre-ring; hunt: one number after another",
        default="ringall",
        choices=("ringall", "hunt"),
    ),
    integer(
        "prering", "seconds the extension rings alone first (0: none)", default=10, lo=0, hi=120
    ),
    integer("ring_time", "seconds each further step rings", default=20, lo=5, hi=300),
    integer(
        "confirm",
        "1: an outside number's phone must press 1 to take the call",
        default=1,
        lo=0,
        hi=1,
    ),
    integer("enabled", "initial state of the *21 toggle: 1 on, 0 off", default=1, lo=0, hi=1),
    key=("extension",),
    max_rows=1000,
)


class FollowMe(Feature):
    def _row(self, ctx: Context, extension: str) -> dict[str, Any] | None:
        for row in ctx.rows("pbx_followme"):
            if str(row.get("extension")) == extension:
                return dict(row)
        return None

    def _on(self, ctx: Context, extension: str, row: dict[str, Any]) -> bool:
        toggle = ctx.toggle(extension, "followme")
        return bool(row.get("enabled")) if toggle is None else bool(toggle)

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return None
        row = self._row(ctx, dial.extension)
        if row is None:
            return Answer(confirm("not-available"), "followme")
        on = not self._on(ctx, dial.extension, row)
        ctx.set_toggle(dial.extension, "followme", on)
        return Answer(confirm("followme-on" if on else "followme-off"), "followme")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        row = self._row(ctx, extension)
        if row is None or not self._on(ctx, extension, row):
            return None
        if extension in call.diverted_by:
            return None  # a forward back to it: ring it plainly
        numbers = tuple(_numbers(row.get("numbers")))[:MAX_NUMBERS]
        confirm_outside = bool(row.get("confirm"))
        ring = float(row.get("ring_time") or 20)
        steps: list[Step] = []
        prering = float(row.get("prering") or 0)
        if prering > 0:
            steps.append(Step((extension,), prering))
        if row.get("strategy") == "hunt":
            steps.extend(
                Step((), ring, numbers=(n,), by=extension, confirm=confirm_outside) for n in numbers
            )
        else:
            steps.append(
                Step((extension,), ring, numbers=numbers, by=extension, confirm=confirm_outside)
            )
        return Hunt(tuple(steps), status=480)

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        return None if isinstance(value, bool) or value is None else "on or off"


FEATURE = FollowMe(
    name="followme",
    codes={"*21": "follow-me on/off"},
    toggles={"followme": None},
    tables=(TABLE,),
)
