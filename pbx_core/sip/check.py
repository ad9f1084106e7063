"""`pbx sip check FILE…`: parse each file as one SIP message and say what is wrong."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import parse_message


def check_bytes(data: bytes) -> ParseError | None:
    """None if `data` is one valid SIP message, else the error with its status."""
    try:
        parse_message(data).validate()
    except ParseError as exc:
        return exc
    return None


def check_files(paths: Iterable[str], out: TextIO) -> int:
    """Print `FILE: ok` or `FILE: error STATUS reason` per file; 1 if any is invalid."""
    status = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            print(f"{path}: error - cannot read: {exc.strerror}", file=out)
            status = 1
            continue
        err = check_bytes(data)
        if err is None:
            print(f"{path}: ok", file=out)
        else:
            reason = err.reason.encode("ascii", "backslashreplace").decode("ascii")
            print(f"{path}: error {err.status} {reason}", file=out)
            status = 1
    return status
