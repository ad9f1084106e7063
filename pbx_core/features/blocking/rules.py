"""Who is blocked for an extension: the installer's `pbx_blacklist` rows, the
extension's own list (kept in the feature's state namespace) and its anonymous
toggle; and the RAM-only memory of each extension's last caller. No I/O here beyond
the context the features hand in. See README.md."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from pbx_core.features.api import (
    CallInfo,
    Context,
    Setting,
    integer,
    pbx_table,
    text,
)

MAX_NUMBER = 20  # digits of a blocked number (E.164 is 15; room for a prefix)
MAX_PERSONAL = 100  # numbers on one extension's own list
MAX_REMEMBERED = 10000  # extensions whose last caller is kept in RAM (oldest dropped)
TREATMENTS = ("busy", "announce")
# What a caller ID says when the number is withheld (besides Privacy: id).
WITHHELD = frozenset(
    {"", "anonymous", "unknown", "unavailable", "private", "restricted", "withheld"}
)
_NUMBER = re.compile(rf"\+?[0-9]{{1,{MAX_NUMBER}}}")
_PATTERN = re.compile(rf"\+?[0-9]{{1,{MAX_NUMBER}}}\*?")


def valid_number(number: str) -> bool:
    """A number a list may hold and *69 may call back: digits, a leading + allowed."""
    return _NUMBER.fullmatch(number) is not None


def _pattern_problem(value: Any) -> str | None:
    """pbx_blacklist.number: a number, a prefix ending in *, or `anonymous`."""
    v = str(value)
    if v.lower() == "anonymous" or _PATTERN.fullmatch(v):
        return None
    return f"expected up to {MAX_NUMBER} digits (a trailing * for a prefix) or anonymous"


def _scope_problem(value: Any) -> str | None:
    v = str(value)
    return None if 0 < len(v) <= 32 and v.isalnum() else "expected an extension number"


BLACKLIST = pbx_table(
    "pbx_blacklist",
    "Callers refused before any extension rings (feature blocking): a number, a "
    "prefix (`0900*`) or `anonymous`, for every extension or one.",
    integer("id", "row id", auto=True),
    text(
        "number",
        "the caller's number as the trunk shows it; ending in * a prefix; anonymous "
        "for callers who withhold their number",
        need=True,
        check=_pattern_problem,
    ),
    text(
        "extension",
        "the extension it applies to; empty: every extension (and group member)",
        null=True,
        check=_scope_problem,
    ),
    text(
        "treatment",
        "busy (486) or announce (a prompt, then hang-up); empty: blocking_treatment",
        null=True,
        choices=TREATMENTS,
    ),
    text("description", "free text: why it is blocked", null=True),
    max_rows=1000,
)

SETTINGS = (
    Setting(
        "blocking_treatment",
        str,
        "busy",
        "what a blocked caller gets when nothing else says: busy (486) or announce "
        "(the PBX answers, says so and hangs up)",
        TREATMENTS,
    ),
)


def withheld(call: CallInfo) -> bool:
    """The caller withheld its number (Privacy: id, or no number to show)."""
    return call.anonymous or call.caller_number.strip().lower() in WITHHELD


def _matches(pattern: str, number: str, anonymous: bool) -> bool:
    if pattern.lower() == "anonymous":
        return anonymous
    if anonymous:
        return False
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def personal(ctx: Context, extension: str) -> list[str]:
    """The extension's own list (state key `list:EXT`), as kept."""
    kept = ctx.state_get(f"list:{extension}")
    if not isinstance(kept, list):
        return []
    return [n for n in kept if isinstance(n, str)][:MAX_PERSONAL]


def add(ctx: Context, extension: str, number: str) -> str | None:
    """Put `number` on the extension's list: None, else why not ("full", "bad")."""
    if not valid_number(number):
        return "bad"
    numbers = personal(ctx, extension)
    if number in numbers:
        return None
    if len(numbers) >= MAX_PERSONAL:
        return "full"
    try:
        ctx.state_set(f"list:{extension}", [*numbers, number])
    except ValueError:  # the namespace's bounds (keys per feature)
        return "full"
    return None


def remove(ctx: Context, extension: str, number: str) -> bool:
    """Take `number` off the extension's list; False when it was not on it."""
    numbers = personal(ctx, extension)
    if number not in numbers:
        return False
    numbers.remove(number)
    ctx.state_set(f"list:{extension}", numbers or None)
    return True


def treatment(ctx: Context, call: CallInfo, extension: str) -> str | None:
    """How a call to `extension` is refused (busy, announce), None: it is not."""
    default = str(ctx.setting("blocking_treatment"))
    anonymous = withheld(call)
    number = call.caller_number.strip()
    for row in ctx.rows("pbx_blacklist"):
        scope = row["extension"]
        if scope and scope != extension:
            continue
        if _matches(str(row["number"]), number, anonymous):
            return str(row["treatment"] or default)
    if anonymous:
        return default if ctx.toggle(extension, "block_anonymous") is True else None
    return default if number in personal(ctx, extension) else None


class LastCallers:
    """Each extension's last caller, in RAM only (never written to flash: a phone
    ringing is far too frequent for a CF card): the number, or "" when it was
    withheld. Bounded: the oldest extension is forgotten past MAX_REMEMBERED."""

    def __init__(self) -> None:
        self._last: OrderedDict[str, str] = OrderedDict()

    def remember(self, extension: str, number: str) -> None:
        self._last[extension] = number
        self._last.move_to_end(extension)
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)

    def get(self, extension: str) -> str | None:
        return self._last.get(extension)

    def clear(self) -> None:
        self._last.clear()

    def __len__(self) -> int:
        return len(self._last)
