"""The control socket: how `pbx status`, the watchdog and the console talk to the
running daemon. A Unix stream socket (RAM, `paths.control_socket()`), one JSON object
per line each way:

    {"cmd": "ping"}    -> {"ok": true, "pong": <loop time>}
    {"cmd": "status"}  -> {"ok": true, "version": ..., "uptime": s, "sip": [...], ...}
    {"cmd": "reload"}  -> {"ok": true, "reloaded": bool}
    {"cmd": "toggles", "extension": "101"[, "set": "dnd.dnd", "value": true]}
                       -> {"ok": true, "extension": "101", "toggles": {"dnd.dnd": true, ...}}

Unknown commands and bad JSON get {"ok": false, "error": "..."}; the connection
stays usable. Answers come from the event loop itself, so a ping that answers proves
the loop is alive (the watchdog's health check).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("pbx.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
MAX_LINE = 65536


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed daemon
        self.server = await asyncio.start_unix_server(self._client, str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o600)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break  # an over-long line: drop the client
                if not line:
                    break
                answer = await self._answer(line)
                writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "not a JSON object"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'expected {"cmd": "..."}'}
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {request['cmd']!r} (known: {known})"}
        try:
            result = handler(request)
            if isinstance(result, Awaitable):
                result = await result
        except (ValueError, KeyError, TypeError) as exc:
            # The request asked for something that is not there: its answer says so.
            return {"ok": False, "error": str(exc).strip("'\"")}
        except Exception as exc:
            log.exception("control command %s failed", request["cmd"])
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, **result}

    def close(self) -> None:
        if self.server is None:
            return  # never started: the socket there (if any) is another daemon's
        self.server.close()
        self.server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def query(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Blocking client for commands and tools (no event loop needed)."""
    import socket  # noqa: PLC0415  # the daemon side never needs the blocking client

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("the daemon answered something that is not a JSON object")  # noqa: TRY004  # a protocol error, caught with the JSON errors
    return answer
