"""SIP trace: a text log of every message in and out, for debugging (`pbx run
--trace FILE`, '-' for stderr). On the appliance point it at RAM (/tmp, /run)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Trace:
    def __init__(self, target: str) -> None:
        self._own = target != "-"
        self._out: TextIO = (
            open(target, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115  # kept open for the daemon's life
            if self._own
            else sys.stderr
        )

    def message(self, direction: str, transport: str, addr: tuple[str, int], data: bytes) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        arrow = "<<" if direction == "in" else ">>"
        peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        text = data.decode("utf-8", "backslashreplace")
        self._out.write(
            f"{stamp} {arrow} {direction} {transport} {peer} {len(data)} bytes\n{text}\n"
        )
        self._out.flush()

    def close(self) -> None:
        if self._own:
            self._out.close()
