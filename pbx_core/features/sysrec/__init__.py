"""System recordings from a phone (FreePBX's *77; its *99 is *94 here): `*77` + number records the
office's recording NUMBER (a greeting an IVR or a DID's welcome plays as
`sys:NUMBER`), plays it back, and keeps it only on 1 (2 records again, 3 listens
again); `*94` + number plays it. Only extensions with a `pbx_sysrec` row may: the
company greeting is not everyone's to replace. The store itself (format, bounds,
whole writes) is the core's (pbx_core/sysrec.py, through `Session.keep_system`).
See README.md."""

from __future__ import annotations

from pbx_core.features.api import (
    Answer,
    App,
    Context,
    Decision,
    Dial,
    Feature,
    Reject,
    Session,
    pbx_table,
    text,
)

RECORD_CODE, CHECK_CODE = "*77", "*94"
MAX_DIGITS = 8  # a recording's number from a phone
RECORD_MAX = 120.0  # seconds (the store's own bound)
MIN_SECONDS = 1.0  # shorter: recorded again
TRIES = 5  # recordings in one call, at most

TABLE = pbx_table(
    "pbx_sysrec",
    "Who may record and check system recordings from a phone (feature sysrec: *77, "
    "*94). No row: nobody.",
    text("extension", "the extension allowed", need=True),
    key=("extension",),
    max_rows=100,
)


def _allowed(ctx: Context, ext: str) -> bool:
    return any(str(r["extension"]) == ext for r in ctx.rows("pbx_sysrec"))


async def _number(session: Session, given: str) -> str:
    if given:
        return given
    await session.play("sysrec-enter-number")
    return await session.collect(MAX_DIGITS, 8.0, 3.0, "#")


def _recorder(ext: str, given: str) -> App:
    draft = f"draft-{ext}"

    async def app(session: Session) -> None:
        number = await _number(session, given)
        if not number:
            session.hangup()
            return
        try:
            await _record(session, draft, number)
        finally:
            session.delete_recording(draft)
        session.hangup()

    return app


async def _record(session: Session, draft: str, number: str) -> None:
    for _ in range(TRIES):
        await session.play("sysrec-record", "tone:confirmation")
        got = await session.record(draft, max_seconds=RECORD_MAX, silence_seconds=5.0)
        if got.reason in ("hangup", "error") or session.hung_up:
            if got.reason == "error" and not session.hung_up:
                await session.play("sysrec-failed")
            return
        if got.seconds < MIN_SECONDS:
            await session.play("sysrec-too-short")
            continue
        while not session.hung_up:
            key = await session.play(f"rec:{draft}", "sysrec-review", interruptible=True)
            if key is None:
                key = await session.collect(1, 8.0, 1.0, "")
            if key == "1":
                why = await session.keep_system(draft, number)
                await session.play("sysrec-saved" if why is None else "sysrec-failed")
                return
            if key == "2":
                break
            if key != "3":  # nothing, or another key: nothing kept
                await session.play("sysrec-cancelled")
                return
    await session.play("goodbye")


def _checker(given: str) -> App:
    async def app(session: Session) -> None:
        number = await _number(session, given)
        if number and session.has_recording(f"sys:{number}"):
            await session.play(f"sys:{number}")
        elif number:
            await session.play("sysrec-none")
        session.hangup()

    return app


class SystemRecordings(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if not _allowed(ctx, dial.extension):
            return Reject(403, "no permission to manage system recordings")
        arg = dial.arg
        if arg and (not arg.isdigit() or len(arg) > MAX_DIGITS):
            return Reject(404, "a system recording's number is 1-8 digits")
        if dial.code == RECORD_CODE:
            return Answer(_recorder(dial.extension, arg), "sysrec-record")
        return Answer(_checker(arg), "sysrec-check")


FEATURE = SystemRecordings(
    name="sysrec",
    codes={
        RECORD_CODE: "+ number: record the system recording NUMBER (with a pbx_sysrec row)",
        CHECK_CODE: "+ number: listen to the system recording NUMBER (with a pbx_sysrec row)",
    },
    tables=(TABLE,),
)
