"""A mailbox: its messages (the recordings `BOX-ID` of this feature, metadata in the
state LMDB's voicemail index through `ctx.messages`/`ctx.set_message`), its limits
and its message-waiting lamp."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbx_core.features.api import Context

NEW, OLD = "new", "old"
MAX_PIN = 12  # digits of a mailbox PIN
GREETINGS = ("unavail", "busy", "name", "temp")  # keys 1-4 of the greetings menu
# Seconds of messages kept in every box together (the whole-card quota), in the
# feature's state namespace: added when a message is kept, taken off when deleted.
TOTAL = "total_seconds"
_reserved: set[tuple[str, str]] = set()  # ids of messages being recorded now


def has_box(ctx: Context, extension: str) -> bool:
    """Whether `extension` exists and has a mailbox (pbx_extension.voicemail)."""
    row = ctx.extension(extension)
    return row is not None and bool(row.get("voicemail"))


def pin(ctx: Context, box: str) -> str | None:
    """The box's PIN (pbx_extension.vm_pin); None: none set."""
    row = ctx.extension(box)
    value = row.get("vm_pin") if row is not None else None
    return value if isinstance(value, str) and value else None


def messages(ctx: Context, box: str) -> list[tuple[str, Mapping[str, Any]]]:
    return list(ctx.messages(box))


def counts(ctx: Context, box: str) -> tuple[int, int]:
    """(new, old) messages of the box."""
    new = sum(1 for _id, meta in ctx.messages(box) if meta.get("folder") == NEW)
    return new, len(ctx.messages(box)) - new


def full(ctx: Context, box: str) -> bool:
    return len(ctx.messages(box)) >= int(ctx.setting("vm_max_messages"))


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


def mwi(ctx: Context, box: str) -> None:
    """Tell the box owner's phones the counts (RFC 3842 NOTIFY, sent by the core)."""
    new, old = counts(ctx, box)
    ctx.notify_mwi(box, new, old)


def keep(ctx: Context, box: str, msg_id: str, meta: Mapping[str, Any]) -> None:
    ctx.set_message(box, msg_id, meta)
    ctx.state_set(TOTAL, round(used(ctx) + float(meta.get("duration") or 0), 2))
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
