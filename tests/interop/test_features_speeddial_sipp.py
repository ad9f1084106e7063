"""Issue 13's speed dial (*0NN, *75NN + number) and hotline / warm line through
`pbx run`, against SIPp phones and a SIPp "provider": who got the INVITE and its
From, what the phone heard (the PBX's beeps and dial tone, told apart by their
audio), keys pressed as RFC 4733 telephone-events, and the call class of the dialling
extension (an internal extension's speed dial or hotline to an outside number is
refused and nothing reaches the provider).

One PBX serves the module: configs/features (100-102 national, 103 internal) plus a
pbx_speed_dial and an empty pbx_hotline; the hotline tests give pbx_hotline its rows
and reload, and take them away again.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.hotline import HOTLINE
from pbx_core.media.dtmf import goertzel_power, rfc4733_packets
from pbx_core.media.engine import MediaSettings
from pbx_core.media.tones import tone
from pbx_core.pbx.control import query
from tests.interop.features_env import PROVIDER_IP, Ear, Env, start, stop, write_config
from tests.interop.sipp_agents import Message, Run, check, free_port

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

SPEED_DIAL = (
    "id(int,auto) username(string,null) domain(string,null) code(string) number(string) "
    "name(string,null)\n"
    "1:::1:102:Office 2\n"
    "2:::7:*07:a loop\n"
    "3:::8:04930777:a national number\n"
    "4:103::9:04930777:103's own\n"
)
HOTLINE_HEADER = " ".join(
    f"{c.name}({'int' if c.type.name == 'INT' else 'string'}"
    f"{',auto' if c.auto else ''}{',null' if c.null else ''})"
    for c in HOTLINE.specs
)
TE_PT = 101  # the telephone-event payload type the scenarios offer


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("speeddial")
    port = free_port(PROVIDER_IP)
    config = write_config(tmp / "config", port)
    (config / "pbx_speed_dial").write_text(SPEED_DIAL)
    (config / "pbx_hotline").write_text(HOTLINE_HEADER + "\n")
    env = start(tmp, port)
    try:
        yield env
    finally:
        stop(env)


@pytest.fixture
def env(module_env: Env) -> Env:
    module_env.reset()
    return module_env


class KeyEar(Ear):
    """An Ear that also presses keys: RFC 4733 packets sent from its socket (the
    phone's media address) to where the PBX's RTP comes from."""

    def __init__(self) -> None:
        super().__init__()
        self.pbx: tuple[str, int] | None = None
        self.seq = 1
        self.ts = 0

    def drain(self) -> list[bytes]:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except BlockingIOError:
                return self.payloads
            self.pbx = (addr[0], addr[1])
            if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
                self.payloads.append(data[12 + 4 * (data[0] & 0x0F) :])

    def wait_audio(self, seconds: float, timeout: float = 10.0) -> None:
        """Until the PBX has sent `seconds` of audio in all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(len(p) for p in self.drain()) >= seconds * 8000:
                return
            time.sleep(0.05)
        raise AssertionError(f"the PBX sent {len(self.payloads)} packets only")

    def press(self, digits: str) -> None:
        assert self.pbx is not None, "no RTP from the PBX yet"
        for digit in digits:
            for offset, payload, marker in rfc4733_packets(digit):
                header = struct.pack(
                    "!BBHII", 0x80, (0x80 if marker else 0) | TE_PT, self.seq, self.ts, 0x5EED
                )
                self.seq += 1
                self.sock.sendto(header + payload, self.pbx)
                time.sleep(0.02 if offset else 0)
            self.ts += 1600
            time.sleep(0.15)


def continuous(samples: list[int], name: str) -> bool:
    """`samples` are tone `name` without a gap: every 50 ms of them carries its
    frequencies (a dial tone; the confirmation beeps have gaps)."""
    freqs = tone(name, MediaSettings().country).freqs
    blocks = [samples[i : i + 400] for i in range(0, len(samples) - 399, 400)]
    return len(blocks) >= 10 and all(
        max(goertzel_power(b, f) for f in freqs) > 20 * goertzel_power(b, 1000.0) for b in blocks
    )


def status_of(res: Run) -> int:
    statuses = [s for s in res.statuses() if s >= 200 and s != 407]
    assert statuses, res.report()
    return statuses[-1]


def only_invite(run: Run) -> Message:
    invites = run.requests("INVITE")
    assert len(invites) == 1, run.report()
    return invites[0]


def rejected(env: Env, tmp: Path, number: str, user: str) -> int:
    res = env.phones.call(tmp, "uac_reject.xml", number, user=user, name=f"reject-{user}")
    check(res)
    return status_of(res)


def rings(env: Env, tmp: Path, number: str, user: str, callee: str) -> Message:
    """`user` dials `number`; `callee` (a SIPp phone) answers: the INVITE it got."""
    with env.phones.callee(tmp, "uas_answer.xml", callee) as phone:
        check(env.phones.call(tmp, "uac_call.xml", number, user=user))
        check(phone.finish())
    return only_invite(phone.run)


# ---------------------------------------------------------------- speed dial


def test_everyones_speed_dial_rings_as_if_dialled(env: Env, tmp_path: Path) -> None:
    invite = rings(env, tmp_path, "*01", "100", "102")
    assert invite.first_line.startswith("INVITE sip:102@"), invite.text
    assert "sip:100@" in (invite.header("From") or ""), invite.text


def test_a_personal_speed_dial_set_with_keys(env: Env, tmp_path: Path) -> None:
    ear = KeyEar()
    runs: list[Run] = []
    try:
        caller = threading.Thread(
            target=lambda: runs.append(
                env.phones.call(
                    tmp_path, "feat_keys.xml", "*75", user="101", keys={"rtp_port": str(ear.port)}
                )
            )
        )
        caller.start()
        try:
            ear.wait_audio(0.2)  # "enter the location" (a beep: no prompts here)
            ear.press("06")
            time.sleep(1.0)  # "enter the number"
            ear.press("102#")
        finally:
            caller.join(30)
        (res,) = runs
        check(res)
        assert len(res.requests("BYE")) == 1, res.report()  # confirmed, then hung up
    finally:
        ear.close()
    invite = rings(env, tmp_path, "*006", "101", "102")  # 101's own entry 06
    assert invite.first_line.startswith("INVITE sip:102@"), invite.text
    assert rejected(env, tmp_path, "*006", "100") == 404  # 101's, not 100's


def test_a_personal_speed_dial_set_in_one_go(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "100", "*7504101")
    invite = rings(env, tmp_path, "*004", "100", "101")
    assert "sip:100@" in (invite.header("From") or ""), invite.text


def test_speed_dial_is_no_way_around_the_call_class(env: Env, tmp_path: Path) -> None:
    provider = env.provider(tmp_path)
    try:
        # 103 is internal: everyone's 8 and its own 9 are national numbers
        assert rejected(env, tmp_path, "*08", "103") == 403
        assert rejected(env, tmp_path, "*09", "103") == 403
        assert rejected(env, tmp_path, "*750104930777", "103") == 403  # refused when set
        prov = provider.finish(0.5)
    finally:
        provider.stop()
    assert prov.requests() == [], prov.report()
    # 100 is national: the same entry goes out through the trunk
    provider = env.provider(tmp_path)
    try:
        check(env.phones.call(tmp_path, "uac_call.xml", "*08", user="100"))
        prov = provider.finish(10)
    finally:
        provider.stop()
    check(prov)
    invite = only_invite(prov)
    assert invite.first_line.startswith(f"INVITE sip:4930777@{PROVIDER_IP}"), invite.text


def test_a_speed_dial_loop_is_stopped(env: Env, tmp_path: Path) -> None:
    assert rejected(env, tmp_path, "*07", "100") == 482


# ---------------------------------------------------------------- hotline


def hotline(env: Env, rows: str) -> None:
    (env.tmp / "config" / "pbx_hotline").write_text(f"{HOTLINE_HEADER}\n{rows}")
    assert query(env.control, {"cmd": "reload"})["reloaded"]


@pytest.fixture
def lines(env: Env) -> Iterator[Env]:
    """The hotline tests' rows are theirs only."""
    try:
        yield env
    finally:
        hotline(env, "")


def test_a_hotline_rings_its_number_whatever_is_dialled(lines: Env, tmp_path: Path) -> None:
    env = lines
    hotline(env, "1:103:101:0:\n")
    for dialled in ("555", "*43"):
        invite = rings(env, tmp_path, dialled, "103", "101")
        assert invite.first_line.startswith("INVITE sip:101@"), invite.text
        assert "sip:103@" in (invite.header("From") or ""), invite.text


def test_a_hotline_out_needs_the_class(lines: Env, tmp_path: Path) -> None:
    env = lines
    hotline(env, "1:103:04930777:0:\n")
    provider = env.provider(tmp_path)
    try:
        assert rejected(env, tmp_path, "s", "103") == 403
        prov = provider.finish(0.5)
    finally:
        provider.stop()
    assert prov.requests() == [], prov.report()


def warm(env: Env, tmp: Path, keys: str, callee: str) -> tuple[Run, Message, list[int]]:
    """103 lifts its warm line (dials `s`); after a second of dial tone it presses
    `keys` (none: waits); `callee` answers. The caller's run, the callee's INVITE and
    the first second of what 103 heard."""
    ear = KeyEar()
    runs: list[Run] = []
    try:
        with env.phones.callee(tmp, "uas_answer.xml", callee) as phone:
            caller = threading.Thread(
                target=lambda: runs.append(
                    env.phones.call(
                        tmp,
                        "feat_keys_hold.xml",
                        "s",
                        user="103",
                        keys={"rtp_port": str(ear.port)},
                        extra=["-d", "6000"],
                    )
                )
            )
            caller.start()
            try:
                ear.wait_audio(1.0)
                heard = ear.samples()
                if keys:
                    ear.press(keys)
            finally:
                caller.join(30)
            check(phone.finish())
        (res,) = runs
        check(res)
    finally:
        ear.close()
    return res, only_invite(phone.run), heard


def test_a_warm_line_gives_dial_tone_then_rings_the_hotline(lines: Env, tmp_path: Path) -> None:
    env = lines
    hotline(env, "1:103:101:3:\n")
    res, invite, heard = warm(env, tmp_path, "", "101")
    assert continuous(heard, "dial"), "no dial tone"
    assert "sip:103@" in (invite.header("From") or ""), invite.text
    (answered,) = res.responses(200, "2 INVITE")
    assert answered.at is not None and invite.at is not None
    assert invite.at - answered.at >= 2.5, (answered.at, invite.at)  # after the delay


def test_keys_on_a_warm_line_are_dialled_instead(lines: Env, tmp_path: Path) -> None:
    env = lines
    hotline(env, "1:103:101:5:\n")
    _res, invite, heard = warm(env, tmp_path, "102#", "102")
    assert continuous(heard, "dial"), "no dial tone"
    assert invite.first_line.startswith("INVITE sip:102@"), invite.text
    assert "sip:103@" in (invite.header("From") or ""), invite.text


def test_a_personal_speed_dial_survives_a_restart(tmp_path: Path) -> None:
    # its own PBX (the module's keeps running): set, SIGTERM, start on the same state
    first = start(tmp_path / "pbx")
    try:
        first.dial_code(tmp_path, "100", "*7503101")
    finally:
        stop(first)
    again = start(tmp_path / "pbx", first.provider_port)
    try:
        invite = rings(again, tmp_path, "*003", "100", "101")
        assert invite.first_line.startswith("INVITE sip:101@"), invite.text
    finally:
        stop(again)
