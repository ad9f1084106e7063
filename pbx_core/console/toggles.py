"""Feature toggles on the console: what a phone sets with its codes (`*78` do not
disturb, `*72105` forward ...), shown and changed while the daemon runs.

Toggles are runtime state, not configuration: they live in the daemon (RAM, and the
state LMDB on /data), so the console reaches them through the control socket's
`toggles` command and never stages them. A change is in force at once, as if the
phone had dialled the code, and survives a restart; `commit`, `revert` and a factory
reset do not touch it. Paths follow the uci-like language:

    show toggles EXT                      every toggle of an extension
    get toggles[EXT].FEATURE.TOGGLE       one
    set toggles[EXT].FEATURE.TOGGLE=VALUE change one: on/off, a number (forwards;
                                          off switches a forward off), empty = back
                                          to the extension's column in the tables

The daemon checks each value with the feature that keeps the toggle (do not disturb
takes on/off; a forward a number the extension may call) and says why it refuses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PREFIX = "toggles"
_PATH = re.compile(r"toggles\[([^\]]*)\]\.([a-z0-9_]+)\.([a-z0-9_]+)")
_EXT = re.compile(r"[0-9A-Za-z_.+*#-]{1,64}")
_ON = {"on", "yes", "true"}
_OFF = {"off", "no", "false"}
MAX_VALUE = 64  # as the daemon's MAX_TOGGLE_TEXT


class ToggleError(ValueError):
    """A refused toggle command: the message says why."""


def is_path(text: str) -> bool:
    return text.strip().startswith(PREFIX + "[")


def parse_path(text: str) -> tuple[str, str]:
    """`toggles[101].dnd.dnd` -> ("101", "dnd.dnd")."""
    m = _PATH.fullmatch(text.strip())
    if m is None or not _EXT.fullmatch(m.group(1)):
        raise ToggleError(f"bad toggle path {text.strip()!r}; expected toggles[EXT].FEATURE.TOGGLE")
    return m.group(1), f"{m.group(2)}.{m.group(3)}"


def parse_value(text: str) -> bool | str | None:
    """on/yes/true, off/no/false, empty (None: back to the tables' value), else the text."""
    word = text.strip()
    if not word:
        return None
    if word.lower() in _ON:
        return True
    if word.lower() in _OFF:
        return False
    if len(word) > MAX_VALUE:
        raise ToggleError(f"value longer than {MAX_VALUE} characters")
    return word


def show_value(value: Any) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    return "" if value is None else str(value)


def lines(extension: str, toggles: dict[str, Any]) -> list[str]:
    return [f"{PREFIX}[{extension}].{k}={show_value(v)}" for k, v in sorted(toggles.items())]


def ask(
    control: Path, extension: str, name: str | None = None, value: Any = None
) -> dict[str, Any]:
    """The daemon's toggles of `extension` (after setting `name` to `value` when
    given); ToggleError with the daemon's reason when it refuses or is not there."""
    from pbx_core.pbx.control import query  # noqa: PLC0415  # only when asked

    if not _EXT.fullmatch(extension):
        raise ToggleError(f"bad extension {extension!r}")
    request: dict[str, Any] = {"cmd": "toggles", "extension": extension}
    if name is not None:
        request["set"] = name
        request["value"] = value
    try:
        answer = query(control, request, timeout=3)
    except (OSError, ValueError) as e:
        raise ToggleError(
            f"the PBX is not answering ({e}); toggles live in the running PBX"
        ) from None
    if not answer.get("ok"):
        raise ToggleError(str(answer.get("error") or "refused by the PBX"))
    got = answer.get("toggles")
    if not isinstance(got, dict):
        raise ToggleError("the PBX answered without toggles")
    return got
