"""Call forward (FreePBX's codes): all `*72`/`*73`, on busy `*90`/`*91`, on no answer
`*52`/`*53`. The target is dialled after the code (`*72105`) or, with nothing after
it, prompted for. The forwarding extension's call class is checked when the forward
is set and again when a call is forwarded (the engine routes a `Forward` as if that
extension dialled it); loops are stopped by the engine. See README.md."""

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
    Forward,
    Reject,
    Session,
    Why,
)
from pbx_core.features.prompts import confirm

MAX_TARGET = 20  # digits of a forward target (E.164 is 15; room for a prefix)

# code -> (toggle, on?)
_CODES = {
    "*72": ("forward_all", True),
    "*73": ("forward_all", False),
    "*90": ("forward_busy", True),
    "*91": ("forward_busy", False),
    "*52": ("forward_noanswer", True),
    "*53": ("forward_noanswer", False),
}


def valid_target(number: str) -> bool:
    return 0 < len(number) <= MAX_TARGET and all(c in "0123456789*#+" for c in number)


def _digits(number: str) -> list[str]:
    names = {"*": "digit-star", "#": "digit-pound"}
    return [names.get(c, f"digit-{c}") for c in number if c in names or c.isdigit()]


def _refused(ctx: Context, extension: str, number: str) -> str | None:
    """Why `extension` may not forward to `number` (None: it may)."""
    if not valid_target(number):
        return "not a number"
    if number == extension:
        return "a forward to yourself"
    if not ctx.may_dial(number, extension):
        return "not allowed for this extension"
    return None


def _set(ctx: Context, extension: str, toggle: str, number: str) -> str | None:
    """Set the forward if the extension may reach `number`: None, else why not."""
    refused = _refused(ctx, extension, number)
    if refused is None:
        ctx.set_toggle(extension, toggle, number)
    return refused


def _prompted(ctx: Context, extension: str, toggle: str) -> App:
    async def app(session: Session) -> None:
        await session.play("forward-enter")
        number = await session.collect(MAX_TARGET, first_timeout=8.0, inter_timeout=4.0)
        refused = _set(ctx, extension, toggle, number) if number else "nothing dialled"
        if refused is None:
            await session.play("forward-set", *_digits(number))
        else:
            await session.play("not-available")
        await session.wait(0.5)
        session.hangup()

    return app


class CallForward(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        toggle, on = _CODES[dial.code]
        if not on:
            if dial.arg:
                return Reject(404, "nothing follows a forward-off code")
            # False, not None: off from the phone outlasts a restart even when the
            # extension's column gives an initial forward (None is "the column's").
            ctx.set_toggle(dial.extension, toggle, False)
            return Answer(confirm("feature-off"), "forward")
        if not dial.arg:
            return Answer(_prompted(ctx, dial.extension, toggle), "forward")
        refused = _set(ctx, dial.extension, toggle, dial.arg)
        if refused is not None:
            return Reject(403, f"forward refused: {refused}")
        return Answer(confirm("forward-set", *_digits(dial.arg)), "forward")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        target = ctx.toggle(extension, "forward_all")
        if isinstance(target, str) and valid_target(target):
            return Forward(target, extension, Why.UNCONDITIONAL)
        return None

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        toggle = "forward_busy" if why is Why.BUSY else "forward_noanswer"
        target = ctx.toggle(extension, toggle)
        if isinstance(target, str) and valid_target(target):
            return Forward(target, extension, why)
        return None

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        if value is None or value is False:
            return None  # back to the table's value / off
        if not isinstance(value, str):
            return "a number, or nothing for off"
        refused = _refused(ctx, extension, value)
        return None if refused is None else f"{value}: {refused}"


FEATURE = CallForward(
    name="forward",
    codes={
        "*72": "forward all calls to the number after the code (or prompted)",
        "*73": "forward all off",
        "*90": "forward on busy to the number after the code (or prompted)",
        "*91": "forward on busy off",
        "*52": "forward on no answer to the number after the code (or prompted)",
        "*53": "forward on no answer off",
    },
    toggles={
        "forward_all": "forward_all",
        "forward_busy": "forward_busy",
        "forward_noanswer": "forward_noanswer",
    },
)
