"""Voicemail: a mailbox per extension whose `pbx_extension.voicemail` is 1, reached
when a call to it is busy (DND too), unanswered or unavailable (after the forwards:
the registry asks this feature's `unanswered` after call forwarding's), by the
destination type `voicemail` (target: the mailbox) from any table, and by `*96` +
extension (not FreePBX's bare `*`: see README.md). `*97` listens to the own box,
`*98` (+ box) to any box with its PIN. Shared boxes (pbx_mailbox) have several
owners. Message waiting (RFC 3842) is sent on every change and when a phone
registers anew, and served to SUBSCRIBE (the `message_summary` hook).
See README.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    integer,
    pbx_table,
    text,
)
from pbx_core.features.voicemail import apps, pins
from pbx_core.features.voicemail import box as mb

MAX_BOX = 16  # digits of a mailbox number after a code
MAX_DEPOSIT_SECONDS = 3600  # a message another feature leaves (a broadcast: 300 s at most)


def _check_owners(value: object) -> str | None:
    owners = [o.strip() for o in str(value or "").split(",") if o.strip()]
    if not owners:
        return "at least one extension"
    if len(owners) > mb.MAX_OWNERS:
        return f"at most {mb.MAX_OWNERS} extensions"
    bad = [o for o in owners if not o.isdigit() or len(o) > 32]
    return f"not an extension number: {bad[0][:32]}" if bad else None


def _check_pin(value: object) -> str | None:
    if pins.form(str(value)) is None:
        return "a PIN is 1-12 digits, or hashed: sha256$SALT$HEX (features/voicemail/pins.py)"
    return None


def _check_box(value: object) -> str | None:
    number = str(value)
    return None if number.isdigit() and len(number) <= MAX_BOX else f"1-{MAX_BOX} digits"


MAILBOX_TABLE = pbx_table(
    mb.SHARED,
    "Shared (group) mailboxes (feature voicemail): a box several extensions own; "
    "callers reach it by its number, a destination voicemail + number, or *96 + "
    "number; owners listen with *98 + number and its PIN; every owner's lamp shows it.",
    text(
        "number",
        "the box's number (dialled to leave a message; not an extension's)",
        need=True,
        check=_check_box,
        dials="voicemail",
    ),
    text("owners", "extensions owning the box, comma-separated", need=True, check=_check_owners),
    text(
        "pin",
        "the PIN *98 asks (digits, or hashed: sha256$SALT$HEX); NULL: the box is never "
        "opened by phone; an owner's change from the menu (0 then 5) wins until this changes",
        null=True,
        check=_check_pin,
    ),
    integer(
        "max_messages",
        "messages the box keeps; NULL: the setting vm_max_messages",
        null=True,
        lo=1,
        hi=10_000,
    ),
    text("description", "what the box is for", null=True),
    key=("number",),
    max_rows=200,
    targets="voicemail",
)


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
            if not mb.own_box(ctx, dial.extension):
                return Reject(404, f"extension {dial.extension} has no mailbox")
            # The owner's own phone (authenticated by its SIP digest) needs the PIN
            # only when the box has one (pbx_extension.vm_pin).
            need = mb.has_pin(ctx, dial.extension)
            return Answer(apps.menu(ctx, dial.extension, need, key), "voicemail")
        # *98: any box, always with its PIN
        if dial.arg:
            if len(dial.arg) > MAX_BOX or not mb.has_box(ctx, dial.arg):
                return Reject(404, f"no mailbox {dial.arg[:MAX_BOX]}")
            if not mb.has_pin(ctx, dial.arg):
                return Reject(403, f"mailbox {dial.arg} has no PIN: only its own phone")
            return Answer(apps.menu(ctx, dial.arg, True, key), "voicemail")
        return Answer(apps.menu(ctx, None, True, key), "voicemail")

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        target = dest.target or ""
        if not mb.has_box(ctx, target):
            return Reject(404, f"no mailbox {target[:MAX_BOX]}")
        return Answer(apps.leave(ctx, call, target, "unavail"), "voicemail")

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        if not mb.own_box(ctx, extension):
            return None
        kind = "busy" if why is Why.BUSY else "unavail"
        return Answer(apps.leave(ctx, call, extension, kind), "voicemail")

    def registered(self, ctx: Context, extension: str) -> None:
        if mb.boxes_of(ctx, extension):
            ctx.notify_mwi(extension, *mb.summary_of(ctx, extension))

    def message_summary(
        self, ctx: Context, extension: str, resource: str
    ) -> tuple[int, int] | Reject | None:
        """A SUBSCRIBE: to the own number, all the subscriber's boxes together (its
        own and the shared ones it owns: what its lamp shows); to a shared box it
        owns, that box; to another's box, 403."""
        if resource == extension:
            return mb.summary_of(ctx, extension) if mb.boxes_of(ctx, extension) else None
        if not mb.has_box(ctx, resource):
            return None
        if extension in mb.owners(ctx, resource):
            return mb.counts(ctx, resource)
        return Reject(403, f"mailbox {resource[:MAX_BOX]} is not yours")

    def take_message(
        self, ctx: Context, mailbox: str, meta: Mapping[str, Any], store: Callable[[], str | None]
    ) -> str | None:
        """A message another feature leaves (a broadcast): refused by a full box
        or when the card's quota has no room for it; kept, it counts as a recorded
        message does (`vm_quota_minutes`) and the lamps light."""
        if not mb.has_box(ctx, mailbox) or mb.full(ctx, mailbox):
            return None
        seconds = meta.get("duration")
        if not isinstance(seconds, int | float) or not 0 < seconds <= MAX_DEPOSIT_SECONDS:
            return None
        if mb.room(ctx) < seconds:
            return None
        msg_id = store()
        if msg_id is not None:
            mb.counted(ctx, mailbox, float(seconds))
        return msg_id

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
        "*98": "listen to a mailbox, a shared one too (number after the code, or prompted), "
        "with its PIN",
        "*96": "leave a message in the mailbox (an extension's or a shared one) after the code",
    },
    destination_types=("voicemail",),
    tables=(MAILBOX_TABLE,),
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
