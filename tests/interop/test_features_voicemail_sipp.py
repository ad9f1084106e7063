"""Voicemail through `pbx run` against SIPp (issue 15): a SIPp phone registered as
101 (whose mailbox configs/features turns on here) receives the message-waiting
NOTIFYs the daemon sends, unsolicited (RFC 3842): `Messages-Waiting: no` when it
registers, `yes` with `Voice-Message: 1/0 (0/0)` after 100 leaves a message with
`*96101` (SIPp talking G.711 from a pcap through the greeting into the recording).
The message is a WAV on the state's side and its metadata in the state LMDB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.store.state import StateStore
from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import Server, check, free_port, register

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("voicemail")
    config = write_config(tmp / "config", free_port(PROVIDER_IP))
    ext = config / "pbx_extension"
    lines = ext.read_text().splitlines()
    lines[0] += " voicemail(int)"
    lines[1:] = [f"{row}:{int(row.split(':')[1] == '101')}" for row in lines[1:] if row]
    ext.write_text("\n".join(lines) + "\n")
    env = start(tmp)
    try:
        yield env
    finally:
        stop(env)


def test_a_message_lights_the_lamp_of_the_registered_phone(env: Env, tmp_path: Path) -> None:
    port = free_port()
    register(env.addr, tmp_path, "101", port)  # its NOTIFY retransmits until SIPp binds
    lamp = Server("uas_mwi.xml", tmp_path, "lamp-101", port=port, calls=2, timeout=30)
    try:
        res = env.phones.call(tmp_path, "uac_voicemail.xml", "*96101", user="100", timeout=30)
        check(res)
        done = lamp.finish(timeout=15)
    finally:
        lamp.stop()
        register(env.addr, tmp_path, "101", port, expires=0)
    bodies = [m.body for m in done.requests("NOTIFY")]
    assert done.returncode == 0 and done.successful == 2, done.report()
    assert "Messages-Waiting: no" in bodies[0], bodies
    assert "Messages-Waiting: yes" in bodies[-1], bodies
    assert "Voice-Message: 1/0 (0/0)" in bodies[-1], bodies
    # the message as it is kept: a WAV beside the state LMDB, its metadata inside
    wavs = list((env.tmp / "recordings" / "voicemail").glob("101-*.wav"))
    assert len(wavs) == 1, wavs
    deadline = time.monotonic() + 5
    messages: list[tuple[str, dict[str, object]]] = []
    while time.monotonic() < deadline and not messages:
        try:
            with StateStore(env.state) as state:  # a second reader of the daemon's LMDB
                messages = state.voicemails("101")
        except Exception:  # noqa: BLE001  # opened while the daemon writes: again
            time.sleep(0.2)
        else:
            time.sleep(0.1)
    ((msg_id, meta),) = messages
    assert wavs[0].name == f"101-{msg_id}.wav"
    assert meta["caller"] == "100" and meta["folder"] == "new"
    assert float(meta["duration"]) >= 1.0  # type: ignore[arg-type]
