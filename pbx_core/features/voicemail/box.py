"""A mailbox: its messages (the recordings `BOX-ID` of this feature, metadata in the
state LMDB's voicemail index through `ctx.messages`/`ctx.set_message`), its owners
(an extension's own box, or a shared box of pbx_mailbox), its PIN, its limits and
its message-waiting lamp."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbx_core.features.api import Context
from pbx_core.features.voicemail import pins

NEW, OLD = "new", "old"
MAX_PIN = 12  # digits of a mailbox PIN typed to log in
SHARED = "pbx_mailbox"  # the shared (group) boxes' table (this feature's)
MAX_OWNERS = 32  # extensions owning one shared box
GREETINGS = ("unavail", "busy", "name", "temp")  # keys 1-4 of the greetings menu
# Seconds of messages kept in every box together (the whole-card quota), in the
# feature's state namespace: added when a message is kept, taken off when deleted.
TOTAL = "total_seconds"
_reserved: set[tuple[str, str]] = set()  # ids of messages being recorded now


def own_box(ctx: Context, extension: str) -> bool:
    """Whether `extension` exists and has its own mailbox (pbx_extension.voicemail)."""
    row = ctx.extension(extension)
    return row is not None and bool(row.get("voicemail"))


def shared(ctx: Context, box: str) -> Mapping[str, Any] | None:
    """The pbx_mailbox row of shared box `box`, if it is one."""
    return next((r for r in ctx.rows(SHARED) if str(r.get("number")) == box), None)


def owners_in(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A shared box's owners (its `owners` column: extensions, comma-separated)."""
    found = (o.strip() for o in str(row.get("owners") or "").split(","))
    return tuple(dict.fromkeys(o for o in found if o))[:MAX_OWNERS]


def has_box(ctx: Context, box: str) -> bool:
    """Whether `box` is a mailbox: an extension's own, or a shared one."""
    return own_box(ctx, box) or shared(ctx, box) is not None


def owners(ctx: Context, box: str) -> tuple[str, ...]:
    """The extensions whose lamps show `box`: its extension, or a shared box's owners."""
    row = shared(ctx, box)
    if row is not None:
        return owners_in(row)
    return (box,) if own_box(ctx, box) else ()


def boxes_of(ctx: Context, extension: str) -> tuple[str, ...]:
    """The boxes `extension`'s lamp shows: its own (if any), then the shared boxes it
    owns, in table order."""
    own = (extension,) if own_box(ctx, extension) else ()
    rows = ctx.rows(SHARED)
    return own + tuple(str(r["number"]) for r in rows if extension in owners_in(r))


def table_pin(ctx: Context, box: str) -> str | None:
    """The box's PIN as the table gives it (pbx_extension.vm_pin, pbx_mailbox.pin):
    digits or a hashed form (pins.py); None: none set."""
    row = shared(ctx, box)
    if row is not None:
        value = row.get("pin")
    else:
        row = ctx.extension(box)
        value = row.get("vm_pin") if row is not None else None
    return value if isinstance(value, str) and value else None


def _phone_pin(ctx: Context, box: str) -> str | None:
    """The PIN the owner set from the phone (hashed, in the feature's state), while
    the table's PIN is still the one it replaced."""
    saved = ctx.state_get(f"pin:{box}")
    if not isinstance(saved, dict) or not isinstance(saved.get("hash"), str):
        return None
    if saved.get("table") != table_pin(ctx, box):
        return None  # the installer changed the table since: the table's wins
    return str(saved["hash"])


def has_pin(ctx: Context, box: str) -> bool:
    return (_phone_pin(ctx, box) or table_pin(ctx, box)) is not None


def check_pin(ctx: Context, box: str, entry: str) -> bool:
    """Whether `entry` is the box's PIN (the phone-set one, else the table's)."""
    want = _phone_pin(ctx, box) or table_pin(ctx, box)
    return want is not None and pins.matches(want, entry)


def set_pin(ctx: Context, box: str, new: str) -> None:
    """Keep `new` (checked: pins.valid) hashed in the feature's state, with the
    table's PIN it replaces: it is in force until the table's PIN changes."""
    ctx.state_set(f"pin:{box}", {"hash": pins.hashed(new), "table": table_pin(ctx, box)})


def messages(ctx: Context, box: str) -> list[tuple[str, Mapping[str, Any]]]:
    return list(ctx.messages(box))


def counts(ctx: Context, box: str) -> tuple[int, int]:
    """(new, old) messages of the box."""
    new = sum(1 for _id, meta in ctx.messages(box) if meta.get("folder") == NEW)
    return new, len(ctx.messages(box)) - new


