"""Call recordings for `pbx remote pull-recordings` (features/recording): the box's
side lists the finished files of `recordings/calls/` (`rec-list`: name, size,
SHA-256; the newest MAX_LIST) and hands out parts of one (`rec-chunk NAME OFFSET
LENGTH`, at most CHUNK bytes). A name is a file of that folder only (letters,
digits, `.`, `_`, `-`, ending `.wav`), never a path; a `.part` still being written is
never listed."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

CHUNK = 2048  # bytes of a recording per transfer frame (~2.7 kB of base64)
MAX_LIST = 500  # newest files listed
NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}\.wav")


class RecordingError(Exception):
    """A request the box refuses (the message says why)."""


def listing(folder: Path) -> dict[str, dict[str, Any]]:
    """The newest MAX_LIST recordings: name -> {"size", "sha256"}."""
    try:
        entries = [e for e in os.scandir(folder) if NAME.fullmatch(e.name) and e.is_file()]
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RecordingError(f"{folder}: {exc.strerror}") from None
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    out: dict[str, dict[str, Any]] = {}
    for e in entries[:MAX_LIST]:
        h = hashlib.sha256()
        size = 0
        try:
            with open(e.path, "rb") as f:
                while block := f.read(1 << 16):
                    h.update(block)
                    size += len(block)
        except OSError:
            continue  # removed meanwhile (the quota)
        out[e.name] = {"size": size, "sha256": h.hexdigest()}
    return out


def chunk(folder: Path, name: str, offset: int, length: int) -> bytes:
    """Up to `length` (at most CHUNK) bytes of recording `name` from `offset`."""
    if not NAME.fullmatch(name):
        raise RecordingError(f"{name!r} is not a recording's name")
    try:
        with open(folder / name, "rb") as f:
            f.seek(offset)
            return f.read(min(length, CHUNK))
    except FileNotFoundError:
        raise RecordingError(f"no recording {name!r} (removed for the quota?)") from None
    except OSError as exc:
        raise RecordingError(f"{name}: {exc.strerror}") from None
