"""Call waiting: `*70` on, `*71` off (FreePBX's codes). With it off, a second call to
an extension already in a call is refused as busy (486), which triggers
forward-on-busy. The extension's `call_waiting` column is its initial value. See
README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Reject,
)
from pbx_core.features.prompts import confirm

_ON, _OFF = "*70", "*71"


class CallWaiting(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return Reject(404, "nothing follows the call-waiting codes")
        on = dial.code == _ON
        ctx.set_toggle(dial.extension, "call_waiting", on)
        return Answer(confirm("feature-on" if on else "feature-off"), "callwaiting")

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        waiting = ctx.toggle(extension, "call_waiting")
        if waiting is not None and not waiting and ctx.in_call(extension):
            return Reject(486, "busy (call waiting off)")
        return None

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        # None (empty on the console): the built-in default, on
        return None if value is None or isinstance(value, bool) else "on or off"


FEATURE = CallWaiting(
    name="callwaiting",
    codes={_ON: "call waiting on", _OFF: "call waiting off"},
    toggles={"call_waiting": "call_waiting"},
)
