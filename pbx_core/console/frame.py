"""Framing of the machine mode (what `pbx remote` speaks over a noisy serial line).

    request:   !SEQ COMMAND *CRC\r\n
    response:  !SEQ JSON *CRC\r\n

CRC is the CRC-32 (zlib) of everything before " *", as 8 lowercase hex digits. A
corrupted line fails its CRC and is answered with `!0 {"ok":false,...,"status":3}`
(or lost entirely); the client then sends the same request again with the same SEQ,
and the console answers a repeated SEQ from its cache without running the command
twice, so retries are safe for `add`, `commit` and transfer chunks alike. Everything is
printable ASCII: JSON escapes the rest.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

BAD_FRAME = 3  # status of a frame that failed its check
_FRAME = re.compile(rb"!(\d{1,9}) (.*) \*([0-9a-f]{8})")


def crc(data: bytes) -> str:
    return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def encode(seq: int, body: str) -> bytes:
    head = f"!{seq} {body}".encode()
    return head + b" *" + crc(head).encode() + b"\r\n"


def decode(line: bytes) -> tuple[int, str] | None:
    """(seq, body) of a valid frame, None for anything else (noise, a bad CRC)."""
    m = _FRAME.fullmatch(line.strip(b"\r\n"))
    if m is None:
        return None
    head = line.strip(b"\r\n")[: m.start(3) - 2]
    if crc(head) != m.group(3).decode():
        return None
    try:
        return int(m.group(1)), m.group(2).decode("ascii")
    except UnicodeDecodeError:
        return None


def encode_response(seq: int, answer: dict[str, Any]) -> bytes:
    return encode(seq, json.dumps(answer, separators=(",", ":"), ensure_ascii=True))


def decode_response(line: bytes) -> tuple[int, dict[str, Any]] | None:
    frame = decode(line)
    if frame is None:
        return None
    try:
        answer = json.loads(frame[1])
    except ValueError:
        return None
    return (frame[0], answer) if isinstance(answer, dict) else None
