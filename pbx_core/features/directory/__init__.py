"""Dial-by-name directory: `*411` (or a DID / IVR choice naming the destination type
`directory`) asks for the first three letters of a person's name on the keypad
(2=ABC ... 9=WXYZ; `#` after fewer letters), then says each match (at most
MAX_MATCHES) by its recorded name (the extension's voicemail name greeting) or as
"extension 1 0 2": 1 rings that extension through the usual routing with the
caller's call class, 2 says the next; `#`, another key or silence ends the call.
The name is `pbx_extension.display_name`'s last word, or its first with the setting
`directory_name` = first (a destination's target `last`, `first` or `default` says
it for that entry); extensions without a display name are not listed.
See README.md."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Destination,
    Dial,
    Feature,
    Reject,
    Session,
    Setting,
)

CODE = "*411"
LETTERS = 3  # keys asked for
MAX_MATCHES = 8  # announced, at most
TRIES = 3  # entries per call, at most
KEYPAD = {"2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV"}
KEYPAD["9"] = "WXYZ"
_KEY_OF = {letter: key for key, letters in KEYPAD.items() for letter in letters}


def keys_of(name: str) -> str:
    """The keys that spell `name` (accents dropped; anything not a letter skipped)."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().upper()
    return "".join(_KEY_OF[c] for c in plain if c in _KEY_OF)


def name_of(display_name: object, which: str) -> str:
    """The word of a display name the directory spells: the last, or the first."""
    words = str(display_name or "").split()
    if not words:
        return ""
    return words[0] if which == "first" else words[-1]


def matches(
    entered: str, rows: Iterable[tuple[str, Mapping[str, Any] | None]], which: str
) -> list[str]:
    """The extensions whose name starts with the keys `entered`, by name then number,
    at most MAX_MATCHES; those without a display name never."""
    if not entered or not entered.isdigit():
        return []
    found = []
    for number, row in rows:
        name = name_of(row.get("display_name") if row is not None else None, which)
        if name and keys_of(name).startswith(entered):
            found.append((name.lower(), number))
    return [number for _name, number in sorted(found)[:MAX_MATCHES]]


def _digits(number: str) -> list[str]:
    return [f"digit-{c}" for c in number if c.isdigit()]


def _app(ctx: Context, which: str | None = None) -> App:
    async def app(session: Session) -> None:
        nonlocal which
        which = which or str(ctx.setting("directory_name"))
        for _ in range(TRIES):
            key = await session.play("dir-enter-name", interruptible=True)
            if key == "#":
                break
            entered = key or ""
            if len(entered) < LETTERS:
                entered += await session.collect(LETTERS - len(entered), 8.0, 4.0, "#")
            if not entered or session.hung_up:
                break  # silence: the caller has gone or given up
            rows = ((n, ctx.extension(n)) for n in ctx.extensions())
            found = matches(entered, rows, which)
            if not found:
                await session.play("dir-no-match")
                continue
            await _offer(session, found)
            return
        session.hangup()

    return app


async def _offer(session: Session, found: list[str]) -> None:
    """Say each match; 1 rings it, 2 the next; anything else ends the call."""
    for number in found:
        who = f"name:{number}"
        said = [who] if session.has_recording(who) else ["dir-extension", *_digits(number)]
        choice = await session.play(*said, "dir-menu", interruptible=True)
        if choice is None:
            choice = await session.collect(1, 6.0, 1.0, "")
        if choice == "1":
            status = await session.bridge(number)
            if status != 200 and not session.hung_up:
                await session.play("not-available")
                session.hangup()
            return
        if choice != "2":
            session.hangup()
            return
    await session.play("dir-no-more")
    session.hangup()


class Directory(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return Reject(404, "nothing may follow the directory's code")
        return Answer(_app(ctx), "directory")

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        """The target says which name that entry spells: `last`, `first`, or
        `default` (the setting)."""
        if dest.target not in ("last", "first", "default"):
            return Reject(404, f"directory target {dest.target!r}: last, first or default")
        return Answer(_app(ctx, None if dest.target == "default" else dest.target), "directory")


FEATURE = Directory(
    name="directory",
    codes={CODE: "dial by name: the first three letters of the name"},
    destination_types=("directory",),
    settings=(
        Setting(
            "directory_name",
            str,
            "last",
            "which word of pbx_extension.display_name the dial-by-name directory (*411) "
            "spells: last (the last word) or first",
            ("last", "first"),
        ),
    ),
)
