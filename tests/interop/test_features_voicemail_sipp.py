"""Voicemail through `pbx run` against SIPp (issue 15): a SIPp phone registered as
101 (whose mailbox, and 100's, configs/features turns on here) receives the message-waiting
NOTIFYs the daemon sends, unsolicited (RFC 3842): `Messages-Waiting: no` when it
registers, `yes` with `Voice-Message: 1/0 (0/0)` after 100 leaves a message with
`*96101` (SIPp talking G.711 from a pcap through the greeting into the recording),
and `no` again after 101 dials `*97` and presses 1 (play) and 7 (delete) as RFC 4733
telephone-events, then # (goodbye: the PBX hangs up). The message is a WAV beside
the state LMDB and its metadata inside, until it is deleted.

SUBSCRIBE (RFC 6665): a SIPp watcher subscribes to 100's message-summary with digest
auth, gets the 200 and a NOTIFY `Messages-Waiting: no` (active), then one `yes`
1/0 when 101 leaves a message (100's box: the other test's lamp is 101's, whatever
the order), and unsubscribes (200, NOTIFY terminated). SUBSCRIBEs
the PBX refuses (no Event, an unknown one, too short an Expires, another's box, a
box that does not exist) get their status after the digest."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.store.state import StateStore
from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import PASSWORDS, Run, Server, check, free_port, register, run
from tests.interop.test_features_blocking_sipp import KeyEar

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("voicemail")
    config = write_config(tmp / "config", free_port(PROVIDER_IP))
    ext = config / "pbx_extension"
    lines = ext.read_text().splitlines()
    lines[0] += " voicemail(int)"
    # 101's box is the unsolicited lamp's, 100's the SIPp watcher's (and another's
    # box for 101's SUBSCRIBE: 403).
    lines[1:] = [f"{row}:{int(row.split(':')[1] in ('100', '101'))}" for row in lines[1:] if row]
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


def test_a_sipp_watcher_subscribes_sees_the_lamp_change_and_unsubscribes(
    env: Env, tmp_path: Path
) -> None:
    out: list[Run] = []
    watcher = threading.Thread(
        target=lambda: out.append(
            run(
                "uac_mwi_subscribe.xml",
                env.addr,
                tmp_path,
                "watcher-100",
                keys={"user": "100"},
                auth=("100", PASSWORDS["100"]),
                timeout=40,
            )
        )
    )
    watcher.start()
    try:
        log = tmp_path / "watcher-100" / "messages.log"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            log.exists() and "Messages-Waiting: no" in log.read_text(errors="replace")
        ):
            time.sleep(0.1)
        res = env.phones.call(tmp_path, "uac_voicemail.xml", "*96100", user="101", timeout=30)
        check(res)
    finally:
        watcher.join(45)
    (done,) = out
    check(done)
    notifies = done.requests("NOTIFY")
    assert len(notifies) == 3, done.report()
    assert "Messages-Waiting: yes" in notifies[1].body
    assert notifies[2].header("Subscription-State") == "terminated;reason=timeout"


@pytest.mark.parametrize(
    ("name", "resource", "event", "expires", "status"),
    [
        ("no-event", "101", "X-Event: none", "X-Expires: none", 489),
        ("unknown-event", "101", "Event: x-unknown", "X-Expires: none", 489),
        ("short-expires", "101", "Event: message-summary", "Expires: 5", 423),
        ("huge-expires", "101", "Event: message-summary", "Expires: 99999999999", 400),
        ("another-box", "100", "Event: message-summary", "X-Expires: none", 403),
        ("no-box", "102", "Event: message-summary", "X-Expires: none", 404),
    ],
)
def test_sipp_subscribes_the_pbx_refuses(
    env: Env, tmp_path: Path, name: str, resource: str, event: str, expires: str, status: int
) -> None:
    res = run(
        "uac_subscribe_refused.xml",
        env.addr,
        tmp_path,
        name,
        keys={"user": "101", "resource": resource, "event": event, "expires": expires},
        auth=("101", PASSWORDS["101"]),
    )
    check(res)
    finals = [m.status for m in res.received() if m.status is not None and m.status >= 200]
    assert finals[-1] == status, res.report()
    if status == 489:
        assert "message-summary" in (res.received()[-1].header("Allow-Events") or "")


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