def full(ctx: Context, box: str) -> bool:
    """Whether the box holds its most messages (vm_max_messages, or a shared box's
    own max_messages)."""
    row = shared(ctx, box)
    most = row.get("max_messages") if row is not None else None
    if not isinstance(most, int):
        most = int(ctx.setting("vm_max_messages"))
    return len(ctx.messages(box)) >= most


def used(ctx: Context) -> float:
    """Seconds of messages kept in all boxes together."""
    total = ctx.state_get(TOTAL)
    return max(0.0, float(total)) if isinstance(total, int | float) else 0.0


def room(ctx: Context) -> float:
    """Seconds left under the whole-card quota (setting vm_quota_minutes)."""
    return max(0.0, int(ctx.setting("vm_quota_minutes")) * 60.0 - used(ctx))


def recording(box: str, msg_id: str) -> str:
    """The recording name of a message (Session.record's name: never a path)."""
    return f"{box}-{msg_id}"


def greeting(box: str, kind: str) -> str:
    return f"greet-{box}-{kind}"


def has_greeting(ctx: Context, name: str) -> bool:
    """Whether the owner recorded greeting `name` (kept in the feature's state)."""
    return bool(ctx.state_get(f"greeting:{name}"))


def set_greeting(ctx: Context, name: str, recorded: bool) -> None:
    ctx.state_set(f"greeting:{name}", True if recorded else None)


def reserve(ctx: Context, box: str) -> str:
    """A new message id: the wall clock in milliseconds (ids sort by time), unique
    in the box and among the messages being recorded now."""
    taken = {msg_id for msg_id, _ in ctx.messages(box)}
    n = int(ctx.wall_time() * 1000)
    while f"{n:013d}" in taken or (box, f"{n:013d}") in _reserved:
        n += 1
    msg_id = f"{n:013d}"
    _reserved.add((box, msg_id))
    return msg_id


def release(box: str, msg_id: str) -> None:
    _reserved.discard((box, msg_id))


def summary_of(ctx: Context, extension: str) -> tuple[int, int]:
    """The counts `extension`'s lamp shows: its boxes' together (as Asterisk's
    `mailboxes=101,600` does)."""
    new = old = 0
    for box in boxes_of(ctx, extension):
        n, o = counts(ctx, box)
        new, old = new + n, old + o
    return new, old


def mwi(ctx: Context, box: str) -> None:
    """Tell the box's watchers the counts (RFC 3842 NOTIFY, sent by the core): each
    owner (its phones and its subscriptions to itself: all its boxes together) and,
    for a shared box, the subscriptions to the box itself."""
    for owner in owners(ctx, box):
        ctx.notify_mwi(owner, *summary_of(ctx, owner))
    if shared(ctx, box) is not None:
        ctx.notify_mwi(box, *counts(ctx, box))


def keep(ctx: Context, box: str, msg_id: str, meta: Mapping[str, Any]) -> None:
    ctx.set_message(box, msg_id, meta)
    counted(ctx, box, float(meta.get("duration") or 0))


def counted(ctx: Context, box: str, seconds: float) -> None:
    """A message of `seconds` is in `box`: the card's total grows, the lamps light."""
    ctx.state_set(TOTAL, round(used(ctx) + seconds, 2))
    mwi(ctx, box)


def move(ctx: Context, box: str, msg_id: str, folder: str) -> None:
    meta = dict(ctx.messages(box)).get(msg_id)
    if meta is not None and meta.get("folder") != folder:
        ctx.set_message(box, msg_id, {**meta, "folder": folder})
        mwi(ctx, box)


def forget(ctx: Context, box: str, msg_id: str) -> None:
    meta = dict(ctx.messages(box)).get(msg_id)
    ctx.set_message(box, msg_id, None)
    if meta is not None:
        left = used(ctx) - float(meta.get("duration") or 0)
        ctx.state_set(TOTAL, round(max(0.0, left), 2))
    mwi(ctx, box)


def number_prompts(n: int) -> list[str]:
    """Prompts saying `n` (0-99 as words, larger as digits)."""
    if 0 <= n <= 20:
        return [f"number-{n}"]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [f"number-{tens * 10}"] + ([f"number-{ones}"] if ones else [])
    return digit_prompts(str(n))


def digit_prompts(number: str) -> list[str]:
    names = {"*": "digit-star", "#": "digit-pound"}
    return [names.get(c, f"digit-{c}") for c in number if c in names or c.isdigit()]
