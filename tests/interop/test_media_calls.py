"""Audio through the PBX with real phones (baresip): every call is anchored in the
PBX's media engine (issue 6). Each agent's microphone plays its own sine; what each
hears is recorded and searched for the other's frequency (Goertzel)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.media.dtmf import goertzel_power
from pbx_core.pbx.control import query
from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.media.baresip import Baresip, dominant_frequency, wav_samples

pytestmark = [
    pytest.mark.interop,
    pytest.mark.tools("baresip"),
]

ALICE_HZ, BOB_HZ = 440.0, 1000.0


@pytest.fixture
def pbx(tmp_path: Path) -> Iterator[PbxProcess]:
    run = tmp_path / "pbx_run"
    run.mkdir()
    p = start_pbx(run)
    yield p
    stop_pbx(p)
    assert "Traceback" not in p.log(), p.log()


def _agent(tmp: Path, pbx: PbxProcess, user: str, hz: float) -> Baresip:
    agent = Baresip(
        tmp / user,
        user,
        tone_hz=hz,
        registrar=f"127.0.0.1:{pbx.port}",
        password=f"change-me-{user}",
    )
    agent.start()
    # baresip may register before its control connection is up (INTEROP-FACTS):
    # ask the PBX whether the binding is there instead of waiting for the event.
    sock = pbx.stderr_path.parent / "run" / "control.sock"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        regs = query(sock, {"cmd": "status"}).get("registrations", [])
        if any(r["aor"] == f"{user}@pbx.local" for r in regs):
            return agent
        time.sleep(0.2)
    agent.stop()
    raise AssertionError(f"{user} did not register:\n{agent.log()}")


def test_audio_flows_both_ways_through_the_anchored_relay(tmp_path: Path, pbx: PbxProcess) -> None:
    alice = _agent(tmp_path, pbx, "100", ALICE_HZ)
    bob = _agent(tmp_path, pbx, "101", BOB_HZ)
    try:
        alice.dial(f"sip:101@127.0.0.1:{pbx.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=30)
        alice.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(3)
        # pbx status shows the call with per-leg RTP figures (RFC 3550 A.3/A.8).
        sock = pbx.stderr_path.parent / "run" / "control.sock"
        (call,) = query(sock, {"cmd": "status"})["calls"]
        media = call["media"]
        assert set(media) == {"caller", "callee"}
        assert all(leg["received"] > 50 and leg["codec"] for leg in media.values()), media
        alice.hangup()
        bob.wait_event("CALL_CLOSED", timeout=30)
    finally:
        alice.stop()
        bob.stop()
    freqs = [ALICE_HZ, BOB_HZ]
    assert dominant_frequency(alice.recording("dec"), freqs) == BOB_HZ
    assert dominant_frequency(bob.recording("dec"), freqs) == ALICE_HZ


def test_echo_test_returns_the_callers_audio(tmp_path: Path, pbx: PbxProcess) -> None:
    alice = _agent(tmp_path, pbx, "100", ALICE_HZ)
    try:
        alice.dial(f"sip:*43@127.0.0.1:{pbx.port}")
        alice.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(3)
        alice.hangup()
        alice.wait_event("CALL_CLOSED", timeout=30)
    finally:
        alice.stop()
    assert dominant_frequency(alice.recording("dec"), [ALICE_HZ, BOB_HZ]) == ALICE_HZ


def test_held_party_hears_music_on_hold(tmp_path: Path, pbx: PbxProcess) -> None:
    """Alice holds (re-INVITE sendonly): Bob hears the PBX's music instead of her."""
    alice = _agent(tmp_path, pbx, "100", ALICE_HZ)
    bob = _agent(tmp_path, pbx, "101", BOB_HZ)
    try:
        alice.dial(f"sip:101@127.0.0.1:{pbx.port}")
        bob.wait_event("CALL_ESTABLISHED", timeout=30)
        alice.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(2)
        answer = alice.command("hold")
        assert answer.get("ok"), answer
        time.sleep(4)
        alice.hangup()
        bob.wait_event("CALL_CLOSED", timeout=30)
    finally:
        alice.stop()
        bob.stop()
    samples = wav_samples(bob.recording("dec"))
    before = samples[8000 : 8000 * 2]  # talking: Alice's tone
    held = samples[-8000 * 3 : -8000]  # on hold: the music (built-in tune's notes)
    music = [261.63, 329.63, 392.00, 523.25, 293.66, 349.23]
    assert goertzel_power(before, ALICE_HZ) > 20 * max(goertzel_power(before, f) for f in music)
    held_music = max(goertzel_power(held, f) for f in music)
    assert held_music > 20 * goertzel_power(held, ALICE_HZ), "no music on hold heard"
