"""Checks the baresip driver the call tests use: two baresip agents call each other
directly (no PBX), each plays its own sine and must hear exactly the other's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.media.baresip import Baresip, dominant_frequency

pytestmark = [
    pytest.mark.interop,
    pytest.mark.tools("baresip"),
]


def test_two_agents_hear_each_others_tone(tmp_path: Path) -> None:
    alice = Baresip(tmp_path / "a", "alice", tone_hz=440)
    bob = Baresip(tmp_path / "b", "bob", tone_hz=1000)
    try:
        alice.start()
        bob.start()
        alice.dial(bob.aor)
        alice.wait_event("CALL_ESTABLISHED")
        bob.wait_event("CALL_ESTABLISHED")
        bob.send_dtmf("5")
        ev = alice.wait_event("CALL_DTMF_START", timeout=5)
        assert ev.get("param") == "5"
        time.sleep(1.5)
        alice.hangup()
        bob.wait_event("CALL_CLOSED")
    finally:
        alice.stop()
        bob.stop()
    assert dominant_frequency(alice.recording("dec"), [440, 1000]) == 1000
    assert dominant_frequency(bob.recording("dec"), [440, 1000]) == 440
    assert dominant_frequency(alice.recording("enc"), [440, 1000]) == 440
