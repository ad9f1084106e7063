"""A call between two baresip phones registered to the PBX (issue 5's "done means"):
both register with digest auth, 100 dials 101 through the B2BUA, 101 answers by
itself, both see the call established and each hears the other's tone, 100 hangs up
and 101 sees the call closed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_pbx, stop_pbx
from tests.media.baresip import Baresip, dominant_frequency

pytestmark = [
    pytest.mark.interop,
    pytest.mark.tools("baresip"),
]


class Phone(Baresip):
    """The media tests' driver, keeping every event that arrives in the same read as
    a command's answer (its `command` drops them; on loopback a whole call set-up
    can arrive with the answer to `dial`)."""

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        assert self.sock is not None
        self._token += 1
        token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        answer = None
        while answer is None and time.monotonic() < deadline:
            for msg in self._read_messages(0.2):
                if msg.get("response") and msg.get("token") == token:
                    answer = msg
                elif msg.get("event"):
                    self.events.append(msg)
        if answer is None:
            raise TimeoutError(f"no answer to {command} from baresip")
        return answer


def registered(agent: Baresip, timeout: float = 10.0) -> None:
    """The account registered (it may do so before ctrl_tcp is connected, so the
    REGISTER_OK event can be gone: ask baresip for its registration state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = agent.command("reginfo")
        if "OK" in str(info.get("data", "")) or "200 OK" in agent.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{agent.user} did not register:\n{agent.log()}")


def test_two_baresip_phones_call_through_the_pbx(tmp_path: Path) -> None:
    pbx = start_pbx(tmp_path, extra=["--state", str(tmp_path / "state.mdb")])
    registrar = f"{pbx.host}:{pbx.port}"
    alice = Phone(tmp_path / "a", "100", tone_hz=440, registrar=registrar, password="change-me-100")
    bob = Phone(tmp_path / "b", "101", tone_hz=1000, registrar=registrar, password="change-me-101")
    try:
        alice.start()
        bob.start()
        registered(alice)
        registered(bob)
        alice.dial(f"sip:101@{registrar}")
        alice.wait_event("CALL_ESTABLISHED")
        bob.wait_event("CALL_ESTABLISHED")
        time.sleep(1.5)
        alice.hangup()
        bob.wait_event("CALL_CLOSED")
    finally:
        alice.stop()
        bob.stop()
        stop_pbx(pbx)
    log = pbx.log()
    assert "Traceback" not in log, log
    assert dominant_frequency(alice.recording("dec"), [440, 1000]) == 1000
    assert dominant_frequency(bob.recording("dec"), [440, 1000]) == 440
