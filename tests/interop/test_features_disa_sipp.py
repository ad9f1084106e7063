"""DISA through `pbx run` (issue 13), against SIPp phones and a SIPp provider: the
PIN prompt and dial tone heard by their audio, the PIN and the number sent as RFC 4733
telephone-events from the socket the phone's SDP names, the number placed on the
trunk with the DISA's class; a `local` DISA cannot reach an international route; a
trunk caller's wrong PINs ban that caller ID (even the right PIN is then refused)
while the provider's address, and other callers, are still served.

The PBX runs on configs/features plus a `pbx_disa` table, a DID to a DISA and
`sec_ban_failures` 3. Nothing here guesses a PIN from 127.0.0.1: that ban would drop
every phone of the test (tests/features/disa covers the extension's ban).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pbx_core.media.codecs.g711 import ulaw_decode
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.engine import MediaSettings
from pbx_core.media.tones import tone
from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import Run, check, free_port, run

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

PIN = "24681357"
DISA_TABLE = (
    "id(int,auto) name(string) number(string,null) pin(string) call_class(string)\n"
    f"1:road:700:{PIN}:national\n"
    f"2:short:701:{PIN}:local\n"
)
DID_ROW = "3:4930556:provider:disa:road:DISA for the road\n"
SETTINGS = "sec_ban_failures:3\nsec_ban_window:600\nsec_ban_seconds:600\n"
EVENTS = "0123456789*#"


class Line:
    """The phone's media socket (its SDP names it): what the PBX plays there, and key
    presses sent back to where the PBX's RTP comes from (RFC 4733, payload 101)."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.pbx: tuple[str, int] | None = None
        self.payloads: list[bytes] = []
        self.seq, self.ts = 1, 1000

    def read(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            self.pbx = self.pbx or (addr[0], addr[1])
            if len(data) > 12 and data[1] & 0x7F == 0:
                self.payloads.append(data[12 + 4 * (data[0] & 0x0F) :])

    def listen(self, seconds: float) -> list[int]:
        """The samples the PBX sends in the next `seconds`."""
        self.read()
        start = len(self.payloads)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.02)
            self.read()
        pcm = ulaw_decode(b"".join(self.payloads[start:]))
        return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))

    def wait_answer(self, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while self.pbx is None and time.monotonic() < end:
            time.sleep(0.02)
            self.read()
        assert self.pbx is not None, "the PBX sent no audio"

    def keys(self, digits: str) -> None:
        assert self.pbx is not None
        for d in digits:
            ev = EVENTS.index(d)
            packets = [(True, struct.pack("!BBH", ev, 10, 160))]
            packets += [(False, struct.pack("!BBH", ev, 10, 160 * n)) for n in (2, 3)]
            packets += [(False, struct.pack("!BBH", ev, 0x80 | 10, 640))] * 3
            for marker, payload in packets:
                head = struct.pack(
                    "!BBHII", 0x80, 101 | (0x80 if marker else 0), self.seq, self.ts, 0x5EED
                )
                self.sock.sendto(head + payload, self.pbx)
                self.seq += 1
                time.sleep(0.02)
            self.ts += 640 + 160
            time.sleep(0.08)

    def close(self) -> None:
        self.sock.close()


def _tone_frames(samples: list[int]) -> float:
    """The share of 20 ms frames where the country's dial tone frequencies stand out
    (a confirmation beep is on half the time, dial tone all the time)."""
    freqs = tone("dial", MediaSettings().country).freqs
    frames = [samples[i : i + 160] for i in range(0, len(samples) - 159, 160)]
    if not frames:
        return 0.0
    on = sum(
        1
        for f in frames
        if max(goertzel_power(f, q) for q in freqs) > 20 * (goertzel_power(f, 1000.0) + 1)
    )
    return on / len(frames)


def heard_beeps(samples: list[int]) -> bool:
    """A prompt (a confirmation beep on a build without prompt files): on and off."""
    return len(samples) > 800 and 0.2 < _tone_frames(samples) < 0.9


def heard_dial_tone(samples: list[int]) -> bool:
    return len(samples) > 4000 and _tone_frames(samples) > 0.95


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("disa")
    port = free_port(PROVIDER_IP)
    config = write_config(tmp / "config", port)
    (config / "pbx_disa").write_text(DISA_TABLE)
    with (config / "pbx_did").open("a") as f:
        f.write(DID_ROW)
    with (config / "pbx_settings").open("a") as f:
        f.write(SETTINGS)
    e = start(tmp, port)
    try:
        yield e
    finally:
        stop(e)


def in_background(fn: Callable[[], Run]) -> tuple[threading.Thread, list[Run]]:
    out: list[Run] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def extension_call(env: Env, tmp: Path, line: Line, number: str, user: str) -> Run:
    return env.phones.call(
        tmp,
        "disa_call.xml",
        number,
        user=user,
        name=f"disa-{user}-{number}",
        keys={"rtp_port": str(line.port)},
        timeout=30,
    )


def outside_call(env: Env, tmp: Path, line: Line, caller: str) -> Run:
    return run(
        "disa_provider_call.xml",
        env.addr,
        tmp,
        f"outside-{caller}",
        local_ip=PROVIDER_IP,
        keys={"did": "4930556", "caller": caller, "rtp_port": str(line.port)},
        timeout=30,
    )


def test_pin_dial_tone_then_out_with_the_disas_class(env: Env, tmp_path: Path) -> None:
    # 103 is internal: alone it cannot call out; DISA road (national) places the call.
    provider = env.provider(tmp_path)
    line = Line()
    try:
        t, res = in_background(lambda: extension_call(env, tmp_path, line, "700", "103"))
        line.wait_answer()
        assert heard_beeps(line.listen(0.5))  # "enter your PIN"
        line.keys(PIN + "#")
        assert heard_dial_tone(line.listen(1.5))
        line.keys("0301234#")
        answered = provider.finish(30)
        t.join(40)
    finally:
        line.close()
        provider.stop()
    check(res[0])
    check(answered)
    (invite,) = answered.requests("INVITE")
    assert invite.first_line.startswith("INVITE sip:301234@"), invite.text  # strip 1
    assert "<sip:4930100@" in (invite.header("From") or ""), invite.text  # the office's ID
    assert res[0].sent("BYE"), res[0].report()  # the caller ended the bridged call


def test_a_local_disa_cannot_reach_an_international_route(env: Env, tmp_path: Path) -> None:
    provider = env.provider(tmp_path)
    line = Line()
    try:
        t, res = in_background(lambda: extension_call(env, tmp_path, line, "701", "100"))
        line.wait_answer()
        line.keys(PIN + "#")
        assert heard_dial_tone(line.listen(1.5))
        line.keys("000441234#")  # international: 403 from the dial plan
        assert heard_beeps(line.listen(0.6))  # "not available"
        assert heard_dial_tone(line.listen(1.5))  # and dial tone again
        line.keys("*78#")  # a feature code: none through a DISA
        assert heard_beeps(line.listen(0.6))
        t.join(40)
    finally:
        line.close()
        provider.stop()
    check(res[0])
    assert provider.run.requests("INVITE") == [], provider.run.report()
    assert env.toggles("100")["dnd.dnd"] is False


def test_wrong_pins_ban_the_outside_caller_not_the_provider(env: Env, tmp_path: Path) -> None:
    line = Line(PROVIDER_IP)
    try:
        t, res = in_background(lambda: outside_call(env, tmp_path, line, "0301111"))
        line.wait_answer()
        line.keys("11112222#")
        line.keys("33334444#")
        line.keys("55556666#")  # sec_ban_failures 3
        t.join(40)
    finally:
        line.close()
    check(res[0])
    assert res[0].requests("BYE"), res[0].report()  # the PBX hung up
    # The same caller ID with the right PIN: refused before any answer.
    line = Line(PROVIDER_IP)
    try:
        refused = outside_call(env, tmp_path, line, "0301111")
    finally:
        line.close()
    check(refused)
    assert refused.statuses()[-1] == 403, refused.report()
    # Another caller over the same trunk (the same address) gets through to the trunk.
    provider = env.provider(tmp_path)
    line = Line(PROVIDER_IP)
    try:
        t, res = in_background(lambda: outside_call(env, tmp_path, line, "0302222"))
        line.wait_answer()
        line.keys(PIN + "#")
        assert heard_dial_tone(line.listen(1.5))
        line.keys("0307777#")
        answered = provider.finish(30)
        t.join(40)
    finally:
        line.close()
        provider.stop()
    check(res[0])
    check(answered)
    assert len(answered.requests("INVITE")) == 1, answered.report()
