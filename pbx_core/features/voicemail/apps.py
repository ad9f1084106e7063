"""The voicemail applications: leaving a message, and the mailbox menu (`*97`,
`*98`). Every loop is bounded; every key wait has a timeout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbx_core.features.api import App, CallInfo, Context, Session, ZoneError, zone
from pbx_core.features.voicemail import box as mb
from pbx_core.features.voicemail import pins

PIN_TRIES = 3
MENU_ROUNDS = 20  # main menu turns before goodbye
MESSAGE_STEPS = 200  # key presses while browsing before back to the menu
MENU_TIMEOUTS = 3  # the menu said this many times with no key: goodbye
GREETING_MAX = 60.0  # seconds of a greeting


def leave(ctx: Context, call: CallInfo, box: str, kind: str) -> App:
    """Greeting (the owner's recorded one, else the built-in prompts naming the
    extension), the tone, the recording; a message shorter than vm_min_seconds is
    discarded; a full box (or a full card: vm_quota_minutes) is announced and
    nothing recorded; a message stops where the quota does. `0` goes to the
    operator (setting `operator`), keeping what was said."""

    async def app(session: Session) -> None:
        shortest = float(ctx.setting("vm_min_seconds"))
        if mb.full(ctx, box) or mb.room(ctx) < max(1.0, shortest):
            await session.play("vm-mailbox-full", "goodbye")
            session.hangup()
            return
        key = await session.play(*greeting(ctx, box, kind), interruptible=True)
        operator = str(ctx.setting("operator") or "")
        if key == "0" and operator:
            await session.transfer(operator)
            return
        if session.hung_up:
            return
        await session.play("tone:confirmation")
        msg_id = mb.reserve(ctx, box)
        try:
            name = mb.recording(box, msg_id)
            got = await session.record(
                name,
                max_seconds=min(float(ctx.setting("vm_max_seconds")), mb.room(ctx)),
                silence_seconds=5.0,
                terminators="#0" if operator else "#",
            )
            if got.reason == "error":
                session.hangup()
                return
            if got.seconds < shortest:
                session.delete_recording(name)  # nothing worth keeping
            else:
                mb.keep(
                    ctx,
                    box,
                    msg_id,
                    {
                        "caller": "" if call.anonymous else call.caller_number[:64],
                        "time": round(ctx.wall_time(), 3),
                        "duration": got.seconds,
                        "folder": mb.NEW,
                    },
                )
        finally:
            mb.release(box, msg_id)
        if session.hung_up:
            return
        if got.digit == "0" and operator:
            await session.transfer(operator)
            return
        await session.play("vm-message-saved", "goodbye")
        session.hangup()

    return app


def greeting(ctx: Context, box: str, kind: str) -> list[str]:
    """What a caller hears first: the owner's temporary greeting, else the one for
    `kind` (unavail, busy), else the built-in prompts with the owner's recorded name
    or the extension number."""
    for recorded in ("temp", kind):
        own = mb.greeting(box, recorded)
        if mb.has_greeting(ctx, own):
            return [f"rec:{own}"]
    name = mb.greeting(box, "name")
    who = [f"rec:{name}"] if mb.has_greeting(ctx, name) else mb.digit_prompts(box)
    why = "vm-busy" if kind == "busy" else "vm-unavailable"
    return ["vm-extension", *who, why, "vm-leave-message"]


async def _login(session: Session, ctx: Context, box: str, key: str) -> bool:
    """Ask for the box's PIN (at most PIN_TRIES); a wrong one counts as a failed
    login against `key` (the caller's address, else its number)."""
    if not mb.has_pin(ctx, box):
        return False
    for _ in range(PIN_TRIES):
        await session.play("vm-enter-password")
        entry = await session.collect(mb.MAX_PIN, 8.0, 4.0, "#")
        if session.hung_up:
            return False
        if mb.check_pin(ctx, box, entry):
            return True
        banned = ctx.failed_auth(key)
        await session.play("vm-login-incorrect")
        if banned or ctx.banned(key):
            return False
    return False


def menu(ctx: Context, box: str | None, need_pin: bool, key: str) -> App:
    """The mailbox menu. `box` None: ask for it (`*98` alone)."""

    async def app(session: Session) -> None:
        nonlocal box
        if box is None:
            await session.play("vm-enter-mailbox")
            box = await session.collect(16, 8.0, 4.0, "#")
            if not box or not mb.has_box(ctx, box):
                await session.play("vm-login-incorrect", "goodbye")
                session.hangup()
                return
        if need_pin and not await _login(session, ctx, box, key):
            if not session.hung_up:
                await session.play("goodbye")
                session.hangup()
            return
        quiet = 0
        for _ in range(MENU_ROUNDS):
            if session.hung_up:
                return
            new, old = mb.counts(ctx, box)
            say = ["vm-no-messages"] if not new else ["vm-you-have", *mb.number_prompts(new)]
            if new:
                say.append("vm-new-message" if new == 1 else "vm-new-messages")
            if old:
                say += ["vm-you-have", *mb.number_prompts(old), "vm-old-messages"]
            choice = await session.play(*say, "vm-main-menu", interruptible=True)
            if choice is None:
                choice = await session.collect(1, 5.0, 1.0, "")
            if choice == "1":
                await _browse(session, ctx, box)
            elif choice == "0":
                await _greetings(session, ctx, box)
            elif choice == "#" or session.hung_up:
                break
            elif not choice:
                quiet += 1
                if quiet >= MENU_TIMEOUTS:
                    break
            else:
                await session.play("invalid-option")
        if not session.hung_up:
            await session.play("goodbye")
            session.hangup()

    return app


async def _browse(session: Session, ctx: Context, box: str) -> None:
    """New messages then old: 5 repeat, 4 previous, 6 next, 7 delete, 9 save, 3 its
    envelope, * help, # back to the menu; after the last, back to the menu."""
    listing = [m for m in mb.messages(ctx, box) if m[1].get("folder") == mb.NEW]
    listing += [m for m in mb.messages(ctx, box) if m[1].get("folder") != mb.NEW]
    i, said = 0, -1
    menu_only = False  # after the envelope or help: the keys again, not the message
    for _ in range(MESSAGE_STEPS):
        if session.hung_up or i >= len(listing):
            break
        msg_id, meta = listing[i]
        prompts = [f"rec:{mb.recording(box, msg_id)}", "vm-message-menu"]
        if menu_only:
            prompts = ["vm-message-menu"]
        elif said != i:
            prompts.insert(0, "vm-first-message" if i == 0 else "vm-next-message")
        menu_only, said = False, i
        key = await session.play(*prompts, interruptible=True)
        if key is None:
            key = await session.collect(1, 5.0, 1.0, "")
        if key == "7":
            session.delete_recording(mb.recording(box, msg_id))
            mb.forget(ctx, box, msg_id)
            del listing[i]
            said = -1
            await session.play("vm-message-deleted")
        elif key == "9":
            mb.move(ctx, box, msg_id, mb.OLD)
            await session.play("vm-message-saved")
            i += 1
        elif key == "5":
            pass  # the same message again, without its intro
        elif key == "4":
            i, said = max(0, i - 1), -1
        elif key == "3":
            await session.play(*envelope(ctx, meta), interruptible=True)
            menu_only = True
        elif key == "*":
            menu_only = True
        elif key == "#":
            return
        else:  # 6, another key or none: the next message
            i += 1
    if not session.hung_up:
        await session.play("vm-no-more-messages")


def envelope(ctx: Context, meta: Mapping[str, Any]) -> list[str]:
    """What `3` says about a message: its caller, when (the box's time zone: hour and
    minute, day of the month), its length."""
    caller = str(meta.get("caller") or "")
    say = ["vm-message-from", *(mb.digit_prompts(caller) or ["vm-unknown-caller"])]
    try:
        when = zone(str(ctx.setting("timezone"))).local(float(meta.get("time") or 0))
    except (ZoneError, ValueError, TypeError, OverflowError):
        when = None
    if when is not None:
        say += ["vm-received-on", *mb.number_prompts(when.day)]
        say += ["vm-at", *mb.number_prompts(when.hour), *mb.number_prompts(when.minute)]
    seconds = round(float(meta.get("duration") or 0))
    return [*say, "vm-length", *mb.number_prompts(seconds), "vm-seconds"]


async def _greetings(session: Session, ctx: Context, box: str) -> None:
    """0 in the menu: 1 records the unavailable greeting, 2 the busy one, 3 the
    name, 4 the temporary one (played for every call while it exists), 5 changes
    the PIN. A recording shorter than vm_min_seconds (# at once) removes that
    greeting."""
    choice = await session.play("vm-greeting-menu", interruptible=True)
    if choice is None:
        choice = await session.collect(1, 5.0, 1.0, "")
    if choice == "5":
        await _change_pin(session, ctx, box)
        return
    kinds = dict(zip("1234", mb.GREETINGS, strict=True))
    if choice not in kinds:
        return
    name = mb.greeting(box, kinds[choice])
    await session.play("vm-record-greeting", "tone:confirmation")
    got = await session.record(name, max_seconds=GREETING_MAX, silence_seconds=3.0)
    if got.reason == "error":
        return
    if got.seconds < float(ctx.setting("vm_min_seconds")):
        session.delete_recording(name)
        mb.set_greeting(ctx, name, False)
        if not session.hung_up:
            await session.play("vm-greeting-removed")
        return
    mb.set_greeting(ctx, name, True)
    if not session.hung_up:
        await session.play("vm-greeting-saved")


async def _change_pin(session: Session, ctx: Context, box: str) -> None:
    """0 then 5: the new PIN twice (4-10 digits, then #); kept hashed in the
    feature's state (box.set_pin). A PIN of the wrong length ("invalid option"), or
    two that differ ("do not match"), change nothing."""
    await session.play("vm-new-password")
    first = await session.collect(pins.MAX_NEW + 1, 8.0, 4.0, "#")
    if session.hung_up:
        return
    if not pins.valid(first):
        await session.play("invalid-option")
        return
    await session.play("vm-reenter-password")
    second = await session.collect(pins.MAX_NEW + 1, 8.0, 4.0, "#")
    if session.hung_up:
        return
    if first != second:
        await session.play("vm-password-mismatch")
        return
    mb.set_pin(ctx, box, first)
    await session.play("vm-password-changed")
