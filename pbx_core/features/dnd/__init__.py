"""Do not disturb: `*78` on, `*79` off, `*76` toggles (FreePBX's codes). While on,
calls to the extension are refused as busy (486), so forward-on-busy applies. The
state survives restarts; the extension's `dnd` column is its initial value. A BLF key
on `*76` + extension shows it (the `dialog` lamp, as FreePBX's hint). See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Lamp,
    Reject,
)
from pbx_core.features.prompts import confirm

_ON, _OFF, _TOGGLE = "*78", "*79", "*76"


def is_on(ctx: Context, extension: str) -> bool:
    return bool(ctx.toggle(extension, "dnd"))


class DoNotDisturb(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return Reject(404, "nothing follows the do-not-disturb codes")
        if dial.code == _TOGGLE:
            on = not is_on(ctx, dial.extension)
        else:
            on = dial.code == _ON
        ctx.set_toggle(dial.extension, "dnd", on)
        return Answer(confirm("dnd-on" if on else "dnd-off"), "dnd")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        if is_on(ctx, extension):
            return Reject(486, "do not disturb")
        return None

    def lamp(self, ctx: Context, resource: str) -> Lamp | None:
        """A BLF key on `*76` + extension (FreePBX's DND hint): lit while that
        extension's do not disturb is on (the core notifies on every toggle set)."""
        if not resource.startswith(_TOGGLE) or ctx.extension(resource[len(_TOGGLE) :]) is None:
            return None
        return Lamp(is_on(ctx, resource[len(_TOGGLE) :]))

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        # None (empty on the console): the built-in default, off
        return None if value is None or isinstance(value, bool) else "on or off"


FEATURE = DoNotDisturb(
    name="dnd",
    codes={_ON: "do not disturb on", _OFF: "do not disturb off", _TOGGLE: "toggle"},
    toggles={"dnd": "dnd"},
)
