"""Voicemail through `pbx run` against SIPp (issue 15): a SIPp phone registered as
101 (whose mailbox configs/features turns on here) receives the message-waiting
NOTIFYs the daemon sends, unsolicited (RFC 3842): `Messages-Waiting: no` when it
registers, `yes` with `Voice-Message: 1/0 (0/0)` after 100 leaves a message with
`*96101` (SIPp talking G.711 from a pcap through the greeting into the recording),
and `no` again after 101 dials `*97` and presses 1 (play) and 7 (delete) as RFC 4733
telephone-events, then # (goodbye: the PBX hangs up). The message is a WAV beside
the state LMDB and its metadata inside, until it is deleted."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.store.state import StateStore
from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import Run, Server, check, free_port, register
from tests.interop.test_features_blocking_sipp import KeyEar

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
    lamp = Server("uas_mwi.xml", tmp_path, "lamp-101", port=port, calls=3, timeout=60)
    try:
        res = env.phones.call(tmp_path, "uac_voicemail.xml", "*96101", user="100", timeout=30)
        check(res)
        _kept_as_it_should(env)
        listen = _star97_play_delete(env, tmp_path)
        check(listen)
        assert len(listen.requests("BYE")) == 1, listen.report()  # goodbye: the PBX hung up
        done = lamp.finish(timeout=15)
    finally:
        lamp.stop()
        register(env.addr, tmp_path, "101", port, expires=0)
    bodies = [m.body for m in done.requests("NOTIFY")]
    assert done.returncode == 0 and done.successful == 3, done.report()
    assert "Messages-Waiting: no" in bodies[0], bodies
    assert "Messages-Waiting: yes" in bodies[1], bodies
    assert "Voice-Message: 1/0 (0/0)" in bodies[1], bodies
    assert "Messages-Waiting: no" in bodies[2], bodies
    assert "Voice-Message: 0/0 (0/0)" in bodies[2], bodies
    assert list((env.tmp / "recordings" / "voicemail").glob("101-*.wav")) == []


class Keys(KeyEar):
    """KeyEar pressing several keys: each a new RFC 4733 event (its own timestamp;
    the same timestamp would be the same event again)."""

    def press(self, digit: str) -> None:
        assert self.pbx is not None
        event = "0123456789*#".index(digit)
        stamp = 8000 * self.seq
        for i, end in enumerate((False, False, True, True, True)):
            flags = 0x80 if end else 0
            payload = struct.pack("!BBH", event, flags | 10, 160 * (i + 1))
            mark = 0x80 if i == 0 else 0
            head = struct.pack("!BBHII", 0x80, 101 | mark, self.seq, stamp, 77)
            self.sock.sendto(head + payload, self.pbx)
            self.seq += 1
            time.sleep(0.02)


def _star97_play_delete(env: Env, tmp: Path) -> Run:
    """101 dials *97 (no PIN in this config: its own phone is enough) and presses 1,
    7, # once the PBX speaks (keys wait in the PBX's queue for the next menu)."""
    ear = Keys()
    out: list[Run] = []
    caller = threading.Thread(
        target=lambda: out.append(
            env.phones.call(
                tmp,
                "feat_code_keys.xml",
                "*97",
                user="101",
                name="star97",
                keys={"rtp_port": str(ear.port)},
                timeout=40,
            )
        )
    )
    caller.start()
    try:
        assert ear.listen(), "the PBX said nothing"
        for key in "17#":
            ear.press(key)
            time.sleep(0.5)
    finally:
        caller.join(50)
        ear.close()
    (res,) = out
    return res


def _kept_as_it_should(env: Env) -> None:
    """The message as it is kept: a WAV beside the state LMDB, its metadata inside."""
    deadline = time.monotonic() + 5
    messages: list[tuple[str, dict[str, object]]] = []
    while time.monotonic() < deadline and not messages:  # the app ends after the BYE
        try:
            with StateStore(env.state) as state:  # a second reader of the daemon's LMDB
                messages = state.voicemails("101")
        except Exception:  # noqa: BLE001  # opened while the daemon writes: again
            time.sleep(0.2)
        else:
            time.sleep(0.1)
    ((msg_id, meta),) = messages
    wavs = list((env.tmp / "recordings" / "voicemail").glob("101-*.wav"))
    assert len(wavs) == 1, wavs
    assert wavs[0].name == f"101-{msg_id}.wav"
    assert meta["caller"] == "100" and meta["folder"] == "new"
    assert float(meta["duration"]) >= 1.0  # type: ignore[arg-type]
