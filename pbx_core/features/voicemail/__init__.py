"""Voicemail: a mailbox per extension whose `pbx_extension.voicemail` is 1, reached
when a call to it is busy (DND too), unanswered or unavailable (after the forwards:
the registry asks this feature's `unanswered` after call forwarding's), by the
destination type `voicemail` (target: the mailbox) from any table, and by `*96` +
extension (not FreePBX's bare `*`: see README.md). `*97` listens to the own box,
`*98` (+ box) to any box with its PIN. Message waiting (RFC 3842) is sent on every
change and when a phone registers anew.
See README.md."""

from __future__ import annotations

from typing import Any

from pbx_core.features.api import (
    Answer,
    CallInfo,
    Context,
    Decision,
    Destination,
    Dial,
    Feature,
    Reject,
    Setting,
    Why,
)
from pbx_core.features.voicemail import apps
from pbx_core.features.voicemail import box as mb

MAX_BOX = 16  # digits of a mailbox number after a code


def _auth_key(call: CallInfo, extension: str) -> str:
    """What a wrong PIN counts against: the phone's address, else the extension."""
    return call.source or f"cid:{extension}"


class Voicemail(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        key = _auth_key(dial.call, dial.extension)
        if dial.code == "*96":  # straight to a mailbox: leave a message
            if not dial.arg or not mb.has_box(ctx, dial.arg):
                return Reject(404, "no such feature code or mailbox")
            return Answer(apps.leave(ctx, dial.call, dial.arg, "unavail"), "voicemail")
        if ctx.banned(key):
            return Reject(403, "mailbox login banned after wrong PINs")
        if dial.code == "*97":
            if dial.arg:
                return Reject(404, "nothing follows *97")
            if not mb.has_box(ctx, dial.extension):
                return Reject(404, f"extension {dial.extension} has no mailbox")
            # The owner's own phone (authenticated by its SIP digest) needs the PIN
            # only when the box has one (pbx_extension.vm_pin).
            need = mb.pin(ctx, dial.extension) is not None
            return Answer(apps.menu(ctx, dial.extension, need, key), "voicemail")
        # *98: any box, always with its PIN
        if dial.arg:
            if len(dial.arg) > MAX_BOX or not mb.has_box(ctx, dial.arg):
                return Reject(404, f"no mailbox {dial.arg[:MAX_BOX]}")
            if mb.pin(ctx, dial.arg) is None:
                return Reject(403, f"mailbox {dial.arg} has no PIN: only its own phone")
            return Answer(apps.menu(ctx, dial.arg, True, key), "voicemail")
        return Answer(apps.menu(ctx, None, True, key), "voicemail")

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        target = dest.target or ""
        if not mb.has_box(ctx, target):
            return Reject(404, f"no mailbox {target[:MAX_BOX]}")
        return Answer(apps.leave(ctx, call, target, "unavail"), "voicemail")

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        if not mb.has_box(ctx, extension):
            return None
        kind = "busy" if why is Why.BUSY else "unavail"
        return Answer(apps.leave(ctx, call, extension, kind), "voicemail")

    def registered(self, ctx: Context, extension: str) -> None:
        if mb.has_box(ctx, extension):
            mb.mwi(ctx, extension)

    def status(self, ctx: Context) -> dict[str, Any]:
        """`pbx status`: how much of the card's quota the messages use."""
        return {
            "used_seconds": round(mb.used(ctx), 1),
            "quota_seconds": int(ctx.setting("vm_quota_minutes")) * 60,
        }


FEATURE = Voicemail(
    name="voicemail",
    codes={
        "*97": "listen to your own mailbox",
        "*98": "listen to a mailbox (number after the code, or prompted), with its PIN",
        "*96": "leave a message in the mailbox of the extension after the code",
    },
    destination_types=("voicemail",),
    settings=(
        Setting(
            "vm_min_seconds",
            int,
            1,
            "a voicemail message (or greeting) shorter than this many seconds is discarded",
            lo=0,
            hi=10,
        ),
        Setting(
            "vm_quota_minutes",
            int,
            30,
            "minutes of voicemail messages all mailboxes together may keep (a message is "
            "an 8 kHz G.711 WAV, 480 000 bytes a minute: 30 min = 14.4 MB of the 64 MiB "
            "/data partition); when it is reached callers hear that the mailbox is full "
            "and a message being recorded stops",
            lo=1,
            hi=60,
        ),
    ),
)
