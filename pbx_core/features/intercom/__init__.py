"""Intercom (FreePBX's codes): `*80` + extension calls that extension's phones and
asks them to answer by themselves with the speaker open (the core adds Call-Info
answer-after=0 and Alert-Info info=alert-autoanswer); `*54` allows intercom calls to
one's own extension, `*55` refuses them. See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    Context,
    Decision,
    Dial,
    Feature,
    Hunt,
    Reject,
    Setting,
    Step,
)
from pbx_core.features.prompts import confirm

RING = 20.0  # seconds an intercom call rings a phone that does not auto-answer


class Intercom(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.code in ("*54", "*55"):
            if dial.arg:
                return None
            on = dial.code == "*54"
            ctx.set_toggle(dial.extension, "intercom", on)
            return Answer(confirm("intercom-on" if on else "intercom-off"), "intercom")
        target = dial.arg
        if not target or ctx.extension(target) is None:
            return Reject(404, "no such extension")
        if target == dial.extension:
            return Reject(403, "intercom to oneself")
        if ctx.toggle(target, "intercom") is False:
            return Reject(403, "that extension refuses intercom")
        one_way = ctx.setting("intercom_mode") == "one-way"
        return Hunt((Step((target,), RING, auto_answer=True, one_way=one_way),), status=480)

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        return None if isinstance(value, bool) or value is None else "on or off"


FEATURE = Intercom(
    name="intercom",
    codes={
        "*80": "+ extension: intercom (the phone answers by itself)",
        "*54": "allow intercom calls to me",
        "*55": "refuse intercom calls to me",
    },
    toggles={"intercom": None},
    settings=(
        Setting(
            "intercom_mode",
            str,
            "two-way",
            "two-way: both speak; one-way: the called phone only listens (its microphone "
            "is not passed on)",
            ("two-way", "one-way"),
        ),
    ),
)
