"""The health check: the daemon's event loop answers a ping on the control socket
within a deadline, and its SIP stack answers an OPTIONS sent over UDP on loopback with
a 200 (RFC 3261 §11: OPTIONS is how SIP peers ask "are you there").
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pbx_core.pbx.control import query


@dataclass(frozen=True)
class Result:
    ok: bool
    reason: str


def ping(control: Path, timeout: float) -> Result:
    try:
        answer = query(control, {"cmd": "ping"}, timeout=timeout)
    except TimeoutError:
        return Result(False, f"control socket ping not answered within {timeout:g} s")
    except (OSError, ValueError) as e:
        return Result(False, f"control socket {control}: {e}")
    if not answer.get("ok"):
        return Result(False, f"control socket ping refused: {answer.get('error')}")
    return Result(True, "ping answered")


def sip_target(control: Path, timeout: float) -> tuple[str, int] | None:
    """The daemon's first SIP address (from `status`), as reachable on loopback."""
    try:
        answer = query(control, {"cmd": "status"}, timeout=timeout)
    except (OSError, ValueError):
        return None
    addresses = answer.get("sip") or []
    if not answer.get("ok") or not addresses:
        return None
    host, _, port = str(addresses[0]).rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def options_request(host: str, port: int, local: tuple[str, int], call_id: str) -> bytes:
    lhost, lport = local
    uri_host = f"[{host}]" if ":" in host else host
    via_host = f"[{lhost}]" if ":" in lhost else lhost
    return (
        f"OPTIONS sip:{uri_host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:{lport};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:watchdog@{via_host}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{uri_host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: pbx-watchdog\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_options(target: tuple[str, int], timeout: float) -> Result:
    host, port = target
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    call_id = f"{secrets.token_hex(8)}@watchdog"
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            s.send(options_request(host, port, s.getsockname()[:2], call_id))
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                data = s.recv(65535)
                if f"Call-ID: {call_id}".encode() not in data and call_id.encode() not in data:
                    continue  # not the answer to this request
                status = data.split(b"\r\n", 1)[0]
                if status.startswith(b"SIP/2.0 200"):
                    return Result(True, "OPTIONS answered 200")
                return Result(False, f"OPTIONS answered {status.decode(errors='replace')!r}")
        except TimeoutError:
            return Result(False, f"OPTIONS to {host}:{port} not answered within {timeout:g} s")
        except OSError as e:
            return Result(False, f"OPTIONS to {host}:{port}: {e.strerror or e}")


def check(control: Path, target: tuple[str, int] | None, timeout: float) -> Result:
    """Both checks; the first failure is the reason."""
    started = time.monotonic()
    result = ping(control, timeout)
    if not result.ok:
        return result
    if target is None:
        return Result(False, "the daemon reports no SIP address")
    return sip_options(target, max(0.1, timeout - (time.monotonic() - started)))
